#include "content/blob_source.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/concurrent_channel.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <cstring>
#include <deque>
#include <optional>
#include <utility>

#include "log/log.hpp"
#include "metrics/metrics.hpp"
#include "registry/distribution.hpp"
#include "registry/mirrors.hpp"

namespace layercache::content {
namespace {

constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t max_remembered = 1 << 16;
constexpr std::size_t max_piece = std::size_t{256} * 1024;  // handed to a sink at once
constexpr int max_attempts = 3;
// Chunk store writes a fill lets run behind its reading before it waits for the oldest.
constexpr std::size_t write_behind = 4;
// Reads of at most this many chunks read them instead of listing the blob's chunks.
constexpr std::uint32_t few_chunks = 4;
// Complete chunks a blob's hash holds for their turn when their store write failed.
constexpr std::size_t max_unstored = 32;
// The longest a completion's fill gives way to clients' fills at a time (yield_to_demand): it
// reads a piece, then gives way again if they are still in flight.
constexpr std::chrono::milliseconds max_yield{1000};

// Runs `work`, which outlives the request that started it, holding `client` alive when it is
// shared (a client acting with one client's credentials, upstream.access: client; a worker's
// own clients live as long as the worker).
asio::awaitable<void> run_holding(std::shared_ptr<registry::upstream_client> /*keep*/,
                                  asio::awaitable<void> work) {
  co_await std::move(work);
}

asio::awaitable<void> holding(registry::upstream_client& client, asio::awaitable<void> work) {
  return run_holding(client.weak_from_this().lock(), std::move(work));
}

using wakeup = asio::experimental::concurrent_channel<void(boost::system::error_code)>;

// Chunk buffers are recycled: a fresh chunk-sized allocation per fill is pages the kernel
// faults in and zeroes every time. A few are kept (each at most a few MiB).
class buffer_pool {
 public:
  std::string take(std::size_t capacity) {
    {
      std::lock_guard lock(mutex_);
      for (auto it = free_.begin(); it != free_.end(); ++it) {
        if (it->capacity() >= capacity) {
          std::string out = std::move(*it);
          free_.erase(it);
          return out;
        }
      }
    }
    std::string out;
    out.reserve(capacity);
    return out;
  }
  void give(std::string&& buffer) {
    if (buffer.capacity() < (64U << 10) || buffer.capacity() > max_kept_bytes) return;
    buffer.clear();
    std::lock_guard lock(mutex_);
    if (free_.size() < max_kept) free_.push_back(std::move(buffer));
  }

 private:
  static constexpr std::size_t max_kept = 8;
  static constexpr std::size_t max_kept_bytes = 4U << 20;
  std::mutex mutex_;
  std::vector<std::string> free_;
};

// At most one line a minute for a repeated failure; admit() gives the number of lines left
// out since the last one, or nullopt when this one is to be left out.
class log_limiter {
 public:
  std::optional<std::uint64_t> admit() {
    std::lock_guard lock(mutex_);
    const auto now = std::chrono::steady_clock::now();
    if (logged_ && now - last_ < std::chrono::minutes(1)) {
      ++quiet_;
      return std::nullopt;
    }
    logged_ = true;
    last_ = now;
    return std::exchange(quiet_, 0);
  }

 private:
  std::mutex mutex_;
  bool logged_ = false;
  std::chrono::steady_clock::time_point last_{};
  std::uint64_t quiet_ = 0;
};

log_limiter& store_error_log() {
  static log_limiter limiter;
  return limiter;
}

buffer_pool& chunk_buffers() {
  static buffer_pool pool;
  return pool;
}

}  // namespace

cache::origin_id origin_of(const registry::upstream_client& client) {
  std::uint64_t h = 14695981039346656037ULL;  // FNV-1a: the same across restarts and builds
  for (const char c : client.settings().name) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ULL;
  }
  return h == 0 ? 1 : h;
}

// A slot's identity for one hash per blob, apart from its buffer (whole reads keep one per
// chunk they sent). `created`: the slot's store write created the chunk, so the store holds
// exactly its bytes (a stored chunk is never overwritten: put_chunk keeps the first bytes).
struct blob_source::slot_mark {
  std::atomic<bool> created{false};
};

bool blob_source::same_bytes(const bytes_from& a, const bytes_from& b) {
  const auto stands_for = [](const bytes_from& x) -> const slot_mark* {
    return x == nullptr || x->created.load() ? nullptr : x.get();
  };
  return stands_for(a) == stands_for(b);
}

// One chunk being filled from upstream. `data` only grows, within capacity reserved up
// front, so what a reader copied stays valid; all access is under `mutex`.
struct blob_source::chunk_slot {
  std::mutex mutex;
  std::string data;
  std::size_t expected = 0;
  std::uint32_t chunk = 0;  // its index in the blob
  bool failed = false;
  // Failed without a body: the upstream client retried already (no answer, or an error
  // status after its tries), so readers give up instead of starting another fill.
  bool retries_spent = false;
  bool done = false;      // finished: stored (or not) and will not change
  bool prefetch = false;  // started by prefetch
  bool claimed = false;   // a client read joined it (prefetch slots only)
  std::vector<std::shared_ptr<wakeup>> waiters;
  // Under blob_source::mutex_, not `mutex`: asked for by background work only (no reader's
  // fill: a reader may take it over), and the fill it is part of now.
  bool background = false;
  std::weak_ptr<fill_run> owner;
  std::shared_ptr<slot_mark> mark = std::make_shared<slot_mark>();

  chunk_slot() = default;
  ~chunk_slot() { chunk_buffers().give(std::move(data)); }
  chunk_slot(const chunk_slot&) = delete;
  chunk_slot& operator=(const chunk_slot&) = delete;

  // Wakes everyone who was waiting; call without holding `mutex`.
  static void wake(std::vector<std::shared_ptr<wakeup>>& waiters) {
    for (auto& w : waiters) (void)w->try_send(boost::system::error_code{});
    waiters.clear();
  }
};

// One hash per blob: the digest of one purge generation of a blob, computed once, in chunk
// order, from the chunks its fills complete (store_chunk, on the blocking pool) and from the
// store for chunks stored before or ahead of their turn. Whole reads do not hash: they note
// where each chunk they sent came from (sent_bytes) and, before their last piece, wait for
// the verdict and check that they sent the very bytes it took (covered()).
struct blob_source::blob_hash {
  blob_hash(const oci::digest& d, std::uint64_t gen, const described_blob& m)
      : digest(d), generation(gen), meta(m), hasher(d.algorithm()), fed(m.chunk_count()) {}
  const oci::digest digest;
  const std::uint64_t generation;
  const described_blob meta;
  std::mutex feeding;           // held while hashing, by blocking-pool threads only
  oci::hasher hasher;           // under `feeding`
  std::mutex mutex;             // the rest
  std::uint32_t next = 0;       // chunks [0, next) are hashed
  std::vector<bytes_from> fed;  // by chunk < next: whose bytes were hashed
  // Complete chunks ahead of `next` whose store write failed (a full disk): held for their
  // turn, a few at most.
  std::map<std::uint32_t, std::shared_ptr<chunk_slot>> unstored;
  bool store_changed = false;  // a stored chunk was found corrupt and removed meanwhile
  enum class state { hashing, matched, mismatched, abandoned } result = state::hashing;
  std::vector<std::shared_ptr<wakeup>> waiters;  // woken when it moves on

  void wake_locked() {
    for (auto& w : waiters) (void)w->try_send(boost::system::error_code{});
    waiters.clear();
  }
};

struct blob_source::sent_bytes {
  std::vector<bytes_from> from;  // by chunk
  bool differs = false;          // a chunk refetched after a failure was not the bytes sent before
};

// The slots one fill asks for, in order. A reader may take over those the fill has not begun
// receiving (take_over_locked): the fill then ends after the slots it kept.
struct blob_source::fill_run {
  // Fixed when made, but for the slots let go (null) once stored: let_go.
  std::vector<std::shared_ptr<chunk_slot>> slots;
  fill_for why = fill_for::reader;  // demand(why): counted in demand_fills_
  std::mutex mutex;
  std::size_t receiving = 0;  // under `mutex`: the slot the fill's bytes go to now
  std::size_t end = 0;        // under `mutex`: slots [0, end) are still this fill's
};

// Fills' chunk store writes go to the blocking pool one at a time, those of chunks a client
// waits for first: the store takes one writer at a time anyway (its lock is held while RocksDB
// writes, through a write stall too), and a read's own lookups there (a probe, a stored chunk)
// then wait behind one write at most, not behind every chunk a background completion has
// queued; a client's fill waiting on its write-behind never waits behind background writes.
class blob_source::write_turns {
 public:
  asio::awaitable<void> take(bool first) {
    auto wait = std::make_shared<wakeup>(co_await asio::this_coro::executor, 1);
    {
      std::lock_guard lock(mutex_);
      if (!busy_) {
        busy_ = true;
        co_return;
      }
      (first ? first_ : later_).push_back(wait);
    }
    (void)co_await wait->async_receive(use_nothrow);  // the turn is handed over
  }
  // Hands the turn to the next writer waiting, a client's first.
  void give() {
    std::shared_ptr<wakeup> next;
    {
      std::lock_guard lock(mutex_);
      auto& queue = !first_.empty() ? first_ : later_;
      if (queue.empty()) {
        busy_ = false;
        return;
      }
      next = std::move(queue.front());
      queue.pop_front();
    }
    (void)next->try_send(boost::system::error_code{});
  }

