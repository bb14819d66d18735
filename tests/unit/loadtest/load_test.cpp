// layercache-bench's parts: the scenario file and read-set parsers, and the load generator run
// against an in-process HTTP (or HTTPS) stub that plays a registry.
#include "loadtest/load.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "loadtest/report.hpp"
#include "loadtest/scenario.hpp"
#include "tests/support/http_stub.hpp"
#include "tests/support/image.hpp"
#include "tests/support/process.hpp"
#include "tests/support/registry.hpp"

namespace layercache::loadtest {
namespace {

using namespace std::chrono_literals;
using testing::http_stub;
using testing::stub_request;
using testing::stub_response;

const std::string digest_a = "sha256:" + std::string(64, 'a');
const std::string digest_b = "sha256:" + std::string(64, 'b');

std::string error_of(std::string_view yaml) {
  try {
    (void)parse_plan(yaml, ".");
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

TEST(LoadReadSet, ParsesLinesSkippingBlanksAndComments) {
  const auto ops = parse_read_set("# recorded\n" + digest_a + " 0 4096\n\n  " + digest_b +
                                  "\t1048576   65536  \n#" + digest_a + " 1 1\n");
  ASSERT_EQ(ops.size(), 2u);
  EXPECT_EQ(ops[0].digest, digest_a);
  EXPECT_EQ(ops[0].offset, 0u);
  EXPECT_EQ(ops[0].length, 4096u);
  EXPECT_EQ(ops[1].digest, digest_b);
  EXPECT_EQ(ops[1].offset, 1048576u);
  EXPECT_EQ(ops[1].length, 65536u);
}

TEST(LoadReadSet, RejectsBadLinesNamingThem) {
  const std::vector<std::string> bad = {
      "sha256:xyz 0 1",       digest_a + " 0", digest_a + " -1 4",   digest_a + " 0 0",
      digest_a + " 0 4 more", "nodigest 0 4",  digest_a + " 0x10 4", digest_a + " 1 2KiB",
  };
  for (const auto& line : bad) {
    try {
      (void)parse_read_set(digest_b + " 0 1\n" + line + "\n");
      ADD_FAILURE() << "accepted: " << line;
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("line 2"), std::string::npos) << e.what();
    }
  }
}

TEST(LoadParsers, SplitImage) {
  struct row {
    std::string text, repo, reference;
  };
  const std::vector<row> good = {
      {"demo/app:v1", "demo/app", "v1"},
      {"demo/app", "demo/app", "latest"},
      {"localhost:5000/app", "localhost:5000/app", "latest"},
      {"demo/app@" + digest_a, "demo/app", digest_a},
  };
  for (const auto& r : good) {
    const auto got = split_image(r.text);
    ASSERT_TRUE(got) << r.text;
    EXPECT_EQ(got->first, r.repo) << r.text;
    EXPECT_EQ(got->second, r.reference) << r.text;
  }
  for (const std::string& bad :
       std::vector<std::string>{"", ":v1", "demo/app:", "demo/app@sha256:zz", "@" + digest_a}) {
    EXPECT_FALSE(split_image(bad)) << bad;
  }
}

TEST(LoadParsers, BlobRefAndUrl) {
  const auto b = parse_blob_ref("demo/app@" + digest_a + ":64MiB");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->repo, "demo/app");
  EXPECT_EQ(b->digest, digest_a);
  EXPECT_EQ(b->size, 64u << 20);
  EXPECT_EQ(parse_blob_ref("demo/app@" + digest_a)->size, 0u);
  EXPECT_FALSE(parse_blob_ref(digest_a));
  EXPECT_FALSE(parse_blob_ref("demo/app@" + digest_a + ":lots"));

  const auto u = parse_http_url("http://127.0.0.1:5000/mirror/");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, "5000");
  EXPECT_EQ(u->target, "/mirror/");
  EXPECT_EQ(parse_http_url("http://registry")->port, "80");
  EXPECT_EQ(parse_http_url("http://registry")->target, "/");
  EXPECT_FALSE(parse_http_url("http://registry")->tls);
  const auto s = parse_http_url("https://registry/v2/");
  ASSERT_TRUE(s);
  EXPECT_TRUE(s->tls);
  EXPECT_EQ(s->host, "registry");
  EXPECT_EQ(s->port, "443");
  EXPECT_EQ(s->target, "/v2/");
  EXPECT_EQ(parse_http_url("https://127.0.0.1:8443")->port, "8443");
  EXPECT_FALSE(parse_http_url("ftp://registry"));
  EXPECT_FALSE(parse_http_url("httpss://registry"));
  EXPECT_FALSE(parse_http_url("http://:80/"));
  EXPECT_FALSE(parse_http_url("https://:443/"));
}

TEST(LoadParsers, Header) {
  const auto h = parse_header("Authorization: Basic dXNlcjpwYXNz");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->name, "Authorization");
  EXPECT_EQ(h->value, "Basic dXNlcjpwYXNz");
  EXPECT_EQ(parse_header("X-Trace:1")->value, "1");
  EXPECT_EQ(parse_header("X-Trace: \t a: b \t")->value, "a: b");
  EXPECT_EQ(parse_header("X-Empty:")->value, "");
  EXPECT_EQ(parse_header("User-Agent: mine")->name, "User-Agent");
  for (const std::string& bad : std::vector<std::string>{
           "Authorization", ": x", "Bad Name: x", "X-A\tB: x", "X-A: a\r\nX-B: b", "X-A: a\nb",
           std::string("X-A: a\0b", 9), "Host: elsewhere", "range: bytes=0-1", "ACCEPT: */*",
           "Content-Length: 1", "Transfer-Encoding: chunked", "Connection: close"}) {
    EXPECT_FALSE(parse_header(bad)) << bad;
  }
}

