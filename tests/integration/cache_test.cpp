// layercache with its chunk store in front of a real docker-registry whose blob GETs are
// redirected to an in-process file server: the file server records every byte range the
// proxy fetches, so "each chunk fetched once" is counted at the upstream itself.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <fstream>
#include <random>
#include <thread>

#include "tests/support/file_server.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/image.hpp"
#include "tests/support/layercache_instance.hpp"
#include "tests/support/process.hpp"
#include "tests/support/registry.hpp"

namespace layercache::testing {
namespace {

constexpr std::size_t KiB = 1024;
constexpr std::size_t MiB = 1024 * KiB;

// Byte ranges the storage host served for GETs, as [first, last] pairs. Not the size probes:
// the registry redirects blob HEADs to storage too, and layercache follows no HEAD redirect
// (issue 25), so it learns a blob's size from a GET of its first byte.
std::vector<std::pair<std::uint64_t, std::uint64_t>> fetched_ranges(const file_server& fs,
                                                                    std::uint64_t size) {
  std::vector<std::pair<std::uint64_t, std::uint64_t>> out;
  for (const auto& r : fs.requests()) {
    if (r.method != "GET" || r.header("Range") == "bytes=0-0") continue;
    const auto range = r.header("Range");
    if (!range) {
      out.emplace_back(0, size - 1);
      continue;
    }
    std::uint64_t a = 0, b = 0;
    EXPECT_EQ(std::sscanf(range->c_str(), "bytes=%lu-%lu", &a, &b), 2) << *range;
    out.emplace_back(a, b);
  }
  return out;
}

// How many times each byte of [0, size) was fetched upstream, summarised.
struct coverage {
  std::uint64_t never = 0, once = 0, more = 0;
};
coverage count_coverage(const std::vector<std::pair<std::uint64_t, std::uint64_t>>& ranges,
                        std::uint64_t size) {
  std::vector<std::uint8_t> hits(size, 0);
  for (auto [a, b] : ranges) {
    for (auto i = a; i <= b && i < size; ++i)
      hits[i] = static_cast<std::uint8_t>(std::min(hits[i] + 1, 2));
  }
  coverage c;
  for (auto h : hits) (h == 0 ? c.never : h == 1 ? c.once : c.more)++;
  return c;
}

// Splits a multipart/byteranges body into (Content-Range, bytes) parts.
std::vector<std::pair<std::string, std::string>> parse_multipart(const std::string& body,
                                                                 const std::string& boundary) {
  std::vector<std::pair<std::string, std::string>> parts;
  const std::string delimiter = "--" + boundary;
  std::size_t pos = body.find(delimiter);
  while (pos != std::string::npos) {
    pos += delimiter.size();
    if (body.compare(pos, 2, "--") == 0) break;
    const auto headers_end = body.find("\r\n\r\n", pos);
    if (headers_end == std::string::npos) break;
    const std::string headers = body.substr(pos, headers_end - pos);
    const auto cr = headers.find("Content-Range: ");
    const std::string content_range =
        cr == std::string::npos ? "" : headers.substr(cr + 15, headers.find("\r\n", cr) - cr - 15);
    const auto data_start = headers_end + 4;
    const auto next = body.find("\r\n" + delimiter, data_start);
    if (next == std::string::npos) break;
    parts.emplace_back(content_range, body.substr(data_start, next - data_start));
    pos = next + 2;
  }
  return parts;
}

// GETs of blob `d` the registry answered, from its access log.
std::size_t registry_blob_gets(const registry_process& registry, const oci::digest& d) {
  const std::string log = registry.log();
  const std::string needle = "\"GET /v2/";
  std::size_t count = 0;
  for (auto at = log.find(needle); at != std::string::npos; at = log.find(needle, at + 1)) {
    const auto line_end = log.find('"', at + 1);  // the request line ends the quote
    if (line_end == std::string::npos) break;
    const std::string_view request(log.data() + at, line_end - at);
    if (request.find("/blobs/" + d.str()) != std::string_view::npos) ++count;
  }
  return count;
}

class CacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    storage_host_ = std::make_unique<file_server>(storage_.path());
    upstream_ = std::make_unique<registry_process>(registry_options{
        .redirect_base_url = storage_host_->url(), .storage_dir = storage_.path()});
    img_ = std::make_unique<image>(make_image(image_format::oci, {5 * MiB + 12345, 700 * KiB}, 11));
    registry_pusher(upstream_->url()).push_image("c/app", "v1", *img_);
    storage_host_->clear_requests();
    start_proxy();
  }

