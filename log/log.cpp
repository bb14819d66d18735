#include "log/log.hpp"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <string>

namespace layercache::log {
namespace {

std::atomic<level> g_level{level::info};

constexpr std::string_view name_of(level l) {
  switch (l) {
    case level::debug:
      return "debug";
    case level::info:
      return "info";
    case level::warn:
      return "warn";
    case level::error:
      return "error";
  }
  return "?";
}

std::string timestamp() {
  const auto now = std::chrono::system_clock::now();
  const auto secs = std::chrono::system_clock::to_time_t(now);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()) % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char stamp[32];
  const auto n = std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
  std::string out(stamp, n);
  char frac[8];
  std::snprintf(frac, sizeof frac, ".%03dZ", static_cast<int>(ms.count()));
  out += frac;
  return out;
}

void write_all(const std::string& out) {
  const char* p = out.data();
  std::size_t left = out.size();
  while (left > 0) {
    const ssize_t w = ::write(STDERR_FILENO, p, left);
    if (w <= 0) return;  // stderr gone: nothing useful left to do with a log line
    p += w;
    left -= static_cast<std::size_t>(w);
  }
}

}  // namespace

std::string json_string(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  out += '"';
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      default:
        if (u < 0x20) {
          char esc[8];
          std::snprintf(esc, sizeof esc, "\\u%04x", u);
          out += esc;
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

void json_line(std::string_view fields) {
  std::string out = "{\"ts\":\"" + timestamp() + "\"";
  if (!fields.empty()) {
    out += ',';
    out += fields;
  }
  out += "}\n";
  write_all(out);
}

void set_level(level l) { g_level.store(l, std::memory_order_relaxed); }

level current_level() { return g_level.load(std::memory_order_relaxed); }

void write(level l, std::string_view component, std::string_view message) {
  if (!enabled(l)) return;
  std::string out = timestamp();
  out += ' ';
  out += name_of(l);
  out += ' ';
  out += component;
  out += ": ";
  // One line per event: newlines in messages (e.g. from upstream bodies) are escaped.
  for (char c : message) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else {
      out += c;
    }
  }
  out += '\n';
  write_all(out);
}

}  // namespace layercache::log
