// Issue 23 end to end: containerd pulls a private image through layercache (`access: client`)
// routed by `?ns=`, each `ctr --user` presenting its own credentials: containerd follows
// layercache's 401 to the token issuer named in the upstream's own challenge, and layercache
// confirms each token with the registry. A real docker-registry with `auth: token`; the
// issuer grants each user some repositories. Needs root and containerd; skipped without.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "tests/support/image.hpp"
#include "tests/support/layercache_instance.hpp"
#include "tests/support/process.hpp"
#include "tests/support/registry.hpp"
#include "tests/support/runtimes.hpp"
#include "tests/support/token_issuer.hpp"

namespace layercache::testing {
namespace {

using namespace std::chrono_literals;
constexpr std::size_t MiB = 1024 * 1024;

// The hosts.toml `server` is a dead port: only the mirror (layercache) can answer.
constexpr std::string_view dead_server = "http://127.0.0.1:9";

bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

// `ctr image pull` through the hosts dir, with `user` ("name:password") when not empty.
command_result ctr_pull(const containerd_process& containerd, const std::string& user,
                        const std::string& ref) {
  std::vector<std::string> args = {
      "image", "pull", "--hosts-dir", containerd.hosts_dir().string(), "--snapshotter", "native"};
  if (!user.empty()) {
    args.emplace_back("--user");
    args.push_back(user);
  }
  args.push_back(ref);
  return containerd.ctr(args, 180s);
}

// What containerd stored and verified on commit: the manifest and every blob of `img`.
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

// No blob of `img` in containerd's content store.
void expect_no_blob_of(const containerd_process& containerd, const image& img) {
  auto content = containerd.ctr({"content", "ls", "--quiet"}, 30s);
  ASSERT_EQ(content.exit_code, 0) << content.output;
  EXPECT_FALSE(contains(content.output, img.config.digest.str())) << content.output;
  for (const auto& layer : img.layers) {
    EXPECT_FALSE(contains(content.output, layer.digest.str())) << content.output;
  }
}

TEST(ContainerdClientAccess, PullsAPrivateImageOnlyWithCredentialsTheRegistryTakes) {
  if (auto why = runtime_unavailable({"containerd", "ctr"}); !why.empty()) GTEST_SKIP() << why;
  token_issuer issuer(token_issuer_options{
      .users = {{"alice", "alice-pw-e2e-41"}, {"bob", "bob-pw-e2e-93"}, {"pusher", "push-pw"}},
      .grants = {{"alice", {"team/private"}}, {"bob", {"team/public"}}, {"pusher", {"*"}}},
      .public_repositories = {"team/public"}});
  registry_process upstream(
      registry_options{.access_log = true,
                       .token_auth = registry_options::token_auth_options{
                           issuer.realm(), issuer.service(), issuer.issuer(), issuer.cert_file()}});
  const auto img = make_image(image_format::oci, {3 * MiB, 2 * MiB, 1 * MiB}, 2311);
  registry_pusher(upstream.url(), {}, std::pair{"pusher", "push-pw"})
      .push_image("team/private", "v1", img);
  const std::string realm_host = issuer.realm_host();
  // The default upstream is dead: only `ns=registry.example.com` reaches the real one.
  layercache_instance proxy(
      "upstreams:\n" + upstream_yaml("hub", dead_server, true) +
      upstream_yaml("example", upstream.url(), false,
                    "    aliases: [registry.example.com]\n    access: client\n"
                    "    access_ttl: 60s\n    auth:\n      type: anonymous\n"
                    "      realm_hosts: ['" +
                        realm_host + "']\n"));
  const std::string ref = "registry.example.com/team/private:v1";

  {
    containerd_process containerd;
    containerd.add_mirror("registry.example.com", dead_server, proxy.url());
    auto pull = ctr_pull(containerd, "alice:alice-pw-e2e-41", ref);
    ASSERT_EQ(pull.exit_code, 0) << pull.output << "\n--- containerd log ---\n" << containerd.log();
    expect_containerd_image(containerd, ref, img);
  }
  const auto seen = issuer.requests();
  EXPECT_TRUE(std::any_of(seen.begin(), seen.end(), [](const token_request& r) {
    return r.user == "alice" && r.status == 200 && !r.granted.empty();
  })) << "containerd did not fetch alice's token from the issuer";
  const auto gets = upstream.blob_requests();

  // Every blob is cached now; bob and an anonymous client still get none of it.
  for (const std::string user : {"bob:bob-pw-e2e-93", ""}) {
    SCOPED_TRACE(user.empty() ? "anonymous" : user);
    containerd_process containerd;
    containerd.add_mirror("registry.example.com", dead_server, proxy.url());
    auto pull = ctr_pull(containerd, user, ref);
    EXPECT_NE(pull.exit_code, 0) << pull.output;
    expect_no_blob_of(containerd, img);
    auto by_digest = ctr_pull(containerd, user,
                              "registry.example.com/team/private@" + img.manifest.digest.str());
    EXPECT_NE(by_digest.exit_code, 0) << by_digest.output;
    expect_no_blob_of(containerd, img);
  }

  // alice on a fresh containerd: served from layercache's store.
  {
    containerd_process fresh;
    fresh.add_mirror("registry.example.com", dead_server, proxy.url());
    auto pull = ctr_pull(fresh, "alice:alice-pw-e2e-41", ref);
    ASSERT_EQ(pull.exit_code, 0) << pull.output << "\n--- containerd log ---\n" << fresh.log();
    expect_containerd_image(fresh, ref, img);
  }
  EXPECT_EQ(upstream.blob_requests(), gets)
      << "a second pull must be served from layercache's store\n"
      << upstream.log();
}

}  // namespace
}  // namespace layercache::testing