  // `cache_extra`: more lines of the cache section.
  void start_proxy(const std::string& cache_extra = {}) {
    proxy_.reset();
    proxy_ = std::make_unique<layercache_instance>(
        "cache:\n  path: " + (cache_dir_.path() / "store").string() +
        "\n  chunk_size: 256KiB\n  capacity: 1GiB\n" + cache_extra + "upstreams:\n" +
        upstream_yaml("up", upstream_->url(), true));
  }

  std::string blob_url(const blob& b) const {
    return proxy_->url() + "/v2/c/app/blobs/" + b.digest.str();
  }

  temp_dir storage_;
  temp_dir cache_dir_;
  std::unique_ptr<file_server> storage_host_;
  std::unique_ptr<registry_process> upstream_;
  std::unique_ptr<image> img_;
  std::unique_ptr<layercache_instance> proxy_;
  http_client client_;
};

TEST_F(CacheTest, WholeBlobColdThenWarmThenAfterRestart) {
  const auto& layer = img_->layers[0];
  auto cold = client_.get(blob_url(layer));
  ASSERT_EQ(cold.status, 200u);
  ASSERT_TRUE(cold.body == layer.data);
  EXPECT_EQ(cold.header("Docker-Content-Digest"), layer.digest.str());
  const auto c =
      count_coverage(fetched_ranges(*storage_host_, layer.data.size()), layer.data.size());
  EXPECT_EQ(c.never, 0u);
  EXPECT_EQ(c.more, 0u) << "some bytes were fetched upstream twice";

  storage_host_->clear_requests();
  auto warm = client_.get(blob_url(layer));
  ASSERT_EQ(warm.status, 200u);
  EXPECT_TRUE(warm.body == layer.data);
  auto head = client_.head(blob_url(layer));
  EXPECT_EQ(head.header("Content-Length"), std::to_string(layer.data.size()));
  EXPECT_TRUE(storage_host_->requests().empty()) << "a warm read went upstream";

  start_proxy();  // a restart keeps the store
  auto after = client_.get(blob_url(layer));
  ASSERT_EQ(after.status, 200u);
  EXPECT_TRUE(after.body == layer.data);
  EXPECT_TRUE(storage_host_->requests().empty()) << "a read after restart went upstream";
}

