#include "tests/support/fault_upstream.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <string_view>
#include <thread>

#include "oci/digest.hpp"
#include "tests/support/http_client.hpp"

namespace layercache::testing {
namespace {

using namespace std::chrono_literals;
constexpr std::size_t max_header = 64 * 1024;
constexpr auto poll_step = 50ms;

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

struct parsed_request {
  std::string method;
  std::string target;
  std::map<std::string, std::string> headers;  // lowercase names
  bool keep_alive = true;
};

std::optional<parsed_request> parse(std::string_view head) {
  parsed_request r;
  auto eol = head.find("\r\n");
  const auto line = head.substr(0, eol);
  const auto sp1 = line.find(' ');
  const auto sp2 = line.rfind(' ');
  if (sp1 == std::string_view::npos || sp2 <= sp1) return std::nullopt;
  r.method = std::string(line.substr(0, sp1));
  r.target = std::string(line.substr(sp1 + 1, sp2 - sp1 - 1));
  auto rest = head.substr(eol + 2);
  while (!rest.empty()) {
    eol = rest.find("\r\n");
    const auto h = rest.substr(0, eol);
    rest = eol == std::string_view::npos ? std::string_view{} : rest.substr(eol + 2);
    const auto colon = h.find(':');
    if (colon == std::string_view::npos) continue;
    auto value = h.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    r.headers[lower(h.substr(0, colon))] = std::string(value);
  }
  if (auto it = r.headers.find("connection"); it != r.headers.end()) {
    r.keep_alive = lower(it->second) != "close";
  }
  return r;
}

// "bytes=a-b" or "bytes=a-": [first, last] within `size`; nullopt when absent or unusable.
std::optional<std::pair<std::uint64_t, std::uint64_t>> single_range(const std::string& value,
                                                                    std::uint64_t size) {
  unsigned long long a = 0, b = 0;
  char dash = 0;
  if (std::sscanf(value.c_str(), "bytes=%llu-%llu", &a, &b) == 2) {
    if (a > b || a >= size) return std::nullopt;
    return std::pair<std::uint64_t, std::uint64_t>{a, std::min<std::uint64_t>(b, size - 1)};
  }
  if (std::sscanf(value.c_str(), "bytes=%llu%c", &a, &dash) == 2 && dash == '-' && a < size) {
    return std::pair<std::uint64_t, std::uint64_t>{a, size - 1};
  }
  return std::nullopt;
}

}  // namespace

fault fault::answer(unsigned status, std::string retry_after) {
  fault f;
  f.what = kind::status;
  f.status = status;
  f.retry_after = std::move(retry_after);
  return f;
}
fault fault::reset_after(std::uint64_t bytes) {
  fault f;
  f.what = kind::reset;
  f.after = bytes;
  return f;
}
fault fault::stall_after(std::uint64_t bytes) {
  fault f;
  f.what = kind::stall;
  f.after = bytes;
  return f;
}
fault fault::stall_before_header() {
  fault f;
  f.what = kind::stall;
  f.before_header = true;
  return f;
}
fault fault::truncate_after(std::uint64_t bytes) {
  fault f;
  f.what = kind::truncate;
  f.after = bytes;
  return f;
}
fault fault::corrupt_at(std::uint64_t blob_offset) {
  fault f;
  f.what = kind::corrupt;
  f.after = blob_offset;
  return f;
}
fault fault::corrupt_then_cut(std::uint64_t blob_offset, std::uint64_t body_bytes) {
  fault f = corrupt_at(blob_offset);
  f.cut = body_bytes;
  return f;
}
fault fault::shifted_range(std::uint64_t by) {
  fault f;
  f.what = kind::wrong_range;
  f.after = by;
  return f;
}
fault fault::throttle(std::uint64_t bytes_per_second) {
  fault f;
  f.what = kind::throttle;
  f.bytes_per_second = bytes_per_second;
  return f;
}
fault fault::delay_ms(std::uint64_t ms) {
  fault f;
  f.what = kind::delay;
  f.after = ms;
  return f;
}

fault fault::redirect_to(std::string location) {
  fault f;
  f.what = kind::redirect;
  f.location = std::move(location);
  return f;
}

struct fault_upstream::impl {
  int listen_fd = -1;
  std::uint16_t port = 0;
  std::atomic<bool> stopping{false};
  std::thread acceptor;

