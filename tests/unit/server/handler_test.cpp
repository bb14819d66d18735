// The handlers of server/handlers.hpp without a client connection: each request is handed to
// handle_request and its answer (status, fields, body or body stream) is read here. The cache
// is real (a RocksDB store in a temporary directory); the upstream is an in-process stub on
// loopback that answers as each test says.
#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/http/field.hpp>
#include <mutex>

#include "asio/offload.hpp"
#include "cache/chunk_store.hpp"
#include "content/blob_source.hpp"
#include "content/manifest_cache.hpp"
#include "metrics/metrics.hpp"
#include "oci/digest.hpp"
#include "registry/auth.hpp"
#include "registry/credentials.hpp"
#include "registry/upstream_client.hpp"
#include "server/handlers.hpp"
#include "tests/support/http_stub.hpp"
#include "tests/support/process.hpp"
#include "tests/support/run_on.hpp"

namespace layercache::server {
namespace {

using testing::http_stub;
using testing::stub_request;
using testing::stub_response;

const std::string blob_bytes = [] {
  std::string s;
  for (int i = 0; i < 5000; ++i) s += static_cast<char>('a' + i % 26);
  return s;
}();
const oci::digest blob_digest = oci::digest_of(blob_bytes, oci::digest_algorithm::sha256);
const std::string manifest_type = "application/vnd.oci.image.manifest.v1+json";
const std::string manifest_bytes =
    R"({"schemaVersion":2,"mediaType":")" + manifest_type +
    R"(","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" +
    blob_digest.str() + R"(","size":5000},"layers":[]})";
const oci::digest manifest_digest = oci::digest_of(manifest_bytes, oci::digest_algorithm::sha256);

// What the handlers told the observer.
class recording_observer final : public access_observer {
 public:
  struct touch {
    oci::digest blob;
    oci::byte_interval bytes;
  };
  void manifest_served(const asio::any_io_executor&, registry::upstream_client&, const std::string&,
                       const oci::digest& d, std::string_view, const oci::manifest&, std::size_t,
                       trigger why) override {
    const std::lock_guard lock(mutex);
    served.emplace_back(d, why);
  }
  void tag_seen(const oci::digest& d, const std::string&, const std::string&,
                const std::string& tag) override {
    const std::lock_guard lock(mutex);
    tags.emplace_back(d, tag);
  }
  void touched(const oci::digest& blob, oci::byte_interval bytes) override {
    const std::lock_guard lock(mutex);
    touches.push_back(touch{blob, bytes});
  }
  std::mutex mutex;
  std::vector<std::pair<oci::digest, trigger>> served;
  std::vector<std::pair<oci::digest, std::string>> tags;
  std::vector<touch> touches;
};

// The blob and a manifest listing it, as an upstream serves them (a single Range honoured).
stub_response registry_answer(const stub_request& r) {
  if (r.target.ends_with("/blobs/" + blob_digest.str())) {
    return ranged_answer(blob_bytes, r);
  }
  if (r.target.find("/manifests/") != std::string::npos) {
    return stub_response{
        200,
        {{"Content-Type", manifest_type}, {"Docker-Content-Digest", manifest_digest.str()}},
        manifest_bytes};
  }
  if (r.target.find("/tags/list") != std::string::npos) {
    return stub_response{200,
                         {{"Content-Type", "application/json"},
                          {"Link", "</v2/team/app/tags/list?last=v1&n=1>; rel=\"next\""}},
                         R"({"name":"team/app","tags":["v1"]})"};
  }
  return stub_response{404, {}, R"({"errors":[{"code":"NOT_FOUND"}]})"};
}

// registry_answer with the last byte of every successful body changed.
stub_response lying_registry_answer(const stub_request& r) {
  auto res = registry_answer(r);
  if (!res.body.empty() && res.status / 100 == 2) res.body.back() = '!';
  return res;
}

// A body read to its end: how it ended and what it gave.
struct read_body {
  body_source::end end = body_source::end::done;
  std::string bytes;
};

