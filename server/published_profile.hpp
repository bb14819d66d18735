// Access profiles as OCI artifacts next to their image in the upstream registry, so that the
// registry a fleet already trusts distributes them. Include only from server/*.cpp.
//
// Publishing pushes the profile document as the one layer of an OCI image manifest with
// artifactType `application/vnd.layercache.profile.v1+json`, the empty config, and `subject`
// = the image manifest. Registries without the OCI 1.1 referrers API (no `OCI-Subject` header
// on the manifest PUT) get the referrers tag schema as well: the index tagged
// `sha256-<hex of the subject>` lists the artifact (earlier layercache profiles in it are
// replaced, other referrers kept).
//
// Finding asks the referrers API (`GET /v2/<name>/referrers/<digest>?artifactType=…`), then
// the `sha256-<hex>` tag, and reads the newest profile artifact listed; every manifest and
// blob read is checked against its digest.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "asio/names.hpp"
#include "oci/digest.hpp"
#include "registry/upstream_client.hpp"

namespace layercache::server {

inline constexpr std::string_view profile_artifact_type =
    "application/vnd.layercache.profile.v1+json";

struct published_subject {
  oci::digest digest;
  std::string media_type;
  std::uint64_t size = 0;
};

// Pushes `profile_json` as the profile of `subject` in `repository`. Empty on success, else
// why not (the upstream refused a push, a Location pointed elsewhere, ...).
asio::awaitable<std::string> publish_profile(registry::upstream_client& client,
                                             const std::string& repository,
                                             const published_subject& subject,
                                             const std::string& profile_json);

// The newest profile document published for `subject` in `repository`, or nullopt when there
// is none (or the registry could not be asked). `max_size` bounds every document read.
asio::awaitable<std::optional<std::string>> find_published_profile(
    registry::upstream_client& client, const std::string& repository, const oci::digest& subject,
    std::size_t max_size);

}  // namespace layercache::server
