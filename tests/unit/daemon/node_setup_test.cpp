// node setup's merges: containerd hosts.toml (tables kept byte for byte, layercache's replaced,
// idempotent, unsafe TOML refused) and dockerd daemon.json (keys and mirrors kept, idempotent,
// invalid JSON refused); the registries and the mirror URL a config gives.
#include "daemon/node_setup.hpp"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <string>
#include <vector>

namespace layercache::node_setup {
namespace {

const registry_host hub{"docker.io", "https://registry-1.docker.io", "docker.io"};
constexpr std::string_view mirror = "http://127.0.0.1:5000";
const std::string table = std::string(table_marker) +
                          "\n[host.\"http://127.0.0.1:5000\"]\n"
                          "  capabilities = [\"pull\", \"resolve\"]\n";

bool has(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

merged merge(const std::optional<std::string>& text, std::string_view m = mirror) {
  return merge_hosts_toml(text, hub, m);
}

TEST(NodeSetupHostsToml, NoFileGetsServerAndTheMirrorTable) {
  const auto m = merge(std::nullopt);
  ASSERT_TRUE(m.ok()) << m.error;
  EXPECT_TRUE(has(m.text, "\nserver = \"https://registry-1.docker.io\"\n\n" + table)) << m.text;
  EXPECT_EQ(check_hosts_toml(m.text, mirror), "");
}

TEST(NodeSetupHostsToml, AnEmptyFileGetsServerAndTheTable) {
  const auto m = merge(std::string());
  ASSERT_TRUE(m.ok()) << m.error;
  EXPECT_EQ(m.text, "server = \"https://registry-1.docker.io\"\n\n" + table);
}

TEST(NodeSetupHostsToml, OtherHostsAreKeptAndLayercacheGoesFirst) {
  const std::string other =
      "# the corporate mirror\n"
      "[host.\"https://mirror.example.com\"]\n"
      "  capabilities = [\"pull\"]  # no resolve\n"
      "  ca = \"/etc/ssl/corp.pem\"\n"
      "\n"
      "[host.\"https://mirror.example.com\".header]\n"
      "  x-team = [\"infra\"]\n";
  const std::string before = "server = \"https://registry-1.docker.io\"\n\n" + other;
  const auto m = merge(before);
  ASSERT_TRUE(m.ok()) << m.error;
  EXPECT_EQ(m.text, "server = \"https://registry-1.docker.io\"\n\n" + table + "\n" + other);
  EXPECT_EQ(check_hosts_toml(m.text, mirror), "");
  EXPECT_TRUE(m.notes.empty());
}

TEST(NodeSetupHostsToml, LayercachesTableIsReplacedInPlaceKeepingWhatIsNotOurs) {
  const std::string before =
      "server = \"https://registry-1.docker.io\"\n"
      "[host.\"https://first.example.com\"]\n"
      "  capabilities = [\"pull\", \"resolve\"]\n"
      "[host.\"http://127.0.0.1:5000/\"]\n"
      "  override_path = true\n"
      "  capabilities = [\n"
      "    \"pull\",\n"
      "  ]\n"
      "  dial_timeout = \"2s\"\n"
      "[host.\"http://127.0.0.1:5000/\".header]\n"
      "  Authorization = \"Bearer t\"\n";
  const auto m = merge(before);
  ASSERT_TRUE(m.ok()) << m.error;
  EXPECT_EQ(m.text,
            "server = \"https://registry-1.docker.io\"\n"
            "[host.\"https://first.example.com\"]\n"
            "  capabilities = [\"pull\", \"resolve\"]\n" +
                std::string(table_marker) +
                "\n[host.\"http://127.0.0.1:5000/\"]\n"
                "  capabilities = [\"pull\", \"resolve\"]\n"
                "  dial_timeout = \"2s\"\n"
                "[host.\"http://127.0.0.1:5000/\".header]\n"
                "  Authorization = \"Bearer t\"\n");
  ASSERT_EQ(m.notes.size(), 1u);
  EXPECT_TRUE(has(m.notes[0], "containerd tries https://first.example.com before layercache"));
}

TEST(NodeSetupHostsToml, ASecondRunChangesNothing) {
  const std::vector<std::optional<std::string>> inputs{
      std::nullopt,
      std::string(),
      std::string("# only a comment"),
      std::string("server = \"https://registry-1.docker.io\"\r\n[host.\"https://a\"]\r\n"
                  "  capabilities = [\"pull\"]\r\n"),
      std::string("[host.\"http://127.0.0.1:5000\"]\nskip_verify = true\n[host.\"https://b\"]\n"),
  };
  for (const auto& in : inputs) {
    const auto first = merge(in);
    ASSERT_TRUE(first.ok()) << first.error << " for " << in.value_or("(no file)");
    const auto second = merge(first.text);
    ASSERT_TRUE(second.ok()) << second.error;
    EXPECT_EQ(second.text, first.text) << "for " << in.value_or("(no file)");
    EXPECT_EQ(check_hosts_toml(first.text, mirror), "") << first.text;
  }
}

TEST(NodeSetupHostsToml, AnEarlierMirrorOfLayercachesIsReplacedByTheNewOne) {
  const auto old = merge(std::nullopt, "http://127.0.0.1:5000");
  const std::string before = old.text + "[host.\"https://kept.example.com\"]\n";
  const auto m = merge(before, "http://127.0.0.1:5001");
  ASSERT_TRUE(m.ok()) << m.error;
  EXPECT_FALSE(has(m.text, "127.0.0.1:5000")) << m.text;
  EXPECT_TRUE(has(m.text, "[host.\"http://127.0.0.1:5001\"]")) << m.text;
  EXPECT_TRUE(has(m.text, "[host.\"https://kept.example.com\"]")) << m.text;
  EXPECT_LT(m.text.find("5001"), m.text.find("kept.example.com"));
  ASSERT_EQ(m.notes.size(), 1u);
  EXPECT_TRUE(has(m.notes[0], "previous mirror http://127.0.0.1:5000"));
}

TEST(NodeSetupHostsToml, AServerOfItsOwnIsKeptWithANote) {
  const auto m = merge(std::string("server = \"https://hub-proxy.example.com\"\n"));
  ASSERT_TRUE(m.ok()) << m.error;
  EXPECT_TRUE(has(m.text, "server = \"https://hub-proxy.example.com\"\n"));
  EXPECT_FALSE(has(m.text, "registry-1.docker.io"));
  ASSERT_EQ(m.notes.size(), 1u);
  EXPECT_TRUE(has(m.notes[0], "hub-proxy.example.com")) << m.notes[0];
}

TEST(NodeSetupHostsToml, BracketsInsideStringsAndArraysAreNotHeaders) {
  const std::string before =
      "server = \"https://registry-1.docker.io\"\n"
      "note = \"\"\"\n"
      "[host.\"http://127.0.0.1:5000\"]\n"
      "\"\"\"\n"
      "matrix = [\n"
      "[1, 2],\n"
      "]\n"
      "literal = '[x]'\n";
  const auto m = merge(before);
  ASSERT_TRUE(m.ok()) << m.error;
  EXPECT_EQ(m.text, before + "\n" + table);
}

TEST(NodeSetupHostsToml, TomlThatCannotBeSplitSafelyIsRefused) {
  const std::vector<std::string> bad{
      "server = \"https://registry-1.docker.io\n",                      // unterminated string
      "server = 'x\n",                                                  // unterminated literal
      "a = [\"pull\",\n",                                               // unterminated array
      "a = \"\"\"\nnever closed\n",                                     // unterminated multi-line
      "[host.\"http://127.0.0.1:5000\"\n",                              // header without ]
      "[host.\"a\"]\n[host.\"a\"]\n",                                   // defined twice
      "server =\n",                                                     // no value
      "server \"x\"\n",                                                 // no =
      "a = ]\n",                                                        // stray bracket
      "[host]\n\"http://127.0.0.1:5000\".capabilities = [\"pull\"]\n",  // dotted keys
      "host = { \"http://127.0.0.1:5000\" = { capabilities = [\"pull\"] } }\n",
      "[host] junk\n",
  };
  for (const auto& text : bad) {
    const auto m = merge(text);
    EXPECT_FALSE(m.ok()) << "accepted: " << text;
    EXPECT_TRUE(m.text.empty()) << text;
  }
  const auto m = merge(std::string("a = \"x\"\nb = \"unterminated\n"));
  EXPECT_TRUE(has(m.error, "line 2")) << m.error;
}

TEST(NodeSetupHostsToml, DoctorsCheckSaysWhatIsMissing) {
  EXPECT_TRUE(has(check_hosts_toml("server = \"https://x\"\n", mirror), "has no [host."));
  EXPECT_TRUE(
      has(check_hosts_toml("[host.\"http://127.0.0.1:5000\"]\ncapabilities = [\"pull\"]\n", mirror),
          "needs capabilities"));
  EXPECT_TRUE(has(check_hosts_toml("[host.\"http://127.0.0.1:5000\"]\n"
                                   "capabilities = [\"pull\", \"resolve\"]\noverride_path = true\n",
                                   mirror),
                  "override_path"));
  EXPECT_TRUE(has(check_hosts_toml("server = \"x\n", mirror), "not valid TOML"));
  // Another mirror's table does not count.
  EXPECT_NE(check_hosts_toml("[host.\"http://127.0.0.1:5001\"]\ncapabilities = [\"pull\", "
                             "\"resolve\"]\n",
                             mirror),
            "");
}

// ---- daemon.json ---------------------------------------------------------------------------

boost::json::value json(const std::string& text) { return boost::json::parse(text); }

TEST(NodeSetupDaemonJson, NoFileOrABlankOneGetsTheMirror) {
  for (const auto& in : {std::optional<std::string>{}, std::optional<std::string>{""},
                         std::optional<std::string>{" \n"}}) {
    const auto m = merge_daemon_json(in, mirror);
    ASSERT_TRUE(m.ok()) << m.error;
    EXPECT_EQ(m.text, "{\n  \"registry-mirrors\": [\"http://127.0.0.1:5000\"]\n}\n");
  }
}

TEST(NodeSetupDaemonJson, OtherKeysAndMirrorsAreKeptLayercacheFirst) {
  const std::string before =
      R"({"log-level":"warn","registry-mirrors":["https://mirror.example.com"],)"
      R"("features":{"buildkit":true},"default-address-pools":[{"base":"10.0.0.0/8","size":24}]})";
  const auto m = merge_daemon_json(before, mirror);
  ASSERT_TRUE(m.ok()) << m.error;
  const auto after = json(m.text).as_object();
  auto expected = json(before).as_object();
  expected["registry-mirrors"] =
      boost::json::array{"http://127.0.0.1:5000", "https://mirror.example.com"};
  EXPECT_EQ(boost::json::value(after), boost::json::value(expected));
  std::vector<std::string> keys;
  for (const auto& kv : after) keys.emplace_back(kv.key());
  EXPECT_EQ(keys, (std::vector<std::string>{"log-level", "registry-mirrors", "features",
                                            "default-address-pools"}));
  EXPECT_TRUE(has(m.text, "\n  \"log-level\": \"warn\",\n")) << m.text;
}

TEST(NodeSetupDaemonJson, AListedMirrorLeavesTheBytesAsTheyAre) {
  const std::string before = "{ \"registry-mirrors\" : [ \"http://127.0.0.1:5000/\" ] }";
  const auto m = merge_daemon_json(before, mirror);
  ASSERT_TRUE(m.ok()) << m.error;
  EXPECT_EQ(m.text, before);
  const auto first = merge_daemon_json(std::string(R"({"debug": true})"), mirror);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(merge_daemon_json(first.text, mirror).text, first.text);
}

TEST(NodeSetupDaemonJson, InvalidJsonIsRefused) {
  for (const std::string text :
       {"{\"a\": 1,}", "// comment\n{}", "[]", "{\"registry-mirrors\": \"http://x\"}",
        "{\"registry-mirrors\": [1]}", "{\"a\": "}) {
    const auto m = merge_daemon_json(text, mirror);
    EXPECT_FALSE(m.ok()) << "accepted: " << text;
    EXPECT_TRUE(m.text.empty());
  }
  EXPECT_TRUE(has(merge_daemon_json(std::string("{,}"), mirror).error, "not valid JSON"));
}

// ---- what a config gives ------------------------------------------------------------------

TEST(NodeSetupConfig, RegistriesAreTheUpstreamsHostsNamesAndAliases) {
  const auto c = config::load_string(
      "upstreams:\n"
      "  - name: docker.io\n"
      "    url: https://registry-1.docker.io\n"
      "    default: true\n"
      "    aliases: [index.docker.io, registry-1.docker.io]\n"
      "  - name: europe-docker.pkg.dev\n"
      "    url: https://europe-docker.pkg.dev\n"
      "  - name: local\n"
      "    url: http://127.0.0.1:5001\n"
      "    aliases: [registry.example.com]\n");
  const auto hosts = registry_hosts(c);
  std::vector<std::string> names;
  names.reserve(hosts.size());
  for (const auto& h : hosts) names.push_back(h.name);
  EXPECT_EQ(names, (std::vector<std::string>{"docker.io", "europe-docker.pkg.dev", "127.0.0.1:5001",
                                             "registry.example.com"}));
  EXPECT_EQ(hosts[0].server, "https://registry-1.docker.io");
  EXPECT_EQ(hosts[3].server, "http://127.0.0.1:5001");
  EXPECT_EQ(mirror_url(c), "http://127.0.0.1:5000");
  const auto given = registry_hosts(std::vector<std::string>{"index.docker.io", "GHCR.io"});
  ASSERT_EQ(given.size(), 2u);
  EXPECT_EQ(given[0].name, "docker.io");
  EXPECT_EQ(given[0].server, "https://registry-1.docker.io");
  EXPECT_EQ(given[1].server, "https://ghcr.io");
}

TEST(NodeSetupConfig, TheMirrorIsTheFirstListenerOnLoopback) {
  const auto c = config::load_string(
      "server:\n  listen:\n    - address: \"[::]:5050\"\n    - address: 127.0.0.1:5000\n"
      "upstreams:\n  - name: hub\n    url: https://registry-1.docker.io\n    default: true\n");
  EXPECT_EQ(mirror_url(c), "http://[::1]:5050");
  EXPECT_EQ(parse_mirror("http://127.0.0.1:5000/"), "http://127.0.0.1:5000");
  EXPECT_EQ(parse_mirror("https://[::1]:5000"), "https://[::1]:5000");
  EXPECT_FALSE(parse_mirror("127.0.0.1:5000"));
  EXPECT_FALSE(parse_mirror("http://127.0.0.1:5000/v2"));
  EXPECT_FALSE(parse_mirror("http://user@host"));
  EXPECT_FALSE(parse_mirror("http://"));
}

TEST(NodeSetupConfig, ContainerdsConfigPath) {
  EXPECT_EQ(containerd_config_path("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n"
                                   "  config_path = \"/etc/containerd/certs.d\"\n"),
            "/etc/containerd/certs.d");
  EXPECT_EQ(containerd_config_path("  config_path = '/a:/b'\n"), "/a");
  EXPECT_FALSE(containerd_config_path("version = 2\n"));
}

TEST(NodeSetupDiff, MarksRemovedAndAddedLines) {
  EXPECT_EQ(line_diff("a\nb\nc\n", "a\nx\nc\n"), "  a\n- b\n+ x\n  c\n");
  EXPECT_EQ(line_diff("", "n\n"), "+ n\n");
}

}  // namespace
}  // namespace layercache::node_setup