class HandlerTest : public ::testing::Test {
 protected:
  // The upstream answers with `h`; the cache is on unless `cached` is false.
  void serve(http_stub::handler h, bool cached = true, bool is_default = true) {
    stub_ = std::make_unique<http_stub>(std::move(h));
    config::upstream u;
    u.name = "stub";
    u.url = stub_->url();
    u.scheme = "http";
    u.host = "127.0.0.1";
    u.port = stub_->port();
    u.is_default = is_default;
    u.retry.attempts = 1;
    u.warm_connections = 0;
    cfg_.upstreams = {u};
    creds_ = std::make_unique<registry::upstream_credentials>(cfg_.upstreams.front());
    clients_.emplace(
        "stub", std::make_unique<registry::upstream_client>(cfg_.upstreams.front(), pool_, nullptr,
                                                            tokens_, *creds_, redirects_));
    if (cached) {
      manifests_ =
          std::make_unique<content::manifest_cache>(*store_, blocking_, tag_ttl_, max_stale_);
      blob_handler_ = cached_blobs(blobs_, observer_, metrics_);
      manifest_handler_ = cached_manifests(*manifests_, cfg_, observer_, *blob_handler_, metrics_);
    } else {
      blob_handler_ = relayed_blobs(metrics_);
      manifest_handler_ = relayed_manifests(cfg_, observer_, *blob_handler_, metrics_);
    }
    services_.emplace(
        services{cfg_, metrics_, access_log_, observer_, *manifest_handler_, *blob_handler_});
  }

  template <typename T>
  T run(std::function<asio::awaitable<T>()> call) {
    return testing::run_on<T>(io_, call);
  }

  answer handle(const request& req) {
    record_ = exchange{};
    return run<answer>([&]() -> asio::awaitable<answer> {
      co_return co_await handle_request(*services_, clients_, gates_, req, record_,
                                        io_.get_executor());
    });
  }

  answer get(const std::string& target, const std::string& range = "",
             http::verb method = http::verb::get) {
    request req{method, target, 11};
    if (!range.empty()) req.set(http::field::range, range);
    return handle(req);
  }

  read_body read(answer& a) {
    return run<read_body>([&]() -> asio::awaitable<read_body> {
      read_body got;
      const piece_sink out = [&got](const char* p, std::size_t n) -> asio::awaitable<bool> {
        got.bytes.append(p, n);
        co_return true;
      };
      got.end = co_await a.stream->write(out);
      co_return got;
    });
  }

  std::vector<stub_request> upstream_requests() const { return stub_->requests(); }

  testing::temp_dir dir_;
  std::unique_ptr<cache::chunk_store> store_ = cache::open_rocksdb_store(
      cache::store_options{.path = dir_.path().string(), .capacity = std::uint64_t{64} << 20});
  blocking_pool blocking_{1};
  content::blob_source blobs_{*store_, blocking_, content::fill_settings{1024, 4096, 2, false}};
  config::duration tag_ttl_ = std::chrono::hours(1);
  config::duration max_stale_ = std::chrono::hours(24);
  std::unique_ptr<content::manifest_cache> manifests_;
  asio::io_context io_{1};
  registry::connection_pool pool_{io_.get_executor()};
  config::config cfg_;
  registry::token_cache tokens_;
  registry::redirect_memory redirects_;
  std::unique_ptr<registry::upstream_credentials> creds_;
  std::unique_ptr<http_stub> stub_;
  upstream_clients clients_;
  access_gates gates_;
  metrics::registry metrics_;
  std::atomic<bool> access_log_{false};
  recording_observer observer_;
  std::unique_ptr<blob_handler> blob_handler_;
  std::unique_ptr<manifest_handler> manifest_handler_;
  std::optional<services> services_;
  exchange record_;
};

const std::string blob_target = "/v2/team/app/blobs/" + blob_digest.str();

TEST_F(HandlerTest, TheBaseIsAnsweredWithoutAskingTheUpstream) {
  serve(registry_answer);
  const answer a = get("/v2/");
  EXPECT_EQ(a.status, 200u);
  EXPECT_EQ(a.body, "{}");
  EXPECT_EQ(a.fields[http::field::content_type], "application/json");
  EXPECT_EQ(record_.kind, metrics::route::base);
  EXPECT_TRUE(upstream_requests().empty());
}

TEST_F(HandlerTest, WithoutTheClientTokenTheAnswerIs401WithABasicChallenge) {
  cfg_.server.client_token = "node:secret";
  serve(registry_answer);
  const answer a = get(blob_target);
  EXPECT_EQ(a.status, 401u);
  EXPECT_EQ(a.fields[http::field::www_authenticate], "Basic realm=\"layercache\"");
  EXPECT_NE(a.body.find("UNAUTHORIZED"), std::string::npos);
  EXPECT_TRUE(upstream_requests().empty());
}

TEST_F(HandlerTest, AWriteIsRefusedWith405SayingWhatIsAllowed) {
  serve(registry_answer);
  const answer a = get("/v2/team/app/manifests/v1", "", http::verb::put);
  EXPECT_EQ(a.status, 405u);
  EXPECT_EQ(a.fields[http::field::allow], "GET, HEAD");
  EXPECT_TRUE(upstream_requests().empty());
}

