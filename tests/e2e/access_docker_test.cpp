// upstream.access: client with a real dockerd (registry-mirrors): a private repository of a
// token-auth docker-registry is pulled through layercache with the credentials the docker CLI
// holds for Docker Hub (what `docker login` stores; dockerd answers the mirror's challenge with
// them at the registry's token realm), and refused to a daemon without them — even once
// layercache has the image cached. Root and Debian's docker.io; skipped (visibly) without them.
#include <gtest/gtest.h>

#include "tests/support/image.hpp"
#include "tests/support/layercache_instance.hpp"
#include "tests/support/registry.hpp"
#include "tests/support/runtimes.hpp"
#include "tests/support/token_issuer.hpp"

namespace layercache::testing {
namespace {

using namespace std::chrono_literals;

TEST(AccessDockerd, ThePullersOwnHubCredentialsGetAPrivateImageThroughTheMirror) {
  if (auto why = runtime_unavailable({"dockerd", "docker", "containerd", "runc"}); !why.empty()) {
    GTEST_SKIP() << why;
  }
  // Every authenticated user may pull; anonymous requests get a token that grants nothing
  // (Docker Hub's answer for a private repository), so a daemon without credentials does ask
  // layercache for the image, with that token.
  token_issuer issuer(token_issuer_options{.users = {{"pusher", "push-pw"}, {"alice", "a-pw"}},
                                           .allow_anonymous = true});
  registry_process upstream(
      registry_options{.token_auth = registry_options::token_auth_options{
                           issuer.realm(), issuer.service(), issuer.issuer(), issuer.cert_file()}});
  const auto img = make_image(image_format::docker, {2 << 20, 512 << 10}, 611);
  registry_pusher(upstream.url(), {}, std::pair{"pusher", "push-pw"})
      .push_image("library/private", "v1", img);
  layercache_instance proxy(
      "upstreams:\n" +
      upstream_yaml("hub", upstream.url(), true,
                    "    access: client\n    auth:\n      type: anonymous\n      realm_hosts: ['" +
                        issuer.realm_host() + "']\n"));

  {
    dockerd_process dockerd(proxy.url());
    dockerd.set_cli_credentials("https://index.docker.io/v1/", "alice", "a-pw");
    auto pull = dockerd.docker({"pull", "private:v1"}, 180s);
    ASSERT_EQ(pull.exit_code, 0) << pull.output << "\n--- dockerd log ---\n" << dockerd.log();
    auto id = dockerd.docker({"image", "inspect", "--format", "{{.Id}}", "private:v1"}, 30s);
    EXPECT_NE(id.output.find(img.config.digest.str()), std::string::npos) << id.output;
  }
  // The image is in layercache's store now; a daemon whose CLI holds no credentials (or wrong
  // ones) still gets nothing of it.
  for (const char* password : {"", "wrong"}) {
    dockerd_process other(proxy.url());
    if (*password != '\0')
      other.set_cli_credentials("https://index.docker.io/v1/", "alice", password);
    auto pull = other.docker({"pull", "private:v1"}, 180s);
    EXPECT_NE(pull.exit_code, 0) << pull.output;
    auto listed = other.docker({"image", "ls", "--quiet", "private"}, 30s);
    EXPECT_EQ(listed.output.find_first_not_of(" \n"), std::string::npos) << listed.output;
  }
  // alice was admitted by the registry's yes; the daemon without credentials reached layercache
  // with its anonymous token and was refused there, by the registry's no, though the bytes were
  // cached. (With a wrong password the daemon got no token at all.)
  EXPECT_GT(proxy.metric("layercache_access_checks_total", {{"outcome", "allowed"}}), 0);
  EXPECT_GT(proxy.metric("layercache_access_checks_total", {{"outcome", "refused"}}), 0);
}

}  // namespace
}  // namespace layercache::testing
