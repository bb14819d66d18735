// A registry token service (the realm of `auth: token` in docker-registry) on 127.0.0.1, for
// integration tests: checks Basic credentials (or an OAuth2 refresh token), signs RS256 JWTs
// with a key and self-signed certificate generated at start, and records every request.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace layercache::testing {

struct token_issuer_options {
  std::string service = "layercache-test-registry";
  std::string issuer = "layercache-test-issuer";
  std::map<std::string, std::string> users;           // Basic user → password
  std::map<std::string, std::string> refresh_tokens;  // identity token → subject
  // Requests without credentials get a token with no access (like Docker Hub for private
  // repositories); false: they get 401.
  bool allow_anonymous = false;
  std::chrono::seconds expires_in{300};
  // Which repositories each user may pull. Empty: every authenticated user gets every action
  // asked for on every repository. Not empty: a user gets `pull` on the repositories listed
  // for them and nothing else (a user not listed gets no repository); the entry "*" grants
  // every action asked for (push too) on every repository and any other resource type (the
  // account the test pushes with). Scopes not granted are left out of the token's access
  // claim, as docker/distribution token servers do; the registry then answers 401
  // (insufficient_scope).
  std::map<std::string, std::vector<std::string>> grants;
  // Repositories anyone may pull: every user and anonymous requests get `pull` on these.
  // Not empty: requests without credentials are answered as with allow_anonymous.
  std::vector<std::string> public_repositories;
};

struct token_request {
  std::string method;                        // GET, or POST for a refresh-token grant
  std::string service;                       // as asked
  std::vector<std::string> scopes;           // as asked, e.g. "repository:team/app:pull"
  std::optional<std::string> user;           // who authenticated (Basic user or token subject)
  std::optional<std::string> authorization;  // the Authorization header as sent
  std::string grant_type;                    // POST only
  unsigned status = 0;                       // what the issuer answered
  std::vector<std::string> granted;          // what the token grants, e.g. "repository:a/b:pull"
};

// Serves GET /token?service=..&scope=.. (Basic credentials) and POST /token (form:
// grant_type=refresh_token, refresh_token, service, scope). Grants what
// token_issuer_options::grants and public_repositories allow (by default every action asked for
// to an authenticated user). The JWT header carries x5c (the certificate, base64 DER), which
// distribution 2.8 checks against `rootcertbundle`. Thread-safe.
class token_issuer {
 public:
  explicit token_issuer(token_issuer_options options = {});
  ~token_issuer();
  token_issuer(const token_issuer&) = delete;
  token_issuer& operator=(const token_issuer&) = delete;

  [[nodiscard]] std::string realm() const;  // http://127.0.0.1:PORT/token
  // The realm's host:port, as an upstream's auth.realm_hosts lists it (a realm on the
  // registry's host but another port gets nothing unless listed).
  [[nodiscard]] std::string realm_host() const;
  [[nodiscard]] const std::string& service() const;
  [[nodiscard]] const std::string& issuer() const;
  // PEM file of the signing certificate: the registry's auth.token.rootcertbundle.
  [[nodiscard]] const std::string& cert_file() const;

  [[nodiscard]] std::vector<token_request> requests() const;
  void clear_requests();

  // Changes what later requests get.
  void set_expires_in(std::chrono::seconds s);
  // Non-zero: answer every request with this status (and no token).
  void set_failure(unsigned status);
  // Answer only after this long (a hanging token endpoint).
  void set_delay(std::chrono::milliseconds d);
  // Replaces what `user` may pull (token_issuer_options::grants); an empty list revokes every
  // repository. The first call on an issuer started without grants restricts every other user
  // to nothing. Tokens issued before keep their access until they expire (docker-registry
  // takes them 60 s longer: its clock-skew leeway).
  void set_grants(const std::string& user, std::vector<std::string> repositories);
  void set_public_repositories(std::vector<std::string> repositories);

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace layercache::testing
