#include "oci/range.hpp"

#include <charconv>
#include <limits>

#include "oci/http_grammar.hpp"

namespace layercache::oci {
namespace {

using grammar::is_alpha;
using grammar::is_digit;
using grammar::is_ows;
using grammar::is_tchar;

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && is_ows(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ows(s.back())) s.remove_suffix(1);
  return s;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i];
    char y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

// Parses all of `s` as 1*DIGIT into a uint64; nullopt if empty, not digits, or overflowing.
std::optional<std::uint64_t> parse_u64(std::string_view s) {
  if (s.empty()) return std::nullopt;
  std::uint64_t value = 0;
  for (char c : s) {
    if (!is_digit(c)) return std::nullopt;
    const auto d = static_cast<std::uint64_t>(c - '0');
    if (value > (std::numeric_limits<std::uint64_t>::max() - d) / 10) return std::nullopt;
    value = value * 10 + d;
  }
  return value;
}

// Parses all of `s` as 1*DIGIT; a value past 2^64-1 saturates there. nullopt if empty or not
// digits. A Range position has no upper bound (RFC 9110 14.1.1), and no representation reaches
// 2^64-1 bytes, so the saturated value resolves as the real one would: a first position past
// the end is unsatisfiable, a last one clamped, a suffix the whole representation.
std::optional<std::uint64_t> parse_position(std::string_view s) {
  if (s.empty()) return std::nullopt;
  std::uint64_t value = 0;
  for (char c : s) {
    if (!is_digit(c)) return std::nullopt;
    const auto d = static_cast<std::uint64_t>(c - '0');
    if (value > (std::numeric_limits<std::uint64_t>::max() - d) / 10) {
      value = std::numeric_limits<std::uint64_t>::max();
    } else {
      value = value * 10 + d;
    }
  }
  return value;
}

// One range-spec with no surrounding whitespace.
std::optional<range_spec> parse_spec(std::string_view s) {
  const auto dash = s.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  const auto left = s.substr(0, dash);
  const auto right = s.substr(dash + 1);
  range_spec spec;
  if (left.empty()) {
    const auto n = parse_position(right);
    if (!n) return std::nullopt;
    spec.k = range_spec::kind::suffix;
    spec.suffix_length = *n;
    return spec;
  }
  const auto first = parse_position(left);
  if (!first) return std::nullopt;
  spec.first = *first;
  if (right.empty()) {
    spec.k = range_spec::kind::from;
    return spec;
  }
  const auto last = parse_position(right);
  if (!last || *last < *first) return std::nullopt;
  spec.k = range_spec::kind::bounded;
  spec.last = *last;
  return spec;
}

parsed_range fail(range_error e) { return parsed_range{.specs = {}, .error = e}; }

void append_u64(std::string& out, std::uint64_t v) {
  char buf[std::numeric_limits<std::uint64_t>::digits10 + 2];
  const auto res = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, res.ptr);
}

}  // namespace

parsed_range parse_range(std::string_view header_value, std::size_t max_ranges) {
  const auto value = trim_ows(header_value);
  const auto eq = value.find('=');
  if (eq == std::string_view::npos) return fail(range_error::malformed);
  const auto unit = value.substr(0, eq);
  if (unit.empty()) return fail(range_error::malformed);
  for (char c : unit) {
    if (!is_tchar(c)) return fail(range_error::malformed);
  }
  if (!iequals(unit, "bytes")) return fail(range_error::unsupported_unit);

  parsed_range result;
  std::string_view rest = value.substr(eq + 1);
  while (true) {
    const auto comma = rest.find(',');
    const auto element = trim_ows(rest.substr(0, comma));
    if (!element.empty()) {
      const auto spec = parse_spec(element);
      if (!spec) return fail(range_error::malformed);
      if (result.specs.size() >= max_ranges) return fail(range_error::too_many);
      result.specs.push_back(*spec);
    }
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  if (result.specs.empty()) return fail(range_error::malformed);
  return result;
}

std::optional<std::vector<byte_range>> resolve(const std::vector<range_spec>& specs,
                                               std::uint64_t size) {
  if (size == 0) return std::nullopt;
  std::vector<byte_range> out;
  for (const auto& spec : specs) {
    switch (spec.k) {
      case range_spec::kind::bounded:
        if (spec.first > spec.last || spec.first >= size) continue;
        out.push_back({spec.first, spec.last < size ? spec.last : size - 1});
        break;
      case range_spec::kind::from:
        if (spec.first >= size) continue;
        out.push_back({spec.first, size - 1});
        break;
      case range_spec::kind::suffix:
        if (spec.suffix_length == 0) continue;
        out.push_back({spec.suffix_length >= size ? 0 : size - spec.suffix_length, size - 1});
        break;
    }
  }
  if (out.empty()) return std::nullopt;
  return out;
}

std::optional<content_range> parse_content_range(std::string_view value) {
  value = trim_ows(value);
  const auto sp = value.find(' ');
  if (sp == std::string_view::npos || !iequals(value.substr(0, sp), "bytes")) {
    return std::nullopt;
  }
  const auto rest = value.substr(sp + 1);
  const auto slash = rest.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  const auto range_part = rest.substr(0, slash);
  const auto length_part = rest.substr(slash + 1);

  content_range cr;
  if (length_part != "*") {
    cr.complete_length = parse_u64(length_part);
    if (!cr.complete_length) return std::nullopt;
  }
  if (range_part == "*") {
    // "*/n" is only meaningful with a known length.
    if (!cr.complete_length) return std::nullopt;
    return cr;
  }
  const auto dash = range_part.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  const auto first = parse_u64(range_part.substr(0, dash));
  const auto last = parse_u64(range_part.substr(dash + 1));
  if (!first || !last || *last < *first) return std::nullopt;
  if (cr.complete_length && *last >= *cr.complete_length) return std::nullopt;
  cr.range = byte_range{*first, *last};
  return cr;
}

std::string format_content_range(byte_range r, std::uint64_t size) {
  std::string out = "bytes ";
  out.reserve(6 + 3 * 20 + 2);
  append_u64(out, r.first);
  out += '-';
  append_u64(out, r.last);
  out += '/';
  append_u64(out, size);
  return out;
}

}  // namespace layercache::oci
