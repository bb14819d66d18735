// Access profiles and prefetch, end to end: a real docker-registry whose blob GETs redirect to
// an in-process file server (which records every byte range fetched upstream, in order), and
// an in-process slow upstream for the race between demand reads and prefetch.
#include <gtest/gtest.h>

#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <thread>

#include "cache/profile.hpp"
#include "oci/media_types.hpp"
#include "tests/support/exposition.hpp"
#include "tests/support/file_server.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/http_stub.hpp"
#include "tests/support/image.hpp"
#include "tests/support/layercache_instance.hpp"
#include "tests/support/process.hpp"
#include "tests/support/registry.hpp"

namespace layercache::testing {
namespace {

using namespace std::chrono_literals;

// State-changing admin calls say JSON, as layercachectl does (issue 25).
const header_list kJson = {{"Content-Type", "application/json"}};

constexpr std::uint64_t KiB = 1024;
constexpr std::uint64_t MiB = 1024 * KiB;
constexpr std::uint64_t chunk = 256 * KiB;

// Polls `done` every 50 ms for at most `limit`; true when it became true.
bool eventually(const std::function<bool()>& done, std::chrono::milliseconds limit = 20s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(50ms);
  }
}

struct fetched {
  std::string hex;  // blob digest hex, from the storage path
  std::uint64_t first = 0;
  std::uint64_t last = 0;
  friend bool operator==(const fetched&, const fetched&) = default;
};

std::ostream& operator<<(std::ostream& os, const fetched& f) {
  return os << f.hex.substr(0, 8) << "[" << f.first << "-" << f.last << "]";
}

// "bytes=a-b" → (a, b).
std::pair<std::uint64_t, std::uint64_t> parse_range(const std::string& range) {
  std::uint64_t a = 0, b = 0;
  EXPECT_EQ(std::sscanf(range.c_str(), "bytes=%lu-%lu", &a, &b), 2) << range;
  return {a, b};
}

std::string prefetch_yaml(std::string_view eager, unsigned concurrency, std::string_view window) {
  return "prefetch:\n  window: " + std::string(window) +
         "\n  concurrency: " + std::to_string(concurrency) +
         "\n  eager_layers: " + std::string(eager) + "\n";
}

std::string cache_yaml(const std::filesystem::path& dir) {
  return "cache:\n  path: " + dir.string() +
         "\n  chunk_size: 256KiB\n  capacity: 1GiB\n  complete_partial: false\n";
}

class PrefetchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    storage_host_ = std::make_unique<file_server>(storage_.path());
    upstream_ = std::make_unique<registry_process>(registry_options{
        .redirect_base_url = storage_host_->url(), .storage_dir = storage_.path()});
    img_ = std::make_unique<image>(make_image(image_format::oci, {3 * MiB + 100, 2 * MiB + 5}, 21));
    registry_pusher(upstream_->url()).push_image("p/app", "v1", *img_);
    storage_host_->clear_requests();
  }

  std::unique_ptr<layercache_instance> start(const std::filesystem::path& store,
                                             const std::string& prefetch) const {
    return std::make_unique<layercache_instance>(prefetch + cache_yaml(store) + "upstreams:\n" +
                                                 upstream_yaml("up", upstream_->url(), true));
  }

  static std::string admin(layercache_instance& p, std::string_view path) {
    return "http://127.0.0.1:" + std::to_string(p.srv().admin_port()) + std::string(path);
  }
  std::string manifest_path() const { return "/admin/profiles/" + img_->manifest.digest.str(); }
  static std::string blob_url(const layercache_instance& p, const blob& b) {
    return p.url() + "/v2/p/app/blobs/" + b.digest.str();
  }
  http_response get_manifest(const layercache_instance& p, std::string_view reference = "v1") {
    return client_.get(p.url() + "/v2/p/app/manifests/" + std::string(reference),
                       {{"Accept", std::string(oci::media_types::oci_manifest)}});
  }
  double metric(layercache_instance& p, std::string_view name,
                const std::map<std::string, std::string>& labels = {}) {
    const double v = p.metric(name, labels);
    EXPECT_GE(v, 0) << "no scrape";
    return v;
  }
  // Reads [offset, offset + length) of `b` through `p` and checks the bytes.
  void read_range(const layercache_instance& p, const blob& b, std::uint64_t offset,
                  std::uint64_t length) {
    const auto r = client_.get(
        blob_url(p, b),
        {{"Range", "bytes=" + std::to_string(offset) + "-" + std::to_string(offset + length - 1)}});
    ASSERT_EQ(r.status, 206u) << r.body;
    EXPECT_TRUE(r.body == b.data.substr(offset, length)) << "wrong bytes at " << offset;
  }
  // Blob GETs the storage host served, in arrival order.
  std::vector<fetched> storage_gets() const {
    std::vector<fetched> out;
    for (const auto& r : storage_host_->requests()) {
      if (r.method != "GET") continue;
      const auto data = r.target.rfind("/data");
      const auto slash = r.target.rfind('/', data - 1);
      fetched f{r.target.substr(slash + 1, data - slash - 1), 0, 0};
      if (const auto range = r.header("Range")) std::tie(f.first, f.last) = parse_range(*range);
      out.push_back(f);
    }
    return out;
  }
  static fetched chunk_of(const blob& b, std::uint64_t index) {
    const std::uint64_t first = index * chunk;
    return fetched{std::string(b.digest.hex()), first,
                   std::min<std::uint64_t>(first + chunk, b.data.size()) - 1};
  }

  temp_dir storage_;
  temp_dir dir_;
  std::unique_ptr<file_server> storage_host_;
  std::unique_ptr<registry_process> upstream_;
  std::unique_ptr<image> img_;
  http_client client_;
};

