// Request targets of the OCI distribution API at an upstream: the one place that spells the
// /v2/ paths (the repository as the upstream names it, already routed and validated).
#pragma once

#include <string>
#include <string_view>

namespace layercache::registry {

// "/v2/<repository>/blobs/<digest>"
[[nodiscard]] inline std::string blob_target(std::string_view repository, std::string_view digest) {
  std::string t = "/v2/";
  t.append(repository).append("/blobs/").append(digest);
  return t;
}

// "/v2/<repository>/manifests/<reference>" (a tag or a digest)
[[nodiscard]] inline std::string manifest_target(std::string_view repository,
                                                 std::string_view reference) {
  std::string t = "/v2/";
  t.append(repository).append("/manifests/").append(reference);
  return t;
}

}  // namespace layercache::registry
