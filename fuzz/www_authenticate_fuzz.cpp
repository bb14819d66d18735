// WWW-Authenticate parser (oci/www_authenticate.hpp). The input is one field value.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz/check.hpp"
#include "oci/www_authenticate.hpp"

namespace {

bool is_lower_token(std::string_view s) {
  if (s.empty()) return false;
  for (const char c : s) {
    if (c >= 'A' && c <= 'Z') return false;
    if (c == ' ' || c == '\t' || c == ',' || c == '=' || c == '"') return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto challenges = layercache::oci::parse_www_authenticate(text);
  for (const auto& c : challenges) {
    FUZZ_CHECK(is_lower_token(c.scheme));
    FUZZ_CHECK(c.token68.empty() || c.params.empty());
    for (const auto& [name, value] : c.params) {
      FUZZ_CHECK(is_lower_token(name));
      FUZZ_CHECK(value.size() <= text.size());
      const auto found = c.param(name);
      FUZZ_CHECK(found.has_value());
    }
    const auto again = layercache::oci::find_challenge(challenges, c.scheme);
    FUZZ_CHECK(again && again->scheme == c.scheme);
  }
  // Every challenge consumes at least its scheme and a separator.
  FUZZ_CHECK(challenges.size() <= text.size());
  return 0;
}
