// config::is_image_reference is a grammar of its own (config/ depends on nothing of ours): it
// must accept exactly what oci::reference::parse accepts, or a preload entry the config took
// would fail at start-up (or one the server could use be refused).
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "oci/reference.hpp"

namespace layercache::config {
namespace {

const std::string d256 = "sha256:" + std::string(64, 'b');
const std::string d512 = "sha512:" + std::string(128, 'c');

std::vector<std::string> examples() {
  return {
      "alpine",
      "alpine:3.19",
      "bitnami/redis",
      "docker.io/alpine",
      "index.docker.io/alpine",
      "docker.io/library/alpine:edge",
      "ghcr.io/owner/app:v1",
      "ghcr.io/app",
      "localhost/app",
      "localhost:5000/app:1",
      "reg:5000/a/b",
      "[::1]:5000/app:tag",
      "[::1]/app",
      "alpine@" + d256,
      "quay.io/a/b:1.0@" + d256,
      "r.io/a@" + d512,
      "localhost:5000",
      "r.io/a/b/c/d",
      "registry.example.com:5000/team/app:v1",
      "library/alpine:3.19",
      "UPPER/Case:x",
      "",
      "Alpine",
      "Foo/bar",
      "alpine:",
      "alpine:-x",
      "alpine@",
      "alpine@sha256:abc",
      "alpine@" + d256 + "@" + d256,
      "alpine@sha256:" + std::string(64, 'B'),
      "r.io/app/",
      "r.io/",
      "/alpine",
      "r.io/a/../b",
      "r.io/a%2f..",
      "r.io:99999/a",
      "r.io:0/a",
      "r.io:000080/a",
      "r.io:00080/a",
      "r.io:/a",
      "r.io:1:2/a",
      "-r.io/a",
      "r-.io/a",
      "r..io/a",
      "1.2.3.4/a",
      "999.1.1.1/a",
      "[::1/a",
      "[zz::1]/a",
      "[]/a",
      "[fe80::1%eth0]/a",
      "[::1]x/a",
      "[::1]:/a",
      "[" + std::string(50, ':') + "]/a",
      "Registry.Example.COM/a",
      "r_x.io/a",
      "alpine latest",
      std::string("alp\0ine", 7),
      "r.io/" + std::string(250, 'a'),
      "r.io/" + std::string(251, 'a'),
      std::string(237, 'a'),
      std::string(238, 'a'),
      std::string(247, 'a'),
      "u/" + std::string(245, 'a'),
      "u/" + std::string(246, 'a'),
      std::string(100000, 'a'),
      ":",
      "@",
      "a:" + std::string(128, 't'),
      "a:" + std::string(129, 't'),
      "a:_x",
      "a:.x",
      "a__b",
      "a___b",
      "a---b",
      "a.-b",
      "a//b",
      "localhost",
      "localhost:5000/A",
      "x.io:5000",
  };
}

TEST(ImageReference, AgreesWithOciOnExamples) {
  for (const auto& text : examples()) {
    EXPECT_EQ(is_image_reference(text), oci::reference::parse(text).has_value())
        << "'" << text.substr(0, 80) << "'";
  }
}

// Deterministic mutations of the examples over the characters the grammar cares about.
TEST(ImageReference, AgreesWithOciOnMutations) {
  const std::string alphabet("aZ09._-/:@[]%Bsha256:sha512:\0 ", 30);
  std::mt19937_64 rng(20);
  const auto seeds = examples();
  int disagreements = 0;
  for (int i = 0; i < 50000 && disagreements < 10; ++i) {
    std::string text = seeds[rng() % seeds.size()];
    if (text.size() > 600) text.resize(rng() % 600);
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; ++e) {
      const std::size_t at = text.empty() ? 0 : rng() % (text.size() + 1);
      const char c = alphabet[rng() % alphabet.size()];
      switch (rng() % 3) {
        case 0:
          text.insert(text.begin() + static_cast<std::ptrdiff_t>(at), c);
          break;
        case 1:
          if (at < text.size()) text.erase(at, 1);
          break;
        default:
          if (at < text.size()) text[at] = c;
          break;
      }
    }
    if (is_image_reference(text) != oci::reference::parse(text).has_value()) {
      ++disagreements;
      ADD_FAILURE() << "'" << text.substr(0, 120) << "': config says " << is_image_reference(text);
    }
  }
}

}  // namespace
}  // namespace layercache::config
