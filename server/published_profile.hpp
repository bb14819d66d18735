// Access profiles as OCI artifacts next to their image in the upstream registry, so that the
// registry a fleet already trusts distributes them (registry/artifacts.hpp does the pushing
// and finding): the profile document is the artifact's one layer, of type
// `application/vnd.layercache.profile.v1+json`, its subject the image manifest.
// Include only from .cpp files (it brings in Beast).
#pragma once

#include <string>
#include <string_view>

#include "registry/artifacts.hpp"

namespace layercache::server {

inline constexpr std::string_view profile_artifact_type =
    "application/vnd.layercache.profile.v1+json";

using published_subject = registry::artifact_subject;

// Pushes `profile_json` as the profile of `subject` in `repository`. Empty on success.
inline asio::awaitable<std::string> publish_profile(registry::upstream_client& client,
                                                    const std::string& repository,
                                                    const published_subject& subject,
                                                    const std::string& profile_json) {
  const std::string type(profile_artifact_type);
  co_return co_await registry::push_artifact(client, repository, subject, type, profile_json);
}

// The newest profile document published for `subject` in `repository`, or nullopt.
inline asio::awaitable<std::optional<std::string>> find_published_profile(
    registry::upstream_client& client, const std::string& repository, const oci::digest& subject,
    std::size_t max_size) {
  const std::string type(profile_artifact_type);
  co_return co_await registry::find_artifact(client, repository, subject, type, max_size);
}

}  // namespace layercache::server
