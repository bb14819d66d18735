// An in-process HTTP file server on 127.0.0.1 — the target of a registry's blob redirects.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace layercache::testing {

struct recorded_request {
  std::string method;
  std::string target;  // as sent, e.g. /docker/registry/v2/blobs/sha256/ab/<hex>/data?x=y
  std::vector<std::pair<std::string, std::string>> headers;  // wire order

  // The first header called `name` (case-insensitive).
  [[nodiscard]] std::optional<std::string> header(std::string_view name) const;
};

// Serves the files under `root` for GET and HEAD on its own thread (HTTP/1.1, keep-alive):
// 200 with the whole file, or 206 + Content-Range for one `Range: bytes=a-b`, `a-` or `-n`;
// 416 + `Content-Range: bytes */size` when the range starts past the end; a malformed or
// multi-range Range is ignored (200). 404 for missing files, 400 for targets with `.`/`..`
// segments or encoded slashes, 405 for other methods. Every request is recorded before it
// is answered. The port is bound when the constructor returns; the destructor stops the
// thread and closes every connection. requests()/clear_requests() are thread-safe.
class file_server {
 public:
  explicit file_server(std::filesystem::path root);
  ~file_server();
  file_server(const file_server&) = delete;
  file_server& operator=(const file_server&) = delete;

  [[nodiscard]] std::uint16_t port() const;
  [[nodiscard]] std::string url() const;  // http://127.0.0.1:PORT
  [[nodiscard]] const std::filesystem::path& root() const;

  [[nodiscard]] std::vector<recorded_request> requests() const;
  void clear_requests();

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace layercache::testing
