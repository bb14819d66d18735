// blob_source against a real store and an in-process fault-injecting upstream on loopback:
// which fill a reader waits on and in which order fills reach the upstream. The upstream's
// stalls stand still until the test ends, so orderings are shown without timing anything.
#include "content/blob_source.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <chrono>
#include <functional>
#include <future>
#include <optional>
#include <thread>

#include "asio/offload.hpp"
#include "cache/chunk_store.hpp"
#include "oci/digest.hpp"
#include "registry/auth.hpp"
#include "registry/credentials.hpp"
#include "registry/upstream_client.hpp"
#include "tests/support/fault_upstream.hpp"
#include "tests/support/process.hpp"

namespace layercache::content {
namespace {

using namespace std::chrono_literals;
using testing::fault;
using testing::fault_upstream;
using testing::request_kind;

constexpr std::uint32_t chunk = 64 * 1024;
constexpr std::uint32_t chunks = 16;
const std::string repository = "team/app";

std::string pattern(std::size_t n, unsigned seed) {
  std::string s(n, '\0');
  std::uint32_t x = 2463534242U + seed;
  for (auto& c : s) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    c = static_cast<char>(x);
  }
  return s;
}

// Until `done`, polled every 10 ms, at most `limit`.
bool eventually(const std::function<bool()>& done, std::chrono::milliseconds limit = 20s) {
  for (auto waited = 0ms; waited < limit; waited += 10ms) {
    if (done()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return done();
}

// The store under test, refusing chunk writes (as on a full disk) while `refusing` is set.
class refusing_store final : public cache::chunk_store {
 public:
  explicit refusing_store(cache::chunk_store& base) : base_(base) {}
  std::atomic<bool> refusing{false};

  cache::status put_chunk(const oci::digest& d, std::uint64_t size, std::uint32_t chunk_size,
                          std::uint32_t index, std::string_view bytes, cache::origin_id origin,
                          bool* created) override {
    if (created != nullptr) *created = false;
    if (refusing) return cache::status::no_space("refused by the test: the disk is full");
    return base_.put_chunk(d, size, chunk_size, index, bytes, origin, created);
  }
  std::optional<cache::blob_record> blob(const oci::digest& d) override { return base_.blob(d); }
  cache::status get_chunk(const oci::digest& d, std::uint32_t i, std::string& out) override {
    return base_.get_chunk(d, i, out);
  }
  cache::status get_chunk_shared(const oci::digest& d, std::uint32_t i, bool admit,
                                 cache::shared_chunk& out) override {
    return base_.get_chunk_shared(d, i, admit, out);
  }
  bool try_blob(const oci::digest& d, std::optional<cache::blob_record>& out) override {
    return base_.try_blob(d, out);
  }
  bool try_touch(const oci::digest& d) override { return base_.try_touch(d); }
  cache::shared_chunk memory_chunk(const oci::digest& d, std::uint32_t i) override {
    return base_.memory_chunk(d, i);
  }
  bool has_chunk(const oci::digest& d, std::uint32_t i) override { return base_.has_chunk(d, i); }
  std::vector<std::uint32_t> present_chunks(const oci::digest& d) override {
    return base_.present_chunks(d);
  }
  cache::status mark_verified(const oci::digest& d) override { return base_.mark_verified(d); }
  void touch(const oci::digest& d) override { base_.touch(d); }
  cache::status erase_blob(const oci::digest& d) override { return base_.erase_blob(d); }
  cache::status put_manifest(const oci::digest& d, std::string_view type,
                             std::string_view bytes) override {
    return base_.put_manifest(d, type, bytes);
  }
  std::optional<cache::stored_manifest> manifest(const oci::digest& d) override {
    return base_.manifest(d);
  }
  cache::status put_tag(std::string_view key, const cache::tag_record& t) override {
    return base_.put_tag(key, t);
  }
  std::optional<cache::tag_record> tag(std::string_view key) override { return base_.tag(key); }
  cache::status put_profile(const oci::digest& m, std::string_view bytes) override {
    return base_.put_profile(m, bytes);
  }
  std::optional<std::string> profile(const oci::digest& m) override { return base_.profile(m); }
  cache::status erase_profile(const oci::digest& m) override { return base_.erase_profile(m); }
  std::vector<oci::digest> profiles() override { return base_.profiles(); }
  std::uint64_t used_bytes() override { return base_.used_bytes(); }
  std::uint64_t capacity() const override { return base_.capacity(); }
  void set_capacity(std::uint64_t c) override { base_.set_capacity(c); }
  cache::store_stats stats() override { return base_.stats(); }
  std::vector<cache::blob_entry> list_blobs() override { return base_.list_blobs(); }
  std::uint64_t evict_to(std::uint64_t target,
                         const std::function<bool(const oci::digest&)>& pinned) override {
    return base_.evict_to(target, pinned);
  }
  void set_pinned(std::function<bool(const oci::digest&)> pinned) override {
    base_.set_pinned(std::move(pinned));
  }
  void set_hot(std::function<byte_ranges(const oci::digest&)> hot) override {
    base_.set_hot(std::move(hot));
  }

 private:
  cache::chunk_store& base_;
};

class BlobSourceTest : public ::testing::Test {
 public:
  BlobSourceTest() = default;
  void TearDown() override {
    // The blocking pool's jobs (a store write, a touch after a read) end while the worker
    // still runs, to resume there: the pool is FIFO with one thread.
    if (runner_.joinable()) {
      // The upstream goes first, ending its stalls: the fills fail and leave no slot behind
      // (their waiters belong to the worker).
      upstream_.reset();
      (void)eventually([&] { return blobs_.stats().chunks_in_flight == 0; });
      (void)run(drained(*blocking_));
    }
  }
  ~BlobSourceTest() override {
    work_.reset();
    io_.stop();
    if (runner_.joinable()) runner_.join();
    // Its threads end here, before the worker's io_context, which their jobs resume on.
    blocking_.reset();
  }
  BlobSourceTest(const BlobSourceTest&) = delete;
  BlobSourceTest& operator=(const BlobSourceTest&) = delete;

 protected:
  // Starts the worker, with an upstream client whose fills fail after `read_timeout` without
  // a byte.
  void start(std::chrono::seconds read_timeout) {
    config::upstream& u = upstream_config_;
    u.name = "faulty";
    u.url = upstream_->url();
    u.scheme = "http";
    u.host = "127.0.0.1";
    u.port = upstream_->port();
    u.is_default = true;
    u.retry.attempts = 1;
    u.warm_connections = 0;
    // A connection per request: one that carried a planned stall is never used again (the
    // stall holds it even when the body ended before the stall's point).
    u.max_idle_connections = 0;
    u.timeouts.read = read_timeout;
    creds_ = std::make_unique<registry::upstream_credentials>(u);
    client_ = std::make_unique<registry::upstream_client>(u, pool_, nullptr, tokens_, *creds_,
                                                          redirects_);
    runner_ = std::thread([this] { io_.run(); });
  }

  // Runs `call` on the worker; nullopt when it has not finished within `limit` (the worker is
  // stopped then: nothing runs on after the test).
  template <typename T>
  std::optional<T> run(asio::awaitable<T> call, std::chrono::seconds limit = 30s) {
    auto done = asio::co_spawn(io_, std::move(call), asio::use_future);
    if (done.wait_for(limit) != std::future_status::ready) {
      io_.stop();
      return std::nullopt;
    }
    return done.get();
  }

  static asio::awaitable<bool> drained(blocking_pool& pool) {
    co_return co_await pool.run([] { return true; });
  }

  // Reads `bytes` as a client does; the bytes read, or nullopt when the read failed.
  std::optional<std::string> read(oci::byte_interval bytes) {
    std::string got;
    auto reading = [](blob_source& blobs, registry::upstream_client& client, oci::digest d,
                      described_blob meta, oci::byte_interval want,
                      std::string* into) -> asio::awaitable<bool> {
      const blob_source::sink out = [into](const char* p, std::size_t n) -> asio::awaitable<bool> {
        into->append(p, n);
        co_return true;
      };
      co_return co_await blobs.read(client, repository, d, meta, want, out);
    };
    const auto ok = run(reading(blobs_, *client_, digest_, meta_, bytes, &got));
    if (!ok || !*ok) return std::nullopt;
    return got;
  }

  struct whole_result {
    blob_source::verified_read result = blob_source::verified_read::failed;
    std::string got;
  };

  // `n` whole reads of the blob at once, as `n` clients' GETs; what each got.
  std::vector<whole_result> read_whole_at_once(unsigned n) {
    auto reading = [](blob_source& blobs, registry::upstream_client& client, oci::digest d,
                      described_blob meta, whole_result* into) -> asio::awaitable<bool> {
      const blob_source::sink out = [into](const char* p, std::size_t k) -> asio::awaitable<bool> {
        into->got.append(p, k);
        co_return true;
      };
      into->result = co_await blobs.read_whole(client, repository, d, meta, out);
      co_return true;
    };
    std::vector<whole_result> results(n);
    std::vector<std::future<bool>> running;
    for (auto& r : results) {
      running.push_back(
          asio::co_spawn(io_, reading(blobs_, *client_, digest_, meta_, &r), asio::use_future));
    }
    for (auto& f : running) EXPECT_EQ(f.wait_for(30s), std::future_status::ready);
    return results;
  }

  // Starts the background completion of the blob, as after a client's range read.
  void complete_in_background() {
    auto starting = [](blob_source& blobs, registry::upstream_client& client, oci::digest d,
                       described_blob meta) -> asio::awaitable<bool> {
      co_await blobs.complete_later(client, repository, d, meta);
      co_return true;
    };
    ASSERT_TRUE(run(starting(blobs_, *client_, digest_, meta_)));
  }

  // A completion of the blob, from nothing stored: chunk 0 in a request of its own, 1-15 in
  // another that stalls in chunk 2 (a read starts the fill of what follows its first chunk
  // first). Returns once chunks 0 and 1 are stored.
  void stall_the_completion() {
    // Both requests are planned (their order at the upstream is not known): chunk 0's ends
    // before the stall.
    upstream_->plan(request_kind::blob_get, fault::stall_after(chunk + chunk / 4), 2);
    complete_in_background();
    ASSERT_TRUE(eventually([&] { return blobs_.stats().chunks_filled >= 2; }));
    auto ranges = blob_ranges();
    std::sort(ranges.begin(), ranges.end());
    ASSERT_EQ(ranges, (std::vector<std::string>{range_header(0, 0), range_header(1, chunks - 1)}));
  }

  // A client's read of bytes near the end of chunk 0 of another blob, whose first answer stalls
  // before them: a client's fill is in flight until it fails at the read timeout (the read then
  // asks again and gets them). Started, not waited for; `got` is what the read got.
  std::future<bool> read_another_blob_stalled(std::string& got) {
    upstream_->plan(request_kind::blob_get, fault::stall_after(chunk / 2), 1);
    auto reading = [](blob_source& blobs, registry::upstream_client& client, oci::digest d,
                      described_blob meta, std::string* into) -> asio::awaitable<bool> {
      const blob_source::sink out = [into](const char* p, std::size_t n) -> asio::awaitable<bool> {
        into->append(p, n);
        co_return true;
      };
      co_return co_await blobs.read(client, repository, d, meta, {chunk - 1000, chunk}, out);
    };
    auto done = asio::co_spawn(io_,
                               reading(blobs_, *client_, other_digest_,
                                       described_blob::unstored(other_bytes_.size(), chunk), &got),
                               asio::use_future);
    EXPECT_TRUE(
        eventually([&] { return upstream_->requests(request_kind::blob_get).size() == 1; }));
    return done;
  }

  // The Range headers of the blob GETs the upstream received, in order.
  std::vector<std::string> blob_ranges() const {
    std::vector<std::string> out;
    for (const auto& r : upstream_->requests(request_kind::blob_get))
      out.push_back(r.range.value_or(""));
    return out;
  }

  static std::string range_header(std::uint32_t first, std::uint32_t last) {
    return "bytes=" + std::to_string(std::uint64_t{first} * chunk) + "-" +
           std::to_string(std::uint64_t{last + 1} * chunk - 1);
  }

  std::unique_ptr<fault_upstream> upstream_ = std::make_unique<fault_upstream>();
  std::string bytes_ = pattern(std::size_t{chunk} * chunks, 1);
  oci::digest digest_ = *oci::digest::parse(upstream_->add_blob(bytes_));
  described_blob meta_ = described_blob::unstored(bytes_.size(), chunk);
  std::string other_bytes_ = pattern(std::size_t{chunk} * 4, 2);
  oci::digest other_digest_ = *oci::digest::parse(upstream_->add_blob(other_bytes_));
  testing::temp_dir dir_;
  std::unique_ptr<cache::chunk_store> store_ = cache::open_rocksdb_store(
      cache::store_options{.path = dir_.path().string(), .capacity = std::uint64_t{64} << 20});
  refusing_store refusing_{*store_};
  std::unique_ptr<blocking_pool> blocking_ = std::make_unique<blocking_pool>(1);
  // One run is the whole blob: a completion asks for it in one request.
  blob_source blobs_{refusing_, *blocking_,
                     fill_settings{chunk, std::uint64_t{chunk} * chunks, 2, true}};
  asio::io_context io_{1};
  asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(io_);
  registry::connection_pool pool_{io_.get_executor()};
  config::upstream upstream_config_;
  registry::token_cache tokens_;
  registry::redirect_memory redirects_;
  std::unique_ptr<registry::upstream_credentials> creds_;
  std::unique_ptr<registry::upstream_client> client_;
  std::thread runner_;
};

// The completion's request for chunks 1-15 stalls in chunk 2; a client then reads chunk 10,
// which that request asked for too. The reader's chunk is fetched at once by a request of its own
// (from chunk 10 to the end of the completion's run, which gives those chunks up), not after the
// stalled chunks before it — and before anything else the completion asks for.
TEST_F(BlobSourceTest, AReadersChunkIsNotQueuedBehindAStalledCompletion) {
  start(120s);  // the stall outlasts the test
  stall_the_completion();

  const auto want = oci::byte_interval::at(std::uint64_t{10} * chunk + 100, 1000);
  const auto got = read(want);
  ASSERT_TRUE(got.has_value());
  EXPECT_TRUE(*got == bytes_.substr(want.begin, want.length()));

  // The stalled fill has not failed: once the reader's fill has stored chunks 10-15, the
  // stalled one's chunks 2-9 are in flight still (the stall outlasts the test).
  EXPECT_TRUE(eventually([&] { return blobs_.stats().chunks_in_flight == 8; }));
  EXPECT_EQ(blobs_.stats().demand_takeovers, 1u);
  const auto ranges = blob_ranges();
  ASSERT_EQ(ranges.size(), 3u) << ::testing::PrintToString(ranges);
  EXPECT_EQ(ranges[2], range_header(10, chunks - 1));
}

// After a reader took part of its run over, the completion still gets every byte — its own
// stalled chunks again once the stall fails them, the reader's from the reader's fill — and
// verifies the blob, with no chunk fetched whole twice.
TEST_F(BlobSourceTest, ACompletionAReaderTookPartOfStillVerifiesTheBlob) {
  start(2s);  // the stalled fill fails after it, and the completion asks again
  stall_the_completion();
  const auto want = oci::byte_interval::at(std::uint64_t{12} * chunk, std::uint64_t{2} * chunk);
  const auto got = read(want);
  ASSERT_TRUE(got.has_value());
  EXPECT_TRUE(*got == bytes_.substr(want.begin, want.length()));

  ASSERT_TRUE(eventually([&] { return blobs_.stats().verified == 1; }, 30s));
  const auto record = store_->blob(digest_);
  ASSERT_TRUE(record.has_value());
  EXPECT_TRUE(record->verified);
  const auto ranges = blob_ranges();
  ASSERT_EQ(ranges.size(), 4u) << ::testing::PrintToString(ranges);
  EXPECT_EQ(ranges[2], range_header(12, chunks - 1));
  EXPECT_EQ(ranges[3], range_header(2, 11));  // after the stall: from the chunk it broke in
}

// A client's whole GET while the blob's background completion is stalled, after the store lost
// the blob (evicted, as a store at capacity does): the client's read hashes what it sends and is
// served the blob, verified. (Before, it rode the completion's hash, which could not show it
// took the bytes the client sent once the store had changed: the read failed before its last
// byte with a healthy upstream, as in the soak's last round under ctest -j2.)
TEST_F(BlobSourceTest, AClientsWholeReadBesideACompletionDoesNotRideItsHash) {
  start(3s);  // the stalled fill fails after it; both reads ask again
  stall_the_completion();
  ASSERT_TRUE(store_->erase_blob(digest_).ok());

  const auto results = read_whole_at_once(1);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].result, blob_source::verified_read::verified);
  EXPECT_TRUE(results[0].got == bytes_);
  EXPECT_EQ(blobs_.stats().unproven_reads, 0u);
}

// A herd: eight clients GET the cold blob at once. The first hashes what it sends; the seven
// that come while it reads ride the blob's one hash, which the fills feed — two hashes of the
// blob, not eight. Every client gets the exact bytes, and the store's copy is verified.
TEST_F(BlobSourceTest, AHerdOfWholeReadsHashesTheBlobOnceBesideTheFirstReader) {
  start(30s);
  const auto results = read_whole_at_once(8);
  for (const auto& r : results) {
    EXPECT_EQ(r.result, blob_source::verified_read::verified);
    EXPECT_TRUE(r.got == bytes_);
  }
  EXPECT_EQ(blobs_.stats().hashed_bytes, 2 * bytes_.size());
  EXPECT_EQ(blobs_.stats().unproven_reads, 0u);
  const auto record = store_->blob(digest_);
  ASSERT_TRUE(record.has_value());
  EXPECT_TRUE(record->verified);
}

// The blob was read whole and stored, then the store evicted it (as a store at capacity does
// between reads). A herd of two whole reads follows: the chunks they find gone were gone before
// either began, so the rider shows it sent the bytes the blob's hash took, and both are served
// the blob, verified. (Before, the rider read "stored once and gone" as "the store may hold
// other bytes now" and failed before its last byte: most of the soak's failed reads.)
TEST_F(BlobSourceTest, ARiderIsNotFailedByChunksEvictedBeforeItBegan) {
  start(30s);
  const auto first = read_whole_at_once(1);
  ASSERT_EQ(first[0].result, blob_source::verified_read::verified);
  ASSERT_TRUE(store_->erase_blob(digest_).ok());  // evicted: no purge, nothing known wrong

  const auto results = read_whole_at_once(2);
  for (const auto& r : results) {
    EXPECT_EQ(r.result, blob_source::verified_read::verified);
    EXPECT_TRUE(r.got == bytes_);
  }
  EXPECT_EQ(blobs_.stats().unproven_reads, 0u);
}

// An upstream that lies about chunk 5 in every answer: no client of a herd gets the blob's last
// byte (the riders wait for the blob's hash, which does not match), and nothing stays stored.
TEST_F(BlobSourceTest, NoWholeReadOfALyingUpstreamGetsTheLastByte) {
  start(30s);
  upstream_->plan(request_kind::blob_get, fault::corrupt_at(std::uint64_t{5} * chunk + 7), 1000);
  const auto results = read_whole_at_once(4);
  for (const auto& r : results) {
    EXPECT_NE(r.result, blob_source::verified_read::verified);
    EXPECT_LT(r.got.size(), bytes_.size());
  }
  EXPECT_TRUE(eventually([&] {
    const auto record = store_->blob(digest_);
    return !record || !record->verified;
  }));
}

// The first answer lies in chunk 3 and ends 1000 bytes into it; the request for the rest
// gets the true bytes. The blob's hash takes the true chunk and matches — but a reader that
// sent the lying first bytes finds, when it resumes, that the refetch does not repeat them (a
// rider: the refetch is compared with what it sent) or that its own hash does not match (the
// first reader): it stops there, never gets the last byte, and the blob is purged. Which
// reader sends lying bytes depends on the schedule: one still behind the fill when the cut
// comes reads only the refetch, and is rightly served the true blob, verified. (Under load in
// CI's ctest -j2 the first reader was; that run failed when this test expected it lied to.)
TEST_F(BlobSourceTest, ARiderWhoseChunkWasRefetchedWithOtherBytesStopsThere) {
  start(30s);
  // Planned for both first requests (chunk 0's and chunks 1-15's, in either order): chunk 0's
  // answer is whole before the cut.
  const std::uint64_t cut = std::uint64_t{2} * chunk + 1000;  // body bytes from chunk 1
  upstream_->plan(request_kind::blob_get,
                  fault::corrupt_then_cut(std::uint64_t{3} * chunk + 10, cut), 2);
  const auto results = read_whole_at_once(2);
  unsigned lied_to = 0;
  for (std::size_t i = 0; i < results.size(); ++i) {
    SCOPED_TRACE("reader " + std::to_string(i));
    const auto& r = results[i];
    ASSERT_LE(r.got.size(), bytes_.size());
    if (r.got == std::string_view(bytes_).substr(0, r.got.size())) {  // only true bytes
      EXPECT_EQ(r.result == blob_source::verified_read::verified, r.got.size() == bytes_.size());
      continue;
    }
    ++lied_to;
    EXPECT_EQ(r.result, blob_source::verified_read::mismatch);
    EXPECT_LT(r.got.size(), bytes_.size());  // the first reader stops at its own hash's end
    if (i == 1) {                            // the rider: at the refetch
      EXPECT_LE(r.got.size(), std::uint64_t{3} * chunk + 1000);
    }
  }
  if (lied_to == 0) GTEST_SKIP() << "both readers were behind the cut: neither sent a lying byte";
  EXPECT_TRUE(eventually([&] {
    const auto record = store_->blob(digest_);
    return !record || !record->verified;
  }));
}

// Demand first: a client's read of another blob is in flight (its answer stalls, then fails
// at the read timeout and the read asks again) when the blob's background completion gets its
// answer. The completion does not read on while the client's fill is in flight — the
// bytes, the upstream's time and the CPU go to what a client waits for — and finishes, verified,
// once the client's fill has ended. (Before, it read its 16 chunks at once beside the stall.)
TEST_F(BlobSourceTest, ACompletionGivesWayWhileAClientsFillIsInFlight) {
  start(5s);  // the client's stalled fill fails after it; the completion reads on then
  std::string got;
  auto client_read = read_another_blob_stalled(got);

  complete_in_background();
  ASSERT_TRUE(eventually([&] { return upstream_->requests(request_kind::blob_get).size() >= 2; }));
  std::this_thread::sleep_for(200ms);  // time enough to read all 16 chunks, on a loaded machine
  const bool client_still_waits = client_read.wait_for(0s) != std::future_status::ready;
  const auto stats = blobs_.stats();  // the client's blob has no chunk filled: it stalls
  if (client_still_waits) {
    EXPECT_LT(stats.chunks_filled, chunks) << "the completion read on";
    EXPECT_GE(stats.background_yields, 1u);
  }

  ASSERT_EQ(client_read.wait_for(30s), std::future_status::ready);
  EXPECT_TRUE(client_read.get());
  EXPECT_TRUE(got == other_bytes_.substr(chunk - 1000, 1000));
  ASSERT_TRUE(eventually([&] { return blobs_.stats().verified == 1; }, 30s));
  const auto record = store_->blob(digest_);
  ASSERT_TRUE(record.has_value());
  EXPECT_TRUE(record->verified);
  if (!client_still_waits) GTEST_SKIP() << "the client's fill ended before the check";
}

// Prefetch does not give way: it fetches what a start reads next, and on a link limited per
// connection a paused prefetch only loses time (docs/benchmarks.md, lazystart.sh). With a
// client's fill of another blob stalled, a prefetch of the blob stores every chunk.
TEST_F(BlobSourceTest, PrefetchDoesNotGiveWayToAClientsFill) {
  start(5s);
  std::string got;
  auto client_read = read_another_blob_stalled(got);
  auto prefetching = [](blob_source& blobs, registry::upstream_client& client, oci::digest d,
                        described_blob meta) -> asio::awaitable<bool> {
    co_return co_await blobs.prefetch(client, repository, d, listed_blob{meta, {}}, 0, chunks - 1);
  };
  const auto prefetched = run(prefetching(blobs_, *client_, digest_, meta_));
  const bool client_still_waits = client_read.wait_for(0s) != std::future_status::ready;
  ASSERT_TRUE(prefetched.has_value());
  EXPECT_TRUE(*prefetched);
  EXPECT_EQ(blobs_.stats().background_yields, 0u);
  EXPECT_TRUE(eventually([&] { return store_->present_chunks(digest_).size() == chunks; }));
  ASSERT_EQ(client_read.wait_for(30s), std::future_status::ready);
  EXPECT_TRUE(client_read.get());
  if (!client_still_waits) GTEST_SKIP() << "the client's fill ended before the prefetch did";
}

// The store refuses every chunk (a full disk) while a client reads the blob: the client gets it
// whole (complete chunks are held for readers behind the fill while it is read). The disk has
// room again and a client reads the blob again: the hold ended with the first read, so the
// chunks are fetched again and stored. (Before, held chunks outlived their readers: the second
// read was served from the hold with no store write, nothing of the blob was stored again, and
// up to (parallel_fetches + 1) × fetch_size of memory stayed held; CI failed on it in
// DiskFull.RoundsOfRocksDb... with one round.)
TEST_F(BlobSourceTest, ChunksHeldOnAFullDiskAreFetchedAndStoredWhenReadAgainWithRoom) {
  start(30s);
  refusing_.refusing = true;
  EXPECT_EQ(read({0, bytes_.size()}), bytes_);
  EXPECT_TRUE(store_->present_chunks(digest_).empty());
  EXPECT_GT(blobs_.stats().store_errors, 0u);
  const auto requests = upstream_->requests(request_kind::blob_get).size();

  refusing_.refusing = false;
  EXPECT_EQ(read({0, bytes_.size()}), bytes_);
  EXPECT_TRUE(eventually([&] { return store_->present_chunks(digest_).size() == chunks; }))
      << store_->present_chunks(digest_).size() << " of " << chunks << " chunks stored";
  EXPECT_GT(upstream_->requests(request_kind::blob_get).size(), requests);
  std::string stored;
  for (std::uint32_t i = 0; i < chunks; ++i) {
    std::string part;
    ASSERT_TRUE(store_->get_chunk(digest_, i, part).ok()) << "chunk " << i;
    stored += part;
  }
  EXPECT_TRUE(stored == bytes_);
}

}  // namespace
}  // namespace layercache::content