TEST_F(PrefetchTest, RecordedProfileIsExportedImportedAndReplayedInOrderOnAnotherNode) {
  const auto& l0 = img_->layers[0];
  const auto& l1 = img_->layers[1];
  // Node A records one start: the manifest, then reads in an order that is not blob order.
  auto a = start(dir_.path() / "a", prefetch_yaml("never", 1, "3s"));
  ASSERT_EQ(get_manifest(*a).status, 200u);
  const struct {
    const blob* b;
    std::uint64_t offset, length;
  } reads[] = {
      {&l1, 7 * chunk + 10, 100}, {&l0, 3 * chunk, 5000}, {&l1, chunk + 7, 1}, {&l0, 0, 100}};
  for (const auto& r : reads) {
    read_range(*a, *r.b, r.offset, r.length);
    std::this_thread::sleep_for(20ms);  // distinct first-touch times
  }
  // The window closes after 3 s and the run is saved.
  http_response exported;
  ASSERT_TRUE(eventually([&] {
    exported = client_.get(admin(*a, manifest_path()));
    return exported.status == 200;
  })) << "the profile was never saved";
  const auto doc = boost::json::parse(exported.body).as_object();
  EXPECT_EQ(doc.at("manifest").as_string(), img_->manifest.digest.str());
  EXPECT_EQ(doc.at("runs").to_number<int>(), 1);
  const auto& entries = doc.at("entries").as_array();
  ASSERT_EQ(entries.size(), 4u) << exported.body;
  for (std::size_t i = 0; i < 4; ++i) {
    const auto& e = entries[i].as_object();
    EXPECT_EQ(e.at("blob").as_string(), reads[i].b->digest.str()) << i;
    EXPECT_EQ(e.at("offset").to_number<std::uint64_t>(), reads[i].offset) << i;
    EXPECT_EQ(e.at("length").to_number<std::uint64_t>(), reads[i].length) << i;
    EXPECT_EQ(e.at("seen").to_number<int>(), 1) << i;
  }
  EXPECT_EQ(metric(*a, "layercache_prefetch_runs_recorded_total"), 1);
  EXPECT_EQ(metric(*a, "layercache_prefetch_profiles"), 1);

  // The profile survives a restart of node A.
  a.reset();
  a = start(dir_.path() / "a", prefetch_yaml("never", 1, "3s"));
  const auto listed = client_.get(admin(*a, "/admin/profiles"));
  ASSERT_EQ(listed.status, 200u);
  const auto list = boost::json::parse(listed.body).at("profiles").as_array();
  ASSERT_EQ(list.size(), 1u) << listed.body;
  EXPECT_EQ(list[0].at("manifest").as_string(), img_->manifest.digest.str());
  EXPECT_EQ(list[0].at("entries").to_number<int>(), 4);
  a.reset();

  // Node B starts empty and imports the profile.
  auto b = start(dir_.path() / "b", prefetch_yaml("never", 1, "60s"));
  const auto wrong =
      client_.request("PUT", admin(*b, "/admin/profiles/" + l0.digest.str()), kJson, exported.body);
  EXPECT_EQ(wrong.status, 400u) << "a profile was stored under another manifest";
  EXPECT_EQ(client_.request("PUT", admin(*b, manifest_path()), kJson, "{nope").status, 400u);
  const auto imported = client_.request("PUT", admin(*b, manifest_path()), kJson, exported.body);
  ASSERT_EQ(imported.status, 200u) << imported.body;
  EXPECT_EQ(metric(*b, "layercache_prefetch_profiles"), 1);

  // Serving the manifest fetches the profile's chunks, in profile order, before any read.
  storage_host_->clear_requests();
  ASSERT_EQ(get_manifest(*b, img_->manifest.digest.str()).status, 200u);
  ASSERT_TRUE(eventually([&] {
    return metric(*b, "layercache_prefetch_fetched_bytes_total") == 4.0 * chunk;
  })) << "prefetch did not fetch the profile's four chunks";
  // The storage host serves one range per request, as blob storage behind a registry's
  // redirect usually does. The first job took the profile's other chunk of the same layer
  // along (a batch: one multi-range request); answered with the whole blob, which is not
  // read, the batch's chunks are fetched one range at a time, and later jobs ask one range.
  const auto requests = storage_host_->requests();
  ASSERT_FALSE(requests.empty());
  const auto c1 = chunk_of(l1, 1);
  const auto c7 = chunk_of(l1, 7);
  EXPECT_EQ(requests.front().header("Range").value_or(""),
            "bytes=" + std::to_string(c1.first) + "-" + std::to_string(c1.last) + "," +
                std::to_string(c7.first) + "-" + std::to_string(c7.last));
  EXPECT_EQ(metric(*b, "layercache_upstream_fill_failures_total",
                   {{"upstream", "up"}, {"reason", "status"}}),
            1)
      << "the whole blob answering the batch";
  auto gets = storage_gets();
  gets.erase(gets.begin());
  const std::vector<fetched> expected = {chunk_of(l1, 7), chunk_of(l1, 1), chunk_of(l0, 3),
                                         chunk_of(l0, 0)};
  EXPECT_EQ(gets, expected);
  EXPECT_EQ(metric(*b, "layercache_prefetch_replays_total", {{"kind", "profile"}}), 1);
  EXPECT_EQ(metric(*b, "layercache_prefetch_queue_depth"), 0);

  // The start's reads are then served by what prefetch fetched: nothing goes upstream.
  storage_host_->clear_requests();
  for (const auto& r : reads) read_range(*b, *r.b, r.offset, r.length);
  EXPECT_TRUE(storage_gets().empty()) << "a prefetched read went upstream";
  EXPECT_EQ(metric(*b, "layercache_http_response_bytes_total", {{"source", "prefetch"}}),
            100 + 5000 + 1 + 100);
  EXPECT_EQ(metric(*b, "layercache_prefetch_used_bytes_total"), 4.0 * chunk);  // precision 1

  // Deleting the profile.
  EXPECT_EQ(client_.request("DELETE", admin(*b, manifest_path()), kJson).status, 200u);
  EXPECT_EQ(client_.get(admin(*b, manifest_path())).status, 404u);
  EXPECT_EQ(client_.request("DELETE", admin(*b, manifest_path()), kJson).status, 404u);
}