TEST_F(HandlerTest, AReferenceThatIsNoTagIs404ManifestUnknown) {
  serve(registry_answer);
  const answer a = get("/v2/team/app/manifests/.INVALID_MANIFEST_NAME");
  EXPECT_EQ(a.status, 404u);
  EXPECT_NE(a.body.find("MANIFEST_UNKNOWN"), std::string::npos);
  EXPECT_TRUE(upstream_requests().empty());
}

TEST_F(HandlerTest, AManifestByDigestIsFetchedOnceThenAnsweredFromTheStore) {
  serve(registry_answer);
  const std::string target = "/v2/team/app/manifests/" + manifest_digest.str();
  const answer first = get(target);
  EXPECT_EQ(first.status, 200u);
  EXPECT_EQ(first.body, manifest_bytes);
  EXPECT_EQ(first.fields["Docker-Content-Digest"], manifest_digest.str());
  EXPECT_EQ(record_.from, metrics::source::miss);
  const answer second = get(target);
  EXPECT_EQ(second.body, manifest_bytes);
  EXPECT_EQ(second.fields[http::field::content_type], manifest_type);
  EXPECT_EQ(record_.from, metrics::source::hit);
  EXPECT_EQ(upstream_requests().size(), 1u);
  ASSERT_EQ(observer_.served.size(), 2u);
  EXPECT_EQ(observer_.served[0].second, access_observer::trigger::get);
}

TEST_F(HandlerTest, AHeadOfAStoredManifestAnnouncesItsLength) {
  serve(registry_answer);
  const std::string target = "/v2/team/app/manifests/" + manifest_digest.str();
  (void)get(target);
  const answer head = get(target, "", http::verb::head);
  EXPECT_EQ(head.status, 200u);
  EXPECT_EQ(head.length, manifest_bytes.size());
  EXPECT_EQ(observer_.served.back().second, access_observer::trigger::head);
  EXPECT_EQ(upstream_requests().size(), 1u);
}

TEST_F(HandlerTest, ATagIsResolvedOnceWithinItsTtlAndItsTagIsSeen) {
  serve(registry_answer);
  EXPECT_EQ(get("/v2/team/app/manifests/v1").body, manifest_bytes);
  EXPECT_EQ(get("/v2/team/app/manifests/v1").body, manifest_bytes);
  EXPECT_EQ(record_.from, metrics::source::hit);
  EXPECT_EQ(upstream_requests().size(), 1u);
  ASSERT_FALSE(observer_.tags.empty());
  EXPECT_EQ(observer_.tags.front().second, "v1");
}

TEST_F(HandlerTest, AnOldTagIsServedStaleAndFlaggedWhenTheUpstreamFails) {
  std::atomic<bool> failing{false};
  tag_ttl_ = std::chrono::seconds(0);
  serve([&failing](const stub_request& r) {
    return failing ? stub_response{503, {}, ""} : registry_answer(r);
  });
  (void)get("/v2/team/app/manifests/v1");
  failing = true;
  const answer a = get("/v2/team/app/manifests/v1");
  EXPECT_EQ(a.status, 200u);
  EXPECT_EQ(a.body, manifest_bytes);
  EXPECT_EQ(a.fields["X-Layercache-Stale"], "true");
}

TEST_F(HandlerTest, ABlobRangeIsPlannedBeforeAnyByteAndStreamedFromAFill) {
  serve(registry_answer);
  answer a = get(blob_target, "bytes=1000-1009");
  EXPECT_EQ(a.status, 206u);
  EXPECT_EQ(a.fields[http::field::content_range], "bytes 1000-1009/5000");
  EXPECT_EQ(a.length, 10u);
  EXPECT_FALSE(a.header_first);
  ASSERT_TRUE(a.stream);
  const auto body = read(a);
  EXPECT_EQ(body.end, body_source::end::done);
  EXPECT_EQ(body.bytes, blob_bytes.substr(1000, 10));
  EXPECT_EQ(record_.from, metrics::source::miss);
  ASSERT_EQ(observer_.touches.size(), 1u);
  EXPECT_EQ(observer_.touches[0].bytes.begin, 1000u);
  EXPECT_EQ(observer_.touches[0].bytes.length(), 10u);
}

