// The typed calls of registry/distribution.hpp against an in-process upstream (http_stub) that
// answers each request as a test says: how ranged answers, blob sizes and manifests are read.
#include "registry/distribution.hpp"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <functional>

#include "oci/digest.hpp"
#include "tests/support/http_stub.hpp"
#include "tests/support/run_on.hpp"

namespace layercache::registry {
namespace {

using testing::http_stub;
using testing::stub_request;
using testing::stub_response;

const std::string repo = "team/app";
const std::string tag = "v1";
const std::string any_type = "*/*";
const std::string blob_bytes = [] {
  std::string s;
  for (int i = 0; i < 5000; ++i) s += static_cast<char>('a' + i % 26);
  return s;
}();
const oci::digest blob_digest = oci::digest_of(blob_bytes, oci::digest_algorithm::sha256);

// A client of the stub's upstream, and a way to run one call to its end.
class DistributionTest : public ::testing::Test {
 protected:
  void serve(http_stub::handler h) {
    stub_ = std::make_unique<http_stub>(std::move(h));
    cfg_.name = "stub";
    cfg_.url = stub_->url();
    cfg_.scheme = "http";
    cfg_.host = "127.0.0.1";
    cfg_.port = stub_->port();
    cfg_.retry.attempts = 1;
    creds_ = std::make_unique<upstream_credentials>(cfg_);
    client_ = std::make_unique<upstream_client>(cfg_, pool_, nullptr, tokens_, *creds_, redirects_);
  }

  template <typename T>
  T run(std::function<asio::awaitable<T>(upstream_client&)> call) {
    return testing::run_on<T>(io_, [&] { return call(*client_); });
  }

  // Reads a ranged answer to its end (or error): the bytes by blob offset.
  std::map<std::uint64_t, std::string> read_all(blob_ranges& body, std::uint64_t until) {
    return run<std::map<std::uint64_t, std::string>>(
        [&body, until](upstream_client&) -> asio::awaitable<std::map<std::uint64_t, std::string>> {
          std::map<std::uint64_t, std::string> got;
          std::vector<blob_piece> pieces;
          std::uint64_t seen = 0;
          while (seen < until && co_await body.next(pieces)) {
            for (const auto& p : pieces) {
              got[p.offset] = std::string(p.data, p.size);
              seen = std::max(seen, p.offset + p.size);
            }
          }
          co_return got;
        });
  }

  blob_ranges get_ranges(std::vector<oci::byte_range> ranges, std::uint64_t size) {
    return run<blob_ranges>(
        [&](upstream_client& c) { return get_blob_ranges(c, repo, blob_digest, ranges, size); });
  }