TEST_F(PrefetchTest, PublishedProfileTravelsThroughTheRegistryToANodeWithoutOne) {
  const auto& l0 = img_->layers[0];
  const auto& l1 = img_->layers[1];
  const std::string tag_url =
      upstream_->url() + "/v2/p/app/manifests/sha256-" + std::string(img_->manifest.digest.hex());
  const header_list index_accept = {{"Accept", std::string(oci::media_types::oci_index)}};
  auto count_ours = [&] {
    const auto r = client_.get(tag_url, index_accept);
    if (r.status != 200) return -1;
    int n = 0;
    const auto index = boost::json::parse(r.body);  // kept: the loop refers into it
    for (const auto& m : index.at("manifests").as_array()) {
      if (m.as_object().contains("artifactType") &&
          m.at("artifactType").as_string() == "application/vnd.layercache.profile.v1+json") {
        ++n;
      }
    }
    return n;
  };
  EXPECT_EQ(count_ours(), -1);

  // Node A records a start and publishes its profile next to the image.
  auto a = start(dir_.path() / "a", prefetch_yaml("never", 1, "3s") + "  publish: true\n");
  ASSERT_EQ(get_manifest(*a).status, 200u);
  read_range(*a, l1, 5 * chunk, 10);
  std::this_thread::sleep_for(20ms);
  read_range(*a, l0, 2 * chunk, 10);
  ASSERT_TRUE(eventually([&] {
    return metric(*a, "layercache_prefetch_published_total", {{"outcome", "ok"}}) == 1;
  })) << "the profile was not published";
  EXPECT_EQ(count_ours(), 1);
  // A second run replaces the published profile rather than adding another.
  ASSERT_EQ(get_manifest(*a).status, 200u);
  read_range(*a, l0, 2 * chunk, 10);
  ASSERT_TRUE(eventually([&] {
    return metric(*a, "layercache_prefetch_published_total", {{"outcome", "ok"}}) == 2;
  }));
  EXPECT_EQ(count_ours(), 1);
  a.reset();

  // Node B has no profile: it finds the published one and replays it in order.
  auto b = start(dir_.path() / "b", prefetch_yaml("never", 1, "60s"));
  storage_host_->clear_requests();
  ASSERT_EQ(get_manifest(*b).status, 200u);
  ASSERT_TRUE(eventually([&] {
    return metric(*b, "layercache_prefetch_fetched_bytes_total") == 2.0 * chunk;
  })) << "the published profile was not replayed";
  EXPECT_EQ(metric(*b, "layercache_prefetch_registry_profiles_total"), 1);
  std::vector<fetched> layer_gets;
  for (const auto& f : storage_gets()) {
    if (f.hex == l0.digest.hex() || f.hex == l1.digest.hex()) layer_gets.push_back(f);
  }
  // Seen twice (both runs) first, then once.
  EXPECT_EQ(layer_gets, (std::vector<fetched>{chunk_of(l0, 2), chunk_of(l1, 5)}));
  const auto listed = client_.get(admin(*b, "/admin/profiles"));
  EXPECT_NE(listed.body.find(img_->manifest.digest.str()), std::string::npos) << listed.body;
}

