// What a client's blob GET or HEAD is answered with, decided before any byte is read: the
// status (200, 206, 416), the headers that describe the body, and the body's framing — the
// whole blob, one range, or several as multipart/byteranges (RFC 9110 §14). Pure: no I/O, no
// Beast; the session writes what this plans.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "oci/digest.hpp"
#include "oci/range.hpp"

namespace layercache::server {

struct blob_answer {
  unsigned status = 200;  // 200 (the whole blob), 206 (ranges) or 416 (none satisfiable)
  std::string content_type;
  std::string content_range;            // 206 of one range; 416: "bytes */size"
  std::vector<oci::byte_range> ranges;  // empty: the whole blob
  std::uint64_t length = 0;             // of the body, multipart framing included (416: none)
  std::string boundary;                 // several ranges
  // The framing of several ranges: before each part, and after the last.
  [[nodiscard]] std::string part_header(const oci::byte_range& r, std::uint64_t size) const;
  [[nodiscard]] std::string closing() const;
  [[nodiscard]] bool multipart() const { return ranges.size() > 1; }
};

// The answer to a GET (or HEAD: ranges are for GETs only) of blob `d`, `size` bytes, with the
// request's Range and If-Range values (empty: none). A malformed Range or another unit is
// ignored (200); too many ranges, or none that fits, is 416; several ranges that add up to
// the whole blob or more are answered with the blob once (200); an If-Range that is not the
// blob's ETag ("\"<digest>\"") asks for the whole blob.
[[nodiscard]] blob_answer plan_blob_answer(bool head, std::string_view range,
                                           std::string_view if_range, const oci::digest& d,
                                           std::uint64_t size);

// The OCI error code for an upstream's refusal of a blob HEAD (`status` ≥ 400).
[[nodiscard]] std::string_view blob_refusal_code(unsigned status);

}  // namespace layercache::server
