// HTTP byte ranges (RFC 9110 §14): the Range request header, Content-Range, and resolving
// requested ranges against a representation of known size; and byte_interval, the half-open
// interval everything below HTTP (cache, profiles, prefetch, fills) counts bytes in.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace layercache::oci {

// A closed (inclusive) byte range as HTTP uses it: bytes first..last.
// Invariant when produced by this module: first <= last.
struct byte_range {
  std::uint64_t first = 0;
  std::uint64_t last = 0;  // inclusive

  // Number of bytes, last - first + 1. Precondition: first <= last and not the full
  // 2^64 span (which cannot occur for a resolved range).
  [[nodiscard]] std::uint64_t length() const { return last - first + 1; }

  friend bool operator==(const byte_range&, const byte_range&) = default;
};

// A half-open byte interval [begin, end): bytes of a blob as the cache, access profiles,
// prefetch and fills hold them. Empty when end <= begin (length 0, never negative). Not the
// closed byte_range HTTP speaks: the two convert only explicitly, where HTTP is spoken (a
// client's Range, an upstream request), so an off-by-one between them has one place to hide.
// It has constructors (it is no aggregate) so that a brace list of loose numbers — an
// (offset, length) pair, a closed first..last — never silently becomes one.
struct byte_interval {
  std::uint64_t begin = 0;
  std::uint64_t end = 0;  // exclusive

  constexpr byte_interval() = default;
  constexpr byte_interval(std::uint64_t first_byte, std::uint64_t past_last_byte)
      : begin(first_byte), end(past_last_byte) {}
  // The bytes r.first..r.last. Precondition: r.last < 2^64-1 (true of every range resolved
  // against a representation's size: its last byte is below the size).
  constexpr explicit byte_interval(const byte_range& r) : begin(r.first), end(r.last + 1) {}
  // `length` bytes from `offset`. Precondition: offset + length < 2^64.
  [[nodiscard]] static constexpr byte_interval at(std::uint64_t offset, std::uint64_t length) {
    return {offset, offset + length};
  }

  [[nodiscard]] constexpr bool empty() const { return end <= begin; }
  [[nodiscard]] constexpr std::uint64_t length() const { return empty() ? 0 : end - begin; }
  [[nodiscard]] constexpr bool contains(std::uint64_t offset) const {
    return offset >= begin && offset < end;
  }
  // The bytes in both; empty (and then not necessarily {0, 0}) when they do not overlap.
  [[nodiscard]] constexpr byte_interval intersect(const byte_interval& other) const {
    return {begin > other.begin ? begin : other.begin, end < other.end ? end : other.end};
  }
  // The same bytes as HTTP's closed range begin..end-1. Precondition: !empty().
  constexpr explicit operator byte_range() const { return {begin, end - 1}; }

  friend bool operator==(const byte_interval&, const byte_interval&) = default;
};

// One element of a Range header, before the representation size is known.
struct range_spec {
  enum class kind {
    bounded,  // "a-b"
    from,     // "a-"
    suffix,   // "-n"
  };
  kind k = kind::bounded;
  std::uint64_t first = 0;          // bounded, from
  std::uint64_t last = 0;           // bounded
  std::uint64_t suffix_length = 0;  // suffix

  friend bool operator==(const range_spec&, const range_spec&) = default;
};

enum class range_error {
  none,
  malformed,         // syntax error, first > last
  unsupported_unit,  // a well-formed unit other than "bytes"
  too_many,          // more than max_ranges specs
};

// Result of parse_range. `specs` is empty whenever `error != none`.
struct parsed_range {
  std::vector<range_spec> specs;
  range_error error = range_error::none;
};

// Parses a Range header value: `bytes=` 1#( a-b / a- / -n ). The unit is case-insensitive,
// optional whitespace around commas is allowed, empty list elements are skipped, but at least
// one spec is required. At most `max_ranges` specs are accepted (more → too_many). A number
// past 2^64-1 is not an error: it saturates at 2^64-1, which resolve() treats as past the end
// of any representation (so "bytes=99999999999999999999-" is unsatisfiable, not malformed).
// Linear in the input; never throws.
[[nodiscard]] parsed_range parse_range(std::string_view header_value,
                                       std::size_t max_ranges = 1024);

// Resolves specs against a representation of `size` bytes, in the order requested (no
// merging). Specs starting at or after `size` are dropped, `last` is clamped to size-1, a
// suffix "-n" selects the last n bytes (all of them if n >= size) and "-0" is unsatisfiable.
// nullopt when nothing is satisfiable (→ 416), always when size is 0.
[[nodiscard]] std::optional<std::vector<byte_range>> resolve(const std::vector<range_spec>& specs,
                                                             std::uint64_t size);

// A parsed Content-Range header value.
//   "bytes a-b/n" → range and complete_length
//   "bytes a-b/*" → range only
//   "bytes */n"   → complete_length only (the reply to an unsatisfiable range)
struct content_range {
  std::optional<byte_range> range;
  std::optional<std::uint64_t> complete_length;

  friend bool operator==(const content_range&, const content_range&) = default;
};

// Parses a Content-Range value (see content_range). nullopt for other units, syntax errors,
// overflowing numbers, last < first, or last >= complete length. Never throws.
[[nodiscard]] std::optional<content_range> parse_content_range(std::string_view value);

// "bytes first-last/size", for a 206 reply.
[[nodiscard]] std::string format_content_range(byte_range r, std::uint64_t size);

}  // namespace layercache::oci