TEST(LoadParsers, Summarize) {
  EXPECT_EQ(summarize({}).n, 0u);
  std::vector<double> v;
  for (int i = 100; i >= 1; --i) v.push_back(i);
  const auto s = summarize(v);
  EXPECT_EQ(s.n, 100u);
  EXPECT_DOUBLE_EQ(s.p50, 51);  // rank round(0.5 · 99) = 50
  EXPECT_DOUBLE_EQ(s.p90, 90);
  EXPECT_DOUBLE_EQ(s.p99, 99);
  EXPECT_DOUBLE_EQ(s.max, 100);
}

TEST(LoadScenarioFile, TheExampleLoads) {
  const auto file = std::filesystem::path(LAYERCACHE_SOURCE_DIR) / "loadtest/scenarios/mix.yaml";
  const auto p = load_plan(file);
  EXPECT_EQ(p.registry, "http://127.0.0.1:5000");
  EXPECT_DOUBLE_EQ(p.max_seconds, 60);
  EXPECT_DOUBLE_EQ(p.timeout_seconds, 30);
  ASSERT_EQ(p.scenarios.size(), 3u);
  EXPECT_EQ(p.scenarios[0].kind, scenario_kind::full);
  EXPECT_EQ(p.scenarios[0].parallel, 3u);
  EXPECT_EQ(p.scenarios[1].kind, scenario_kind::ranges);
  EXPECT_EQ(p.scenarios[1].range, 64u * 1024);
  EXPECT_EQ(p.scenarios[2].kind, scenario_kind::replay);
  EXPECT_EQ(p.scenarios[2].reads.size(), 46u);
  EXPECT_EQ(p.scenarios[2].count, 0u);  // every line
}

