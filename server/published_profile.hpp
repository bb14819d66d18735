// Access profiles as OCI artifacts next to their image in the upstream registry, so that the
// registry a fleet already trusts distributes them (registry::push_artifact and
// find_artifact do the pushing and finding): the profile document is the artifact's one
// layer, of this type, its subject the image manifest.
#pragma once

#include <string_view>

namespace layercache::server {

inline constexpr std::string_view profile_artifact_type =
    "application/vnd.layercache.profile.v1+json";

}  // namespace layercache::server
