// Range and Content-Range parsers (oci/range.hpp). The input is one header value; it is parsed
// as a Range (with the default limit and a small one) and resolved against fixed sizes, and
// parsed as a Content-Range.
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string_view>

#include "fuzz/check.hpp"
#include "oci/range.hpp"

namespace {

using layercache::oci::byte_range;
using layercache::oci::content_range;
using layercache::oci::parse_content_range;
using layercache::oci::parse_range;
using layercache::oci::parsed_range;
using layercache::oci::range_error;
using layercache::oci::range_spec;

constexpr std::uint64_t max_u64 = std::numeric_limits<std::uint64_t>::max();
constexpr std::uint64_t sizes[] = {0, 1, 2, 7, 100, 1 << 20, max_u64 / 2, max_u64 - 1, max_u64};

void check_parsed(const parsed_range& p, std::size_t max_ranges) {
  if (p.error != range_error::none) {
    FUZZ_CHECK(p.specs.empty());
    return;
  }
  FUZZ_CHECK(!p.specs.empty());
  FUZZ_CHECK(p.specs.size() <= max_ranges);
  for (const auto& spec : p.specs) {
    if (spec.k == range_spec::kind::bounded) FUZZ_CHECK(spec.first <= spec.last);
  }
  for (const std::uint64_t size : sizes) {
    const auto resolved = layercache::oci::resolve(p.specs, size);
    if (size == 0) FUZZ_CHECK(!resolved);
    if (!resolved) continue;
    FUZZ_CHECK(!resolved->empty());
    FUZZ_CHECK(resolved->size() <= p.specs.size());
    for (const byte_range& r : *resolved) {
      FUZZ_CHECK(r.first <= r.last);
      FUZZ_CHECK(r.last < size);
      FUZZ_CHECK(r.length() >= 1 && r.length() <= size);
    }
  }
}

void check_content_range(std::string_view text) {
  const auto cr = parse_content_range(text);
  if (!cr) return;
  FUZZ_CHECK(cr->range || cr->complete_length);
  if (cr->range) {
    FUZZ_CHECK(cr->range->first <= cr->range->last);
    if (cr->complete_length) {
      FUZZ_CHECK(cr->range->last < *cr->complete_length);
      // What we format for a 206 parses back to the same value.
      const auto again = parse_content_range(
          layercache::oci::format_content_range(*cr->range, *cr->complete_length));
      FUZZ_CHECK(again && *again == *cr);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  check_parsed(parse_range(text), 1024);
  check_parsed(parse_range(text, 4), 4);
  check_content_range(text);
  return 0;
}