  mutable std::mutex mutex;
  std::vector<std::thread> connections;
  std::map<std::string, std::string> blobs;  // digest → bytes
  struct manifest {
    std::string media_type;
    std::string bytes;
    std::string digest;
  };
  std::map<std::string, manifest> manifests;  // tag or digest → manifest
  std::deque<std::pair<request_kind, fault>> plans;
  std::string required_authorization;  // empty: none
  double random_p = 0;
  std::vector<fault::kind> random_kinds;
  std::mt19937_64 random{1};
  std::map<fault::kind, std::uint64_t> applied_count;
  std::vector<fault_request> log;

  // The first plan for `k`, taken off the queue; else a random fault (blob GETs only) or none.
  fault take_plan(request_kind k, std::uint64_t body_offset, std::uint64_t body_size) {
    std::lock_guard lock(mutex);
    fault f;
    for (auto it = plans.begin(); it != plans.end(); ++it) {
      if (it->first == request_kind::any || it->first == k) {
        f = std::move(it->second);
        plans.erase(it);
        ++applied_count[f.what];
        return f;
      }
    }
    if (k != request_kind::blob_get || random_p <= 0 || random_kinds.empty()) return f;
    if (std::uniform_real_distribution<double>(0, 1)(random) >= random_p) return f;
    const auto what = random_kinds[random() % random_kinds.size()];
    const std::uint64_t part = body_size == 0 ? 0 : random() % body_size;
    switch (what) {
      case fault::kind::status: {
        static constexpr unsigned codes[] = {500, 502, 503, 429};
        const unsigned code = codes[random() % 4];
        f = fault::answer(code, code == 429 ? std::to_string(random() % 2) : std::string());
        break;
      }
      case fault::kind::reset:
        f = fault::reset_after(part);
        break;
      case fault::kind::stall:
        f = random() % 4 == 0 ? fault::stall_before_header() : fault::stall_after(part);
        break;
      case fault::kind::truncate:
        f = fault::truncate_after(part);
        break;
      case fault::kind::corrupt:
        f = fault::corrupt_at(body_offset + part);
        break;
      case fault::kind::wrong_range:
        f = fault::shifted_range(1 + random() % 8192);
        break;
      case fault::kind::throttle:
        f = fault::throttle(1 << 20);
        break;
      default:
        break;
    }
    ++applied_count[f.what];
    return f;
  }

  // Sends everything, unless the peer is gone or we stop. bps > 0: paced.
  bool send_all(int fd, std::string_view bytes, std::uint64_t bps = 0) {
    while (!bytes.empty()) {
      if (stopping) return false;
      std::size_t step = bytes.size();
      if (bps > 0) step = std::max<std::size_t>(1, static_cast<std::size_t>(bps / 20));
      step = std::min(step, bytes.size());
      std::string_view piece = bytes.substr(0, step);
      while (!piece.empty()) {
        pollfd p{fd, POLLOUT, 0};
        if (::poll(&p, 1, static_cast<int>(poll_step.count())) < 0) return false;
        if (stopping) return false;
        if ((p.revents & (POLLERR | POLLHUP)) != 0) return false;
        if ((p.revents & POLLOUT) == 0) continue;
        const auto n = ::send(fd, piece.data(), piece.size(), MSG_NOSIGNAL);
        if (n <= 0) return false;
        piece.remove_prefix(static_cast<std::size_t>(n));
      }
      bytes.remove_prefix(step);
      if (bps > 0 && !bytes.empty()) std::this_thread::sleep_for(50ms);
    }
    return true;
  }

