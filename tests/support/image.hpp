// Deterministic test images (OCI and Docker schema 2) and a minimal registry pusher.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "oci/digest.hpp"
#include "oci/media_types.hpp"
#include "tests/support/http_client.hpp"

namespace layercache::testing {

namespace media_type {
inline constexpr std::string_view oci_manifest = oci::media_types::oci_manifest;
inline constexpr std::string_view oci_index = oci::media_types::oci_index;
inline constexpr std::string_view oci_config = oci::media_types::oci_config;
inline constexpr std::string_view oci_layer = oci::media_types::oci_layer_tar;
inline constexpr std::string_view docker_manifest = oci::media_types::docker_manifest_v2;
inline constexpr std::string_view docker_manifest_list = oci::media_types::docker_manifest_list;
inline constexpr std::string_view docker_config = oci::media_types::docker_config;
inline constexpr std::string_view docker_layer = "application/vnd.docker.image.rootfs.diff.tar";
// An Accept value listing every manifest type above. docker-registry 2.8 rewrites a Docker
// schema 2 manifest into a signed schema 1 one, and refuses an OCI manifest with 404, when the
// Accept header does not name the stored type.
inline constexpr std::string_view accept_all_manifests =
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json";
}  // namespace media_type

// n bytes from a fast deterministic PRNG (xoshiro256**): the same (n, seed) gives the same
// bytes, and they do not compress.
[[nodiscard]] std::string random_bytes(std::size_t n, std::uint64_t seed);

// A valid uncompressed POSIX ustar archive with one regular file (mode 0644, fixed mtime) of
// `payload_size` random bytes, 512-byte padded and ended by two zero blocks. `file_name` must
// fit the 100-byte ustar name field.
[[nodiscard]] std::string make_tar_layer(std::size_t payload_size, std::uint64_t seed,
                                         std::string file_name = "data.bin");

struct blob {
  std::string media_type;
  std::string data;
  oci::digest digest;
};
[[nodiscard]] blob make_blob(std::string media_type, std::string data);

enum class image_format { oci, docker };

struct image {
  blob config;
  std::vector<blob> layers;
  blob manifest;  // JSON bytes of the image manifest; its digest is the image digest
};

// An image with one uncompressed tar layer per entry of `layer_sizes` (payload bytes; the tar
// adds headers). The config is a valid image config for linux/`architecture` whose
// rootfs.diff_ids are the layer digests. Deterministic in (format, sizes, seed, architecture).
[[nodiscard]] image make_image(image_format format, const std::vector<std::size_t>& layer_sizes,
                               std::uint64_t seed, std::string_view architecture = "amd64");

// An OCI image index or a Docker manifest list over `manifests` (image, architecture), each
// entry with platform {architecture, os: linux}. The images must outlive the call only.
[[nodiscard]] blob make_index(image_format format,
                              const std::vector<std::pair<const image*, std::string>>& manifests);

// Pushes blobs and manifests with the distribution API (monolithic uploads). Throws
// std::runtime_error with the method, URL, status and body on any unexpected answer.
// A 401 with a Bearer challenge (`auth: token` registries) is answered once per repository: a
// token for "repository:<repo>:pull,push" is fetched from the challenge's realm (with `basic`
// as HTTP Basic when set) and sent on later requests for that repository.
class registry_pusher {
 public:
  // `base_url`: http(s)://host:port of the registry. `ca_file` as for http_client. `basic`:
  // user and password sent as HTTP Basic on every request (and to a token realm).
  explicit registry_pusher(std::string base_url, std::string ca_file = {},
                           std::optional<std::pair<std::string, std::string>> basic = {});

  // HEAD first and skip if the registry already has it (2xx, or 307 with a redirect
  // middleware); else POST /v2/<repo>/blobs/uploads/ then PUT <Location>&digest=... .
  void push_blob(std::string_view repo, const blob& b);
  // PUT /v2/<repo>/manifests/<reference> with Content-Type = manifest.media_type.
  void push_manifest(std::string_view repo, std::string_view reference, const blob& manifest);
  // Config and layers, then the manifest under `tag`.
  void push_image(std::string_view repo, std::string_view tag, const image& img);

 private:
  [[nodiscard]] std::vector<std::pair<std::string, std::string>> auth_headers(
      std::string_view repo) const;
  // Sends with auth_headers(repo) + `headers`; answers one Bearer challenge.
  http_response send(http_client& client, std::string_view method, const std::string& url,
                     std::string_view repo,
                     const std::vector<std::pair<std::string, std::string>>& headers = {},
                     const std::string& body = {});
  std::string base_url_;
  std::string ca_file_;
  std::optional<std::pair<std::string, std::string>> basic_;
  std::map<std::string, std::string, std::less<>> tokens_;  // repository → Bearer token
};

}  // namespace layercache::testing
