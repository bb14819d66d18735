#include "config/config.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

namespace layercache::config {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr std::uint64_t KiB = 1024;
constexpr std::uint64_t MiB = 1024 * KiB;
constexpr std::uint64_t GiB = 1024 * MiB;

// A directory of fixture files, created once, removed at exit. Documents refer to it as $DIR.
class fixture_dir {
 public:
  static const std::string& path() {
    static fixture_dir dir;
    return dir.path_;
  }

 private:
  fixture_dir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "layercache-config-XXXXXX");
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
    write("cert.pem", "-----BEGIN CERTIFICATE-----\n");
    write("key.pem", "-----BEGIN PRIVATE KEY-----\n");
    write("ca.pem", "-----BEGIN CERTIFICATE-----\n");
    write("password", "file-secret\r\n\n");
    write("empty-password", "\n\n");
    std::filesystem::create_directory(path_ + "/a-directory");
  }
  ~fixture_dir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  void write(const std::string& name, const std::string& content) {
    std::ofstream(path_ + "/" + name, std::ios::binary) << content;
  }

  std::string path_;
};

std::string with_dir(std::string text) {
  const std::string& dir = fixture_dir::path();
  for (auto pos = text.find("$DIR"); pos != std::string::npos; pos = text.find("$DIR", pos)) {
    text.replace(pos, 4, dir);
    pos += dir.size();
  }
  return text;
}

void set_test_environment() {
  ::setenv("LAYERCACHE_TEST_PASSWORD", "env-secret", 1);
  ::setenv("LAYERCACHE_TEST_EMPTY", "", 1);
  ::unsetenv("LAYERCACHE_TEST_UNSET");
}

// Loads `yaml` expecting failure; returns the exception's problems and what().
struct failure {
  std::vector<problem> problems;
  std::string what;
};

failure load_failure(const std::string& yaml) {
  try {
    (void)load_string(with_dir(yaml), "test.yaml");
  } catch (const invalid_config& e) {
    return {e.problems(), e.what()};
  }
  ADD_FAILURE() << "document loaded but should not have:\n" << yaml;
  return {};
}

std::string dump(const std::vector<problem>& problems) {
  std::string out;
  for (const auto& p : problems) out += "  " + p.to_string() + "\n";
  return out;
}

// ---- parse_size

struct size_case {
  std::string_view text;
  std::uint64_t bytes;
};

class size_accepts : public ::testing::TestWithParam<size_case> {};

TEST_P(size_accepts, parses) {
  auto parsed = parse_size(GetParam().text);
  ASSERT_TRUE(parsed.has_value()) << GetParam().text;
  EXPECT_EQ(*parsed, GetParam().bytes) << GetParam().text;
}

