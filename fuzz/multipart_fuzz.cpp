// multipart/byteranges reader (oci/multipart.hpp). The input is a body; it is read whole and
// again in pieces of 1..7 bytes, and both readings must hand on the same bytes at the same
// offsets and agree on the outcome. The first line, if it parses, is also tried as a
// Content-Type.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/check.hpp"
#include "oci/multipart.hpp"

namespace {

struct outcome {
  bool ok = false;
  bool done = false;
  std::vector<std::pair<std::uint64_t, std::string>> bytes;  // merged runs
};

outcome read(std::string_view body, std::size_t step) {
  constexpr std::uint64_t size = 1000;
  layercache::oci::byteranges_reader reader("XyZ", size);
  outcome o;
  auto on = [&o](std::uint64_t offset, const char* p, std::size_t n) {
    FUZZ_CHECK(n > 0);
    FUZZ_CHECK(offset < size && n <= size - offset);
    if (!o.bytes.empty() && o.bytes.back().first + o.bytes.back().second.size() == offset) {
      o.bytes.back().second.append(p, n);
    } else {
      o.bytes.emplace_back(offset, std::string(p, n));
    }
    return true;
  };
  o.ok = true;
  for (std::size_t at = 0; at < body.size() && o.ok; at += step) {
    const std::size_t n = step == 0 ? body.size() : std::min(step, body.size() - at);
    o.ok = reader.feed(body.data() + at, n, on);
    if (step == 0) break;
  }
  o.done = reader.done();
  if (!o.ok) FUZZ_CHECK(!reader.error().empty());
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  if (auto b = layercache::oci::byteranges_boundary(body.substr(0, body.find('\n')))) {
    FUZZ_CHECK(!b->empty() && b->size() <= 70);
  }
  const outcome whole = read(body, 0);
  const outcome pieces = read(body, 1 + size % 7);
  FUZZ_CHECK(whole.ok == pieces.ok);
  FUZZ_CHECK(whole.done == pieces.done);
  if (whole.ok) FUZZ_CHECK(whole.bytes == pieces.bytes);
  return 0;
}
