#include "tests/support/token_issuer.hpp"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <atomic>
#include <boost/json.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/parse_query.hpp>
#include <boost/url/url.hpp>
#include <mutex>
#include <stdexcept>

#include "tests/support/http_client.hpp"
#include "tests/support/http_stub.hpp"
#include "tests/support/process.hpp"

namespace layercache::testing {
namespace {

namespace json = boost::json;

struct pkey_free {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct x509_free {
  void operator()(X509* p) const { X509_free(p); }
};
using pkey_ptr = std::unique_ptr<EVP_PKEY, pkey_free>;
using x509_ptr = std::unique_ptr<X509, x509_free>;

[[noreturn]] void openssl_failed(const char* what) {
  throw std::runtime_error(std::string("token_issuer: OpenSSL ") + what + " failed");
}

pkey_ptr make_rsa_key() {
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_RSA, nullptr);
  if (ctx == nullptr) openssl_failed("EVP_PKEY_CTX_new_id");
  EVP_PKEY* key = nullptr;
  const bool ok = EVP_PKEY_keygen_init(ctx) > 0 &&
                  EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, 2048) > 0 && EVP_PKEY_keygen(ctx, &key) > 0;
  EVP_PKEY_CTX_free(ctx);
  if (!ok) openssl_failed("RSA key generation");
  return pkey_ptr(key);
}

// A self-signed certificate for `key`, valid from an hour ago for a day.
x509_ptr make_certificate(EVP_PKEY* key, const std::string& common_name) {
  x509_ptr cert(X509_new());
  if (!cert) openssl_failed("X509_new");
  X509_set_version(cert.get(), 2);
  unsigned char serial[8];
  RAND_bytes(serial, sizeof serial);
  serial[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 24 * 3600);
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1,
                             0);
  X509_set_issuer_name(cert.get(), name);
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, cert.get(), cert.get(), nullptr, nullptr, 0);
  for (auto [nid, value] : {std::pair{NID_basic_constraints, "critical,CA:TRUE"},
                            std::pair{NID_key_usage, "critical,digitalSignature,keyCertSign"},
                            std::pair{NID_subject_key_identifier, "hash"}}) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &v3, nid, value);
    if (ext == nullptr) openssl_failed("X509V3_EXT_conf_nid");
    X509_add_ext(cert.get(), ext, -1);
    X509_EXTENSION_free(ext);
  }
  if (X509_sign(cert.get(), key, EVP_sha256()) <= 0) openssl_failed("X509_sign");
  return cert;
}

std::string pem_of(X509* cert) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(bio, cert);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  std::string out(data, static_cast<std::size_t>(n));
  BIO_free(bio);
  return out;
}

std::string der_of(X509* cert) {
  unsigned char* data = nullptr;
  const int n = i2d_X509(cert, &data);
  if (n <= 0) openssl_failed("i2d_X509");
  std::string out(reinterpret_cast<char*>(data), static_cast<std::size_t>(n));
  OPENSSL_free(data);
  return out;
}

std::string base64url(std::string_view bytes) {
  std::string s = base64_encode(bytes);
  while (!s.empty() && s.back() == '=') s.pop_back();
  for (char& c : s) {
    if (c == '+') c = '-';
    if (c == '/') c = '_';
  }
  return s;
}

std::optional<std::string> base64_decode(std::string_view in) {
  std::string out;
  unsigned buffer = 0;
  int bits = 0;
  for (char c : in) {
    int v;
    if (c >= 'A' && c <= 'Z') {
      v = c - 'A';
    } else if (c >= 'a' && c <= 'z') {
      v = c - 'a' + 26;
    } else if (c >= '0' && c <= '9') {
      v = c - '0' + 52;
    } else if (c == '+') {
      v = 62;
    } else if (c == '/') {
      v = 63;
    } else if (c == '=') {
      break;
    } else {
      return std::nullopt;
    }
    buffer = (buffer << 6) | static_cast<unsigned>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((buffer >> bits) & 0xff);
    }
  }
  return out;
}

std::string sign_rs256(EVP_PKEY* key, std::string_view input) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  std::size_t n = 0;
  std::string sig;
  bool ok = ctx != nullptr && EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, key) > 0 &&
            EVP_DigestSignUpdate(ctx, input.data(), input.size()) > 0 &&
            EVP_DigestSignFinal(ctx, nullptr, &n) > 0;
  if (ok) {
    sig.resize(n);
    ok = EVP_DigestSignFinal(ctx, reinterpret_cast<unsigned char*>(sig.data()), &n) > 0;
    sig.resize(n);
  }
  EVP_MD_CTX_free(ctx);
  if (!ok) openssl_failed("RS256 signing");
  return sig;
}