TEST(LoadScenarioFile, ReportsEveryProblemWithItsLine) {
  const auto e = error_of(
      "registry: ftp://x\n"
      "speed: 3\n"
      "scenarios:\n"
      "  - kind: ranges\n"
      "    images: [demo/app:v1]\n"
      "    range: lots\n"
      "  - kind: teleport\n"
      "  - kind: replay\n"
      "    count: -1\n");
  EXPECT_NE(e.find("registry: expected http(s)://host[:port] (line 1)"), std::string::npos) << e;
  EXPECT_NE(e.find("speed: unknown key (line 2)"), std::string::npos) << e;
  EXPECT_NE(e.find("scenarios[0].range: expected a size"), std::string::npos) << e;
  EXPECT_NE(e.find("scenarios[1].kind: expected full, ranges or replay"), std::string::npos) << e;
  EXPECT_NE(e.find("scenarios[2]: replay needs repo"), std::string::npos) << e;
  EXPECT_NE(e.find("scenarios[2].count: expected a whole number"), std::string::npos) << e;
  EXPECT_NE(error_of("scenarios: []\n").find("non-empty list"), std::string::npos);
  EXPECT_NE(error_of("scenarios: [{kind: full, images: [a:b]}, {kind: full, images: [a:b]}]")
                .find("duplicate name full"),
            std::string::npos);
  EXPECT_NE(error_of("{{{").find("scenario file"), std::string::npos);
}

TEST(LoadScenarioFile, TlsSettings) {
  const std::string pulls = "scenarios: [{kind: full, images: [a:b]}]\n";
  const auto p =
      parse_plan("registry: https://127.0.0.1:8443\nca_file: certs/ca.pem\n" + pulls, "/etc/bench");
  EXPECT_EQ(p.registry, "https://127.0.0.1:8443");
  EXPECT_EQ(p.ca_file, "/etc/bench/certs/ca.pem");
  EXPECT_FALSE(p.insecure);
  EXPECT_EQ(parse_plan("ca_file: /ca.pem\n" + pulls, "/etc/bench").ca_file, "/ca.pem");
  EXPECT_TRUE(parse_plan("insecure: true\n" + pulls, ".").insecure);
  EXPECT_NE(error_of("insecure: yes please\n" + pulls).find("insecure: expected true or false"),
            std::string::npos);
  EXPECT_NE(error_of("insecure: true\nca_file: ca.pem\n" + pulls)
                .find("insecure: insecure and ca_file exclude each other (line 1)"),
            std::string::npos);
}

// A registry in miniature: manifests and blobs from maps, one Range `bytes=a-b` honoured.
class fake_registry {
 public:
  // With `tls`, over HTTPS at `address`.
  explicit fake_registry(std::optional<testing::stub_tls> tls = std::nullopt,
                         std::string address = "127.0.0.1")
      : stub_([this](const stub_request& r) { return answer(r); }, std::move(address),
              std::move(tls)) {}

  void add_manifest(const std::string& path, const testing::blob& m) {
    std::lock_guard lock(mutex_);
    files_[path] = {m.media_type, m.data};
  }
  void add_blob(const std::string& repo, const testing::blob& b) {
    std::lock_guard lock(mutex_);
    files_["/v2/" + repo + "/blobs/" + b.digest.str()] = {b.media_type, b.data};
  }
  void set_delay(std::chrono::milliseconds d) {
    std::lock_guard lock(mutex_);
    delay_ = d;
  }
  // Blob GETs are answered 307 to `base` + their path (with a signature-like query), as a
  // registry sends them to its storage host.
  void redirect_blobs_to(std::string base) {
    std::lock_guard lock(mutex_);
    redirect_base_ = std::move(base);
  }
  [[nodiscard]] std::string url() const { return stub_.url(); }
  [[nodiscard]] std::vector<stub_request> requests() const { return stub_.requests(); }

 private:
  stub_response answer(const stub_request& r) {
    std::lock_guard lock(mutex_);
    if (!redirect_base_.empty() && r.method == "GET" &&
        r.target.find("/blobs/") != std::string::npos) {
      return {307, {{"Location", redirect_base_ + r.target + "?sig=1"}}, "redirected", delay_};
    }
    const auto f = files_.find(r.target.substr(0, r.target.find('?')));
    if (f == files_.end()) return {404, {}, "{}", delay_};
    const auto& [type, data] = f->second;
    const auto range = r.header("Range");
    std::uint64_t first = 0, last = 0;
    if (range && std::sscanf(range->c_str(), "bytes=%lu-%lu", &first, &last) == 2 &&
        first <= last && last < data.size()) {
      return {206,
              {{"Content-Type", type},
               {"Content-Range", "bytes " + std::to_string(first) + "-" + std::to_string(last) +
                                     "/" + std::to_string(data.size())}},
              data.substr(first, last - first + 1),
              delay_};
    }
    return {200, {{"Content-Type", type}}, data, delay_};
  }