INSTANTIATE_TEST_SUITE_P(
    table, size_accepts,
    ::testing::Values(
        size_case{"0", 0}, size_case{"1024", 1024}, size_case{"007", 7}, size_case{"1B", 1},
        size_case{"0B", 0}, size_case{"4KiB", 4 * KiB}, size_case{"64MiB", 64 * MiB},
        size_case{"2GiB", 2 * GiB}, size_case{"1TiB", 1024 * GiB}, size_case{"1KB", 1000},
        size_case{"1kB", 1000}, size_case{"3MB", 3'000'000}, size_case{"1GB", 1'000'000'000},
        size_case{"2TB", 2'000'000'000'000}, size_case{"1.5GiB", 3 * GiB / 2},
        size_case{"0.5KiB", 512}, size_case{"1.0001KiB", 1024},  // fractions of a byte are dropped
        size_case{"2.25MB", 2'250'000},
        size_case{"18446744073709551615", std::numeric_limits<std::uint64_t>::max()},
        size_case{"16777215TiB", 16777215ULL << 40},
        size_case{"16777215.999999999999999999TiB", (16777215ULL << 40) + (1ULL << 40) - 1}));

class size_rejects : public ::testing::TestWithParam<std::string_view> {};

TEST_P(size_rejects, returns_nullopt) {
  EXPECT_FALSE(parse_size(GetParam()).has_value()) << "'" << GetParam() << "'";
}

INSTANTIATE_TEST_SUITE_P(
    table, size_rejects,
    ::testing::Values("", " ", "\t", "-1", "+1", "-1KiB", "MiB", "B", ".5MiB", "5.MiB", "1.5.5MiB",
                      "1.5", "1.5B", "1 MiB", " 1MiB", "1MiB ", "1mib", "1KIB", "1Mi", "1MiBs",
                      "1M", "0x10", "1e3", "1,000", "99999999999999999999GiB",
                      "18446744073709551616", "16777216TiB", "16777215.9999999999999999999TiB",
                      "1.0000000000000000001KiB", std::string_view("1\0KiB", 5)));

// ---- parse_duration

struct duration_case {
  std::string_view text;
  duration value;
};

class duration_accepts : public ::testing::TestWithParam<duration_case> {};

TEST_P(duration_accepts, parses) {
  auto parsed = parse_duration(GetParam().text);
  ASSERT_TRUE(parsed.has_value()) << GetParam().text;
  EXPECT_EQ(parsed->count(), GetParam().value.count()) << GetParam().text;
}

INSTANTIATE_TEST_SUITE_P(table, duration_accepts,
                         ::testing::Values(duration_case{"0s", 0ms}, duration_case{"0ms", 0ms},
                                           duration_case{"30s", 30s}, duration_case{"500ms", 500ms},
                                           duration_case{"2m", 2min}, duration_case{"1h", 1h},
                                           duration_case{"1h30m", 90min}, duration_case{"90s", 90s},
                                           duration_case{"1h30m15s500ms", 1h + 30min + 15s + 500ms},
                                           duration_case{"2m5s", 125s}, duration_case{"007s", 7s},
                                           duration_case{"9223372036854775807ms", duration::max()},
                                           duration_case{"2562047788015h", 2562047788015h}));

class duration_rejects : public ::testing::TestWithParam<std::string_view> {};

TEST_P(duration_rejects, returns_nullopt) {
  EXPECT_FALSE(parse_duration(GetParam()).has_value()) << "'" << GetParam() << "'";
}

INSTANTIATE_TEST_SUITE_P(table, duration_rejects,
                         ::testing::Values("", " ", "-1s", "+1s", "1", "0", "s", "ms", "1.5s",
                                           "30S", "1d", "1us", "30 s", " 30s", "30s ", "1m1h",
                                           "1s1s", "1h1ms1s", "1hh", "1h 30m", "abc", "0x10s",
                                           "9223372036854775808ms", "2562047788016h",
                                           "99999999999999999999s", "9999999999999999999h",
                                           "2562047788015h1h"));

// ---- whole documents

TEST(config, default_yaml_loads) {
  ASSERT_THAT(std::string(default_yaml()), HasSubstr("upstreams:"));
  const config cfg = load_string(default_yaml(), "default");
  ASSERT_EQ(cfg.server.listen.size(), 1u);
  EXPECT_EQ(cfg.server.listen[0].host, "127.0.0.1");
  EXPECT_EQ(cfg.server.listen[0].port, 5000);
  EXPECT_FALSE(cfg.server.listen[0].tls.has_value());
  ASSERT_EQ(cfg.upstreams.size(), 1u);
  const upstream& hub = cfg.upstreams[0];
  EXPECT_EQ(hub.name, "docker.io");
  EXPECT_EQ(hub.scheme, "https");
  EXPECT_EQ(hub.host, "registry-1.docker.io");
  EXPECT_EQ(hub.port, 443);
  EXPECT_TRUE(hub.is_default);
  EXPECT_EQ(hub.aliases, (std::vector<std::string>{"index.docker.io", "registry-1.docker.io"}));
  EXPECT_EQ(hub.auth.type, auth_type::anonymous);
  EXPECT_EQ(cfg.default_upstream(), &hub);
  EXPECT_EQ(cfg.log.level, log_level::info);
}

TEST(config, minimal_document_gets_defaults) {
  const config cfg = load_string(
      "upstreams:\n"
      "  - name: mirror\n"
      "    url: http://10.0.0.1/\n");
  const config defaults;
  ASSERT_EQ(cfg.server.listen.size(), 1u);
  EXPECT_EQ(cfg.server.listen[0].host, "127.0.0.1");
  EXPECT_EQ(cfg.server.listen[0].port, 5000);
  EXPECT_EQ(cfg.server.threads, 0u);
  EXPECT_EQ(cfg.server.timeouts.request_header, 30s);
  EXPECT_EQ(cfg.server.timeouts.idle, 120s);
  EXPECT_EQ(cfg.server.timeouts.write, 60s);
  EXPECT_EQ(cfg.server.timeouts.shutdown, 30s);
  EXPECT_EQ(cfg.server.max_connections, 4096u);
  EXPECT_EQ(cfg.server.max_header_size, 16 * KiB);
  EXPECT_EQ(cfg.server.max_manifest_size, 4 * MiB);
  EXPECT_EQ(cfg.log.level, log_level::info);
  ASSERT_EQ(cfg.upstreams.size(), 1u);
  const upstream& u = cfg.upstreams[0];
  EXPECT_EQ(u.scheme, "http");
  EXPECT_EQ(u.host, "10.0.0.1");
  EXPECT_EQ(u.port, 80);
  EXPECT_FALSE(u.is_default);
  EXPECT_TRUE(u.aliases.empty());
  EXPECT_TRUE(u.ca_file.empty());
  EXPECT_EQ(u.auth.type, auth_type::anonymous);
  EXPECT_EQ(u.timeouts.connect, 10s);
  EXPECT_EQ(u.timeouts.response, 30s);
  EXPECT_EQ(u.timeouts.read, 60s);
  EXPECT_EQ(u.retry.attempts, 3u);
  EXPECT_EQ(u.retry.backoff, 200ms);
  EXPECT_EQ(u.retry.max_backoff, 5s);
  EXPECT_EQ(u.retry.max_retry_after, 30s);
  EXPECT_EQ(u.max_idle_connections, 16u);
  EXPECT_EQ(u.max_redirects, 5u);
  EXPECT_EQ(u.redirect_reuse, 60s);
  EXPECT_EQ(u.timeouts.body, 60s);
  EXPECT_FALSE(u.allow_internal_redirects);
  EXPECT_EQ(cfg.default_upstream(), nullptr);
}

TEST(config, every_key_is_read) {
  set_test_environment();
  const config cfg =
      load_string(with_dir("server:\n"
                           "  listen:\n"
                           "    - address: 0.0.0.0:443\n"
                           "      tls:\n"
                           "        cert_file: $DIR/cert.pem\n"
                           "        key_file: $DIR/key.pem\n"
                           "    - address: '[::1]:0'\n"
                           "  threads: 8\n"
                           "  timeouts:\n"
                           "    request_header: 5s\n"
                           "    idle: 1m30s\n"
                           "    write: 250ms\n"
                           "    shutdown: 0s\n"
                           "  max_connections: 1000000\n"
                           "  max_header_size: 1MiB\n"
                           "  max_manifest_size: \"64MiB\"\n"
                           "log:\n"
                           "  level: debug\n"
                           "upstreams:\n"
                           "  - name: docker.io\n"
                           "    url: HTTPS://Registry-1.Docker.IO:8443\n"
                           "    default: true\n"
                           "    aliases: [Index.Docker.IO, 'mirror.local:5000']\n"
                           "    ca_file: $DIR/ca.pem\n"
                           "    auth:\n"
                           "      type: basic\n"
                           "      username: alice\n"
                           "      password_file: $DIR/password\n"
                           "    timeouts: {connect: 1s, response: 2s, read: 3s, body: 4s}\n"
                           "    retry: {attempts: 5, backoff: 50ms, max_backoff: 1s, "
                           "max_retry_after: 0s}\n"
                           "    max_idle_connections: 0\n"
                           "    max_redirects: 20\n"
                           "    redirect_reuse: 0s\n"
                           "    allow_internal_redirects: true\n"
                           "  - name: my_registry\n"
                           "    url: http://[fd00::1]:5000/\n"
                           "    default: false\n"
                           "    auth:\n"
                           "      type: basic\n"
                           "      username: bob\n"
                           "      password_env: LAYERCACHE_TEST_PASSWORD\n"
                           "  - name: quay.io\n"
                           "    url: https://quay.io\n"
                           "    auth: {type: anonymous}\n"));
  const std::string& dir = fixture_dir::path();
  ASSERT_EQ(cfg.server.listen.size(), 2u);
  EXPECT_EQ(cfg.server.listen[0].host, "0.0.0.0");
  EXPECT_EQ(cfg.server.listen[0].port, 443);
  ASSERT_TRUE(cfg.server.listen[0].tls.has_value());
  EXPECT_EQ(cfg.server.listen[0].tls->cert_file, dir + "/cert.pem");
  EXPECT_EQ(cfg.server.listen[0].tls->key_file, dir + "/key.pem");
  EXPECT_EQ(cfg.server.listen[1].host, "::1");
  EXPECT_EQ(cfg.server.listen[1].port, 0);
  EXPECT_FALSE(cfg.server.listen[1].tls.has_value());
  EXPECT_EQ(cfg.server.threads, 8u);
  EXPECT_EQ(cfg.server.timeouts.request_header, 5s);
  EXPECT_EQ(cfg.server.timeouts.idle, 90s);
  EXPECT_EQ(cfg.server.timeouts.write, 250ms);
  EXPECT_EQ(cfg.server.timeouts.shutdown, 0s);
  EXPECT_EQ(cfg.server.max_connections, 1'000'000u);
  EXPECT_EQ(cfg.server.max_header_size, MiB);
  EXPECT_EQ(cfg.server.max_manifest_size, 64 * MiB);
  EXPECT_EQ(cfg.log.level, log_level::debug);

  ASSERT_EQ(cfg.upstreams.size(), 3u);
  const upstream& hub = cfg.upstreams[0];
  EXPECT_EQ(hub.name, "docker.io");
  EXPECT_EQ(hub.url, "HTTPS://Registry-1.Docker.IO:8443");
  EXPECT_EQ(hub.scheme, "https");
  EXPECT_EQ(hub.host, "registry-1.docker.io");
  EXPECT_EQ(hub.port, 8443);
  EXPECT_TRUE(hub.is_default);
  EXPECT_EQ(hub.aliases, (std::vector<std::string>{"index.docker.io", "mirror.local:5000"}));
  EXPECT_EQ(hub.ca_file, dir + "/ca.pem");
  EXPECT_EQ(hub.auth.type, auth_type::basic);
  EXPECT_EQ(hub.auth.username, "alice");
  EXPECT_EQ(hub.auth.password, "file-secret");  // trailing CR/LF stripped
  EXPECT_EQ(hub.auth.password_file, dir + "/password");
  EXPECT_TRUE(hub.auth.password_env.empty());
  EXPECT_EQ(hub.timeouts.connect, 1s);
  EXPECT_EQ(hub.timeouts.response, 2s);
  EXPECT_EQ(hub.timeouts.read, 3s);
  EXPECT_EQ(hub.timeouts.body, 4s);
  EXPECT_TRUE(hub.allow_internal_redirects);
  EXPECT_EQ(hub.retry.attempts, 5u);
  EXPECT_EQ(hub.retry.backoff, 50ms);
  EXPECT_EQ(hub.retry.max_backoff, 1s);
  EXPECT_EQ(hub.retry.max_retry_after, 0s);
  EXPECT_EQ(hub.max_idle_connections, 0u);
  EXPECT_EQ(hub.max_redirects, 20u);
  EXPECT_EQ(hub.redirect_reuse, 0s);

  const upstream& mine = cfg.upstreams[1];
  EXPECT_EQ(mine.name, "my_registry");
  EXPECT_EQ(mine.scheme, "http");
  EXPECT_EQ(mine.host, "fd00::1");
  EXPECT_EQ(mine.port, 5000);
  EXPECT_FALSE(mine.is_default);
  EXPECT_EQ(mine.auth.type, auth_type::basic);
  EXPECT_EQ(mine.auth.username, "bob");
  EXPECT_EQ(mine.auth.password, "env-secret");
  EXPECT_EQ(mine.auth.password_env, "LAYERCACHE_TEST_PASSWORD");

  EXPECT_EQ(cfg.upstreams[2].auth.type, auth_type::anonymous);
  EXPECT_EQ(cfg.upstreams[2].port, 443);
  EXPECT_EQ(cfg.default_upstream(), &hub);
}

TEST(config, name_grammar) {
  for (std::string_view name : {"a", "docker.io", "a_b", "a__b", "a-b", "a---b", "0", "a.b-c_d"}) {
    EXPECT_NO_THROW(
        (void)load_string("upstreams: [{name: '" + std::string(name) + "', url: 'http://x'}]"))
        << name;
  }
  for (std::string_view name :
       {"", "A", "a/b", "-a", "a-", ".a", "a..b", "a___b", "a_-b", "a.", "a b", "ä"}) {
    auto f = load_failure("upstreams: [{name: '" + std::string(name) + "', url: 'http://x'}]");
    ASSERT_EQ(f.problems.size(), 1u) << name << "\n" << dump(f.problems);
    EXPECT_EQ(f.problems[0].path, "upstreams[0].name") << name;
    EXPECT_THAT(f.problems[0].message, HasSubstr("must be lowercase")) << name;
  }
}

#define UPSTREAM_FOR_CACHE_TESTS "upstreams: [{name: a, url: 'http://a'}]\n"

// `mode: lazy` is one switch for nodes whose runtime pulls lazily; keys written win.
TEST(config, lazy_mode_sets_defaults_that_written_keys_override) {
  const config pull = load_string(UPSTREAM_FOR_CACHE_TESTS);
  EXPECT_EQ(pull.mode, node_mode::pull);
  EXPECT_EQ(pull.prefetch.quiet, std::chrono::seconds(0));
  const config lazy = load_string("mode: lazy\n" UPSTREAM_FOR_CACHE_TESTS);
  EXPECT_EQ(lazy.mode, node_mode::lazy);
  EXPECT_EQ(lazy.cache.chunk_size, 256 * KiB);
  EXPECT_FALSE(lazy.cache.complete_partial);
  EXPECT_EQ(lazy.prefetch.eager_layers, eager_mode::never);
  EXPECT_EQ(lazy.prefetch.quiet, std::chrono::seconds(3));
  const config written = load_string(
      "cache: {chunk_size: 1MiB, complete_partial: true}\nprefetch: {quiet: 0s}\nmode: "
      "lazy\n" UPSTREAM_FOR_CACHE_TESTS);
  EXPECT_EQ(written.cache.chunk_size, MiB);
  EXPECT_TRUE(written.cache.complete_partial);
  EXPECT_EQ(written.prefetch.quiet, std::chrono::seconds(0));
  EXPECT_EQ(written.prefetch.eager_layers, eager_mode::never);
  const auto bad = load_failure("mode: lazzy\n" UPSTREAM_FOR_CACHE_TESTS);
  ASSERT_EQ(bad.problems.size(), 1u) << dump(bad.problems);
  EXPECT_EQ(bad.problems[0].path, "mode");
  EXPECT_EQ(bad.problems[0].line, 1);
}

TEST(config, cache_defaults) {
  const config cfg = load_string(UPSTREAM_FOR_CACHE_TESTS);
  EXPECT_EQ(cfg.cache.path, "/var/lib/layercache");
  EXPECT_EQ(cfg.cache.capacity, 10 * GiB);
  EXPECT_EQ(cfg.cache.chunk_size, MiB);
  EXPECT_EQ(cfg.cache.block_cache, 32 * MiB);
  EXPECT_EQ(cfg.cache.memory_cache, 256 * MiB);
  EXPECT_FALSE(cfg.cache.sync_writes);
  EXPECT_TRUE(cfg.cache.enabled);
  EXPECT_EQ(cfg.cache.fetch_size, 8 * MiB);
  EXPECT_EQ(cfg.cache.parallel_fetches, 4u);
  EXPECT_EQ(cfg.cache.io_threads, 2u);
  EXPECT_TRUE(cfg.cache.complete_partial);
  EXPECT_FALSE(load_string("cache: {complete_partial: false}\n" UPSTREAM_FOR_CACHE_TESTS)
                   .cache.complete_partial);
  EXPECT_EQ(cfg.cache.tag_ttl, std::chrono::seconds(60));
  EXPECT_EQ(cfg.cache.max_stale, std::chrono::hours(24));
  for (const char* bad : {"cache: {parallel_fetches: 0}\n", "cache: {io_threads: 100}\n",
                          "cache: {fetch_size: 1KiB}\n", "cache: {enabled: maybe}\n"}) {
    EXPECT_THROW((void)load_string(std::string(bad) + UPSTREAM_FOR_CACHE_TESTS), invalid_config)
        << bad;
  }

  const config shipped = load_string(default_yaml(), "default");
  EXPECT_EQ(shipped.cache.path, "/var/lib/layercache");
  EXPECT_EQ(shipped.cache.capacity, 10 * GiB);
  EXPECT_EQ(shipped.cache.chunk_size, MiB);
}

TEST(config, cache_keys_are_read) {
  const config cfg = load_string(
      "cache:\n"
      "  path: /srv/cache\n"
      "  capacity: 1.5TiB\n"
      "  chunk_size: 64KiB\n"
      "  block_cache: 1GiB\n"
      "  memory_cache: 0\n"
      "  sync_writes: true\n"
      "  enabled: false\n"
      "  fetch_size: 4MiB\n"
      "  parallel_fetches: 8\n"
      "  io_threads: 3\n"
      "  tag_ttl: 5m\n"
      "  max_stale: 1h30m\n" UPSTREAM_FOR_CACHE_TESTS);
  EXPECT_EQ(cfg.cache.tag_ttl, std::chrono::minutes(5));
  EXPECT_EQ(cfg.cache.max_stale, std::chrono::minutes(90));
  EXPECT_FALSE(cfg.cache.enabled);
  EXPECT_EQ(cfg.cache.fetch_size, 4 * MiB);
  EXPECT_EQ(cfg.cache.parallel_fetches, 8u);
  EXPECT_EQ(cfg.cache.io_threads, 3u);
  EXPECT_EQ(cfg.cache.path, "/srv/cache");
  EXPECT_EQ(cfg.cache.capacity, 1536 * GiB);
  EXPECT_EQ(cfg.cache.chunk_size, 64 * KiB);
  EXPECT_EQ(cfg.cache.block_cache, GiB);
  EXPECT_EQ(cfg.cache.memory_cache, 0u);
  EXPECT_TRUE(cfg.cache.sync_writes);
  EXPECT_EQ(cfg.cache.max_disk, 0u) << "max_disk is off unless set";
  EXPECT_EQ(load_string("cache: {capacity: 20GiB, max_disk: 50GiB}\n" UPSTREAM_FOR_CACHE_TESTS)
                .cache.max_disk,
            50 * GiB);
  EXPECT_EQ(load_string("cache: {chunk_size: 16MiB}\n" UPSTREAM_FOR_CACHE_TESTS).cache.chunk_size,
            16 * MiB);
  // 0s is allowed: always revalidate tags, never serve a stale one.
  const config zero = load_string("cache: {tag_ttl: 0s, max_stale: 0s}\n" UPSTREAM_FOR_CACHE_TESTS);
  EXPECT_EQ(zero.cache.tag_ttl, std::chrono::milliseconds(0));
  EXPECT_EQ(zero.cache.max_stale, std::chrono::milliseconds(0));
}

// ---- one bad thing per document

struct bad_case {
  const char* name;
  const char* yaml;
  const char* path;
  int line;
  const char* fragment;
};

void PrintTo(const bad_case& c, std::ostream* os) { *os << c.name; }

#define UPSTREAM          \
  "upstreams:\n"          \
  "  - name: docker.io\n" \
  "    url: https://registry-1.docker.io\n"

class bad_document : public ::testing::TestWithParam<bad_case> {
 protected:
  void SetUp() override { set_test_environment(); }
};

TEST_P(bad_document, reports_exactly_the_problem) {
  const bad_case& c = GetParam();
  failure f = load_failure(c.yaml);
  ASSERT_EQ(f.problems.size(), 1u) << dump(f.problems);
  EXPECT_EQ(f.problems[0].path, c.path) << dump(f.problems);
  EXPECT_EQ(f.problems[0].line, c.line) << dump(f.problems);
  EXPECT_THAT(f.problems[0].message, HasSubstr(c.fragment));
  EXPECT_THAT(f.what, HasSubstr("test.yaml: 1 problem\n"));
  EXPECT_THAT(f.what, HasSubstr(f.problems[0].to_string()));
  // Secrets never reach messages.
  EXPECT_THAT(f.what, Not(HasSubstr("secret")));
  EXPECT_THAT(f.what, Not(HasSubstr("hunter2")));
}

const bad_case bad_cases[] = {
    // Structure.
    {"empty_document", "", "", 0, "empty"},
    {"comment_only", "# nothing here\n", "", 0, "empty"},
    {"null_document", "~\n", "", 1, "empty"},
    {"syntax_error", "server:\n  threads: 1\n\tlisten: []\n", "", 3, "invalid YAML"},
    {"two_documents", UPSTREAM "---\n" UPSTREAM, "", 5, "one YAML document"},
    {"three_documents", UPSTREAM "---\n" UPSTREAM "---\n" UPSTREAM, "", 5, "one YAML document"},
    // Found by fuzz/config_fuzz.cpp: yaml-cpp's LoadAll never returned on these (endless null
    // documents at a stray ','), hanging the loader and exhausting memory.
    {"stray_comma", ",", "", 1, "empty"},
    {"stray_comma_then_text", ",K\n", "", 1, "empty"},
    {"top_level_list", "- a\n", "", 1, "expected a mapping, got a list"},
    {"unknown_top_key", UPSTREAM "storage: {}\n", "storage", 4, "unknown key"},
    // The admin listener.
    {"admin_address_garbage", "admin:\n  address: nowhere\n" UPSTREAM, "admin.address", 2,
     "expected an address like"},
    {"admin_address_dns", "admin:\n  address: localhost:9401\n" UPSTREAM, "admin.address", 2,
     "literal IPv4"},
    {"admin_public_without_token", "admin:\n  address: 0.0.0.0:9401\n" UPSTREAM, "admin.address", 2,
     "needs token_file"},
    {"admin_metrics_token_without_file", "admin:\n  metrics_need_token: true\n" UPSTREAM,
     "admin.metrics_need_token", 2, "needs token_file"},
    {"admin_token_file_missing", "admin:\n  token_file: /nonexistent/token\n" UPSTREAM,
     "admin.token_file", 2, "file not found"},
    {"admin_unknown_key", "admin:\n  port: 9401\n" UPSTREAM, "admin.port", 2, "unknown key"},
    // Prefetch.
    {"prefetch_unknown_key", "prefetch:\n  eager: true\n" UPSTREAM, "prefetch.eager", 2,
     "unknown key"},
    {"prefetch_window_zero", "prefetch:\n  window: 0s\n" UPSTREAM, "prefetch.window", 2,
     "must be longer than 0s"},
    {"prefetch_concurrency_zero", "prefetch:\n  concurrency: 0\n" UPSTREAM, "prefetch.concurrency",
     2, "between 1 and 64"},
    {"prefetch_concurrency_huge", "prefetch:\n  enabled: true\n  concurrency: 65\n" UPSTREAM,
     "prefetch.concurrency", 3, "between 1 and 64"},
    {"prefetch_eager_bad", "prefetch:\n  eager_layers: yes\n" UPSTREAM, "prefetch.eager_layers", 2,
     "one of"},
    {"prefetch_preload_not_list", "prefetch:\n  preload: alpine\n" UPSTREAM, "prefetch.preload", 2,
     "a list"},
    {"prefetch_preload_bad_reference",
     "prefetch:\n  preload:\n    - library/alpine:3.19\n    - 'UPPER/Case:x'\n" UPSTREAM,
     "prefetch.preload[1]", 4, "not an image reference"},
    // Client authentication.
    {"client_auth_without_token_file", "server:\n  client_auth: {}\n" UPSTREAM,
     "server.client_auth.token_file", 2, "required key is missing"},
    {"client_auth_token_file_missing",
     "server:\n  client_auth:\n    token_file: /nonexistent/client-token\n" UPSTREAM,
     "server.client_auth.token_file", 3, "file not found"},
    {"client_ca_file_missing",
     "server:\n  listen:\n    - address: 127.0.0.1:5000\n      tls:\n        cert_file: "
     "/dev/null\n        key_file: /dev/null\n        client_ca_file: "
     "/nonexistent/ca.pem\n" UPSTREAM,
     "server.listen[0].tls.client_ca_file", 7, "file not found"},
    {"log_access_not_bool", "log:\n  access: sometimes\n" UPSTREAM, "log.access", 2,
     "true or false"},
    {"unknown_key_at_depth", "server:\n  timeouts:\n    idle: 10s\n    idel: 5s\n" UPSTREAM,
     "server.timeouts.idel", 4, "unknown key"},
    {"unknown_key_in_upstream",
     UPSTREAM "    auth:\n      type: basic\n      username: u\n"
              "      password_env: LAYERCACHE_TEST_PASSWORD\n      password: hunter2\n",
     "upstreams[0].auth.password", 8, "unknown key"},
    {"duplicate_key", "log:\n  level: info\n  level: debug\n" UPSTREAM, "log.level", 3,
     "duplicate key"},
    {"non_scalar_key", "? [a]\n: 1\n" UPSTREAM, "", 1, "expected a key name"},
    // Types and ranges.
    {"server_not_mapping", "server: 5\n" UPSTREAM, "server", 1, "expected a mapping, got '5'"},
    {"duration_garbage", "server:\n  timeouts:\n    idle: abc\n" UPSTREAM, "server.timeouts.idle",
     3, "expected a duration like 30s, got 'abc'"},
    {"duration_negative", "server:\n  timeouts: {write: -1s}\n" UPSTREAM, "server.timeouts.write",
     2, "expected a duration like 30s, got '-1s'"},
    {"duration_zero", "server:\n  timeouts:\n    request_header: 0s\n" UPSTREAM,
     "server.timeouts.request_header", 3, "longer than 0s"},
    {"duration_list", "server:\n  timeouts:\n    idle: [1s]\n" UPSTREAM, "server.timeouts.idle", 3,
     "expected a duration like 30s, got a list"},
    {"threads_too_many", "server:\n  threads: 300\n" UPSTREAM, "server.threads", 2,
     "must be between 0 and 256, got '300'"},
    {"threads_negative", "server:\n  threads: -1\n" UPSTREAM, "server.threads", 2,
     "expected a whole number, got '-1'"},
    {"threads_empty", "server:\n  threads:\n" UPSTREAM, "server.threads", 2, "got an empty value"},
    {"timeouts_empty", "server:\n  timeouts:\n\n" UPSTREAM, "server.timeouts", 2,
     "expected a mapping, got an empty value"},
    {"auth_empty", UPSTREAM "    auth:\n  - name: quay.io\n    url: https://quay.io\n",
     "upstreams[0].auth", 4, "expected a mapping, got an empty value"},
    {"aliases_empty", UPSTREAM "    aliases:\n\n", "upstreams[0].aliases", 4,
     "expected a list, got an empty value"},
    {"threads_huge", "server:\n  threads: 99999999999999999999999\n" UPSTREAM, "server.threads", 2,
     "must be between 0 and 256"},
    {"max_connections_zero", "server:\n  max_connections: 0\n" UPSTREAM, "server.max_connections",
     2, "must be between 1 and 1000000"},
    {"max_header_size_too_big", "server:\n  max_header_size: 2MiB\n" UPSTREAM,
     "server.max_header_size", 2, "must be between 1KiB and 1MiB, got '2MiB'"},
    {"max_manifest_size_garbage", "server:\n  max_manifest_size: 12XB\n" UPSTREAM,
     "server.max_manifest_size", 2, "expected a size like 64MiB, got '12XB'"},
    {"max_manifest_size_too_small", "server:\n  max_manifest_size: 1000\n" UPSTREAM,
     "server.max_manifest_size", 2, "must be between 1KiB and 64MiB"},
    {"log_level", "log:\n  level: verbose\n" UPSTREAM, "log.level", 2,
     "expected one of debug, info, warn, error, got 'verbose'"},
    {"default_not_bool", UPSTREAM "    default: maybe\n", "upstreams[0].default", 4,
     "expected true or false, got 'maybe'"},
    {"max_idle_connections", UPSTREAM "    max_idle_connections: 2000\n",
     "upstreams[0].max_idle_connections", 4, "must be between 0 and 1024"},
    {"max_redirects", UPSTREAM "    max_redirects: 21\n", "upstreams[0].max_redirects", 4,
     "must be between 0 and 20"},
    // Mirrors.
    {"mirrors_not_a_list", UPSTREAM "    mirrors: http://127.0.0.1:5001\n", "upstreams[0].mirrors",
     4, "expected a list"},
    {"mirror_without_url", UPSTREAM "    mirrors:\n      - resolve: true\n",
     "upstreams[0].mirrors[0].url", 5, "required"},
    {"mirror_user_info", UPSTREAM "    mirrors:\n      - url: http://u:hunter2@127.0.0.1:5001\n",
     "upstreams[0].mirrors[0].url", 5, "must not contain '@'"},
    {"mirror_unknown_key",
     UPSTREAM "    mirrors:\n      - url: http://127.0.0.1:5001\n        weight: 2\n",
     "upstreams[0].mirrors[0].weight", 6, "unknown key"},
    {"mirror_is_the_upstream",
     UPSTREAM "    mirrors:\n      - url: https://registry-1.docker.io:443\n",
     "upstreams[0].mirrors[0].url", 5, "the upstream itself"},
    {"mirror_twice",
     UPSTREAM
     "    mirrors:\n      - url: http://127.0.0.1:5001\n      - url: http://127.0.0.1:5001/\n",
     "upstreams[0].mirrors[1].url", 6, "already upstreams[0].mirrors[0]"},
    {"mirror_zero_timeout",
     UPSTREAM
     "    mirrors:\n      - url: http://127.0.0.1:5001\n        timeouts: {response: 0s}\n",
     "upstreams[0].mirrors[0].timeouts.response", 6, ""},
    {"mirror_select", UPSTREAM "    mirror_select: random\n", "upstreams[0].mirror_select", 4,
     "ordered"},
    {"mirror_breaker_failures", UPSTREAM "    mirror_breaker: {failures: 0}\n",
     "upstreams[0].mirror_breaker.failures", 4, ""},
    {"redirect_reuse", UPSTREAM "    redirect_reuse: forever\n", "upstreams[0].redirect_reuse", 4,
     "expected a duration like 30s"},
    {"timeouts_body_zero", UPSTREAM "    timeouts: {body: 0s}\n", "upstreams[0].timeouts.body", 4,
     "must be"},
    {"timeouts_body_garbage", UPSTREAM "    timeouts: {body: forever}\n",
     "upstreams[0].timeouts.body", 4, "expected a duration like 30s"},
    {"allow_internal_redirects", UPSTREAM "    allow_internal_redirects: sometimes\n",
     "upstreams[0].allow_internal_redirects", 4, "expected true or false"},
    {"admin_max_connections_zero", "admin:\n  max_connections: 0\n" UPSTREAM,
     "admin.max_connections", 2, "must be between 1 and 65536"},
    {"admin_hosts_not_list", "admin:\n  hosts: node1\n" UPSTREAM, "admin.hosts", 2,
     "expected a list"},
    {"admin_hosts_bad_entry", "admin:\n  hosts: ['a b']\n" UPSTREAM, "admin.hosts[0]", 2,
     "a host name like"},
    {"admin_hosts_bad_port", "admin:\n  hosts: ['node1:99999']\n" UPSTREAM, "admin.hosts[0]", 2,
     "a host name like"},
    {"realm_hosts_bad_port", UPSTREAM "    auth:\n      realm_hosts: ['auth.example.com:0']\n",
     "upstreams[0].auth.realm_hosts[0]", 5, "a host name like"},
    {"retry_attempts_zero", UPSTREAM "    retry:\n      attempts: 0\n",
     "upstreams[0].retry.attempts", 5, "must be between 1 and 10, got '0'"},
    {"retry_backoff_garbage", UPSTREAM "    retry: {backoff: fast}\n", "upstreams[0].retry.backoff",
     4, "expected a duration like 30s, got 'fast'"},
    {"retry_max_backoff_short", UPSTREAM "    retry:\n      backoff: 2s\n      max_backoff: 1s\n",
     "upstreams[0].retry.max_backoff", 6, "must not be shorter than backoff"},
    {"upstream_timeout_zero", UPSTREAM "    timeouts:\n      connect: 0ms\n",
     "upstreams[0].timeouts.connect", 5, "longer than 0s"},
    {"control_characters_escaped", "log:\n  level: \"a\\x01b\"\n" UPSTREAM, "log.level", 2,
     "got 'a\\x01b'"},
    // Listeners.
    {"listen_hostname", "server:\n  listen:\n    - address: localhost:5000\n" UPSTREAM,
     "server.listen[0].address", 3, "literal IPv4 or [IPv6] address, got 'localhost'"},
    {"listen_port_70000", "server:\n  listen:\n    - address: 127.0.0.1:70000\n" UPSTREAM,
     "server.listen[0].address", 3, "port must be between 0 and 65535, got '70000'"},
    {"listen_no_port", "server:\n  listen:\n    - address: 127.0.0.1\n" UPSTREAM,
     "server.listen[0].address", 3, "expected an address like"},
    {"listen_bare_ipv6", "server:\n  listen:\n    - address: ::1:5000\n" UPSTREAM,
     "server.listen[0].address", 3, "expected an address like"},
    {"listen_ipv6_in_v4_form", "server:\n  listen:\n    - address: '[127.0.0.1]:5000'\n" UPSTREAM,
     "server.listen[0].address", 3, "literal IPv4 or [IPv6]"},
    {"listen_empty", "server:\n  listen: []\n" UPSTREAM, "server.listen", 2,
     "at least one listener"},
    {"listen_missing_address",
     "server:\n  listen:\n    - tls: {cert_file: $DIR/cert.pem, "
     "key_file: $DIR/key.pem}\n" UPSTREAM,
     "server.listen[0].address", 3, "required key is missing"},
    {"tls_missing_key_file",
     "server:\n  listen:\n    - address: 127.0.0.1:0\n      tls:\n"
     "        cert_file: $DIR/cert.pem\n" UPSTREAM,
     "server.listen[0].tls.key_file", 5, "required key is missing"},
    {"tls_cert_not_found",
     "server:\n  listen:\n    - address: 127.0.0.1:0\n      tls:\n"
     "        cert_file: $DIR/nope.pem\n        key_file: $DIR/key.pem\n" UPSTREAM,
     "server.listen[0].tls.cert_file", 5, "file not found"},
    // Upstream names and aliases.
    {"upstreams_missing", "log:\n  level: info\n", "upstreams", 1,
     "at least one upstream is required"},
    {"upstreams_empty", "upstreams: []\n", "upstreams", 1, "at least one upstream is required"},
    {"upstreams_not_list", "upstreams: docker.io\n", "upstreams", 1,
     "expected a list, got 'docker.io'"},
    {"name_missing", "upstreams:\n  - url: https://quay.io\n", "upstreams[0].name", 2,
     "required key is missing"},
    {"name_with_slash", "upstreams:\n  - name: library/ubuntu\n    url: https://quay.io\n",
     "upstreams[0].name", 2, "must be lowercase"},
    {"two_defaults",
     UPSTREAM "    default: true\n  - name: quay.io\n    url: https://quay.io\n"
              "    default: true\n",
     "upstreams[1].default", 7, "only one upstream may be the default; upstreams[0] already is"},
    {"duplicate_names", UPSTREAM "  - name: docker.io\n    url: https://mirror.gcr.io\n",
     "upstreams[1].name", 4, "'docker.io' is already used by upstreams[0].name"},
    {"alias_equals_other_name",
     UPSTREAM "  - name: quay.io\n    url: https://quay.io\n    aliases: [docker.io]\n",
     "upstreams[1].aliases[0]", 6, "already used by upstreams[0].name"},
    {"alias_equals_own_name", UPSTREAM "    aliases: [docker.io]\n", "upstreams[0].aliases[0]", 4,
     "already used by upstreams[0].name"},
    {"duplicate_alias_case_insensitive",
     UPSTREAM "    aliases: [index.docker.io]\n  - name: hub\n    url: https://quay.io\n"
              "    aliases:\n      - Index.Docker.IO\n",
     "upstreams[1].aliases[0]", 8, "already used by upstreams[0].aliases[0]"},
    {"bad_alias", UPSTREAM "    aliases: ['not a host']\n", "upstreams[0].aliases[0]", 4,
     "expected a registry host"},
    {"alias_port_zero", UPSTREAM "    aliases: ['mirror:0']\n", "upstreams[0].aliases[0]", 4,
     "expected a registry host"},
    {"aliases_not_list", UPSTREAM "    aliases: index.docker.io\n", "upstreams[0].aliases", 4,
     "expected a list"},
    // Upstream URLs.
    {"url_missing", "upstreams:\n  - name: quay.io\n", "upstreams[0].url", 2,
     "required key is missing"},
    {"url_scheme_ftp", "upstreams:\n  - name: a\n    url: ftp://quay.io\n", "upstreams[0].url", 3,
     "scheme must be http or https, got 'ftp'"},
    {"url_scheme_file", "upstreams:\n  - name: a\n    url: file:///etc/passwd\n",
     "upstreams[0].url", 3, "scheme must be http or https, got 'file'"},
    {"url_no_scheme", "upstreams:\n  - name: a\n    url: registry-1.docker.io\n",
     "upstreams[0].url", 3, "expected a URL like"},
    {"url_with_path", "upstreams:\n  - name: a\n    url: https://quay.io/v2\n", "upstreams[0].url",
     3, "must not have a path, got '/v2'"},
    {"url_with_query", "upstreams:\n  - name: a\n    url: https://quay.io/?x=1\n",
     "upstreams[0].url", 3, "must not have a query"},
    {"url_with_fragment", "upstreams:\n  - name: a\n    url: https://quay.io#top\n",
     "upstreams[0].url", 3, "must not have a fragment"},
    {"url_with_userinfo", "upstreams:\n  - name: a\n    url: https://alice:hunter2@quay.io\n",
     "upstreams[0].url", 3, "user info (user:password@) is not allowed"},
    {"url_with_userinfo_and_slash",
     "upstreams:\n  - name: a\n    url: https://alice:hun/ter2@quay.io\n", "upstreams[0].url", 3,
     "user info (user:password@) is not allowed"},
    {"url_port_70000", "upstreams:\n  - name: a\n    url: https://quay.io:70000\n",
     "upstreams[0].url", 3, "port must be between 1 and 65535, got '70000'"},
    {"url_port_empty", "upstreams:\n  - name: a\n    url: 'https://quay.io:'\n", "upstreams[0].url",
     3, "port must be between 1 and 65535, got ''"},
    {"url_no_host", "upstreams:\n  - name: a\n    url: https://\n", "upstreams[0].url", 3,
     "missing host"},
    {"url_bad_host", "upstreams:\n  - name: a\n    url: https://bad_host.example\n",
     "upstreams[0].url", 3, "invalid host 'bad_host.example'"},
    {"url_bad_ipv4", "upstreams:\n  - name: a\n    url: http://999.1.1.1\n", "upstreams[0].url", 3,
     "invalid host '999.1.1.1'"},
    {"url_bare_ipv6", "upstreams:\n  - name: a\n    url: http://fd00::1:80\n", "upstreams[0].url",
     3, "IPv6 addresses go in brackets"},
    {"url_space", "upstreams:\n  - name: a\n    url: 'https://quay .io'\n", "upstreams[0].url", 3,
     "spaces"},
    // Files and credentials.
    {"ca_file_missing", UPSTREAM "    ca_file: $DIR/missing-ca.pem\n", "upstreams[0].ca_file", 4,
     "file not found"},
    {"ca_file_directory", UPSTREAM "    ca_file: $DIR/a-directory\n", "upstreams[0].ca_file", 4,
     "is a directory"},
    {"auth_not_mapping", UPSTREAM "    auth: basic\n", "upstreams[0].auth", 4,
     "expected a mapping, got 'basic'"},
    {"auth_type_unknown", UPSTREAM "    auth:\n      type: bearer\n", "upstreams[0].auth.type", 5,
     "expected one of anonymous, basic, gce_metadata, docker_config, got 'bearer'"},
    {"basic_without_username",
     UPSTREAM "    auth:\n      type: basic\n      password_env: LAYERCACHE_TEST_PASSWORD\n",
     "upstreams[0].auth.username", 5, "required for basic auth"},
    {"basic_username_with_colon",
     UPSTREAM "    auth:\n      type: basic\n      username: 'a:b'\n"
              "      password_env: LAYERCACHE_TEST_PASSWORD\n",
     "upstreams[0].auth.username", 6, "must not contain ':'"},
    {"basic_both_passwords",
     UPSTREAM "    auth:\n      type: basic\n      username: alice\n"
              "      password_file: $DIR/password\n      password_env: LAYERCACHE_TEST_PASSWORD\n",
     "upstreams[0].auth.password_env", 8, "set only one of password_file and password_env"},
    {"basic_without_password", UPSTREAM "    auth:\n      type: basic\n      username: alice\n",
     "upstreams[0].auth", 5, "needs password_file or password_env"},
    {"anonymous_with_username", UPSTREAM "    auth:\n      username: alice\n",
     "upstreams[0].auth.username", 5, "only valid with type: basic"},
    {"password_env_unset",
     UPSTREAM "    auth:\n      type: basic\n      username: alice\n"
              "      password_env: LAYERCACHE_TEST_UNSET\n",
     "upstreams[0].auth.password_env", 7,
     "environment variable 'LAYERCACHE_TEST_UNSET' is not set"},
    {"password_env_empty",
     UPSTREAM "    auth:\n      type: basic\n      username: alice\n"
              "      password_env: LAYERCACHE_TEST_EMPTY\n",
     "upstreams[0].auth.password_env", 7, "is empty"},
    {"password_file_missing",
     UPSTREAM "    auth:\n      type: basic\n      username: alice\n"
              "      password_file: $DIR/no-such-password\n",
     "upstreams[0].auth.password_file", 7, "file not found"},
    {"password_file_empty",
     UPSTREAM "    auth:\n      type: basic\n      username: alice\n"
              "      password_file: $DIR/empty-password\n",
     "upstreams[0].auth.password_file", 7, "is empty"},
    // The chunk store.
    {"cache_not_mapping", UPSTREAM "cache: /var/lib/layercache\n", "cache", 4,
     "expected a mapping, got '/var/lib/layercache'"},
    {"cache_unknown_key", UPSTREAM "cache:\n  path: /x\n  size: 1GiB\n", "cache.size", 6,
     "unknown key"},
    {"cache_path_empty", UPSTREAM "cache:\n  path: ''\n", "cache.path", 5, "must not be empty"},
    {"cache_path_not_string", UPSTREAM "cache:\n  path: [a, b]\n", "cache.path", 5,
     "expected a string, got a list"},
    {"cache_capacity_malformed", UPSTREAM "cache:\n  capacity: lots\n", "cache.capacity", 5,
     "expected a size like 64MiB, got 'lots'"},
    {"cache_capacity_too_small", UPSTREAM "cache:\n  capacity: 1MiB\n", "cache.capacity", 5,
     "must be between 64MiB and 1024TiB, got '1MiB'"},
    {"cache_capacity_negative", UPSTREAM "cache:\n  capacity: -1GiB\n", "cache.capacity", 5,
     "expected a size like 64MiB"},
    {"cache_max_disk_too_small", UPSTREAM "cache:\n  max_disk: 100MiB\n", "cache.max_disk", 5,
     "at least 256MiB"},
    {"cache_max_disk_below_capacity", UPSTREAM "cache:\n  capacity: 10GiB\n  max_disk: 8GiB\n",
     "cache.max_disk", 6, "less than cache.capacity"},
    {"cache_chunk_size_too_small", UPSTREAM "cache:\n  chunk_size: 32KiB\n", "cache.chunk_size", 5,
     "must be between 64KiB and 16MiB, got '32KiB'"},
    {"cache_chunk_size_too_large", UPSTREAM "cache:\n  chunk_size: 32MiB\n", "cache.chunk_size", 5,
     "must be between 64KiB and 16MiB, got '32MiB'"},
    {"cache_chunk_size_not_power_of_two", UPSTREAM "cache:\n  chunk_size: 3MiB\n",
     "cache.chunk_size", 5, "must be a power of two, like 1MiB, got '3MiB'"},
    {"cache_chunk_size_decimal_units", UPSTREAM "cache:\n  chunk_size: 1MB\n", "cache.chunk_size",
     5, "must be a power of two"},
    {"cache_chunk_size_malformed", UPSTREAM "cache:\n  chunk_size: 1 MiB\n", "cache.chunk_size", 5,
     "expected a size like 64MiB, got '1 MiB'"},
    {"cache_block_cache_too_small", UPSTREAM "cache:\n  block_cache: 1MiB\n", "cache.block_cache",
     5, "must be between 8MiB and 1TiB, got '1MiB'"},
    {"cache_block_cache_malformed", UPSTREAM "cache:\n  block_cache: {}\n", "cache.block_cache", 5,
     "expected a size like 64MiB, got a mapping"},
    {"cache_sync_writes_not_bool", UPSTREAM "cache:\n  sync_writes: sometimes\n",
     "cache.sync_writes", 5, "expected true or false, got 'sometimes'"},
    {"cache_tag_ttl_malformed", UPSTREAM "cache:\n  tag_ttl: 1 minute\n", "cache.tag_ttl", 5,
     "expected a duration like 30s, got '1 minute'"},
    {"cache_tag_ttl_negative", UPSTREAM "cache:\n  tag_ttl: -1s\n", "cache.tag_ttl", 5,
     "expected a duration like 30s, got '-1s'"},
    {"cache_max_stale_malformed", UPSTREAM "cache:\n  max_stale: forever\n", "cache.max_stale", 5,
     "expected a duration like 30s, got 'forever'"},
    {"cache_max_stale_not_scalar", UPSTREAM "cache:\n  max_stale: [1h]\n", "cache.max_stale", 5,
     "expected a duration like 30s, got a list"},
    {"access_unknown", UPSTREAM "    access: everyone\n", "upstreams[0].access", 4, "'everyone'"},
    {"access_ttl_zero", UPSTREAM "    access_ttl: 0s\n", "upstreams[0].access_ttl", 4, "0s"},
    {"access_ttl_too_long", UPSTREAM "    access_ttl: 2h\n", "upstreams[0].access_ttl", 4,
     "must be at most 1h"},
    {"access_ttl_too_short", UPSTREAM "    access_ttl: 500ms\n", "upstreams[0].access_ttl", 4,
     "must be at least 1s"},
    {"access_client_with_client_auth",
     "server:\n  client_auth:\n    token_file: $DIR/password\n" UPSTREAM "    access: client\n",
     "upstreams[0].access", 7, "cannot be combined with server.client_auth"},
    // Secrets stay out of messages even next to other problems.
    {"password_file_not_echoed",
     UPSTREAM "    auth:\n      type: basic\n      username: alice\n"
              "      password_file: $DIR/password\n    max_redirects: x\n",
     "upstreams[0].max_redirects", 8, "expected a whole number"},
};

INSTANTIATE_TEST_SUITE_P(table, bad_document, ::testing::ValuesIn(bad_cases),
                         [](const auto& info) { return std::string(info.param.name); });

// ---- many problems at once

TEST(config, admin_defaults_and_keys) {
  const config d = load_string(UPSTREAM);
  EXPECT_TRUE(d.admin.enabled);
  EXPECT_EQ(d.admin.host, "127.0.0.1");
  EXPECT_EQ(d.admin.port, 9401);
  EXPECT_TRUE(d.admin.token.empty());
  EXPECT_TRUE(d.log.access);
  EXPECT_EQ(load_string(default_yaml()).admin.port, 9401);

  const std::string token = fixture_dir::path() + "/admin-token";
  std::ofstream(token) << "tok-123\n";
  const config c = load_string("admin:\n  address: '[::]:9500'\n  token_file: " + token +
                               "\n  metrics_need_token: true\nlog:\n  access: false\n" UPSTREAM);
  EXPECT_EQ(c.admin.host, "::");
  EXPECT_EQ(c.admin.port, 9500);
  EXPECT_EQ(c.admin.token, "tok-123");
  EXPECT_TRUE(c.admin.metrics_need_token);
  EXPECT_FALSE(c.log.access);
  const config off = load_string("admin: {enabled: false, address: '0.0.0.0:1'}\n" UPSTREAM);
  EXPECT_FALSE(off.admin.enabled);  // disabled: no token needed

  // Issue 25: the connection cap and the names the listener may be reached by.
  EXPECT_EQ(d.admin.max_connections, 64u);
  EXPECT_TRUE(d.admin.hosts.empty());
  const config named = load_string(
      "admin:\n  max_connections: 8\n  hosts: [Node1.Example.com, 'ops.example.com:9401', "
      "'[::1]:9401']\n" UPSTREAM);
  EXPECT_EQ(named.admin.max_connections, 8u);
  EXPECT_EQ(named.admin.hosts,
            (std::vector<std::string>{"node1.example.com", "ops.example.com:9401", "[::1]:9401"}));
}

TEST(config, realm_hosts_may_name_ports) {
  const config c = load_string(UPSTREAM
                               "    auth:\n      realm_hosts: ['auth.example.com:5001', "
                               "'*.example.net:8443', '[::1]:7000', '::2', tokens.example.com]\n");
  EXPECT_EQ(c.upstreams[0].auth.realm_hosts,
            (std::vector<std::string>{"auth.example.com:5001", "*.example.net:8443", "[::1]:7000",
                                      "::2", "tokens.example.com"}));
}

TEST(config, access_defaults_and_keys) {
  set_test_environment();
  const config d = load_string(UPSTREAM);
  EXPECT_EQ(d.upstreams[0].access, access_mode::node);
  EXPECT_EQ(d.upstreams[0].access_ttl, 60s);
  const config c = load_string(UPSTREAM "    access: client\n    access_ttl: 5m\n");
  EXPECT_EQ(c.upstreams[0].access, access_mode::client);
  EXPECT_EQ(c.upstreams[0].access_ttl, 300s);
}

TEST(config, mirrors_defaults_and_keys) {
  set_test_environment();
  const config d = load_string(UPSTREAM);
  EXPECT_TRUE(d.upstreams[0].mirrors.empty());
  EXPECT_EQ(d.upstreams[0].mirror_select, mirror_selection::ordered);
  EXPECT_EQ(d.upstreams[0].breaker.failures, 3u);
  EXPECT_EQ(d.upstreams[0].breaker.open_for, 30s);

  const config c = load_string(UPSTREAM
                               "    mirror_select: hash\n"
                               "    mirror_breaker: {failures: 5, open_for: 1m}\n"
                               "    mirrors:\n"
                               "      - url: http://127.0.0.1:5001\n"
                               "      - url: https://Tier.Example.com:8443\n"
                               "        resolve: true\n"
                               "        timeouts: {connect: 1s, response: 500ms}\n"
                               "        auth: {type: basic, username: node, password_env: "
                               "LAYERCACHE_TEST_PASSWORD}\n");
  const upstream& u = c.upstreams[0];
  EXPECT_EQ(u.mirror_select, mirror_selection::hash);
  EXPECT_EQ(u.breaker.failures, 5u);
  EXPECT_EQ(u.breaker.open_for, 60s);
  ASSERT_EQ(u.mirrors.size(), 2u);
  EXPECT_EQ(u.mirrors[0].scheme, "http");
  EXPECT_EQ(u.mirrors[0].host, "127.0.0.1");
  EXPECT_EQ(u.mirrors[0].port, 5001);
  EXPECT_FALSE(u.mirrors[0].resolve);
  EXPECT_EQ(u.mirrors[0].auth.type, auth_type::anonymous);
  EXPECT_EQ(u.mirrors[0].timeouts.connect, 2s);  // mirrors' own defaults: fail over fast
  EXPECT_EQ(u.mirrors[0].timeouts.response, 5s);
  EXPECT_EQ(u.mirrors[1].host, "tier.example.com");
  EXPECT_EQ(u.mirrors[1].port, 8443);
  EXPECT_TRUE(u.mirrors[1].resolve);
  EXPECT_EQ(u.mirrors[1].timeouts.connect, 1s);
  EXPECT_EQ(u.mirrors[1].timeouts.response, 500ms);
  EXPECT_EQ(u.mirrors[1].timeouts.read, 10s);
  EXPECT_EQ(u.mirrors[1].auth.type, auth_type::basic);
  EXPECT_EQ(u.mirrors[1].auth.username, "node");
  EXPECT_EQ(u.auth.type, auth_type::anonymous);  // the origin's auth is its own
}

TEST(config, prefetch_defaults_and_keys) {
  const config d = load_string(UPSTREAM);
  EXPECT_TRUE(d.prefetch.enabled);
  EXPECT_EQ(d.prefetch.window, std::chrono::seconds(60));
  EXPECT_EQ(d.prefetch.concurrency, 16u);
  EXPECT_EQ(d.prefetch.eager_layers, eager_mode::automatic);
  EXPECT_TRUE(d.prefetch.preload.empty());
  const config shipped = load_string(default_yaml());
  EXPECT_TRUE(shipped.prefetch.enabled);
  EXPECT_EQ(shipped.prefetch.window, std::chrono::seconds(60));

  const config c = load_string(
      "prefetch:\n  enabled: false\n  window: 90s\n  concurrency: 16\n  eager_layers: always\n"
      "  preload:\n    - alpine\n    - registry.example.com:5000/team/app:v1\n" UPSTREAM);
  EXPECT_FALSE(c.prefetch.enabled);
  EXPECT_EQ(c.prefetch.window, std::chrono::seconds(90));
  EXPECT_EQ(c.prefetch.concurrency, 16u);
  EXPECT_EQ(c.prefetch.eager_layers, eager_mode::always);
  EXPECT_EQ(c.prefetch.preload,
            (std::vector<std::string>{"alpine", "registry.example.com:5000/team/app:v1"}));
  EXPECT_EQ(load_string("prefetch: {eager_layers: never}\n" UPSTREAM).prefetch.eager_layers,
            eager_mode::never);
}

TEST(config, client_auth_token_and_client_ca) {
  const config d = load_string(UPSTREAM);
  EXPECT_TRUE(d.server.client_token.empty());
  const std::string token = fixture_dir::path() + "/client-token";
  std::ofstream(token) << "client-tok-9\n\n";
  const std::string ca = fixture_dir::path() + "/client-ca.pem";
  std::ofstream(ca) << "-----BEGIN CERTIFICATE-----\n";
  const config c = load_string("server:\n  client_auth:\n    token_file: " + token +
                               "\n  listen:\n    - address: 127.0.0.1:5443\n      tls:\n"
                               "        cert_file: " +
                               ca + "\n        key_file: " + ca +
                               "\n        client_ca_file: " + ca + "\n" UPSTREAM);
  EXPECT_EQ(c.server.client_token, "client-tok-9");
  EXPECT_EQ(c.server.client_token_file, token);
  ASSERT_TRUE(c.server.listen.at(0).tls.has_value());
  EXPECT_EQ(c.server.listen[0].tls->client_ca_file, ca);
  const std::string empty = fixture_dir::path() + "/empty-token";
  std::ofstream(empty) << "\n";
  failure f = load_failure("server:\n  client_auth:\n    token_file: " + empty + "\n" UPSTREAM);
  ASSERT_EQ(f.problems.size(), 1u) << dump(f.problems);
  EXPECT_EQ(f.problems[0].path, "server.client_auth.token_file");
  EXPECT_THAT(f.problems[0].message, HasSubstr("is empty"));
}

TEST(config, reports_every_problem) {
  failure f = load_failure(
      "server:\n"                              // 1
      "  listen:\n"                            // 2
      "    - address: localhost:5000\n"        // 3
      "  threads: lots\n"                      // 4
      "  colour: blue\n"                       // 5
      "log:\n"                                 // 6
      "  level: loud\n"                        // 7
      "upstreams:\n"                           // 8
      "  - name: docker.io\n"                  // 9
      "    url: ftp://registry-1.docker.io\n"  // 10
      "    default: true\n"                    // 11
      "  - name: docker.io\n"                  // 12
      "    url: https://quay.io/v2?x#y\n"      // 13
      "    default: true\n"                    // 14
      "    auth:\n"                            // 15
      "      type: basic\n"                    // 16
      "    timeouts: {read: 1x}\n");           // 17
  struct expected {
    std::string path;
    int line;
    std::string fragment;
  };
  const std::vector<expected> want = {
      {"server.colour", 5, "unknown key"},
      {"server.listen[0].address", 3, "literal IPv4"},
      {"server.threads", 4, "expected a whole number, got 'lots'"},
      {"log.level", 7, "got 'loud'"},
      {"upstreams[0].url", 10, "scheme must be http or https"},
      {"upstreams[1].url", 13, "must not have a fragment"},
      {"upstreams[1].url", 13, "must not have a query"},
      {"upstreams[1].url", 13, "must not have a path, got '/v2'"},
      {"upstreams[1].auth.username", 16, "required for basic auth"},
      {"upstreams[1].auth", 16, "needs password_file or password_env"},
      {"upstreams[1].timeouts.read", 17, "expected a duration"},
      {"upstreams[1].name", 12, "already used by upstreams[0].name"},
      {"upstreams[1].default", 14, "only one upstream may be the default"},
  };
  ASSERT_EQ(f.problems.size(), want.size()) << dump(f.problems);
  for (std::size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(f.problems[i].path, want[i].path) << i << "\n" << dump(f.problems);
    EXPECT_EQ(f.problems[i].line, want[i].line) << i << "\n" << dump(f.problems);
    EXPECT_THAT(f.problems[i].message, HasSubstr(want[i].fragment)) << i;
  }
  std::string what = "test.yaml: 13 problems";
  for (const auto& p : f.problems) what += "\n" + p.to_string();
  EXPECT_EQ(f.what, what);
}

TEST(config, deep_nesting_is_a_problem_not_a_crash) {
  failure f = load_failure("server: " + std::string(100'000, '['));
  ASSERT_EQ(f.problems.size(), 1u) << dump(f.problems);
  EXPECT_EQ(f.problems[0].path, "");
  EXPECT_THAT(f.problems[0].message, HasSubstr("invalid YAML"));
}

TEST(config, non_mapping_upstream_item) {
  failure f = load_failure("upstreams:\n  - docker.io\n  - name: a\n    url: http://a\n");
  ASSERT_EQ(f.problems.size(), 1u) << dump(f.problems);
  EXPECT_EQ(f.problems[0].path, "upstreams[0]");
  EXPECT_EQ(f.problems[0].line, 2);
  EXPECT_THAT(f.problems[0].message, HasSubstr("expected a mapping, got 'docker.io'"));
}

TEST(problem, to_string) {
  EXPECT_EQ((problem{"upstreams[1].ca_file", 14, "file not found"}).to_string(),
            "upstreams[1].ca_file: file not found (line 14)");
  EXPECT_EQ((problem{"upstreams", 0, "required"}).to_string(), "upstreams: required");
  EXPECT_EQ((problem{"", 3, "invalid YAML: x"}).to_string(), "invalid YAML: x (line 3)");
}

TEST(invalid_config, what_lists_problems) {
  invalid_config e("a.yaml", {{"x", 1, "bad"}, {"y.z", 0, "worse"}});
  EXPECT_STREQ(e.what(), "a.yaml: 2 problems\nx: bad (line 1)\ny.z: worse");
  EXPECT_EQ(e.problems().size(), 2u);
}

// ---- files

TEST(load_file, reads_a_file) {
  const std::string path = fixture_dir::path() + "/good.yaml";
  std::ofstream(path) << default_yaml();
  const config cfg = load_file(path);
  ASSERT_EQ(cfg.upstreams.size(), 1u);
  EXPECT_EQ(cfg.upstreams[0].name, "docker.io");
}

TEST(load_file, missing_file_names_it) {
  const std::string path = fixture_dir::path() + "/absent.yaml";
  try {
    (void)load_file(path);
    FAIL() << "loaded a missing file";
  } catch (const invalid_config& e) {
    ASSERT_EQ(e.problems().size(), 1u);
    EXPECT_THAT(e.problems()[0].message, HasSubstr(path));
    EXPECT_THAT(e.what(), ::testing::StartsWith(path + ": 1 problem\n"));
  }
}

TEST(load_file, directory_is_rejected) {
  EXPECT_THROW((void)load_file(fixture_dir::path() + "/a-directory"), invalid_config);
}

TEST(load_file, problems_name_the_file) {
  const std::string path = fixture_dir::path() + "/bad.yaml";
  std::ofstream(path) << "upstreams: []\n";
  try {
    (void)load_file(path);
    FAIL() << "loaded a bad file";
  } catch (const invalid_config& e) {
    EXPECT_EQ(std::string(e.what()),
              path + ": 1 problem\nupstreams: at least one upstream is required (line 1)");
  }
}

// ---- upstream credentials (auth types beyond basic)

TEST(config_auth, gce_metadata_defaults_and_url) {
  const config plain = load_string(UPSTREAM "    auth: {type: gce_metadata}\n");
  const auto& a = plain.upstreams[0].auth;
  EXPECT_EQ(a.type, auth_type::gce_metadata);
  EXPECT_EQ(a.metadata_url,
            "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/"
            "token");
  EXPECT_TRUE(a.realm_hosts.empty());

  const config custom = load_string(UPSTREAM
                                    "    auth:\n"
                                    "      type: gce_metadata\n"
                                    "      metadata_url: http://127.0.0.1:8080/token\n"
                                    "      realm_hosts: [Auth.Example.com, '*.pkg.dev']\n");
  EXPECT_EQ(custom.upstreams[0].auth.metadata_url, "http://127.0.0.1:8080/token");
  EXPECT_EQ(custom.upstreams[0].auth.realm_hosts,
            (std::vector<std::string>{"auth.example.com", "*.pkg.dev"}));
}

TEST(config_auth, docker_config_keys) {
  const config cfg = load_string(with_dir(UPSTREAM "    auth:\n"
                                                   "      type: docker_config\n"
                                                   "      docker_config: $DIR/password\n"
                                                   "      registry: US-Docker.pkg.dev\n"
                                                   "      helper_dir: $DIR/a-directory\n"
                                                   "      helper_timeout: 2s\n"));
  const auto& a = cfg.upstreams[0].auth;
  EXPECT_EQ(a.type, auth_type::docker_config);
  EXPECT_EQ(a.docker_config, fixture_dir::path() + "/password");
  EXPECT_EQ(a.registry, "us-docker.pkg.dev");
  EXPECT_EQ(a.helper_dir, fixture_dir::path() + "/a-directory");
  EXPECT_EQ(a.helper_timeout, 2s);

  const config defaults = load_string(
      with_dir(UPSTREAM "    auth: {type: docker_config, docker_config: $DIR/ca.pem}\n"));
  EXPECT_TRUE(defaults.upstreams[0].auth.registry.empty());
  EXPECT_TRUE(defaults.upstreams[0].auth.helper_dir.empty());
  EXPECT_EQ(defaults.upstreams[0].auth.helper_timeout, 10s);
}

const bad_case bad_auth_cases[] = {
    {"auth_key_of_other_type", UPSTREAM "    auth:\n      type: gce_metadata\n      username: a\n",
     "upstreams[0].auth.username", 6, "only valid with type: basic"},
    {"metadata_url_on_basic",
     UPSTREAM "    auth:\n      type: basic\n      metadata_url: http://x/\n",
     "upstreams[0].auth.metadata_url", 6, "only valid with type: gce_metadata"},
    {"docker_config_on_anonymous", UPSTREAM "    auth:\n      docker_config: /x\n",
     "upstreams[0].auth.docker_config", 5, "only valid with type: docker_config"},
    {"metadata_url_not_http",
     UPSTREAM "    auth:\n      type: gce_metadata\n      metadata_url: ftp://x/token\n",
     "upstreams[0].auth.metadata_url", 6, "scheme must be http or https"},
    {"metadata_url_bad_host",
     UPSTREAM "    auth:\n      type: gce_metadata\n      metadata_url: http://bad_host/\n",
     "upstreams[0].auth.metadata_url", 6, "invalid host"},
    {"metadata_url_with_user_info",
     UPSTREAM "    auth:\n      type: gce_metadata\n      metadata_url: http://u:hunter2@x/\n",
     "upstreams[0].auth.metadata_url", 6, "must not contain '@'"},
    {"docker_config_missing_key", UPSTREAM "    auth:\n      type: docker_config\n",
     "upstreams[0].auth.docker_config", 5, "required key is missing"},
    {"docker_config_file_missing",
     UPSTREAM "    auth:\n      type: docker_config\n      docker_config: $DIR/nope.json\n",
     "upstreams[0].auth.docker_config", 6, "file not found"},
    {"docker_config_registry_bad",
     UPSTREAM "    auth:\n      type: docker_config\n      docker_config: $DIR/ca.pem\n"
              "      registry: 'https://x/'\n",
     "upstreams[0].auth.registry", 7, "a registry host like"},
    {"docker_config_helper_dir_relative",
     UPSTREAM "    auth:\n      type: docker_config\n      docker_config: $DIR/ca.pem\n"
              "      helper_dir: bin\n",
     "upstreams[0].auth.helper_dir", 7, "must be an absolute path"},
    {"docker_config_helper_dir_is_file",
     UPSTREAM "    auth:\n      type: docker_config\n      docker_config: $DIR/ca.pem\n"
              "      helper_dir: $DIR/ca.pem\n",
     "upstreams[0].auth.helper_dir", 7, "is not a directory"},
    {"docker_config_helper_timeout_zero",
     UPSTREAM "    auth:\n      type: docker_config\n      docker_config: $DIR/ca.pem\n"
              "      helper_timeout: 0s\n",
     "upstreams[0].auth.helper_timeout", 7, "must be longer than 0s"},
    {"realm_hosts_not_list", UPSTREAM "    auth:\n      realm_hosts: auth.example.com\n",
     "upstreams[0].auth.realm_hosts", 5, "expected a list"},
    {"realm_hosts_empty", UPSTREAM "    auth:\n      realm_hosts: []\n",
     "upstreams[0].auth.realm_hosts", 5, "at least one host"},
    {"realm_hosts_bad_entry",
     UPSTREAM "    auth:\n      realm_hosts:\n        - auth.example.com\n        - 'a b'\n",
     "upstreams[0].auth.realm_hosts[1]", 7, "a host name like"},
    {"realm_hosts_bare_wildcard", UPSTREAM "    auth:\n      realm_hosts: ['*.com']\n",
     "upstreams[0].auth.realm_hosts[0]", 5, "a host name like"},
};

INSTANTIATE_TEST_SUITE_P(auth, bad_document, ::testing::ValuesIn(bad_auth_cases),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace layercache::config
