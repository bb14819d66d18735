#include "loadtest/load.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <utility>

#include "loadtest/client.hpp"
#include "oci/digest.hpp"
#include "oci/manifest.hpp"

namespace layercache::loadtest {
namespace {

namespace asio = boost::asio;
namespace http = boost::beast::http;

constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);

// A blob with its size, for ranges and pulls.
struct sized_blob {
  std::string target;  // full request target
  std::string digest;
  std::uint64_t size = 0;
};

// One scenario in flight. All its clients run on the same thread as everything else, so the
// counters are plain integers.
struct scenario_run {
  const scenario* s = nullptr;
  scenario_result* r = nullptr;
  const origin* where = nullptr;
  const clock_limits* limits = nullptr;
  asio::ssl::context* tls = nullptr;                   // the run's, for https
  const std::vector<header_field>* headers = nullptr;  // the plan's, on every request
  std::vector<sized_blob> blobs;          // ranges: the blobs to read from (size ≥ range)
  std::vector<std::uint64_t> cumulative;  // ranges: running sum of blobs' sizes
  std::uint64_t next = 0;                 // tasks handed out
  unsigned live_clients = 0;
  clock_type::time_point start;

  // Hands out the next task index, or nothing once the count is reached or time is up.
  std::optional<std::uint64_t> take() {
    if (next >= s->count || !limits->open()) return std::nullopt;
    return next++;
  }

  void record(const response& res, bool good, const std::string& what) {
    ++r->requests;
    r->bytes += res.body_bytes;
    if (good) {
      ++r->ok;
      r->ttfb_ms.push_back(res.ttfb_ms);
      r->total_ms.push_back(res.total_ms);
      return;
    }
    ++r->errors;
    if (r->first_error.empty()) {
      r->first_error = what + ": " +
                       (res.error.empty() ? "status " + std::to_string(res.status) + ", " +
                                                std::to_string(res.body_bytes) + " body bytes"
                                          : res.error);
    }
  }

