// Image manifests and indexes (OCI image spec, Docker schema 2 and schema 1): just the parts a
// mirror needs to follow references.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "oci/digest.hpp"

namespace layercache::oci {

// A content descriptor. Not default-constructible (a digest always has a value).
struct descriptor {
  std::string media_type;  // empty if the document omitted it
  oci::digest digest;
  std::uint64_t size = 0;
  std::optional<std::string> platform_os;            // index entries only
  std::optional<std::string> platform_architecture;  // index entries only
  std::optional<std::string> platform_variant;       // index entries only
  std::string artifact_type;                         // empty if absent

  friend bool operator==(const descriptor&, const descriptor&) = default;
};

struct manifest {
  // The document's "mediaType"; else the Content-Type given to parse_manifest (parameters
  // stripped, lowercased) if it is a known manifest or index type; else inferred from the
  // document: Docker schema 1 (signed if "signatures" is present) for schemaVersion 1, OCI
  // index if "manifests" is present, otherwise OCI manifest.
  std::string media_type;
  std::optional<descriptor> config;  // image manifests (schema 2 / OCI)
  // Image layers in document order. For schema 1 these come from fsLayers[].blobSum (top layer
  // first, as listed), with size 0 and the Docker gzip layer media type.
  std::vector<descriptor> layers;
  std::vector<descriptor> manifests;  // index entries
  std::optional<descriptor> subject;  // OCI 1.1 referrers

  // True for an OCI index or a Docker manifest list.
  [[nodiscard]] bool is_index() const;
  // The blobs an image manifest lists: its config, then its layers, each digest once.
  [[nodiscard]] std::vector<descriptor> blobs() const;
};

// Parses a manifest or index. Returns nullopt for invalid JSON (or nesting deeper than 64),
// a non-object document, a missing or unsupported schemaVersion (must be 1 or 2), invalid
// digests, sizes that are negative or not integers, wrongly typed fields, missing required
// fields (index: "manifests"; schema 2/OCI manifest: "config" and "layers"; schema 1:
// "fsLayers"), or an ambiguous document (an index carrying "config"/"layers", or a manifest
// carrying "manifests", a schema 1 type with schemaVersion 2 or vice versa). `content_type` is
// used only when the document has no mediaType.
// Never throws.
[[nodiscard]] std::optional<manifest> parse_manifest(std::string_view json,
                                                     std::string_view content_type = {});

}  // namespace layercache::oci
