// Manifest and index parser (oci/manifest.hpp). The input is the document; it is parsed with
// no Content-Type and with each manifest type, and what parses is checked against the shapes
// parse_manifest documents.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz/check.hpp"
#include "oci/manifest.hpp"
#include "oci/media_types.hpp"

namespace {

namespace media_types = layercache::oci::media_types;

constexpr std::string_view content_types[] = {
    {},
    media_types::oci_manifest,
    media_types::oci_index,
    media_types::docker_manifest_v2,
    media_types::docker_manifest_list,
    media_types::docker_manifest_v1_signed,
    "Application/VND.OCI.image.index.v1+json; charset=utf-8",
    "text/plain",
};

void check(const layercache::oci::manifest& m) {
  // media_type may be empty: a document's own "mediaType": "" is taken as written.
  if (m.is_index()) {
    FUZZ_CHECK(!m.config);
    FUZZ_CHECK(m.layers.empty());
  } else if (layercache::oci::is_manifest_media_type(m.media_type)) {
    FUZZ_CHECK(m.manifests.empty());
  }
  for (const auto& d : m.layers) FUZZ_CHECK(!d.digest.str().empty());
  for (const auto& d : m.manifests) FUZZ_CHECK(!d.digest.str().empty());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (const auto type : content_types) {
    if (const auto m = layercache::oci::parse_manifest(text, type)) check(*m);
  }
  return 0;
}
