#include "net/address_policy.hpp"

#include <ifaddrs.h>
#include <netinet/in.h>

#include <algorithm>
#include <cctype>

namespace layercache::net {
namespace {

address_class classify_v4(const asio::ip::address_v4& a) {
  const std::uint32_t v = a.to_uint();
  const auto in = [v](std::uint32_t net, unsigned bits) {
    return (v >> (32 - bits)) == (net >> (32 - bits));
  };
  if (in(0x00000000, 8) || v >= 0xE0000000) return address_class::reserved;  // 0/8, 224/4, 240/4
  if (in(0x7F000000, 8)) return address_class::loopback;
  if (in(0xA9FE0000, 16)) return address_class::link_local;
  if (in(0x0A000000, 8) || in(0xAC100000, 12) || in(0xC0A80000, 16) || in(0x64400000, 10)) {
    return address_class::private_;
  }
  return address_class::global;
}

// The IPv4 address an IPv6 one carries: v4-mapped (::ffff:a.b.c.d), v4-compatible
// (::a.b.c.d) and NAT64 (64:ff9b::a.b.c.d).
std::optional<asio::ip::address_v4> embedded_v4(const asio::ip::address_v6& a) {
  const auto b = a.to_bytes();
  const asio::ip::address_v4::bytes_type tail{b[12], b[13], b[14], b[15]};
  const bool zero_prefix = std::all_of(b.begin(), b.begin() + 10, [](auto x) { return x == 0; });
  if (zero_prefix && b[10] == 0xff && b[11] == 0xff) return asio::ip::address_v4(tail);
  if (zero_prefix && b[10] == 0 && b[11] == 0 && !a.is_unspecified() && !a.is_loopback()) {
    return asio::ip::address_v4(tail);
  }
  static constexpr std::array<unsigned char, 12> nat64{0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
  if (std::equal(nat64.begin(), nat64.end(), b.begin())) return asio::ip::address_v4(tail);
  return std::nullopt;
}

asio::ip::address unmapped(const asio::ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped()) {
    return asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6());
  }
  return a;
}

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

struct host_port {
  std::string host;  // lowercase, no brackets
  std::optional<std::uint16_t> port;
};

// "host", "host:port", "[v6]", "[v6]:port"; nullopt when malformed.
std::optional<host_port> split_host(std::string_view s) {
  host_port out;
  std::string_view port;
  if (s.starts_with('[')) {
    const auto close = s.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    out.host = lower(s.substr(1, close - 1));
    s.remove_prefix(close + 1);
    if (!s.empty() && !s.starts_with(':')) return std::nullopt;
    if (!s.empty()) port = s.substr(1);
  } else if (const auto colon = s.find(':'); colon != std::string_view::npos) {
    if (s.find(':', colon + 1) != std::string_view::npos) return std::nullopt;  // bare IPv6
    out.host = lower(s.substr(0, colon));
    port = s.substr(colon + 1);
    if (port.empty()) return std::nullopt;
  } else {
    out.host = lower(s);
  }
  if (out.host.empty()) return std::nullopt;
  if (!port.empty()) {
    unsigned v = 0;
    for (char c : port) {
      if (c < '0' || c > '9' || (v = v * 10 + static_cast<unsigned>(c - '0')) > 65535) {
        return std::nullopt;
      }
    }
    out.port = static_cast<std::uint16_t>(v);
  }
  return out;
}

std::optional<asio::ip::address> ip_literal(const std::string& host) {
  boost::system::error_code ec;
  auto a = asio::ip::make_address(host, ec);
  if (ec) return std::nullopt;
  return unmapped(a);
}

}  // namespace

address_class classify(const asio::ip::address& a) {
  if (a.is_v4()) return classify_v4(a.to_v4());
  const auto v6 = a.to_v6();
  if (auto v4 = embedded_v4(v6)) return classify_v4(*v4);
  if (v6.is_unspecified() || v6.is_multicast()) return address_class::reserved;
  if (v6.is_loopback()) return address_class::loopback;
  const auto b = v6.to_bytes();
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) return address_class::link_local;  // fe80::/10
  if ((b[0] & 0xfe) == 0xfc) return address_class::private_;                    // fc00::/7
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) return address_class::private_;    // fec0::/10
  return address_class::global;
}

std::string_view to_string(address_class c) {
  switch (c) {
    case address_class::global:
      return "global";
    case address_class::loopback:
      return "loopback";
    case address_class::private_:
      return "private";
    case address_class::link_local:
      return "link-local";
    case address_class::reserved:
      return "reserved";
  }
  return "?";
}

void own_endpoints::add(const asio::ip::tcp::endpoint& bound) {
  endpoints_.emplace_back(unmapped(bound.address()), bound.port());
  if (!bound.address().is_unspecified() || local_read_) return;
  local_read_ = true;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return;
  for (const ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr) continue;
    if (i->ifa_addr->sa_family == AF_INET) {
      const auto* in = reinterpret_cast<const sockaddr_in*>(i->ifa_addr);
      local_addresses_.emplace_back(asio::ip::address_v4(ntohl(in->sin_addr.s_addr)));
    } else if (i->ifa_addr->sa_family == AF_INET6) {
      const auto* in6 = reinterpret_cast<const sockaddr_in6*>(i->ifa_addr);
      asio::ip::address_v6::bytes_type bytes;
      std::copy_n(in6->sin6_addr.s6_addr, 16, bytes.begin());
      local_addresses_.emplace_back(asio::ip::address_v6(bytes, in6->sin6_scope_id));
    }
  }
  ::freeifaddrs(list);
}

bool own_endpoints::contains(const asio::ip::tcp::endpoint& ep) const {
  const auto address = unmapped(ep.address());
  for (const auto& own : endpoints_) {
    if (own.port() != ep.port()) continue;
    if (own.address() == address) return true;
    if (own.address().is_unspecified()) {
      if (address.is_loopback() || address.is_unspecified()) return true;
      for (const auto& local : local_addresses_) {
        if (unmapped(local) == address) return true;
      }
    }
  }
  return false;
}

bool redirect_allowed(const redirect_policy& p, const asio::ip::tcp::endpoint& ep) {
  if (p.own != nullptr && p.own->contains(ep)) return false;
  const auto c = classify(ep.address());
  switch (c) {
    case address_class::global:
      return true;
    case address_class::reserved:
      return false;
    case address_class::loopback:
    case address_class::private_:
    case address_class::link_local:
      return p.allow_internal || p.upstream_class == c;
  }
  return false;
}

bool admin_host_allowed(std::string_view host, std::string_view listen_host, std::uint16_t port,
                        const std::vector<std::string>& names) {
  const auto h = split_host(host);
  if (!h) return false;
  if (h->port && *h->port != port) return false;
  for (const auto& name : names) {
    const auto n = split_host(name);
    if (n && n->host == h->host && (!n->port || n->port == h->port)) return true;
  }
  const auto listen = ip_literal(std::string(listen_host));
  if (!listen) return false;
  if (h->host == "localhost") return listen->is_loopback();
  const auto literal = ip_literal(h->host);
  if (!literal) return false;  // a DNS name nobody configured: a rebinding page
  return listen->is_unspecified() || *literal == *listen;
}

nofile_plan plan_nofile(std::uint64_t soft, std::uint64_t hard, std::uint64_t needed) {
  if (soft >= needed) return {soft, false};
  const std::uint64_t want = std::min(hard, needed);
  return {std::max(soft, want), want < needed};
}

}  // namespace layercache::net