 private:
  std::mutex mutex_;
  bool busy_ = false;
  std::deque<std::shared_ptr<wakeup>> first_;
  std::deque<std::shared_ptr<wakeup>> later_;
};

struct blob_source::yielding {
  std::vector<std::shared_ptr<wakeup>> waiters;  // under blob_source::mutex_
};

blob_source::~blob_source() = default;

blob_source::blob_source(cache::chunk_store& store, blocking_pool& pool, fill_settings settings)
    : store_(store),
      pool_(pool),
      settings_(settings),
      yielding_(std::make_unique<yielding>()),
      write_turns_(std::make_unique<write_turns>()) {
  // An eviction query (cache/chunk_store.hpp), asked with the store's lock held: takes only
  // mutex_, under which nothing calls the store. A blob is spared while it is read and while
  // its one hash lives (whole reads ride it): so, while a hash lives, a stored chunk of its
  // blob goes only when found corrupt or purged, which is what `store_changed` tells riders.
  store_.set_pinned([this](const oci::digest& d) {
    std::lock_guard lock(mutex_);
    if (readers_.contains(d.str())) return true;
    const auto h = hashes_.find(d.str());
    return h != hashes_.end() && !h->second.expired();
  });
}

std::string blob_source::size_key(const registry::upstream_client& client, const oci::digest& d) {
  return client.settings().name + '\n' + d.str();
}

bool blob_source::claim(cache::origin_id origin, const oci::digest& d, const described_blob& meta) {
  if (meta.verified) return true;
  std::lock_guard lock(mutex_);
  // Only entries of blobs a claim saw unverified; a full map is cleared (the records keep
  // their origin: only a blob whose first chunk is still being fetched loses its claim).
  if (owners_.size() >= 4 * max_remembered) owners_.clear();
  const auto [it, inserted] =
      owners_.try_emplace(d.str(), meta.in_store && meta.origin != 0 ? meta.origin : origin);
  return it->second == origin;
}

bool blob_source::owns(cache::origin_id origin, const oci::digest& d) const {
  std::lock_guard lock(mutex_);
  const auto it = owners_.find(d.str());
  return it == owners_.end() || it->second == origin;
}

std::string blob_source::key_of(const oci::digest& d, std::uint32_t index) const {
  std::string k = d.str();
  k += '#';
  k += std::to_string(index);
  return k;
}

blob_source_stats blob_source::stats() const {
  std::lock_guard lock(mutex_);
  blob_source_stats s = stats_;
  s.chunks_in_flight = inflight_.size();
  return s;
}

asio::awaitable<blob_source::describe_result> blob_source::describe(
    registry::upstream_client& client, const std::string& repository, const oci::digest& d) {
  // The record is in memory: read it here unless a writer holds the store's lock.
  std::optional<cache::blob_record> record;
  if (!store_.try_blob(d, record))
    record = co_await pool_.run([this, &d] { return store_.blob(d); });
  if (record) {
    co_return described_blob::stored(*record);
  }
  if (auto known = known_size(client, d)) co_return *known;

  // One HEAD per blob at a time: the others wait for its answer.
  const auto& t = client.settings().timeouts;
  const config::duration limit = t.connect + t.response + std::chrono::seconds(5);
  auto joined = co_await heads_.join(size_key(client, d), limit);
  std::optional<registry::flight_table::lead> lead;
  if (auto* claimed = std::get_if<registry::flight_table::lead>(&joined)) {
    lead.emplace(std::move(*claimed));
    if (auto known = known_size(client, d)) {  // one finished between our miss and the claim
      lead->finish(std::string{});
      co_return *known;
    }
  } else if (auto& waited = std::get<std::optional<registry::fetch_result>>(joined);
             waited && std::holds_alternative<std::string>(*waited)) {
    // The leader learnt the size (into sizes_, unless cleared since: then ask again).
    if (auto known = known_size(client, d)) co_return *known;
  }
  // Leading, or the leader's HEAD was refused or failed: ask, to pass its answer on.

  auto result = co_await registry::blob_size(client, repository, d);
  if (auto* f = std::get_if<registry::upstream_failure>(&result)) {
    if (lead) lead->finish(*f);
    co_return std::move(*f);
  }
  if (auto* refused = std::get_if<std::unique_ptr<registry::upstream_response>>(&result)) {
    if (lead)
      lead->finish(
          registry::upstream_failure{registry::upstream_errc::protocol, "blob HEAD refused"});
    co_return std::move(*refused);
  }
  const auto meta = described_blob::unstored(std::get<std::uint64_t>(result), settings_.chunk_size);
  {
    std::lock_guard lock(mutex_);
    if (sizes_.size() >= max_remembered) sizes_.clear();
    sizes_[size_key(client, d)] = meta;
  }
  if (lead) lead->finish(std::string{});
  co_return meta;
}

std::optional<described_blob> blob_source::known_size(const registry::upstream_client& client,
                                                      const oci::digest& d) const {
  const std::string key = size_key(client, d);
  std::lock_guard lock(mutex_);
  if (auto it = sizes_.find(key); it != sizes_.end()) return it->second;
  return std::nullopt;
}

void blob_source::learn_sizes(const registry::upstream_client& client,
                              const std::vector<oci::descriptor>& blobs) {
  std::lock_guard lock(mutex_);
  for (const auto& b : blobs) {
    if (b.size == 0) continue;
    if (sizes_.size() >= max_remembered) sizes_.clear();
    sizes_.try_emplace(size_key(client, b.digest),
                       described_blob::unstored(b.size, settings_.chunk_size));
  }
}

void blob_source::forget_size(const registry::upstream_client& client, const oci::digest& d) {
  const std::string key = size_key(client, d);
  std::lock_guard lock(mutex_);
  sizes_.erase(key);
}

std::shared_ptr<blob_source::chunk_slot> blob_source::join_or_start(
    const asio::any_io_executor& ex, registry::upstream_client& client,
    const std::string& repository, const oci::digest& d, const described_blob& meta,
    std::uint32_t first, std::uint32_t limit, const std::vector<bool>& present,
    std::uint32_t present_base, std::uint32_t* run, fill_for why) {
  *run = 0;
  const std::uint64_t chunk_count = (meta.size + meta.chunk_size - 1) / meta.chunk_size;
  const auto run_chunks =
      static_cast<std::uint32_t>(std::max<std::uint64_t>(1, settings_.run_bytes / meta.chunk_size));
  std::shared_ptr<fill_run> started;
  {
    std::lock_guard lock(mutex_);
    const auto first_key = key_of(d, first);
    if (auto it = inflight_.find(first_key); it != inflight_.end()) {
      if (!demand(why)) return it->second;
      ++stats_.chunks_joined;
      const bool background = std::exchange(it->second->background, false);  // a reader waits
      if (background) wake_yielding_locked();  // its fill reads on, if it was giving way
      if (why == fill_for::read_ahead || !background) return it->second;
      started = take_over_locked(it->second, meta.chunk_size);
      if (!started) return it->second;
      --stats_.chunks_joined;
      ++stats_.demand_takeovers;
    } else {
      if (completed_.contains(first_key)) return nullptr;
      if (auto kept = unstored_.find(first_key); kept != unstored_.end()) {
        ++stats_.chunks_joined;
        return kept->second;  // complete, not stored (a full disk): its bytes as they came
      }
      std::vector<std::shared_ptr<chunk_slot>> slots;
      for (std::uint32_t i = first; i <= limit && i < chunk_count && i - first < run_chunks; ++i) {
        const auto k = key_of(d, i);
        if (i != first) {
          const std::size_t rel = i - present_base;
          if (rel < present.size() && present[rel]) break;
          if (inflight_.contains(k) || completed_.contains(k) || unstored_.contains(k)) break;
        }
        slots.push_back(add_slot_locked(k, meta, i, why));
      }
      started = make_run_locked(std::move(slots), why);
    }
    ++stats_.fills_started;
  }
  *run = static_cast<std::uint32_t>(started->slots.size());
  auto joined = started->slots.front();
  asio::co_spawn(ex, holding(client, fill(client, repository, d, meta, std::move(started))),
                 asio::detached);
  return joined;
}

std::shared_ptr<blob_source::fill_run> blob_source::make_run_locked(
    std::vector<std::shared_ptr<chunk_slot>> slots, fill_for why) {
  auto run = std::make_shared<fill_run>();
  run->slots = std::move(slots);
  run->end = run->slots.size();
  run->why = why;
  if (demand(why)) ++demand_fills_;
  for (auto& s : run->slots) s->owner = run;
  return run;
}

