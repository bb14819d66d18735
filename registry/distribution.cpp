#include "registry/distribution.hpp"

#include <boost/url/url.hpp>

#include "log/log.hpp"
#include "metrics/metrics.hpp"
#include "oci/media_types.hpp"
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

}  // namespace

asio::awaitable<blob_size_result> blob_size(upstream_client& client, const std::string& repository,
                                            const oci::digest& d) {
  auto result = co_await client.send(blob_request(repository, d, http::verb::head));
  if (auto* f = std::get_if<upstream_failure>(&result);
      f != nullptr && f->code == upstream_errc::redirect_refused) {
    // A HEAD never follows a redirect (issue 25); a blob GET may: its first byte's
    // Content-Range tells the size (registries that send blobs to storage redirect HEADs too).
    auto first = blob_request(repository, d, http::verb::get);
    first.headers.emplace_back(http::field::range, "bytes=0-0");
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

asio::awaitable<blob_ranges> get_blob_ranges(upstream_client& client, const std::string& repository,
                                             const oci::digest& d,
                                             const std::vector<oci::byte_range>& ranges,
                                             std::uint64_t blob_size) {
  auto req = blob_request(repository, d, http::verb::get);
  req.headers.emplace_back(http::field::range, range_value(ranges));
  auto result = co_await client.send(std::move(req));
  blob_ranges out;
  if (auto* f = std::get_if<upstream_failure>(&result)) {
    out.fail(std::move(f->message), "transport");
    out.retries_spent_ = true;
    co_return out;
  }
  out.response_ = std::move(std::get<std::unique_ptr<upstream_response>>(result));
  out.interpret(ranges, blob_size);
  if (out.error_.empty()) out.buffer_.resize(body_buffer);
  co_return out;
}

asio::awaitable<bool> blob_ranges::next(std::vector<blob_piece>& out) {
  out.clear();
  if (!error_.empty()) co_return false;
  auto [ec, n] = co_await response_->read_some(buffer_.data(), buffer_.size());
  if (ec) {
    fail("upstream body: " + ec.message(), "transport");
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
  co_return co_await client.send(std::move(req));
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

asio::awaitable<manifest_result> get_manifest(upstream_client& client,
                                              const std::string& repository,
                                              const std::string& reference,
                                              const std::string& accept, std::size_t max_size) {
  for (int attempt = 0;; ++attempt) {
    auto result =
        co_await client.send(manifest_request(repository, reference, accept, http::verb::get));
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
    if (attempt > 0) {
      co_return manifest_failure{manifest_failure::why::upstream,
                                 {upstream_errc::protocol, std::move(reason)}};
    }
    log::info("registry", "upstream ", client.settings().name, ": ", reason, "; asking again");
    if (auto* m = client.metrics()) m->retry("transport");
  }
}

asio::awaitable<upstream_result> head_manifest(upstream_client& client,
                                               const std::string& repository,
                                               const std::string& reference,
                                               const std::string& accept) {
  co_return co_await client.send(manifest_request(repository, reference, accept, http::verb::head));
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
