// registry/mirrors.hpp without sockets: the ns= value, rendezvous hashing, the breaker, a
// distrusted digest, Via.
#include "registry/mirrors.hpp"

#include <gtest/gtest.h>

#include <map>
#include <set>

namespace layercache::registry {
namespace {

using namespace std::chrono_literals;

config::upstream origin_with(std::size_t mirrors,
                             config::mirror_selection select = config::mirror_selection::ordered) {
  config::upstream u;
  u.name = "origin";
  u.url = "https://registry.example.com";
  u.scheme = "https";
  u.host = "registry.example.com";
  u.port = 443;
  u.mirror_select = select;
  for (std::size_t k = 0; k < mirrors; ++k) {
    config::mirror m;
    m.scheme = "http";
    m.host = "127.0.0." + std::to_string(k + 1);
    m.port = 5000;
    m.url = "http://" + m.host + ":5000";
    u.mirrors.push_back(m);
  }
  return u;
}

std::string digest_text(int i) {
  return oci::digest_of("blob " + std::to_string(i), oci::digest_algorithm::sha256).str();
}

TEST(NsValue, IsTheHostAsContainerdSendsIt) {
  config::upstream u = origin_with(0);
  EXPECT_EQ(ns_value(u), "registry.example.com");
  u.port = 5000;
  EXPECT_EQ(ns_value(u), "registry.example.com:5000");
  u.scheme = "http";
  u.port = 80;
  EXPECT_EQ(ns_value(u), "registry.example.com");
  u.host = "registry-1.docker.io";
  EXPECT_EQ(ns_value(u), "docker.io");
  u.host = "::1";
  u.port = 5000;
  EXPECT_EQ(ns_value(u), "[::1]:5000");
}

TEST(Rendezvous, IsAPermutationAndStableAcrossCalls) {
  const std::vector<std::string> members{"http://a:1", "http://b:1", "http://c:1"};
  for (int i = 0; i < 50; ++i) {
    const auto order = rendezvous_order(members, digest_text(i));
    ASSERT_EQ(order.size(), 3u);
    EXPECT_EQ(std::set<std::size_t>(order.begin(), order.end()).size(), 3u);
    EXPECT_EQ(order, rendezvous_order(members, digest_text(i)));
  }
}

TEST(Rendezvous, GivesEachMemberAboutItsShare) {
  const std::vector<std::string> members{"http://10.0.0.1:5000", "http://10.0.0.2:5000",
                                         "http://10.0.0.3:5000"};
  std::map<std::size_t, int> owned;
  constexpr int keys = 3000;
  for (int i = 0; i < keys; ++i) ++owned[rendezvous_order(members, digest_text(i)).front()];
  for (std::size_t k = 0; k < 3; ++k) {
    EXPECT_GT(owned[k], keys / 3 * 8 / 10) << k;  // within 20 % of a third
    EXPECT_LT(owned[k], keys / 3 * 12 / 10) << k;
  }
}

TEST(Rendezvous, RemovingAMemberMovesOnlyItsKeys) {
  const std::vector<std::string> four{"http://a:1", "http://b:1", "http://c:1", "http://d:1"};
  const std::vector<std::string> three{"http://a:1", "http://b:1", "http://d:1"};  // c gone
  for (int i = 0; i < 500; ++i) {
    const std::string& before = four[rendezvous_order(four, digest_text(i)).front()];
    const auto order = rendezvous_order(four, digest_text(i));
    const std::string& after = three[rendezvous_order(three, digest_text(i)).front()];
    if (before != "http://c:1") {
      EXPECT_EQ(after, before) << i;
    } else {
      EXPECT_EQ(after, four[order[1]]) << i;  // c's keys go to their second choice
    }
  }
}

TEST(MirrorState, OrderedIsAsListedAndHashIsTheRendezvousOrder) {
  mirror_state ordered(origin_with(3), make_via());
  EXPECT_EQ(ordered.candidates(digest_text(1)), (std::vector<std::size_t>{0, 1, 2}));
  mirror_state hashed(origin_with(3, config::mirror_selection::hash), make_via());
  const std::vector<std::string> keys{"http://127.0.0.1:5000", "http://127.0.0.2:5000",
                                      "http://127.0.0.3:5000"};
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(hashed.candidates(digest_text(i)), rendezvous_order(keys, digest_text(i)));
  }
}

TEST(MirrorState, TheBreakerOpensAfterFailuresInARowAndClosesAfterItsTime) {
  auto u = origin_with(2);
  u.breaker.failures = 3;
  u.breaker.open_for = 30s;
  mirror_state s(u, make_via());
  const auto t0 = mirror_state::clock::now();
  s.failed(0, "status", t0);
  s.failed(0, "status", t0);
  s.succeeded(0);  // the count is of failures in a row
  s.failed(0, "status", t0);
  s.failed(0, "status", t0);
  EXPECT_FALSE(s.breaker_open(0, t0));
  s.passed(0, "not_found");  // a 404 is no failure
  EXPECT_FALSE(s.breaker_open(0, t0));
  s.failed(0, "transport", t0);
  EXPECT_TRUE(s.breaker_open(0, t0));
  EXPECT_EQ(s.candidates(digest_text(1), t0 + 29s), (std::vector<std::size_t>{1}));
  // After open_for it is asked again; one more failure opens it at once.
  EXPECT_EQ(s.candidates(digest_text(1), t0 + 31s), (std::vector<std::size_t>{0, 1}));
  s.failed(0, "timeout", t0 + 31s);
  EXPECT_EQ(s.candidates(digest_text(1), t0 + 32s), (std::vector<std::size_t>{1}));
  // A success closes it.
  s.succeeded(0);
  EXPECT_EQ(s.candidates(digest_text(1), t0 + 32s), (std::vector<std::size_t>{0, 1}));
}

TEST(MirrorState, ADistrustedBlobGoesToTheOriginAndItsServersAreFailed) {
  mirror_state s(origin_with(3), make_via());
  const auto d = oci::digest_of("lied about", oci::digest_algorithm::sha256);
  const auto t0 = mirror_state::clock::now();
  s.served(1, d);
  s.distrust(d, t0);
  EXPECT_TRUE(s.candidates(d.str(), t0 + 1s).empty());
  EXPECT_TRUE(s.breaker_open(1, t0 + 1s));
  EXPECT_FALSE(s.breaker_open(0, t0 + 1s));
  EXPECT_EQ(s.candidates(digest_text(7), t0 + 1s), (std::vector<std::size_t>{0, 2}));
  // Trusted again after distrust_for.
  EXPECT_FALSE(s.candidates(d.str(), t0 + mirror_state::distrust_for + 1s).empty());
}

TEST(MirrorState, ResolversAreTheMirrorsMarkedResolve) {
  auto u = origin_with(3);
  u.mirrors[2].resolve = true;
  mirror_state s(u, make_via());
  EXPECT_EQ(s.resolvers(), (std::vector<std::size_t>{2}));
}

TEST(MirrorEndpoint, HasTheMirrorsOwnAuthAndNoRetries) {
  auto u = origin_with(1);
  u.auth.type = config::auth_type::basic;
  u.auth.username = "origin-user";
  u.auth.password = "origin-secret";
  u.mirrors[0].auth.type = config::auth_type::basic;
  u.mirrors[0].auth.username = "node";
  const auto e = mirror_endpoint(u, u.mirrors[0]);
  EXPECT_EQ(e.auth.username, "node");
  EXPECT_EQ(e.auth.password, "");
  EXPECT_EQ(e.host, "127.0.0.1");
  EXPECT_EQ(e.port, 5000);
  EXPECT_EQ(e.retry.attempts, 1u);
  EXPECT_EQ(e.warm_connections, 0u);
  EXPECT_NE(e.name, u.name);  // its own tokens
}

TEST(Via, NamesThisLayercacheOrAnother) {
  const std::string own = make_via();
  EXPECT_TRUE(own.starts_with("1.1 layercache-"));
  EXPECT_NE(own, make_via());
  EXPECT_TRUE(via_names_layercache(own));
  EXPECT_TRUE(via_names(own, own));
  EXPECT_TRUE(via_names("1.1 proxy, " + own + ", 1.1 other", own));
  EXPECT_FALSE(via_names(make_via(), own));
  EXPECT_FALSE(via_names(own + "0", own));  // a longer pseudonym is another
  EXPECT_FALSE(via_names_layercache("1.1 squid"));
  EXPECT_FALSE(via_names_layercache(""));
}

TEST(AddressToMirror, AddsNsAndVia) {
  mirror_state s(origin_with(1), "1.1 layercache-00000000000000aa");
  upstream_request req;
  req.target = "/v2/team/app/blobs/sha256:abc";
  address_to_mirror(req, s);
  EXPECT_EQ(req.target, "/v2/team/app/blobs/sha256:abc?ns=registry.example.com");
  ASSERT_EQ(req.headers.size(), 1u);
  EXPECT_EQ(req.headers[0].first, http::field::via);
  EXPECT_EQ(req.headers[0].second, "1.1 layercache-00000000000000aa");
  req.target = "/v2/team/app/tags/list?n=1";
  address_to_mirror(req, s);
  EXPECT_EQ(req.target, "/v2/team/app/tags/list?n=1&ns=registry.example.com");
}

TEST(Judge, WhatCountsAgainstAMirror) {
  EXPECT_TRUE(judge_status(200).reason.empty());
  EXPECT_EQ(judge_status(404).reason, "not_found");
  EXPECT_FALSE(judge_status(404).failure);
  EXPECT_TRUE(judge_status(503).failure);
  EXPECT_TRUE(judge_status(401).failure);
  EXPECT_EQ(judge_status(508).reason, "loop");
  EXPECT_EQ(judge_failure({upstream_errc::timeout, ""}).reason, "timeout");
  EXPECT_EQ(judge_failure({upstream_errc::connect_failed, ""}).reason, "transport");
}

}  // namespace
}  // namespace layercache::registry