// A run's slots are held by the run until it ends, and its chunk buffers with them: a chunk
// whose store write has finished no longer needs the run's hold (readers reading it hold the
// slot themselves; later ones read the store). Before, each run kept every chunk it had
// received until its last was stored — with parallel_runs runs, most of a fill's memory.
void blob_source::let_go(fill_run& run, std::size_t index) {
  std::lock_guard lock(run.mutex);  // take_over_locked looks through the run's slots
  run.slots[index].reset();
}

std::shared_ptr<blob_source::fill_run> blob_source::take_over_locked(
    const std::shared_ptr<chunk_slot>& slot, std::uint32_t chunk_size) {
  auto owner = slot->owner.lock();
  if (!owner) return nullptr;
  std::vector<std::shared_ptr<chunk_slot>> taken;
  {
    std::lock_guard lock(owner->mutex);
    const auto at = static_cast<std::size_t>(
        std::find(owner->slots.begin(), owner->slots.end(), slot) - owner->slots.begin());
    if (at >= owner->end || at <= owner->receiving) return nullptr;  // its bytes come next
    std::uint64_t before = 0;  // the owner's bytes still to arrive before the slot's
    for (std::size_t k = owner->receiving; k < at; ++k) {
      auto& s = *owner->slots[k];
      std::lock_guard slot_lock(s.mutex);
      before += s.expected - s.data.size();
    }
    if (before < chunk_size / 2) return nullptr;  // it would come sooner than a new request's
    taken.assign(owner->slots.begin() + static_cast<std::ptrdiff_t>(at),
                 owner->slots.begin() + static_cast<std::ptrdiff_t>(owner->end));
    owner->end = at;
  }
  // The reader's chunk first; the ones after it stay background work another reader may take.
  return make_run_locked(std::move(taken), fill_for::reader);
}

std::shared_ptr<blob_source::chunk_slot> blob_source::add_slot_locked(const std::string& key,
                                                                      const described_blob& meta,
                                                                      std::uint32_t index,
                                                                      fill_for why) {
  auto slot = std::make_shared<chunk_slot>();
  slot->prefetch = why == fill_for::prefetch;
  slot->background = !demand(why);
  slot->chunk = index;
  slot->expected = static_cast<std::size_t>(meta.chunk_interval(index).length());
  inflight_.emplace(key, slot);
  return slot;
}

void blob_source::refuse_multi_range(const registry::upstream_client& client) {
  std::lock_guard lock(mutex_);
  single_range_only_.insert(client.settings().name);
}

namespace {

// The slots' chunks, ascending, as runs of consecutive chunks: one range each. Several runs
// (a prefetch batch) make a multi-range request, answered by a multipart/byteranges 206.
template <typename Slots>
std::vector<oci::byte_range> run_ranges(const Slots& slots, std::uint64_t chunk_size) {
  std::vector<oci::byte_interval> runs;
  for (std::size_t k = 0; k < slots.size(); ++k) {
    const auto chunk =
        oci::byte_interval::at(std::uint64_t{slots[k]->chunk} * chunk_size, slots[k]->expected);
    if (k > 0 && slots[k]->chunk == slots[k - 1]->chunk + 1) {
      runs.back().end = chunk.end;
    } else {
      runs.push_back(chunk);
    }
  }
  // The request's Range header: HTTP's closed ranges.
  std::vector<oci::byte_range> ranges;
  ranges.reserve(runs.size());
  for (const auto& run : runs) ranges.emplace_back(run);
  return ranges;
}

}  // namespace

// How far one fill got through its slots.
struct blob_source::fill_progress {
  std::size_t index = 0;                  // slot being filled
  std::size_t end = 0;                    // slots [0, end) are the fill's (fill_run::end)
  std::size_t have = 0;                   // bytes of slots[index] so far
  std::size_t unwritten = 0;              // slots before this one are stored (or failed)
  std::string why;                        // why the fill stopped short
  std::string_view reason = "transport";  // for the metric, when `why` is set
};

asio::awaitable<void> blob_source::fill(registry::upstream_client& client, std::string repository,
                                        oci::digest d, described_blob meta,
                                        std::shared_ptr<fill_run> run) {
  const auto& slots = run->slots;
  const auto ranges = run_ranges(slots, meta.chunk_size);
  const std::uint32_t first_chunk = slots.front()->chunk;  // for the log: slots are let go
  const std::uint32_t last_chunk = slots.back()->chunk;
  const std::uint64_t generation = purge_generation(d);
  const auto t_start = std::chrono::steady_clock::now();
  auto body = co_await registry::get_blob_ranges(client, repository, d, ranges, meta.size);
  const auto t_header = std::chrono::steady_clock::now();
  const auto ex = co_await asio::this_coro::executor;
  if (body.several_ranges_refused()) refuse_multi_range(client);
  if (body.size_contradicted()) forget_size(client, d);  // the next read asks again

  fill_progress progress;
  progress.end = slots.size();
  std::vector<registry::blob_piece> pieces;
  while (progress.why.empty() && progress.index < progress.end) {
    // A completion's fill gives way to clients' (checked here first: a piece is 64 KiB).
    if (run->why == fill_for::background && demand_fills_.load() > 0) {
      co_await yield_to_demand(*run, progress);
    }
    if (!co_await body.next(pieces)) {
      progress.why = body.error();
      progress.reason = body.error_kind();
      break;
    }
    for (const auto& piece : pieces) {
      take_piece(ex, client, d, meta, *run, generation, piece, progress);
      if (!progress.why.empty()) break;
    }
    // At most write_behind completed chunks' store writes run behind the reading.
    for (; progress.index - progress.unwritten > write_behind; ++progress.unwritten) {
      (void)co_await wait_slot(*slots[progress.unwritten], true);
      let_go(*run, progress.unwritten);
    }
  }
  {
    // No more take-overs: what is left of the fill is failed below.
    std::lock_guard lock(run->mutex);
    progress.end = run->end;
    run->end = progress.index;
  }
  // The body's rest is read only when every slot was the fill's; else the connection goes.
  if (progress.why.empty() && progress.end == slots.size()) co_await body.finish();
  const auto t_body = std::chrono::steady_clock::now();
  for (; progress.unwritten < progress.index; ++progress.unwritten) {
    (void)co_await wait_slot(*slots[progress.unwritten], true);
    let_go(*run, progress.unwritten);
  }
  if (log::enabled(log::level::debug)) {  // where a fill's time went
    const auto ms = [t_start](auto t) {
      return std::chrono::duration_cast<std::chrono::microseconds>(t - t_start).count() / 1000.0;
    };
    log::debug("cache", "fill of ", d.str(), " chunks ", first_chunk, "-", last_chunk, " (",
               slots.size(), " in ", ranges.size(), " ranges): header after ", ms(t_header),
               " ms, body ", ms(t_body), " ms, stored ", ms(std::chrono::steady_clock::now()),
               " ms");
  }
  if (progress.index < progress.end) {
    log::warn("cache", "fill of ", d.str(), " from chunk ", slots[progress.index]->chunk,
              " failed: ", progress.why);
    if (auto* m = client.metrics()) m->fill_failure(progress.reason);
  }
  for (auto index = progress.index; index < progress.end; ++index) {
    if (body.retries_spent()) {
      std::lock_guard lock(slots[index]->mutex);
      slots[index]->retries_spent = true;
    }
    finish_slot(d, slots[index]->chunk, *slots[index], true, false);
  }
  if (demand(run->why)) demand_fill_ended();
}

// Demand first: a completion's fill stops reading its response while clients' fills are in
// flight and no reader waits for any chunk it still has to receive, so that the upstream's
// time, the link and this process's CPU go to what clients wait for (TCP's window stops the
// upstream sending meanwhile). It reads on when the last client's fill ends, when a reader
// joins one of its chunks, or after max_yield, whichever comes first. Prefetch never gives
// way: it fetches what a start reads next, and on a link limited per connection a paused
// prefetch only loses time (second lazy starts took 1.3-1.4x as long: docs/benchmarks.md).
asio::awaitable<void> blob_source::yield_to_demand(fill_run& run, const fill_progress& progress) {
  const auto ex = co_await asio::this_coro::executor;
  auto wait = std::make_shared<wakeup>(ex, 1);
  {
    std::lock_guard lock(mutex_);
    if (demand_fills_.load() == 0 || wanted_locked(run, progress.index)) co_return;
    yielding_->waiters.push_back(wait);
    ++stats_.background_yields;
  }
  asio::steady_timer timer(ex);
  timer.expires_after(max_yield);
  timer.async_wait([wait](const boost::system::error_code& ec) {
    if (!ec) (void)wait->try_send(boost::system::error_code{});
  });
  (void)co_await wait->async_receive(use_nothrow);
  timer.cancel();
  std::lock_guard lock(mutex_);  // after max_yield it is still listed: clients' fills go on
  std::erase(yielding_->waiters, wait);
}

