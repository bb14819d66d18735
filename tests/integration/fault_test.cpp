// The upstream fault matrix: an in-process registry (tests/support/fault_upstream) resets,
// stalls, truncates, lies and refuses on plan, and for each fault this checks what the client
// sees (exact bytes after a retry or resume, or a clean error), that nothing wrong is stored
// (a later read is exact, from upstream again where it must be), and the metric that counts
// it. docs/reliability.md, "Upstream faults", has the table.
#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <chrono>
#include <thread>

#include "oci/digest.hpp"
#include "tests/support/exposition.hpp"
#include "tests/support/fault_upstream.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/image.hpp"
#include "tests/support/layercache_instance.hpp"
#include "tests/support/process.hpp"

namespace layercache::testing {
namespace {

using namespace std::chrono_literals;
constexpr std::size_t KiB = 1024;
constexpr std::size_t MiB = 1024 * KiB;
constexpr std::size_t chunk = 256 * KiB;

constexpr std::string_view image_manifest_type = "application/vnd.oci.image.manifest.v1+json";

// An image manifest listing one layer, `layer` of `size` bytes (its config is never fetched).
std::string manifest_listing(const std::string& layer, std::uint64_t size) {
  return R"({"schemaVersion":2,"mediaType":")" + std::string(image_manifest_type) +
         R"(","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" +
         "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a" +
         R"(","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip",)" +
         R"("digest":")" + layer + R"(","size":)" + std::to_string(size) + "}]}";
}

class FaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    blob_ = random_bytes(3 * MiB + 1234, 4242);
    digest_ = upstream_.add_blob(blob_);
    start();
  }

  // Short deadlines and waits, so stalls and retries are quick; no background fetching, so
  // upstream requests are only the ones a test makes.
  void start(std::string_view retry =
                 "{attempts: 3, backoff: 50ms, max_backoff: 200ms, "
                 "max_retry_after: 5s}",
             std::string_view complete_partial = "false", std::string_view store = "store") {
    proxy_.reset();
    proxy_ = std::make_unique<layercache_instance>(
        "cache:\n  path: " + (dir_.path() / store).string() +
        "\n  chunk_size: 256KiB\n  fetch_size: 1MiB\n  capacity: 1GiB\n  complete_partial: " +
        std::string(complete_partial) +
        "\nprefetch: {eager_layers: never, fetch_published: false}\nupstreams:\n" +
        upstream_yaml("up", upstream_.url(), true,
                      "    timeouts: {connect: 2s, response: 1s, read: 1s}\n    retry: " +
                          std::string(retry) + "\n"));
  }

  std::string blob_url() const { return proxy_->url() + "/v2/lib/app/blobs/" + digest_; }
  http_response get_range(std::uint64_t first, std::uint64_t last) {
    return client_.get(blob_url(),
                       {{"Range", "bytes=" + std::to_string(first) + "-" + std::to_string(last)}});
  }
  std::string slice(std::uint64_t first, std::uint64_t last) const {
    return blob_.substr(first, last - first + 1);
  }

  double metric(std::string_view name, const std::map<std::string, std::string>& labels = {}) {
    return proxy_->metric(name, labels);
  }

  std::size_t blob_gets() const { return upstream_.requests(request_kind::blob_get).size(); }

  // A whole read of the blob that must now come from the store alone, byte-exact.
  void expect_stored_whole() {
    upstream_.clear_requests();
    const auto again = client_.get(blob_url());
    ASSERT_EQ(again.status, 200u);
    EXPECT_TRUE(again.body == blob_) << "a later read differs";
    EXPECT_EQ(blob_gets(), 0u) << "the blob was not kept whole";
  }

  temp_dir dir_;
  fault_upstream upstream_;
  std::string blob_;
  std::string digest_;
  std::unique_ptr<layercache_instance> proxy_;
  http_client client_;
};

