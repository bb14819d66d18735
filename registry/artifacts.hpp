// OCI artifacts next to their subject in a registry (OCI 1.1): pushed as the one layer of an
// image manifest with an artifactType, the empty config and `subject`, and found again through
// the referrers API or, for registries without it, the referrers tag schema. Include only from
// .cpp files (it brings in Beast).
//
// Pushing: registries without the referrers API (no `OCI-Subject` header on the manifest PUT)
// get the referrers tag schema as well: the index tagged `sha256-<hex of the subject>` lists
// the artifact (earlier artifacts of the same type in it are replaced, other referrers kept).
//
// Finding asks the referrers API (`GET /v2/<name>/referrers/<digest>?artifactType=…`), then
// the `sha256-<hex>` tag, and reads the newest artifact of the type listed; every manifest and
// blob read is checked against its digest.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <optional>
#include <string>

#include "asio/names.hpp"
#include "oci/digest.hpp"
#include "registry/upstream_client.hpp"

namespace layercache::registry {

struct artifact_subject {
  oci::digest digest;
  std::string media_type;
  std::uint64_t size = 0;
};

// Pushes `document` as an artifact of `artifact_type` about `subject` in `repository`. Empty
// on success, else why not (the upstream refused a push, a Location pointed elsewhere, ...).
asio::awaitable<std::string> push_artifact(upstream_client& client, const std::string& repository,
                                           const artifact_subject& subject,
                                           const std::string& artifact_type,
                                           const std::string& document);

// The newest document of `artifact_type` pushed about `subject` in `repository`, or nullopt
// when there is none (or the registry could not be asked). `max_size` bounds every read.
asio::awaitable<std::optional<std::string>> find_artifact(upstream_client& client,
                                                          const std::string& repository,
                                                          const oci::digest& subject,
                                                          const std::string& artifact_type,
                                                          std::size_t max_size);

}  // namespace layercache::registry