std::string random_id() {
  unsigned char bytes[12];
  RAND_bytes(bytes, sizeof bytes);
  return base64url(std::string_view(reinterpret_cast<char*>(bytes), sizeof bytes));
}

struct scope_request {
  std::string type;  // "repository", "registry", ...
  std::string name;  // "team/app"
  std::vector<std::string> actions;
};

// "repository:team/app:pull,push" → its parts; nullopt when malformed.
std::optional<scope_request> parse_scope(std::string_view scope) {
  const auto first = scope.find(':');
  const auto last = scope.rfind(':');
  if (first == std::string_view::npos || first == last) return std::nullopt;
  scope_request out{std::string(scope.substr(0, first)),
                    std::string(scope.substr(first + 1, last - first - 1)),
                    {}};
  auto list = scope.substr(last + 1);
  while (!list.empty()) {
    const auto comma = list.find(',');
    out.actions.emplace_back(list.substr(0, comma));
    list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
  }
  return out;
}

bool contains(const std::vector<std::string>& list, std::string_view value) {
  return std::find(list.begin(), list.end(), value) != list.end();
}

}  // namespace

struct token_issuer::impl {
  token_issuer_options options;
  temp_dir dir{"layercache-token-issuer"};
  std::string cert_file;
  pkey_ptr key;
  std::string x5c;  // base64 DER
  std::atomic<long long> expires_in;
  std::atomic<unsigned> failure{0};
  std::atomic<long long> delay_ms{0};
  mutable std::mutex mutex;
  std::vector<token_request> recorded;
  // What users may pull: options.grants and options.public_repositories, changed at run time.
  mutable std::mutex grants_mutex;
  std::map<std::string, std::vector<std::string>> grants;
  std::vector<std::string> public_repositories;
  std::unique_ptr<http_stub> server;

  std::string jwt(const std::string& subject, const json::array& access) const {
    const auto now = static_cast<long long>(std::time(nullptr));
    const json::object header{
        {"typ", "JWT"}, {"alg", "RS256"}, {"x5c", json::array{json::string(x5c)}}};
    const json::object claims{{"iss", options.issuer},  {"sub", subject},
                              {"aud", options.service}, {"exp", now + expires_in.load()},
                              {"nbf", now - 10},        {"iat", now},
                              {"jti", random_id()},     {"access", access}};
    const std::string input =
        base64url(json::serialize(header)) + "." + base64url(json::serialize(claims));
    return input + "." + base64url(sign_rs256(key.get(), input));
  }

  bool has_public_repositories() const {
    std::lock_guard lock(grants_mutex);
    return !public_repositories.empty();
  }

  // The actions of `scope` that `user` (nullopt: anonymous) is given.
  std::vector<std::string> granted_actions(const std::optional<std::string>& user,
                                           const scope_request& scope) const {
    std::lock_guard lock(grants_mutex);
    if (user) {
      auto it = grants.find(*user);
      if (grants.empty() || (it != grants.end() && contains(it->second, "*"))) {
        return scope.actions;
      }
      if (scope.type == "repository" && it != grants.end() && contains(it->second, scope.name) &&
          contains(scope.actions, "pull")) {
        return {"pull"};
      }
    }
    if (scope.type == "repository" && contains(public_repositories, scope.name) &&
        contains(scope.actions, "pull")) {
      return {"pull"};
    }
    return {};
  }