  [[nodiscard]] std::string blob_target(const std::string& repo, const std::string& digest) const {
    return where->prefix + "/v2/" + repo + "/blobs/" + digest;
  }
  [[nodiscard]] std::string manifest_target(const std::string& repo,
                                            const std::string& reference) const {
    return where->prefix + "/v2/" + repo + "/manifests/" + reference;
  }
};

bool full_body(const response& res, unsigned status) {
  return res.error.empty() && res.status == status && res.content_length &&
         *res.content_length == res.body_bytes;
}

// The image manifest for linux/amd64 (else the first entry) of an index.
std::optional<std::string> pick_platform(const oci::manifest& index) {
  for (const auto& m : index.manifests) {
    if (m.platform_os.value_or("") == "linux" && m.platform_architecture.value_or("") == "amd64") {
      return m.digest.str();
    }
  }
  if (index.manifests.empty()) return std::nullopt;
  return index.manifests.front().digest.str();
}

// Fetches an image's manifest (following an index to one platform) and lists its blobs:
// config first, then the layers, without repeats. Requests are recorded in `run`.
asio::awaitable<std::optional<std::vector<sized_blob>>> fetch_image(scenario_run* run,
                                                                    connection* conn,
                                                                    std::string image) {
  const auto parts = split_image(image);
  if (!parts) co_return std::nullopt;
  const auto& [repo, first_reference] = *parts;
  std::string reference = first_reference;
  for (int depth = 0; depth < 2; ++depth) {
    request_spec spec;
    spec.target = run->manifest_target(repo, reference);
    spec.accept_manifests = true;
    spec.capture = true;
    auto op = conn->send(spec);
    const response res = co_await std::move(op);
    const bool got = full_body(res, 200);
    run->record(res, got, "GET " + spec.target);
    if (!got) co_return std::nullopt;
    const auto m = oci::parse_manifest(res.body, res.content_type);
    if (!m) {
      if (run->r->first_error.empty()) run->r->first_error = spec.target + ": not a manifest";
      co_return std::nullopt;
    }
    if (m->is_index()) {
      const auto child = pick_platform(*m);
      if (!child) co_return std::nullopt;
      reference = *child;
      continue;
    }
    std::vector<sized_blob> blobs;
    std::vector<oci::descriptor> all;
    if (m->config) all.push_back(*m->config);
    all.insert(all.end(), m->layers.begin(), m->layers.end());
    for (const auto& d : all) {
      const auto digest = d.digest.str();
      const bool seen = std::any_of(blobs.begin(), blobs.end(),
                                    [&](const sized_blob& b) { return b.digest == digest; });
      if (!seen) blobs.push_back({run->blob_target(repo, digest), digest, d.size});
    }
    co_return blobs;
  }
  co_return std::nullopt;
}

// A latch for a pull's parallel blob fetchers: the pull waits until `pending` reaches 0.
struct fetch_group {
  explicit fetch_group(const asio::any_io_executor& ex) : done(ex) {}
  asio::steady_timer done;
  const std::vector<sized_blob>* blobs = nullptr;
  std::size_t next = 0;
  unsigned pending = 0;
  bool failed = false;
};

// Fetches blobs of a pull one after another on `conn` until none are left.
asio::awaitable<void> fetch_blobs(scenario_run* run, fetch_group* group, connection* conn) {
  while (group->next < group->blobs->size()) {
    const auto& b = (*group->blobs)[group->next++];
    request_spec spec;
    spec.target = b.target;
    std::optional<oci::hasher> hash;
    if (run->s->verify) {
      hash.emplace();
      spec.hash = &*hash;
    }
    auto op = conn->send(spec);
    const response res = co_await std::move(op);
    bool good = full_body(res, 200) && (b.size == 0 || res.body_bytes == b.size);
    if (good && hash && hash->finish().str() != b.digest) {
      good = false;
      if (run->r->first_error.empty()) run->r->first_error = b.target + ": digest mismatch";
    }
    run->record(res, good, "GET " + b.target);
    if (!good) group->failed = true;
  }
  if (--group->pending == 0) group->done.cancel();
}

// A client pulling whole images: the manifest on its first connection, then the blobs over
// `parallel` connections at once.
asio::awaitable<void> pull_client(scenario_run* run) {
  const auto ex = co_await asio::this_coro::executor;
  std::vector<std::unique_ptr<connection>> conns;
  for (unsigned i = 0; i < run->s->parallel; ++i) {
    conns.push_back(std::make_unique<connection>(ex, run->where, run->limits, &run->r->connections,
                                                 run->tls, run->headers));
  }
  while (const auto task = run->take()) {
    const auto& image = run->s->images[*task % run->s->images.size()];
    const auto t0 = clock_type::now();
    auto listing = fetch_image(run, conns[0].get(), image);
    const auto blobs = co_await std::move(listing);
    bool ok = blobs.has_value();
    if (ok) {
      fetch_group group(ex);
      group.blobs = &*blobs;
      group.pending = static_cast<unsigned>(conns.size());
      for (auto& c : conns) asio::co_spawn(ex, fetch_blobs(run, &group, c.get()), asio::detached);
      while (group.pending > 0) {
        group.done.expires_at(clock_type::time_point::max());
        auto [ec] = co_await group.done.async_wait(use_nothrow);
        (void)ec;
      }
      ok = !group.failed;
    }
    if (ok) {
      ++run->r->pulls_ok;
      run->r->pull_ms.push_back(ms_between(t0, clock_type::now()));
    } else {
      ++run->r->pulls_failed;
    }
  }
  for (auto& c : conns) c->close();
}

// A client sending GETs of one URL (full), random ranges of blobs (ranges) or the read set
// in order (replay), one request at a time on one connection.
asio::awaitable<void> request_client(scenario_run* run, std::uint64_t seed) {
  const auto ex = co_await asio::this_coro::executor;
  const scenario& s = *run->s;
  connection conn(ex, run->where, run->limits, &run->r->connections, run->tls, run->headers);
  std::mt19937_64 rng(seed);
  while (const auto task = run->take()) {
    request_spec spec;
    std::uint64_t want = 0;  // body bytes a range answer must have
    unsigned status = 206;
    if (s.kind == scenario_kind::full) {
      spec.target = run->where->prefix.empty() ? "/" : run->where->prefix;
      status = 200;
    } else if (s.kind == scenario_kind::ranges) {
      std::uniform_int_distribution<std::uint64_t> pick_byte(0, run->cumulative.back() - 1);
      const auto at =
          std::upper_bound(run->cumulative.begin(), run->cumulative.end(), pick_byte(rng)) -
          run->cumulative.begin();
      const auto& b = run->blobs[static_cast<std::size_t>(at)];
      std::uniform_int_distribution<std::uint64_t> pick(0, b.size - s.range);
      std::uint64_t first = pick(rng);
      first -= first % s.align;
      spec.target = b.target;
      spec.range = "bytes=" + std::to_string(first) + "-" + std::to_string(first + s.range - 1);
      want = s.range;
    } else {
      const auto& op = s.reads[*task];
      spec.target = run->blob_target(s.repo, op.digest);
      spec.range =
          "bytes=" + std::to_string(op.offset) + "-" + std::to_string(op.offset + op.length - 1);
      want = op.length;
    }
    auto exchange = conn.send(spec);
    const response res = co_await std::move(exchange);
    const bool good = status == 200
                          ? full_body(res, 200)
                          : res.error.empty() && res.status == 206 && res.body_bytes == want;
    run->record(res, good, "GET " + spec.target + (spec.range.empty() ? "" : " " + spec.range));
  }
  conn.close();
}

asio::awaitable<void> run_client(scenario_run* run, std::uint64_t seed) {
  if (run->s->kind == scenario_kind::full && run->s->url.empty()) {
    co_await pull_client(run);
  } else {
    co_await request_client(run, seed);
  }
  if (--run->live_clients == 0) {
    run->r->seconds = std::chrono::duration<double>(clock_type::now() - run->start).count();
  }
}

// Setup for ranges: the blobs of the scenario's images and explicit blobs, with sizes.
asio::awaitable<void> prepare_ranges(scenario_run* run, std::string* error) {
  const auto ex = co_await asio::this_coro::executor;
  const scenario& s = *run->s;
  std::uint64_t connects = 0;
  connection conn(ex, run->where, run->limits, &connects, run->tls, run->headers);
  scenario_result scratch;  // setup requests are not part of the results
  scenario_run setup = *run;
  setup.r = &scratch;
  std::vector<sized_blob> found;
  if (!s.url.empty()) {
    found.push_back({run->where->prefix.empty() ? "/" : run->where->prefix, "", s.size});
  }
  for (const auto& image : s.images) {
    auto listing = fetch_image(&setup, &conn, image);
    const auto blobs = co_await std::move(listing);
    if (!blobs) {
      *error = "image " + image + ": " + scratch.first_error;
      co_return;
    }
    // The config as well as the layers; blobs smaller than a range are dropped below.
    found.insert(found.end(), blobs->begin(), blobs->end());
  }
  for (const auto& b : s.blobs) {
    sized_blob sb{run->blob_target(b.repo, b.digest), b.digest, b.size};
    if (sb.size == 0) {
      request_spec spec;
      spec.method = http::verb::head;
      spec.target = sb.target;
      auto op = conn.send(spec);
      const response res = co_await std::move(op);
      if (!res.error.empty() || res.status != 200 || !res.content_length) {
        *error = "HEAD " + sb.target + ": " +
                 (res.error.empty() ? "status " + std::to_string(res.status) : res.error);
        co_return;
      }
      sb.size = *res.content_length;
    }
    found.push_back(sb);
  }
  conn.close();
  std::uint64_t sum = 0;
  for (auto& b : found) {
    if (b.size < s.range) continue;
    sum += b.size;
    run->blobs.push_back(std::move(b));
    run->cumulative.push_back(sum);
  }
  if (run->blobs.empty()) *error = "no blob of at least " + std::to_string(s.range) + " bytes";
}

}  // namespace