TEST_F(FaultTest, ResetMidBodyIsResumedExactly) {
  // A read inside chunk 0 waits on its own fill, which breaks 100 KiB in: the reader has
  // handed out what arrived, and the refill must continue after it, not repeat it.
  upstream_.plan(request_kind::blob_get, fault::reset_after(100 * KiB));
  const auto part = get_range(1000, 200 * KiB);
  ASSERT_EQ(part.status, 206u);
  ASSERT_EQ(part.body.size(), 200 * KiB - 1000 + 1);
  EXPECT_TRUE(part.body == slice(1000, 200 * KiB)) << "bytes differ after a resumed fill";
  EXPECT_EQ(metric("layercache_upstream_fill_failures_total", {{"reason", "transport"}}), 1);
  EXPECT_EQ(blob_gets(), 2u);

  // A whole read whose first fill breaks part-way through a chunk.
  upstream_.plan(request_kind::blob_get, fault::reset_after(2 * chunk + 44 * KiB));
  const auto r = client_.get(blob_url());
  ASSERT_EQ(r.status, 200u);
  ASSERT_EQ(r.body.size(), blob_.size());
  EXPECT_TRUE(r.body == blob_) << "bytes differ after a resumed fill";
  EXPECT_EQ(metric("layercache_upstream_fill_failures_total", {{"reason", "transport"}}), 2);
  expect_stored_whole();
}

TEST_F(FaultTest, TruncatedBodyIsResumedExactly) {
  upstream_.plan(request_kind::blob_get, fault::truncate_after(100 * KiB));
  const auto part = get_range(0, chunk - 1);
  ASSERT_EQ(part.status, 206u);
  EXPECT_TRUE(part.body == slice(0, chunk - 1));
  upstream_.plan(request_kind::blob_get, fault::truncate_after(chunk + 1000));
  const auto r = client_.get(blob_url());
  ASSERT_EQ(r.status, 200u);
  EXPECT_TRUE(r.body == blob_);
  EXPECT_GE(metric("layercache_upstream_fill_failures_total", {{"reason", "transport"}}), 1);
  expect_stored_whole();
}

TEST_F(FaultTest, StallMidBodyHitsTheReadDeadlineAndIsResumed) {
  upstream_.plan(request_kind::blob_get, fault::stall_after(100 * KiB));
  const auto r = get_range(50 * KiB, 700 * KiB);
  ASSERT_EQ(r.status, 206u);
  EXPECT_TRUE(r.body == slice(50 * KiB, 700 * KiB));
  EXPECT_GE(metric("layercache_upstream_fill_failures_total", {{"reason", "transport"}}), 1);
  // The stalled request was given up, and another fetched the range.
  EXPECT_GE(blob_gets(), 2u);
}

TEST_F(FaultTest, StallBeforeHeaderIsRetriedThenACleanGatewayError) {
  // Every try stalls: the client gets a 504 with an OCI error body after `attempts` tries,
  // each bounded by timeouts.response.
  upstream_.plan(request_kind::blob_head, fault::stall_before_header(), 3);
  const auto r = client_.head(blob_url());
  EXPECT_EQ(r.status, 504u);
  EXPECT_EQ(upstream_.requests(request_kind::blob_head).size(), 3u);
  EXPECT_EQ(metric("layercache_upstream_retries_total", {{"reason", "timeout"}}), 2);
  const auto body = client_.get(blob_url());  // the fault is over: served, exact
  ASSERT_EQ(body.status, 200u);
  EXPECT_TRUE(body.body == blob_);
}

TEST_F(FaultTest, ServerErrorsAreRetriedWithBackoff) {
  upstream_.plan(request_kind::blob_get, fault::answer(503), 1);
  upstream_.plan(request_kind::blob_get, fault::answer(500), 1);
  const auto r = get_range(0, 100 * KiB);
  ASSERT_EQ(r.status, 206u);
  EXPECT_TRUE(r.body == slice(0, 100 * KiB));
  const auto gets = upstream_.requests(request_kind::blob_get);
  ASSERT_EQ(gets.size(), 3u);
  // Backoff 50 ms, then 100 ms, each with jitter down to half.
  EXPECT_GE(gets[1].at - gets[0].at, 25ms);
  EXPECT_GE(gets[2].at - gets[1].at, 50ms);
  EXPECT_EQ(gets[0].range, gets[2].range) << "the retry asked for the same bytes";
  EXPECT_EQ(metric("layercache_upstream_retries_total", {{"reason", "5xx"}}), 2);
  EXPECT_EQ(metric("layercache_upstream_fill_failures_total"), 0);
}

