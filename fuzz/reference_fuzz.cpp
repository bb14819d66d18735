// Digest and image reference parsers (oci/digest.hpp, oci/reference.hpp). The input is one
// string; whatever parses must round-trip: digest::parse(d.str()) == d (and str() is the input),
// reference::parse(r.str()) == r. config::is_image_reference (config/'s own grammar, for
// prefetch.preload) accepts exactly what reference::parse accepts.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "config/config.hpp"
#include "fuzz/check.hpp"
#include "oci/digest.hpp"
#include "oci/reference.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using layercache::oci::digest;
  using layercache::oci::reference;
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  if (const auto d = digest::parse(text)) {
    FUZZ_CHECK(d->str() == text);
    const auto again = digest::parse(d->str());
    FUZZ_CHECK(again && *again == *d);
    FUZZ_CHECK(d->raw().size() * 2 == d->hex().size());
  }

  const auto parsed = reference::parse(text);
  FUZZ_CHECK(layercache::config::is_image_reference(text) == parsed.has_value());
  if (const auto& r = parsed) {
    FUZZ_CHECK(layercache::oci::is_valid_registry(r->registry));
    FUZZ_CHECK(layercache::oci::is_valid_repository(r->repository));
    FUZZ_CHECK(r->tag.empty() || layercache::oci::is_valid_tag(r->tag));
    FUZZ_CHECK(!r->tag.empty() || r->digest);
    const std::string printed = r->str();
    const auto again = reference::parse(printed);
    if (!again) std::fprintf(stderr, "str() does not parse: %s\n", printed.c_str());
    FUZZ_CHECK(again);
    FUZZ_CHECK(*again == *r);
    FUZZ_CHECK(again->str() == printed);
  }

  // The validators never read past their input (ASan) and agree with each other.
  if (layercache::oci::is_valid_repository(text)) FUZZ_CHECK(text.find("..") == text.npos);
  (void)layercache::oci::is_valid_tag(text);
  (void)layercache::oci::is_valid_registry(text);
  return 0;
}
