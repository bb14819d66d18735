// upstream.access: client through handle_request, without a client connection: a real store,
// and an in-process upstream on loopback that guards its repositories with Basic credentials
// the way a registry does (401 with a challenge, 403 for a user without rights, 404 for a blob
// another repository holds).
#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include "asio/offload.hpp"
#include "cache/chunk_store.hpp"
#include "content/blob_source.hpp"
#include "content/manifest_cache.hpp"
#include "metrics/metrics.hpp"
#include "oci/digest.hpp"
#include "registry/auth.hpp"
#include "registry/credentials.hpp"
#include "registry/upstream_client.hpp"
#include "server/access.hpp"
#include "server/handlers.hpp"
#include "tests/support/http_stub.hpp"
#include "tests/support/process.hpp"
#include "tests/support/run_on.hpp"

namespace layercache::server {
namespace {

using testing::http_stub;
using testing::stub_request;
using testing::stub_response;

std::string letters(int n, char from) {
  std::string s;
  for (int i = 0; i < n; ++i) s += static_cast<char>(from + i % 13);
  return s;
}

const std::string private_blob = letters(6000, 'a');  // only in team/app
const std::string public_blob = letters(3000, 'n');   // in public/base
const oci::digest private_digest = oci::digest_of(private_blob, oci::digest_algorithm::sha256);
const oci::digest public_digest = oci::digest_of(public_blob, oci::digest_algorithm::sha256);
const std::string manifest_type = "application/vnd.oci.image.manifest.v1+json";

std::string manifest_of(const oci::digest& config, std::size_t size) {
  return R"({"schemaVersion":2,"mediaType":")" + manifest_type +
         R"(","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" +
         config.str() + R"(","size":)" + std::to_string(size) + R"(},"layers":[]})";
}
const std::string private_manifest = manifest_of(private_digest, private_blob.size());
const std::string public_manifest = manifest_of(public_digest, public_blob.size());

const std::string alice = registry::basic_authorization("alice", "alice-pw");  // team/app
const std::string bob = registry::basic_authorization("bob", "bob-pw");        // no rights there
const std::string mallory = registry::basic_authorization("alice", "guess");   // wrong password
// Tokens with alice's rights: a JWT that expired (this upstream does not look) and one that
// has not.
const std::string expired = "Bearer e30.eyJleHAiOjEwMDB9.c2ln";          // {"exp":1000}
const std::string lasting = "Bearer e30.eyJleHAiOjQwMDAwMDAwMDB9.c2ln";  // {"exp":4000000000}

// A registry with a private repository (team/app: alice) and a public one (public/base).
stub_response guarded_registry(const stub_request& r) {
  auto auth = r.header("Authorization").value_or("");
  if (auth == expired || auth == lasting) auth = alice;
  const bool known = auth == alice || auth == bob;
  const stub_response challenge{
      401, {{"WWW-Authenticate", "Basic realm=\"stub-registry\""}}, R"({"errors":[]})"};
  if (r.target == "/v2/") return known ? stub_response{200, {}, "{}"} : challenge;
  std::string repo;
  std::string_view rest;
  for (std::string name : {"team/app", "public/base"}) {
    if (r.target.starts_with("/v2/" + name + "/")) {
      repo = name;
      rest = std::string_view(r.target).substr(5 + name.size());
    }
  }
  if (repo.empty()) return {404, {}, R"({"errors":[{"code":"NAME_UNKNOWN"}]})"};
  if (repo == "team/app" && !known) return challenge;
  if (repo == "team/app" && auth == bob) {
    return {403, {}, R"({"errors":[{"code":"DENIED"}]})"};
  }
  const std::string& blob = repo == "team/app" ? private_blob : public_blob;
  const oci::digest& digest = repo == "team/app" ? private_digest : public_digest;
  const std::string& manifest = repo == "team/app" ? private_manifest : public_manifest;
  if (rest == "blobs/" + digest.str()) return ranged_answer(blob, r);
  const std::string manifest_digest = oci::digest_of(manifest, oci::digest_algorithm::sha256).str();
  if (rest == "manifests/v1" || rest == "manifests/" + manifest_digest) {
    return {200,
            {{"Content-Type", manifest_type}, {"Docker-Content-Digest", manifest_digest}},
            manifest};
  }
  if (rest.starts_with("manifests/")) {
    return {404, {}, R"({"errors":[{"code":"MANIFEST_UNKNOWN"}]})"};
  }
  return {404, {}, R"({"errors":[{"code":"BLOB_UNKNOWN"}]})"};
}

class AccessGateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    stub_ = std::make_unique<http_stub>(guarded_registry);
    config::upstream u;
    u.name = "stub";
    u.url = stub_->url();
    u.scheme = "http";
    u.host = "127.0.0.1";
    u.port = stub_->port();
    u.is_default = true;
    u.retry.attempts = 1;
    u.warm_connections = 0;
    u.access = config::access_mode::client;
    cfg_.upstreams = {u};
    const auto& up = cfg_.upstreams.front();
    creds_ = std::make_unique<registry::upstream_credentials>(up);
    clients_.emplace("stub", std::make_unique<registry::upstream_client>(
                                 up, pool_, nullptr, tokens_, *creds_, redirects_));
    parts_ = std::make_unique<access_parts>(up);
    gates_.emplace("stub", std::make_unique<access_gate>(
                               up, *parts_, *clients_["stub"],
                               access_gate::client_parts{pool_, nullptr, nullptr,
                                                         &metrics_.upstream("stub")}));
    manifests_ = std::make_unique<content::manifest_cache>(
        *store_, blocking_, std::chrono::hours(1), std::chrono::hours(24));
    blob_handler_ = cached_blobs(blobs_, observer_, metrics_);
    manifest_handler_ = cached_manifests(*manifests_, cfg_, observer_, *blob_handler_, metrics_);
    services_.emplace(
        services{cfg_, metrics_, access_log_, observer_, *manifest_handler_, *blob_handler_});
  }

  template <typename T>
  T run(std::function<asio::awaitable<T>()> call) {
    return testing::run_on<T>(io_, call);
  }

  // The status and the whole body of a GET (or HEAD) of `target` with `authorization`.
  std::pair<unsigned, std::string> get(const std::string& target,
                                       const std::string& authorization = "",
                                       http::verb method = http::verb::get) {
    request req{method, target, 11};
    if (!authorization.empty()) req.set(http::field::authorization, authorization);
    record_ = exchange{};
    last_ = run<answer>([&]() -> asio::awaitable<answer> {
      co_return co_await handle_request(*services_, clients_, gates_, req, record_,
                                        io_.get_executor());
    });
    std::string body = last_.body;
    if (last_.stream) {
      body = run<std::string>([&]() -> asio::awaitable<std::string> {
        std::string got;
        const piece_sink out = [&got](const char* p, std::size_t n) -> asio::awaitable<bool> {
          got.append(p, n);
          co_return true;
        };
        co_await last_.stream->write(out);
        co_return got;
      });
    }
    return {last_.status, body};
  }

  // Requests the upstream saw for `what` (a substring of the target), by method.
  std::size_t seen(std::string_view method, std::string_view what) const {
    std::size_t n = 0;
    for (const auto& r : stub_->requests()) {
      if (r.method == method && r.target.find(what) != std::string::npos) ++n;
    }
    return n;
  }

  testing::temp_dir dir_;
  std::unique_ptr<cache::chunk_store> store_ = cache::open_rocksdb_store(
      cache::store_options{.path = dir_.path().string(), .capacity = std::uint64_t{64} << 20});
  blocking_pool blocking_{1};
  content::blob_source blobs_{*store_, blocking_, content::fill_settings{1024, 4096, 2, false}};
  std::unique_ptr<content::manifest_cache> manifests_;
  asio::io_context io_{1};
  registry::connection_pool pool_{io_.get_executor()};
  config::config cfg_;
  registry::token_cache tokens_;
  registry::redirect_memory redirects_;
  std::unique_ptr<registry::upstream_credentials> creds_;
  std::unique_ptr<http_stub> stub_;
  upstream_clients clients_;
  std::unique_ptr<access_parts> parts_;
  access_gates gates_;
  metrics::registry metrics_;
  std::atomic<bool> access_log_{false};
  no_prefetch observer_;
  std::unique_ptr<blob_handler> blob_handler_;
  std::unique_ptr<manifest_handler> manifest_handler_;
  std::optional<services> services_;
  exchange record_;
  answer last_;
};