TEST_F(FaultTest, PersistentErrorIsA502WithNothingStored) {
  // More failures than tries: the reader's own attempts each get `attempts` tries, all 502.
  upstream_.plan(request_kind::blob_get, fault::answer(502), 100);
  const auto r = get_range(0, 100 * KiB);
  EXPECT_EQ(r.status, 502u) << "a fill that never began is a clean error, not a cut";
  EXPECT_NE(r.body.find("\"errors\""), std::string::npos) << r.body;
  // The upstream client's 3 tries; the reader does not start the same fill again.
  EXPECT_EQ(blob_gets(), 3u);
  EXPECT_GE(metric("layercache_upstream_fill_failures_total", {{"reason", "status"}}), 1);
  upstream_.clear_plans();
  upstream_.clear_requests();
  const auto good = get_range(0, 100 * KiB);
  ASSERT_EQ(good.status, 206u);
  EXPECT_TRUE(good.body == slice(0, 100 * KiB));
  EXPECT_EQ(blob_gets(), 1u);
}

TEST_F(FaultTest, TooManyRequestsHonoursRetryAfter) {
  upstream_.plan(request_kind::blob_head, fault::answer(429, "1"));
  const auto r = client_.head(blob_url());
  ASSERT_EQ(r.status, 200u);
  const auto heads = upstream_.requests(request_kind::blob_head);
  ASSERT_EQ(heads.size(), 2u);
  EXPECT_GE(heads[1].at - heads[0].at, 950ms) << "Retry-After: 1 was not waited for";
  EXPECT_EQ(metric("layercache_upstream_retries_total", {{"reason", "429"}}), 1);
}

TEST_F(FaultTest, RetryAfterBeyondTheLimitGoesToTheClient) {
  upstream_.plan(request_kind::blob_head, fault::answer(429, "3600"));
  const auto r = client_.head(blob_url());
  EXPECT_EQ(r.status, 429u);
  EXPECT_EQ(r.header("Retry-After"), "3600");
  EXPECT_EQ(upstream_.requests(request_kind::blob_head).size(), 1u);
  EXPECT_EQ(metric("layercache_upstream_retries_total"), 0);
}

TEST_F(FaultTest, WrongContentRangeIsRefusedAndRefetched) {
  upstream_.plan(request_kind::blob_get, fault::shifted_range(chunk));
  const auto r = get_range(0, 600 * KiB);
  ASSERT_EQ(r.status, 206u);
  EXPECT_TRUE(r.body == slice(0, 600 * KiB)) << "bytes of another range were served";
  EXPECT_GE(metric("layercache_upstream_fill_failures_total", {{"reason", "content_range"}}), 1);
  upstream_.clear_requests();
  const auto again = get_range(0, 600 * KiB);
  EXPECT_TRUE(again.body == slice(0, 600 * KiB));
  EXPECT_EQ(blob_gets(), 0u) << "the refetched chunks were not kept";
}

TEST_F(FaultTest, WrongContentRangeEveryTimeStoresNothing) {
  upstream_.plan(request_kind::blob_get, fault::shifted_range(chunk), 100);
  const auto r = get_range(0, 600 * KiB);
  EXPECT_EQ(r.status, 502u);
  upstream_.clear_plans();
  upstream_.clear_requests();
  const auto good = get_range(0, 600 * KiB);
  ASSERT_EQ(good.status, 206u);
  EXPECT_TRUE(good.body == slice(0, 600 * KiB));
  EXPECT_GE(blob_gets(), 1u) << "something of the wrong answers was stored";
}

