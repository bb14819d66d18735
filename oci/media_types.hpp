// OCI and Docker media types for manifests, configs and layers.
#pragma once

#include <cstddef>
#include <string_view>

namespace layercache::oci {
namespace media_types {

// Manifests and indexes.
inline constexpr std::string_view oci_manifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view oci_index = "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view docker_manifest_v2 =
    "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view docker_manifest_list =
    "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr std::string_view docker_manifest_v1_signed =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";
inline constexpr std::string_view docker_manifest_v1 =
    "application/vnd.docker.distribution.manifest.v1+json";

// Image configs.
inline constexpr std::string_view oci_config = "application/vnd.oci.image.config.v1+json";
inline constexpr std::string_view docker_config = "application/vnd.docker.container.image.v1+json";

// Layers.
inline constexpr std::string_view oci_layer_tar = "application/vnd.oci.image.layer.v1.tar";
inline constexpr std::string_view oci_layer_tar_gzip =
    "application/vnd.oci.image.layer.v1.tar+gzip";
inline constexpr std::string_view oci_layer_tar_zstd =
    "application/vnd.oci.image.layer.v1.tar+zstd";
inline constexpr std::string_view docker_layer_tar_gzip =
    "application/vnd.docker.image.rootfs.diff.tar.gzip";

// The empty descriptor's type ("{}"), used by artifacts without config or layers.
inline constexpr std::string_view oci_empty = "application/vnd.oci.empty.v1+json";

}  // namespace media_types

namespace detail {

// `type` without parameters (";..."), surrounding whitespace, compared ASCII case-insensitively.
constexpr bool media_type_equals(std::string_view type, std::string_view expected) {
  type = type.substr(0, type.find(';'));
  while (!type.empty() && (type.front() == ' ' || type.front() == '\t')) type.remove_prefix(1);
  while (!type.empty() && (type.back() == ' ' || type.back() == '\t')) type.remove_suffix(1);
  if (type.size() != expected.size()) return false;
  for (std::size_t i = 0; i < type.size(); ++i) {
    char c = type[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != expected[i]) return false;
  }
  return true;
}

}  // namespace detail

// True for the OCI image index and the Docker manifest list. Parameters and case are ignored.
[[nodiscard]] constexpr bool is_index_media_type(std::string_view type) {
  return detail::media_type_equals(type, media_types::oci_index) ||
         detail::media_type_equals(type, media_types::docker_manifest_list);
}

// True for single-image manifests: OCI manifest, Docker schema 2, Docker schema 1 (signed or
// not). Not for indexes — use `is_manifest_media_type(t) || is_index_media_type(t)` for
// "anything served under /manifests/". Parameters and case are ignored.
[[nodiscard]] constexpr bool is_manifest_media_type(std::string_view type) {
  return detail::media_type_equals(type, media_types::oci_manifest) ||
         detail::media_type_equals(type, media_types::docker_manifest_v2) ||
         detail::media_type_equals(type, media_types::docker_manifest_v1_signed) ||
         detail::media_type_equals(type, media_types::docker_manifest_v1);
}

// The Accept header value for manifest requests: OCI manifest, OCI index, Docker schema 2,
// Docker manifest list, Docker schema 1 (signed), comma-and-space separated, in that order.
[[nodiscard]] constexpr std::string_view default_manifest_accept() {
  return "application/vnd.oci.image.manifest.v1+json, "
         "application/vnd.oci.image.index.v1+json, "
         "application/vnd.docker.distribution.manifest.v2+json, "
         "application/vnd.docker.distribution.manifest.list.v2+json, "
         "application/vnd.docker.distribution.manifest.v1+prettyjws";
}

}  // namespace layercache::oci
