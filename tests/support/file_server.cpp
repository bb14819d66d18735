#include "tests/support/file_server.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/url/parse.hpp>
#include <cctype>
#include <charconv>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace layercache::testing {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

constexpr auto io_timeout = 60s;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

// The file a request target names, or nullopt if the target is not a plain path below root.
std::optional<std::filesystem::path> resolve(const std::filesystem::path& root,
                                             std::string_view target) {
  auto parsed = boost::urls::parse_origin_form(target);
  if (!parsed) return std::nullopt;
  auto path = root;
  for (auto segment : parsed->encoded_segments()) {
    const std::string name = segment.decode();
    if (name.empty()) continue;
    if (name == "." || name == ".." || name.find('/') != std::string::npos ||
        name.find('\0') != std::string::npos) {
      return std::nullopt;
    }
    path /= name;
  }
  return path;
}

std::optional<std::uint64_t> parse_number(std::string_view s) {
  std::uint64_t value = 0;
  if (s.empty()) return std::nullopt;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc{} || end != s.data() + s.size()) return std::nullopt;
  return value;
}

// A closed byte range [first, last] within a file of `size` bytes.
struct byte_range {
  std::uint64_t first = 0;
  std::uint64_t last = 0;
};
enum class range_kind { none, satisfiable, unsatisfiable };

// RFC 9110 §14.1.2 for a single range; anything else (several ranges, bad syntax, another
// unit) is ignored like a server without range support would.
range_kind parse_range(std::string_view value, std::uint64_t size, byte_range& out) {
  constexpr std::string_view prefix = "bytes=";
  if (value.size() < prefix.size() || !iequals(value.substr(0, prefix.size()), prefix)) {
    return range_kind::none;
  }
  auto spec = value.substr(prefix.size());
  while (!spec.empty() && spec.front() == ' ') spec.remove_prefix(1);
  while (!spec.empty() && spec.back() == ' ') spec.remove_suffix(1);
  if (spec.find(',') != std::string_view::npos) return range_kind::none;
  const auto dash = spec.find('-');
  if (dash == std::string_view::npos) return range_kind::none;
  const auto first_text = spec.substr(0, dash);
  const auto last_text = spec.substr(dash + 1);
  if (first_text.empty()) {
    const auto suffix = parse_number(last_text);
    if (!suffix) return range_kind::none;
    if (*suffix == 0 || size == 0) return range_kind::unsatisfiable;
    out.first = size - std::min(*suffix, size);
    out.last = size - 1;
    return range_kind::satisfiable;
  }
  const auto first = parse_number(first_text);
  if (!first) return range_kind::none;
  std::uint64_t last = size == 0 ? 0 : size - 1;
  if (!last_text.empty()) {
    const auto parsed_last = parse_number(last_text);
    if (!parsed_last || *parsed_last < *first) return range_kind::none;
    last = std::min(last, *parsed_last);
  }
  if (*first >= size) return range_kind::unsatisfiable;
  out.first = *first;
  out.last = last;
  return range_kind::satisfiable;
}

std::string read_slice(const std::filesystem::path& path, std::uint64_t offset,
                       std::uint64_t length) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path.string());
  in.seekg(static_cast<std::streamoff>(offset));
  std::string data(length, '\0');
  in.read(data.data(), static_cast<std::streamsize>(length));
  if (static_cast<std::uint64_t>(in.gcount()) != length) {
    throw std::runtime_error("short read from " + path.string());
  }
  return data;
}

}  // namespace

std::optional<std::string> recorded_request::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (iequals(key, name)) return value;
  }
  return std::nullopt;
}

struct file_server::impl {
  explicit impl(std::filesystem::path r) : root(std::move(r)) {}

  // Declared first so that it is destroyed last, after everything that uses it.
  asio::io_context ioc{1};
  tcp::acceptor acceptor{ioc};
  std::filesystem::path root;
  std::uint16_t port = 0;
  mutable std::mutex mutex;
  std::vector<recorded_request> recorded;
  std::thread thread;

  // Coroutines take `self` by pointer: the impl outlives the io_context's run.
  static asio::awaitable<void> accept_loop(impl* self);
  static asio::awaitable<void> serve(impl* self, tcp::socket socket);

  void record(const http::request<http::string_body>& req) {
    recorded_request r;
    r.method = std::string(req.method_string());
    r.target = std::string(req.target());
    for (const auto& field : req) {
      r.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    }
    std::lock_guard lock(mutex);
    recorded.push_back(std::move(r));
  }