TEST_F(FaultTest, WrongBytesOnAWholeReadAreCutAndNotKept) {
  // The read's fills ask for 1 MiB ranges in no fixed order: each gets the fault, and only the
  // one covering the offset is changed.
  upstream_.plan(request_kind::blob_get, fault::corrupt_at(2 * MiB + 5), 4);
  bool cut = false;
  try {
    const auto r = client_.get(blob_url());
    cut = r.status != 200 || r.body.size() < blob_.size();
    EXPECT_FALSE(r.body == blob_);
  } catch (const std::exception&) {
    cut = true;
  }
  EXPECT_TRUE(cut) << "a blob that fails its digest was delivered whole";
  EXPECT_EQ(metric("layercache_digest_failures_total"), 1);
  upstream_.clear_plans();
  upstream_.clear_requests();
  const auto good = client_.get(blob_url());
  ASSERT_EQ(good.status, 200u);
  EXPECT_TRUE(good.body == blob_);
  EXPECT_GE(blob_gets(), 1u) << "the lying bytes were served from the store";
  expect_stored_whole();
}

TEST_F(FaultTest, WrongBytesOnARangeReadArePurgedByTheBackgroundCheck) {
  // A range read cannot be checked against the digest before it is served; the background
  // completion of the blob checks the whole, finds the lie and drops every chunk of it.
  start("{attempts: 3, backoff: 50ms, max_backoff: 200ms, max_retry_after: 5s}", "true");
  upstream_.plan(request_kind::blob_get, fault::corrupt_at(10 * KiB));
  const auto lied = get_range(0, 100 * KiB);
  ASSERT_EQ(lied.status, 206u);
  EXPECT_FALSE(lied.body == slice(0, 100 * KiB)) << "the fault was not applied";
  for (int i = 0; i < 100 && metric("layercache_digest_failures_total") < 1; ++i) {
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_EQ(metric("layercache_digest_failures_total"), 1) << "the lie was not found";
  upstream_.clear_requests();
  const auto good = get_range(0, 100 * KiB);
  ASSERT_EQ(good.status, 206u);
  EXPECT_TRUE(good.body == slice(0, 100 * KiB)) << "the lying chunk is still served";
  EXPECT_GE(blob_gets(), 1u);
}

TEST_F(FaultTest, ThrottledUpstreamIsServedExactly) {
  upstream_.plan(request_kind::blob_get, fault::throttle(2 * MiB), 100);
  const auto r = get_range(chunk - 7, 3 * chunk + 7);
  ASSERT_EQ(r.status, 206u);
  EXPECT_TRUE(r.body == slice(chunk - 7, 3 * chunk + 7));
  EXPECT_EQ(metric("layercache_upstream_fill_failures_total"), 0);
}

TEST_F(FaultTest, ConcurrentReadersOfAResetFillAllGetExactBytes) {
  // One fill shared by several readers breaks; each reader resumes at its own position.
  upstream_.plan(request_kind::blob_get, fault::reset_after(chunk + 3 * KiB), 2);
  std::vector<std::thread> threads;
  std::atomic<int> exact{0};
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      http_client c;
      const std::uint64_t first = static_cast<std::uint64_t>(i) * 37 * KiB;
      const auto r = c.get(blob_url(), {{"Range", "bytes=" + std::to_string(first) + "-"}});
      if (r.status == 206 && r.body == blob_.substr(first)) ++exact;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(exact.load(), 4);
  expect_stored_whole();
}

TEST_F(FaultTest, CorruptedChunkOnDiskIsDetectedAndRefetched) {
  ASSERT_TRUE(client_.get(blob_url()).body == blob_);
  proxy_.reset();  // flushes the store
  // Flip one byte of chunk 3 as a bad disk would (value: CRC-32C, then the chunk's bytes).
  {
    const auto store = (dir_.path() / "store").string();
    std::vector<std::string> names;
    ASSERT_TRUE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), store, &names).ok());
    std::vector<rocksdb::ColumnFamilyDescriptor> families;
    for (const auto& n : names) families.emplace_back(n, rocksdb::ColumnFamilyOptions());
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    rocksdb::DBOptions options;
    options.atomic_flush = true;
    ASSERT_TRUE(rocksdb::DB::Open(options, store, families, &handles, &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    rocksdb::ColumnFamilyHandle* chunks = nullptr;
    for (std::size_t i = 0; i < names.size(); ++i) {
      if (names[i] == "chunks") chunks = handles[i];
    }
    ASSERT_NE(chunks, nullptr);
    std::string key = oci::digest::parse(digest_)->raw();
    key.append("\0\0\0\3", 4);
    std::string value;
    ASSERT_TRUE(db->Get(rocksdb::ReadOptions(), chunks, key, &value).ok());
    ASSERT_EQ(value.size(), 4 + chunk);
    value[4 + 777] = static_cast<char>(value[4 + 777] ^ 0x20);
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), chunks, key, value).ok());
    for (auto* h : handles) ASSERT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
    ASSERT_TRUE(db->Close().ok());
  }
  start();
  upstream_.clear_requests();
  const auto r = client_.get(blob_url());
  ASSERT_EQ(r.status, 200u);
  EXPECT_TRUE(r.body == blob_) << "a corrupted chunk was served";
  const auto gets = upstream_.requests(request_kind::blob_get);
  ASSERT_EQ(gets.size(), 1u) << "only the corrupted chunk is fetched again";
  EXPECT_EQ(gets[0].range,
            "bytes=" + std::to_string(3 * chunk) + "-" + std::to_string(4 * chunk - 1));
  EXPECT_EQ(metric("layercache_cache_corrupt_chunks_total"), 1);
  expect_stored_whole();
}

