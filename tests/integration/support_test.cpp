// The test fixtures themselves, against the real docker-registry, skopeo, tar and openssl.
#include <arpa/inet.h>
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <chrono>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <thread>

#include "tests/support/file_server.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/image.hpp"
#include "tests/support/process.hpp"
#include "tests/support/registry.hpp"

namespace layercache::testing {
namespace {

using namespace std::chrono_literals;
namespace json = boost::json;

constexpr auto command_timeout = 60s;

const header_list& accept_manifests() {
  static const header_list headers{{"Accept", std::string(media_type::accept_all_manifests)}};
  return headers;
}

std::string blob_path(std::string_view repo, const blob& b) {
  return "/v2/" + std::string(repo) + "/blobs/" + b.digest.str();
}

// Polls until `done()` or the deadline; returns whether it became true.
template <class Predicate>
bool eventually(Predicate done, std::chrono::milliseconds timeout = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

TEST(Process, RunCommandCapturesOutputAndExitCode) {
  const auto r = run_command({"sh", "-c", "echo out; echo err >&2; exit 3"}, command_timeout);
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.output.find("out\n"), std::string::npos);
  EXPECT_NE(r.output.find("err\n"), std::string::npos);
}

TEST(Process, RunCommandKillsOnTimeout) {
  const auto start = std::chrono::steady_clock::now();
  const auto r = run_command({"sleep", "30"}, 200ms);
  EXPECT_TRUE(r.timed_out);
  EXPECT_EQ(r.exit_code, -1);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 20s);
}

TEST(Process, RunCommandThrowsForMissingProgram) {
  EXPECT_THROW((void)run_command({"/nonexistent/layercache-tool"}, command_timeout),
               std::system_error);
}

TEST(Process, ChildProcessEnvironmentLogAndExitCode) {
  temp_dir dir;
  child_process p({"sh", "-c", "echo \"var=$LAYERCACHE_TEST_VAR\"; exit 7"}, dir.path() / "log",
                  {{"LAYERCACHE_TEST_VAR", "hello"}});
  EXPECT_EQ(p.wait(command_timeout), 7);
  EXPECT_FALSE(p.running());
  EXPECT_EQ(p.log(), "var=hello\n");
}

TEST(Process, ChildProcessStopTerminatesAndIsIdempotent) {
  temp_dir dir;
  child_process p({"sh", "-c", "echo started; exec sleep 30"}, dir.path() / "log");
  ASSERT_TRUE(eventually([&] { return p.log() == "started\n"; }));
  EXPECT_TRUE(p.running());
  EXPECT_EQ(p.stop(5s), 128 + SIGTERM);
  EXPECT_FALSE(p.running());
  EXPECT_EQ(p.stop(), 128 + SIGTERM);
}

TEST(Process, SanitizerReportIsFound) {
  EXPECT_EQ(sanitizer_report(""), "");
  EXPECT_EQ(sanitizer_report("info: started\npanic: runtime error: index out of range [3]\n"), "");
  EXPECT_EQ(sanitizer_report("a\n==12==ERROR: AddressSanitizer: heap-use-after-free on\n#0"),
            "==12==ERROR: AddressSanitizer: heap-use-after-free on\n#0");
  EXPECT_EQ(sanitizer_report("x\nWARNING: ThreadSanitizer: data race (pid=3)\n"),
            "WARNING: ThreadSanitizer: data race (pid=3)\n");
  EXPECT_EQ(sanitizer_report("==9==ERROR: LeakSanitizer: detected memory leaks"),
            "==9==ERROR: LeakSanitizer: detected memory leaks");
  EXPECT_EQ(sanitizer_report("ok\nserver/a.cpp:12:7: runtime error: signed integer overflow\n"),
            "server/a.cpp:12:7: runtime error: signed integer overflow\n");
  EXPECT_EQ(sanitizer_report(std::string(20000, 'x') +
                             "\nERROR: AddressSanitizer: " + std::string(20000, 'y'))
                .size(),
            std::size_t{8 * 1024});
}

// A child (layercached, layercachectl) whose sanitizer reports something fails the test that
// ran it, even when the test never reads its exit status or log.
TEST(Process, SanitizerReportInAChildFailsTheTest) {
  EXPECT_NONFATAL_FAILURE(
      {
        temp_dir dir;
        child_process p({"sh", "-c", "echo '==7==ERROR: AddressSanitizer: heap-buffer-overflow'"},
                        dir.path() / "log");
        (void)p.wait(command_timeout);
      },
      "heap-buffer-overflow");
  EXPECT_NONFATAL_FAILURE(
      {
        temp_dir dir;
        child_process p(
            {"sh", "-c", "echo 'x.cpp:3:9: runtime error: load of value 7'; exec sleep 30"},
            dir.path() / "log");
        (void)eventually([&] { return !p.log().empty(); });
        (void)p.stop(5s);
      },
      "load of value 7");
  EXPECT_NONFATAL_FAILURE(
      (void)run_command({"sh", "-c", "echo 'WARNING: ThreadSanitizer: data race' >&2"},
                        command_timeout),
      "data race");
}

TEST(Process, TempDirIsRemovedWithItsContents) {
  std::filesystem::path path;
  {
    temp_dir dir;
    path = dir.path();
    std::filesystem::create_directories(path / "a" / "b");
    write_file(path / "a" / "b" / "f", "x", 0600);
    EXPECT_EQ(std::filesystem::status(path / "a" / "b" / "f").permissions(),
              std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    EXPECT_EQ(read_file(path / "a" / "b" / "f"), "x");
  }
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(Process, FreePortIsNonZero) { EXPECT_NE(free_port(), 0); }

TEST(HttpClient, Base64AndBasicAuth) {
  EXPECT_EQ(base64_encode(""), "");
  EXPECT_EQ(base64_encode("f"), "Zg==");
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  EXPECT_EQ(base64_encode("foo"), "Zm9v");
  EXPECT_EQ(base64_encode("foob"), "Zm9vYg==");
  EXPECT_EQ(basic_auth_header("Aladdin", "open sesame"), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
}

TEST(HttpClient, ConnectionRefusedThrows) {
  http_client client;
  const auto url = "http://127.0.0.1:" + std::to_string(free_port()) + "/";
  try {
    (void)client.get(url);
    ADD_FAILURE() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("connect"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)client.get("ftp://127.0.0.1/"), std::runtime_error);
}

TEST(HttpClient, TimesOutOnSilentServer) {
  // A listening socket that never accepts: the kernel completes the handshake, nobody answers.
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 8), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const auto url = "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) + "/v2/";
  try {
    (void)http_client().request("GET", url, {}, {}, 200ms);
    ADD_FAILURE() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("timeout"), std::string::npos) << e.what();
  }
  ::close(fd);
}

TEST(Image, RandomBytesAreDeterministic) {
  EXPECT_EQ(random_bytes(1001, 42), random_bytes(1001, 42));
  EXPECT_NE(random_bytes(1001, 42), random_bytes(1001, 43));
  EXPECT_EQ(random_bytes(1001, 42).substr(0, 500), random_bytes(500, 42));
}

TEST(Image, TarLayerUnpacksWithTar) {
  temp_dir dir;
  for (std::size_t size : {0u, 1u, 511u, 512u, 513u, 100000u}) {
    SCOPED_TRACE(size);
    const auto tar = make_tar_layer(size, 7, "payload.bin");
    EXPECT_EQ(tar.size() % 512, 0u);
    const auto archive = dir.path() / "layer.tar";
    write_file(archive, tar);
    const auto out = dir.path() / ("out" + std::to_string(size));
    std::filesystem::create_directories(out);
    const auto r =
        run_command({"tar", "-xf", archive.string(), "-C", out.string()}, command_timeout);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_TRUE(r.output.empty()) << r.output;  // no "checksum error" or similar warnings
    EXPECT_EQ(read_file(out / "payload.bin"), random_bytes(size, 7));
  }
}

TEST(Image, ImageManifestAndConfigAreConsistent) {
  const auto img = make_image(image_format::oci, {1000, 2000}, 5, "arm64");
  const auto manifest = json::parse(img.manifest.data).as_object();
  EXPECT_EQ(manifest.at("mediaType").as_string(), media_type::oci_manifest);
  EXPECT_EQ(manifest.at("config").at("digest").as_string(), img.config.digest.str());
  ASSERT_EQ(img.layers.size(), 2u);
  const auto& layers = manifest.at("layers").as_array();
  const auto config = json::parse(img.config.data).as_object();
  EXPECT_EQ(config.at("architecture").as_string(), "arm64");
  const auto& diff_ids = config.at("rootfs").at("diff_ids").as_array();
  for (std::size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(layers[i].at("digest").as_string(), img.layers[i].digest.str());
    EXPECT_EQ(layers[i].at("size").as_int64(),
              static_cast<std::int64_t>(img.layers[i].data.size()));
    EXPECT_EQ(diff_ids[i].as_string(), img.layers[i].digest.str());
  }
  EXPECT_EQ(make_image(image_format::oci, {1000, 2000}, 5, "arm64").manifest.digest,
            img.manifest.digest);
}

TEST(FileServer, ServesFilesRangesAndRecordsRequests) {
  temp_dir root;
  std::filesystem::create_directories(root.path() / "a");
  const auto data = random_bytes(1000, 1);
  write_file(root.path() / "a" / "b.bin", data);
  file_server server(root.path());
  http_client client;
  const auto url = server.url() + "/a/b.bin";

  auto full = client.get(url, {{"X-Test", "1"}});
  EXPECT_EQ(full.status, 200u);
  EXPECT_EQ(full.body, data);
  EXPECT_EQ(full.header("accept-ranges"), "bytes");

  auto head = client.head(url);
  EXPECT_EQ(head.status, 200u);
  EXPECT_EQ(head.header("Content-Length"), "1000");
  EXPECT_TRUE(head.body.empty());

  struct range_case {
    const char* range;
    std::size_t first;
    std::size_t last;
  };
  for (const auto& c : {range_case{"bytes=10-19", 10, 19}, range_case{"bytes=990-", 990, 999},
                        range_case{"bytes=-5", 995, 999}, range_case{"bytes=900-5000", 900, 999}}) {
    SCOPED_TRACE(c.range);
    auto res = client.get(url, {{"Range", c.range}});
    EXPECT_EQ(res.status, 206u);
    EXPECT_EQ(res.body, data.substr(c.first, c.last - c.first + 1));
    EXPECT_EQ(res.header("Content-Range"),
              "bytes " + std::to_string(c.first) + "-" + std::to_string(c.last) + "/1000");
  }
  auto unsatisfiable = client.get(url, {{"Range", "bytes=1000-"}});
  EXPECT_EQ(unsatisfiable.status, 416u);
  EXPECT_EQ(unsatisfiable.header("Content-Range"), "bytes */1000");
  EXPECT_EQ(client.get(url, {{"Range", "bytes=1-2,5-6"}}).status, 200u);

  EXPECT_EQ(client.get(server.url() + "/a/missing").status, 404u);
  EXPECT_EQ(client.get(server.url() + "/a/../a/b.bin").status, 400u);
  EXPECT_EQ(client.get(server.url() + "/a/%2e%2e/a/b.bin").status, 400u);
  EXPECT_EQ(client.get(server.url() + "/a%2fb.bin").status, 400u);
  EXPECT_EQ(client.request("POST", url).status, 405u);

  const auto requests = server.requests();
  ASSERT_EQ(requests.size(), 13u);
  EXPECT_EQ(requests[0].method, "GET");
  EXPECT_EQ(requests[0].target, "/a/b.bin");
  EXPECT_EQ(requests[0].header("x-test"), "1");
  EXPECT_EQ(requests[1].method, "HEAD");
  server.clear_requests();
  EXPECT_TRUE(server.requests().empty());
}

class PlainRegistry : public ::testing::Test {
 protected:
  registry_process registry_;
  http_client client_;
};

TEST_F(PlainRegistry, PushAndPullImagesAndIndexes) {
  const auto oci_amd64 =
      make_image(image_format::oci, {(1 << 20) + 123, 2 << 20, (3 << 20) + 7}, 1);
  const auto oci_arm64 = make_image(image_format::oci, {4096, 8192}, 2, "arm64");
  const auto docker = make_image(image_format::docker, {(1 << 20) + 5, 70000}, 3);
  const auto oci_index =
      make_index(image_format::oci, {{&oci_amd64, "amd64"}, {&oci_arm64, "arm64"}});
  const auto docker_list = make_index(image_format::docker, {{&docker, "amd64"}});

  registry_pusher pusher(registry_.url());
  pusher.push_image("test/oci", "amd64", oci_amd64);
  pusher.push_image("test/oci", "arm64", oci_arm64);
  pusher.push_manifest("test/oci", "multi", oci_index);
  pusher.push_image("test/docker", "latest", docker);
  pusher.push_image("test/docker", "latest", docker);  // blobs exist now: HEAD short-cuts
  pusher.push_manifest("test/docker", "list", docker_list);

  struct manifest_case {
    std::string repo;
    std::string tag;
    const blob* manifest;
  };
  for (const auto& c : {manifest_case{"test/oci", "amd64", &oci_amd64.manifest},
                        manifest_case{"test/oci", "multi", &oci_index},
                        manifest_case{"test/docker", "latest", &docker.manifest},
                        manifest_case{"test/docker", "list", &docker_list}}) {
    for (const auto& reference : {c.tag, c.manifest->digest.str()}) {
      SCOPED_TRACE(c.repo + ":" + reference);
      const auto url = registry_.url() + "/v2/" + c.repo + "/manifests/" + reference;
      auto res = client_.get(url, accept_manifests());
      ASSERT_EQ(res.status, 200u) << res.body;
      EXPECT_EQ(res.body, c.manifest->data);
      EXPECT_EQ(res.header("Content-Type"), c.manifest->media_type);
      EXPECT_EQ(res.header("Docker-Content-Digest"), c.manifest->digest.str());
      auto head = client_.head(url, accept_manifests());
      EXPECT_EQ(head.status, 200u);
      EXPECT_EQ(head.header("Content-Length"), std::to_string(c.manifest->data.size()));
    }
  }

  const auto& layer = oci_amd64.layers[2];
  auto res = client_.get(registry_.url() + blob_path("test/oci", layer));
  ASSERT_EQ(res.status, 200u);
  EXPECT_EQ(res.body.size(), layer.data.size());
  EXPECT_EQ(oci::digest_of(res.body), layer.digest);
  EXPECT_EQ(res.header("Docker-Content-Digest"), layer.digest.str());
  EXPECT_EQ(res.header("Content-Type"), "application/octet-stream");

  auto range = client_.get(registry_.url() + blob_path("test/oci", layer),
                           {{"Range", "bytes=1048576-1049599"}});
  ASSERT_EQ(range.status, 206u);
  EXPECT_EQ(range.body, layer.data.substr(1048576, 1024));
  EXPECT_EQ(range.header("Content-Range"),
            "bytes 1048576-1049599/" + std::to_string(layer.data.size()));

  // The layer is a file of the registry's filesystem storage, as a file_server would serve it.
  const auto hex = std::string(layer.digest.hex());
  EXPECT_EQ(read_file(std::filesystem::path(registry_.root_dir()) /
                      "docker/registry/v2/blobs/sha256" / hex.substr(0, 2) / hex / "data"),
            layer.data);

  EXPECT_EQ(client_.get(registry_.url() + "/v2/test/oci/manifests/nope", accept_manifests()).status,
            404u);
  EXPECT_EQ(client_.get(registry_.url() + blob_path("test/docker", layer)).status, 404u);
}

// docker-registry 2.8 picks what to return for a manifest by the Accept header: a proxy that
// drops or rewrites Accept gets other bytes (or none) back.
TEST_F(PlainRegistry, ManifestResponseDependsOnAccept) {
  const auto docker = make_image(image_format::docker, {1000}, 51);
  const auto oci = make_image(image_format::oci, {1000}, 52);
  registry_pusher pusher(registry_.url());
  pusher.push_image("accept/docker", "v1", docker);
  pusher.push_image("accept/oci", "v1", oci);
  const auto url = [&](std::string_view repo, std::string_view reference) {
    return registry_.url() + "/v2/" + std::string(repo) + "/manifests/" + std::string(reference);
  };
  for (const auto& headers : {header_list{}, header_list{{"Accept", "*/*"}}}) {
    SCOPED_TRACE(headers.empty() ? "no Accept" : "Accept: */*");
    // A Docker schema 2 manifest by tag comes back converted to signed schema 1.
    auto converted = client_.get(url("accept/docker", "v1"), headers);
    EXPECT_EQ(converted.status, 200u);
    EXPECT_EQ(converted.header("Content-Type"),
              "application/vnd.docker.distribution.manifest.v1+prettyjws");
    EXPECT_NE(converted.header("Docker-Content-Digest"), docker.manifest.digest.str());
    // By digest it comes back as stored.
    auto stored = client_.get(url("accept/docker", docker.manifest.digest.str()), headers);
    EXPECT_EQ(stored.status, 200u);
    EXPECT_EQ(stored.body, docker.manifest.data);
    // An OCI manifest is refused either way.
    for (const auto& reference : {std::string("v1"), oci.manifest.digest.str()}) {
      auto refused = client_.get(url("accept/oci", reference), headers);
      EXPECT_EQ(refused.status, 404u);
      EXPECT_NE(refused.body.find("MANIFEST_UNKNOWN"), std::string::npos) << refused.body;
    }
  }
}

TEST_F(PlainRegistry, SkopeoInspectsPushedImage) {
  const auto img = make_image(image_format::oci, {10000, 20000}, 11);
  registry_pusher(registry_.url()).push_image("skopeo/test", "v1", img);
  const auto r = run_command({"skopeo", "inspect", "--tls-verify=false",
                              "docker://" + registry_.host() + "/skopeo/test:v1"},
                             command_timeout);
  ASSERT_FALSE(r.timed_out) << r.output;
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(img.manifest.digest.str()), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(img.layers[1].digest.str()), std::string::npos) << r.output;
}

// skopeo copy checks every digest and the config's diff_ids, for both formats and an index.
TEST_F(PlainRegistry, SkopeoCopiesDockerImageAndIndex) {
  const auto docker = make_image(image_format::docker, {10000, 30000}, 13);
  const auto amd64 = make_image(image_format::oci, {5000}, 14);
  const auto arm64 = make_image(image_format::oci, {6000}, 15, "arm64");
  const auto index = make_index(image_format::oci, {{&amd64, "amd64"}, {&arm64, "arm64"}});
  registry_pusher pusher(registry_.url());
  pusher.push_image("skopeo/docker", "v1", docker);
  pusher.push_image("skopeo/multi", "amd64", amd64);
  pusher.push_image("skopeo/multi", "arm64", arm64);
  pusher.push_manifest("skopeo/multi", "v1", index);

  temp_dir out;
  const auto docker_dir = (out.path() / "docker").string();
  auto r = run_command({"skopeo", "copy", "--src-tls-verify=false",
                        "docker://" + registry_.host() + "/skopeo/docker:v1", "dir:" + docker_dir},
                       command_timeout);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(read_file(std::filesystem::path(docker_dir) / docker.layers[1].digest.hex()),
            docker.layers[1].data);

  r = run_command({"skopeo", "copy", "--all", "--src-tls-verify=false",
                   "docker://" + registry_.host() + "/skopeo/multi:v1",
                   "oci:" + (out.path() / "multi").string() + ":v1"},
                  command_timeout);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // The oci: destination gzips layers, so only the configs keep their digests.
  EXPECT_EQ(read_file(out.path() / "multi/blobs/sha256" / arm64.config.digest.hex()),
            arm64.config.data);
}

TEST_F(PlainRegistry, StopAndRestartKeepStorage) {
  const auto img = make_image(image_format::docker, {1000}, 12);
  registry_pusher(registry_.url()).push_image("restart/test", "v1", img);
  registry_.stop();
  EXPECT_FALSE(registry_.running());
  EXPECT_THROW((void)client_.get(registry_.url() + "/v2/"), std::runtime_error);
  registry_.restart();
  EXPECT_TRUE(registry_.running());
  auto res = client_.get(registry_.url() + "/v2/restart/test/manifests/v1", accept_manifests());
  EXPECT_EQ(res.status, 200u);
  EXPECT_EQ(res.body, img.manifest.data);
}

TEST(TlsRegistry, VerifiesAgainstGeneratedCa) {
  registry_process registry({.tls = true});
  ASSERT_FALSE(registry.ca_file().empty());
  EXPECT_EQ(registry.url(), "https://" + registry.host());

  http_client trusting(registry.ca_file());
  EXPECT_EQ(trusting.get(registry.url() + "/v2/").status, 200u);
  // The certificate also names localhost (SNI and DNS SAN path).
  EXPECT_EQ(trusting.get("https://localhost:" + std::to_string(registry.port()) + "/v2/").status,
            200u);

  const auto img = make_image(image_format::oci, {300000}, 21);
  registry_pusher(registry.url(), registry.ca_file()).push_image("tls/test", "v1", img);
  auto res = trusting.get(registry.url() + blob_path("tls/test", img.layers[0]));
  EXPECT_EQ(res.body, img.layers[0].data);

  http_client system_trust;
  EXPECT_THROW((void)system_trust.get(registry.url() + "/v2/"), std::runtime_error);
  // Go answers plain HTTP on a TLS port with a 400 instead of closing the connection.
  EXPECT_EQ(http_client().get("http://" + registry.host() + "/v2/").status, 400u);

  // skopeo trusts a directory of *.crt CA files.
  temp_dir certs;
  write_file(certs.path() / "ca.crt", read_file(registry.ca_file()));
  const auto r = run_command({"skopeo", "inspect", "--cert-dir", certs.path().string(),
                              "docker://" + registry.host() + "/tls/test:v1"},
                             command_timeout);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(img.manifest.digest.str()), std::string::npos) << r.output;
}

