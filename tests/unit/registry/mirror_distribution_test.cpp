// The typed calls of registry/distribution.hpp when the upstream has mirrors, against
// in-process endpoints (http_stub) for the origin and each mirror: which one is asked, what
// they are sent, and every way a mirror can fail handing the request on — to the next mirror,
// then the origin — without failing the call.
#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <functional>

#include "metrics/metrics.hpp"
#include "oci/digest.hpp"
#include "registry/distribution.hpp"
#include "registry/mirrors.hpp"
#include "tests/support/exposition.hpp"
#include "tests/support/http_stub.hpp"
#include "tests/support/run_on.hpp"

namespace layercache::registry {
namespace {

using namespace std::chrono_literals;
using testing::http_stub;
using testing::stub_request;
using testing::stub_response;

const std::string repo = "team/app";
const std::string blob_bytes = [] {
  std::string s;
  for (int i = 0; i < 300000; ++i) s += static_cast<char>('a' + (i * 7) % 26);
  return s;
}();
const oci::digest blob_digest = oci::digest_of(blob_bytes, oci::digest_algorithm::sha256);
const std::string manifest_bytes = R"({"schemaVersion":2,"layers":[]})";
const oci::digest manifest_digest = oci::digest_of(manifest_bytes, oci::digest_algorithm::sha256);
// The coroutines take references: what they are given must outlive them.
const std::string by_digest_ref = manifest_digest.str();
const std::string tag_ref = "v1";
const std::string any_type = "*/*";

// What a well-behaved registry (or tier) answers for the test's blob and manifest.
stub_response registry_answer(const stub_request& r) {
  if (r.target.find("/manifests/") != std::string::npos) {
    return stub_response{
        200, {{"Content-Type", "application/vnd.oci.image.manifest.v1+json"}}, manifest_bytes};
  }
  return ranged_answer(blob_bytes, r);
}

class MirrorDistributionTest : public ::testing::Test {
 protected:
  // The origin answers with `origin`; mirror k with `mirrors[k]`.
  void serve(http_stub::handler origin, std::vector<http_stub::handler> mirrors,
             config::mirror_selection select = config::mirror_selection::ordered,
             bool resolve = false) {
    origin_ = std::make_unique<http_stub>(std::move(origin));
    cfg_.name = "origin";
    cfg_.url = origin_->url();
    cfg_.scheme = "http";
    cfg_.host = "127.0.0.1";
    cfg_.port = origin_->port();
    cfg_.retry.attempts = 1;
    cfg_.auth.type = config::auth_type::basic;
    cfg_.auth.username = "origin-user";
    cfg_.auth.password = "origin-secret";
    cfg_.mirror_select = select;
    cfg_.breaker.failures = 2;
    for (auto& h : mirrors) {
      mirrors_.push_back(std::make_unique<http_stub>(std::move(h)));
      config::mirror m;
      m.url = mirrors_.back()->url();
      m.scheme = "http";
      m.host = "127.0.0.1";
      m.port = mirrors_.back()->port();
      m.timeouts.response = 500ms;
      m.timeouts.read = 500ms;
      m.resolve = resolve;
      cfg_.mirrors.push_back(m);
    }
    origin_creds_ = std::make_unique<upstream_credentials>(cfg_);
    state_ = std::make_unique<mirror_state>(cfg_, via_);
    std::vector<std::unique_ptr<upstream_client>> clients;
    for (std::size_t k = 0; k < state_->size(); ++k) {
      creds_.push_back(std::make_unique<upstream_credentials>(state_->endpoint(k)));
      redirect_memories_.push_back(std::make_unique<redirect_memory>());
      clients.push_back(std::make_unique<upstream_client>(state_->endpoint(k), pool_, nullptr,
                                                          tokens_, *creds_.back(),
                                                          *redirect_memories_.back()));
      state_->set_metrics(k, &metrics_.mirror("origin", state_->label(k)));
    }
    auto origin_only = std::make_unique<upstream_client>(cfg_, pool_, nullptr, tokens_,
                                                         *origin_creds_, redirects_);
    mirror_clients_ =
        std::make_unique<mirror_clients>(*state_, std::move(clients), std::move(origin_only));
    client_ = std::make_unique<upstream_client>(cfg_, pool_, nullptr, tokens_, *origin_creds_,
                                                redirects_);
    client_->set_mirrors(mirror_clients_.get());
  }

  template <typename T>
  T run(std::function<asio::awaitable<T>(upstream_client&)> call) {
    return testing::run_on<T>(io_, [&] { return call(*client_); });
  }