TEST_F(FaultTest, ManifestFaultsAreRetriedOrCleanErrorsAndNeverStored) {
  const std::string manifest =
      R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",)"
      R"("config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" +
      digest_ + R"(","size":)" + std::to_string(blob_.size()) + R"(},"layers":[]})";
  const std::string type = "application/vnd.oci.image.manifest.v1+json";
  const auto digest = upstream_.add_manifest("v1", type, manifest);
  const std::string url = proxy_->url() + "/v2/lib/app/manifests/v1";
  const header_list accept{{"Accept", type}};

  // 503 then a reset before the header: both retried, the third try answers.
  upstream_.plan(request_kind::manifest, fault::answer(503));
  upstream_.plan(request_kind::manifest, fault::stall_before_header());
  auto r = client_.get(url, accept);
  ASSERT_EQ(r.status, 200u);
  EXPECT_EQ(r.body, manifest);
  EXPECT_EQ(upstream_.requests(request_kind::manifest).size(), 3u);

  // Another manifest, asked for by digest (never fetched before). A body cut short is asked
  // for again; cut short twice, a clean 502, and the half manifest is not kept.
  const std::string other = manifest.substr(0, manifest.size() - 1) + R"(,"annotations":{}})";
  const auto other_digest = upstream_.add_manifest("v2", type, other);
  const std::string by_digest = proxy_->url() + "/v2/lib/app/manifests/" + other_digest;
  upstream_.plan(request_kind::manifest, fault::reset_after(other.size() / 2));
  r = client_.get(by_digest, accept);
  ASSERT_EQ(r.status, 200u);
  EXPECT_EQ(r.body, other);
  EXPECT_EQ(metric("layercache_upstream_retries_total", {{"reason", "transport"}}), 1);
  const std::string third =
      manifest.substr(0, manifest.size() - 1) + R"(,"annotations":{"a":"b"}})";
  const std::string by_digest3 =
      proxy_->url() + "/v2/lib/app/manifests/" + upstream_.add_manifest("v3", type, third);
  upstream_.plan(request_kind::manifest, fault::truncate_after(third.size() / 2), 2);
  r = client_.get(by_digest3, accept);
  EXPECT_EQ(r.status, 502u);
  EXPECT_NE(r.body.find("\"errors\""), std::string::npos) << r.body;
  // Lying bytes by digest: refused, counted, not kept.
  upstream_.plan(request_kind::manifest, fault::corrupt_at(10));
  r = client_.get(by_digest3, accept);
  EXPECT_EQ(r.status, 502u);
  EXPECT_EQ(metric("layercache_digest_failures_total", {{"kind", "manifest"}}), 1);
  upstream_.clear_requests();
  r = client_.get(by_digest3, accept);
  ASSERT_EQ(r.status, 200u);
  EXPECT_EQ(r.body, third);
  EXPECT_EQ(upstream_.requests(request_kind::manifest).size(), 1u);
  // And the first one, by digest, comes from the store.
  upstream_.clear_requests();
  r = client_.get(proxy_->url() + "/v2/lib/app/manifests/" + digest, accept);
  ASSERT_EQ(r.status, 200u);
  EXPECT_EQ(r.body, manifest);
  EXPECT_EQ(upstream_.requests(request_kind::manifest).size(), 0u);
}