  std::mutex mutex_;
  std::map<std::string, std::pair<std::string, std::string>> files_;
  std::chrono::milliseconds delay_{0};
  std::string redirect_base_;
  http_stub stub_;  // last: stopped before the maps it reads go away
};

struct served_image {
  testing::image img = testing::make_image(testing::image_format::oci, {100'000, 300'000}, 5);
  testing::blob index = testing::make_index(testing::image_format::oci, {{&img, "amd64"}});
};

void serve(fake_registry& reg, const served_image& s) {
  reg.add_manifest("/v2/demo/app/manifests/v1", s.index);
  reg.add_manifest("/v2/demo/app/manifests/" + s.img.manifest.digest.str(), s.img.manifest);
  reg.add_blob("demo/app", s.img.config);
  for (const auto& l : s.img.layers) reg.add_blob("demo/app", l);
}

// `count` verified pulls of demo/app:v1, `concurrency` at once, `parallel` blobs at once each.
scenario verified_pulls(std::uint64_t count, unsigned concurrency, unsigned parallel) {
  scenario full;
  full.name = "pulls";
  full.images = {"demo/app:v1"};
  full.count = count;
  full.concurrency = concurrency;
  full.parallel = parallel;
  full.verify = true;
  return full;
}

TEST(LoadGenerator, PullsImagesThroughAnIndexAndVerifiesBlobs) {
  fake_registry reg;
  const served_image s;
  serve(reg, s);
  plan p;
  p.registry = reg.url();
  p.scenarios = {verified_pulls(3, 2, 2)};
  const auto r = run_plan(p);
  ASSERT_EQ(r.scenarios.size(), 1u);
  const auto& got = r.scenarios[0];
  EXPECT_EQ(got.errors, 0u) << got.first_error;
  EXPECT_EQ(got.pulls_ok, 3u);
  EXPECT_EQ(got.requests, 3u * 5);  // index, manifest, config, two layers
  const std::uint64_t blob_bytes =
      s.img.config.data.size() + s.img.layers[0].data.size() + s.img.layers[1].data.size();
  const std::uint64_t per_pull = s.index.data.size() + s.img.manifest.data.size() + blob_bytes;
  EXPECT_EQ(got.bytes, 3 * per_pull);
  EXPECT_EQ(got.total_ms.size(), got.ok);
  EXPECT_EQ(got.pull_ms.size(), 3u);
  const auto text = text_report(r);
  EXPECT_NE(text.find("pulls  ok=15 errors=0"), std::string::npos) << text;
  EXPECT_NE(text.find(" pulls=3 pulls_failed=0"), std::string::npos) << text;
}

// A registry that sends blob GETs to a storage host: the bench follows, verifies the blob
// (not the redirect's body), and reuses one connection per place.
TEST(LoadGenerator, FollowsBlobRedirectsToTheStorageHost) {
  fake_registry reg;
  fake_registry storage;
  const served_image s;
  serve(reg, s);
  serve(storage, s);
  reg.redirect_blobs_to(storage.url());
  plan p;
  p.registry = reg.url();
  const scenario full = verified_pulls(2, 1, 1);
  scenario ranges;
  ranges.kind = scenario_kind::ranges;
  ranges.name = "ranges";
  ranges.images = {"demo/app:v1"};
  ranges.range = 4096;
  ranges.count = 10;
  ranges.concurrency = 1;
  p.scenarios = {full, ranges};
  const auto r = run_plan(p);
  ASSERT_EQ(r.scenarios.size(), 2u);
  EXPECT_EQ(r.scenarios[0].errors, 0u) << r.scenarios[0].first_error;
  EXPECT_EQ(r.scenarios[0].pulls_ok, 2u);
  const std::uint64_t blob_bytes =
      s.img.config.data.size() + s.img.layers[0].data.size() + s.img.layers[1].data.size();
  const std::uint64_t per_pull = s.index.data.size() + s.img.manifest.data.size() + blob_bytes;
  EXPECT_EQ(r.scenarios[0].bytes, 2 * per_pull) << "a redirect's body was counted";
  EXPECT_EQ(r.scenarios[1].ok, 10u) << r.scenarios[1].first_error;
  EXPECT_EQ(r.scenarios[1].bytes, 10u * 4096);
  std::size_t at_storage = 0;
  for (const auto& q : storage.requests()) {
    EXPECT_NE(q.target.find("?sig=1"), std::string::npos) << q.target;
    ++at_storage;
  }
  EXPECT_EQ(at_storage, 2u * 3 + 10);  // config and two layers per pull, then the ranges
}