// An exported profile carries its manifest: the node that imports it resolves the tag with
// one HEAD, starts the replay there, and serves the manifest GET from its store — a fresh
// node's start pays no manifest round trip before its first read (timetostart, (e)).
TEST_F(PrefetchTest, AnImportedProfileCarriesItsManifest) {
  const auto& l0 = img_->layers[0];
  auto a = start(dir_.path() / "a", prefetch_yaml("never", 1, "60s") + "  quiet: 300ms\n");
  ASSERT_EQ(get_manifest(*a).status, 200u);
  read_range(*a, l0, 0, 100);
  http_response exported;
  ASSERT_TRUE(eventually([&] {
    exported = client_.get(admin(*a, manifest_path()));
    return exported.status == 200;
  }));
  a.reset();
  const auto doc = boost::json::parse(exported.body).as_object();
  EXPECT_EQ(doc.at("manifest_bytes").as_string(), img_->manifest.data);
  EXPECT_EQ(doc.at("manifest_media_type").as_string(), img_->manifest.media_type);

  auto b = start(dir_.path() / "b", prefetch_yaml("never", 1, "60s"));
  auto forged = doc;
  forged["manifest_bytes"] = std::string(img_->manifest.data) + " ";
  EXPECT_EQ(
      client_.request("PUT", admin(*b, manifest_path()), kJson, boost::json::serialize(forged))
          .status,
      400u)
      << "a carried manifest that is not the profile's was accepted";
  ASSERT_EQ(client_.request("PUT", admin(*b, manifest_path()), kJson, exported.body).status, 200u);
  storage_host_->clear_requests();
  const auto head = client_.head(b->url() + "/v2/p/app/manifests/v1",
                                 {{"Accept", std::string(oci::media_types::oci_manifest)}});
  ASSERT_EQ(head.status, 200u);
  ASSERT_TRUE(eventually([&] {
    return metric(*b, "layercache_prefetch_fetched_bytes_total") == 1.0 * chunk;
  })) << "the HEAD did not start the replay";
  upstream_->stop();  // the registry: the manifest now comes from the store or not at all
  ASSERT_EQ(get_manifest(*b, img_->manifest.digest.str()).status, 200u);
  storage_host_->clear_requests();
  read_range(*b, l0, 0, 100);
  EXPECT_TRUE(storage_gets().empty()) << "the prefetched read went upstream";
}

TEST_F(PrefetchTest, AHeadOfAKnownManifestStartsTheReplay) {
  const auto& l0 = img_->layers[0];
  auto p = start(dir_.path() / "h", prefetch_yaml("never", 1, "60s"));
  const std::string profile = "{\"version\":1,\"manifest\":\"" + img_->manifest.digest.str() +
                              "\",\"runs\":1,\"entries\":[{\"blob\":\"" + l0.digest.str() +
                              "\",\"offset\":0,\"length\":10,\"seen\":1,\"at_ms\":0}]}";
  ASSERT_EQ(client_.request("PUT", admin(*p, manifest_path()), kJson, profile).status, 200u);
  ASSERT_EQ(get_manifest(*p).status, 200u);  // stores the manifest (and replays once)
  ASSERT_TRUE(eventually(
      [&] { return metric(*p, "layercache_prefetch_fetched_bytes_total") == 1.0 * chunk; }));
  ASSERT_EQ(client_.request("DELETE", admin(*p, "/admin/blobs"), kJson).status, 200u);
  storage_host_->clear_requests();
  // containerd resolves the tag with HEAD before its GET: the replay starts there.
  const auto head = client_.head(p->url() + "/v2/p/app/manifests/v1",
                                 {{"Accept", std::string(oci::media_types::oci_manifest)}});
  ASSERT_EQ(head.status, 200u);
  ASSERT_TRUE(eventually([&] {
    return metric(*p, "layercache_prefetch_fetched_bytes_total") == 2.0 * chunk;
  })) << "a HEAD of a manifest with a profile did not replay it";
  EXPECT_EQ(storage_gets(), (std::vector<fetched>{chunk_of(l0, 0)}));
  EXPECT_EQ(metric(*p, "layercache_prefetch_replays_total", {{"kind", "profile"}}), 2);
}