  http::response<http::string_body> respond(const http::request<http::string_body>& req) const {
    http::response<http::string_body> res;
    res.version(req.version());
    res.set(http::field::server, "layercache-test-file-server");
    auto fail = [&](http::status status, std::string text) {
      res.result(status);
      res.set(http::field::content_type, "text/plain");
      res.body() = std::move(text);
      res.prepare_payload();
      return res;
    };
    if (req.method() != http::verb::get && req.method() != http::verb::head) {
      res.set(http::field::allow, "GET, HEAD");
      return fail(http::status::method_not_allowed, "only GET and HEAD\n");
    }
    const auto path = resolve(root, req.target());
    if (!path) return fail(http::status::bad_request, "bad path\n");
    std::error_code ec;
    if (!std::filesystem::is_regular_file(*path, ec)) return fail(http::status::not_found, "");
    const std::uint64_t size = std::filesystem::file_size(*path, ec);
    if (ec) return fail(http::status::not_found, "");

    res.set(http::field::accept_ranges, "bytes");
    byte_range range{0, size == 0 ? 0 : size - 1};
    auto kind = range_kind::none;
    if (auto it = req.find(http::field::range); it != req.end()) {
      kind = parse_range(it->value(), size, range);
    }
    if (kind == range_kind::unsatisfiable) {
      res.set(http::field::content_range, "bytes */" + std::to_string(size));
      return fail(http::status::range_not_satisfiable, "");
    }
    const std::uint64_t length = size == 0 ? 0 : range.last - range.first + 1;
    res.result(kind == range_kind::satisfiable ? http::status::partial_content : http::status::ok);
    if (kind == range_kind::satisfiable) {
      res.set(http::field::content_range, "bytes " + std::to_string(range.first) + "-" +
                                              std::to_string(range.last) + "/" +
                                              std::to_string(size));
    }
    res.set(http::field::content_type, "application/octet-stream");
    if (req.method() == http::verb::get) {
      try {
        res.body() = read_slice(*path, range.first, length);
      } catch (const std::exception& e) {
        return fail(http::status::internal_server_error, e.what());
      }
    }
    res.content_length(length);
    return res;
  }
};

asio::awaitable<void> file_server::impl::accept_loop(impl* self) {
  for (;;) {
    auto [ec, socket] = co_await self->acceptor.async_accept(use_tuple);
    if (ec == asio::error::operation_aborted) co_return;
    if (ec) continue;
    asio::co_spawn(self->ioc, serve(self, std::move(socket)), asio::detached);
  }
}

asio::awaitable<void> file_server::impl::serve(impl* self, tcp::socket socket) {
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(1 << 20);
    stream.expires_after(io_timeout);
    auto [read_ec, read_n] = co_await http::async_read(stream, buffer, parser, use_tuple);
    if (read_ec) break;
    const auto req = parser.release();
    self->record(req);
    auto res = self->respond(req);
    res.keep_alive(req.keep_alive());
    const bool keep_alive = res.keep_alive();
    stream.expires_after(io_timeout);
    if (req.method() == http::verb::head) {
      // Content-Length stays as computed; an empty body is what HEAD must carry.
      http::response<http::empty_body> head(std::move(res.base()));
      auto [ec, n] = co_await http::async_write(stream, head, use_tuple);
      if (ec) break;
    } else {
      auto [ec, n] = co_await http::async_write(stream, res, use_tuple);
      if (ec) break;
    }
    if (!keep_alive) break;
  }
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

file_server::file_server(std::filesystem::path root)
    : impl_(std::make_unique<impl>(std::move(root))) {
  const tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), 0);
  impl_->acceptor.open(endpoint.protocol());
  impl_->acceptor.bind(endpoint);
  impl_->acceptor.listen();
  impl_->port = impl_->acceptor.local_endpoint().port();
  asio::co_spawn(impl_->ioc, impl::accept_loop(impl_.get()), asio::detached);
  impl_->thread = std::thread([self = impl_.get()] { self->ioc.run(); });
}

file_server::~file_server() {
  impl_->ioc.stop();
  impl_->thread.join();
}

std::uint16_t file_server::port() const { return impl_->port; }

std::string file_server::url() const { return "http://127.0.0.1:" + std::to_string(port()); }

const std::filesystem::path& file_server::root() const { return impl_->root; }

std::vector<recorded_request> file_server::requests() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->recorded;
}

void file_server::clear_requests() {
  std::lock_guard lock(impl_->mutex);
  impl_->recorded.clear();
}

}  // namespace layercache::testing