  // Waits until the client closes the connection or we stop.
  void wait_for_close(int fd) {
    char buf[4096];
    while (!stopping) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(poll_step.count())) < 0) return;
      if ((p.revents & (POLLERR | POLLHUP)) != 0) return;
      if ((p.revents & POLLIN) != 0 && ::recv(fd, buf, sizeof buf, 0) <= 0) return;
    }
  }

  static void reset(int fd) {
    linger l{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  }

  static std::string head_text(unsigned status, std::string_view reason,
                               const std::vector<std::pair<std::string, std::string>>& headers,
                               std::uint64_t length, bool keep_alive) {
    std::string h = "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason) + "\r\n";
    for (const auto& [k, v] : headers) h += k + ": " + v + "\r\n";
    h += "Content-Length: " + std::to_string(length) + "\r\n";
    if (!keep_alive) h += "Connection: close\r\n";
    h += "\r\n";
    return h;
  }

  // Serves one request; false when the connection is to be closed.
  bool serve(int fd, const parsed_request& req) {
    fault_request rec;
    rec.method = req.method;
    rec.target = req.target;
    rec.at = std::chrono::steady_clock::now();
    if (auto it = req.headers.find("range"); it != req.headers.end()) rec.range = it->second;
    if (auto it = req.headers.find("authorization"); it != req.headers.end()) {
      rec.authorization = it->second;
    }
    const std::string path = req.target.substr(0, req.target.find('?'));
    const bool head = req.method == "HEAD";
    std::string blob_digest, manifest_ref;
    if (path == "/v2/" || path == "/v2") {
      rec.kind = request_kind::base;
    } else if (auto b = path.rfind("/blobs/"); path.starts_with("/v2/") && b != std::string::npos) {
      rec.kind = head ? request_kind::blob_head : request_kind::blob_get;
      blob_digest = path.substr(b + 7);
    } else if (auto m = path.rfind("/manifests/");
               path.starts_with("/v2/") && m != std::string::npos) {
      rec.kind = request_kind::manifest;
      manifest_ref = path.substr(m + 11);
    }
    std::string required;
    {
      std::lock_guard lock(mutex);
      required = required_authorization;
    }
    const bool keep_alive = req.keep_alive;
    if (!required.empty() && rec.authorization != required) {
      {
        std::lock_guard lock(mutex);
        log.push_back(rec);
      }
      const std::string body = R"({"errors":[{"code":"UNAUTHORIZED","message":"log in"}]})";
      const auto h = head_text(
          401, "Unauthorized",
          {{"Content-Type", "application/json"}, {"WWW-Authenticate", R"(Basic realm="fault")"}},
          body.size(), keep_alive);
      return send_all(fd, h) && (head || send_all(fd, body)) && keep_alive;
    }
    std::uint64_t body_offset = 0, body_size = 0;
    if (!blob_digest.empty()) {
      std::lock_guard lock(mutex);
      if (auto it = blobs.find(blob_digest); it != blobs.end()) body_size = it->second.size();
      if (rec.range) {
        if (auto r = single_range(*rec.range, body_size)) {
          body_offset = r->first;
          body_size = r->second - r->first + 1;
        }
      }
    }
    fault f = take_plan(rec.kind, body_offset, body_size);
    rec.applied = f.what;
    {
      std::lock_guard lock(mutex);
      log.push_back(rec);
    }

    if (f.what == fault::kind::stall && f.before_header) {
      wait_for_close(fd);
      return false;
    }
    if (f.what == fault::kind::delay) {
      std::this_thread::sleep_for(std::chrono::milliseconds(f.after));
    }
    if (f.what == fault::kind::status) {
      const std::string body = R"({"errors":[{"code":"UNAVAILABLE","message":"planned fault"}]})";
      std::vector<std::pair<std::string, std::string>> headers{
          {"Content-Type", "application/json"}};
      if (!f.retry_after.empty()) headers.emplace_back("Retry-After", f.retry_after);
      const auto h = head_text(f.status, "Fault", headers, body.size(), keep_alive);
      return send_all(fd, h) && (head || send_all(fd, body)) && keep_alive;
    }
    if (f.what == fault::kind::redirect) {
      const auto h =
          head_text(307, "Temporary Redirect", {{"Location", f.location}}, 0, keep_alive);
      return send_all(fd, h) && keep_alive;
    }

    // What the request asks for.
    std::string_view content;
    std::vector<std::pair<std::string, std::string>> headers;
    unsigned status = 200;
    bool found = true;
    std::uint64_t offset = 0;  // of the body within the blob
    {
      std::lock_guard lock(mutex);
      if (rec.kind == request_kind::base) {
        content = "{}";
        headers.emplace_back("Content-Type", "application/json");
      } else if (!blob_digest.empty()) {
        auto it = blobs.find(blob_digest);
        found = it != blobs.end();
        if (found) {
          content = it->second;
          headers.emplace_back("Content-Type", "application/octet-stream");
          headers.emplace_back("Docker-Content-Digest", blob_digest);
          headers.emplace_back("Accept-Ranges", "bytes");
        }
      } else if (!manifest_ref.empty()) {
        auto it = manifests.find(manifest_ref);
        found = it != manifests.end();
        if (found) {
          content = it->second.bytes;
          headers.emplace_back("Content-Type", it->second.media_type);
          headers.emplace_back("Docker-Content-Digest", it->second.digest);
        }
      } else {
        found = false;
      }
    }
    if (!found) {
      const std::string body = R"({"errors":[{"code":"NOT_FOUND","message":"unknown"}]})";
      const auto h =
          head_text(404, "Not Found", {{"Content-Type", "application/json"}}, body.size(), true);
      return send_all(fd, h) && (head || send_all(fd, body)) && keep_alive;
    }
    const std::uint64_t size = content.size();
    if (rec.kind == request_kind::blob_get && rec.range) {
      if (auto r = single_range(*rec.range, size)) {
        auto [a, b] = *r;
        if (f.what == fault::kind::wrong_range) {
          const auto len = b - a;
          a = std::min(a + f.after, size - 1);
          b = std::min(a + len, size - 1);
        }
        status = 206;
        offset = a;
        content = content.substr(a, b - a + 1);
        headers.emplace_back("Content-Range", "bytes " + std::to_string(a) + "-" +
                                                  std::to_string(b) + "/" + std::to_string(size));
      }
    }
    const auto h = head_text(status, status == 206 ? "Partial Content" : "OK", headers,
                             content.size(), keep_alive);
    if (!send_all(fd, h)) return false;
    if (head) return keep_alive;

    std::string body(content);
    if (f.what == fault::kind::corrupt && f.after >= offset && f.after < offset + body.size()) {
      const auto at = static_cast<std::size_t>(f.after - offset);
      for (std::size_t i = at; i < std::min(body.size(), at + 16); ++i) body[i] = ~body[i];
    }
    if (f.what == fault::kind::corrupt && f.cut > 0) {
      (void)send_all(fd, std::string_view(body).substr(0, f.cut));
      ::shutdown(fd, SHUT_WR);
      wait_for_close(fd);
      return false;
    }
    switch (f.what) {
      case fault::kind::reset:
        (void)send_all(fd, std::string_view(body).substr(0, f.after));
        reset(fd);
        return false;
      case fault::kind::stall:
        (void)send_all(fd, std::string_view(body).substr(0, f.after));
        wait_for_close(fd);
        return false;
      case fault::kind::truncate:
        (void)send_all(fd, std::string_view(body).substr(0, f.after));
        ::shutdown(fd, SHUT_WR);
        wait_for_close(fd);
        return false;
      default:
        break;
    }
    return send_all(fd, body, f.what == fault::kind::throttle ? f.bytes_per_second : 0) &&
           keep_alive;
  }

  void connection(int fd) {
    std::string buffer;
    char buf[16 * 1024];
    while (!stopping) {
      const auto end = buffer.find("\r\n\r\n");
      if (end == std::string::npos) {
        if (buffer.size() > max_header) break;
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(poll_step.count())) < 0) break;
        if ((p.revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
        const auto n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        buffer.append(buf, static_cast<std::size_t>(n));
        continue;
      }
      const auto req = parse(std::string_view(buffer).substr(0, end + 2));
      buffer.erase(0, end + 4);
      if (!req || !serve(fd, *req)) break;
    }
    ::close(fd);
  }

  void accept_loop() {
    while (!stopping) {
      pollfd p{listen_fd, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(poll_step.count())) <= 0) continue;
      const int fd = ::accept(listen_fd, nullptr, nullptr);
      if (fd < 0) continue;
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      std::lock_guard lock(mutex);
      connections.emplace_back([this, fd] { connection(fd); });
    }
  }
};