bool blob_source::wanted_locked(fill_run& run, std::size_t from) const {
  std::lock_guard lock(run.mutex);
  for (auto k = from; k < run.end; ++k) {
    if (run.slots[k] && !run.slots[k]->background) return true;
  }
  return false;
}

void blob_source::wake_yielding_locked() {
  for (auto& w : yielding_->waiters) (void)w->try_send(boost::system::error_code{});
  yielding_->waiters.clear();
}

void blob_source::demand_fill_ended() {
  if (--demand_fills_ > 0) return;
  std::lock_guard lock(mutex_);
  if (demand_fills_.load() == 0) wake_yielding_locked();
}

void blob_source::take_piece(const asio::any_io_executor& ex, registry::upstream_client& client,
                             const oci::digest& d, const described_blob& meta, fill_run& run,
                             std::uint64_t generation, const registry::blob_piece& piece,
                             fill_progress& progress) {
  const auto& slots = run.slots;
  const std::uint64_t cs = meta.chunk_size;
  std::uint64_t at = piece.offset;
  const char* p = piece.data;
  std::size_t left = piece.size;
  while (left > 0 && progress.index < progress.end) {
    auto& slot = *slots[progress.index];
    const std::uint64_t expect = std::uint64_t{slot.chunk} * cs + progress.have;
    if (at < expect) {  // bytes between our ranges (or before them): not ours
      const auto s = static_cast<std::size_t>(std::min<std::uint64_t>(expect - at, left));
      at += s;
      p += s;
      left -= s;
      continue;
    }
    if (at > expect) {
      progress.why =
          "upstream skipped bytes " + std::to_string(expect) + "-" + std::to_string(at - 1);
      progress.reason = "content_range";
      return;
    }
    std::vector<std::shared_ptr<wakeup>> waiters;
    bool full = false;
    std::size_t take = 0;
    {
      std::lock_guard lock(slot.mutex);
      if (slot.data.capacity() < slot.expected) {
        if (slot.data.empty()) {
          slot.data = chunk_buffers().take(slot.expected);
        } else {
          slot.data.reserve(slot.expected);
        }
      }
      take = std::min(left, slot.expected - slot.data.size());
      slot.data.append(p, take);
      full = slot.data.size() == slot.expected;
      waiters.swap(slot.waiters);
    }
    chunk_slot::wake(waiters);
    p += take;
    at += take;
    left -= take;
    progress.have += take;
    if (!full) continue;
    // Complete: its store write goes on beside the reading of the next chunks (readers
    // already have its bytes); fill() waits when too many run behind.
    asio::co_spawn(
        ex, store_chunk(d, meta, slot.chunk, slots[progress.index], generation, origin_of(client)),
        asio::detached);
    ++progress.index;
    progress.have = 0;
    std::lock_guard lock(run.mutex);  // a reader may have taken the slots from here over
    run.receiving = progress.index;
    progress.end = run.end;
  }
}

asio::awaitable<void> blob_source::store_chunk(oci::digest d, described_blob meta,
                                               std::uint32_t chunk,
                                               std::shared_ptr<chunk_slot> slot,
                                               std::uint64_t generation, cache::origin_id origin) {
  // The slot is complete: no more writes to slot->data, so the pool thread may read it
  // unlocked.
  auto stored = cache::status::not_found("blob was purged during the fill");
  bool wanted = false;  // a client's read waits for the slot
  {
    std::lock_guard lock(mutex_);
    wanted = !slot->background;
  }
  co_await write_turns_->take(wanted);
  if (purge_generation(d) == generation) {
    stored = co_await pool_.run([this, &d, &meta, chunk, &slot, origin, generation] {
      bool created = false;
      auto s = store_.put_chunk(d, meta.size, meta.chunk_size, chunk, slot->data, origin, &created);
      if (created) slot->mark->created = true;
      // The blob's hash takes the chunk now, in this turn, if a whole read is waiting for it.
      if (auto h = hash_to_feed(d, generation)) advance(*h, slot, s.ok());
      return s;
    });
    if (purge_generation(d) != generation) {  // purged while we wrote: undo
      (void)co_await pool_.run([this, &d] { return store_.erase_blob(d); });
      stored = cache::status::not_found("blob was purged during the fill");
    }
  }
  write_turns_->give();
  if (stored.ok()) store_refusing_ = false;
  if (!stored.ok() && stored.code != cache::errc::not_found) {
    store_refusing_ = true;
    // A full disk fails every chunk: one line, then one a minute with the count.
    if (const auto quiet = store_error_log().admit()) {
      log::warn("cache", "storing chunk ", chunk, " of ", d.str(), ": ", stored.message,
                *quiet > 0 ? " (" + std::to_string(*quiet) + " more since the last line)" : "");
    }
    std::lock_guard lock(mutex_);
    ++stats_.store_errors;
    // Kept for readers behind the fill (and the blob's hash) while the blob is read: they
    // read these bytes, not a refetch of them.
    const auto key = key_of(d, chunk);
    if (readers_.contains(d.str()) && unstored_.emplace(key, slot).second) {
      unstored_order_.push_back(key);
    }
    while (unstored_order_.size() > keep_unstored()) {
      unstored_.erase(unstored_order_.front());
      unstored_order_.pop_front();
    }
  }
  finish_slot(d, chunk, *slot, false, stored.ok());  // wakes the fill if it waits for it
}

void blob_source::finish_slot(const oci::digest& d, std::uint32_t index, chunk_slot& slot,
                              bool failed, bool stored) {
  {
    std::lock_guard lock(mutex_);
    const auto k = key_of(d, index);
    inflight_.erase(k);
    if (stored) {
      if (completed_.size() >= max_remembered) completed_.clear();
      completed_.insert(k);
    }
    if (!failed) ++stats_.chunks_filled;
  }
  std::vector<std::shared_ptr<wakeup>> waiters;
  bool unread_prefetch = false;
  {
    std::lock_guard lock(slot.mutex);
    if (failed) slot.failed = true;
    slot.done = true;
    unread_prefetch = slot.prefetch && !slot.claimed && stored;
    waiters.swap(slot.waiters);
  }
  if (slot.prefetch && !failed) {
    std::lock_guard lock(mutex_);
    stats_.prefetch_fetched_bytes += slot.expected;
    if (unread_prefetch) {
      if (prefetched_.size() >= max_remembered) prefetched_.clear();
      prefetched_.insert(key_of(d, index));
    }
  }
  chunk_slot::wake(waiters);
}

asio::awaitable<blob_source::slot_read> blob_source::stream_slot(chunk_slot& slot,
                                                                 oci::byte_interval part,
                                                                 const sink& out,
                                                                 std::size_t* delivered) {
  auto ex = co_await asio::this_coro::executor;
  auto pos = static_cast<std::size_t>(part.begin);
  const auto end = static_cast<std::size_t>(part.end);
  while (pos < end) {
    std::shared_ptr<wakeup> wait;
    // Bytes below data.size() never change and data never moves (its capacity is reserved
    // before the first byte), so they are handed out in place, not copied.
    const char* piece = nullptr;
    std::size_t n = 0;
    {
      std::lock_guard lock(slot.mutex);
      const std::size_t available = slot.data.size();
      if (available > pos) {
        n = std::min(std::min(available, end) - pos, max_piece);
        piece = slot.data.data() + pos;
      } else if (slot.failed) {
        co_return slot_read::slot_failed;
      } else {
        wait = std::make_shared<wakeup>(ex, 1);
        slot.waiters.push_back(wait);
      }
    }
    if (wait) {
      (void)co_await wait->async_receive(use_nothrow);
      continue;
    }
    if (!co_await out(piece, n)) co_return slot_read::sink_failed;
    pos += n;
    *delivered += n;
  }
  co_return slot_read::complete;
}

// Counts a whole read of a blob while it runs; `alone`: no other whole read of it ran when
// it began.
struct blob_source::whole_read {
  blob_source& source;
  std::string key;
  bool alone = true;
  whole_read(blob_source& s, const oci::digest& d) : source(s), key(d.str()) {
    std::lock_guard lock(source.mutex_);
    alone = source.whole_readers_[key]++ == 0;
  }
  ~whole_read() {
    std::lock_guard lock(source.mutex_);
    if (--source.whole_readers_[key] == 0) source.whole_readers_.erase(key);
  }
  whole_read(const whole_read&) = delete;
  whole_read& operator=(const whole_read&) = delete;
};

void blob_source::drop_held_locked(const std::string& digest) {
  if (unstored_.empty()) return;  // nearly always: called as each blob's last read ends
  const std::string prefix = digest + "#";
  std::erase_if(unstored_, [&](const auto& e) { return e.first.starts_with(prefix); });
  std::erase_if(unstored_order_, [&](const std::string& k) { return k.starts_with(prefix); });
}