// --header: every request to the registry carries the headers (the ranges' setup too), a
// redirect to the storage host none of them (credentials stay off other hosts); no report
// shows a value.
TEST(LoadGenerator, SendsHeadersToTheRegistryOnly) {
  fake_registry reg;
  fake_registry storage;
  const served_image s;
  serve(reg, s);
  serve(storage, s);
  reg.redirect_blobs_to(storage.url());
  const std::string secret = "Basic c2VjcmV0OnNlY3JldA==";
  plan p;
  p.registry = reg.url();
  p.headers = {{"Authorization", secret}, {"X-Bench", "1"}};
  scenario ranges;
  ranges.kind = scenario_kind::ranges;
  ranges.name = "ranges";
  ranges.images = {"demo/app:v1"};
  ranges.range = 4096;
  ranges.count = 4;
  p.scenarios = {verified_pulls(2, 1, 2), ranges};
  const auto r = run_plan(p);
  EXPECT_EQ(r.scenarios[0].pulls_ok, 2u) << r.scenarios[0].first_error;
  EXPECT_EQ(r.scenarios[1].ok, 4u) << r.scenarios[1].first_error;
  const auto at_registry = reg.requests();
  EXPECT_EQ(at_registry.size(), 2u * 5 + 2 + 4);  // pulls; the ranges' index and manifest; ranges
  for (const auto& q : at_registry) {
    EXPECT_EQ(q.header("Authorization").value_or(""), secret) << q.target;
    EXPECT_EQ(q.header("X-Bench").value_or(""), "1") << q.target;
  }
  EXPECT_EQ(storage.requests().size(), 2u * 3 + 4);
  for (const auto& q : storage.requests()) {
    EXPECT_FALSE(q.header("Authorization")) << q.target;
    EXPECT_FALSE(q.header("X-Bench")) << q.target;
  }
  EXPECT_EQ(text_report(r).find(secret), std::string::npos);
  EXPECT_EQ(json_report(r).find(secret), std::string::npos);
}

TEST(LoadGenerator, ADigestMismatchFailsThePull) {
  fake_registry reg;
  const served_image s;
  serve(reg, s);
  auto corrupt = s.img.layers[1];
  corrupt.data[10] ^= 1;
  reg.add_blob("demo/app", {corrupt.media_type, corrupt.data, s.img.layers[1].digest});
  plan p;
  p.registry = reg.url();
  scenario full;
  full.images = {"demo/app:v1"};
  full.count = 1;
  full.verify = true;
  p.scenarios = {full};
  const auto r = run_plan(p).scenarios[0];
  EXPECT_EQ(r.errors, 1u);
  EXPECT_EQ(r.pulls_failed, 1u);
  EXPECT_NE(r.first_error.find("digest mismatch"), std::string::npos) << r.first_error;
}

