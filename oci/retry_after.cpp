#include "oci/retry_after.hpp"

#include <array>
#include <cstdint>

namespace layercache::oci {
namespace {

constexpr std::chrono::seconds max_wait = std::chrono::hours(24);

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Reads exactly `width` digits (width 0: one or more, at most 18) from the front of `s`.
std::optional<std::uint64_t> take_number(std::string_view& s, std::size_t width = 0) {
  std::size_t n = 0;
  while (n < s.size() && n < 18 && s[n] >= '0' && s[n] <= '9') ++n;
  if (n == 0 || (width != 0 && n != width)) return std::nullopt;
  if (width == 0 && n < s.size() && s[n] >= '0' && s[n] <= '9') return std::nullopt;  // too long
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < n; ++i) v = v * 10 + static_cast<std::uint64_t>(s[i] - '0');
  s.remove_prefix(n);
  return v;
}

bool take(std::string_view& s, std::string_view literal) {
  if (!s.starts_with(literal)) return false;
  s.remove_prefix(literal.size());
  return true;
}

std::optional<unsigned> take_month(std::string_view& s) {
  static constexpr std::array<std::string_view, 12> names = {
      "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  for (unsigned i = 0; i < names.size(); ++i) {
    if (take(s, names[i])) return i + 1;
  }
  return std::nullopt;
}

// Skips a day name ("Sun" or "Sunday") and what follows it (", " or " ").
bool take_day_name(std::string_view& s) {
  static constexpr std::array<std::string_view, 7> names = {"Mon", "Tue", "Wed", "Thu",
                                                            "Fri", "Sat", "Sun"};
  for (auto d : names) {
    if (s.starts_with(d)) {
      s.remove_prefix(3);
      while (!s.empty() && s.front() >= 'a' && s.front() <= 'z') s.remove_prefix(1);
      return take(s, ", ") || take(s, " ");
    }
  }
  return false;
}

struct hms {
  std::uint64_t h, m, s;
};
std::optional<hms> take_time(std::string_view& s) {
  auto h = take_number(s, 2);
  if (!h || !take(s, ":")) return std::nullopt;
  auto m = take_number(s, 2);
  if (!m || !take(s, ":")) return std::nullopt;
  auto sec = take_number(s, 2);
  if (!sec) return std::nullopt;
  if (*h > 23 || *m > 59 || *sec > 60) return std::nullopt;
  return hms{*h, *m, *sec};
}

std::optional<std::chrono::sys_seconds> make_time(std::uint64_t year, unsigned month,
                                                  std::uint64_t day, hms t) {
  using namespace std::chrono;
  if (year < 1970 || year > 9999) return std::nullopt;
  const year_month_day ymd{std::chrono::year(static_cast<int>(year)), std::chrono::month(month),
                           std::chrono::day(static_cast<unsigned>(day))};
  if (!ymd.ok()) return std::nullopt;
  return sys_days(ymd) + hours(t.h) + minutes(t.m) + seconds(t.s);
}

// IMF-fixdate "Sun, 06 Nov 1994 08:49:37 GMT", RFC 850 "Sunday, 06-Nov-94 08:49:37 GMT",
// asctime "Sun Nov  6 08:49:37 1994".
std::optional<std::chrono::sys_seconds> parse_http_date(std::string_view s) {
  if (!take_day_name(s)) return std::nullopt;
  const bool asctime = !s.empty() && (s.front() < '0' || s.front() > '9');
  if (asctime) {
    auto month = take_month(s);
    if (!month || !take(s, " ")) return std::nullopt;
    (void)take(s, " ");  // "Nov  6": a one-digit day is padded with a space
    auto day = take_number(s);
    if (!day || !take(s, " ")) return std::nullopt;
    auto t = take_time(s);
    if (!t || !take(s, " ")) return std::nullopt;
    auto year = take_number(s, 4);
    if (!year || !s.empty()) return std::nullopt;
    return make_time(*year, *month, *day, *t);
  }
  auto day = take_number(s, 2);
  if (!day) return std::nullopt;
  const char sep = s.empty() ? '\0' : s.front();
  if (sep != ' ' && sep != '-') return std::nullopt;
  s.remove_prefix(1);
  auto month = take_month(s);
  if (!month || s.empty() || s.front() != sep) return std::nullopt;
  s.remove_prefix(1);
  std::optional<std::uint64_t> year;
  if (sep == ' ') {
    year = take_number(s, 4);
  } else {
    // Two-digit years: RFC 9110 says one more than 50 years ahead is the past century.
    year = take_number(s, 2);
    if (year) *year += *year < 70 ? 2000 : 1900;
  }
  if (!year || !take(s, " ")) return std::nullopt;
  auto t = take_time(s);
  if (!t || !take(s, " GMT") || !s.empty()) return std::nullopt;
  return make_time(*year, *month, *day, *t);
}

}  // namespace

std::optional<std::chrono::seconds> parse_retry_after(std::string_view value,
                                                      std::chrono::system_clock::time_point now) {
  value = trim(value);
  if (value.empty()) return std::nullopt;
  if (value.front() >= '0' && value.front() <= '9') {
    std::string_view rest = value;
    auto n = take_number(rest);
    if (!n || !rest.empty()) {
      // More digits than fit: a very long wait.
      for (char c : value) {
        if (c < '0' || c > '9') return std::nullopt;
      }
      return max_wait;
    }
    return std::chrono::seconds(std::min<std::uint64_t>(*n, max_wait.count()));
  }
  auto at = parse_http_date(value);
  if (!at) return std::nullopt;
  // In whole seconds: a far date (year 9999) overflows the clock's nanoseconds. A date
  // later in the current second is a full second away (waiting too little is refused again).
  const auto now_s = std::chrono::floor<std::chrono::seconds>(now);
  const auto ahead = *at - now_s;
  if (ahead.count() <= 0) return std::chrono::seconds(0);
  return std::min(std::chrono::duration_cast<std::chrono::seconds>(ahead), max_wait);
}

}  // namespace layercache::oci