  // The bytes of [first, last] through get_blob_ranges, "" on an error.
  std::string read_range(std::uint64_t first, std::uint64_t last) {
    return run<std::string>([first, last](upstream_client& c) { return range_of(c, first, last); });
  }
  static asio::awaitable<std::string> range_of(upstream_client& c, std::uint64_t first,
                                               std::uint64_t last) {
    const std::vector<oci::byte_range> ranges{{first, last}};
    auto body = co_await get_blob_ranges(c, repo, blob_digest, ranges, blob_bytes.size());
    std::string got;
    std::vector<blob_piece> pieces;
    // (g++ 12 does not re-evaluate the left of `&& co_await` in a loop condition.)
    for (int bound = 0; got.size() < last - first + 1 && bound < 100000; ++bound) {
      if (!co_await body.next(pieces)) break;
      for (const auto& p : pieces) {
        if (p.offset + p.size <= first + got.size()) continue;
        const std::uint64_t skip = first + got.size() - p.offset;
        got.append(p.data + skip, p.size - skip);
      }
    }
    if (!body.error().empty()) ADD_FAILURE() << body.error();
    co_return body.error().empty() ? got : std::string();
  }

  double mirror_count(std::size_t k, const std::string& outcome, const std::string& reason = "") {
    std::map<std::string, std::string> labels{{"mirror", state_->label(k)}, {"outcome", outcome}};
    if (!reason.empty()) labels.emplace("reason", reason);
    return testing::metric_value(testing::parse_exposition(metrics_.serialize()),
                                 "layercache_mirror_requests_total", labels);
  }

  asio::io_context io_{1};
  connection_pool pool_{io_.get_executor()};
  config::upstream cfg_;
  token_cache tokens_;
  redirect_memory redirects_;
  std::string via_ = make_via();
  metrics::registry metrics_;
  std::unique_ptr<http_stub> origin_;
  std::vector<std::unique_ptr<http_stub>> mirrors_;
  std::unique_ptr<upstream_credentials> origin_creds_;
  std::vector<std::unique_ptr<upstream_credentials>> creds_;
  std::vector<std::unique_ptr<redirect_memory>> redirect_memories_;
  std::unique_ptr<mirror_state> state_;
  std::unique_ptr<mirror_clients> mirror_clients_;
  std::unique_ptr<upstream_client> client_;
};

TEST_F(MirrorDistributionTest, AMirrorServesRangesWithNsAndViaAndNoOriginCredentials) {
  serve([](const stub_request&) { return stub_response{500, {}, ""}; }, {registry_answer});
  EXPECT_TRUE(read_range(1000, 70999) == blob_bytes.substr(1000, 70000));
  EXPECT_TRUE(origin_->requests().empty());
  const auto got = mirrors_[0]->requests();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].target, "/v2/team/app/blobs/" + blob_digest.str() +
                               "?ns=127.0.0.1:" + std::to_string(origin_->port()));
  EXPECT_EQ(got[0].header("Via").value_or(""), via_);
  EXPECT_FALSE(got[0].header("Authorization").has_value());
  EXPECT_EQ(mirror_count(0, "served"), 1);
}

TEST_F(MirrorDistributionTest, NotFoundAtAMirrorGoesOnWithoutCountingAgainstIt) {
  serve(registry_answer, {[](const stub_request&) {
                            return stub_response{404, {}, "{}"};
                          },
                          registry_answer});
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(read_range(0, 99) == blob_bytes.substr(0, 100));
  EXPECT_EQ(mirrors_[0]->requests().size(), 3u);  // still asked: 404 is no failure
  EXPECT_EQ(mirrors_[1]->requests().size(), 3u);
  EXPECT_TRUE(origin_->requests().empty());
  EXPECT_EQ(mirror_count(0, "fallback", "not_found"), 3);
}

TEST_F(MirrorDistributionTest, AFailingMirrorIsPassedOverThenItsBreakerOpens) {
  serve(registry_answer, {[](const stub_request&) { return stub_response{503, {}, ""}; }});
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(read_range(0, 99) == blob_bytes.substr(0, 100));
  EXPECT_EQ(mirrors_[0]->requests().size(), 2u);  // breaker.failures: 2
  EXPECT_EQ(origin_->requests().size(), 4u);
  EXPECT_TRUE(state_->breaker_open(0));
  EXPECT_EQ(testing::metric_value(testing::parse_exposition(metrics_.serialize()),
                                  "layercache_mirror_breaker_open"),
            1);
}

TEST_F(MirrorDistributionTest, AnUnreachableMirrorGoesToTheOrigin) {
  serve(registry_answer, {registry_answer});
  mirrors_.clear();  // the port closes: connection refused
  EXPECT_TRUE(read_range(0, 9999) == blob_bytes.substr(0, 10000));
  EXPECT_EQ(mirror_count(0, "fallback", "transport"), 1);
}