run_result run_plan(const plan& p) {
  asio::io_context io;
  const auto tls = make_client_tls(p.ca_file, p.insecure);
  run_result out;
  out.scenarios.resize(p.scenarios.size());
  std::map<std::string, origin> origins;  // by URL
  std::vector<scenario_run> runs(p.scenarios.size());
  const auto timeout = std::chrono::duration_cast<clock_type::duration>(
      std::chrono::duration<double>(p.timeout_seconds));
  clock_limits setup_limits{clock_type::time_point::max(), clock_type::time_point::max(), timeout};
  clock_limits limits = setup_limits;
  for (std::size_t i = 0; i < p.scenarios.size(); ++i) {
    const auto& s = p.scenarios[i];
    const std::string& base = s.url.empty() ? p.registry : s.url;
    if (base.empty()) throw std::runtime_error(s.name + ": no registry URL (--registry)");
    const auto url = parse_http_url(base);
    if (!url) throw std::runtime_error(s.name + ": not an http(s):// URL: " + base);
    if (!origins.contains(base)) origins.emplace(base, resolve_origin(io, *url));
    auto& r = out.scenarios[i];
    r.name = s.name;
    r.kind = s.kind;
    r.concurrency = s.concurrency;
    r.count = s.kind == scenario_kind::replay && (s.count == 0 || s.count > s.reads.size())
                  ? s.reads.size()
                  : s.count;
    runs[i] = scenario_run{&s, &r, &origins.at(base), &setup_limits, tls.get(), &p.headers};
  }
  // The replay count is the read set's length unless asked for fewer lines.
  std::vector<scenario> adjusted(p.scenarios);
  for (std::size_t i = 0; i < adjusted.size(); ++i) {
    adjusted[i].count = out.scenarios[i].count;
    runs[i].s = &adjusted[i];
  }

  std::string setup_error;
  for (auto& run : runs) {
    if (run.s->kind != scenario_kind::ranges) continue;
    asio::co_spawn(io, prepare_ranges(&run, &setup_error), asio::detached);
    io.run();
    io.restart();
    if (!setup_error.empty()) throw std::runtime_error(run.s->name + ": " + setup_error);
  }

  const auto start = clock_type::now();
  limits.deadline = start + std::chrono::duration_cast<clock_type::duration>(
                                std::chrono::duration<double>(p.max_seconds));
  limits.hard_stop = limits.deadline + timeout;
  for (std::size_t i = 0; i < runs.size(); ++i) {
    auto& run = runs[i];
    run.limits = &limits;
    run.start = start;
    run.live_clients = run.s->concurrency;
    for (unsigned c = 0; c < run.s->concurrency; ++c) {
      const std::uint64_t seed = run.s->seed * 1000003 + c + 7919 * i;
      asio::co_spawn(io, run_client(&run, seed), asio::detached);
    }
  }
  io.run();
  out.seconds = std::chrono::duration<double>(clock_type::now() - start).count();
  return out;
}

}  // namespace layercache::loadtest
