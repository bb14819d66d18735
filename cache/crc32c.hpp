// CRC-32C (Castagnoli), the per-chunk checksum. Internal to cache/.
#pragma once

#include <cstdint>
#include <string_view>

namespace layercache::cache::detail {

// The standard CRC-32C of `bytes` (crc32c("123456789") == 0xe3069283). Uses SSE4.2 when the CPU
// has it (three interleaved streams, ~3x a single one), a table otherwise.
[[nodiscard]] std::uint32_t crc32c(std::string_view bytes);

}  // namespace layercache::cache::detail
