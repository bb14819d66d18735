// The Retry-After response header (RFC 9110 §10.2.3): how long a 429 or 503 asks the client to
// wait before it tries again.
#pragma once

#include <chrono>
#include <optional>
#include <string_view>

namespace layercache::oci {

// The wait a Retry-After value asks for, measured from `now`: delay-seconds ("120"), or an
// HTTP-date ("Sun, 06 Nov 1994 08:49:37 GMT", also the obsolete RFC 850 and asctime forms).
// A date in the past is a wait of zero. nullopt for anything else (empty, negative, garbage,
// an impossible date); absurd delays are capped at one day.
[[nodiscard]] std::optional<std::chrono::seconds> parse_retry_after(
    std::string_view value, std::chrono::system_clock::time_point now);

}  // namespace layercache::oci