fault_upstream::fault_upstream() : impl_(std::make_unique<impl>()) {
  impl_->listen_fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (impl_->listen_fd < 0) throw std::runtime_error("fault_upstream: socket failed");
  int one = 1;
  ::setsockopt(impl_->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (::bind(impl_->listen_fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::listen(impl_->listen_fd, 128) != 0 ||
      ::getsockname(impl_->listen_fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(impl_->listen_fd);
    throw std::runtime_error("fault_upstream: cannot listen on 127.0.0.1");
  }
  impl_->port = ntohs(a.sin_port);
  impl_->acceptor = std::thread([this] { impl_->accept_loop(); });
}

fault_upstream::~fault_upstream() {
  impl_->stopping = true;
  impl_->acceptor.join();
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(impl_->mutex);
    threads.swap(impl_->connections);
  }
  for (auto& t : threads) t.join();
  ::close(impl_->listen_fd);
}

std::uint16_t fault_upstream::port() const { return impl_->port; }
std::string fault_upstream::url() const { return "http://127.0.0.1:" + std::to_string(port()); }

std::string fault_upstream::add_blob(std::string bytes) {
  auto d = oci::digest_of(bytes).str();
  std::lock_guard lock(impl_->mutex);
  impl_->blobs[d] = std::move(bytes);
  return d;
}

void fault_upstream::add_blob_as(const std::string& digest, std::string bytes) {
  std::lock_guard lock(impl_->mutex);
  impl_->blobs[digest] = std::move(bytes);
}

std::string fault_upstream::add_manifest(const std::string& tag, std::string media_type,
                                         std::string bytes) {
  auto d = oci::digest_of(bytes).str();
  impl::manifest m{std::move(media_type), std::move(bytes), d};
  std::lock_guard lock(impl_->mutex);
  impl_->manifests[tag] = m;
  impl_->manifests[d] = std::move(m);
  return d;
}

void fault_upstream::require_basic(const std::string& user, const std::string& password) {
  std::lock_guard lock(impl_->mutex);
  impl_->required_authorization = basic_auth_header(user, password);
}

void fault_upstream::plan(request_kind k, fault f, unsigned count) {
  std::lock_guard lock(impl_->mutex);
  for (unsigned i = 0; i < count; ++i) impl_->plans.emplace_back(k, f);
}

void fault_upstream::randomize(double p, std::vector<fault::kind> kinds, std::uint64_t seed) {
  std::lock_guard lock(impl_->mutex);
  impl_->random_p = p;
  impl_->random_kinds = std::move(kinds);
  impl_->random.seed(seed);
}

std::map<fault::kind, std::uint64_t> fault_upstream::applied() const {
  std::lock_guard lock(impl_->mutex);
  auto out = impl_->applied_count;
  out.erase(fault::kind::none);
  return out;
}

void fault_upstream::clear_plans() {
  std::lock_guard lock(impl_->mutex);
  impl_->plans.clear();
}

std::vector<fault_request> fault_upstream::requests() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->log;
}

std::vector<fault_request> fault_upstream::requests(request_kind k) const {
  std::lock_guard lock(impl_->mutex);
  std::vector<fault_request> out;
  for (const auto& r : impl_->log) {
    if (k == request_kind::any || r.kind == k) out.push_back(r);
  }
  return out;
}

void fault_upstream::clear_requests() {
  std::lock_guard lock(impl_->mutex);
  impl_->log.clear();
}

}  // namespace layercache::testing