TEST_F(MirrorDistributionTest, ASlowFirstByteGoesToTheNextMirror) {
  serve(registry_answer, {[](const stub_request& r) {
                            auto a = registry_answer(r);
                            a.delay = 3s;  // beyond the mirror's 500 ms response budget
                            return a;
                          },
                          registry_answer});
  EXPECT_TRUE(read_range(0, 9999) == blob_bytes.substr(0, 10000));
  EXPECT_EQ(mirrors_[1]->requests().size(), 1u);
  EXPECT_TRUE(origin_->requests().empty());
  EXPECT_EQ(mirror_count(0, "fallback", "timeout"), 1);
}

TEST_F(MirrorDistributionTest, ABodyThatBreaksOffContinuesAtTheOriginFromItsNextByte) {
  serve(registry_answer, {[](const stub_request& r) {
          auto a = registry_answer(r);
          a.cut_after = a.body.size() / 2;
          return a;
        }});
  EXPECT_TRUE(read_range(0, 199999) == blob_bytes.substr(0, 200000));
  const auto asked = origin_->requests();
  ASSERT_EQ(asked.size(), 1u);
  const std::string range = asked[0].header("Range").value_or("");
  EXPECT_TRUE(range.starts_with("bytes=")) << range;
  EXPECT_NE(range, "bytes=0-199999") << "the origin is asked only for the rest";
  EXPECT_TRUE(range.ends_with("-199999")) << range;
}

// One read() may pass over several sources: the first breaks off, the next answers a header and
// closes, the origin finishes.
TEST_F(MirrorDistributionTest, BodiesThatBreakOffAtEveryMirrorEndAtTheOrigin) {
  const auto cut = [](const stub_request& r) {
    auto a = registry_answer(r);
    a.cut_after = a.body.size() / 3;
    return a;
  };
  const auto header_only = [](const stub_request& r) {
    auto a = registry_answer(r);
    a.cut_after = 0;  // the header, then the connection closes
    return a;
  };
  serve(registry_answer, {cut, header_only});
  EXPECT_TRUE(read_range(0, 199999) == blob_bytes.substr(0, 200000));
  EXPECT_EQ(mirrors_[0]->requests().size(), 1u);
  EXPECT_EQ(mirrors_[1]->requests().size(), 1u);
  EXPECT_EQ(origin_->requests().size(), 1u);
  EXPECT_EQ(mirror_count(0, "fallback", "transport"), 1);
  EXPECT_EQ(mirror_count(1, "fallback", "transport"), 1);
}

TEST_F(MirrorDistributionTest, AWrongContentRangeIsNotUsed) {
  serve(registry_answer, {[](const stub_request&) {
          return stub_response{
              206, {{"Content-Range", "bytes 5-104/300000"}}, blob_bytes.substr(5, 100)};
        }});
  EXPECT_TRUE(read_range(0, 99) == blob_bytes.substr(0, 100));
  EXPECT_EQ(origin_->requests().size(), 1u);
  EXPECT_EQ(mirror_count(0, "fallback", "invalid"), 1);
}

TEST_F(MirrorDistributionTest, HashSelectionSendsABlobToItsOwner) {
  serve(
      [](const stub_request&) {
        return stub_response{500, {}, ""};
      },
      {registry_answer, registry_answer, registry_answer}, config::mirror_selection::hash);
  EXPECT_TRUE(read_range(0, 99) == blob_bytes.substr(0, 100));
  const std::size_t owner = state_->candidates(blob_digest.str()).front();
  for (std::size_t k = 0; k < 3; ++k) {
    EXPECT_EQ(mirrors_[k]->requests().size(), k == owner ? 1u : 0u) << k;
  }
}

TEST_F(MirrorDistributionTest, ADistrustedBlobIsReadAtTheOrigin) {
  serve(registry_answer, {registry_answer});
  EXPECT_TRUE(read_range(0, 99) == blob_bytes.substr(0, 100));
  state_->distrust(blob_digest);  // its bytes did not match (content/ says so)
  EXPECT_TRUE(state_->breaker_open(0));
  EXPECT_TRUE(read_range(0, 99) == blob_bytes.substr(0, 100));
  EXPECT_EQ(mirrors_[0]->requests().size(), 1u);
  EXPECT_EQ(origin_->requests().size(), 1u);
  EXPECT_EQ(mirror_count(0, "fallback", "digest"), 1);
}

TEST_F(MirrorDistributionTest, ABlobSizeComesFromAMirror) {
  serve([](const stub_request&) { return stub_response{500, {}, ""}; }, {registry_answer});
  auto got =
      run<blob_size_result>([](upstream_client& c) { return blob_size(c, repo, blob_digest); });
  ASSERT_TRUE(std::holds_alternative<std::uint64_t>(got));
  EXPECT_EQ(std::get<std::uint64_t>(got), blob_bytes.size());
  EXPECT_TRUE(origin_->requests().empty());
}