// A node imports its profile and preloads the start at boot (layercachectl preload --start),
// before its runtime asks: the tag is resolved then, the profile's chunks fetched, and the
// runtime's start later needs nothing of the upstream.
TEST_F(PrefetchTest, APreloadOfAStartFetchesItsProfileBeforeTheRuntimeAsks) {
  const auto& l0 = img_->layers[0];
  const auto& l1 = img_->layers[1];
  const std::string store = (dir_.path() / "s").string();
  auto p = start(store, prefetch_yaml("never", 1, "60s") + "  fetch_published: false\n");
  const std::string preload_start =
      R"({"reference": "p/app:v1", "upstream": "up", "what": "start"})";
  const auto none = client_.request("POST", admin(*p, "/admin/preload"), kJson, preload_start);
  EXPECT_EQ(none.status, 404u) << "a start preloaded without a profile: " << none.body;
  EXPECT_NE(none.body.find("no access profile"), std::string::npos) << none.body;
  EXPECT_EQ(client_
                .request("POST", admin(*p, "/admin/preload"), kJson,
                         R"({"reference": "p/app:v1", "upstream": "up", "what": "all"})")
                .status,
            400u);

  const std::string profile = "{\"version\":1,\"manifest\":\"" + img_->manifest.digest.str() +
                              "\",\"runs\":1,\"entries\":[{\"blob\":\"" + l0.digest.str() +
                              "\",\"offset\":0,\"length\":10,\"seen\":1,\"at_ms\":0},{\"blob\":\"" +
                              l1.digest.str() + "\",\"offset\":" + std::to_string(MiB) +
                              ",\"length\":100,\"seen\":1,\"at_ms\":5}]}";
  ASSERT_EQ(client_.request("PUT", admin(*p, manifest_path()), kJson, profile).status, 200u);
  storage_host_->clear_requests();
  const auto r = client_.request("POST", admin(*p, "/admin/preload"), kJson, preload_start);
  ASSERT_EQ(r.status, 200u) << r.body;
  const auto answer = boost::json::parse(r.body).as_object();
  EXPECT_EQ(answer.at("digest").as_string(), img_->manifest.digest.str());
  EXPECT_EQ(answer.at("replays"), 1);
  EXPECT_EQ(answer.at("profiles_held"), 1);
  ASSERT_TRUE(eventually([&] {
    return metric(*p, "layercache_prefetch_fetched_bytes_total") == 2.0 * chunk;
  })) << "the preload did not replay the profile";
  EXPECT_EQ(storage_gets(), (std::vector<fetched>{chunk_of(l0, 0), chunk_of(l1, 4)}));

  // The runtime's start: the registry is gone, and nothing of it is needed.
  upstream_->stop();
  storage_host_->clear_requests();
  const auto head = client_.head(p->url() + "/v2/p/app/manifests/v1",
                                 {{"Accept", std::string(oci::media_types::oci_manifest)}});
  EXPECT_EQ(head.status, 200u) << "the tag the preload resolved was not kept";
  read_range(*p, l0, 0, 10);
  read_range(*p, l1, MiB, 100);
  EXPECT_TRUE(storage_gets().empty()) << "a read of the start went upstream";

  // A preload is no start: it opened no recording window (the reads above made no run).
  p.reset();
  p = start(store, prefetch_yaml("never", 1, "60s"));
  const auto listed = boost::json::parse(client_.get(admin(*p, "/admin/profiles")).body);
  ASSERT_EQ(listed.at("profiles").as_array().size(), 1u) << listed;
  EXPECT_EQ(listed.at("profiles").at(0).at("runs"), 1) << listed;
}

TEST_F(PrefetchTest, RunsMergeIntoOneProfileMostSeenFirst) {
  const auto& l0 = img_->layers[0];
  const auto& l1 = img_->layers[1];
  auto p = start(dir_.path() / "s", prefetch_yaml("never", 1, "3s"));
  // Run 1 reads l1 then l0; run 2 reads only l0 again: l0's range is seen twice.
  ASSERT_EQ(get_manifest(*p).status, 200u);
  read_range(*p, l1, 0, 10);
  std::this_thread::sleep_for(20ms);
  read_range(*p, l0, 0, 10);
  ASSERT_TRUE(
      eventually([&] { return metric(*p, "layercache_prefetch_runs_recorded_total") == 1; }));
  ASSERT_EQ(get_manifest(*p).status, 200u);
  read_range(*p, l0, 0, 10);
  ASSERT_TRUE(
      eventually([&] { return metric(*p, "layercache_prefetch_runs_recorded_total") == 2; }));
  const auto r = client_.get(admin(*p, manifest_path()));
  ASSERT_EQ(r.status, 200u);
  const auto doc = boost::json::parse(r.body).as_object();
  EXPECT_EQ(doc.at("runs").to_number<int>(), 2);
  const auto& entries = doc.at("entries").as_array();
  ASSERT_EQ(entries.size(), 2u) << r.body;
  EXPECT_EQ(entries[0].at("blob").as_string(), l0.digest.str());
  EXPECT_EQ(entries[0].at("seen").to_number<int>(), 2);
  EXPECT_EQ(entries[1].at("blob").as_string(), l1.digest.str());
  EXPECT_EQ(entries[1].at("seen").to_number<int>(), 1);
}

// prefetch.quiet: recording ends once reads have gone quiet — a lazy-pulling snapshotter's
// background fetch of whole layers, which starts after the start went quiet, is not part of
// the start's profile (and the profile is saved without waiting for the whole window).
TEST_F(PrefetchTest, ReadsAfterAQuietGapAreNotPartOfTheStart) {
  const auto& l0 = img_->layers[0];
  const auto& l1 = img_->layers[1];
  auto p = start(dir_.path() / "q", prefetch_yaml("never", 1, "60s") + "  quiet: 400ms\n");
  ASSERT_EQ(get_manifest(*p).status, 200u);
  read_range(*p, l1, 0, 2);   // a snapshotter's probe, then the start reading from there
  read_range(*p, l1, 0, 10);  // the start
  read_range(*p, l0, 100, 10);
  std::this_thread::sleep_for(700ms);  // quiet: longer than prefetch.quiet
  read_range(*p, l0, 2 * MiB, 10);     // a background fetch, later
  read_range(*p, l1, MiB, 10);
  // Saved well before the 60 s window ends.
  ASSERT_TRUE(
      eventually([&] { return metric(*p, "layercache_prefetch_runs_recorded_total") == 1; }));
  const auto r = client_.get(admin(*p, manifest_path()));
  ASSERT_EQ(r.status, 200u);
  const auto doc = boost::json::parse(r.body);
  const auto& entries = doc.as_object().at("entries").as_array();
  ASSERT_EQ(entries.size(), 2u) << r.body;
  EXPECT_EQ(entries[0].at("blob").as_string(), l1.digest.str());
  EXPECT_EQ(entries[0].at("length").to_number<std::uint64_t>(), 10u) << "the probe's length";
  EXPECT_EQ(entries[1].at("blob").as_string(), l0.digest.str());
}

