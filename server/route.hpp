// Request targets of the OCI Distribution read API, parsed and validated before any upstream
// call. Pure: no I/O, no Beast.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace layercache::server {

enum class route_kind { base, manifest, blob, tags_list, referrers };

struct route {
  route_kind kind = route_kind::base;
  std::string name;       // repository as the client named it (may carry an upstream prefix)
  std::string reference;  // manifests: tag or digest; blobs and referrers: digest
  std::optional<std::string> ns;                            // containerd's ?ns=
  std::vector<std::pair<std::string, std::string>> params;  // other query params, decoded
  [[nodiscard]] bool reference_is_digest() const;
};

// An error answered to the client with an OCI error body.
struct route_error {
  unsigned status = 400;
  std::string code;  // OCI error code, e.g. NAME_INVALID
  std::string message;
};

// Parses an origin-form target ("/v2/library/alpine/manifests/3.19?ns=docker.io").
// Errors: 400 NAME_INVALID / DIGEST_INVALID, 404 MANIFEST_UNKNOWN for a manifest reference
// that is neither a tag nor a digest (no such manifest can exist), 404 UNSUPPORTED for paths
// that are not part of the API, 405 UNSUPPORTED for upload endpoints.
[[nodiscard]] std::variant<route, route_error> parse_route(std::string_view target);

// {"errors":[{"code":"...","message":"..."}]} with JSON escaping.
[[nodiscard]] std::string oci_error_body(std::string_view code, std::string_view message);

}  // namespace layercache::server