TEST_F(MirrorDistributionTest, ManifestsByDigestComeFromAMirrorTagsFromTheOrigin) {
  serve(registry_answer, {registry_answer});
  auto by_digest = run<manifest_result>(
      [](upstream_client& c) { return get_manifest(c, repo, by_digest_ref, any_type, 1 << 20); });
  ASSERT_TRUE(std::holds_alternative<manifest_body>(by_digest));
  EXPECT_EQ(mirrors_[0]->requests().size(), 1u);
  EXPECT_TRUE(origin_->requests().empty());
  auto by_tag = run<manifest_result>(
      [](upstream_client& c) { return get_manifest(c, repo, tag_ref, any_type, 1 << 20); });
  ASSERT_TRUE(std::holds_alternative<manifest_body>(by_tag));
  EXPECT_EQ(mirrors_[0]->requests().size(), 1u);  // tags resolve at the origin
  EXPECT_EQ(origin_->requests().size(), 1u);
}

TEST_F(MirrorDistributionTest, AMirrorThatResolvesTagsIsAskedForThem) {
  serve(
      [](const stub_request&) {
        return stub_response{500, {}, ""};
      },
      {registry_answer}, config::mirror_selection::ordered, true);
  auto by_tag = run<manifest_result>(
      [](upstream_client& c) { return get_manifest(c, repo, tag_ref, any_type, 1 << 20); });
  ASSERT_TRUE(std::holds_alternative<manifest_body>(by_tag));
  EXPECT_TRUE(origin_->requests().empty());
}

TEST_F(MirrorDistributionTest, AMirrorsChallengeGetsNoOriginCredentials) {
  // The origin asks for Basic credentials and gets them; the mirror asks too, and gets
  // nothing: its own auth is anonymous, and the origin's never go to a mirror.
  const auto challenge = [](const stub_request& r) {
    if (!r.header("Authorization")) {
      return stub_response{401, {{"WWW-Authenticate", "Basic realm=\"r\""}}, "{}"};
    }
    return registry_answer(r);
  };
  serve(challenge, {challenge});
  EXPECT_TRUE(read_range(0, 99) == blob_bytes.substr(0, 100));
  for (const auto& r : mirrors_[0]->requests()) {
    EXPECT_FALSE(r.header("Authorization").has_value());
  }
  const auto at_origin = origin_->requests();
  ASSERT_FALSE(at_origin.empty());
  EXPECT_TRUE(at_origin.back().header("Authorization").has_value());
  EXPECT_EQ(mirror_count(0, "fallback", "status"), 1);
}

TEST_F(MirrorDistributionTest, AManifestThatIsNotItsDigestGoesToTheOrigin) {
  serve(registry_answer, {[](const stub_request&) {
          return stub_response{200, {}, R"({"schemaVersion":2,"layers":["lie"]})"};
        }});
  auto got = run<manifest_result>(
      [](upstream_client& c) { return get_manifest(c, repo, by_digest_ref, any_type, 1 << 20); });
  ASSERT_TRUE(std::holds_alternative<manifest_body>(got));
  EXPECT_EQ(std::get<manifest_body>(got).bytes, manifest_bytes);
  EXPECT_EQ(origin_->requests().size(), 1u);
  EXPECT_EQ(mirror_count(0, "fallback", "digest"), 1);
}

TEST_F(MirrorDistributionTest, ARelayedBlobComesFromAMirror) {
  serve(
      [](const stub_request&) {
        return stub_response{500, {}, ""};
      },
      {[](const stub_request&) {
         return stub_response{404, {}, "{}"};
       },
       registry_answer});
  auto got = run<upstream_result>(
      [](upstream_client& c) { return relay_blob(c, repo, blob_digest, false, "bytes=0-9", ""); });
  ASSERT_TRUE(std::holds_alternative<std::unique_ptr<upstream_response>>(got));
  EXPECT_EQ(std::get<std::unique_ptr<upstream_response>>(got)->status(), 206u);
  EXPECT_TRUE(origin_->requests().empty());
}

TEST_F(MirrorDistributionTest, TheOriginOnlyClientAsksNoMirror) {
  serve(registry_answer, {registry_answer});
  client_->set_mirrors(nullptr);  // as mirror_clients::origin_only()
  EXPECT_TRUE(read_range(0, 99) == blob_bytes.substr(0, 100));
  EXPECT_TRUE(mirrors_[0]->requests().empty());
}

}  // namespace
}  // namespace layercache::registry