TEST_F(PrefetchTest, EagerLayersFetchEveryBlobOnceWhenTheManifestIsServed) {
  auto p = start(dir_.path() / "e", prefetch_yaml("auto", 4, "60s"));
  std::uint64_t total = img_->config.data.size();
  for (const auto& l : img_->layers) total += l.data.size();

  ASSERT_EQ(get_manifest(*p).status, 200u);
  ASSERT_TRUE(eventually([&] {
    return metric(*p, "layercache_prefetch_fetched_bytes_total") == static_cast<double>(total);
  })) << "eager layers did not fetch every blob";
  EXPECT_EQ(metric(*p, "layercache_prefetch_replays_total", {{"kind", "eager"}}), 1);

  // The pull that follows finds every byte there: nothing more goes upstream.
  const auto before = storage_gets().size();
  std::vector<const blob*> blobs = {&img_->config};
  for (const auto& l : img_->layers) blobs.push_back(&l);
  for (const auto* b : blobs) {
    const auto r = client_.get(blob_url(*p, *b));
    ASSERT_EQ(r.status, 200u);
    EXPECT_TRUE(r.body == b->data);
  }
  EXPECT_EQ(storage_gets().size(), before) << "a blob was fetched again after eager prefetch";
  EXPECT_EQ(metric(*p, "layercache_http_response_bytes_total", {{"source", "prefetch"}}),
            static_cast<double>(total));
  EXPECT_EQ(metric(*p, "layercache_prefetch_used_bytes_total"), static_cast<double>(total));

  // Served again with everything cached and verified: nothing to fetch.
  ASSERT_EQ(get_manifest(*p).status, 200u);
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(storage_gets().size(), before);
  EXPECT_EQ(metric(*p, "layercache_prefetch_replays_total", {{"kind", "eager"}}), 1);
}

TEST_F(PrefetchTest, PreloadListIsWarmedAtStartUp) {
  const std::string host = upstream_->url().substr(upstream_->url().find("://") + 3);
  auto p = start(dir_.path() / "pre", "prefetch:\n  eager_layers: never\n  preload:\n    - " +
                                          host + "/p/app:v1\n    - " + host + "/p/missing:v1\n");
  // Every blob of the image arrives, verified, without a client asking.
  ASSERT_TRUE(eventually([&] {
    const auto r = client_.get(admin(*p, "/admin/blobs"));
    if (r.status != 200) return false;
    const auto doc = boost::json::parse(r.body);
    int verified = 0;
    for (const auto& b : doc.at("blobs").as_array()) verified += b.at("verified").as_bool();
    return verified == 3;
  })) << "the preload list was not warmed";
  // The image is then served without going upstream for a blob; the missing image was
  // logged and skipped.
  storage_host_->clear_requests();
  const auto r = client_.get(blob_url(*p, img_->layers[1]));
  ASSERT_EQ(r.status, 200u);
  EXPECT_TRUE(r.body == img_->layers[1].data);
  EXPECT_TRUE(storage_gets().empty());
}

TEST_F(PrefetchTest, DisabledPrefetchRecordsAndFetchesNothing) {
  auto p = start(dir_.path() / "d", "prefetch:\n  enabled: false\n  window: 1s\n");
  ASSERT_EQ(get_manifest(*p).status, 200u);
  read_range(*p, img_->layers[0], 0, 10);
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(client_.get(admin(*p, manifest_path())).status, 409u);
  const auto text = client_.get(admin(*p, "/metrics")).body;
  EXPECT_FALSE(has_metric(parse_exposition(text), "layercache_prefetch_fetched_bytes_total"));
  // Only the one chunk the read needed went upstream.
  EXPECT_EQ(storage_gets(), (std::vector<fetched>{chunk_of(img_->layers[0], 0)}));
}

