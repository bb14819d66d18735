#include "server/client_auth.hpp"

#include <openssl/crypto.h>

#include <cctype>
#include <string>

#include "registry/auth.hpp"

namespace layercache::server {

bool same_secret(std::string_view presented, std::string_view secret) {
  return presented.size() == secret.size() &&
         CRYPTO_memcmp(presented.data(), secret.data(), secret.size()) == 0;
}

bool client_credentials_ok(std::string_view authorization, std::string_view token) {
  if (token.empty()) return false;
  auto same = [&](std::string_view presented) { return same_secret(presented, token); };
  auto scheme_is = [&](std::string_view scheme) {
    if (authorization.size() <= scheme.size() || authorization[scheme.size()] != ' ') {
      return false;
    }
    for (std::size_t i = 0; i < scheme.size(); ++i) {
      if (std::tolower(static_cast<unsigned char>(authorization[i])) != scheme[i]) return false;
    }
    return true;
  };
  if (scheme_is("bearer")) return same(authorization.substr(7));
  if (scheme_is("basic")) {
    const auto decoded = registry::base64_decode(authorization.substr(6));
    if (!decoded) return false;
    const auto colon = decoded->find(':');
    if (colon == std::string::npos) return false;
    return same(std::string_view(*decoded).substr(colon + 1));
  }
  return false;
}

}  // namespace layercache::server