// Each step of a cold pull — the manifest by tag, then the blob's range GETs (its size
// learnt from the manifest) — fails once in turn, as Beast's tests make each step of an
// operation fail (test::fail_count), with each kind of fault: the client never sees it (the
// upstream client's retries and the fills' resumes absorb one fault anywhere), gets exact
// bytes, and the store holds the blob whole and verified afterwards.
TEST_F(FaultTest, EachStepOfAColdPullFailsOnceInTurn) {
  const std::string type(image_manifest_type);
  const std::string manifest = manifest_listing(digest_, blob_.size());
  upstream_.add_manifest("v1", type, manifest);
  const std::vector<std::pair<std::string, fault>> faults{
      {"503", fault::answer(503)},
      {"reset mid-body", fault::reset_after(100)},
      {"truncated body", fault::truncate_after(100)},
      {"no header", fault::stall_before_header()},
  };
  unsigned run = 0;
  for (const auto& [name, f] : faults) {
    unsigned steps = 0;
    for (unsigned step = 0; step < 20; ++step) {  // a cold pull here is 5 upstream requests
      start("{attempts: 3, backoff: 50ms, max_backoff: 200ms, max_retry_after: 5s}", "false",
            "store-" + std::to_string(run++));
      upstream_.clear_plans();
      upstream_.clear_requests();
      upstream_.plan(request_kind::any, fault{}, step);  // the steps before: answered as usual
      upstream_.plan(request_kind::any, f);
      const auto before = upstream_.applied()[f.what];
      const auto m = client_.get(proxy_->url() + "/v2/lib/app/manifests/v1", {{"Accept", type}});
      ASSERT_EQ(m.status, 200u) << name << " at step " << step;
      EXPECT_EQ(m.body, manifest) << name << " at step " << step;
      const auto b = client_.get(blob_url());
      ASSERT_EQ(b.status, 200u) << name << " at step " << step;
      EXPECT_TRUE(b.body == blob_) << name << " at step " << step << ": the bytes differ";
      if (upstream_.applied()[f.what] == before) break;  // the pull had fewer steps
      ++steps;
      expect_stored_whole();
    }
    EXPECT_GE(steps, 4u) << name << ": the manifest and the blob's runs each failed once";
  }
}

TEST_F(FaultTest, RedirectToAnotherHostGetsNoCredentials) {
  // The upstream wants Basic credentials from layercache; its blob GETs redirect to a storage
  // host, which must see no Authorization.
  fault_upstream storage;
  storage.add_blob(blob_);
  temp_dir secrets;
  write_file(secrets.path() / "password", "s3cret\n");
  proxy_.reset();
  proxy_ = std::make_unique<layercache_instance>(
      "cache:\n  path: " + (dir_.path() / "store2").string() +
      "\nprefetch: {eager_layers: never, fetch_published: false}\nupstreams:\n" +
      upstream_yaml("up", upstream_.url(), true,
                    "    auth: {type: basic, username: alice, password_file: " +
                        (secrets.path() / "password").string() + "}\n"));
  upstream_.require_basic("alice", "s3cret");
  upstream_.plan(request_kind::blob_get,
                 fault::redirect_to(storage.url() + "/v2/lib/app/blobs/" + digest_ + "?sig=x"),
                 100);
  const auto r = client_.get(blob_url());
  ASSERT_EQ(r.status, 200u);
  EXPECT_TRUE(r.body == blob_);
  const auto at_storage = storage.requests(request_kind::blob_get);
  ASSERT_FALSE(at_storage.empty());
  bool upstream_saw_credentials = false;
  for (const auto& q : upstream_.requests(request_kind::blob_get)) {
    upstream_saw_credentials |= q.authorization.has_value();
  }
  EXPECT_TRUE(upstream_saw_credentials) << "the test's upstream never asked for credentials";
  for (const auto& q : at_storage) {
    EXPECT_FALSE(q.authorization.has_value()) << "credentials went to the redirect target";
    EXPECT_NE(q.target.find("sig=x"), std::string::npos);
  }
}