  asio::io_context io_{1};
  connection_pool pool_{io_.get_executor()};
  config::upstream cfg_;
  token_cache tokens_;
  redirect_memory redirects_;
  std::unique_ptr<upstream_credentials> creds_;
  std::unique_ptr<http_stub> stub_;
  std::unique_ptr<upstream_client> client_;
};

stub_response partial(std::uint64_t first, std::uint64_t last, std::uint64_t complete) {
  return stub_response{
      206,
      {{"Content-Range", "bytes " + std::to_string(first) + "-" + std::to_string(last) + "/" +
                             std::to_string(complete)}},
      blob_bytes.substr(first, last - first + 1)};
}

TEST_F(DistributionTest, ABlobSizeIsItsHeadsContentLength) {
  serve([](const stub_request& r) {
    EXPECT_EQ(r.method, "HEAD");
    EXPECT_EQ(r.target, "/v2/team/app/blobs/" + blob_digest.str());
    return stub_response{200, {}, blob_bytes};
  });
  auto got =
      run<blob_size_result>([](upstream_client& c) { return blob_size(c, repo, blob_digest); });
  ASSERT_TRUE(std::holds_alternative<std::uint64_t>(got));
  EXPECT_EQ(std::get<std::uint64_t>(got), blob_bytes.size());
}

TEST_F(DistributionTest, ABlobSizeRefusedIsTheUpstreamsAnswer) {
  serve([](const stub_request&) { return stub_response{404, {}, "{}"}; });
  auto got =
      run<blob_size_result>([](upstream_client& c) { return blob_size(c, repo, blob_digest); });
  ASSERT_TRUE(std::holds_alternative<std::unique_ptr<upstream_response>>(got));
  EXPECT_EQ(std::get<std::unique_ptr<upstream_response>>(got)->status(), 404u);
}

TEST_F(DistributionTest, ARedirectedHeadAsksForTheFirstByteInstead) {
  serve([](const stub_request& r) {
    if (r.target.starts_with("/storage/")) return partial(0, 0, blob_bytes.size());
    if (r.method == "HEAD") return stub_response{307, {{"Location", "/storage/blob"}}, ""};
    EXPECT_EQ(r.header("Range").value_or(""), "bytes=0-0");
    return stub_response{307, {{"Location", "/storage/blob"}}, ""};
  });
  auto got =
      run<blob_size_result>([](upstream_client& c) { return blob_size(c, repo, blob_digest); });
  ASSERT_TRUE(std::holds_alternative<std::uint64_t>(got));
  EXPECT_EQ(std::get<std::uint64_t>(got), blob_bytes.size());
}

TEST_F(DistributionTest, OneRangeIsReadAtItsOffset) {
  serve([](const stub_request& r) {
    EXPECT_EQ(r.header("Range").value_or(""), "bytes=100-1099");
    return partial(100, 1099, blob_bytes.size());
  });
  auto body = get_ranges({{100, 1099}}, blob_bytes.size());
  ASSERT_EQ(body.error(), "");
  auto got = read_all(body, 1100);
  std::string joined;
  std::uint64_t at = 100;
  for (const auto& [offset, bytes] : got) {
    EXPECT_EQ(offset, at);
    joined += bytes;
    at += bytes.size();
  }
  EXPECT_EQ(joined, blob_bytes.substr(100, 1000));
}

TEST_F(DistributionTest, SeveralRangesAreReadFromAMultipartBody) {
  serve([](const stub_request& r) {
    EXPECT_EQ(r.header("Range").value_or(""), "bytes=0-9,4000-4099");
    std::string body;
    for (auto [first, last] : {std::pair<int, int>{0, 9}, {4000, 4099}}) {
      body += "--XYZ\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes " +
              std::to_string(first) + "-" + std::to_string(last) + "/5000\r\n\r\n" +
              blob_bytes.substr(first, last - first + 1) + "\r\n";
    }
    body += "--XYZ--\r\n";
    return stub_response{206, {{"Content-Type", "multipart/byteranges; boundary=XYZ"}}, body};
  });
  auto body = get_ranges({{0, 9}, {4000, 4099}}, blob_bytes.size());
  ASSERT_EQ(body.error(), "");
  auto got = read_all(body, 4100);
  std::string first, second;
  for (const auto& [offset, bytes] : got) (offset < 4000 ? first : second) += bytes;
  EXPECT_EQ(first, blob_bytes.substr(0, 10));
  EXPECT_EQ(second, blob_bytes.substr(4000, 100));
  EXPECT_FALSE(body.several_ranges_refused());
}

TEST_F(DistributionTest, SeveralRangesCoalescedIntoOneAreReadWithTheBytesBetween) {
  serve([](const stub_request&) { return partial(0, 4099, blob_bytes.size()); });
  auto body = get_ranges({{0, 9}, {4000, 4099}}, blob_bytes.size());
  ASSERT_EQ(body.error(), "");
  EXPECT_FALSE(body.several_ranges_refused());
  auto got = read_all(body, 4100);
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got.begin()->first, 0u);
}

TEST_F(DistributionTest, SeveralRangesAnsweredWithOnlyTheFirstMarkTheUpstreamSingleRange) {
  serve([](const stub_request&) { return partial(0, 9, blob_bytes.size()); });
  auto body = get_ranges({{0, 9}, {4000, 4099}}, blob_bytes.size());
  EXPECT_EQ(body.error(), "");  // the first range is still good
  EXPECT_TRUE(body.several_ranges_refused());
}

TEST_F(DistributionTest, SeveralRangesAnsweredWithTheWholeBlobAreNotRead) {
  serve([](const stub_request&) { return stub_response{200, {}, blob_bytes}; });
  auto body = get_ranges({{0, 9}, {4000, 4099}}, blob_bytes.size());
  EXPECT_NE(body.error(), "");
  EXPECT_EQ(body.error_kind(), "status");
  EXPECT_TRUE(body.several_ranges_refused());
  EXPECT_FALSE(body.retries_spent());
}

TEST_F(DistributionTest, OneRangeAnsweredWithTheWholeBlobIsReadFromItsFirstByte) {
  serve([](const stub_request&) { return stub_response{200, {}, blob_bytes}; });
  auto body = get_ranges({{100, 199}}, blob_bytes.size());
  ASSERT_EQ(body.error(), "");
  auto got = read_all(body, 200);
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got.begin()->first, 0u);
}

TEST_F(DistributionTest, AWholeBlobOfAnotherLengthContradictsTheSize) {
  serve([](const stub_request&) { return stub_response{200, {}, blob_bytes}; });
  auto body = get_ranges({{100, 199}}, 9999);
  EXPECT_EQ(body.error_kind(), "length");
  EXPECT_TRUE(body.size_contradicted());
}

TEST_F(DistributionTest, AContentRangeOfAnotherSizeContradictsTheSize) {
  serve([](const stub_request&) { return partial(100, 199, 4000); });
  auto body = get_ranges({{100, 199}}, blob_bytes.size());
  EXPECT_EQ(body.error_kind(), "content_range");
  EXPECT_TRUE(body.size_contradicted());
}

TEST_F(DistributionTest, AContentRangeElsewhereIsRefused) {
  serve([](const stub_request&) { return partial(200, 299, blob_bytes.size()); });
  auto body = get_ranges({{100, 199}}, blob_bytes.size());
  EXPECT_EQ(body.error_kind(), "content_range");
  EXPECT_FALSE(body.size_contradicted());
}

