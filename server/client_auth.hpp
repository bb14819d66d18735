// Who may use layercache: the check of a client's credentials (server.client_auth) and the
// constant-time comparison of secrets (the admin token). Include only from server/*.cpp.
#pragma once

#include <string_view>

namespace layercache::server {

// Client authentication (server.client_auth): true when `authorization` (a request's
// Authorization header value) is "Bearer <token>" or HTTP Basic with `token` as the password
// (any user name). Schemes are case-insensitive; the token comparison takes the same time
// wherever the first difference is.
[[nodiscard]] bool client_credentials_ok(std::string_view authorization, std::string_view token);

// `presented` equals `secret`, compared in time that does not depend on where they differ.
[[nodiscard]] bool same_secret(std::string_view presented, std::string_view secret);

}  // namespace layercache::server
