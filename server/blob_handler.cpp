// Blobs: through the chunk cache (cached_blobs) or relayed (relayed_blobs).
#include <boost/beast/http/field.hpp>

#include "content/blob_source.hpp"
#include "log/log.hpp"
#include "metrics/metrics.hpp"
#include "oci/digest.hpp"
#include "registry/distribution.hpp"
#include "server/blob_answer.hpp"
#include "server/handlers.hpp"

namespace layercache::server {
namespace {

// The fields every blob answer carries.
void set_blob_fields(answer& a, const oci::digest& digest) {
  a.fields.set(http::field::accept_ranges, "bytes");
  a.fields.set(http::field::etag, "\"" + digest.str() + "\"");
  a.fields.set("Docker-Content-Digest", digest.str());
}

// The request's source: the worst of what its bytes needed.
metrics::source classify(const content::read_report& report) {
  if (report.filled_bytes > 0) return metrics::source::miss;
  if (report.joined_bytes > 0) return metrics::source::joined;
  if (report.prefetch_bytes > 0) return metrics::source::prefetch;
  return metrics::source::hit;
}

// The body of a blob answer planned by plan_blob_answer, read through the blob source.
class cached_body final : public body_source {
 public:
  struct blob {
    registry::upstream_client& client;
    std::string repository;
    oci::digest digest;
    content::described_blob meta;
  };
  cached_body(content::blob_source& source, access_observer& observer, metrics::registry& metrics,
              blob b, blob_answer plan, exchange& record)
      : source_(source),
        observer_(observer),
        metrics_(metrics),
        blob_(std::move(b)),
        plan_(std::move(plan)),
        record_(record) {}

  asio::awaitable<end> write(const piece_sink& out) override {
    record_.blob.emplace();
    if (plan_.ranges.empty()) co_return co_await whole(out);
    co_return co_await ranges(out);
  }

 private:
  // The whole blob: checked on the way, the last piece held back until it matches.
  asio::awaitable<end> whole(const piece_sink& out) {
    observer_.touched(blob_.digest, oci::byte_interval(0, blob_.meta.size));
    const auto result = co_await source_.read_whole(blob_.client, blob_.repository, blob_.digest,
                                                    blob_.meta, out, &*record_.blob);
    record_.from = classify(*record_.blob);
    using verified_read = content::blob_source::verified_read;
    if (result == verified_read::mismatch) {
      metrics_.digest_failure("stream");
      log::error("proxy", "digest mismatch for ", blob_.digest.str(), " from upstream ",
                 blob_.client.settings().name,
                 ": connection cut before the last byte, blob purged");
      co_return end::cut;
    }
    co_return result == verified_read::failed ? end::unavailable : end::done;
  }

  // One range, or several as multipart/byteranges.
  asio::awaitable<end> ranges(const piece_sink& out) {
    for (const auto& br : plan_.ranges) observer_.touched(blob_.digest, oci::byte_interval(br));
    for (const auto& br : plan_.ranges) {
      if (plan_.multipart()) {
        const std::string header = plan_.part_header(br, blob_.meta.size);
        if (!co_await out(header.data(), header.size())) co_return end::cut;
      }
      const oci::byte_interval bytes(br);
      const bool ok = co_await source_.read(blob_.client, blob_.repository, blob_.digest,
                                            blob_.meta, bytes, out, &*record_.blob);
      record_.from = classify(*record_.blob);
      if (!ok) co_return end::unavailable;
    }
    const std::string closing = plan_.multipart() ? plan_.closing() : std::string();
    if (!closing.empty() && !co_await out(closing.data(), closing.size())) co_return end::cut;
    co_await source_.complete_later(blob_.client, blob_.repository, blob_.digest, blob_.meta);
    co_return end::done;
  }

  content::blob_source& source_;
  access_observer& observer_;
  metrics::registry& metrics_;
  blob blob_;
  blob_answer plan_;
  exchange& record_;
};

class cached final : public blob_handler {
 public:
  cached(content::blob_source& source, access_observer& observer, metrics::registry& metrics)
      : source_(source), observer_(observer), metrics_(metrics) {}