// An upstream whose blob range GETs each take `delay`: prefetch of a long profile is slow, and
// a client's read must not wait behind it.
// A registry that serves blobs itself (no redirect) answers several ranges with one
// multipart/byteranges 206: the profile's scattered chunks of a layer come in one request.
TEST(PrefetchBatchTest, ScatteredChunksOfALayerComeInOneMultiRangeRequest) {
  temp_dir dir;
  registry_process upstream;
  const image img = make_image(image_format::oci, {3 * MiB + 100, 2 * MiB + 5}, 23);
  registry_pusher(upstream.url()).push_image("p/app", "v1", img);
  const auto& l0 = img.layers[0];
  const auto& l1 = img.layers[1];
  layercache_instance node(prefetch_yaml("never", 1, "60s") + cache_yaml(dir.path() / "s") +
                           "upstreams:\n" + upstream_yaml("up", upstream.url(), true));
  const auto admin = "http://127.0.0.1:" + std::to_string(node.srv().admin_port());
  http_client client;

  // Chunks of l1 (7, 1, and the short last one, 8) and of l0 (3, 0), interleaved.
  cache::profile p{img.manifest.digest, 1, {}};
  const struct {
    const blob* b;
    std::uint64_t index;
  } order[] = {{&l1, 7}, {&l0, 3}, {&l1, 1}, {&l0, 0}, {&l1, 8}};
  std::uint32_t at = 0;
  for (const auto& o : order) {
    p.entries.push_back(cache::profile_entry{
        o.b->digest, oci::byte_interval::at(o.index * chunk + 5, 10), 1, at += 10});
  }
  const auto imported = client.request(
      "PUT", admin + "/admin/profiles/" + img.manifest.digest.str(), kJson, cache::to_json(p));
  ASSERT_EQ(imported.status, 200u) << imported.body;

  ASSERT_EQ(client
                .get(node.url() + "/v2/p/app/manifests/v1",
                     {{"Accept", std::string(oci::media_types::oci_manifest)}})
                .status,
            200u);
  const double expected_bytes = 4.0 * chunk + double(l1.data.size() - 8 * chunk);
  ASSERT_TRUE(eventually([&] {
    return node.metric("layercache_prefetch_fetched_bytes_total") == expected_bytes;
  })) << "prefetch did not fetch the profile's five chunks";
  // One worker: its first job takes l1's other chunks along (one request for three chunks in
  // two ranges), the next job l0's two chunks (two ranges).
  EXPECT_EQ(node.metric("layercache_cache_fills_total"), 2);
  for (const char* reason : {"transport", "status", "content_range", "length"}) {
    EXPECT_EQ(node.metric("layercache_upstream_fill_failures_total",
                          {{"upstream", "up"}, {"reason", reason}}),
              0)
        << reason;
  }

  // Every byte of those chunks is right, and served from the store.
  for (const auto& o : order) {
    const std::uint64_t first = o.index * chunk;
    const std::uint64_t last = std::min<std::uint64_t>(first + chunk, o.b->data.size()) - 1;
    const auto r =
        client.get(node.url() + "/v2/p/app/blobs/" + o.b->digest.str(),
                   {{"Range", "bytes=" + std::to_string(first) + "-" + std::to_string(last)}});
    ASSERT_EQ(r.status, 206u);
    EXPECT_TRUE(r.body == o.b->data.substr(first, last - first + 1)) << o.index;
  }
  EXPECT_EQ(node.metric("layercache_cache_fills_total"), 2) << "a read went upstream";
}

class SlowUpstreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    img_ = std::make_unique<image>(make_image(image_format::oci, {8 * MiB}, 5));
    stub_ = std::make_unique<http_stub>([this](const stub_request& r) { return answer(r); });
  }

  stub_response answer(const stub_request& r) const {
    const std::string prefix = "/v2/slow/app/";
    if (r.target == "/v2/") return stub_response{200, {}, "{}"};
    if (!r.target.starts_with(prefix)) return stub_response{404, {}, ""};
    const std::string rest = r.target.substr(prefix.size());
    if (rest.starts_with("manifests/")) {
      return stub_response{200,
                           {{"Content-Type", std::string(oci::media_types::oci_manifest)},
                            {"Docker-Content-Digest", img_->manifest.digest.str()}},
                           img_->manifest.data,
                           manifest_delay_.load()};
    }
    const std::string digest = rest.substr(std::string_view("blobs/").size());
    const blob* b = digest == img_->config.digest.str() ? &img_->config : nullptr;
    if (digest == img_->layers[0].digest.str()) b = &img_->layers[0];
    if (b == nullptr) return stub_response{404, {}, ""};
    const auto range = r.header("Range");
    if (r.method != "GET" || !range) return stub_response{200, {}, b->data};
    const auto [first, last] = parse_range(*range);
    return stub_response{
        206,
        {{"Content-Range", "bytes " + std::to_string(first) + "-" + std::to_string(last) + "/" +
                               std::to_string(b->data.size())}},
        b->data.substr(first, last - first + 1),
        150ms};
  }

  // Range GETs the stub received, as first byte offsets, in arrival order.
  std::vector<std::uint64_t> range_starts() const {
    std::vector<std::uint64_t> out;
    for (const auto& r : stub_->requests()) {
      if (r.method == "GET" && r.header("Range"))
        out.push_back(parse_range(*r.header("Range")).first);
    }
    return out;
  }

  temp_dir dir_;
  std::unique_ptr<image> img_;
  std::unique_ptr<http_stub> stub_;
  http_client client_;
  std::atomic<std::chrono::milliseconds> manifest_delay_{0ms};
};

