// multipart/byteranges (RFC 9110 §14.6): the body of a 206 answering several ranges, read as it
// arrives. Pure parsing, no I/O; fuzzed (fuzz/multipart_fuzz.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace layercache::oci {

// The boundary of a `multipart/byteranges; boundary=…` Content-Type (quoted or not); nullopt
// for any other type, or a boundary that is missing or not 1..70 characters.
[[nodiscard]] std::optional<std::string> byteranges_boundary(std::string_view content_type);

// Reads a multipart/byteranges body fed in pieces of any size. Each part's Content-Range says
// where its bytes belong and how many there are, so part data is never searched for the
// boundary. Parts are handed on as they arrive: on_bytes(offset, data, size), several calls
// per part as the input comes; it returns false to stop.
class byteranges_reader {
 public:
  using on_bytes = std::function<bool(std::uint64_t offset, const char* data, std::size_t size)>;

  // `complete_length`: the resource's size; a part claiming another is an error.
  byteranges_reader(std::string boundary, std::uint64_t complete_length);

  // Consumes `size` bytes. false on malformed input (error() says why) or when on_bytes said
  // stop; nothing more may be fed after that. Bytes after the closing delimiter are ignored.
  bool feed(const char* data, std::size_t size, const on_bytes& out);

  // The closing delimiter was read.
  [[nodiscard]] bool done() const { return state_ == state::done; }
  [[nodiscard]] const std::string& error() const { return error_; }

 private:
  enum class state { head, data, done, failed };
  bool fail(std::string why);
  bool parse_head(std::string_view head);

  std::string delimiter_;  // "--" + boundary
  std::uint64_t complete_length_;
  state state_ = state::head;
  std::string head_;             // delimiter line and part headers, until the blank line
  std::uint64_t offset_ = 0;     // of the next data byte of the current part
  std::uint64_t remaining_ = 0;  // data bytes of the current part still to come
  std::string error_;
};

}  // namespace layercache::oci
