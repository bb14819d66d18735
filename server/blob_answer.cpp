#include "server/blob_answer.hpp"

#include <optional>

namespace layercache::server {

std::string blob_answer::part_header(const oci::byte_range& r, std::uint64_t size) const {
  return "\r\n--" + boundary + "\r\nContent-Type: application/octet-stream\r\nContent-Range: " +
         oci::format_content_range(r, size) + "\r\n\r\n";
}

std::string blob_answer::closing() const { return "\r\n--" + boundary + "--\r\n"; }

namespace {

// The ranges a GET's Range asks for, resolved against the blob; nullopt: unsatisfiable.
// Empty: the whole blob (no Range, one that is ignored, or ranges worth no less than it).
std::optional<std::vector<oci::byte_range>> wanted_ranges(std::string_view range,
                                                          std::uint64_t size) {
  const auto parsed = oci::parse_range(range);
  if (parsed.error == oci::range_error::too_many) return std::nullopt;
  if (parsed.error != oci::range_error::none) return std::vector<oci::byte_range>{};
  auto resolved = oci::resolve(parsed.specs, size);
  if (!resolved) return std::nullopt;
  // Several ranges that add up to the whole blob or more (overlapping, or "0-,0-,0-…") would
  // multiply the response: send the blob once instead.
  if (resolved->size() > 1) {
    std::uint64_t total = 0;
    for (const auto& r : *resolved) total += r.length();
    if (total >= size) return std::vector<oci::byte_range>{};
  }
  return resolved;
}

}  // namespace

blob_answer plan_blob_answer(bool head, std::string_view range, std::string_view if_range,
                             const oci::digest& d, std::uint64_t size) {
  blob_answer a;
  a.content_type = "application/octet-stream";
  a.length = size;
  const std::string etag = "\"" + d.str() + "\"";
  if (head || range.empty() || (!if_range.empty() && if_range != etag)) return a;
  auto ranges = wanted_ranges(range, size);
  if (!ranges) {
    a.status = 416;
    a.content_type = "application/json";
    a.content_range = "bytes */" + std::to_string(size);
    a.length = 0;
    return a;
  }
  if (ranges->empty()) return a;
  a.status = 206;
  a.ranges = std::move(*ranges);
  if (a.ranges.size() == 1) {
    a.length = a.ranges[0].length();
    a.content_range = oci::format_content_range(a.ranges[0], size);
    return a;
  }
  a.boundary = "layercache-" + std::string(d.hex().substr(0, 24));
  a.content_type = "multipart/byteranges; boundary=" + a.boundary;
  a.length = a.closing().size();
  for (const auto& r : a.ranges) a.length += a.part_header(r, size).size() + r.length();
  return a;
}

std::string_view blob_refusal_code(unsigned status) {
  switch (status) {
    case 404:
      return "BLOB_UNKNOWN";
    case 401:
      return "UNAUTHORIZED";
    case 403:
      return "DENIED";
    case 429:
      return "TOOMANYREQUESTS";
    default:
      return "UNAVAILABLE";
  }
}

}  // namespace layercache::server
