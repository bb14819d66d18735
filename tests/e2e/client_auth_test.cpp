// Clients of layercache authenticating to it (server.client_auth, tls.client_ca_file), for
// deployments whose listener is not loopback-only: plain HTTP clients, skopeo with
// --src-creds, and curl with and without a client certificate.
#include <gtest/gtest.h>

#include <filesystem>

#include "oci/digest.hpp"
#include "oci/media_types.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/image.hpp"
#include "tests/support/layercache_instance.hpp"
#include "tests/support/process.hpp"
#include "tests/support/registry.hpp"

namespace layercache::testing {
namespace {

using namespace std::chrono_literals;

constexpr std::string_view kToken = "node-pull-token-7f3a";

class ClientAuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    img_ = std::make_unique<image>(make_image(image_format::oci, {300 * 1024, 70 * 1024}, 9));
    registry_pusher(upstream_.url()).push_image("auth/app", "v1", *img_);
    token_file_ = dir_.path() / "client-token";
    write_file(token_file_, std::string(kToken) + "\n", 0600);
  }

  registry_process upstream_;
  std::unique_ptr<image> img_;
  temp_dir dir_;
  std::filesystem::path token_file_;
  http_client client_;
};

TEST_F(ClientAuthTest, TokenIsRequiredAsBearerOrBasicPassword) {
  layercache_instance proxy("server:\n  client_auth:\n    token_file: " + token_file_.string() +
                            "\n  listen:\n    - address: 127.0.0.1:0\nupstreams:\n" +
                            upstream_yaml("up", upstream_.url(), true));
  const std::string base = proxy.url() + "/v2/";
  const std::string manifest = proxy.url() + "/v2/auth/app/manifests/v1";
  const header_list accept = {{"Accept", std::string(oci::media_types::oci_manifest)}};

  for (const auto& headers : {header_list{}, header_list{{"Authorization", "Bearer wrong"}},
                              header_list{{"Authorization", basic_auth_header("u", "wrong")}},
                              header_list{{"Authorization", basic_auth_header(kToken, "")}}}) {
    const auto r = client_.get(manifest, headers);
    EXPECT_EQ(r.status, 401u);
    EXPECT_EQ(r.header("WWW-Authenticate"), "Basic realm=\"layercache\"");
    EXPECT_NE(r.body.find("\"UNAUTHORIZED\""), std::string::npos) << r.body;
    EXPECT_EQ(r.body.find(std::string(kToken)), std::string::npos);
  }
  EXPECT_EQ(client_.get(base).status, 401u);  // dockerd's first request learns the challenge

  EXPECT_EQ(client_.get(base, {{"Authorization", "Bearer " + std::string(kToken)}}).status, 200u);
  header_list basic = accept;
  basic.emplace_back("Authorization", basic_auth_header("any-user", kToken));
  const auto m = client_.get(manifest, basic);
  ASSERT_EQ(m.status, 200u) << m.body;
  EXPECT_EQ(m.body, img_->manifest.data);
  const auto layer = client_.get(proxy.url() + "/v2/auth/app/blobs/" + img_->layers[0].digest.str(),
                                 {{"Authorization", "Bearer " + std::string(kToken)}});
  ASSERT_EQ(layer.status, 200u);
  EXPECT_TRUE(layer.body == img_->layers[0].data);
}

TEST_F(ClientAuthTest, SkopeoPullsWithTheTokenAsItsPassword) {
  layercache_instance proxy("server:\n  client_auth:\n    token_file: " + token_file_.string() +
                            "\n  listen:\n    - address: 127.0.0.1:0\nupstreams:\n" +
                            upstream_yaml("up", upstream_.url(), true));
  const std::string source = "docker://127.0.0.1:" + std::to_string(proxy.port()) + "/auth/app:v1";
  const auto out = dir_.path() / "pulled";
  const auto denied = run_command({"skopeo", "copy", "--quiet", "--src-tls-verify=false", source,
                                   "dir:" + (dir_.path() / "denied").string()},
                                  120s);
  EXPECT_NE(denied.exit_code, 0) << "pulled without credentials";
  const auto pulled =
      run_command({"skopeo", "copy", "--quiet", "--src-tls-verify=false", "--src-creds",
                   "node:" + std::string(kToken), source, "dir:" + out.string()},
                  120s);
  ASSERT_EQ(pulled.exit_code, 0) << pulled.output;
  EXPECT_EQ(oci::digest_of(read_file(out / "manifest.json")), img_->manifest.digest);
  for (const auto& l : img_->layers) {
    EXPECT_EQ(oci::digest_of(read_file(out / std::string(l.digest.hex()))), l.digest);
  }
}

TEST_F(ClientAuthTest, MutualTlsRejectsClientsWithoutACertificateFromTheCa) {
  const auto certs = make_test_certificates(dir_.path());
  // A client certificate signed by the same test CA.
  const auto key = (dir_.path() / "client.key").string();
  const auto csr = (dir_.path() / "client.csr").string();
  const auto cert = (dir_.path() / "client.pem").string();
  auto gen = run_command({"openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                          "-out", csr, "-subj", "/CN=node-1"},
                         60s);
  ASSERT_EQ(gen.exit_code, 0) << gen.output;
  auto sign = run_command({"openssl", "x509", "-req", "-in", csr, "-CA", certs.ca_cert, "-CAkey",
                           certs.ca_key, "-CAcreateserial", "-out", cert, "-days", "2"},
                          60s);
  ASSERT_EQ(sign.exit_code, 0) << sign.output;
  // A certificate from another CA is refused too.
  std::filesystem::create_directories(dir_.path() / "other");
  const auto other = make_test_certificates(dir_.path() / "other");

  layercache_instance proxy(
      "server:\n  listen:\n    - address: 127.0.0.1:0\n      tls:\n"
      "        cert_file: " +
      certs.server_cert + "\n        key_file: " + certs.server_key + "\n        client_ca_file: " +
      certs.ca_cert + "\nupstreams:\n" + upstream_yaml("up", upstream_.url(), true));
  const std::string url =
      "https://127.0.0.1:" + std::to_string(proxy.port()) + "/v2/auth/app/manifests/v1";
  auto curl = [&](std::vector<std::string> extra) {
    std::vector<std::string> argv = {"curl",
                                     "--silent",
                                     "--show-error",
                                     "--max-time",
                                     "20",
                                     "--cacert",
                                     certs.ca_cert,
                                     "-H",
                                     "Accept: " + std::string(oci::media_types::oci_manifest),
                                     "-o",
                                     (dir_.path() / "body").string(),
                                     "-w",
                                     "%{http_code}"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back(url);
    return run_command(argv, 60s);
  };
  const auto without = curl({});
  EXPECT_NE(without.exit_code, 0) << "served a client without a certificate: " << without.output;
  const auto foreign = curl({"--cert", other.server_cert, "--key", other.server_key});
  EXPECT_NE(foreign.exit_code, 0) << "served a certificate of another CA: " << foreign.output;
  const auto with = curl({"--cert", cert, "--key", key});
  ASSERT_EQ(with.exit_code, 0) << with.output;
  EXPECT_EQ(with.output, "200");
  EXPECT_EQ(read_file(dir_.path() / "body"), img_->manifest.data);
}

}  // namespace
}  // namespace layercache::testing
