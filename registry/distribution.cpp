#include "registry/distribution.hpp"

#include <boost/url/url.hpp>

#include "log/log.hpp"
#include "metrics/metrics.hpp"
#include "oci/media_types.hpp"
#include "registry/mirrors.hpp"
#include "registry/targets.hpp"

namespace layercache::registry {
namespace {

constexpr std::size_t body_buffer = std::size_t{64} * 1024;

// A blob's size as an answer about it tells it: a HEAD's or 200's Content-Length, a 206's
// Content-Range complete length.
std::optional<std::uint64_t> size_told(const upstream_response& r) {
  if (r.status() == 200) return r.content_length();
  if (r.status() != 206) return std::nullopt;
  const auto range = oci::parse_content_range(r.fields()[http::field::content_range]);
  return range ? range->complete_length : std::nullopt;
}

upstream_request blob_request(const std::string& repository, const oci::digest& d,
                              http::verb method) {
  upstream_request req;
  req.method = method;
  req.target = blob_target(repository, d.str());
  req.repository = repository;
  req.follow_redirects = method == http::verb::get;
  return req;
}

// "bytes=a-b,c-d,…"
std::string range_value(const std::vector<oci::byte_range>& ranges) {
  std::string value = "bytes=";
  for (std::size_t k = 0; k < ranges.size(); ++k) {
    if (k > 0) value += ',';
    value += std::to_string(ranges[k].first) + "-" + std::to_string(ranges[k].last);
  }
  return value;
}

// The mirrors to ask for blob or manifest `digest`, best first (none without mirrors).
std::vector<std::size_t> mirror_order(const upstream_client& client, std::string_view digest) {
  auto* mirrors = client.mirrors();
  return mirrors != nullptr ? mirrors->state().candidates(digest) : std::vector<std::size_t>{};
}

// Counts what an unusable answer of mirror `k` was: a failure (its breaker) or a pass.
void note_unusable(mirror_state& state, std::size_t k, const upstream_result& result) {
  const auto* f = std::get_if<upstream_failure>(&result);
  const mirror_verdict v =
      f != nullptr ? judge_failure(*f)
                   : judge_status(std::get<std::unique_ptr<upstream_response>>(result)->status());
  if (v.failure) {
    state.failed(k, v.reason);
  } else {
    state.passed(k, v.reason);
  }
}

// `req` at the mirrors in `order` (addressed to them), then at the origin: the first 2xx
// answer, else the origin's.
asio::awaitable<upstream_result> first_answer(upstream_client& client, const upstream_request& req,
                                              const std::vector<std::size_t>& order) {
  for (const std::size_t k : order) {
    mirror_state& state = client.mirrors()->state();
    upstream_request at_mirror = req;
    address_to_mirror(at_mirror, state);
    auto result = co_await client.mirrors()->client(k).send(std::move(at_mirror));
    if (auto* r = std::get_if<std::unique_ptr<upstream_response>>(&result);
        r != nullptr && (*r)->success()) {
      state.succeeded(k);
      co_return result;
    }
    note_unusable(state, k, result);
  }
  co_return co_await client.send(req);
}

// blob_size() at one place: `mirror` set, a mirror of it.
asio::awaitable<blob_size_result> size_at(upstream_client& client, const std::string& repository,
                                          const oci::digest& d, const mirror_state* mirror) {
  auto head = blob_request(repository, d, http::verb::head);
  if (mirror != nullptr) address_to_mirror(head, *mirror);
  auto result = co_await client.send(std::move(head));
  if (auto* f = std::get_if<upstream_failure>(&result);
      f != nullptr && f->code == upstream_errc::redirect_refused) {
    // A HEAD never follows a redirect (issue 25); a blob GET may: its first byte's
    // Content-Range tells the size (registries that send blobs to storage redirect HEADs too).
    auto first = blob_request(repository, d, http::verb::get);
    first.headers.emplace_back(http::field::range, "bytes=0-0");
    if (mirror != nullptr) address_to_mirror(first, *mirror);
    result = co_await client.send(std::move(first));
  }
  if (auto* f = std::get_if<upstream_failure>(&result)) co_return std::move(*f);
  auto response = std::move(std::get<std::unique_ptr<upstream_response>>(result));
  const unsigned status = response->status();
  if (status != 200 && status != 206) co_return std::move(response);
  const auto length = size_told(*response);
  if (status == 206) co_await response->discard();
  if (!length)
    co_return upstream_failure{upstream_errc::protocol, "blob HEAD answered without a length"};
  co_return *length;
}

}  // namespace

asio::awaitable<blob_size_result> blob_size(upstream_client& client, const std::string& repository,
                                            const oci::digest& d) {
  for (const std::size_t k : mirror_order(client, d.str())) {
    mirror_state& state = client.mirrors()->state();
    auto result = co_await size_at(client.mirrors()->client(k), repository, d, &state);
    if (auto* size = std::get_if<std::uint64_t>(&result)) {
      state.succeeded(k);
      co_return *size;
    }
    if (auto* f = std::get_if<upstream_failure>(&result)) {
      note_unusable(state, k, upstream_result{std::move(*f)});
    } else {
      note_unusable(state, k, std::move(std::get<std::unique_ptr<upstream_response>>(result)));
    }
  }
  co_return co_await size_at(client, repository, d, nullptr);
}

void blob_ranges::interpret(const std::vector<oci::byte_range>& ranges, std::uint64_t blob_size) {
  auto& response = *response_;
  const std::uint64_t start = ranges.front().first;
  const std::uint64_t end = ranges.back().last + 1;
  const bool several = ranges.size() > 1;
  if (response.status() == 206) {
    const auto type = response.fields()[http::field::content_type];
    if (auto boundary = oci::byteranges_boundary(type)) {
      parts_.emplace(std::move(*boundary), blob_size);
      return;
    }
    const auto value = response.fields()[http::field::content_range];
    const auto cr = oci::parse_content_range(value);
    if (several && cr && cr->range && (!cr->complete_length || *cr->complete_length == blob_size)) {
      // One range for several: coalesced (its bytes between ours are skipped), or only the
      // first served (the rest fail; ask one range at a time from now on).
      offset_ = cr->range->first;
      if (cr->range->first > start || cr->range->last + 1 < end) several_refused_ = true;
    } else if (!cr || !cr->range || cr->range->first != start || cr->range->last + 1 < end ||
               (cr->complete_length && *cr->complete_length != blob_size)) {
      fail("unexpected Content-Range from upstream: " + std::string(value).substr(0, 100),
           "content_range");
      size_contradicted_ = cr && cr->complete_length && *cr->complete_length != blob_size;
    } else {
      offset_ = cr->range->first;
    }
  } else if (response.status() == 200 && several) {
    // It ignored the ranges and sends the whole blob: not worth reading for a few of them.
    fail("upstream answered a multi-range request with the whole blob", "status");
    several_refused_ = true;
  } else if (response.status() == 200) {
    // The upstream ignored Range: the body starts at the blob's first byte.
    if (response.content_length() && *response.content_length() != blob_size) {
      fail("upstream blob length differs from its HEAD", "length");
      size_contradicted_ = true;
    }
  } else {
    fail("upstream answered " + std::to_string(response.status()) + " to a range request",
         "status");
    retries_spent_ = true;
    size_contradicted_ = response.status() == 416;  // a size past the blob's end
  }
}

struct blob_ranges::route {
  route(upstream_client& o, oci::digest d) : origin(&o), digest(std::move(d)) {}