TEST(HtpasswdRegistry, RequiresBasicCredentials) {
  registry_process registry({.htpasswd = std::pair<std::string, std::string>{"alice", "s3cret"}});
  http_client client;
  auto anonymous = client.get(registry.url() + "/v2/");
  EXPECT_EQ(anonymous.status, 401u);
  EXPECT_EQ(anonymous.header("WWW-Authenticate"), "Basic realm=\"layercache-test\"");
  EXPECT_EQ(
      client.get(registry.url() + "/v2/", {{"Authorization", basic_auth_header("alice", "no")}})
          .status,
      401u);
  EXPECT_EQ(
      client.get(registry.url() + "/v2/", {{"Authorization", basic_auth_header("alice", "s3cret")}})
          .status,
      200u);

  const auto img = make_image(image_format::docker, {5000}, 31);
  EXPECT_THROW(registry_pusher(registry.url()).push_image("auth/test", "v1", img),
               std::runtime_error);
  registry_pusher(registry.url(), {}, std::pair<std::string, std::string>{"alice", "s3cret"})
      .push_image("auth/test", "v1", img);
  EXPECT_EQ(client
                .get(registry.url() + "/v2/auth/test/manifests/v1",
                     {{"Accept", std::string(media_type::docker_manifest)},
                      {"Authorization", basic_auth_header("alice", "s3cret")}})
                .body,
            img.manifest.data);
}

