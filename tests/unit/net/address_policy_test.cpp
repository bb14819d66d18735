#include "net/address_policy.hpp"

#include <gtest/gtest.h>

namespace layercache::net {
namespace {

asio::ip::address ip(const char* text) { return asio::ip::make_address(text); }
asio::ip::tcp::endpoint at(const char* text, std::uint16_t port) { return {ip(text), port}; }

TEST(AddressClass, Classifies) {
  const std::vector<std::pair<const char*, address_class>> cases = {
      {"8.8.8.8", address_class::global},
      {"127.0.0.1", address_class::loopback},
      {"127.255.0.9", address_class::loopback},
      {"10.1.2.3", address_class::private_},
      {"172.16.0.1", address_class::private_},
      {"172.31.255.255", address_class::private_},
      {"172.32.0.1", address_class::global},
      {"192.168.1.1", address_class::private_},
      {"100.64.0.1", address_class::private_},
      {"169.254.169.254", address_class::link_local},
      {"0.0.0.0", address_class::reserved},
      {"0.1.2.3", address_class::reserved},
      {"224.0.0.1", address_class::reserved},
      {"255.255.255.255", address_class::reserved},
      {"::1", address_class::loopback},
      {"::", address_class::reserved},
      {"::ffff:127.0.0.1", address_class::loopback},
      {"::ffff:169.254.169.254", address_class::link_local},
      {"::127.0.0.1", address_class::loopback},
      {"64:ff9b::a9fe:a9fe", address_class::link_local},
      {"fe80::1", address_class::link_local},
      {"fd00::1", address_class::private_},
      {"ff02::1", address_class::reserved},
      {"2001:4860:4860::8888", address_class::global},
  };
  for (const auto& [text, expected] : cases) {
    EXPECT_EQ(classify(ip(text)), expected) << text;
  }
}

TEST(RedirectPolicy, InternalAddressesOnlyFromTheirOwnKind) {
  redirect_policy from_global{address_class::global, false, nullptr};
  EXPECT_TRUE(redirect_allowed(from_global, at("203.0.113.7", 443)));
  EXPECT_FALSE(redirect_allowed(from_global, at("127.0.0.1", 9401)));
  EXPECT_FALSE(redirect_allowed(from_global, at("10.0.0.1", 80)));
  EXPECT_FALSE(redirect_allowed(from_global, at("169.254.169.254", 80)));
  EXPECT_FALSE(redirect_allowed(from_global, at("::ffff:127.0.0.1", 22)));
  EXPECT_FALSE(redirect_allowed(from_global, at("0.0.0.0", 80)));

  redirect_policy unknown{std::nullopt, false, nullptr};  // the upstream never answered yet
  EXPECT_TRUE(redirect_allowed(unknown, at("203.0.113.7", 443)));
  EXPECT_FALSE(redirect_allowed(unknown, at("127.0.0.1", 443)));

  redirect_policy from_loopback{address_class::loopback, false, nullptr};
  EXPECT_TRUE(redirect_allowed(from_loopback, at("127.0.0.2", 5000)));
  EXPECT_FALSE(redirect_allowed(from_loopback, at("10.0.0.1", 80)));
  EXPECT_FALSE(redirect_allowed(from_loopback, at("169.254.169.254", 80)));

  redirect_policy allowed{address_class::global, true, nullptr};
  EXPECT_TRUE(redirect_allowed(allowed, at("10.0.0.1", 80)));
  EXPECT_TRUE(redirect_allowed(allowed, at("127.0.0.1", 80)));
  EXPECT_FALSE(redirect_allowed(allowed, at("0.0.0.0", 80)));  // never reserved ones
}

TEST(RedirectPolicy, NeverToLayercacheItself) {
  own_endpoints own;
  own.add(at("127.0.0.1", 5000));
  own.add(at("0.0.0.0", 9401));
  EXPECT_TRUE(own.contains(at("127.0.0.1", 5000)));
  EXPECT_TRUE(own.contains(at("::ffff:127.0.0.1", 5000)));
  EXPECT_FALSE(own.contains(at("127.0.0.2", 5000)));
  EXPECT_FALSE(own.contains(at("127.0.0.1", 5001)));
  EXPECT_TRUE(own.contains(at("127.0.0.1", 9401)));  // unspecified: every local address
  EXPECT_TRUE(own.contains(at("127.0.0.9", 9401)));
  EXPECT_TRUE(own.contains(at("::1", 9401)));
  EXPECT_FALSE(own.contains(at("203.0.113.7", 9401)));

  const redirect_policy allow_all{address_class::loopback, true, &own};
  EXPECT_FALSE(redirect_allowed(allow_all, at("127.0.0.1", 5000)));
  EXPECT_FALSE(redirect_allowed(allow_all, at("127.0.0.1", 9401)));
  EXPECT_TRUE(redirect_allowed(allow_all, at("127.0.0.1", 5002)));
}

TEST(AdminHost, OnlyTheListenerOrConfiguredNames) {
  const std::vector<std::string> none;
  EXPECT_TRUE(admin_host_allowed("127.0.0.1:9401", "127.0.0.1", 9401, none));
  EXPECT_TRUE(admin_host_allowed("127.0.0.1", "127.0.0.1", 9401, none));
  EXPECT_TRUE(admin_host_allowed("localhost:9401", "127.0.0.1", 9401, none));
  EXPECT_TRUE(admin_host_allowed("LocalHost:9401", "127.0.0.1", 9401, none));
  EXPECT_FALSE(admin_host_allowed("127.0.0.1:9402", "127.0.0.1", 9401, none));
  EXPECT_FALSE(admin_host_allowed("rebind.attacker.example:9401", "127.0.0.1", 9401, none));
  EXPECT_FALSE(admin_host_allowed("127.0.0.2:9401", "127.0.0.1", 9401, none));
  EXPECT_FALSE(admin_host_allowed("", "127.0.0.1", 9401, none));
  EXPECT_FALSE(admin_host_allowed("127.0.0.1:", "127.0.0.1", 9401, none));
  EXPECT_FALSE(admin_host_allowed("127.0.0.1:x", "127.0.0.1", 9401, none));
  EXPECT_TRUE(admin_host_allowed("[::1]:9401", "::1", 9401, none));
  EXPECT_FALSE(admin_host_allowed("::1", "::1", 9401, none));  // unbracketed: malformed
  // An unspecified listener: any literal address, never a name.
  EXPECT_TRUE(admin_host_allowed("10.1.2.3:9401", "0.0.0.0", 9401, none));
  EXPECT_FALSE(admin_host_allowed("localhost:9401", "0.0.0.0", 9401, none));
  EXPECT_FALSE(admin_host_allowed("node1.example.com:9401", "0.0.0.0", 9401, none));
  const std::vector<std::string> names = {"node1.example.com", "ops.example.com:9401"};
  EXPECT_TRUE(admin_host_allowed("node1.example.com:9401", "0.0.0.0", 9401, names));
  EXPECT_TRUE(admin_host_allowed("Node1.Example.com", "0.0.0.0", 9401, names));
  EXPECT_TRUE(admin_host_allowed("ops.example.com:9401", "0.0.0.0", 9401, names));
  EXPECT_FALSE(admin_host_allowed("ops.example.com", "0.0.0.0", 9401, names));
}

TEST(DescriptorLimit, RaisedTowardTheHardLimit) {
  EXPECT_EQ(plan_nofile(1024, 524288, 9000).soft, 9000u);
  EXPECT_FALSE(plan_nofile(1024, 524288, 9000).short_of_needed);
  EXPECT_EQ(plan_nofile(1024, 4096, 9000).soft, 4096u);
  EXPECT_TRUE(plan_nofile(1024, 4096, 9000).short_of_needed);
  EXPECT_EQ(plan_nofile(65536, 524288, 9000).soft, 65536u);  // never lowered
  EXPECT_FALSE(plan_nofile(65536, 524288, 9000).short_of_needed);
}

}  // namespace
}  // namespace layercache::net