// A blob pinned while read: eviction to make room for other blobs skips it.
struct blob_source::pin {
  blob_source& source;
  std::string key;
  pin(blob_source& s, std::string k) : source(s), key(std::move(k)) {
    std::lock_guard lock(source.mutex_);
    ++source.readers_[key];
  }
  ~pin() {
    std::lock_guard lock(source.mutex_);
    if (--source.readers_[key] != 0) return;
    source.readers_.erase(key);
    source.drop_held_locked(key);  // held for readers of the blob: there are none now
  }
  pin(const pin&) = delete;
  pin& operator=(const pin&) = delete;
};

// What a read knows of its chunks before it starts: which ones the store holds, the bytes of
// those it read already (a read of a few chunks reads them at once), and which ones it starts
// fills for (for the report).
struct blob_source::read_plan {
  std::uint32_t first = 0;  // the read's first and last chunk
  std::uint32_t last = 0;
  std::vector<bool> present;               // by chunk - first
  std::vector<cache::shared_chunk> early;  // by chunk - first; empty unless few chunks
  std::vector<bool> mine;                  // by chunk - first
  void mark_mine(std::uint32_t from, std::uint32_t count) {
    for (std::uint32_t k = from; k < from + count && k <= last; ++k) mine[k - first] = true;
  }
};

asio::awaitable<blob_source::read_plan> blob_source::plan_read(const oci::digest& d,
                                                               const described_blob& meta,
                                                               oci::byte_interval wanted) {
  const std::uint32_t cs = meta.chunk_size;
  read_plan plan;
  plan.first = static_cast<std::uint32_t>(wanted.begin / cs);
  plan.last = static_cast<std::uint32_t>((wanted.end - 1) / cs);
  // Which chunks the store has decides what to fetch ahead (the store answers from memory).
  // A read of a few chunks (random ranges, perhaps crossing a chunk boundary) reads those
  // chunks at once instead, in the same trip to the blocking pool. Chunks in the memory cache
  // are taken here, on the I/O thread: a read they answer whole (with the access recorded
  // without waiting) never goes to the blocking pool.
  const std::uint32_t first = plan.first;
  const std::uint32_t count = plan.last - first + 1;
  const bool few = count <= few_chunks;
  plan.present.assign(count, false);
  plan.mine.assign(count, false);
  plan.early.resize(few ? count : 0);
  auto& early = plan.early;
  auto& present = plan.present;
  bool all_in_memory = few;
  for (std::uint32_t k = 0; k < early.size(); ++k) {
    auto held = store_.memory_chunk(d, first + k);
    if (held && held->size() == meta.chunk_interval(first + k).length()) {
      early[k] = std::move(held);
      present[k] = true;
    } else {
      all_in_memory = false;
    }
  }
  bool touched = all_in_memory && store_.try_touch(d);
  const bool on_pool = !touched;
  auto probe = [this, &d, &meta, &early, &present, &touched, few, first, wanted] {
    // Not behind a store writer (it holds the lock through a RocksDB write stall): if one
    // holds it, the touch is made after the read.
    if (!touched) touched = store_.try_touch(d);
    if (!few) return store_.present_chunks(d);
    for (std::uint32_t k = 0; k < early.size(); ++k) {
      if (early[k]) continue;
      const oci::byte_interval chunk = meta.chunk_interval(first + k);
      const bool partial = wanted.begin > chunk.begin || wanted.end < chunk.end;
      cache::shared_chunk held;
      const auto got = store_.get_chunk_shared(d, first + k, partial, held);
      if (got.ok() && held && held->size() == chunk.length()) {
        early[k] = std::move(held);
        present[k] = true;
      } else if (got.code == cache::errc::corruption) {
        note_store_changed(d);  // removed: what is stored next may be other bytes
      }
    }
    return std::vector<std::uint32_t>{};
  };
  std::vector<std::uint32_t> listed;
  if (on_pool) listed = co_await pool_.run(probe);
  if (!touched) {
    const auto ex = co_await asio::this_coro::executor;
    asio::co_spawn(ex, touch_later(d), asio::detached);
  }
  for (auto i : listed) {
    if (i >= first && i <= plan.last) present[i - first] = true;
  }
  co_return plan;
}

asio::awaitable<void> blob_source::touch_later(oci::digest d) {
  co_await pool_.run([this, &d] { store_.touch(d); });
}

asio::awaitable<blob_source::stored_read> blob_source::read_stored(
    const oci::digest& d, std::uint32_t i, oci::byte_interval part, bool admit, std::size_t length,
    read_plan& plan, const sink& out, read_report* report, const chunk_slot* before) {
  cache::shared_chunk chunk;
  auto got = cache::status::success();
  if (!plan.early.empty() && plan.early[i - plan.first]) {
    chunk = std::move(plan.early[i - plan.first]);  // read by plan_read
  } else if (auto held = store_.memory_chunk(d, i); held && held->size() == length) {
    chunk = std::move(held);  // in memory (kept, or another reader's): no pool round trip
  } else {
    got = co_await pool_.run(
        [this, &d, i, admit, &chunk] { return store_.get_chunk_shared(d, i, admit, chunk); });
  }
  if (!got.ok() || !chunk || chunk->size() != length) {
    if (!got.ok() && got.code != cache::errc::not_found) {
      log::warn("cache", "chunk ", i, " of ", d.str(), ": ", got.message, "; refetching");
    }
    // Completed once but gone since (evicted, trimmed): the next attempt fills it.
    std::lock_guard lock(mutex_);
    completed_.erase(key_of(d, i));
    note_store_changed_locked(d, got.code == cache::errc::not_found);
    co_return stored_read::missing;
  }
  if (before != nullptr &&
      std::memcmp(chunk->data(), before->data.data(), static_cast<std::size_t>(part.begin)) != 0) {
    co_return stored_read::differs;  // not the bytes the failed slot handed out
  }
  bool prefetched = false;
  {
    std::lock_guard lock(mutex_);
    ++stats_.chunks_from_store;
    // Only client reads (they pass a report) count as using what prefetch fetched.
    if (report != nullptr && !prefetched_.empty() && prefetched_.erase(key_of(d, i)) != 0) {
      stats_.prefetch_used_bytes += length;
      prefetched = true;
    }
  }
  if (!co_await out(chunk->data() + part.begin, part.length())) co_return stored_read::sink_failed;
  // A chunk this read's own fill stored before the read got to it still counts as fetched
  // for this read.
  if (report != nullptr) {
    (plan.mine[i - plan.first] ? report->filled_bytes
     : prefetched              ? report->prefetch_bytes
                               : report->store_bytes) += part.length();
  }
  co_return stored_read::delivered;
}

asio::awaitable<bool> blob_source::read(registry::upstream_client& client,
                                        const std::string& repository, const oci::digest& d,
                                        const described_blob& meta, oci::byte_interval bytes,
                                        const sink& out, read_report* report) {
  co_return co_await read_for(client, repository, d, meta, bytes, out, report, fill_for::reader);
}

void blob_source::fill_ahead(const asio::any_io_executor& ex, registry::upstream_client& client,
                             const std::string& repository, const oci::digest& d,
                             const described_blob& meta, read_plan& plan, std::uint32_t i,
                             std::uint32_t& ahead, fill_for why) {
  const auto run_chunks =
      static_cast<std::uint32_t>(std::max<std::uint64_t>(1, settings_.run_bytes / meta.chunk_size));
  const bool background = !demand(why);
  // Up to `parallel_runs` runs in flight for the missing chunks ahead of chunk i; in the
  // background only one while clients' fills are in flight (they go first).
  const std::uint64_t reach = background && demand_fills_.load() > 0
                                  ? run_chunks
                                  : std::uint64_t{settings_.parallel_runs} * run_chunks;
  for (std::uint32_t k = std::max(ahead, i + 1); k <= plan.last && k < i + reach;) {
    std::uint32_t run = 0;
    if (!plan.present[k - plan.first]) {
      (void)join_or_start(ex, client, repository, d, meta, k, plan.last, plan.present, plan.first,
                          &run, background ? why : fill_for::read_ahead);
      plan.mark_mine(k, run);
    }
    k += std::max<std::uint32_t>(run, 1);
    ahead = k;
  }
}