  stub_response handle(const stub_request& req) {
    token_request record;
    record.method = req.method;
    record.authorization = req.header("Authorization");
    stub_response res;
    res.delay = std::chrono::milliseconds(delay_ms.load());
    auto finish = [&](unsigned status, std::string body) {
      record.status = status;
      res.status = status;
      res.headers.emplace_back("Content-Type", "application/json");
      res.body = std::move(body);
      std::lock_guard lock(mutex);
      recorded.push_back(record);
      return res;
    };

    auto target = boost::urls::parse_origin_form(req.target);
    if (!target || target->path() != "/token") return finish(404, R"({"error":"not found"})");
    // Parameters from the query (GET) or the form body (POST).
    std::string query = req.method == "POST" ? req.body : std::string(target->encoded_query());
    boost::urls::url parsed_query;
    std::string refresh_token;
    if (boost::urls::parse_query(query)) {
      parsed_query.set_encoded_query(query);
      for (const auto& p : parsed_query.params()) {
        const std::string value = p.value;
        if (p.key == "scope") {
          record.scopes.push_back(value);
        } else if (p.key == "service") {
          record.service = value;
        } else if (p.key == "grant_type") {
          record.grant_type = value;
        } else if (p.key == "refresh_token") {
          refresh_token = value;
        }
      }
    }
    if (const unsigned f = failure.load(); f != 0) {
      return finish(f, R"({"errors":[{"code":"UNAVAILABLE","message":"told to fail"}]})");
    }
    if (req.method == "POST") {
      auto it = options.refresh_tokens.find(refresh_token);
      if (record.grant_type != "refresh_token" || it == options.refresh_tokens.end()) {
        return finish(401, R"({"error":"invalid_grant"})");
      }
      record.user = it->second;
    } else if (req.method != "GET") {
      return finish(405, R"({"error":"method"})");
    } else if (record.authorization) {
      const std::string& value = *record.authorization;
      std::optional<std::string> decoded;
      if (value.starts_with("Basic ")) decoded = base64_decode(value.substr(6));
      const auto colon = decoded ? decoded->find(':') : std::string::npos;
      if (colon == std::string::npos) return finish(401, R"({"error":"bad credentials"})");
      const std::string user = decoded->substr(0, colon);
      auto it = options.users.find(user);
      if (it == options.users.end() || it->second != decoded->substr(colon + 1)) {
        return finish(401, R"({"error":"bad credentials"})");
      }
      record.user = user;
    } else if (!options.allow_anonymous && !has_public_repositories()) {
      return finish(401, R"({"error":"credentials required"})");
    }
    if (record.service != options.service) return finish(400, R"({"error":"unknown service"})");

    json::array access;
    for (const auto& scope : record.scopes) {
      auto parsed = parse_scope(scope);
      if (!parsed) continue;
      const auto actions = granted_actions(record.user, *parsed);
      if (actions.empty()) continue;
      json::array granted;
      std::string joined;
      for (const auto& a : actions) {
        granted.emplace_back(json::string(a));
        joined += (joined.empty() ? "" : ",") + a;
      }
      access.emplace_back(json::object{{"type", json::string(parsed->type)},
                                       {"name", json::string(parsed->name)},
                                       {"actions", std::move(granted)}});
      record.granted.push_back(parsed->type + ":" + parsed->name + ":" + joined);
    }
    const std::string token = jwt(record.user.value_or(""), access);
    const json::object body{
        {"token", token}, {"access_token", token}, {"expires_in", expires_in.load()}};
    return finish(200, json::serialize(body));
  }
};

token_issuer::token_issuer(token_issuer_options options) : impl_(std::make_unique<impl>()) {
  impl_->options = std::move(options);
  impl_->expires_in = impl_->options.expires_in.count();
  impl_->grants = impl_->options.grants;
  impl_->public_repositories = impl_->options.public_repositories;
  impl_->key = make_rsa_key();
  auto cert = make_certificate(impl_->key.get(), "layercache test token issuer");
  impl_->x5c = base64_encode(der_of(cert.get()));
  impl_->cert_file = (impl_->dir.path() / "token-issuer.pem").string();
  write_file(impl_->cert_file, pem_of(cert.get()));
  auto* self = impl_.get();
  impl_->server =
      std::make_unique<http_stub>([self](const stub_request& r) { return self->handle(r); });
}

token_issuer::~token_issuer() = default;

std::string token_issuer::realm() const { return impl_->server->url() + "/token"; }
std::string token_issuer::realm_host() const {
  const std::string url = impl_->server->url();  // http://127.0.0.1:PORT
  return url.substr(url.find("//") + 2);
}
const std::string& token_issuer::service() const { return impl_->options.service; }
const std::string& token_issuer::issuer() const { return impl_->options.issuer; }
const std::string& token_issuer::cert_file() const { return impl_->cert_file; }

std::vector<token_request> token_issuer::requests() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->recorded;
}

void token_issuer::clear_requests() {
  std::lock_guard lock(impl_->mutex);
  impl_->recorded.clear();
}

void token_issuer::set_expires_in(std::chrono::seconds s) { impl_->expires_in = s.count(); }
void token_issuer::set_failure(unsigned status) { impl_->failure = status; }
void token_issuer::set_delay(std::chrono::milliseconds d) { impl_->delay_ms = d.count(); }

void token_issuer::set_grants(const std::string& user, std::vector<std::string> repositories) {
  std::lock_guard lock(impl_->grants_mutex);
  impl_->grants[user] = std::move(repositories);
}

void token_issuer::set_public_repositories(std::vector<std::string> repositories) {
  std::lock_guard lock(impl_->grants_mutex);
  impl_->public_repositories = std::move(repositories);
}

}  // namespace layercache::testing