// A blob GET goes straight to where the blob was redirected before. When that place refuses
// (an expired signature: 403) or fails, the upstream is asked again and the client never sees
// it; the new place is remembered in turn.
TEST_F(FaultTest, AStaleRedirectAsksTheUpstreamAgain) {
  fault_upstream storage;
  storage.add_blob(blob_);
  upstream_.plan(request_kind::blob_get,
                 fault::redirect_to(storage.url() + "/v2/lib/app/blobs/" + digest_ + "?sig=1"),
                 100);
  auto r = get_range(0, 999);  // chunk 0: the upstream redirects, the storage host serves
  ASSERT_EQ(r.status, 206u);
  EXPECT_TRUE(r.body == slice(0, 999));
  EXPECT_EQ(blob_gets(), 1u);
  EXPECT_EQ(storage.requests(request_kind::blob_get).size(), 1u);

  r = get_range(chunk, chunk + 999);  // chunk 1: straight to the storage host
  ASSERT_EQ(r.status, 206u);
  EXPECT_TRUE(r.body == slice(chunk, chunk + 999));
  EXPECT_EQ(blob_gets(), 1u) << "the upstream was asked again for a remembered redirect";
  EXPECT_EQ(storage.requests(request_kind::blob_get).size(), 2u);
  EXPECT_EQ(metric("layercache_upstream_redirects_total", {{"outcome", "reused"}}), 1);

  // The signature expires: the storage host refuses the remembered place once.
  storage.plan(request_kind::blob_get, fault::answer(403));
  r = get_range(2 * chunk, 2 * chunk + 999);
  ASSERT_EQ(r.status, 206u);
  EXPECT_TRUE(r.body == slice(2 * chunk, 2 * chunk + 999));
  EXPECT_EQ(blob_gets(), 2u);
  EXPECT_EQ(storage.requests(request_kind::blob_get).size(), 4u);  // refused, then served
  EXPECT_EQ(metric("layercache_upstream_redirects_total", {{"outcome", "stale"}}), 1);
  EXPECT_EQ(metric("layercache_upstream_redirects_total", {{"outcome", "followed"}}), 2);
  EXPECT_EQ(metric("layercache_upstream_fill_failures_total"), 0);

  // A storage host that went away: the upstream again, with no error for the client.
  upstream_.clear_plans();  // the upstream now serves the blob itself
  storage.plan(request_kind::blob_get, fault::answer(503));
  r = get_range(3 * chunk, 3 * chunk + 999);
  ASSERT_EQ(r.status, 206u);
  EXPECT_TRUE(r.body == slice(3 * chunk, 3 * chunk + 999));
  EXPECT_EQ(blob_gets(), 3u);
  EXPECT_EQ(metric("layercache_upstream_redirects_total", {{"outcome", "stale"}}), 2);
  // It served the blob without a redirect: nothing is remembered, so the next fill asks it.
  r = get_range(4 * chunk, 4 * chunk + 999);
  ASSERT_EQ(r.status, 206u);
  EXPECT_EQ(blob_gets(), 4u);
  EXPECT_EQ(storage.requests(request_kind::blob_get).size(), 5u);
}

