// Process-wide diagnostic log: one line per event on stderr, `ts level component: message`.
// Thread-safe; a line is written with a single write(2) so lines never interleave.
// Never pass secrets (passwords, tokens, Authorization values) to it.
#pragma once

#include <sstream>
#include <string>
#include <string_view>

namespace layercache::log {

enum class level { debug = 0, info = 1, warn = 2, error = 3 };

void set_level(level l);
[[nodiscard]] level current_level();
[[nodiscard]] inline bool enabled(level l) { return l >= current_level(); }

// Writes one line if `l` is enabled.
void write(level l, std::string_view component, std::string_view message);

// Writes one JSON object line, whatever the level: {"ts":"<UTC time>",<fields>}. `fields`
// is the rest of the object's members, already valid JSON ("\"a\":1,\"b\":\"x\"").
void json_line(std::string_view fields);

// `text` as a JSON string literal, quotes included: quote and backslash escaped, every other
// control character as \u00XX (so "\n" is \u000a), all else as it is. The one JSON escaping
// of the program: log lines, server/'s OCI error bodies, layercachectl's requests.
[[nodiscard]] std::string json_string(std::string_view text);

// Formats the arguments with operator<< (only when `l` is enabled) and writes one line.
template <typename... Args>
void line(level l, std::string_view component, const Args&... args) {
  if (!enabled(l)) return;
  std::ostringstream out;
  (out << ... << args);
  write(l, component, out.str());
}

template <typename... Args>
void debug(std::string_view component, const Args&... args) {
  line(level::debug, component, args...);
}
template <typename... Args>
void info(std::string_view component, const Args&... args) {
  line(level::info, component, args...);
}
template <typename... Args>
void warn(std::string_view component, const Args&... args) {
  line(level::warn, component, args...);
}
template <typename... Args>
void error(std::string_view component, const Args&... args) {
  line(level::error, component, args...);
}

}  // namespace layercache::log