asio::awaitable<bool> blob_source::read_for(registry::upstream_client& client,
                                            const std::string& repository, const oci::digest& d,
                                            const described_blob& meta, oci::byte_interval bytes,
                                            const sink& out, read_report* report, fill_for why,
                                            sent_bytes* sent) {
  if (!claim(origin_of(client), d, meta)) {
    co_return co_await read_direct(client, repository, d, meta, bytes, out, report);
  }
  auto ex = co_await asio::this_coro::executor;
  const pin pinned(*this, d.str());  // eviction to make room for other blobs skips it
  auto plan = co_await plan_read(d, meta, bytes);
  const std::uint32_t first = plan.first;
  const std::uint32_t last = plan.last;
  std::uint32_t ahead = first;  // chunks before this have had their fill decided

  for (std::uint32_t i = first; i <= last; ++i) {
    const oci::byte_interval chunk = meta.chunk_interval(i);
    const auto length = static_cast<std::size_t>(chunk.length());
    // The bytes this read wants of chunk i, as offsets within the chunk.
    const oci::byte_interval wanted = bytes.intersect(chunk);
    const oci::byte_interval part{wanted.begin - chunk.begin, wanted.end - chunk.begin};

    fill_ahead(ex, client, repository, d, meta, plan, i, ahead, why);

    bool done = false;
    bool from_store = plan.present[i - first];
    // Bytes [part.begin, from) of this chunk reached `out` already: a fill that failed
    // part-way through handed them over, and the next attempt resumes after them.
    std::uint64_t from = part.begin;
    // For a whole read (`sent`): the failed slot those bytes came from. The bytes after them
    // come from another slot or the store, and must continue the same bytes.
    std::shared_ptr<chunk_slot> before;
    for (int attempt = 0; attempt < max_attempts && !done; ++attempt) {
      std::shared_ptr<chunk_slot> slot;
      if (!from_store) {
        std::uint32_t run = 0;
        slot =
            join_or_start(ex, client, repository, d, meta, i, last, plan.present, first, &run, why);
        plan.mark_mine(i, run);
        if (!slot) from_store = true;  // filled into the store just now
      }
      if (from_store) {
        from_store = false;  // if this fails, fill it
        // Part of a chunk (random ranges, lazy pulls) is worth keeping in memory.
        const bool admit = part.begin != 0 || part.end != length;
        const auto got = co_await read_stored(d, i, {from, part.end}, admit, length, plan, out,
                                              report, before.get());
        if (got == stored_read::differs) sent->differs = true;
        if (got == stored_read::sink_failed || got == stored_read::differs) co_return false;
        done = got == stored_read::delivered;
        if (done && sent != nullptr) sent->from[i] = nullptr;  // the store's bytes
        continue;
      }
      if (before && from > 0) {
        // The chunk's bytes so far came from a slot that failed: this one must repeat them.
        const auto n = static_cast<std::size_t>(from);
        if (!co_await arrived(*slot, n)) continue;
        sent->differs = std::memcmp(slot->data.data(), before->data.data(), n) != 0;
        if (sent->differs) co_return false;
      }
      const bool prefetched = report != nullptr && !plan.mine[i - first] && claim_prefetched(*slot);
      std::size_t streamed = 0;
      const auto rc = co_await stream_slot(*slot, {from, part.end}, out, &streamed);
      if (rc == slot_read::sink_failed) co_return false;
      done = rc == slot_read::complete;
      if (report != nullptr) {
        (plan.mine[i - first] ? report->filled_bytes
         : prefetched         ? report->prefetch_bytes
                              : report->joined_bytes) += streamed;
      }
      from += streamed;
      if (sent != nullptr) {
        if (done) sent->from[i] = slot->mark;
        if (streamed > 0) before = slot;  // its bytes [0, from) were sent
      }
      if (rc == slot_read::slot_failed) {
        std::lock_guard lock(slot->mutex);
        if (slot->retries_spent) break;  // the upstream client's retries were spent on it
      }
    }
    if (!done) co_return false;
  }
  co_return true;
}

asio::awaitable<bool> blob_source::read_direct(registry::upstream_client& client,
                                               const std::string& repository, const oci::digest& d,
                                               const described_blob& meta, oci::byte_interval bytes,
                                               const sink& out, read_report* report) {
  {
    std::lock_guard lock(mutex_);
    ++stats_.foreign_reads;
  }
  const std::vector<oci::byte_range> ranges{oci::byte_range(bytes)};
  auto body = co_await registry::get_blob_ranges(client, repository, d, ranges, meta.size);
  std::vector<registry::blob_piece> pieces;
  std::uint64_t at = bytes.begin;  // the next byte `out` wants
  while (at < bytes.end) {
    if (!co_await body.next(pieces)) co_return false;
    for (const auto& piece : pieces) {
      const std::uint64_t lo = std::max<std::uint64_t>(at, piece.offset);
      const std::uint64_t end = std::min<std::uint64_t>(piece.offset + piece.size, bytes.end);
      if (lo > at) co_return false;  // a gap: never in one stream of bytes
      if (lo >= end) continue;
      if (!co_await out(piece.data + (lo - piece.offset), static_cast<std::size_t>(end - lo))) {
        co_return false;
      }
      if (report != nullptr) report->filled_bytes += end - lo;
      at = end;
    }
  }
  co_return true;
}

asio::awaitable<bool> blob_source::wait_slot(chunk_slot& slot, bool stored) {
  auto ex = co_await asio::this_coro::executor;
  for (;;) {
    std::shared_ptr<wakeup> wait;
    {
      std::lock_guard lock(slot.mutex);
      if (slot.failed) co_return false;
      if (slot.done) co_return true;
      // Every byte arrived: its store write goes on behind; the caller may move on.
      if (!stored && slot.data.size() == slot.expected) co_return true;
      wait = std::make_shared<wakeup>(ex, 1);
      slot.waiters.push_back(wait);
    }
    (void)co_await wait->async_receive(use_nothrow);
  }
}

bool blob_source::claim_prefetched(chunk_slot& slot) {
  {
    std::lock_guard lock(slot.mutex);
    if (!slot.prefetch || slot.claimed) return false;
    slot.claimed = true;
  }
  std::lock_guard lock(mutex_);
  stats_.prefetch_used_bytes += slot.expected;
  return true;
}

asio::awaitable<std::vector<listed_blob>> blob_source::describe_listed(
    const std::vector<oci::descriptor>& blobs) {
  const auto* list = &blobs;
  co_return co_await pool_.run([this, list] {
    std::vector<listed_blob> out;
    out.reserve(list->size());
    for (const auto& b : *list) {
      listed_blob l;
      if (auto record = store_.blob(b.digest)) {
        l.meta = described_blob::stored(*record);
        if (!record->verified && record->chunk_size > 0) {
          l.present.assign((record->size + record->chunk_size - 1) / record->chunk_size, false);
          for (auto i : store_.present_chunks(b.digest)) {
            if (i < l.present.size()) l.present[i] = true;
          }
        }
      } else {
        l.meta = described_blob::unstored(b.size, settings_.chunk_size);
      }
      out.push_back(std::move(l));
    }
    return out;
  });
}

asio::awaitable<bool> blob_source::prefetch(registry::upstream_client& client,
                                            const std::string& repository, const oci::digest& d,
                                            const listed_blob& b, std::uint32_t first,
                                            std::uint32_t last, const std::atomic<bool>* cancel) {
  const described_blob& meta = b.meta;
  if (meta.verified || meta.size == 0 || meta.chunk_size == 0) co_return true;
  if (!claim(origin_of(client), d, meta)) co_return true;  // another upstream's: not ours to fill
  const std::uint64_t chunk_count = (meta.size + meta.chunk_size - 1) / meta.chunk_size;
  if (first >= chunk_count) co_return true;
  last = static_cast<std::uint32_t>(std::min<std::uint64_t>(last, chunk_count - 1));
  if (last < first) co_return true;
  auto ex = co_await asio::this_coro::executor;
  for (std::uint32_t i = first; i <= last; ++i) {
    if (i < b.present.size() && b.present[i]) continue;
    if (cancel != nullptr && cancel->load()) co_return true;
    std::uint32_t run = 0;
    auto slot = join_or_start(ex, client, repository, d, meta, i, last, b.present, 0, &run,
                              fill_for::prefetch);
    if (!slot) continue;  // stored meanwhile
    if (!co_await wait_slot(*slot)) co_return false;
  }
  co_return true;
}

bool blob_source::multi_range(const registry::upstream_client& client) const {
  std::lock_guard lock(mutex_);
  return !single_range_only_.contains(client.settings().name);
}

