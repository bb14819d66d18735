// End to end: skopeo pulls multi-layer images through layercache from a real docker-registry;
// what lands on disk has exactly the upstream's digests.
#include <gtest/gtest.h>

#include <filesystem>

#include "oci/digest.hpp"
#include "tests/support/image.hpp"
#include "tests/support/layercache_instance.hpp"
#include "tests/support/process.hpp"
#include "tests/support/registry.hpp"

namespace layercache::testing {
namespace {

using namespace std::chrono_literals;
constexpr std::size_t MiB = 1024 * 1024;

// skopeo's dir: transport writes manifest.json and one file per blob, named by its hex digest.
void expect_pulled(const std::filesystem::path& dir, const image& img) {
  ASSERT_TRUE(std::filesystem::exists(dir / "manifest.json"));
  const std::string manifest = read_file(dir / "manifest.json");
  EXPECT_EQ(oci::digest_of(manifest), img.manifest.digest) << "manifest differs";
  std::vector<const blob*> blobs{&img.config};
  for (const auto& l : img.layers) blobs.push_back(&l);
  for (const auto* b : blobs) {
    const auto path = dir / std::string(b->digest.hex());
    ASSERT_TRUE(std::filesystem::exists(path)) << b->digest.str();
    EXPECT_EQ(std::filesystem::file_size(path), b->data.size());
    EXPECT_EQ(oci::digest_of(read_file(path)), b->digest) << b->digest.str();
  }
}

command_result skopeo_copy(const std::string& source, const std::filesystem::path& dest) {
  return run_command({"skopeo", "copy", "--quiet", "--src-tls-verify=false", "docker://" + source,
                      "dir:" + dest.string()},
                     180s);
}

class SkopeoPull : public ::testing::TestWithParam<image_format> {};

TEST_P(SkopeoPull, ThreeLayerImageByteForByte) {
  registry_process upstream;
  const auto img = make_image(GetParam(), {8 * MiB, 12 * MiB, 16 * MiB}, 77);
  registry_pusher(upstream.url()).push_image("e2e/app", "v1", img);
  layercache_instance proxy("upstreams:\n" + upstream_yaml("origin", upstream.url(), true) +
                            upstream_yaml("second", upstream.url(), false));
  const std::string at = "127.0.0.1:" + std::to_string(proxy.port());

  temp_dir out;
  auto by_tag = skopeo_copy(at + "/e2e/app:v1", out.path() / "by-tag");
  ASSERT_EQ(by_tag.exit_code, 0) << by_tag.output;
  expect_pulled(out.path() / "by-tag", img);

  auto by_digest =
      skopeo_copy(at + "/e2e/app@" + img.manifest.digest.str(), out.path() / "by-digest");
  ASSERT_EQ(by_digest.exit_code, 0) << by_digest.output;
  expect_pulled(out.path() / "by-digest", img);

  // dockerd-style path prefix naming a (non-default) upstream.
  auto prefixed = skopeo_copy(at + "/second/e2e/app:v1", out.path() / "prefixed");
  ASSERT_EQ(prefixed.exit_code, 0) << prefixed.output;
  expect_pulled(out.path() / "prefixed", img);
}

INSTANTIATE_TEST_SUITE_P(Formats, SkopeoPull,
                         ::testing::Values(image_format::oci, image_format::docker),
                         [](const auto& info) {
                           return info.param == image_format::oci ? "oci" : "docker";
                         });

TEST(SkopeoPullIndex, PlatformFromIndexThroughTlsUpstream) {
  registry_process upstream(registry_options{.tls = true});
  const auto amd = make_image(image_format::oci, {3 * MiB, 5 * MiB, 2 * MiB}, 90);
  const auto arm = make_image(image_format::oci, {1 * MiB}, 91, "arm64");
  const auto index = make_index(image_format::oci, {{&amd, "amd64"}, {&arm, "arm64"}});
  registry_pusher push(upstream.url(), upstream.ca_file());
  push.push_image("multi/app", "amd", amd);
  push.push_image("multi/app", "arm", arm);
  push.push_manifest("multi/app", "v1", index);
  layercache_instance proxy(
      "upstreams:\n" +
      upstream_yaml("origin", upstream.url(), true, "    ca_file: " + upstream.ca_file() + "\n"));
  temp_dir out;
  auto r = run_command({"skopeo", "copy", "--quiet", "--src-tls-verify=false", "--override-arch",
                        "amd64", "--override-os", "linux",
                        "docker://127.0.0.1:" + std::to_string(proxy.port()) + "/multi/app:v1",
                        "dir:" + (out.path() / "amd").string()},
                       180s);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  expect_pulled(out.path() / "amd", amd);
}

}  // namespace
}  // namespace layercache::testing
