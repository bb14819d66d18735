// Issue 23: `access: client` — private images on shared nodes. A real docker-registry with
// `auth: token`, and a token issuer of ours that grants each user only some repositories (one
// public to everybody), behind a layercache that serves cached bytes only to clients the
// registry would let in; an http_stub registry taking HTTP Basic for what the token registry
// cannot do (revoking the same credentials). Clients are plain HTTP with tokens they fetched
// themselves, and skopeo following the challenge.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "oci/digest.hpp"
#include "oci/www_authenticate.hpp"
#include "tests/support/exposition.hpp"
#include "tests/support/file_server.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/http_stub.hpp"
#include "tests/support/image.hpp"
#include "tests/support/layercache_instance.hpp"
#include "tests/support/process.hpp"
#include "tests/support/registry.hpp"
#include "tests/support/token_issuer.hpp"

namespace layercache::testing {
namespace {

using namespace std::chrono_literals;
namespace json = boost::json;

struct account {
  std::string name;
  std::string password;
};

// alice may pull the private repository, bob only the public one (which everybody may pull),
// carol the private one until a test revokes it; pusher seeds the registry.
const account kAlice{"alice", "alice-pw-5b1e2f"};
const account kBob{"bob", "bob-pw-90c4aa"};
const account kCarol{"carol", "carol-pw-d7a213"};
const account kPusher{"pusher", "push-pw-31f0"};
const std::string kPrivate = "team/private";
const std::string kPublic = "team/public";

const header_list kAcceptAll = {{"Accept", std::string(media_type::accept_all_manifests)}};

header_list with_bearer(std::string_view token) {
  header_list h = kAcceptAll;
  h.emplace_back("Authorization", "Bearer " + std::string(token));
  return h;
}

header_list with_basic(const account& a) {
  header_list h = kAcceptAll;
  h.emplace_back("Authorization", basic_auth_header(a.name, a.password));
  return h;
}

bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

bool refused(unsigned status) { return status == 401 || status == 403; }

// A Bearer token for pulling `repository`, fetched from the issuer as a client does (with
// `who`'s Basic credentials; anonymously without). Empty when the issuer refused.
std::string token_for(const token_issuer& issuer, const std::optional<account>& who,
                      std::string_view repository) {
  http_client c;
  header_list h;
  if (who) h.emplace_back("Authorization", basic_auth_header(who->name, who->password));
  const auto r = c.get(issuer.realm() + "?service=" + issuer.service() +
                           "&scope=repository:" + std::string(repository) + ":pull",
                       h);
  if (r.status != 200) return {};
  return std::string(json::parse(r.body).as_object().at("token").as_string());
}

std::optional<std::string> base64url_decode(std::string_view in) {
  std::string out;
  unsigned buffer = 0;
  int bits = 0;
  for (char c : in) {
    const auto at =
        std::string_view("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
            .find(c);
    if (at == std::string_view::npos) return std::nullopt;
    buffer = (buffer << 6) | static_cast<unsigned>(at);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((buffer >> bits) & 0xff);
    }
  }
  return out;
}

// The `exp` claim of a JWT (seconds since the epoch).
std::chrono::system_clock::time_point expiry_of(std::string_view jwt) {
  const auto first = jwt.find('.');
  const auto second = jwt.find('.', first + 1);
  const auto claims = base64url_decode(jwt.substr(first + 1, second - first - 1));
  if (!claims) throw std::runtime_error("not a JWT");
  const auto exp = json::parse(*claims).as_object().at("exp").to_number<long long>();
  return std::chrono::system_clock::time_point(std::chrono::seconds(exp));
}

std::string client_access_yaml(std::string_view ttl) {
  return "    access: client\n    access_ttl: " + std::string(ttl) + "\n";
}

// Every file under `dir`, as bytes, concatenated (the store is small in these tests).
std::string all_bytes_under(const std::filesystem::path& dir) {
  std::string out;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) out += read_file(entry.path());
  }
  return out;
}

bool on_path(std::string_view program) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return false;
  std::string_view rest(path);
  while (!rest.empty()) {
    const auto colon = rest.find(':');
    const std::filesystem::path candidate =
        std::filesystem::path(std::string(rest.substr(0, colon))) / std::string(program);
    if (::access(candidate.c_str(), X_OK) == 0) return true;
    rest = colon == std::string_view::npos ? std::string_view{} : rest.substr(colon + 1);
  }
  return false;
}

class ClientAccessTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    issuer_ = new token_issuer(token_issuer_options{.users = {{kAlice.name, kAlice.password},
                                                              {kBob.name, kBob.password},
                                                              {kCarol.name, kCarol.password},
                                                              {kPusher.name, kPusher.password}},
                                                    .grants = default_grants(),
                                                    .public_repositories = {kPublic}});
    registry_ = new registry_process(registry_options{
        .access_log = true,
        .token_auth = registry_options::token_auth_options{issuer_->realm(), issuer_->service(),
                                                           issuer_->issuer(), issuer_->cert_file()},
        .manifest_urls_allow = {"^http://127\\.0\\.0\\.1:9/"}});
    // Same seed and first size: layer 0 (the "base") is the same blob in both; the other
    // layers and the configs are each repository's own.
    private_ = new image(make_image(image_format::oci, {400'000, 150'000, 30'000}, 2301));
    public_ = new image(make_image(image_format::oci, {400'000, 60'000}, 2301));
    registry_pusher push(registry_->url(), {}, std::pair{kPusher.name, kPusher.password});
    push.push_image(kPrivate, "v1", *private_);
    push.push_image(kPublic, "v1", *public_);
  }
  static void TearDownTestSuite() {
    delete public_;
    delete private_;
    delete registry_;
    delete issuer_;
  }

  static std::map<std::string, std::vector<std::string>> default_grants() {
    return {{kAlice.name, {kPrivate}},
            {kBob.name, {kPublic}},
            {kCarol.name, {kPrivate}},
            {kPusher.name, {"*"}}};
  }

  void SetUp() override {
    for (const auto& [user, repositories] : default_grants()) {
      issuer_->set_grants(user, repositories);
    }
    issuer_->set_expires_in(300s);
    issuer_->set_failure(0);
    issuer_->set_public_repositories({kPublic});
    issuer_->clear_requests();
  }

  static std::string upstream_entry(std::string_view ttl) {
    return upstream_yaml("up", registry_->url(), true,
                         client_access_yaml(ttl) +
                             "    auth:\n      type: anonymous\n      realm_hosts: ['" +
                             issuer_->realm_host() + "']\n");
  }

  // layercache in front of the token registry with `access: client`.
  static std::unique_ptr<layercache_instance> proxy_with(std::string_view ttl = "60s",
                                                         std::string_view top = {}) {
    // No eager prefetch: every upstream blob GET is one a client asked for.
    return std::make_unique<layercache_instance>(
        std::string(top) + "prefetch:\n  eager_layers: never\nupstreams:\n" + upstream_entry(ttl));
  }

  // `who`'s token for the private repository (granted or not).
  static std::string private_token(std::optional<account> who) {
    return token_for(*issuer_, who, kPrivate);
  }

  // Manifest by tag and by digest, config and every layer of `img` in `repository`, each
  // compared with what was pushed.
  void pull(const layercache_instance& proxy, std::string_view repository, const image& img,
            const header_list& headers) {
    const std::string base = proxy.url() + "/v2/" + std::string(repository);
    auto by_tag = client_.get(base + "/manifests/v1", headers);
    ASSERT_EQ(by_tag.status, 200u) << by_tag.body;
    EXPECT_EQ(by_tag.body, img.manifest.data);
    EXPECT_EQ(oci::digest_of(by_tag.body), img.manifest.digest);
    auto by_digest = client_.get(base + "/manifests/" + img.manifest.digest.str(), headers);
    ASSERT_EQ(by_digest.status, 200u) << by_digest.body;
    EXPECT_EQ(by_digest.body, img.manifest.data);
    std::vector<const blob*> blobs = {&img.config};
    for (const auto& l : img.layers) blobs.push_back(&l);
    for (const auto* b : blobs) {
      auto r = client_.get(base + "/blobs/" + b->digest.str(), headers);
      ASSERT_EQ(r.status, 200u) << b->digest.str() << ": " << r.body;
      EXPECT_EQ(oci::digest_of(r.body), b->digest);
    }
  }

  // Every request for `img` in `repository` — manifest by tag and digest, every blob, GET and
  // HEAD — is refused (401 or 403) and carries none of its bytes.
  void expect_refused(const layercache_instance& proxy, std::string_view repository,
                      const image& img, const header_list& headers) {
    const std::string base = proxy.url() + "/v2/" + std::string(repository);
    std::vector<std::pair<std::string, const blob*>> paths = {
        {base + "/manifests/v1", &img.manifest},
        {base + "/manifests/" + img.manifest.digest.str(), &img.manifest},
        {base + "/blobs/" + img.config.digest.str(), &img.config}};
    for (const auto& l : img.layers) paths.emplace_back(base + "/blobs/" + l.digest.str(), &l);
    for (const auto& [url, b] : paths) {
      SCOPED_TRACE(url);
      const auto get = client_.get(url, headers);
      EXPECT_TRUE(refused(get.status)) << get.status << " " << get.body.substr(0, 300);
      EXPECT_FALSE(contains(get.body, b->data)) << "the refusal carries the bytes";
      if (get.status == 403) {
        EXPECT_TRUE(contains(get.body, "\"DENIED\"")) << get.body;
      }
      const auto head = client_.head(url, headers);
      EXPECT_TRUE(refused(head.status)) << "HEAD: " << head.status;
      // A range of it, as lazy pullers ask.
      header_list ranged = headers;
      ranged.emplace_back("Range", "bytes=0-99");
      const auto part = client_.get(url, ranged);
      EXPECT_TRUE(refused(part.status)) << "Range: " << part.status;
      EXPECT_FALSE(contains(b->data, part.body) && !part.body.empty() && part.body.size() > 16)
          << "the refusal carries part of the bytes";
    }
    // Nor the repository's tags.
    const auto tags = client_.get(base + "/tags/list", headers);
    EXPECT_TRUE(refused(tags.status)) << "tags/list: " << tags.status << " " << tags.body;
    EXPECT_FALSE(contains(tags.body, "\"v1\"")) << tags.body;
    // Nor what refers to its manifest (signatures, SBOMs): docker-registry 2.8 has no
    // referrers API and says 404 to anyone, which may be passed on; never an answer from
    // what alice's pulls left.
    const auto referrers = client_.get(base + "/referrers/" + img.manifest.digest.str(), headers);
    EXPECT_TRUE(refused(referrers.status) || referrers.status == 404)
        << "referrers: " << referrers.status << " " << referrers.body;
  }

  // What an anonymous client gets for the public repository's first layer, asked again (at
  // most 60 times, 30 s) while it is served.
  unsigned anonymous_status_once_settled(const layercache_instance& proxy) {
    const std::string url =
        proxy.url() + "/v2/" + kPublic + "/blobs/" + public_->layers[0].digest.str();
    unsigned status = 200;
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    for (int i = 0; i < 60 && status == 200 && std::chrono::steady_clock::now() < deadline; ++i) {
      if (i > 0) std::this_thread::sleep_for(500ms);
      status = client_.get(url, kAcceptAll).status;
    }
    return status;
  }

  temp_dir cache_dir_;
  static token_issuer* issuer_;
  static registry_process* registry_;
  static image* private_;
  static image* public_;
  http_client client_;
};

token_issuer* ClientAccessTest::issuer_ = nullptr;
registry_process* ClientAccessTest::registry_ = nullptr;
image* ClientAccessTest::private_ = nullptr;
image* ClientAccessTest::public_ = nullptr;

TEST_F(ClientAccessTest, IssuerGrantsAreWhatTheRegistryEnforces) {
  // The fixture is what it claims, without layercache: the registry lets in exactly the
  // grants.
  const auto manifest = [&](std::string_view repository, const std::string& token) {
    return client_
        .get(registry_->url() + "/v2/" + std::string(repository) + "/manifests/v1",
             token.empty() ? kAcceptAll : with_bearer(token))
        .status;
  };
  EXPECT_EQ(manifest(kPrivate, token_for(*issuer_, kAlice, kPrivate)), 200u);
  EXPECT_EQ(manifest(kPrivate, token_for(*issuer_, kBob, kPrivate)), 401u);
  EXPECT_EQ(manifest(kPrivate, token_for(*issuer_, std::nullopt, kPrivate)), 401u);
  EXPECT_EQ(manifest(kPrivate, ""), 401u);
  EXPECT_EQ(manifest(kPublic, token_for(*issuer_, kBob, kPublic)), 200u);
  EXPECT_EQ(manifest(kPublic, token_for(*issuer_, kAlice, kPublic)), 200u);
  EXPECT_EQ(manifest(kPublic, token_for(*issuer_, std::nullopt, kPublic)), 200u);
  // A token for one repository is no token for another.
  EXPECT_EQ(manifest(kPrivate, token_for(*issuer_, kBob, kPublic)), 401u);
  // Wrong password: no token at all.
  EXPECT_EQ(token_for(*issuer_, account{kAlice.name, "wrong"}, kPrivate), "");
  // A blob of the private repository asked for under the public name: the registry says 404.
  EXPECT_EQ(
      client_
          .get(registry_->url() + "/v2/" + kPublic + "/blobs/" + private_->layers[1].digest.str(),
               with_bearer(token_for(*issuer_, kBob, kPublic)))
          .status,
      404u);

  issuer_->set_grants(kCarol.name, {});
  EXPECT_EQ(manifest(kPrivate, token_for(*issuer_, kCarol, kPrivate)), 401u);
  const auto seen = issuer_->requests();
  ASSERT_FALSE(seen.empty());
  EXPECT_TRUE(seen.back().granted.empty());
  issuer_->set_grants(kCarol.name, {kPrivate});
  EXPECT_EQ(manifest(kPrivate, token_for(*issuer_, kCarol, kPrivate)), 200u);
  EXPECT_EQ(issuer_->requests().back().granted,
            std::vector<std::string>{"repository:" + kPrivate + ":pull"});
}

TEST_F(ClientAccessTest, PrivateRepositoryOnlyForClientsTheRegistryLetsIn) {
  auto proxy = proxy_with();

  // GET /v2/: without credentials, the upstream's own challenge (clients learn the realm).
  const auto ping = client_.get(proxy->url() + "/v2/");
  EXPECT_EQ(ping.status, 401u) << ping.body;
  const auto challenge = ping.header("WWW-Authenticate").value_or("");
  EXPECT_TRUE(contains(challenge, "realm=\"" + issuer_->realm() + "\"")) << challenge;
  EXPECT_TRUE(contains(challenge, "service=\"" + issuer_->service() + "\"")) << challenge;
  const std::string alice = private_token(kAlice);
  ASSERT_FALSE(alice.empty());
  EXPECT_EQ(client_.get(proxy->url() + "/v2/", with_bearer(alice)).status, 200u);

  // Anonymous: 401 with the challenge, before anything is cached.
  const auto anonymous =
      client_.get(proxy->url() + "/v2/" + kPrivate + "/manifests/v1", kAcceptAll);
  EXPECT_EQ(anonymous.status, 401u) << anonymous.body;
  const auto parsed =
      oci::parse_www_authenticate(anonymous.header("WWW-Authenticate").value_or(""));
  const auto bearer = oci::find_challenge(parsed, "bearer");
  ASSERT_TRUE(bearer.has_value()) << anonymous.header("WWW-Authenticate").value_or("(none)");
  EXPECT_EQ(bearer->param("realm"), issuer_->realm());
  EXPECT_EQ(bearer->param("service"), issuer_->service());

  // alice pulls the whole image: now every blob of it is cached.
  pull(*proxy, kPrivate, *private_, with_bearer(alice));
  EXPECT_GE(
      proxy->metric("layercache_access_checks_total", {{"upstream", "up"}, {"outcome", "allowed"}}),
      1);

  // bob, with a token the issuer gave him for the private repository (no access in it), with
  // his token for the public one, with a forged token, and with no token: nothing of it.
  const std::string bob = token_for(*issuer_, kBob, kPrivate);
  ASSERT_FALSE(bob.empty());
  {
    SCOPED_TRACE("bob's token for the private repository");
    expect_refused(*proxy, kPrivate, *private_, with_bearer(bob));
  }
  {
    SCOPED_TRACE("bob's token for the public repository");
    expect_refused(*proxy, kPrivate, *private_, with_bearer(token_for(*issuer_, kBob, kPublic)));
  }
  {
    SCOPED_TRACE("a forged token");
    expect_refused(*proxy, kPrivate, *private_, with_bearer("eyJhbGciOiJub25lIn0.e30.forged"));
  }
  {
    SCOPED_TRACE("bob's Basic credentials sent as they are");
    expect_refused(*proxy, kPrivate, *private_, with_basic(kBob));
  }
  {
    SCOPED_TRACE("anonymous");
    expect_refused(*proxy, kPrivate, *private_, kAcceptAll);
    const auto r =
        client_.get(proxy->url() + "/v2/" + kPrivate + "/blobs/" + private_->layers[0].digest.str(),
                    kAcceptAll);
    EXPECT_EQ(r.status, 401u);
    EXPECT_TRUE(contains(r.header("WWW-Authenticate").value_or(""), issuer_->realm()));
  }
  EXPECT_GE(
      proxy->metric("layercache_access_checks_total", {{"upstream", "up"}, {"outcome", "refused"}}),
      1);
  // alice is still served (her decision was not replaced by bob's).
  const auto again =
      client_.get(proxy->url() + "/v2/" + kPrivate + "/blobs/" + private_->layers[2].digest.str(),
                  with_bearer(alice));
  EXPECT_EQ(again.status, 200u);
  EXPECT_TRUE(again.body == private_->layers[2].data);
}

TEST_F(ClientAccessTest, PublicRepositorySharesCachedLayersButNotPrivateOnesUnderItsName) {
  auto proxy = proxy_with();
  pull(*proxy, kPrivate, *private_,
       with_bearer(private_token(kAlice)));  // the base layer is cached
  const std::string bob = token_for(*issuer_, kBob, kPublic);
  const std::string anonymous = token_for(*issuer_, std::nullopt, kPublic);
  ASSERT_FALSE(bob.empty());
  ASSERT_FALSE(anonymous.empty());
  const std::string base = proxy->url() + "/v2/" + kPublic;
  const auto& shared = public_->layers[0];
  ASSERT_EQ(shared.digest, private_->layers[0].digest);

  auto manifest = client_.get(base + "/manifests/v1", with_bearer(bob));
  ASSERT_EQ(manifest.status, 200u) << manifest.body;
  EXPECT_EQ(manifest.body, public_->manifest.data);

  const auto gets = registry_->blob_requests();
  const double fills = proxy->metric("layercache_cache_fills_total");
  for (const auto& headers : {with_bearer(bob), with_bearer(anonymous), kAcceptAll}) {
    auto m = client_.get(base + "/manifests/v1", headers);
    EXPECT_EQ(m.status, 200u) << m.body;
    EXPECT_EQ(m.body, public_->manifest.data);
    auto layer = client_.get(base + "/blobs/" + shared.digest.str(), headers);
    ASSERT_EQ(layer.status, 200u) << layer.body;
    EXPECT_TRUE(layer.body == shared.data);
  }
  EXPECT_EQ(registry_->blob_requests(), gets) << "the shared layer was fetched again";
  EXPECT_EQ(proxy->metric("layercache_cache_fills_total"), fills);

  // The private repository's own blobs, cached, asked for under the public name: what the
  // registry answers there (404), for bob, anonymous and even alice.
  for (const auto& headers : {with_bearer(bob), with_bearer(anonymous), kAcceptAll,
                              with_bearer(token_for(*issuer_, kAlice, kPublic))}) {
    for (const auto* b : {&private_->layers[1], &private_->layers[2], &private_->config}) {
      SCOPED_TRACE(b->digest.str());
      auto r = client_.get(base + "/blobs/" + b->digest.str(), headers);
      EXPECT_EQ(r.status, 404u) << r.body.substr(0, 300);
      EXPECT_FALSE(contains(r.body, b->data));
      EXPECT_EQ(client_.head(base + "/blobs/" + b->digest.str(), headers).status, 404u);
    }
    auto m = client_.get(base + "/manifests/" + private_->manifest.digest.str(), headers);
    EXPECT_EQ(m.status, 404u) << m.body.substr(0, 300);
    EXPECT_NE(m.body, private_->manifest.data);
  }
  // The public repository's own layer, not cached yet: filled for an anonymous client.
  auto own = client_.get(base + "/blobs/" + public_->layers[1].digest.str(), kAcceptAll);
  ASSERT_EQ(own.status, 200u) << own.body;
  EXPECT_TRUE(own.body == public_->layers[1].data);
}

TEST_F(ClientAccessTest, AnonymousClientsSeeOnlyPublicRepositories) {
  auto proxy = proxy_with();
  pull(*proxy, kPrivate, *private_, with_bearer(private_token(kAlice)));
  pull(*proxy, kPublic, *public_, kAcceptAll);
  expect_refused(*proxy, kPrivate, *private_, kAcceptAll);
  // An anonymous token from the issuer changes nothing.
  expect_refused(*proxy, kPrivate, *private_,
                 with_bearer(token_for(*issuer_, std::nullopt, kPrivate)));
  // A repository that does not exist: what the registry says to anonymous clients (401).
  const auto unknown = client_.get(proxy->url() + "/v2/team/none/manifests/v1", kAcceptAll);
  EXPECT_EQ(unknown.status, 401u) << unknown.body;
  pull(*proxy, kPublic, *public_, kAcceptAll);
}

TEST_F(ClientAccessTest, AnExpiredTokenIsNotTrustedPastItsExpiry) {
  issuer_->set_expires_in(3s);
  auto proxy = proxy_with("60s");
  const std::string token = private_token(kAlice);
  ASSERT_FALSE(token.empty());
  const auto expiry = expiry_of(token);
  const std::string url =
      proxy->url() + "/v2/" + kPrivate + "/blobs/" + private_->layers[0].digest.str();
  auto first = client_.get(url, with_bearer(token));
  ASSERT_EQ(first.status, 200u) << first.body;
  const double cached_before =
      proxy->metric("layercache_access_cached_total", {{"upstream", "up"}});
  auto second = client_.get(url, with_bearer(token));
  ASSERT_EQ(second.status, 200u) << second.body;
  if (std::chrono::system_clock::now() < expiry) {
    EXPECT_GT(proxy->metric("layercache_access_cached_total", {{"upstream", "up"}}), cached_before)
        << "a confirmed token was checked upstream again within access_ttl";
  }

  // Past the token's expiry (what is under test): the cached decision is not used any more.
  while (std::chrono::system_clock::now() <= expiry + 1s) std::this_thread::sleep_for(200ms);
  const double cached_after_exp =
      proxy->metric("layercache_access_cached_total", {{"upstream", "up"}});
  const auto late = client_.get(url, with_bearer(token));
  EXPECT_EQ(proxy->metric("layercache_access_cached_total", {{"upstream", "up"}}), cached_after_exp)
      << "answered " << late.status << " from a decision about an expired token";

  // docker-registry itself takes a token up to 60 s past its exp (clock-skew leeway): that the
  // late request was asked of it (not answered from the cache) is what layercache owes; the
  // registry's refusal after its leeway is passed on like any other (a minute's wait, left out).
  // A fresh token is served again.
  auto fresh = client_.get(url, with_bearer(private_token(kAlice)));
  EXPECT_EQ(fresh.status, 200u) << fresh.body;
}

TEST_F(ClientAccessTest, ARevokedUserIsRefused) {
  auto proxy = proxy_with("2s");
  const std::string url =
      proxy->url() + "/v2/" + kPrivate + "/blobs/" + private_->layers[1].digest.str();
  auto allowed = client_.get(url, with_bearer(private_token(kCarol)));
  ASSERT_EQ(allowed.status, 200u) << allowed.body;

  issuer_->set_grants(kCarol.name, {});
  unsigned status = 200;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  for (int i = 0; i < 40 && status == 200 && std::chrono::steady_clock::now() < deadline; ++i) {
    if (i > 0) std::this_thread::sleep_for(500ms);
    status = client_.get(url, with_bearer(private_token(kCarol))).status;
  }
  EXPECT_TRUE(refused(status)) << status;
  // alice is unaffected.
  EXPECT_EQ(client_.get(url, with_bearer(private_token(kAlice))).status, 200u);
}

TEST_F(ClientAccessTest, APublicRepositoryMadePrivateIsRefusedToAnonymousClients) {
  // layercache's own anonymous token for the repository (which the registry takes until it
  // expires) lives 3 s here; its check is trusted 2 s.
  issuer_->set_expires_in(3s);
  auto proxy = proxy_with("2s");
  pull(*proxy, kPublic, *public_, kAcceptAll);
  issuer_->set_public_repositories({});
  EXPECT_EQ(anonymous_status_once_settled(*proxy), 401u) << "still served anonymously";
  // bob, granted the repository, still pulls it.
  pull(*proxy, kPublic, *public_, with_bearer(token_for(*issuer_, kBob, kPublic)));
}

TEST_F(ClientAccessTest, APublicRepositoryMadePrivateIsRefusedWithinAccessTtlNotTheTokensLife) {
  // As above with tokens of 300 s (Docker Hub's): a fresh anonymous client of the registry is
  // refused at once, so once access_ttl (2 s) has passed layercache must refuse too — not go on
  // asking with the anonymous token it fetched while the repository was public.
  auto proxy = proxy_with("2s");
  pull(*proxy, kPublic, *public_, kAcceptAll);
  issuer_->set_public_repositories({});
  const auto fresh = token_for(*issuer_, std::nullopt, kPublic);
  ASSERT_EQ(
      client_.get(registry_->url() + "/v2/" + kPublic + "/manifests/v1", with_bearer(fresh)).status,
      401u);
  EXPECT_EQ(anonymous_status_once_settled(*proxy), 401u) << "still served anonymously";
}

TEST_F(ClientAccessTest, ConcurrentAllowedAndRefusedClientsOfUncachedBlobs) {
  // alice's and bob's requests for the same blobs, none cached, at once: bob's must not ride
  // on alice's fills, alice's must not fail because of bob's refusals.
  auto proxy = proxy_with();
  const std::string alice = private_token(kAlice);
  const std::string bob = token_for(*issuer_, kBob, kPrivate);
  std::vector<const blob*> blobs = {&private_->config};
  for (const auto& l : private_->layers) blobs.push_back(&l);
  issuer_->clear_requests();
  constexpr int kClients = 16;
  std::atomic<int> alice_ok{0};
  std::atomic<int> bob_refused{0};
  std::atomic<int> leaked{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      http_client c;
      const auto* b = blobs[static_cast<std::size_t>(i / 2) % blobs.size()];
      const bool is_alice = i % 2 == 0;
      const auto r = c.get(proxy->url() + "/v2/" + kPrivate + "/blobs/" + b->digest.str(),
                           with_bearer(is_alice ? alice : bob));
      if (is_alice && r.status == 200 && r.body == b->data) ++alice_ok;
      if (!is_alice && refused(r.status)) ++bob_refused;
      if (!is_alice && contains(r.body, b->data.substr(0, 4096))) ++leaked;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(alice_ok.load(), kClients / 2);
  EXPECT_EQ(bob_refused.load(), kClients / 2);
  EXPECT_EQ(leaked.load(), 0);
  // layercache asked the realm for anonymous tokens at most: it has no one's password, and
  // never turns a client's token into another.
  for (const auto& r : issuer_->requests()) {
    EXPECT_FALSE(r.authorization.has_value()) << *r.authorization;
    EXPECT_FALSE(r.user.has_value());
  }
}

TEST_F(ClientAccessTest, RepositoryNameTricksGetNothingPrivate) {
  // bob (and anonymous clients) spelling the private repository's name in ways a router might
  // read differently from the registry: whatever the answer, never the private bytes.
  auto proxy = proxy_with();
  pull(*proxy, kPrivate, *private_, with_bearer(private_token(kAlice)));
  const auto& own = private_->layers[1];
  const std::string blob = "/blobs/" + own.digest.str();
  const std::vector<std::string> paths = {
      "/v2/team/public/../private" + blob,
      "/v2/team/private/../public" + blob,
      "/v2/team/public/%2E%2E/private" + blob,
      "/v2/team%2Fprivate" + blob,
      "/v2/team/private%2F..%2Fpublic" + blob,
      "/v2/team//private" + blob,
      "/v2/team/private/" + blob,
      "/v2//team/private" + blob,
      "/v2/TEAM/PRIVATE" + blob,
      "/v2/team/private" + blob + "?ns=127.0.0.1",
      "/v2/team/public" + blob + "/../../../private" + blob,
      "/v2/./team/private" + blob,
      "/v2/team/public/blobs/../../private" + blob,
  };
  for (const auto& headers : {with_bearer(token_for(*issuer_, kBob, kPublic)),
                              with_bearer(token_for(*issuer_, kBob, kPrivate)), kAcceptAll}) {
    for (const auto& path : paths) {
      SCOPED_TRACE(path);
      http_response r;
      try {
        r = client_.get(proxy->url() + path, headers);
      } catch (const std::exception& e) {
        continue;  // a target the client cannot send (or layercache closed on)
      }
      EXPECT_NE(r.status, 200u);
      EXPECT_FALSE(contains(r.body, own.data.substr(0, 4096))) << r.status;
    }
  }
}

TEST_F(ClientAccessTest, ClientTokensNeverReachARedirectTarget) {
  temp_dir storage;
  file_server storage_host(storage.path());
  registry_process redirecting(registry_options{
      .redirect_base_url = storage_host.url(),
      .storage_dir = storage.path(),
      .token_auth = registry_options::token_auth_options{issuer_->realm(), issuer_->service(),
                                                         issuer_->issuer(), issuer_->cert_file()}});
  const auto img = make_image(image_format::oci, {300'000}, 2305);
  registry_pusher(redirecting.url(), {}, std::pair{kPusher.name, kPusher.password})
      .push_image(kPrivate, "v1", img);
  storage_host.clear_requests();
  layercache_instance proxy(
      "prefetch:\n  eager_layers: never\nupstreams:\n" +
      upstream_yaml("up", redirecting.url(), true,
                    client_access_yaml("60s") + "    auth:\n      type: anonymous\n" +
                        "      realm_hosts: ['" + issuer_->realm_host() + "']\n"));
  const std::string alice = private_token(kAlice);
  auto r = client_.get(proxy.url() + "/v2/" + kPrivate + "/blobs/" + img.layers[0].digest.str(),
                       with_bearer(alice));
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_TRUE(r.body == img.layers[0].data);
  const auto bob =
      client_.get(proxy.url() + "/v2/" + kPrivate + "/blobs/" + img.layers[0].digest.str(),
                  with_bearer(token_for(*issuer_, kBob, kPrivate)));
  EXPECT_TRUE(refused(bob.status)) << bob.status;
  const auto seen = storage_host.requests();
  ASSERT_GE(seen.size(), 1u);
  for (const auto& req : seen) EXPECT_FALSE(req.header("Authorization").has_value()) << req.target;
}

TEST_F(ClientAccessTest, AForeignLayerInAPublicManifestDoesNotOpenAPrivateBlob) {
  // docker-registry stores an OCI manifest whose layer has `urls` without the layer being in
  // the repository (non-distributable layers are fetched from those URLs). Anyone who may push
  // to the public repository can so name a private layer's digest there; the registry still
  // answers 404 for that blob under the public name, and so must layercache, cached or not.
  const auto& own = private_->layers[1];
  const json::object manifest{
      {"schemaVersion", 2},
      {"mediaType", std::string(media_type::oci_manifest)},
      {"config", json::object{{"mediaType", std::string(media_type::oci_config)},
                              {"digest", public_->config.digest.str()},
                              {"size", public_->config.data.size()}}},
      {"layers", json::array{json::object{{"mediaType", std::string(media_type::oci_layer)},
                                          {"digest", own.digest.str()},
                                          {"size", own.data.size()},
                                          {"urls", json::array{"http://127.0.0.1:9/foreign"}}}}}};
  const auto foreign = make_blob(std::string(media_type::oci_manifest), json::serialize(manifest));
  registry_pusher(registry_->url(), {}, std::pair{kPusher.name, kPusher.password})
      .push_manifest(kPublic, "foreign", foreign);
  const std::string anonymous = token_for(*issuer_, std::nullopt, kPublic);
  ASSERT_EQ(client_
                .get(registry_->url() + "/v2/" + kPublic + "/blobs/" + own.digest.str(),
                     with_bearer(anonymous))
                .status,
            404u)
      << "the registry itself serves it: the fixture is wrong";

  auto proxy = proxy_with();
  pull(*proxy, kPrivate, *private_, with_bearer(private_token(kAlice)));  // the layer is cached
  for (const auto& headers :
       {kAcceptAll, with_bearer(anonymous), with_bearer(token_for(*issuer_, kBob, kPublic))}) {
    auto m = client_.get(proxy->url() + "/v2/" + kPublic + "/manifests/foreign", headers);
    ASSERT_EQ(m.status, 200u) << m.body;
    EXPECT_EQ(m.body, foreign.data);
    auto r = client_.get(proxy->url() + "/v2/" + kPublic + "/blobs/" + own.digest.str(), headers);
    EXPECT_EQ(r.status, 404u) << "a private layer served under the public name";
    EXPECT_FALSE(contains(r.body, own.data.substr(0, 4096)));
  }
}

class ClientAccessNodeCredentialsTest : public ClientAccessTest,
                                        public ::testing::WithParamInterface<bool> {};

TEST_P(ClientAccessNodeCredentialsTest, TheCheckIsStillEachClients) {
  // The node has credentials that can read everything (they fill for every admitted client);
  // what a client gets is still what its own credentials get, with the store (true) or
  // without it (false: every answer streamed from the upstream).
  const std::string cache =
      GetParam() ? std::string()
                 : "cache:\n  enabled: false\n  path: " + cache_dir_.path().string() + "/store\n";
  temp_dir dir;
  const auto password_file = dir.path() / "password";
  write_file(password_file, kPusher.password + "\n", 0600);
  layercache_instance proxy(
      cache + "prefetch:\n  eager_layers: never\nupstreams:\n" +
      upstream_yaml("up", registry_->url(), true,
                    client_access_yaml("60s") + "    auth:\n      type: basic\n      username: " +
                        kPusher.name + "\n      password_file: " + password_file.string() +
                        "\n      realm_hosts: ['" + issuer_->realm_host() + "']\n"));
  pull(proxy, kPrivate, *private_, with_bearer(private_token(kAlice)));
  expect_refused(proxy, kPrivate, *private_, with_bearer(token_for(*issuer_, kBob, kPrivate)));
  expect_refused(proxy, kPrivate, *private_, kAcceptAll);
  expect_refused(proxy, kPrivate, *private_, with_basic(kBob));
  const auto own = client_.get(
      proxy.url() + "/v2/" + kPublic + "/blobs/" + private_->layers[1].digest.str(), kAcceptAll);
  EXPECT_EQ(own.status, 404u);
  pull(proxy, kPublic, *public_, kAcceptAll);
}

INSTANTIATE_TEST_SUITE_P(Store, ClientAccessNodeCredentialsTest, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "Cached" : "Streamed"; });

TEST_F(ClientAccessTest, AnotherUpstreamWithNodeAccessDoesNotServeThePrivateBlobs) {
  // The same node also caches a public registry (`access: node`, as before): a digest of the
  // private repository asked for through that upstream is that registry's to answer (404),
  // not the store's — bytes cached for `access: client` are served only through it.
  registry_process hub;
  const auto hub_img = make_image(image_format::oci, {10'000}, 2307);
  registry_pusher(hub.url()).push_image("library/base", "v1", hub_img);
  layercache_instance proxy("prefetch:\n  eager_layers: never\nupstreams:\n" +
                            upstream_entry("60s") + upstream_yaml("hub", hub.url(), false));
  pull(proxy, kPrivate, *private_, with_bearer(private_token(kAlice)));
  const auto& own = private_->layers[1];
  for (const auto& path :
       {"/v2/hub/library/base/blobs/" + own.digest.str(),
        "/v2/hub/library/base/manifests/" + private_->manifest.digest.str(),
        "/v2/library/base/blobs/" + own.digest.str() + "?ns=" + hub.host(),
        "/v2/" + kPrivate + "/blobs/" + own.digest.str() + "?ns=" + hub.host()}) {
    SCOPED_TRACE(path);
    const auto r = client_.get(proxy.url() + path, kAcceptAll);
    EXPECT_NE(r.status, 200u);
    EXPECT_FALSE(contains(r.body, own.data.substr(0, 4096)))
        << "a private layer served through the other upstream";
  }
  // The hub's own image is served as before.
  auto base = client_.get(proxy.url() + "/v2/hub/library/base/manifests/v1", kAcceptAll);
  EXPECT_EQ(base.status, 200u) << base.body;
}

// A Basic registry whose open repository's manifest lists a layer that only the secret
// repository has (docker-registry refuses to store such a manifest; other registries need not):
// the blob under the open name is what the registry says there, 404, though it is cached.
TEST(ClientAccessBasic, AManifestListingAnotherRepositorysBlobDoesNotOpenIt) {
  const auto secret = make_image(image_format::oci, {120'000}, 2306);
  // The open image's manifest names the secret layer; the open repository has only its config.
  auto open = make_image(image_format::oci, {120'000}, 2306, "arm64");
  ASSERT_EQ(open.layers[0].digest, secret.layers[0].digest);
  const account dave{"dave", "dave-pw-0c41"};
  http_stub upstream([&](const stub_request& r) -> stub_response {
    const std::string target = r.target.substr(0, r.target.find('?'));
    const bool is_dave = r.header("Authorization") == basic_auth_header(dave.name, dave.password);
    const auto blob_answer = [&](const blob& b) {
      auto res = ranged_answer(b.data, r);
      res.headers.emplace_back("Docker-Content-Digest", b.digest.str());
      return res;
    };
    const stub_response unknown{
        404, {{"Content-Type", "application/json"}}, R"({"errors":[{"code":"BLOB_UNKNOWN"}]})", {}};
    if (target == "/v2/") {
      if (!is_dave) return {401, {{"WWW-Authenticate", R"(Basic realm="stub")"}}, "", {}};
      return {200, {}, "{}", {}};
    }
    if (target.starts_with("/v2/corp/secret/")) {
      if (!is_dave) {
        return {401, {{"WWW-Authenticate", R"(Basic realm="stub")"}}, R"({"errors":[]})", {}};
      }
      if (target == "/v2/corp/secret/manifests/v1" ||
          target == "/v2/corp/secret/manifests/" + secret.manifest.digest.str()) {
        return {200,
                {{"Content-Type", secret.manifest.media_type},
                 {"Docker-Content-Digest", secret.manifest.digest.str()}},
                secret.manifest.data,
                {}};
      }
      if (target == "/v2/corp/secret/blobs/" + secret.layers[0].digest.str()) {
        return blob_answer(secret.layers[0]);
      }
      if (target == "/v2/corp/secret/blobs/" + secret.config.digest.str()) {
        return blob_answer(secret.config);
      }
      return unknown;
    }
    if (target == "/v2/corp/open/manifests/v1" ||
        target == "/v2/corp/open/manifests/" + open.manifest.digest.str()) {
      return {200,
              {{"Content-Type", open.manifest.media_type},
               {"Docker-Content-Digest", open.manifest.digest.str()}},
              open.manifest.data,
              {}};
    }
    if (target == "/v2/corp/open/blobs/" + open.config.digest.str()) {
      return blob_answer(open.config);
    }
    return unknown;  // the secret layer too: not in this repository
  });
  layercache_instance proxy("prefetch:\n  eager_layers: never\nupstreams:\n" +
                            upstream_yaml("up", upstream.url(), true, client_access_yaml("60s")));
  http_client client;
  const std::string layer = "/blobs/" + secret.layers[0].digest.str();
  auto cached = client.get(proxy.url() + "/v2/corp/secret/manifests/v1", with_basic(dave));
  ASSERT_EQ(cached.status, 200u) << cached.body;
  ASSERT_EQ(client.get(proxy.url() + "/v2/corp/secret" + layer, with_basic(dave)).status, 200u);

  auto m = client.get(proxy.url() + "/v2/corp/open/manifests/v1", kAcceptAll);
  ASSERT_EQ(m.status, 200u) << m.body;
  EXPECT_EQ(m.body, open.manifest.data);
  auto r = client.get(proxy.url() + "/v2/corp/open" + layer, kAcceptAll);
  EXPECT_EQ(r.status, 404u) << "the open repository's manifest made the secret layer its own";
  EXPECT_FALSE(contains(r.body, secret.layers[0].data.substr(0, 4096)));
}

// A registry taking HTTP Basic: each user may pull the repositories listed for them (403
// DENIED for others, 401 with a Basic challenge for unknown credentials); serves one image in
// one repository. Permissions change at run time (from the test's thread).
class basic_registry {
 public:
  basic_registry(std::string repository, const image& img, std::vector<account> users)
      : repository_(std::move(repository)),
        img_(img),
        users_(std::move(users)),
        allowed_(users_.size()),
        stub_([this](const stub_request& r) { return answer(r); }) {
    for (auto& a : allowed_) a = true;
  }

  [[nodiscard]] std::string url() const { return stub_.url(); }
  [[nodiscard]] std::vector<stub_request> requests() const { return stub_.requests(); }
  void clear_requests() { stub_.clear_requests(); }
  void allow(const account& who, bool allowed) {
    for (std::size_t i = 0; i < users_.size(); ++i) {
      if (users_[i].name == who.name) allowed_[i] = allowed;
    }
  }

 private:
  static stub_response error(unsigned status, std::string_view code) {
    return {status,
            {{"Content-Type", "application/json"}},
            R"({"errors":[{"code":")" + std::string(code) + R"(","message":"basic_registry"}]})",
            {}};
  }

  stub_response answer(const stub_request& r) {
    const auto authorization = r.header("Authorization");
    std::optional<std::size_t> user;
    for (std::size_t i = 0; i < users_.size(); ++i) {
      if (authorization == basic_auth_header(users_[i].name, users_[i].password)) user = i;
    }
    if (!user) {
      auto res = error(401, "UNAUTHORIZED");
      res.headers.emplace_back("WWW-Authenticate", R"(Basic realm="basic-registry")");
      return res;
    }
    const std::string target = r.target.substr(0, r.target.find('?'));
    if (target == "/v2/") return {200, {{"Content-Type", "application/json"}}, "{}", {}};
    const std::string prefix = "/v2/" + repository_ + "/";
    if (!target.starts_with(prefix)) return error(404, "NAME_UNKNOWN");
    if (!allowed_[*user]) return error(403, "DENIED");
    const std::string rest = target.substr(prefix.size());
    if (rest == "manifests/v1" || rest == "manifests/" + img_.manifest.digest.str()) {
      return {200,
              {{"Content-Type", img_.manifest.media_type},
               {"Docker-Content-Digest", img_.manifest.digest.str()}},
              img_.manifest.data,
              {}};
    }
    std::vector<const blob*> blobs = {&img_.config};
    for (const auto& l : img_.layers) blobs.push_back(&l);
    for (const auto* b : blobs) {
      if (rest == "blobs/" + b->digest.str()) {
        auto res = ranged_answer(b->data, r);
        res.headers.emplace_back("Docker-Content-Digest", b->digest.str());
        res.headers.emplace_back("Content-Type", "application/octet-stream");
        return res;
      }
    }
    return error(404, rest.starts_with("blobs/") ? "BLOB_UNKNOWN" : "MANIFEST_UNKNOWN");
  }

  std::string repository_;
  const image& img_;
  std::vector<account> users_;
  std::vector<std::atomic<bool>> allowed_;
  http_stub stub_;
};

TEST(ClientAccessBasic, SameCredentialsRevokedUpstreamAreRefusedOnceAccessTtlHasPassed) {
  const auto img = make_image(image_format::docker, {200'000, 50'000}, 2302);
  const account dave{"dave", "dave-pw-0c41"};
  const account erin{"erin", "erin-pw-77e9"};
  basic_registry upstream("corp/tool", img, {dave, erin});
  layercache_instance proxy("prefetch:\n  eager_layers: never\nupstreams:\n" +
                            upstream_yaml("up", upstream.url(), true, client_access_yaml("2s")));
  http_client client;
  const std::string base = proxy.url() + "/v2/corp/tool";

  // Without credentials: the upstream's Basic challenge.
  const auto anonymous = client.get(base + "/manifests/v1", kAcceptAll);
  EXPECT_EQ(anonymous.status, 401u) << anonymous.body;
  EXPECT_EQ(anonymous.header("WWW-Authenticate"), R"(Basic realm="basic-registry")");
  const auto wrong = client.get(base + "/manifests/v1", with_basic({dave.name, "wrong"}));
  EXPECT_EQ(wrong.status, 401u) << wrong.body;

  // dave's manifest request; erin's blob requests fill the cache: every request the upstream
  // sees carries the credentials of the client it is for, never another's.
  upstream.clear_requests();
  auto m = client.get(base + "/manifests/v1", with_basic(dave));
  ASSERT_EQ(m.status, 200u) << m.body;
  EXPECT_EQ(m.body, img.manifest.data);
  for (const auto& r : upstream.requests()) {
    EXPECT_EQ(r.header("Authorization"), basic_auth_header(dave.name, dave.password)) << r.target;
  }
  upstream.clear_requests();
  for (const auto& l : img.layers) {
    auto r = client.get(base + "/blobs/" + l.digest.str(), with_basic(erin));
    ASSERT_EQ(r.status, 200u) << r.body;
    EXPECT_TRUE(r.body == l.data);
  }
  // Blob requests only: what dave's manifest started in the background (the lookup of a
  // published prefetch profile, a `sha256-<hex>` tag) may still be arriving, with his.
  std::size_t erins = 0;
  for (const auto& r : upstream.requests()) {
    if (!contains(r.target, "/blobs/")) continue;
    ++erins;
    EXPECT_EQ(r.header("Authorization"), basic_auth_header(erin.name, erin.password)) << r.target;
  }
  EXPECT_GE(erins, img.layers.size());

  // dave reads the cached layer; then the upstream revokes him, same password. Within a
  // bounded number of tries (access_ttl 2s) he is refused: 403 DENIED, as upstream.
  const std::string layer = base + "/blobs/" + img.layers[0].digest.str();
  ASSERT_EQ(client.get(layer, with_basic(dave)).status, 200u);
  upstream.allow(dave, false);
  http_response r;
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  for (int i = 0; i < 60 && std::chrono::steady_clock::now() < deadline; ++i) {
    if (i > 0) std::this_thread::sleep_for(250ms);
    r = client.get(layer, with_basic(dave));
    if (r.status != 200) break;
  }
  EXPECT_EQ(r.status, 403u) << r.body.substr(0, 300);
  EXPECT_TRUE(contains(r.body, "\"DENIED\"")) << r.body.substr(0, 300);
  EXPECT_FALSE(contains(r.body, img.layers[0].data));
  EXPECT_EQ(client.get(layer, with_basic(erin)).status, 200u);  // erin still may
  EXPECT_GE(
      proxy.metric("layercache_access_checks_total", {{"upstream", "up"}, {"outcome", "refused"}}),
      1);
  // Allowed again: served again once the refusal's own ttl has passed.
  upstream.allow(dave, true);
  for (int i = 0; i < 60 && std::chrono::steady_clock::now() < deadline + 30s; ++i) {
    if (i > 0) std::this_thread::sleep_for(250ms);
    r = client.get(layer, with_basic(dave));
    if (r.status == 200) break;
  }
  EXPECT_EQ(r.status, 200u);
}

TEST(ClientAccessBasic, UpstreamUnreachableFailsClosed) {
  const auto img = make_image(image_format::oci, {80'000}, 2303);
  const account dave{"dave", "dave-pw-0c41"};
  const account erin{"erin", "erin-pw-77e9"};
  auto upstream = std::make_unique<basic_registry>("corp/tool", img, std::vector{dave, erin});
  layercache_instance proxy(
      "prefetch:\n  eager_layers: never\nupstreams:\n" +
      upstream_yaml("up", upstream->url(), true,
                    client_access_yaml("1h") +
                        "    timeouts:\n      connect: 1s\n      response: 1s\n      read: 2s\n"));
  http_client client;
  const std::string layer = proxy.url() + "/v2/corp/tool/blobs/" + img.layers[0].digest.str();
  ASSERT_EQ(client.get(layer, with_basic(dave)).status, 200u);  // cached, and dave confirmed
  upstream.reset();                                             // the registry is gone

  // dave has a still-valid confirmation; erin has none: she gets a 5xx, not the bytes.
  auto dave_again = client.get(layer, with_basic(dave));
  EXPECT_EQ(dave_again.status, 200u) << dave_again.body.substr(0, 300);
  auto erin_r = client.request("GET", layer, with_basic(erin), {}, 30s);
  EXPECT_GE(erin_r.status, 500u) << erin_r.body.substr(0, 300);
  EXPECT_LT(erin_r.status, 600u);
  EXPECT_FALSE(contains(erin_r.body, img.layers[0].data));
  auto anonymous = client.request("GET", layer, kAcceptAll, {}, 30s);
  EXPECT_NE(anonymous.status, 200u);
  EXPECT_FALSE(contains(anonymous.body, img.layers[0].data));
  EXPECT_GE(
      proxy.metric("layercache_access_checks_total", {{"upstream", "up"}, {"outcome", "failed"}}),
      1);
}

TEST_F(ClientAccessTest, CredentialsStayOutOfTheLogTheStoreAndTheMetrics) {
  const std::string alice = private_token(kAlice);
  const std::string bob = token_for(*issuer_, kBob, kPrivate);
  const std::string bob_public = token_for(*issuer_, kBob, kPublic);
  const auto img = make_image(image_format::oci, {20'000}, 2304);
  const account dave{"dave", "dave-pw-0c41"};
  basic_registry basic_upstream("corp/tool", img, {dave});
  std::string metrics;
  temp_dir store_dir;  // outlives the instance: read once the store is closed
  const auto store = store_dir.path() / "store";
  // Ends the capture however the block below ends (a config refused at load throws).
  struct stderr_capture {
    stderr_capture() { ::testing::internal::CaptureStderr(); }
    ~stderr_capture() {
      if (!taken) (void)::testing::internal::GetCapturedStderr();
    }
    std::string take() {
      taken = true;
      return ::testing::internal::GetCapturedStderr();
    }
    bool taken = false;
  } capture;
  {
    layercache_instance proxy(
        "log:\n  level: debug\nprefetch:\n  eager_layers: never\ncache:\n  path: " +
        store.string() + "\nupstreams:\n" + upstream_entry("60s") +
        upstream_yaml("basic", basic_upstream.url(), false, client_access_yaml("60s")));
    pull(proxy, kPrivate, *private_, with_bearer(alice));
    expect_refused(proxy, kPrivate, *private_, with_bearer(bob));
    pull(proxy, kPublic, *public_, with_bearer(bob_public));
    auto m = client_.get(proxy.url() + "/v2/basic/corp/tool/manifests/v1", with_basic(dave));
    EXPECT_EQ(m.status, 200u) << m.body;
    auto l = client_.get(proxy.url() + "/v2/basic/corp/tool/blobs/" + img.layers[0].digest.str(),
                         with_basic(dave));
    EXPECT_EQ(l.status, 200u);
    auto w = client_.get(proxy.url() + "/v2/basic/corp/tool/manifests/v1",
                         with_basic({dave.name, "dave-wrong-pw-e3"}));
    EXPECT_EQ(w.status, 401u);
    metrics = client_.get(proxy.admin_url() + "/metrics").body;
  }
  const std::string stored = all_bytes_under(store);
  const std::string log = capture.take();
  ASSERT_FALSE(stored.empty());
  ASSERT_TRUE(contains(metrics, "layercache_access_checks_total")) << metrics;
  const std::vector<std::pair<std::string, std::string>> secrets = {
      {"alice's token", alice},
      {"bob's token", bob},
      {"bob's public token", bob_public},
      {"alice's token signature", alice.substr(alice.rfind('.') + 1)},
      {"dave's password", dave.password},
      {"dave's wrong password", "dave-wrong-pw-e3"},
      {"dave's Basic", base64_encode(dave.name + ":" + dave.password)},
  };
  for (const auto& [what, secret] : secrets) {
    ASSERT_GE(secret.size(), 8u) << what;
    EXPECT_FALSE(contains(log, secret)) << what << " in the log";
    EXPECT_FALSE(contains(stored, secret)) << what << " in the store";
    EXPECT_FALSE(contains(metrics, secret)) << what << " in the metrics";
  }
  // Any JWT at all (a HELP text may say "Bearer").
  EXPECT_FALSE(contains(log, "Bearer ey")) << "a token in the log";
  EXPECT_FALSE(contains(metrics, "eyJ")) << "a token in the metrics";
}

TEST_F(ClientAccessTest, SkopeoFollowsTheChallengeToTheIssuer) {
  if (!on_path("skopeo")) GTEST_SKIP() << "skopeo is not installed";
  auto proxy = proxy_with();
  temp_dir out;
  const std::string source =
      "docker://127.0.0.1:" + std::to_string(proxy->port()) + "/" + kPrivate + ":v1";
  auto copy = [&](const std::optional<account>& who, const std::filesystem::path& dest) {
    std::vector<std::string> argv = {"skopeo", "copy", "--quiet", "--src-tls-verify=false"};
    if (who) {
      argv.emplace_back("--src-creds");
      argv.emplace_back(who->name + ":" + who->password);
    }
    argv.push_back(source);
    argv.push_back("dir:" + dest.string());
    return run_command(argv, 120s);
  };
  const auto pulled = copy(kAlice, out.path() / "alice");
  ASSERT_EQ(pulled.exit_code, 0) << pulled.output;
  EXPECT_EQ(oci::digest_of(read_file(out.path() / "alice" / "manifest.json")),
            private_->manifest.digest);
  for (const auto& l : private_->layers) {
    EXPECT_EQ(oci::digest_of(read_file(out.path() / "alice" / std::string(l.digest.hex()))),
              l.digest);
  }
  const auto seen = issuer_->requests();
  EXPECT_TRUE(std::any_of(seen.begin(), seen.end(), [](const token_request& r) {
    return r.user == kAlice.name && r.status == 200;
  })) << "skopeo did not fetch its token from the issuer";

  // bob and anonymous: refused, although every blob is cached now.
  const auto denied = copy(kBob, out.path() / "bob");
  EXPECT_NE(denied.exit_code, 0) << "bob pulled the private image";
  const auto anonymous = copy(std::nullopt, out.path() / "anonymous");
  EXPECT_NE(anonymous.exit_code, 0) << "pulled the private image anonymously";
  // The public image, for bob and anonymously.
  const std::string public_source =
      "docker://127.0.0.1:" + std::to_string(proxy->port()) + "/" + kPublic + ":v1";
  const auto public_pull = run_command({"skopeo", "copy", "--quiet", "--src-tls-verify=false",
                                        public_source, "dir:" + (out.path() / "public").string()},
                                       120s);
  EXPECT_EQ(public_pull.exit_code, 0) << public_pull.output;
}

}  // namespace
}  // namespace layercache::testing