  // Size from the store or an upstream HEAD; the answer planned before any byte is read.
  asio::awaitable<answer> blob(const request_context& rc) override {
    const auto digest = *oci::digest::parse(rc.r.reference);
    rc.record.from = metrics::source::miss;
    auto described = co_await source_.describe(rc.client, rc.choice.repository, digest);
    if (auto* f = std::get_if<registry::upstream_failure>(&described)) {
      co_return failure_answer(rc.client, *f);
    }
    if (auto* up = std::get_if<std::unique_ptr<registry::upstream_response>>(&described)) {
      co_return refused(rc, **up);
    }
    const auto meta = std::get<content::described_blob>(described);
    rc.record.from = meta.in_store ? metrics::source::hit : metrics::source::miss;
    auto plan = plan_blob_answer(rc.head(), rc.req[http::field::range],
                                 rc.req[http::field::if_range], digest, meta.size);
    if (plan.status == 416) {
      answer a = error_answer(416, "UNSUPPORTED", "requested range not satisfiable");
      a.fields.set(http::field::content_range, plan.content_range);
      a.fields.set(http::field::content_type, plan.content_type);
      co_return a;
    }
    answer a;
    a.status = plan.status;
    set_blob_fields(a, digest);
    a.fields.set(http::field::content_type, plan.content_type);
    if (!plan.content_range.empty()) a.fields.set(http::field::content_range, plan.content_range);
    a.length = plan.length;
    a.unavailable =
        "upstream " + rc.client.settings().name + ": the blob's bytes could not be fetched";
    cached_body::blob b{rc.client, rc.choice.repository, digest, meta};
    a.stream = std::make_unique<cached_body>(source_, observer_, metrics_, std::move(b),
                                             std::move(plan), rc.record);
    co_return a;
  }

  void listed(const registry::upstream_client& client,
              const std::vector<oci::descriptor>& blobs) override {
    source_.learn_sizes(client, blobs);
  }

 private:
  // The upstream refused a HEAD, which has no body to pass on: say it in an OCI body.
  static answer refused(const request_context& rc, registry::upstream_response& up) {
    const unsigned status = up.status();
    answer a = error_answer(status, blob_refusal_code(status),
                            "upstream " + rc.client.settings().name + " answered " +
                                std::to_string(status) + " for this blob");
    if (auto ra = up.fields()[http::field::retry_after]; !ra.empty()) {
      a.fields.set(http::field::retry_after, ra);
    }
    return a;
  }

  content::blob_source& source_;
  access_observer& observer_;
  metrics::registry& metrics_;
};

class relayed final : public blob_handler {
 public:
  explicit relayed(metrics::registry& metrics) : metrics_(metrics) {}

  asio::awaitable<answer> blob(const request_context& rc) override {
    const auto digest = *oci::digest::parse(rc.r.reference);
    rc.record.from = metrics::source::upstream;
    auto result =
        co_await registry::relay_blob(rc.client, rc.choice.repository, digest, rc.head(),
                                      rc.req[http::field::range], rc.req[http::field::if_range]);
    if (auto* f = std::get_if<registry::upstream_failure>(&result)) {
      co_return failure_answer(rc.client, *f);
    }
    auto up = std::move(std::get<std::unique_ptr<registry::upstream_response>>(result));
    const unsigned status = up->status();
    if (status != 200 && status != 206) co_return co_await forwarded_error(rc.req, *up);
    answer a;
    a.status = status;
    const auto ct = up->fields()[http::field::content_type];
    a.fields.set(http::field::content_type, ct.empty() ? "application/octet-stream" : ct);
    if (status == 206) {
      if (auto cr = up->fields()[http::field::content_range]; !cr.empty()) {
        a.fields.set(http::field::content_range, cr);
      }
    }
    set_blob_fields(a, digest);
    a.length = up->content_length();
    a.header_first = true;
    // A full body is checked against the digest on the way through (not a multipart body).
    std::optional<oci::digest> verify;
    if (status == 200 && !rc.head()) verify = digest;
    a.stream = relayed_body(std::move(up), std::move(verify), metrics_);
    co_return a;
  }

  void listed(const registry::upstream_client&, const std::vector<oci::descriptor>&) override {}

 private:
  metrics::registry& metrics_;
};

}  // namespace

std::unique_ptr<blob_handler> cached_blobs(content::blob_source& source, access_observer& observer,
                                           metrics::registry& metrics) {
  return std::make_unique<cached>(source, observer, metrics);
}

std::unique_ptr<blob_handler> relayed_blobs(metrics::registry& metrics) {
  return std::make_unique<relayed>(metrics);
}

}  // namespace layercache::server