// A manifest served tells the sizes of the blobs it lists: the client's GETs that follow need
// no upstream HEAD first. A size the upstream contradicts is forgotten: that read fails
// cleanly, and the next one asks with a HEAD and is exact.
TEST_F(FaultTest, BlobSizesFromAServedManifestSpareTheHead) {
  const std::string type(image_manifest_type);
  const header_list accept{{"Accept", type}};
  upstream_.add_manifest("v1", type, manifest_listing(digest_, blob_.size()));
  auto m = client_.get(proxy_->url() + "/v2/lib/app/manifests/v1", accept);
  ASSERT_EQ(m.status, 200u);
  auto r = get_range(chunk + 5, chunk + 5004);
  ASSERT_EQ(r.status, 206u);
  EXPECT_TRUE(r.body == slice(chunk + 5, chunk + 5004));
  EXPECT_EQ(upstream_.requests(request_kind::blob_head).size(), 0u) << "the size was asked for";
  EXPECT_EQ(r.header("Content-Range"), "bytes " + std::to_string(chunk + 5) + "-" +
                                           std::to_string(chunk + 5004) + "/" +
                                           std::to_string(blob_.size()));

  // Another blob, listed with a wrong size by another manifest.
  const std::string other = random_bytes(MiB + 77, 99);
  const std::string other_digest = upstream_.add_blob(other);
  upstream_.add_manifest("v2", type, manifest_listing(other_digest, other.size() + 4096));
  m = client_.get(proxy_->url() + "/v2/lib/app/manifests/v2", accept);
  ASSERT_EQ(m.status, 200u);
  const std::string other_url = proxy_->url() + "/v2/lib/app/blobs/" + other_digest;
  r = client_.get(other_url, {{"Range", "bytes=0-999"}});
  EXPECT_EQ(r.status, 502u) << "a read with the manifest's wrong size";
  EXPECT_EQ(upstream_.requests(request_kind::blob_head).size(), 0u);
  r = client_.get(other_url, {{"Range", "bytes=0-999"}});
  ASSERT_EQ(r.status, 206u);
  EXPECT_TRUE(r.body == other.substr(0, 1000));
  EXPECT_EQ(upstream_.requests(request_kind::blob_head).size(), 1u);
  r = client_.get(other_url);
  ASSERT_EQ(r.status, 200u);
  EXPECT_TRUE(r.body == other);
}

// Without prefetch the sizes a served manifest lists are learnt all the same.
TEST_F(FaultTest, BlobSizesAreLearntWithPrefetchOff) {
  proxy_.reset();
  proxy_ = std::make_unique<layercache_instance>(
      "cache:\n  path: " + (dir_.path() / "store-np").string() +
      "\n  chunk_size: 256KiB\n  complete_partial: false\nprefetch: {enabled: false}\n"
      "upstreams:\n" +
      upstream_yaml("up", upstream_.url(), true));
  const std::string type(image_manifest_type);
  upstream_.add_manifest("v1", type, manifest_listing(digest_, blob_.size()));
  const auto m = client_.get(proxy_->url() + "/v2/lib/app/manifests/v1", {{"Accept", type}});
  ASSERT_EQ(m.status, 200u);
  const auto r = get_range(10, 1009);
  ASSERT_EQ(r.status, 206u);
  EXPECT_TRUE(r.body == slice(10, 1009));
  EXPECT_EQ(upstream_.requests(request_kind::blob_head).size(), 0u);
}

// A herd of readers on a blob nobody described yet: one upstream HEAD (slowed here so that
// every reader arrives while it runs; under the 1 s response timeout), the others wait for its
// answer; every read is exact.
TEST_F(FaultTest, AHerdOnAColdBlobSendsOneHead) {
  upstream_.plan(request_kind::blob_head, fault::delay_ms(600));
  constexpr int readers = 16;
  std::vector<http_response> got(readers);
  std::vector<std::thread> threads;
  for (int i = 0; i < readers; ++i) {
    threads.emplace_back([&, i] {
      http_client c;
      const std::uint64_t at = (i % 4) * chunk + 7;
      got[i] = c.get(blob_url(),
                     {{"Range", "bytes=" + std::to_string(at) + "-" + std::to_string(at + 999)}});
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < readers; ++i) {
    const std::uint64_t at = (i % 4) * chunk + 7;
    ASSERT_EQ(got[i].status, 206u) << i;
    EXPECT_TRUE(got[i].body == slice(at, at + 999)) << i;
  }
  EXPECT_EQ(upstream_.requests(request_kind::blob_head).size(), 1u);
}

}  // namespace
}  // namespace layercache::testing