TEST_F(DistributionTest, A416SpendsTheRetriesAndContradictsTheSize) {
  serve([](const stub_request&) {
    return stub_response{416, {{"Content-Range", "bytes */5000"}}, ""};
  });
  auto body = get_ranges({{6000, 6099}}, 7000);
  EXPECT_EQ(body.error_kind(), "status");
  EXPECT_TRUE(body.retries_spent());
  EXPECT_TRUE(body.size_contradicted());
}

TEST_F(DistributionTest, ABodyThatEndsEarlyIsAnError) {
  serve([](const stub_request&) { return partial(0, 99, blob_bytes.size()); });
  auto body = get_ranges({{0, 99}}, blob_bytes.size());
  ASSERT_EQ(body.error(), "");
  (void)read_all(body, 1000);  // wants more than the answer holds
  EXPECT_EQ(body.error(), "upstream body ended early");
}

TEST_F(DistributionTest, AManifestByDigestIsCheckedAgainstIt) {
  const std::string manifest = R"({"schemaVersion":2})";
  const auto d = oci::digest_of(manifest, oci::digest_algorithm::sha256);
  serve([&](const stub_request& r) {
    EXPECT_EQ(r.target, "/v2/team/app/manifests/" + d.str());
    EXPECT_EQ(r.header("Accept").value_or(""), "application/x-test");
    if (r.target.ends_with(d.str())) {
      return stub_response{200, {{"Content-Type", "application/x-test"}}, manifest};
    }
    return stub_response{404, {}, ""};
  });
  const std::string reference = d.str();
  const std::string accept = "application/x-test";
  auto got = run<manifest_result>(
      [&](upstream_client& c) { return get_manifest(c, repo, reference, accept, 1 << 20); });
  ASSERT_TRUE(std::holds_alternative<manifest_body>(got));
  const auto& m = std::get<manifest_body>(got);
  EXPECT_EQ(m.digest, d);
  EXPECT_EQ(m.media_type, "application/x-test");
  EXPECT_EQ(m.bytes, manifest);
}

TEST_F(DistributionTest, AManifestThatIsNotItsDigestIsRefused) {
  const auto d = oci::digest_of("something else", oci::digest_algorithm::sha256);
  serve([](const stub_request&) { return stub_response{200, {}, "{}"}; });
  const std::string reference = d.str();
  auto got = run<manifest_result>(
      [&](upstream_client& c) { return get_manifest(c, repo, reference, any_type, 1 << 20); });
  ASSERT_TRUE(std::holds_alternative<manifest_failure>(got));
  EXPECT_EQ(std::get<manifest_failure>(got).kind, manifest_failure::why::digest_mismatch);
}

TEST_F(DistributionTest, AManifestByTagIsNamedByItsBytesSha256) {
  const std::string manifest = R"({"schemaVersion":2,"tag":true})";
  serve([&](const stub_request&) { return stub_response{200, {}, manifest}; });
  auto got = run<manifest_result>(
      [](upstream_client& c) { return get_manifest(c, repo, tag, any_type, 1 << 20); });
  ASSERT_TRUE(std::holds_alternative<manifest_body>(got));
  EXPECT_EQ(std::get<manifest_body>(got).digest,
            oci::digest_of(manifest, oci::digest_algorithm::sha256));
}

TEST_F(DistributionTest, AManifestLargerThanTheLimitIsRefused) {
  serve([](const stub_request&) { return stub_response{200, {}, std::string(5000, 'x')}; });
  auto got = run<manifest_result>(
      [](upstream_client& c) { return get_manifest(c, repo, tag, any_type, 1000); });
  ASSERT_TRUE(std::holds_alternative<manifest_failure>(got));
  EXPECT_EQ(std::get<manifest_failure>(got).kind, manifest_failure::why::body_too_large);
}

TEST_F(DistributionTest, AManifestRefusedIsTheUpstreamsAnswer) {
  serve([](const stub_request&) { return stub_response{404, {}, "{}"}; });
  auto got = run<manifest_result>(
      [](upstream_client& c) { return get_manifest(c, repo, tag, any_type, 1 << 20); });
  ASSERT_TRUE(std::holds_alternative<std::unique_ptr<upstream_response>>(got));
  EXPECT_EQ(std::get<std::unique_ptr<upstream_response>>(got)->status(), 404u);
}

TEST_F(DistributionTest, AListingCarriesItsQueryEncoded) {
  serve([](const stub_request& r) {
    EXPECT_EQ(r.target, "/v2/team/app/tags/list?n=10&last=a%20b");
    return stub_response{200, {{"Content-Type", "application/json"}}, "{}"};
  });
  const std::vector<std::pair<std::string, std::string>> params{{"n", "10"}, {"last", "a b"}};
  auto got = run<upstream_result>(
      [&](upstream_client& c) { return get_listing(c, repo, "tags/list", params, false); });
  ASSERT_TRUE(std::holds_alternative<std::unique_ptr<upstream_response>>(got));
  EXPECT_EQ(std::get<std::unique_ptr<upstream_response>>(got)->status(), 200u);
}

}  // namespace
}  // namespace layercache::registry
