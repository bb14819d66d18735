// Typed calls of the OCI distribution API at one upstream: the requests are built here (the
// /v2/ targets, Accept, Range, whether a redirect is followed) and the answers interpreted
// here (status, Content-Range, multipart bodies, manifest digests), so that the fill
// coordinator and the sessions never read raw upstream HTTP for these.
//
// Include only from .cpp files: this header brings in Beast (through upstream_client.hpp).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "oci/digest.hpp"
#include "oci/multipart.hpp"
#include "oci/range.hpp"
#include "registry/upstream_client.hpp"

namespace layercache::registry {

// ---- Blobs -------------------------------------------------------------------------------

// The size of a blob at the upstream, or its non-2xx answer (for the caller to pass on), or a
// failure (a 2xx without a length is a protocol failure).
using blob_size_result =
    std::variant<std::uint64_t, std::unique_ptr<upstream_response>, upstream_failure>;

// Asks for the size of blob `d` of `repository` with a HEAD. A HEAD the upstream redirects
// (registries that keep blobs in storage do) is never followed; a GET of the blob's first byte
// is sent instead, which may follow its redirect, and its Content-Range tells the size.
asio::awaitable<blob_size_result> blob_size(upstream_client& client, const std::string& repository,
                                            const oci::digest& d);

// `size` bytes of a blob from `offset`, as a ranged answer delivered them.
struct blob_piece {
  std::uint64_t offset = 0;
  const char* data = nullptr;
  std::size_t size = 0;
};

class mirror_state;

// A ranged GET of a blob, its answer interpreted. The body is one stream of bytes from a
// known offset (a 206 with one Content-Range, or a 200 from the first byte) or the parts of a
// multipart/byteranges body; next() hands over both as pieces at their blob offsets, in the
// order of the body. A piece may start before the first requested byte (a 200, a coalesced
// range) or skip from one requested range to the next: the caller takes what it asked for.
class blob_ranges {
 public:
  blob_ranges();
  ~blob_ranges();
  blob_ranges(blob_ranges&&) noexcept;
  blob_ranges& operator=(blob_ranges&&) noexcept;
  blob_ranges(const blob_ranges&) = delete;
  blob_ranges& operator=(const blob_ranges&) = delete;

  // Why the answer cannot be used: empty when it can.
  [[nodiscard]] const std::string& error() const { return error_; }
  // The kind of error(), for the fill-failure metric: "transport", "status", "content_range",
  // "length".
  [[nodiscard]] std::string_view error_kind() const { return kind_; }
  // No answer, or not a 2xx, after the upstream client's retries: asking again at once
  // would not help.
  [[nodiscard]] bool retries_spent() const { return retries_spent_; }
  // The upstream contradicted the blob size the request was made with (Content-Range,
  // Content-Length, a 416): a size it was told earlier is wrong.
  [[nodiscard]] bool size_contradicted() const { return size_contradicted_; }
  // The upstream answered several ranges with something else than all of them (one range,
  // the whole blob): ask it one range at a time.
  [[nodiscard]] bool several_ranges_refused() const { return several_refused_; }

  // The next pieces of the body (replacing `out`'s contents; valid until the next call). Call
  // only while bytes are still wanted: false when the body failed or ended (error() says why).
  asio::awaitable<bool> next(std::vector<blob_piece>& out);
  // After the last wanted byte: reads what is left of a multipart body (its closing
  // delimiter, a few bytes), so that the connection goes back to the pool.
  asio::awaitable<void> finish();

 private:
  friend asio::awaitable<blob_ranges> get_blob_ranges(upstream_client&, const std::string&,
                                                      const oci::digest&,
                                                      const std::vector<oci::byte_range>&,
                                                      std::uint64_t);
  // Where the body comes from when the upstream has mirrors, and where it goes on when it
  // breaks off at one: the next mirror, then the origin, from the first byte not handed over.
  struct route;