const std::string private_target = "/v2/team/app/blobs/" + private_digest.str();
const std::string public_target = "/v2/public/base/blobs/" + public_digest.str();

TEST_F(AccessGateTest, WithoutCredentialsAPrivateRepositoryGetsTheUpstreamsChallenge) {
  for (const std::string& target : {std::string("/v2/team/app/manifests/v1"), private_target}) {
    const auto [status, body] = get(target);
    EXPECT_EQ(status, 401u) << target;
    EXPECT_EQ(last_.fields[http::field::www_authenticate], "Basic realm=\"stub-registry\"");
    EXPECT_NE(body.find("UNAUTHORIZED"), std::string::npos) << body;
  }
  // GET /v2/ (dockerd and skopeo ask it first) learns the same challenge; with credentials, 200.
  EXPECT_EQ(get("/v2/").first, 401u);
  EXPECT_EQ(last_.fields[http::field::www_authenticate], "Basic realm=\"stub-registry\"");
  EXPECT_EQ(get("/v2/", alice).first, 200u);
}

TEST_F(AccessGateTest, AClientsOwnCredentialsAreCheckedAndFillItsChunks) {
  auto [mstatus, manifest] = get("/v2/team/app/manifests/v1", alice);
  EXPECT_EQ(mstatus, 200u);
  EXPECT_EQ(manifest, private_manifest);
  auto [status, bytes] = get(private_target, alice);
  EXPECT_EQ(status, 200u);
  EXPECT_EQ(bytes, private_blob);
  // A manifest's list is not the registry's word that the blob is in team/app: one HEAD there
  // (whose size spares the blob source its own); the fill presented alice's credentials and
  // nothing else.
  EXPECT_EQ(seen("HEAD", "/blobs/"), 1u);
  std::size_t fills = 0;
  for (const auto& r : stub_->requests()) {
    if (r.method != "GET" || r.target.find("/blobs/") == std::string::npos) continue;
    ++fills;
    EXPECT_EQ(r.header("Authorization").value_or(""), alice);
  }
  EXPECT_GT(fills, 0u);
  // Again: from the store, on the check made before (no upstream request at all).
  stub_->clear_requests();
  std::tie(status, bytes) = get(private_target, alice);
  EXPECT_EQ(status, 200u);
  EXPECT_EQ(bytes, private_blob);
  EXPECT_TRUE(stub_->requests().empty());
  EXPECT_NE(metrics_.serialize().find("layercache_access_cached_total{upstream=\"stub\"} 1"),
            std::string::npos);
}