TEST(LoadGenerator, RandomRangesAndAReplayInOrder) {
  fake_registry reg;
  const served_image s;
  serve(reg, s);
  const auto& layer = s.img.layers[1];
  plan p;
  p.registry = reg.url();
  scenario ranges;
  ranges.kind = scenario_kind::ranges;
  ranges.name = "ranges";
  ranges.images = {"demo/app:v1"};
  ranges.range = 4096;
  ranges.align = 512;
  ranges.count = 40;
  ranges.concurrency = 3;
  scenario replay;
  replay.kind = scenario_kind::replay;
  replay.name = "replay";
  replay.repo = "demo/app";
  replay.reads = {
      {layer.digest.str(), 5, 10}, {layer.digest.str(), 1000, 2000}, {layer.digest.str(), 0, 1}};
  replay.count = 0;
  p.scenarios = {ranges, replay};
  const auto r = run_plan(p);
  ASSERT_EQ(r.scenarios.size(), 2u);
  EXPECT_EQ(r.scenarios[0].ok, 40u) << r.scenarios[0].first_error;
  EXPECT_EQ(r.scenarios[0].bytes, 40u * 4096);
  EXPECT_EQ(r.scenarios[1].ok, 3u) << r.scenarios[1].first_error;
  EXPECT_EQ(r.scenarios[1].bytes, 10u + 2000 + 1);
  // Ranges are 4096 bytes at multiples of 512, so the replay's requests are the only others.
  std::vector<std::string> replayed;
  for (const auto& q : reg.requests()) {
    const auto range = q.header("Range");
    if (!range) continue;
    if (range->size() > 6 && std::stoull(range->substr(6)) % 512 == 0 &&
        range->find("-" + std::to_string(std::stoull(range->substr(6)) + 4095)) !=
            std::string::npos) {
      continue;
    }
    EXPECT_NE(q.target.find(layer.digest.str()), std::string::npos) << q.target;
    replayed.push_back(*range);
  }
  const std::vector<std::string> in_order = {"bytes=5-14", "bytes=1000-2999", "bytes=0-0"};
  EXPECT_EQ(replayed, in_order);
  const auto text = text_report(r);
  EXPECT_NE(text.find("total  ok=43 errors=0"), std::string::npos) << text;
  EXPECT_NE(json_report(r).find("\"name\":\"replay\""), std::string::npos);
}

TEST(LoadGenerator, CountsWrongAnswersAsErrors) {
  fake_registry reg;
  const served_image s;
  serve(reg, s);
  plan p;
  p.registry = reg.url();
  scenario replay;
  replay.kind = scenario_kind::replay;
  replay.repo = "demo/app";
  // Past the end: the fake answers 200 with the whole blob, which is not the asked range.
  replay.reads = {{s.img.layers[0].digest.str(), 0, 10},
                  {s.img.layers[0].digest.str(), 0, 50'000'000},
                  {digest_a, 0, 10}};
  replay.count = 0;
  p.scenarios = {replay};
  const auto r = run_plan(p).scenarios[0];
  EXPECT_EQ(r.ok, 1u);
  EXPECT_EQ(r.errors, 2u);
  EXPECT_NE(r.first_error.find("status 200"), std::string::npos) << r.first_error;
}

TEST(LoadGenerator, StopsStartingRequestsAtMaxSeconds) {
  fake_registry reg;
  const served_image s;
  serve(reg, s);
  reg.set_delay(50ms);
  plan p;
  p.registry = reg.url();
  p.max_seconds = 0.3;
  scenario ranges;
  ranges.kind = scenario_kind::ranges;
  ranges.blobs = {{"demo/app", s.img.layers[0].digest.str(), s.img.layers[0].data.size()}};
  ranges.count = 100'000;
  ranges.concurrency = 2;
  p.scenarios = {ranges};
  const auto r = run_plan(p).scenarios[0];
  EXPECT_GT(r.ok, 0u) << r.first_error;
  EXPECT_LT(r.requests, 1000u);  // 2 clients × (0.3 s / 50 ms) is about 12
}

TEST(LoadGenerator, ASetupFailureThrows) {
  fake_registry reg;
  plan p;
  p.registry = reg.url();
  scenario ranges;
  ranges.kind = scenario_kind::ranges;
  ranges.images = {"demo/missing:v1"};
  p.scenarios = {ranges};
  EXPECT_THROW((void)run_plan(p), std::runtime_error);
}

// The test CA and a server certificate for 127.0.0.1 and localhost, in a directory of their own.
struct test_certificates {
  testing::temp_dir dir{"layercache-bench-tls"};
  testing::tls_files files = testing::make_test_certificates(dir.path());
  [[nodiscard]] testing::stub_tls server() const { return {files.server_cert, files.server_key}; }
};

