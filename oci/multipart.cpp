#include "oci/multipart.hpp"

#include <algorithm>
#include <cctype>
#include <utility>

#include "oci/range.hpp"

namespace layercache::oci {
namespace {

constexpr std::size_t max_head =
    std::size_t{16} * 1024;  // preamble, delimiter line and part headers

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

std::optional<std::string> byteranges_boundary(std::string_view content_type) {
  const auto semi = content_type.find(';');
  if (lower(trim(content_type.substr(0, semi))) != "multipart/byteranges") return std::nullopt;
  std::string_view params = semi == std::string_view::npos ? "" : content_type.substr(semi + 1);
  while (!params.empty()) {
    const auto next = params.find(';');
    std::string_view p = trim(params.substr(0, next));
    params = next == std::string_view::npos ? "" : params.substr(next + 1);
    const auto eq = p.find('=');
    if (eq == std::string_view::npos || lower(trim(p.substr(0, eq))) != "boundary") continue;
    std::string_view v = trim(p.substr(eq + 1));
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
    if (v.empty() || v.size() > 70) return std::nullopt;
    return std::string(v);
  }
  return std::nullopt;
}

byteranges_reader::byteranges_reader(std::string boundary, std::uint64_t complete_length)
    : delimiter_("--" + std::move(boundary)), complete_length_(complete_length) {}

bool byteranges_reader::fail(std::string why) {
  state_ = state::failed;
  error_ = std::move(why);
  return false;
}

// `head`: everything from the end of the last part's data up to and including the blank line
// after this part's headers (or the closing delimiter and what follows it).
bool byteranges_reader::parse_head(std::string_view head) {
  // Optional CRLF(s) before the delimiter (the one ending the previous part, a preamble).
  const auto at = head.find(delimiter_);
  if (at == std::string_view::npos) return fail("multipart body without its boundary");
  std::string_view rest = head.substr(at + delimiter_.size());
  if (rest.starts_with("--")) {
    state_ = state::done;
    return true;
  }
  const auto eol = rest.find("\r\n");
  if (eol == std::string_view::npos || !trim(rest.substr(0, eol)).empty()) {
    return fail("multipart delimiter line malformed");
  }
  rest.remove_prefix(eol + 2);
  std::optional<content_range> range;
  while (!rest.empty()) {
    const auto end = rest.find("\r\n");
    if (end == std::string_view::npos) break;
    const std::string_view line = rest.substr(0, end);
    rest.remove_prefix(end + 2);
    if (line.empty()) break;
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) return fail("multipart part header malformed");
    if (lower(trim(line.substr(0, colon))) == "content-range") {
      range = parse_content_range(trim(line.substr(colon + 1)));
      if (!range || !range->range) return fail("multipart part with a bad Content-Range");
    }
  }
  if (!range) return fail("multipart part without a Content-Range");
  if ((range->complete_length && *range->complete_length != complete_length_) ||
      range->range->last >= complete_length_) {
    return fail("multipart part for a resource of another length");
  }
  offset_ = range->range->first;
  remaining_ = range->range->last - range->range->first + 1;
  state_ = state::data;
  return true;
}

bool byteranges_reader::feed(const char* data, std::size_t size, const on_bytes& out) {
  while (size > 0) {
    switch (state_) {
      case state::done:
        return true;
      case state::failed:
        return false;
      case state::data: {
        const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(remaining_, size));
        if (!out(offset_, data, n)) return fail("stopped by the caller");
        offset_ += n;
        remaining_ -= n;
        data += n;
        size -= n;
        if (remaining_ == 0) state_ = state::head;
        break;
      }
      case state::head: {
        // Up to the blank line ending the part's headers, or the closing delimiter.
        // Only the first max_head bytes are looked at, however the input is cut.
        const std::size_t before = head_.size();
        const std::size_t take = std::min(size, max_head - before);
        head_.append(data, take);
        const auto at = head_.find(delimiter_);
        std::size_t used = 0;
        if (at != std::string::npos) {
          const std::string_view after = std::string_view(head_).substr(at + delimiter_.size());
          if (after.starts_with("--")) {
            state_ = state::done;
            return true;
          }
          const auto blank = head_.find("\r\n\r\n", at);
          if (blank != std::string::npos) used = blank + 4;
        }
        if (used == 0) {
          if (head_.size() >= max_head) return fail("multipart part headers too long");
          data += take;
          size -= take;
          break;
        }
        if (!parse_head(std::string_view(head_).substr(0, used))) return false;
        // Bytes of this feed past the headers are the part's data.
        const std::size_t consumed = used - before;
        data += consumed;
        size -= consumed;
        head_.clear();
        break;
      }
    }
  }
  return state_ != state::failed;
}

}  // namespace layercache::oci