TEST_F(AccessGateTest, CachedBytesAreRefusedToClientsTheUpstreamRefuses) {
  ASSERT_EQ(get(private_target, alice).second, private_blob);  // cached now
  auto [status, body] = get(private_target, bob);
  EXPECT_EQ(status, 403u);
  EXPECT_NE(body.find("DENIED"), std::string::npos) << body;
  EXPECT_EQ(get(private_target, mallory).first, 401u);
  EXPECT_EQ(last_.fields[http::field::www_authenticate], "Basic realm=\"stub-registry\"");
  EXPECT_EQ(get(private_target).first, 401u);
  EXPECT_EQ(get(private_target, bob, http::verb::head).first, 403u);
  EXPECT_EQ(get("/v2/team/app/manifests/v1", bob).first, 403u);
  const std::string text = metrics_.serialize();
  EXPECT_NE(text.find(R"(layercache_access_checks_total{outcome="refused",upstream="stub"})"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("alice-pw"), std::string::npos);
  EXPECT_EQ(text.find(alice.substr(6)), std::string::npos);
}

TEST_F(AccessGateTest, APublicRepositoryIsServedToAnyoneCheckedOnce) {
  EXPECT_EQ(get(public_target).second, public_blob);
  const std::size_t heads = seen("HEAD", public_digest.str());  // the anonymous check, the size
  for (const std::string& who : {bob, std::string()}) {
    const auto [status, bytes] = get(public_target, who);
    EXPECT_EQ(status, 200u);
    EXPECT_EQ(bytes, public_blob);
  }
  EXPECT_EQ(seen("HEAD", public_digest.str()), heads);  // checked once for everyone
  // Its fills went without credentials.
  for (const auto& r : stub_->requests()) EXPECT_FALSE(r.header("Authorization").has_value());
}

TEST_F(AccessGateTest, ABlobIsServedUnderARepositoryOnlyWhereTheUpstreamHasIt) {
  ASSERT_EQ(get(private_target, alice).second, private_blob);  // cached
  ASSERT_EQ(get(public_target).first, 200u);                   // public/base is public
  // The private blob asked for under the public repository's name: the upstream has no such
  // blob there, so neither does layercache.
  const std::string smuggled = "/v2/public/base/blobs/" + private_digest.str();
  EXPECT_EQ(get(smuggled).first, 404u);
  EXPECT_EQ(get(smuggled, bob).first, 404u);
  // So with a manifest by digest, which the store keeps by digest alone.
  const std::string by_digest =
      "manifests/" + oci::digest_of(private_manifest, oci::digest_algorithm::sha256).str();
  ASSERT_EQ(get("/v2/team/app/" + by_digest, alice).second, private_manifest);
  EXPECT_EQ(get("/v2/public/base/" + by_digest).first, 404u);
  EXPECT_EQ(get("/v2/public/base/" + by_digest, bob).first, 404u);
  EXPECT_EQ(get("/v2/team/app/" + by_digest, bob).first, 403u);
  EXPECT_EQ(get("/v2/team/app/" + by_digest, alice).second, private_manifest);
}

TEST_F(AccessGateTest, WhenTheUpstreamCannotBeAskedNothingIsServed) {
  ASSERT_EQ(get(private_target, alice).second, private_blob);  // cached
  stub_.reset();
  const auto [status, body] = get(private_target, registry::basic_authorization("carol", "c"));
  EXPECT_GE(status, 500u);
  EXPECT_EQ(body.find(private_blob.substr(0, 64)), std::string::npos);
  // alice's check still holds: served from the store.
  EXPECT_EQ(get(private_target, alice).second, private_blob);
}

TEST_F(AccessGateTest, NoCheckOutlivesTheTokenItWasMadeFor) {
  // The upstream (this stub) still takes an expired JWT, but layercache never trusts a check of
  // it beyond its expiry: every request asks again. A lasting one is asked once.
  EXPECT_EQ(get(private_target, expired).second, private_blob);
  const std::size_t heads = seen("HEAD", private_digest.str());  // the check, the size
  EXPECT_EQ(get(private_target, expired).second, private_blob);
  EXPECT_EQ(seen("HEAD", private_digest.str()), heads + 1);
  stub_->clear_requests();
  EXPECT_EQ(get(private_target, lasting).second, private_blob);
  EXPECT_EQ(get(private_target, lasting).second, private_blob);
  EXPECT_EQ(seen("HEAD", private_digest.str()), 1u);
}

}  // namespace
}  // namespace layercache::server