// HTTPS end to end: verified pulls through an index, ranges, and blob redirects to an HTTPS
// storage host, the server's certificate checked against the test CA; keep-alive connections
// carry many requests each, so the handshakes are as many as the connections.
TEST(LoadGeneratorTls, PullsRangesAndRedirectsOverHttps) {
  const test_certificates certs;
  fake_registry reg(certs.server());
  fake_registry storage(certs.server());
  const served_image s;
  serve(reg, s);
  serve(storage, s);
  reg.redirect_blobs_to(storage.url());
  ASSERT_EQ(reg.url().rfind("https://", 0), 0u) << reg.url();
  plan p;
  p.registry = reg.url();
  p.ca_file = certs.files.ca_cert;
  scenario ranges;
  ranges.kind = scenario_kind::ranges;
  ranges.name = "ranges";
  ranges.images = {"demo/app:v1"};
  ranges.range = 4096;
  ranges.count = 20;
  ranges.concurrency = 2;
  p.scenarios = {verified_pulls(4, 2, 2), ranges};
  const auto r = run_plan(p);
  ASSERT_EQ(r.scenarios.size(), 2u);
  const auto& pulls = r.scenarios[0];
  EXPECT_EQ(pulls.errors, 0u) << pulls.first_error;
  EXPECT_EQ(pulls.pulls_ok, 4u);
  const std::uint64_t blob_bytes =
      s.img.config.data.size() + s.img.layers[0].data.size() + s.img.layers[1].data.size();
  const std::uint64_t per_pull = s.index.data.size() + s.img.manifest.data.size() + blob_bytes;
  EXPECT_EQ(pulls.bytes, 4 * per_pull);
  // 2 clients × 2 connections to the registry, and as many to the storage host.
  EXPECT_EQ(pulls.connections, 8u);
  EXPECT_EQ(r.scenarios[1].ok, 20u) << r.scenarios[1].first_error;
  EXPECT_EQ(r.scenarios[1].bytes, 20u * 4096);
  EXPECT_EQ(storage.requests().size(), 4u * 3 + 20);
}

// Without the CA the handshake fails and every request counts as an error; --insecure skips
// the check; a certificate that names another address fails even with the CA.
TEST(LoadGeneratorTls, TheServersCertificateIsChecked) {
  const test_certificates certs;
  fake_registry reg(certs.server());
  fake_registry elsewhere(certs.server(), "127.0.0.2");  // the certificate names 127.0.0.1
  const served_image s;
  serve(reg, s);
  serve(elsewhere, s);
  const auto gets = [&s](const std::string& url) {
    scenario full;
    full.url = url + "/v2/demo/app/blobs/" + s.img.layers[0].digest.str();
    full.count = 3;
    return full;
  };
  plan p;
  p.scenarios = {gets(reg.url())};
  auto r = run_plan(p).scenarios[0];
  EXPECT_EQ(r.ok, 0u);
  EXPECT_EQ(r.errors, 3u);
  EXPECT_NE(r.first_error.find("TLS handshake"), std::string::npos) << r.first_error;
  EXPECT_TRUE(reg.requests().empty());

  p.insecure = true;
  r = run_plan(p).scenarios[0];
  EXPECT_EQ(r.ok, 3u) << r.first_error;
  EXPECT_EQ(r.connections, 1u);

  p.insecure = false;
  p.ca_file = certs.files.ca_cert;
  EXPECT_EQ(run_plan(p).scenarios[0].ok, 3u);
  p.scenarios = {gets(elsewhere.url())};
  r = run_plan(p).scenarios[0];
  EXPECT_EQ(r.ok, 0u);
  EXPECT_NE(r.first_error.find("TLS handshake"), std::string::npos) << r.first_error;
  EXPECT_TRUE(elsewhere.requests().empty());

  p.ca_file = (certs.dir.path() / "missing.pem").string();
  EXPECT_THROW((void)run_plan(p), std::runtime_error);
}

}  // namespace
}  // namespace layercache::loadtest
