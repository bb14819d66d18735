// The Retry-After parser (oci/retry_after.hpp): a header value an upstream controls, parsed
// against fixed clocks (the Unix epoch, a day in 2026, the far end of the clock's range).
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz/check.hpp"
#include "oci/retry_after.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace std::chrono;
  const std::string_view value(reinterpret_cast<const char*>(data), size);
  const system_clock::time_point nows[] = {
      system_clock::time_point{},
      sys_days(year_month_day{year(2026), month(11), day(29)}) + hours(3),
      system_clock::time_point::max() - hours(48),
  };
  const auto first = layercache::oci::parse_retry_after(value, nows[0]);
  for (const auto now : nows) {
    const auto wait = layercache::oci::parse_retry_after(value, now);
    // Parsing does not depend on the clock; only a date's distance does.
    FUZZ_CHECK(wait.has_value() == first.has_value());
    if (wait) {
      FUZZ_CHECK(*wait >= seconds(0));
      FUZZ_CHECK(*wait <= hours(24));
    }
  }
  return 0;
}