TEST_F(CacheTest, AFullReadLeavesTheBlobStoredAndVerified) {
  // Chunk writes run behind the bytes sent; the blob is marked verified once they are stored
  // (the client may have its last byte a moment before), and the mark sticks.
  std::vector<const blob*> blobs = {&img_->config};
  for (const auto& l : img_->layers) blobs.push_back(&l);
  const std::string admin =
      "http://127.0.0.1:" + std::to_string(proxy_->srv().admin_port()) + "/admin/blobs";
  auto state_of = [&](const blob& b) -> std::pair<bool, std::uint64_t> {
    const auto listed = client_.get(admin);
    EXPECT_EQ(listed.status, 200u);
    const auto doc = boost::json::parse(listed.body);
    for (const auto& e : doc.at("blobs").as_array()) {
      if (e.at("digest").as_string() != b.digest.str()) continue;
      return {e.at("verified").as_bool(), e.at("stored_bytes").to_number<std::uint64_t>()};
    }
    return {false, 0};
  };
  for (const auto* b : blobs) {
    const auto r = client_.get(blob_url(*b));
    ASSERT_EQ(r.status, 200u);
    ASSERT_TRUE(r.body == b->data);
    std::pair<bool, std::uint64_t> state{false, 0};
    for (int i = 0; i < 100 && !state.first; ++i) {  // at most 5 s
      state = state_of(*b);
      if (!state.first) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_TRUE(state.first) << b->digest.str() << " was never marked verified";
    EXPECT_EQ(state.second, b->data.size()) << b->digest.str();
  }
}

// Ranges per round of RandomRangesColdAndWarmAreExact: RANDOM_RANGES, else 150 (the sanitized
// runs take 50: scripts/sanitize.sh; every kind of range still comes a dozen times a round).
int ranges_from_env() { return count_from_env("RANDOM_RANGES", 150); }

TEST_F(CacheTest, RandomRangesColdAndWarmAreExact) {
  const auto& layer = img_->layers[0];
  const std::string& data = layer.data;
  const std::uint64_t size = data.size();
  std::mt19937_64 rng(1234);
  auto pick = [&](std::uint64_t n) {
    return std::uniform_int_distribution<std::uint64_t>(0, n - 1)(rng);
  };
  for (int round = 0; round < 2; ++round) {  // cold, then warm
    for (int i = 0, n = ranges_from_env(); i < n; ++i) {
      std::string spec;
      std::string expected;
      const int kind = static_cast<int>(pick(4));
      if (kind == 0) {  // bounded
        const auto a = pick(size);
        const auto b = std::min(size - 1, a + pick(600 * KiB));
        spec = std::to_string(a) + "-" + std::to_string(b);
        expected = data.substr(a, b - a + 1);
      } else if (kind == 1) {  // open-ended
        const auto a = pick(size);
        spec = std::to_string(a) + "-";
        expected = data.substr(a);
      } else if (kind == 2) {  // suffix
        const auto n = 1 + pick(400 * KiB);
        spec = "-" + std::to_string(n);
        expected = data.substr(size - std::min(n, size));
      } else {  // multi-range
        const auto a = pick(size / 2);
        const auto b = a + pick(50 * KiB);
        const auto c = size / 2 + pick(size / 2 - 10);
        const auto d = std::min(size - 1, c + pick(50 * KiB));
        spec = std::to_string(a) + "-" + std::to_string(b) + "," + std::to_string(c) + "-" +
               std::to_string(d);
      }
      SCOPED_TRACE("round " + std::to_string(round) + " bytes=" + spec);
      auto r = client_.get(blob_url(layer), {{"Range", "bytes=" + spec}});
      ASSERT_EQ(r.status, 206u);
      if (kind != 3) {
        ASSERT_TRUE(r.body == expected);
        continue;
      }
      const auto ct = r.header("Content-Type").value_or("");
      const auto at = ct.find("boundary=");
      ASSERT_NE(at, std::string::npos) << ct;
      const auto parts = parse_multipart(r.body, ct.substr(at + 9));
      ASSERT_EQ(parts.size(), 2u);
      for (const auto& [content_range, bytes] : parts) {
        std::uint64_t a = 0, b = 0, total = 0;
        ASSERT_EQ(std::sscanf(content_range.c_str(), "bytes %lu-%lu/%lu", &a, &b, &total), 3);
        EXPECT_EQ(total, size);
        EXPECT_TRUE(bytes == data.substr(a, b - a + 1));
      }
    }
    if (round == 0) storage_host_->clear_requests();
  }
  const auto warm = fetched_ranges(*storage_host_, size);
  // Warm round: only what the cold round never touched may have been fetched; nothing twice.
  const auto c = count_coverage(warm, size);
  EXPECT_EQ(c.more, 0u);
}

TEST_F(CacheTest, UnsatisfiableAndIgnoredRanges) {
  const auto& layer = img_->layers[1];
  const auto size = std::to_string(layer.data.size());
  auto past = client_.get(blob_url(layer), {{"Range", "bytes=" + size + "-"}});
  EXPECT_EQ(past.status, 416u);
  EXPECT_EQ(past.header("Content-Range"), "bytes */" + size);
  auto malformed = client_.get(blob_url(layer), {{"Range", "bytes=abc"}});
  EXPECT_EQ(malformed.status, 200u);
  EXPECT_FALSE(malformed.header("Content-Range").has_value());
  EXPECT_TRUE(malformed.body == layer.data);
  auto other_etag = client_.get(blob_url(layer), {{"Range", "bytes=0-9"}, {"If-Range", "\"x\""}});
  EXPECT_EQ(other_etag.status, 200u);
  auto same_etag = client_.get(
      blob_url(layer), {{"Range", "bytes=0-9"}, {"If-Range", "\"" + layer.digest.str() + "\""}});
  EXPECT_EQ(same_etag.status, 206u);
  EXPECT_EQ(same_etag.body, layer.data.substr(0, 10));
  std::string many = "bytes=0-0";
  for (int i = 1; i < 1100; ++i) many += "," + std::to_string(i) + "-" + std::to_string(i);
  EXPECT_EQ(client_.get(blob_url(layer), {{"Range", many}}).status, 416u);  // > 1024 ranges
  for (int i = 1100; i < 3000; ++i) many += "," + std::to_string(i) + "-" + std::to_string(i);
  EXPECT_EQ(client_.get(blob_url(layer), {{"Range", many}}).status, 431u);  // header too large
}

TEST_F(CacheTest, RangeReadBlobIsCompletedInTheBackground) {
  const auto& layer = img_->layers[0];
  const std::uint64_t size = layer.data.size();
  auto r = client_.get(blob_url(layer), {{"Range", "bytes=100-199"}});
  ASSERT_EQ(r.status, 206u);
  EXPECT_EQ(r.body, layer.data.substr(100, 100));
  // The rest arrives without another client request: poll the upstream's record (bounded).
  coverage c;
  for (int i = 0; i < 400; ++i) {
    c = count_coverage(fetched_ranges(*storage_host_, size), size);
    if (c.never == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(c.never, 0u) << "the blob was not completed";
  EXPECT_EQ(c.more, 0u);
  // Complete and verified: a full read is served from the store.
  for (int i = 0; i < 100; ++i) {  // the last chunk's store write may still be landing
    storage_host_->clear_requests();
    auto whole = client_.get(blob_url(layer));
    ASSERT_TRUE(whole.body == layer.data);
    if (storage_host_->requests().empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(storage_host_->requests().empty());
}

// Clients only: no background completion after the range reads. A client's read that joins a
// completion's chunk it has not begun receiving takes it over with a request of its own
// (demand first, BlobSourceTest.AReadersChunkIsNotQueuedBehindAStalledCompletion): the
// completion asked for those bytes and stops before them, so the requests overlap by design.
// Under TSan beside a busy machine this test once saw a 256 KiB chunk asked twice with no
// fill failing (2026-12-08); a take-over is the one path that asks again without a failure,
// though that run did not show its metric.
TEST_F(CacheTest, ConcurrentColdReadersShareOneFetchPerChunk) {
  start_proxy("  complete_partial: false\n");
  const auto& layer = img_->layers[0];
  constexpr int clients = 50;
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  for (int t = 0; t < clients; ++t) {
    threads.emplace_back([&, t] {
      http_client c;
      // Half read the whole blob, half overlapping ranges.
      header_list h;
      std::string expected = layer.data;
      if (t % 2 == 1) {
        const std::size_t a = static_cast<std::size_t>(t) * 37 * KiB;
        h.emplace_back("Range", "bytes=" + std::to_string(a) + "-" + std::to_string(a + 2 * MiB));
        expected = layer.data.substr(a, 2 * MiB + 1);
      }
      auto r = c.request("GET", blob_url(layer), h, {}, std::chrono::seconds(60));
      if ((r.status == 200 || r.status == 206) && r.body == expected) ++good;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(good.load(), clients);
  const auto c =
      count_coverage(fetched_ranges(*storage_host_, layer.data.size()), layer.data.size());
  EXPECT_EQ(c.more, 0u) << "bytes fetched upstream more than once";
  EXPECT_EQ(c.never, 0u);
}

TEST_F(CacheTest, WrongBytesFromUpstreamAreCutAndNotKept) {
  const auto& layer = img_->layers[1];
  // Corrupt the registry's copy on disk (same size): the upstream now lies about the digest.
  const auto hex = std::string(layer.digest.hex());
  const auto path =
      storage_.path() / "docker/registry/v2/blobs/sha256" / hex.substr(0, 2) / hex / "data";
  ASSERT_TRUE(std::filesystem::exists(path));
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(1000);
    f.write("CORRUPTED", 9);
  }
  bool cut = false;
  try {
    auto r = client_.get(blob_url(layer));
    cut = r.status != 200 || r.body.size() < layer.data.size();
    EXPECT_FALSE(r.body == layer.data);
  } catch (const std::exception&) {
    cut = true;  // the connection was closed before the body was complete
  }
  EXPECT_TRUE(cut) << "a blob that fails its digest was delivered whole";

  // Nothing was kept: repair the upstream, and the next read fetches (and gets) the real bytes.
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(1000);
    f.write(layer.data.data() + 1000, 9);
  }
  storage_host_->clear_requests();
  auto good = client_.get(blob_url(layer));
  ASSERT_EQ(good.status, 200u);
  EXPECT_TRUE(good.body == layer.data);
  EXPECT_FALSE(storage_host_->requests().empty()) << "the corrupt bytes were served from the store";
}

// docker-registry redirects every blob GET to its storage host. After the first, a blob's
// later fills go to that place directly: one registry request for the blob, not one per fill
// (a round trip saved per fill on a distant registry). With redirect_reuse: 0s, every fill
// asks the registry.
TEST_F(CacheTest, TheRedirectOfABlobIsReusedForItsLaterFills) {
  temp_dir storage;
  file_server storage_host(storage.path());
  registry_process registry(registry_options{
      .redirect_base_url = storage_host.url(), .storage_dir = storage.path(), .access_log = true});
  registry_pusher(registry.url()).push_image("c/app", "v1", *img_);
  const auto& layer = img_->layers[0];
  const auto read_three_chunks = [&](layercache_instance& proxy) {
    // Three ranges far apart: three fills (complete_partial is off).
    for (const std::uint64_t at : {std::uint64_t{0}, 2 * MiB, 4 * MiB + 100}) {
      const auto r =
          client_.get(proxy.url() + "/v2/c/app/blobs/" + layer.digest.str(),
                      {{"Range", "bytes=" + std::to_string(at) + "-" + std::to_string(at + 999)}});
      ASSERT_EQ(r.status, 206u);
      EXPECT_TRUE(r.body == layer.data.substr(at, 1000));
    }
  };
  const auto config = [&](const std::string& dir, const std::string& reuse) {
    return "cache:\n  path: " + (cache_dir_.path() / dir).string() +
           "\n  chunk_size: 256KiB\n  capacity: 1GiB\n  complete_partial: false\n"
           "prefetch: {eager_layers: never, fetch_published: false}\nupstreams:\n" +
           upstream_yaml("up", registry.url(), true, "    redirect_reuse: " + reuse + "\n");
  };
  {
    layercache_instance proxy(config("reuse", "60s"));
    storage_host.clear_requests();
    read_three_chunks(proxy);
    // The first of them is the size probe (a GET of byte 0: the registry's HEAD redirect is
    // not followed); the three fills reuse where it was sent.
    EXPECT_EQ(registry_blob_gets(registry, layer.digest), 1u)
        << "later fills asked the registry again";
    std::size_t at_storage = 0;
    for (const auto& q : storage_host.requests()) at_storage += q.method == "GET" ? 1 : 0;
    EXPECT_EQ(at_storage, 4u);
    EXPECT_EQ(proxy.metric("layercache_upstream_redirects_total", {{"outcome", "followed"}}), 1);
    EXPECT_EQ(proxy.metric("layercache_upstream_redirects_total", {{"outcome", "reused"}}), 3);
  }
  {
    layercache_instance proxy(config("no-reuse", "0s"));
    const std::size_t before = registry_blob_gets(registry, layer.digest);
    read_three_chunks(proxy);
    EXPECT_EQ(registry_blob_gets(registry, layer.digest) - before, 4u);  // probe + 3 fills
    EXPECT_EQ(proxy.metric("layercache_upstream_redirects_total", {{"outcome", "reused"}}), 0);
  }
}

}  // namespace
}  // namespace layercache::testing
