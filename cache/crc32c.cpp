#include "cache/crc32c.hpp"

#include <array>
#include <cstddef>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace layercache::cache::detail {
namespace {

constexpr std::uint32_t poly = 0x82f63b78;  // reflected Castagnoli polynomial

constexpr std::array<std::uint32_t, 256> make_table() {
  std::array<std::uint32_t, 256> table{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) != 0 ? (c >> 1) ^ poly : c >> 1;
    table[i] = c;
  }
  return table;
}

constexpr std::array<std::uint32_t, 256> table = make_table();

// Unconditioned update (no pre/post inversion).
std::uint32_t update_table(std::uint32_t crc, const unsigned char* p, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return crc;
}

// a(x) * b(x) mod P(x), bit-reflected (as in zlib's crc32_combine).
constexpr std::uint32_t multmodp(std::uint32_t a, std::uint32_t b) {
  std::uint32_t m = 1U << 31;
  std::uint32_t p = 0;
  for (;;) {
    if ((a & m) != 0) {
      p ^= b;
      if ((a & (m - 1)) == 0) break;
    }
    m >>= 1;
    b = (b & 1) != 0 ? (b >> 1) ^ poly : b >> 1;
  }
  return p;
}

// x^(2^k) mod P(x) for k = 0..31.
constexpr std::array<std::uint32_t, 32> make_x2n() {
  std::array<std::uint32_t, 32> x2n{};
  std::uint32_t p = 1U << 30;  // x^1
  x2n[0] = p;
  for (std::size_t k = 1; k < x2n.size(); ++k) x2n[k] = p = multmodp(p, p);
  return x2n;
}

constexpr std::array<std::uint32_t, 32> x2n = make_x2n();

// x^(8 * bytes) mod P(x).
std::uint32_t shift_bytes(std::size_t bytes) {
  std::uint32_t p = 1U << 31;  // x^0
  for (unsigned k = 3; bytes != 0; bytes >>= 1, ++k) {
    if ((bytes & 1) != 0) p = multmodp(x2n[k & 31], p);
  }
  return p;
}

// CRC of A||B from the (conditioned) CRCs of A and B.
std::uint32_t combine(std::uint32_t crc_a, std::uint32_t crc_b, std::size_t length_b) {
  return multmodp(shift_bytes(length_b), crc_a) ^ crc_b;
}

std::uint32_t crc32c_table(const unsigned char* p, std::size_t n) {
  return ~update_table(~0U, p, n);
}

#if defined(__x86_64__)
std::uint64_t load64(const unsigned char* p) {
  std::uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

__attribute__((target("sse4.2"))) std::uint32_t update_hw(std::uint32_t crc, const unsigned char* p,
                                                          std::size_t n) {
  std::uint64_t c = crc;
  for (; n >= 8; n -= 8, p += 8) c = _mm_crc32_u64(c, load64(p));
  auto c32 = static_cast<std::uint32_t>(c);
  for (; n > 0; --n, ++p) c32 = _mm_crc32_u8(c32, *p);
  return c32;
}

// The crc32 instruction has a latency of three cycles and a throughput of one: three
// independent streams keep it busy; their CRCs are then combined.
__attribute__((target("sse4.2"))) std::uint32_t crc32c_hw(const unsigned char* p, std::size_t n) {
  constexpr std::size_t min_split = 4096;
  if (n < min_split) return ~update_hw(~0U, p, n);
  const std::size_t part = n / 24 * 8;
  const unsigned char* a = p;
  const unsigned char* b = p + part;
  const unsigned char* c = p + 2 * part;
  std::uint64_t ca = 0xffffffff;
  std::uint64_t cb = 0xffffffff;
  std::uint64_t cc = 0xffffffff;
  for (std::size_t i = 0; i < part; i += 8) {
    ca = _mm_crc32_u64(ca, load64(a + i));
    cb = _mm_crc32_u64(cb, load64(b + i));
    cc = _mm_crc32_u64(cc, load64(c + i));
  }
  const std::size_t rest = n - 3 * part;
  const std::uint32_t crc_c = ~update_hw(static_cast<std::uint32_t>(cc), c + part, rest);
  const std::uint32_t crc_a = ~static_cast<std::uint32_t>(ca);
  const std::uint32_t crc_b = ~static_cast<std::uint32_t>(cb);
  return combine(combine(crc_a, crc_b, part), crc_c, part + rest);
}

bool have_sse42() {
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2") != 0;
  }();
  return yes;
}
#endif

}  // namespace

std::uint32_t crc32c(std::string_view bytes) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
#if defined(__x86_64__)
  if (have_sse42()) return crc32c_hw(p, bytes.size());
#endif
  return crc32c_table(p, bytes.size());
}

}  // namespace layercache::cache::detail