// The tag a start named travels in its profile: a fresh node that imports the profile starts
// the replay when the runtime's first request for the tag arrives, not when the upstream has
// answered it (here after 1.5 s).
TEST_F(SlowUpstreamTest, AnImportedProfilesTagStartsTheReplayBeforeTheTagIsResolved) {
  const auto& layer = img_->layers[0];
  const header_list accept = {{"Accept", std::string(oci::media_types::oci_manifest)}};
  std::string exported;
  {
    layercache_instance a(prefetch_yaml("never", 1, "60s") + "  quiet: 200ms\n" +
                          cache_yaml(dir_.path() / "a") + "upstreams:\n" +
                          upstream_yaml("slow", stub_->url(), true));
    // containerd's way: HEAD by tag, then GET by digest, then the reads.
    ASSERT_EQ(client_.head(a.url() + "/v2/slow/app/manifests/v1", accept).status, 200u);
    ASSERT_EQ(client_.get(a.url() + "/v2/slow/app/manifests/" + img_->manifest.digest.str(), accept)
                  .status,
              200u);
    ASSERT_EQ(
        client_.get(a.url() + "/v2/slow/app/blobs/" + layer.digest.str(), {{"Range", "bytes=0-99"}})
            .status,
        206u);
    const std::string admin = "http://127.0.0.1:" + std::to_string(a.srv().admin_port()) +
                              "/admin/profiles/" + img_->manifest.digest.str();
    ASSERT_TRUE(eventually([&] {
      const auto r = client_.get(admin);
      exported = r.body;
      return r.status == 200;
    }));
  }
  const auto doc = boost::json::parse(exported).as_object();
  ASSERT_TRUE(doc.contains("tags")) << exported;
  EXPECT_EQ(doc.at("tags"),
            boost::json::parse(R"([{"upstream":"slow","repository":"slow/app","tag":"v1"}])"));

  layercache_instance b(prefetch_yaml("never", 1, "60s") + cache_yaml(dir_.path() / "b") +
                        "upstreams:\n" + upstream_yaml("slow", stub_->url(), true));
  const std::string admin = "http://127.0.0.1:" + std::to_string(b.srv().admin_port()) +
                            "/admin/profiles/" + img_->manifest.digest.str();
  ASSERT_EQ(client_.request("PUT", admin, kJson, exported).status, 200u);
  stub_->clear_requests();
  manifest_delay_ = 1500ms;
  std::atomic<bool> answered{false};
  unsigned head_status = 0;
  std::thread runtime([&] {
    http_client own;
    head_status = own.head(b.url() + "/v2/slow/app/manifests/v1", accept).status;
    answered = true;
  });
  const bool early = eventually([&] { return !range_starts().empty(); }, 1200ms);
  const bool was_answered = answered.load();
  runtime.join();
  EXPECT_TRUE(early) << "no replay fill before the tag was resolved";
  EXPECT_FALSE(was_answered) << "the HEAD was answered early: the test proves nothing";
  EXPECT_EQ(head_status, 200u);
  EXPECT_EQ(range_starts().front(), 0u);
}

TEST_F(SlowUpstreamTest, DemandReadsOvertakePrefetchAndShareItsFills) {
  const auto& layer = img_->layers[0];
  // A profile of every other chunk, 0, 2, ..., 30: sixteen separate fills, one at a time.
  boost::json::array entries;
  for (std::uint64_t c = 0; c < 32; c += 2) {
    entries.push_back(boost::json::object{{"blob", layer.digest.str()},
                                          {"offset", c * chunk},
                                          {"length", 100},
                                          {"seen", 1},
                                          {"at_ms", c}});
  }
  const std::string profile =
      boost::json::serialize(boost::json::object{{"version", 1},
                                                 {"manifest", img_->manifest.digest.str()},
                                                 {"runs", 1},
                                                 {"entries", entries}});
  layercache_instance p(prefetch_yaml("never", 1, "60s") + cache_yaml(dir_.path() / "s") +
                        "upstreams:\n" + upstream_yaml("slow", stub_->url(), true));
  const std::string admin = "http://127.0.0.1:" + std::to_string(p.srv().admin_port()) +
                            "/admin/profiles/" + img_->manifest.digest.str();
  ASSERT_EQ(client_.request("PUT", admin, kJson, profile).status, 200u);

  ASSERT_EQ(client_
                .get(p.url() + "/v2/slow/app/manifests/v1",
                     {{"Accept", std::string(oci::media_types::oci_manifest)}})
                .status,
            200u);
  // The client reads the profile's last chunk at once: it is fetched now, not after the
  // fifteen before it in the queue.
  const std::uint64_t last = 30 * chunk;
  const auto r =
      client_.get(p.url() + "/v2/slow/app/blobs/" + layer.digest.str(),
                  {{"Range", "bytes=" + std::to_string(last) + "-" + std::to_string(last + 99)}});
  ASSERT_EQ(r.status, 206u);
  EXPECT_TRUE(r.body == layer.data.substr(last, 100));
  const auto at_read = range_starts();
  EXPECT_LT(at_read.size(), 8u) << "the read waited behind most of the prefetch queue";

  // Prefetch then finishes the rest and never fetches the chunk the client read again.
  ASSERT_TRUE(eventually(
      [&] {
        const auto starts = range_starts();
        return std::count(starts.begin(), starts.end(), 28 * chunk) == 1;
      },
      30s));
  std::this_thread::sleep_for(300ms);
  const auto starts = range_starts();
  EXPECT_EQ(std::count(starts.begin(), starts.end(), last), 1) << "a chunk was fetched twice";
  EXPECT_EQ(starts.size(), 16u);
}

}  // namespace
}  // namespace layercache::testing