  upstream_client* origin;
  std::vector<std::size_t> pending;  // mirrors not asked yet, best first
  std::optional<std::size_t> at;     // the mirror answering now; none: the origin
  std::string repository;
  oci::digest digest;
  std::vector<oci::byte_range> ranges;
  std::uint64_t blob_size = 0;
  std::uint64_t handed = 0;      // every requested byte before this offset was handed over
  bool several_refused = false;  // by a mirror passed over

  // The requested ranges not handed over yet.
  [[nodiscard]] std::vector<oci::byte_range> rest() const {
    std::vector<oci::byte_range> out;
    for (const auto& r : ranges) {
      if (r.last >= handed) out.push_back({std::max(r.first, handed), r.last});
    }
    return out;
  }
};

blob_ranges::blob_ranges() = default;
blob_ranges::~blob_ranges() = default;
blob_ranges::blob_ranges(blob_ranges&&) noexcept = default;
blob_ranges& blob_ranges::operator=(blob_ranges&&) noexcept = default;

asio::awaitable<void> blob_ranges::request(upstream_client& client, const std::string& repository,
                                           const oci::digest& d,
                                           const std::vector<oci::byte_range>& ranges,
                                           std::uint64_t blob_size, const mirror_state* mirror) {
  response_.reset();
  parts_.reset();
  offset_ = 0;
  error_.clear();
  kind_ = "transport";
  transport_.reset();
  retries_spent_ = size_contradicted_ = several_refused_ = false;
  auto req = blob_request(repository, d, http::verb::get);
  req.headers.emplace_back(http::field::range, range_value(ranges));
  if (mirror != nullptr) address_to_mirror(req, *mirror);
  auto result = co_await client.send(std::move(req));
  if (auto* f = std::get_if<upstream_failure>(&result)) {
    fail(std::move(f->message), "transport");
    transport_ = f->code;
    retries_spent_ = true;
    co_return;
  }
  response_ = std::move(std::get<std::unique_ptr<upstream_response>>(result));
  interpret(ranges, blob_size);
  if (error_.empty() && buffer_.empty()) buffer_.resize(body_buffer);
}

asio::awaitable<void> blob_ranges::advance() {
  auto& r = *route_;
  mirror_state& state = r.origin->mirrors()->state();
  const auto ranges = r.rest();
  while (!r.pending.empty()) {
    const std::size_t k = r.pending.front();
    r.pending.erase(r.pending.begin());
    co_await request(r.origin->mirrors()->client(k), r.repository, r.digest, ranges, r.blob_size,
                     &state);
    if (error_.empty()) {
      r.at = k;
      state.succeeded(k);
      state.served(k, r.digest);  // once per answer, not per piece: distrust() needs who
      co_return;
    }
    log::info("registry", "mirror ", state.label(k), " of ", state.origin().name, ": ", error_,
              "; asking ", r.pending.empty() ? "the origin" : "the next mirror");
    if (transport_) {
      const auto v = judge_failure(upstream_failure{*transport_, {}});
      state.failed(k, v.reason);
    } else if (several_refused_) {
      r.several_refused = true;  // not a failure: asked one range at a time from now on
      state.passed(k, "status");
    } else if (const auto v = judge_status(response_->status()); !v.reason.empty()) {
      if (v.failure) {
        state.failed(k, v.reason);
      } else {
        state.passed(k, v.reason);
      }
    } else {
      state.failed(k, "invalid");  // a 2xx with another range or length than asked
    }
  }
  r.at.reset();
  co_await request(*r.origin, r.repository, r.digest, ranges, r.blob_size, nullptr);
  several_refused_ = several_refused_ || r.several_refused;
}

asio::awaitable<blob_ranges> get_blob_ranges(upstream_client& client, const std::string& repository,
                                             const oci::digest& d,
                                             const std::vector<oci::byte_range>& ranges,
                                             std::uint64_t blob_size) {
  blob_ranges out;
  auto order = mirror_order(client, d.str());
  if (order.empty()) {
    co_await out.request(client, repository, d, ranges, blob_size, nullptr);
    co_return out;
  }
  out.route_ = std::make_unique<blob_ranges::route>(client, d);
  auto& r = *out.route_;
  r.pending = std::move(order);
  r.repository = repository;
  r.ranges = ranges;
  r.blob_size = blob_size;
  co_await out.advance();
  co_return out;
}

asio::awaitable<bool> blob_ranges::next(std::vector<blob_piece>& out) {
  // Each pass after the first leaves a source behind: at most one per mirror still to ask,
  // then the origin's answer stands.
  const std::size_t passes = route_ ? route_->pending.size() + 2 : 1;
  for (std::size_t pass = 0; pass < passes; ++pass) {
    if (co_await next_here(out)) {
      if (route_) {
        for (const auto& p : out) route_->handed = std::max(route_->handed, p.offset + p.size);
        if (route_->at) {
          mirror_state& state = route_->origin->mirrors()->state();
          std::uint64_t n = 0;
          for (const auto& p : out) n += p.size;
          if (auto* m = state.metrics(*route_->at)) m->received(n);
        }
      }
      co_return true;
    }
    if (!route_ || !route_->at || route_->rest().empty()) co_return false;
    mirror_state& state = route_->origin->mirrors()->state();
    log::info("registry", "mirror ", state.label(*route_->at), " of ", state.origin().name, ": ",
              error_, "; the rest from ",
              route_->pending.empty() ? "the origin" : "the next mirror");
    state.failed(*route_->at, transport_ == upstream_errc::timeout ? "timeout" : "transport");
    co_await advance();
    if (!error_.empty()) co_return false;
  }
  co_return false;
}

asio::awaitable<bool> blob_ranges::next_here(std::vector<blob_piece>& out) {
  out.clear();
  if (!error_.empty()) co_return false;
  auto [ec, n] = co_await response_->read_some(buffer_.data(), buffer_.size());
  if (ec) {
    fail("upstream body: " + ec.message(), "transport");
    if (ec == beast::error::timeout) transport_ = upstream_errc::timeout;
    co_return false;
  }
  if (n == 0) {
    fail("upstream body ended early", "transport");
    co_return false;
  }
  if (!parts_) {
    out.push_back(blob_piece{offset_, buffer_.data(), n});
    offset_ += n;
    co_return true;
  }
  const bool ok =
      parts_->feed(buffer_.data(), n, [&out](std::uint64_t at, const char* p, std::size_t size) {
        out.push_back(blob_piece{at, p, size});
        return true;
      });
  if (!ok) fail("upstream multipart body: " + parts_->error(), "content_range");
  co_return ok;
}

asio::awaitable<void> blob_ranges::finish() {
  for (int extra = 0; parts_ && error_.empty() && !parts_->done() && extra < 4; ++extra) {
    auto [ec, n] = co_await response_->read_some(buffer_.data(), buffer_.size());
    if (ec || n == 0 || !parts_->feed(buffer_.data(), n, [](auto...) { return true; })) break;
  }
}

asio::awaitable<upstream_result> relay_blob(upstream_client& client, const std::string& repository,
                                            const oci::digest& d, bool head, std::string_view range,
                                            std::string_view if_range) {
  auto req = blob_request(repository, d, head ? http::verb::head : http::verb::get);
  if (!range.empty()) req.headers.emplace_back(http::field::range, std::string(range));
  if (!if_range.empty()) req.headers.emplace_back(http::field::if_range, std::string(if_range));
  co_return co_await first_answer(client, req, mirror_order(client, d.str()));
}

namespace {

upstream_request manifest_request(const std::string& repository, const std::string& reference,
                                  const std::string& accept, http::verb method) {
  upstream_request req;
  req.method = method;
  req.target = manifest_target(repository, reference);
  req.repository = repository;
  req.headers.emplace_back(http::field::accept, accept);
  return req;
}

manifest_result verified_manifest(unsigned status, const std::string& repository,
                                  const std::string& reference, std::string media_type,
                                  std::string bytes) {
  const auto requested = oci::digest::parse(reference);
  const auto algorithm = requested ? requested->algorithm() : oci::digest_algorithm::sha256;
  oci::digest actual = oci::digest_of(bytes, algorithm);
  if (requested && actual != *requested) {
    return manifest_failure{
        manifest_failure::why::digest_mismatch,
        {upstream_errc::protocol, "upstream manifest " + repository + "@" + requested->str() +
                                      " has digest " + actual.str()}};
  }
  if (media_type.empty()) media_type = oci::media_types::oci_manifest;
  return manifest_body{status, std::move(actual), std::move(media_type), std::move(bytes)};
}

}  // namespace

namespace {

// get_manifest() at one place: `mirror` set, a mirror of it.
asio::awaitable<manifest_result> manifest_at(upstream_client& client, const std::string& repository,
                                             const std::string& reference,
                                             const std::string& accept, std::size_t max_size,
                                             const mirror_state* mirror) {
  for (int attempt = 0;; ++attempt) {
    auto req = manifest_request(repository, reference, accept, http::verb::get);
    if (mirror != nullptr) address_to_mirror(req, *mirror);
    auto result = co_await client.send(std::move(req));
    if (auto* f = std::get_if<upstream_failure>(&result)) {
      co_return manifest_failure{manifest_failure::why::upstream, std::move(*f)};
    }
    auto response = std::move(std::get<std::unique_ptr<upstream_response>>(result));
    if (response->status() < 200 || response->status() > 299) co_return std::move(response);
    std::string media_type(response->fields()[http::field::content_type]);
    auto [ec, body] = co_await response->read_all(max_size);
    if (ec == http::error::body_limit) {
      co_return manifest_failure{
          manifest_failure::why::body_too_large,
          {upstream_errc::protocol,
           "upstream manifest is larger than " + std::to_string(max_size) + " bytes"}};
    }
    if (!ec) {
      co_return verified_manifest(response->status(), repository, reference, std::move(media_type),
                                  std::move(body));
    }
    std::string reason = "manifest body: " + ec.message();
    if (attempt > 0 || mirror != nullptr) {
      co_return manifest_failure{manifest_failure::why::upstream,
                                 {upstream_errc::protocol, std::move(reason)}};
    }
    log::info("registry", "upstream ", client.settings().name, ": ", reason, "; asking again");
    if (auto* m = client.metrics()) m->retry("transport");
  }
}

// The mirrors to ask for manifest `reference`: by digest, as for blobs; a tag, those that
// resolve tags.
std::vector<std::size_t> manifest_mirrors(const upstream_client& client,
                                          const std::string& reference) {
  auto* mirrors = client.mirrors();
  if (mirrors == nullptr) return {};
  if (oci::digest::parse(reference)) return mirrors->state().candidates(reference);
  return mirrors->state().resolvers();
}

// Counts what a manifest answer of mirror `k` that cannot be used was.
void note_manifest(mirror_state& state, std::size_t k, manifest_result& result) {
  if (auto* r = std::get_if<std::unique_ptr<upstream_response>>(&result)) {
    note_unusable(state, k, std::move(*r));
    return;
  }
  const auto& f = std::get<manifest_failure>(result);
  switch (f.kind) {
    case manifest_failure::why::digest_mismatch:
      state.failed(k, "digest");
      return;
    case manifest_failure::why::body_too_large:
      state.failed(k, "invalid");
      return;
    case manifest_failure::why::upstream:
      state.failed(k, judge_failure(f.failure).reason);
      return;
  }
}

}  // namespace

asio::awaitable<manifest_result> get_manifest(upstream_client& client,
                                              const std::string& repository,
                                              const std::string& reference,
                                              const std::string& accept, std::size_t max_size) {
  for (const std::size_t k : manifest_mirrors(client, reference)) {
    mirror_state& state = client.mirrors()->state();
    auto result = co_await manifest_at(client.mirrors()->client(k), repository, reference, accept,
                                       max_size, &state);
    if (std::holds_alternative<manifest_body>(result)) {
      state.succeeded(k);
      co_return result;
    }
    note_manifest(state, k, result);
  }
  co_return co_await manifest_at(client, repository, reference, accept, max_size, nullptr);
}

asio::awaitable<upstream_result> head_manifest(upstream_client& client,
                                               const std::string& repository,
                                               const std::string& reference,
                                               const std::string& accept) {
  co_return co_await first_answer(client,
                                  manifest_request(repository, reference, accept, http::verb::head),
                                  manifest_mirrors(client, reference));
}

asio::awaitable<upstream_result> get_listing(
    upstream_client& client, const std::string& repository, std::string_view path,
    const std::vector<std::pair<std::string, std::string>>& params, bool head) {
  boost::urls::url target;
  target.set_path("/v2/" + repository + "/" + std::string(path));
  for (const auto& [k, v] : params) target.params().append({k, v});
  upstream_request req;
  req.method = head ? http::verb::head : http::verb::get;
  req.target = std::string(target.encoded_path());
  if (target.has_query()) req.target += "?" + std::string(target.encoded_query());
  req.repository = repository;
  req.headers.emplace_back(http::field::accept, "application/json");
  co_return co_await client.send(std::move(req));
}

}  // namespace layercache::registry