TEST(RedirectRegistry, BlobGetsRedirectToFileServer) {
  temp_dir storage;
  file_server files(storage.path());
  const std::pair<std::string, std::string> user{"bob", "pw"};
  registry_process registry(
      {.htpasswd = user, .redirect_base_url = files.url(), .storage_dir = storage.path()});
  EXPECT_EQ(registry.root_dir(), storage.path().string());

  const auto img = make_image(image_format::oci, {200000, 3000}, 41);
  registry_pusher(registry.url(), {}, user).push_image("redirect/test", "v1", img);
  registry_pusher(registry.url(), {}, user).push_image("redirect/test", "v1", img);  // HEAD → 307

  http_client client;
  const header_list auth{{"Authorization", basic_auth_header(user.first, user.second)}};
  const auto& layer = img.layers[0];
  auto redirect = client.get(registry.url() + blob_path("redirect/test", layer), auth);
  ASSERT_EQ(redirect.status, 307u) << redirect.body;
  const auto location = redirect.header("Location");
  ASSERT_TRUE(location);
  const auto hex = std::string(layer.digest.hex());
  EXPECT_EQ(*location, files.url() + "/docker/registry/v2/blobs/sha256/" + hex.substr(0, 2) + "/" +
                           hex + "/data");

  files.clear_requests();
  auto fetched = client.get(*location);
  ASSERT_EQ(fetched.status, 200u);
  EXPECT_EQ(fetched.body, layer.data);
  auto part = client.get(*location, {{"Range", "bytes=100-199"}});
  EXPECT_EQ(part.status, 206u);
  EXPECT_EQ(part.body, layer.data.substr(100, 100));

  // Manifests are never redirected.
  auto manifest = client.get(registry.url() + "/v2/redirect/test/manifests/v1",
                             {{"Accept", std::string(media_type::oci_manifest)}, auth[0]});
  EXPECT_EQ(manifest.status, 200u);
  EXPECT_EQ(manifest.body, img.manifest.data);

  const auto requests = files.requests();
  ASSERT_EQ(requests.size(), 2u);
  for (const auto& r : requests) EXPECT_FALSE(r.header("Authorization")) << r.target;
}

}  // namespace
}  // namespace layercache::testing
