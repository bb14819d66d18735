// A registry on 127.0.0.1 (port 0) that misbehaves on request: it serves the blobs and
// manifests a test gives it (any repository name; Range as a registry does), and the next
// requests of a kind get a planned fault instead — a reset or a stall mid-body, an error
// status with or without Retry-After, a truncated body, wrong bytes, a wrong Content-Range,
// throttled bytes, a redirect. Every request is recorded with what was done to it.
//
// Plain blocking sockets, a thread per connection (keep-alive honoured); stalls end when the
// client goes away or the upstream is destroyed. In-process, for fault tests.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace layercache::testing {

enum class request_kind { any, base, manifest, blob_head, blob_get, other };

struct fault {
  enum class kind {
    none,
    status,       // answer `status` (OCI error body), with Retry-After `retry_after` if set
    reset,        // header and `after` body bytes, then a TCP reset
    stall,        // header and `after` body bytes, then nothing (before_header: not even that)
    truncate,     // header (full Content-Length) and `after` body bytes, then a clean close
    corrupt,      // the body, with the 16 bytes at blob offset `after` inverted (if served)
    wrong_range,  // a range answered with the range `after` bytes further on, said so
    throttle,     // the body at `bytes_per_second`
    redirect,     // 307 to `location`
    delay,        // the normal answer, after `after` milliseconds
  };
  kind what = kind::none;
  unsigned status = 503;
  std::string retry_after;
  std::uint64_t after = 0;
  bool before_header = false;
  std::uint64_t bytes_per_second = 0;
  std::string location;
  std::uint64_t cut = 0;  // corrupt: then a clean close after `cut` body bytes (0: none)

  static fault answer(unsigned status, std::string retry_after = {});
  static fault reset_after(std::uint64_t bytes);
  static fault stall_after(std::uint64_t bytes);
  static fault stall_before_header();
  static fault truncate_after(std::uint64_t bytes);
  static fault corrupt_at(std::uint64_t blob_offset);
  // The body with the 16 bytes at `blob_offset` inverted, cut short after `body_bytes` of it
  // (a clean close, so they all arrive): a registry that lied before its answer broke off
  // (what a client got first is not what a second request gets).
  static fault corrupt_then_cut(std::uint64_t blob_offset, std::uint64_t body_bytes);
  static fault shifted_range(std::uint64_t by);
  static fault throttle(std::uint64_t bytes_per_second);
  static fault redirect_to(std::string location);
  static fault delay_ms(std::uint64_t ms);
};

struct fault_request {
  std::string method;
  std::string target;
  request_kind kind = request_kind::other;
  std::optional<std::string> range;          // the Range header
  std::optional<std::string> authorization;  // the Authorization header
  std::chrono::steady_clock::time_point at;  // when its header had arrived
  fault::kind applied = fault::kind::none;
};

class fault_upstream {
 public:
  fault_upstream();
  ~fault_upstream();
  fault_upstream(const fault_upstream&) = delete;
  fault_upstream& operator=(const fault_upstream&) = delete;

  [[nodiscard]] std::uint16_t port() const;
  [[nodiscard]] std::string url() const;  // http://127.0.0.1:PORT

  // Served by digest (sha256 of `bytes`) under any repository; returns the digest.
  std::string add_blob(std::string bytes);
  // A lying registry: `bytes` served as blob `digest` (whatever their sha256).
  void add_blob_as(const std::string& digest, std::string bytes);
  // Served by `tag` and by digest under any repository; returns the digest.
  std::string add_manifest(const std::string& tag, std::string media_type, std::string bytes);

  // From now on, requests without `Authorization: Basic base64(user:password)` get a 401 with
  // a Basic challenge.
  void require_basic(const std::string& user, const std::string& password);

  // The next `count` requests of kind `k` (any: every kind) get `f`; plans queue in order.
  void plan(request_kind k, fault f, unsigned count = 1);
  void clear_plans();

  // From now on, when no plan matches, a blob GET gets a fault drawn at random with
  // probability `p` (0: never) from `kinds` — each with the parameters a soak wants: resets,
  // stalls and truncations part-way through the body, 500/502/503, 429 with Retry-After 0 or 1,
  // a range shifted by a few KiB, a slow body. Seeded: runs repeat.
  void randomize(double p, std::vector<fault::kind> kinds, std::uint64_t seed);
  // Faults applied so far, by kind (planned and random).
  [[nodiscard]] std::map<fault::kind, std::uint64_t> applied() const;

  [[nodiscard]] std::vector<fault_request> requests() const;
  [[nodiscard]] std::vector<fault_request> requests(request_kind k) const;
  void clear_requests();

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace layercache::testing