asio::awaitable<bool> blob_source::prefetch_batch(registry::upstream_client& client,
                                                  const std::string& repository,
                                                  const oci::digest& d, const listed_blob& b,
                                                  std::vector<std::uint32_t> chunks,
                                                  const std::atomic<bool>* cancel) {
  const described_blob& meta = b.meta;
  if (meta.verified || meta.size == 0 || meta.chunk_size == 0 || chunks.empty()) co_return true;
  if (!claim(origin_of(client), d, meta)) co_return true;
  const std::uint64_t chunk_count = (meta.size + meta.chunk_size - 1) / meta.chunk_size;
  std::erase_if(chunks, [&](std::uint32_t c) {
    return c >= chunk_count || (c < b.present.size() && b.present[c]);
  });
  if (chunks.empty()) co_return true;
  // One run at a time, in the order given (the profile's).
  auto one_by_one = [&](std::vector<std::uint32_t> list) -> asio::awaitable<bool> {
    bool ok = true;
    for (std::size_t k = 0; k < list.size();) {
      std::size_t e = k;
      while (e + 1 < list.size() && list[e + 1] == list[e] + 1) ++e;
      if (cancel != nullptr && cancel->load()) co_return true;
      const bool got = co_await prefetch(client, repository, d, b, list[k], list[e], cancel);
      ok = got && ok;
      k = e + 1;
    }
    co_return ok;
  };
  if (!multi_range(client)) co_return co_await one_by_one(std::move(chunks));
  std::vector<std::uint32_t> sorted = chunks;
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  std::vector<std::shared_ptr<chunk_slot>> mine;
  std::vector<std::shared_ptr<chunk_slot>> joined;
  std::shared_ptr<fill_run> started;
  {
    std::lock_guard lock(mutex_);
    for (const std::uint32_t c : sorted) {
      const auto k = key_of(d, c);
      if (auto it = inflight_.find(k); it != inflight_.end()) {
        joined.push_back(it->second);
        continue;
      }
      if (!completed_.contains(k)) mine.push_back(add_slot_locked(k, meta, c, fill_for::prefetch));
    }
    if (!mine.empty()) {
      ++stats_.fills_started;
      started = make_run_locked(mine, fill_for::prefetch);
    }
  }
  if (started) {
    auto ex = co_await asio::this_coro::executor;
    asio::co_spawn(ex, holding(client, fill(client, repository, d, meta, std::move(started))),
                   asio::detached);
  }
  bool ok = true;
  std::vector<std::uint32_t> failed;
  for (auto& s : mine) {
    if (!co_await wait_slot(*s)) failed.push_back(s->chunk);
  }
  for (auto& s : joined) ok = co_await wait_slot(*s) && ok;
  if (failed.empty()) co_return ok;
  // The upstream turned out not to serve several ranges at once (blob storage behind a
  // redirect rarely does): the chunks it did not send, one run at a time.
  if (multi_range(client)) co_return false;
  std::erase_if(chunks, [&](std::uint32_t c) {
    return std::find(failed.begin(), failed.end(), c) == failed.end();
  });
  const bool again = co_await one_by_one(std::move(chunks));
  co_return again&& ok;
}

asio::awaitable<void> blob_source::complete_later(registry::upstream_client& client,
                                                  const std::string& repository,
                                                  const oci::digest& d,
                                                  const described_blob& meta) {
  if (meta.verified || meta.size == 0 || !claim(origin_of(client), d, meta)) co_return;
  auto ex = co_await asio::this_coro::executor;
  if (!settings_.complete_partial) {
    asio::co_spawn(ex, holding(client, verify_if_whole(client, repository, d, meta)),
                   asio::detached);
    co_return;
  }
  {
    std::lock_guard lock(mutex_);
    if (!completing_.insert(d.str()).second) co_return;
  }
  asio::co_spawn(ex, holding(client, complete(client, repository, d, meta)), asio::detached);
}

asio::awaitable<void> blob_source::verify_if_whole(registry::upstream_client& client,
                                                   std::string repository, oci::digest d,
                                                   described_blob meta) {
  co_await wait_stored(d);  // the read's last chunks may still be landing in the store
  std::optional<cache::blob_record> record;
  if (!store_.try_blob(d, record))
    record = co_await pool_.run([this, &d] { return store_.blob(d); });
  if (!record || record->verified || !record->complete()) co_return;
  {
    std::lock_guard lock(mutex_);
    if (!completing_.insert(d.str()).second) co_return;
  }
  co_await complete(client, std::move(repository), std::move(d), meta);  // from the store alone
}

asio::awaitable<blob_source::verified_read> blob_source::read_whole(
    registry::upstream_client& client, const std::string& repository, const oci::digest& d,
    const described_blob& meta, const sink& out, read_report* report) {
  co_return co_await read_whole_for(client, repository, d, meta, out, report, fill_for::reader);
}

asio::awaitable<blob_source::verified_read> blob_source::read_whole_for(
    registry::upstream_client& client, const std::string& repository, const oci::digest& d,
    const described_blob& meta, const sink& out, read_report* report, fill_for why) {
  if (meta.size == 0) {
    co_return oci::digest_of("", d.algorithm()) == d ? verified_read::verified
                                                     : verified_read::mismatch;
  }
  // A client's whole read of a blob another client's whole read is reading already (a herd)
  // rides the blob's hash; the first hashes itself, as do reads of bytes passed through from
  // another upstream and reads while the store refuses writes (a full disk: chunks the hash
  // took and a reader's may then be two fetches, whose sameness nothing shows). Background
  // completions neither ride nor count: a client's read beside one hashes itself, so a
  // completion's failures (and the evictions it outlives) never fail a client's read that
  // could not show the shared hash took its bytes.
  if (why != fill_for::reader) {
    co_return co_await read_hashing_myself(client, repository, d, meta, out, report, why);
  }
  const whole_read counted(*this, d);
  if (meta.verified || !claim(origin_of(client), d, meta) || store_refusing_.load() ||
      counted.alone) {
    co_return co_await read_hashing_myself(client, repository, d, meta, out, report, why);
  }
  const auto hash = hash_of(d, meta);
  sent_bytes sent;
  sent.from.resize(meta.chunk_count());
  std::uint64_t seen = 0;
  bool mismatch = false;
  bool unproven = false;
  const sink checked = [&](const char* p, std::size_t n) -> asio::awaitable<bool> {
    if (seen + n == meta.size) {  // the last piece is held back until the blob's verdict
      const auto matched = co_await verdict(hash);
      mismatch = matched.has_value() && !*matched;
      unproven = !matched.has_value() || (*matched && !covered(*hash, sent));
      if (mismatch || unproven) co_return false;
    }
    seen += n;
    co_return co_await out(p, n);
  };
  const oci::byte_interval all{0, meta.size};
  const bool ok = co_await read_for(client, repository, d, meta, all, checked, report, why, &sent);
  if (mismatch || sent.differs) {
    co_await purge(client, d);
    co_return verified_read::mismatch;
  }
  if (unproven) {
    log::warn("cache", "a whole read of ", d.str(),
              " could not show it sent the bytes the blob's hash took; failed, not served");
    std::lock_guard lock(mutex_);
    ++stats_.unproven_reads;
  }
  if (!ok) co_return verified_read::failed;
  if (stored_as_hashed(*hash)) co_await mark_verified(client, d);
  co_return verified_read::verified;
}

asio::awaitable<blob_source::verified_read> blob_source::read_hashing_myself(
    registry::upstream_client& client, const std::string& repository, const oci::digest& d,
    const described_blob& meta, const sink& out, read_report* report, fill_for why) {
  oci::hasher hash(d.algorithm());
  std::uint64_t seen = 0;
  bool mismatch = false;
  const sink checked = [&](const char* p, std::size_t n) -> asio::awaitable<bool> {
    if (!meta.verified) {
      hash.update(p, n);
      if (seen + n == meta.size && hash.finish() != d) {  // the last piece is held back
        mismatch = true;
        co_return false;
      }
    }
    seen += n;
    co_return co_await out(p, n);
  };
  const oci::byte_interval all{0, meta.size};
  const bool ok = co_await read_for(client, repository, d, meta, all, checked, report, why);
  if (!meta.verified) {
    std::lock_guard lock(mutex_);
    stats_.hashed_bytes += seen;
  }
  if (mismatch) {
    co_await purge(client, d);
    co_return verified_read::mismatch;
  }
  if (!ok) co_return verified_read::failed;
  if (!meta.verified) co_await mark_verified(client, d);
  co_return verified_read::verified;
}

asio::awaitable<blob_source::verified_read> blob_source::read_verified(
    registry::upstream_client& client, const std::string& repository, const oci::digest& d,
    const described_blob& meta, read_report* report) {
  const sink discard = [](const char*, std::size_t) -> asio::awaitable<bool> { co_return true; };
  co_return co_await read_whole_for(client, repository, d, meta, discard, report,
                                    fill_for::background);
}

asio::awaitable<void> blob_source::complete(registry::upstream_client& client,
                                            std::string repository, oci::digest d,
                                            described_blob meta) {
  const auto result = co_await read_verified(client, repository, d, meta);
  if (result == verified_read::verified) {
    std::lock_guard lock(mutex_);
    ++stats_.verified;
  } else if (result == verified_read::mismatch) {
    log::error("cache", "blob ", d.str(),
               " completed in the background does not match its "
               "digest; purged");
    std::lock_guard lock(mutex_);
    ++stats_.digest_failures;
  } else {
    log::warn("cache", "background completion of ", d.str(), " failed; will retry on a later read");
  }
  std::lock_guard lock(mutex_);
  completing_.erase(d.str());
}

std::uint64_t blob_source::purge_generation(const oci::digest& d) const {
  std::lock_guard lock(mutex_);
  return purge_generation_locked(d);
}

std::uint64_t blob_source::purge_generation_locked(const oci::digest& d) const {
  auto it = purges_.find(d.str());
  return it == purges_.end() ? 0 : it->second;
}