TEST_F(HandlerTest, SeveralRangesAreOneMultipartBody) {
  serve(registry_answer);
  answer a = get(blob_target, "bytes=0-1,10-11");
  EXPECT_EQ(a.status, 206u);
  EXPECT_TRUE(a.fields[http::field::content_type].starts_with("multipart/byteranges"));
  const auto body = read(a);
  EXPECT_EQ(body.end, body_source::end::done);
  EXPECT_EQ(body.bytes.size(), a.length);
  EXPECT_NE(body.bytes.find("Content-Range: bytes 10-11/5000"), std::string::npos);
}

TEST_F(HandlerTest, ARangeBeyondTheBlobIs416WithItsSize) {
  serve(registry_answer);
  const answer a = get(blob_target, "bytes=99999999999999999999999-");
  EXPECT_EQ(a.status, 416u);
  EXPECT_EQ(a.fields[http::field::content_range], "bytes */5000");
  EXPECT_FALSE(a.stream);
}

TEST_F(HandlerTest, AWholeBlobThatDoesNotMatchItsDigestIsCutBeforeItsLastByte) {
  serve(lying_registry_answer);
  answer a = get(blob_target);
  EXPECT_EQ(a.status, 200u);
  const auto body = read(a);
  EXPECT_EQ(body.end, body_source::end::cut);
  EXPECT_LT(body.bytes.size(), blob_bytes.size());
}

TEST_F(HandlerTest, ABlobTheUpstreamCannotGiveIsUnavailableBeforeAnyByte) {
  serve([](const stub_request& r) {
    if (r.method == "HEAD") return registry_answer(r);
    return stub_response{500, {}, ""};
  });
  answer a = get(blob_target, "bytes=0-99");
  EXPECT_EQ(a.status, 206u);
  const auto body = read(a);
  EXPECT_EQ(body.end, body_source::end::unavailable);
  EXPECT_TRUE(body.bytes.empty());
  EXPECT_NE(a.unavailable.find("upstream stub"), std::string::npos);
}

TEST_F(HandlerTest, WithTheCacheOffABlobIsRelayedWithItsHeaderFirst) {
  serve(registry_answer, false);
  answer a = get(blob_target);
  EXPECT_EQ(a.status, 200u);
  EXPECT_TRUE(a.header_first);
  EXPECT_EQ(a.length, blob_bytes.size());
  EXPECT_EQ(record_.from, metrics::source::upstream);
  const auto body = read(a);
  EXPECT_EQ(body.end, body_source::end::done);
  EXPECT_EQ(body.bytes, blob_bytes);
}

TEST_F(HandlerTest, WithTheCacheOffALyingBlobIsCutBeforeItsLastByte) {
  serve(lying_registry_answer, false);
  answer a = get(blob_target);
  EXPECT_EQ(a.status, 200u);
  const auto body = read(a);
  EXPECT_EQ(body.end, body_source::end::cut);
  EXPECT_LT(body.bytes.size(), blob_bytes.size());
}

TEST_F(HandlerTest, WithTheCacheOffAManifestGoesUpstreamEveryTime) {
  serve(registry_answer, false);
  EXPECT_EQ(get("/v2/team/app/manifests/v1").body, manifest_bytes);
  EXPECT_EQ(get("/v2/team/app/manifests/v1").body, manifest_bytes);
  EXPECT_EQ(record_.from, metrics::source::upstream);
  EXPECT_EQ(upstream_requests().size(), 2u);
}

TEST_F(HandlerTest, AnUpstreamsRefusalIsPassedOnWithItsBody) {
  serve([](const stub_request&) {
    return stub_response{
        404, {{"Content-Type", "application/json"}}, R"({"errors":[{"code":"MANIFEST_UNKNOWN"}]})"};
  });
  const answer a = get("/v2/team/app/manifests/v2");
  EXPECT_EQ(a.status, 404u);
  EXPECT_EQ(a.body, R"({"errors":[{"code":"MANIFEST_UNKNOWN"}]})");
}

TEST_F(HandlerTest, AListingsPagingLinkGetsTheClientsPrefixBack) {
  serve(registry_answer, true, false);
  answer a = get("/v2/stub/team/app/tags/list");
  EXPECT_EQ(a.status, 200u);
  EXPECT_EQ(a.fields[http::field::link], "</v2/stub/team/app/tags/list?last=v1&n=1>; rel=\"next\"");
  const auto body = read(a);
  EXPECT_EQ(body.bytes, R"({"name":"team/app","tags":["v1"]})");
  ASSERT_EQ(upstream_requests().size(), 1u);
  EXPECT_EQ(upstream_requests().front().target, "/v2/team/app/tags/list");
}

}  // namespace
}  // namespace layercache::server