  void fail(std::string why, std::string_view kind) {
    error_ = std::move(why);
    kind_ = kind;
  }
  void interpret(const std::vector<oci::byte_range>& ranges, std::uint64_t blob_size);
  // One GET of `ranges` at `client` (a mirror of `mirror` when set), its answer interpreted;
  // what an earlier GET left is dropped.
  asio::awaitable<void> request(upstream_client& client, const std::string& repository,
                                const oci::digest& d, const std::vector<oci::byte_range>& ranges,
                                std::uint64_t blob_size, const mirror_state* mirror);
  // The next mirror that answers the ranges not handed over yet, else the origin.
  asio::awaitable<void> advance();
  // next() at the source answering now.
  asio::awaitable<bool> next_here(std::vector<blob_piece>& out);

  std::unique_ptr<route> route_;            // only when the upstream has mirrors
  std::optional<upstream_errc> transport_;  // the last request's, when it had no answer
  std::unique_ptr<upstream_response> response_;
  std::optional<oci::byteranges_reader> parts_;
  std::uint64_t offset_ = 0;  // a single stream: the blob offset of the next body byte
  std::vector<char> buffer_;
  std::string error_;
  std::string_view kind_ = "transport";
  bool retries_spent_ = false;
  bool size_contradicted_ = false;
  bool several_refused_ = false;
};

// GETs `ranges` (ascending, not overlapping, within the blob) of blob `d`, whose size is
// `blob_size` as far as the caller knows, following a redirect.
asio::awaitable<blob_ranges> get_blob_ranges(upstream_client& client, const std::string& repository,
                                             const oci::digest& d,
                                             const std::vector<oci::byte_range>& ranges,
                                             std::uint64_t blob_size);

// A GET or HEAD of blob `d` passed through for a client: its Range and If-Range values (empty:
// none) are sent as they are; a GET follows a redirect. The answer is the upstream's.
asio::awaitable<upstream_result> relay_blob(upstream_client& client, const std::string& repository,
                                            const oci::digest& d, bool head, std::string_view range,
                                            std::string_view if_range);

// ---- Manifests ---------------------------------------------------------------------------

// A manifest the upstream served, checked against the digest it was asked by (a tag's: its
// bytes' sha256).
struct manifest_body {
  unsigned status = 200;  // a 2xx
  oci::digest digest;
  std::string media_type;  // the upstream's Content-Type, or the OCI manifest type without one
  std::string bytes;
};

// What a manifest GET came to. A failure's code says why: `body_too_large`, `digest_mismatch`,
// or the transport's (a body that broke off twice).
struct manifest_failure {
  enum class why { upstream, body_too_large, digest_mismatch };
  why kind = why::upstream;
  upstream_failure failure;
};
using manifest_result =
    std::variant<manifest_body, std::unique_ptr<upstream_response>, manifest_failure>;

// GETs manifest `reference` (a tag or a digest) of `repository` with `accept`, at most
// `max_size` bytes. A body that breaks off (reset, stall, truncation) is asked for once more
// (the client retries only answers that never began). A non-2xx answer is returned for the
// caller to pass on.
asio::awaitable<manifest_result> get_manifest(upstream_client& client,
                                              const std::string& repository,
                                              const std::string& reference,
                                              const std::string& accept, std::size_t max_size);

// A HEAD of manifest `reference` with `accept`: the upstream's answer (its digest in
// Docker-Content-Digest).
asio::awaitable<upstream_result> head_manifest(upstream_client& client,
                                               const std::string& repository,
                                               const std::string& reference,
                                               const std::string& accept);

// ---- Listings ----------------------------------------------------------------------------

// GET or HEAD of `/v2/<repository>/<path>` with query `params` (the tags list: path
// "tags/list"; referrers: "referrers/<digest>"), accepting JSON.
asio::awaitable<upstream_result> get_listing(
    upstream_client& client, const std::string& repository, std::string_view path,
    const std::vector<std::pair<std::string, std::string>>& params, bool head);

}  // namespace layercache::registry