asio::awaitable<void> blob_source::purge(const oci::digest& d) {
  std::shared_ptr<blob_hash> hashing;
  {
    std::lock_guard lock(mutex_);
    ++purges_[d.str()];
    if (auto it = hashes_.find(d.str()); it != hashes_.end()) {
      hashing = it->second.lock();
      hashes_.erase(it);
    }
  }
  if (hashing) {  // its readers' bytes belong to what was purged: none is served whole
    std::lock_guard lock(hashing->mutex);
    if (hashing->result == blob_hash::state::hashing) hashing->result = blob_hash::state::abandoned;
    hashing->wake_locked();
  }
  (void)co_await pool_.run([this, &d] { return store_.erase_blob(d); });
  std::lock_guard lock(mutex_);
  const std::string size_suffix = '\n' + d.str();
  std::erase_if(sizes_, [&](const auto& e) { return e.first.ends_with(size_suffix); });
  owners_.erase(d.str());
  const std::string prefix = d.str() + "#";
  std::erase_if(completed_, [&](const std::string& k) { return k.starts_with(prefix); });
  drop_held_locked(d.str());
}

asio::awaitable<void> blob_source::purge(const registry::upstream_client& client,
                                         const oci::digest& d) {
  // Bytes that were not the digest's: a mirror that served any of them is not asked for it
  // again (registry/mirrors.hpp); the refetch goes to the origin.
  if (auto* mirrors = client.mirrors()) mirrors->state().distrust(d);
  if (!owns(origin_of(client), d)) co_return;  // the bytes read were passed through
  co_await purge(d);
}

asio::awaitable<void> blob_source::wait_stored(const oci::digest& d) {
  for (int bound = 0; bound < 1 << 16; ++bound) {
    std::shared_ptr<chunk_slot> pending;
    {
      std::lock_guard lock(mutex_);
      const std::string prefix = d.str() + "#";
      for (const auto& [key, slot] : inflight_) {
        if (key.starts_with(prefix)) {
          pending = slot;
          break;
        }
      }
    }
    if (!pending) co_return;
    (void)co_await wait_slot(*pending, true);
  }
}

asio::awaitable<void> blob_source::mark_verified(const registry::upstream_client& client,
                                                 const oci::digest& d) {
  if (!owns(origin_of(client), d)) co_return;  // passed through: the store's copy is not it
  // A read is done when its bytes arrived; their store writes may still run (write-behind).
  // The record is marked once they have finished, so that it exists and the mark sticks.
  co_await wait_stored(d);
  const auto marked = co_await pool_.run([this, &d] { return store_.mark_verified(d); });
  if (marked.ok()) {
    std::lock_guard lock(mutex_);
    owners_.erase(d.str());
  }
}

// ---- One hash per blob (blob_hash): who feeds it, who waits for its verdict.

std::shared_ptr<blob_source::blob_hash> blob_source::hash_of(const oci::digest& d,
                                                             const described_blob& meta) {
  std::lock_guard lock(mutex_);
  const auto generation = purge_generation_locked(d);
  auto& entry = hashes_[d.str()];
  if (auto h = entry.lock(); h && h->generation == generation) return h;
  auto h = std::make_shared<blob_hash>(d, generation, meta);
  entry = h;
  if (hashes_.size() > max_remembered) {
    std::erase_if(hashes_, [](const auto& e) { return e.second.expired(); });
  }
  return h;
}

std::shared_ptr<blob_source::blob_hash> blob_source::hash_to_feed(const oci::digest& d,
                                                                  std::uint64_t generation) {
  std::lock_guard lock(mutex_);
  auto it = hashes_.find(d.str());
  if (it == hashes_.end()) return nullptr;
  auto h = it->second.lock();
  return h && h->generation == generation ? h : nullptr;
}

void blob_source::note_store_changed(const oci::digest& d) {
  std::lock_guard lock(mutex_);
  note_store_changed_locked(d, false);
}

void blob_source::note_store_changed_locked(const oci::digest& d, bool merely_gone) {
  const auto it = hashes_.find(d.str());
  if (it == hashes_.end()) return;
  const auto h = it->second.lock();
  // Merely gone (not found) with the hash's generation current, the chunk went before the
  // hash began (a blob is not evicted while its hash lives: the constructor's eviction
  // query), so neither a rider nor the hash took it. Found corrupt, unreadable, or purged
  // meanwhile: what is stored next may be other bytes than a rider sent or the hash took.
  if (!h || (merely_gone && h->generation == purge_generation_locked(d))) return;
  std::lock_guard hl(h->mutex);
  h->store_changed = true;
}

void blob_source::advance(blob_hash& h, const std::shared_ptr<chunk_slot>& done, bool stored) {
  const std::lock_guard feeding(h.feeding);
  const std::uint32_t count = h.meta.chunk_count();
  std::uint64_t hashed = 0;
  bool moved = false;
  for (std::uint32_t bound = 0; bound <= count; ++bound) {
    std::shared_ptr<chunk_slot> slot;
    std::uint32_t k = 0;
    {
      std::lock_guard lock(h.mutex);
      if (h.result != blob_hash::state::hashing || h.next == count) break;
      k = h.next;
      if (done && done->chunk == k) {
        slot = done;
      } else if (auto it = h.unstored.find(k); it != h.unstored.end()) {
        slot = std::move(it->second);
        h.unstored.erase(it);
      }
    }
    cache::shared_chunk held;  // the store's bytes, when no slot has them
    if (!slot) {
      const auto got = store_.get_chunk_shared(h.digest, k, false, held);
      if (got.code == cache::errc::corruption) {
        std::lock_guard lock(h.mutex);
        h.store_changed = true;
      }
      if (!got.ok() || !held || held->size() != h.meta.chunk_interval(k).length()) break;
    }
    // A complete slot's bytes never change: read without its lock.
    const std::string_view bytes = slot ? std::string_view(slot->data) : held->bytes;
    h.hasher.update(bytes);
    hashed += bytes.size();
    moved = true;
    std::lock_guard lock(h.mutex);
    h.fed[k] = slot ? bytes_from(slot->mark) : nullptr;
    ++h.next;
  }
  {
    std::lock_guard lock(h.mutex);
    if (done && !stored && done->chunk > h.next && h.unstored.size() < max_unstored) {
      h.unstored.emplace(done->chunk, done);  // its turn comes after chunks still missing
    }
    if (h.result == blob_hash::state::hashing && h.next == count) {
      h.result =
          h.hasher.finish() == h.digest ? blob_hash::state::matched : blob_hash::state::mismatched;
      moved = true;
    }
    if (moved) h.wake_locked();
  }
  // Not under h.mutex: mutex_ comes first where both are held (read_stored).
  std::lock_guard source_lock(mutex_);
  stats_.hashed_bytes += hashed;
}

asio::awaitable<std::optional<bool>> blob_source::verdict(const std::shared_ptr<blob_hash>& h) {
  const auto ex = co_await asio::this_coro::executor;
  const std::uint32_t count = h->meta.chunk_count();
  for (std::uint32_t bound = 0; bound < 2 * count + 16; ++bound) {
    auto wait = std::make_shared<wakeup>(ex, 1);
    std::uint32_t before = 0;
    {
      std::lock_guard lock(h->mutex);
      if (h->result != blob_hash::state::hashing) break;
      before = h->next;
      h->waiters.push_back(wait);
    }
    co_await pool_.run([this, &h] { advance(*h, nullptr, false); });
    std::uint32_t stuck_at = 0;
    {
      std::lock_guard lock(h->mutex);
      if (h->result != blob_hash::state::hashing) break;
      if (h->next != before) continue;  // it moved: try the store again
      stuck_at = h->next;
    }
    {
      // Neither stored nor held: only a fill in flight can bring it.
      std::lock_guard lock(mutex_);
      if (!inflight_.contains(key_of(h->digest, stuck_at))) co_return std::nullopt;
    }
    (void)co_await wait->async_receive(use_nothrow);
  }
  std::lock_guard lock(h->mutex);
  if (h->result == blob_hash::state::matched) co_return true;
  if (h->result == blob_hash::state::mismatched) co_return false;
  co_return std::nullopt;
}

bool blob_source::covered(blob_hash& h, const sent_bytes& sent) {
  std::lock_guard lock(h.mutex);
  if (h.store_changed || h.result != blob_hash::state::matched) return false;
  for (std::size_t k = 0; k < h.fed.size(); ++k) {
    if (!same_bytes(sent.from[k], h.fed[k])) return false;
  }
  return true;
}

bool blob_source::stored_as_hashed(blob_hash& h) {
  std::lock_guard lock(h.mutex);
  if (h.store_changed || h.result != blob_hash::state::matched) return false;
  return std::all_of(h.fed.begin(), h.fed.end(),
                     [](const bytes_from& f) { return same_bytes(f, nullptr); });
}

asio::awaitable<bool> blob_source::arrived(chunk_slot& slot, std::size_t n) {
  const auto ex = co_await asio::this_coro::executor;
  for (std::size_t bound = 0; bound <= n; ++bound) {  // each wake brings at least a byte
    std::shared_ptr<wakeup> wait;
    {
      std::lock_guard lock(slot.mutex);
      if (slot.data.size() >= n) co_return true;
      if (slot.failed || slot.done) co_return false;
      wait = std::make_shared<wakeup>(ex, 1);
      slot.waiters.push_back(wait);
    }
    (void)co_await wait->async_receive(use_nothrow);
  }
  co_return false;
}

}  // namespace layercache::content
