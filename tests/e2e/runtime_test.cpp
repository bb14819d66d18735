// End to end with the real runtimes a node runs: dockerd pointed at layercache through
// `registry-mirrors`, and containerd through a hosts.toml mirror routed by `?ns=`. Both pull
// from a real docker-registry that only layercache knows the address of, so a successful pull
// proves layercache served it; both compare what the runtime stored with the upstream's
// digests; and a second pull by a fresh runtime (new data dir) must not send one blob request
// upstream. Needs root and Debian's docker.io / containerd; skipped (visibly) without them.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "oci/digest.hpp"
#include "tests/support/image.hpp"
#include "tests/support/layercache_instance.hpp"
#include "tests/support/process.hpp"
#include "tests/support/registry.hpp"
#include "tests/support/runtimes.hpp"

namespace layercache::testing {
namespace {

using namespace std::chrono_literals;
constexpr std::size_t MiB = 1024 * 1024;

bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

// What dockerd stored for `ref` is the upstream's image: its ID is the config digest, its
// layers' diff IDs are the (uncompressed) layer digests, and it records the manifest digest.
void expect_docker_image(const dockerd_process& dockerd, const std::string& ref, const image& img) {
  auto id = dockerd.docker({"image", "inspect", "--format", "{{.Id}}", ref}, 30s);
  ASSERT_EQ(id.exit_code, 0) << id.output;
  EXPECT_TRUE(contains(id.output, img.config.digest.str())) << id.output;
  auto layers =
      dockerd.docker({"image", "inspect", "--format", "{{json .RootFS.Layers}}", ref}, 30s);
  ASSERT_EQ(layers.exit_code, 0) << layers.output;
  std::string expected = "[";
  for (std::size_t i = 0; i < img.layers.size(); ++i) {
    expected += (i ? ",\"" : "\"") + img.layers[i].digest.str() + "\"";
  }
  expected += "]";
  EXPECT_TRUE(contains(layers.output, expected)) << layers.output << " vs " << expected;
  auto digests =
      dockerd.docker({"image", "inspect", "--format", "{{json .RepoDigests}}", ref}, 30s);
  ASSERT_EQ(digests.exit_code, 0) << digests.output;
  EXPECT_TRUE(contains(digests.output, "@" + img.manifest.digest.str())) << digests.output;
}

TEST(Dockerd, PullsADockerHubNameThroughTheMirrorAndAFreshDaemonSendsNoBlobUpstream) {
  if (auto why = runtime_unavailable({"dockerd", "docker", "containerd", "runc"}); !why.empty()) {
    GTEST_SKIP() << why;
  }
  registry_process upstream(registry_options{.access_log = true});
  const auto img = make_image(image_format::docker, {4 * MiB, 6 * MiB, 1 * MiB}, 501);
  // `docker pull lcdemo:v1` means docker.io/library/lcdemo:v1; dockerd asks its mirror for
  // /v2/library/lcdemo/... without any ns=, which layercache sends to its default upstream.
  registry_pusher(upstream.url()).push_image("library/lcdemo", "v1", img);
  // The second upstream is how deploy/batch/job.json pulls from Artifact Registry: dockerd
  // treats 127.0.0.0/8 registries as plain-HTTP, so `127.0.0.1:5000/<upstream>/<repo>` works
  // without an insecure-registries entry.
  registry_pusher(upstream.url()).push_image("project/repo/app", "v2", img);
  layercache_instance proxy("upstreams:\n" + upstream_yaml("hub", upstream.url(), true) +
                            upstream_yaml("europe-docker.pkg.dev", upstream.url(), false));
  const auto before = upstream.blob_requests({"GET", "HEAD"});

  {
    dockerd_process dockerd(proxy.url());
    auto pull = dockerd.docker({"pull", "lcdemo:v1"}, 180s);
    ASSERT_EQ(pull.exit_code, 0) << pull.output << "\n--- dockerd log ---\n" << dockerd.log();
    expect_docker_image(dockerd, "lcdemo:v1", img);
    // Pull by digest too: the mirror serves manifests by digest as well as by tag.
    auto by_digest = dockerd.docker({"pull", "lcdemo@" + img.manifest.digest.str()}, 180s);
    ASSERT_EQ(by_digest.exit_code, 0) << by_digest.output;
    const std::string prefixed =
        "127.0.0.1:" + std::to_string(proxy.port()) + "/europe-docker.pkg.dev/project/repo/app:v2";
    auto by_prefix = dockerd.docker({"pull", prefixed}, 180s);
    ASSERT_EQ(by_prefix.exit_code, 0) << by_prefix.output;
    expect_docker_image(dockerd, prefixed, img);
  }
  const auto after_first = upstream.blob_requests({"GET", "HEAD"});
  EXPECT_GT(after_first, before) << "the first pull must have come from the upstream";

  {
    dockerd_process fresh(proxy.url());  // a new node: empty data root
    auto pull = fresh.docker({"pull", "lcdemo:v1"}, 180s);
    ASSERT_EQ(pull.exit_code, 0) << pull.output << "\n--- dockerd log ---\n" << fresh.log();
    expect_docker_image(fresh, "lcdemo:v1", img);
  }
  EXPECT_EQ(upstream.blob_requests({"GET", "HEAD"}), after_first)
      << "a second pull must be served from layercache's store\n"
      << upstream.log();
}

// `ctr` output lists every blob containerd stored and verified on commit.
void expect_containerd_image(const containerd_process& containerd, const std::string& ref,
                             const image& img) {
  auto images = containerd.ctr({"image", "ls"}, 30s);
  ASSERT_EQ(images.exit_code, 0) << images.output;
  EXPECT_TRUE(contains(images.output, ref)) << images.output;
  EXPECT_TRUE(contains(images.output, img.manifest.digest.str())) << images.output;
  auto content = containerd.ctr({"content", "ls", "--quiet"}, 30s);
  ASSERT_EQ(content.exit_code, 0) << content.output;
  EXPECT_TRUE(contains(content.output, img.config.digest.str())) << content.output;
  for (const auto& layer : img.layers) {
    EXPECT_TRUE(contains(content.output, layer.digest.str())) << content.output;
  }
}

// The hosts.toml `server` is a dead port: only the mirror (layercache) can answer.
constexpr std::string_view dead_server = "http://127.0.0.1:9";

std::vector<std::string> ctr_pull(const containerd_process& containerd, const std::string& ref) {
  // The native snapshotter unpacks without overlayfs, which a test sandbox may not have;
  // unpacking checks every layer against the config's diff IDs.
  return {"image",  "pull", "--hosts-dir", containerd.hosts_dir().string(), "--snapshotter",
          "native", ref};
}

TEST(Containerd, PullsAnotherRegistrysImageRoutedByNsAndAFreshRootSendsNoBlobUpstream) {
  if (auto why = runtime_unavailable({"containerd", "ctr"}); !why.empty()) GTEST_SKIP() << why;
  registry_process upstream(registry_options{.access_log = true});
  const auto img = make_image(image_format::oci, {3 * MiB, 5 * MiB, 2 * MiB}, 601);
  registry_pusher(upstream.url()).push_image("team/app", "v1", img);
  // The default upstream is dead: only `ns=registry.example.com` reaches the real one.
  layercache_instance proxy(
      "upstreams:\n" + upstream_yaml("hub", dead_server, true) +
      upstream_yaml("example", upstream.url(), false, "    aliases: [registry.example.com]\n"));
  const std::string ref = "registry.example.com/team/app:v1";
  const auto before = upstream.blob_requests({"GET", "HEAD"});

  {
    containerd_process containerd;
    containerd.add_mirror("registry.example.com", dead_server, proxy.url());
    auto pull = containerd.ctr(ctr_pull(containerd, ref), 180s);
    ASSERT_EQ(pull.exit_code, 0) << pull.output << "\n--- containerd log ---\n" << containerd.log();
    expect_containerd_image(containerd, ref, img);
  }
  const auto after_first = upstream.blob_requests({"GET", "HEAD"});
  EXPECT_GT(after_first, before) << "the first pull must have come from the upstream";

  {
    containerd_process fresh;
    fresh.add_mirror("registry.example.com", dead_server, proxy.url());
    auto pull = fresh.ctr(ctr_pull(fresh, ref), 180s);
    ASSERT_EQ(pull.exit_code, 0) << pull.output << "\n--- containerd log ---\n" << fresh.log();
    expect_containerd_image(fresh, ref, img);
    // By digest as well.
    auto by_digest = fresh.ctr(
        ctr_pull(fresh, "registry.example.com/team/app@" + img.manifest.digest.str()), 180s);
    ASSERT_EQ(by_digest.exit_code, 0) << by_digest.output;
  }
  EXPECT_EQ(upstream.blob_requests({"GET", "HEAD"}), after_first)
      << "a second pull must be served from layercache's store\n"
      << upstream.log();
}

TEST(Containerd, ARegistryLayercacheDoesNotKnowIsRefusedNotProxied) {
  if (auto why = runtime_unavailable({"containerd", "ctr"}); !why.empty()) GTEST_SKIP() << why;
  registry_process upstream(registry_options{.access_log = true});
  const auto img = make_image(image_format::oci, {1 * MiB}, 602);
  registry_pusher(upstream.url()).push_image("team/app", "v1", img);
  // The real upstream is also the default: a refused ns= must not fall back to it.
  layercache_instance proxy(
      "upstreams:\n" + upstream_yaml("hub", upstream.url(), true) +
      upstream_yaml("example", upstream.url(), false, "    aliases: [registry.example.com]\n"));
  const auto requests_before = upstream.log().size();

  containerd_process containerd;
  // A node whose hosts.toml sends other registries to layercache too: layercache must not
  // become an open proxy for them (another name, another port on loopback, the metadata
  // server's address).
  const std::vector<std::string> hosts{
      "other.example.org", "127.0.0.1:" + std::to_string(free_port()), "169.254.169.254"};
  for (const auto& host : hosts) {
    SCOPED_TRACE(host);
    containerd.add_mirror(host, dead_server, proxy.url());
    auto pull = containerd.ctr(ctr_pull(containerd, host + "/team/app:v1"), 60s);
    EXPECT_NE(pull.exit_code, 0) << pull.output;
  }
  EXPECT_EQ(upstream.log().size(), requests_before)
      << "no request may reach an upstream for a registry that was not configured:\n"
      << upstream.log().substr(requests_before);
}

}  // namespace
}  // namespace layercache::testing
