// Blob bytes from the chunk store, with missing chunks filled from upstream: one fill per
// chunk however many readers want it, bytes handed to every reader as they arrive, several
// runs in flight for a long cold read. Include only from .cpp files (it brings in Beast).
//
// Thread-safety: one blob_source serves all workers. Fills run on the worker that started
// them and outlive the reader that started them (a disconnect does not cancel a fill others
// wait on). Readers on other workers are woken through thread-safe channels.
#pragma once

#include <algorithm>
#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <variant>

#include "asio/names.hpp"
#include "asio/offload.hpp"
#include "cache/chunk_store.hpp"
#include "oci/digest.hpp"
#include "oci/manifest.hpp"
#include "oci/range.hpp"
#include "registry/credentials.hpp"
#include "registry/distribution.hpp"
#include "registry/upstream_client.hpp"

namespace layercache::content {

// A blob as blob_source reads it: the store's record of it (in_store), or, while the store
// has none, a record made from the blob's size as an upstream or a manifest gave it, with the
// configured chunk size — not verified, origin 0, no access or stored bytes. It is a
// cache::blob_record (size, chunk_size, verified, origin and the chunk arithmetic mean the
// same here as in the store), plus whether the store holds it.
struct described_blob : cache::blob_record {
  bool in_store = false;  // the store has a record of it (some chunks may still be missing)

  [[nodiscard]] static described_blob stored(const cache::blob_record& record) {
    return {record, true};
  }
  // `size` bytes in chunks of `chunk_size`, of which the store knows nothing yet.
  [[nodiscard]] static described_blob unstored(std::uint64_t size, std::uint32_t chunk_size) {
    described_blob b;
    b.size = size;
    b.chunk_size = chunk_size;
    return b;
  }
};

// A blob as prefetch plans it (blob_source::describe_listed).
struct listed_blob {
  described_blob meta;
  std::vector<bool> present;  // by chunk index: stored already (empty: none, or verified whole)
};

// Where the bytes of one read() came from.
struct read_report {
  std::uint64_t store_bytes = 0;   // stored chunks
  std::uint64_t joined_bytes = 0;  // fills another reader (or a background fill) started
  std::uint64_t filled_bytes = 0;  // fills this read started
  // Chunks prefetch fetched ahead, read by a client for the first time (stored or in flight).
  std::uint64_t prefetch_bytes = 0;
};

struct fill_settings {
  std::uint32_t chunk_size = 1 << 20;  // for blobs not yet in the store
  std::uint64_t run_bytes = 8 << 20;   // largest upstream range request
  unsigned parallel_runs = 4;          // runs in flight ahead of one reader
  bool complete_partial = true;        // fetch the rest of range-read blobs and verify
};

// Counters for tests and metrics.
struct blob_source_stats {
  std::uint64_t fills_started = 0;      // upstream range requests
  std::uint64_t chunks_filled = 0;      // chunks completed from upstream
  std::uint64_t chunks_from_store = 0;  // chunk reads served by the store
  std::uint64_t chunks_joined = 0;      // reads that joined a fill in flight
  std::uint64_t store_errors = 0;
  std::uint64_t verified = 0;                // blobs completed in the background and matched
  std::uint64_t digest_failures = 0;         // blobs whose bytes did not match their digest
  std::uint64_t chunks_in_flight = 0;        // being filled now
  std::uint64_t prefetch_fetched_bytes = 0;  // chunk bytes fetched by prefetch
  std::uint64_t prefetch_used_bytes = 0;     // of those, chunk bytes a client read later
  // Reads of a blob another upstream is filling, passed through from the reader's own.
  std::uint64_t foreign_reads = 0;
  // Fills a client read started for chunks a background fill (completion, prefetch) had asked
  // for but not begun receiving: the background fill gave them up instead of making the read
  // wait behind the chunks before them.
  std::uint64_t demand_takeovers = 0;
  // Times a completion's fill stopped reading its response while clients' fills were in flight
  // (blob_source::yield_to_demand).
  std::uint64_t background_yields = 0;
  // Bytes hashed to check blobs against their digests: one hash per blob however many read it
  // whole (readers of another upstream's blob hash what they pass through themselves).
  std::uint64_t hashed_bytes = 0;
  // Whole reads that could not show their bytes were the ones the blob's hash took (a chunk's
  // store write and hold both failed, or the blob was purged meanwhile): failed, not served.
  std::uint64_t unproven_reads = 0;
};

// Which upstream a client's bytes come from, as the store keeps it (blob_record::origin):
// a hash of the upstream's name, never 0.
[[nodiscard]] cache::origin_id origin_of(const registry::upstream_client& client);

// Bytes of a blob not yet verified whole are only as good as the upstream that served them:
// they belong to that upstream (its origin_of), for reads, fills and sizes alike. A client of
// another upstream asking for that blob gets the bytes from its own upstream, passed through
// and stored nowhere, until the blob is verified (then it is everyone's) or purged.
class blob_source {
 public:
  blob_source(cache::chunk_store& store, blocking_pool& pool, fill_settings settings);
  ~blob_source();
  blob_source(const blob_source&) = delete;
  blob_source& operator=(const blob_source&) = delete;

  using describe_result = std::variant<described_blob, std::unique_ptr<registry::upstream_response>,
                                       registry::upstream_failure>;

  // The blob's size and chunk size: from the store, from memory, or from an upstream HEAD (a
  // HEAD the upstream redirects: a GET of the first byte, which may follow) — one at a time
  // per blob: readers arriving while it runs wait for its answer (a herd of
  // clients on a cold blob sends one HEAD, not one each). A non-2xx upstream answer is
  // returned for the caller to pass on (each such caller asks for its own).
  asio::awaitable<describe_result> describe(registry::upstream_client& client,
                                            const std::string& repository, const oci::digest& d);

  // Sizes from a manifest `client`'s upstream just served (its config and layers): the
  // client's GETs of those blobs then need no upstream HEAD first — one round trip fewer per
  // cold blob. Remembered for that upstream only. A size the upstream contradicts
  // (Content-Range or Content-Length) is forgotten, and the next read asks with a HEAD.
  void learn_sizes(const registry::upstream_client& client,
                   const std::vector<oci::descriptor>& blobs);

  // Receives consecutive pieces of the requested bytes; returns false to stop.
  using sink = std::function<asio::awaitable<bool>(const char*, std::size_t)>;

  // Streams `bytes` of `d` to `out`, in order; `bytes` is not empty and lies within
  // meta.size (a client's Range, resolved, converts from HTTP's closed byte_range). Returns
  // false when not every byte could be delivered (upstream failure after a retry, or `out`
  // returned false). With `report`, adds where the delivered bytes came from.
  asio::awaitable<bool> read(registry::upstream_client& client, const std::string& repository,
                             const oci::digest& d, const described_blob& meta,
                             oci::byte_interval bytes, const sink& out,
                             read_report* report = nullptr);

  // After a range read: unless `meta.verified`, fetches the rest of the blob in the background
  // (on the caller's worker) and checks it against its digest; a mismatch purges it. Without
  // `complete_partial`, only a blob the store now holds whole is checked (from the store, no
  // upstream request): range reads alone then make it verified. Not for a blob another
  // upstream owns.
  asio::awaitable<void> complete_later(registry::upstream_client& client,
                                       const std::string& repository, const oci::digest& d,
                                       const described_blob& meta);

  // Prefetch: makes chunks first..last of `d` present in the store, one run of missing chunks
  // at a time (joining fills in flight). The fills it starts are ordinary fills a client read
  // joins (and is then served by), marked so that the first client read of their chunks counts
  // as served by prefetch. False when a fill failed. Stops between runs once `*cancel`.
  // Chunks `b.present` marks are skipped without asking the store again.
  asio::awaitable<bool> prefetch(registry::upstream_client& client, const std::string& repository,
                                 const oci::digest& d, const listed_blob& b, std::uint32_t first,
                                 std::uint32_t last, const std::atomic<bool>* cancel = nullptr);

  // Prefetch of scattered chunks of `d` (ascending), fetched together: one multi-range
  // request for those neither stored nor in flight (chunks in flight are joined), so a batch
  // costs one round trip instead of one per run. An upstream that answered a multi-range
  // request with the whole blob is asked one run at a time instead. Otherwise as prefetch().
  asio::awaitable<bool> prefetch_batch(registry::upstream_client& client,
                                       const std::string& repository, const oci::digest& d,
                                       const listed_blob& b, std::vector<std::uint32_t> chunks,
                                       const std::atomic<bool>* cancel = nullptr);

  // False once `client`'s upstream answered a multi-range request with something else than
  // the ranges (prefetch_batch would fetch one run at a time anyway).
  [[nodiscard]] bool multi_range(const registry::upstream_client& client) const;

  // What prefetch plans with for the blobs a manifest lists, in one trip to the store: each
  // one's record and stored chunks when the store has it, else the listed size with the
  // configured chunk size (remembered nowhere: a manifest's word is not the upstream's).
  asio::awaitable<std::vector<listed_blob>> describe_listed(
      const std::vector<oci::descriptor>& blobs);

  // How a read of a whole blob that checked its digest ended.
  enum class verified_read { verified, failed, mismatch };
  // Streams all of `d` to `out` through the cache (filling what is missing), checked against
  // its digest on the way unless `meta.verified`: the last piece is held back until the bytes
  // match, so a reader never gets a whole blob that does not. A match marks the store's copy
  // verified, a mismatch purges it (mark_verified and purge below, through `client`): the one
  // place where a whole read decides either. `failed`: not every byte could be read, or `out`
  // returned false. `report` as read()'s.
  asio::awaitable<verified_read> read_whole(registry::upstream_client& client,
                                            const std::string& repository, const oci::digest& d,
                                            const described_blob& meta, const sink& out,
                                            read_report* report = nullptr);
  // read_whole() of a blob not verified, its bytes dropped: background completion and preload.
  asio::awaitable<verified_read> read_verified(registry::upstream_client& client,
                                               const std::string& repository, const oci::digest& d,
                                               const described_blob& meta,
                                               read_report* report = nullptr);

  // Drops every stored chunk of `d` (the operator's purge).
  asio::awaitable<void> purge(const oci::digest& d);
  // A full read of `d` through `client` did not match its digest: drops what is stored,
  // unless another upstream's bytes are (the read was passed through: the store is not
  // at fault).
  asio::awaitable<void> purge(const registry::upstream_client& client, const oci::digest& d);
  // A full read of `d` through `client` matched its digest: the store's copy is verified,
  // if it is the copy that was read (not another upstream's).
  asio::awaitable<void> mark_verified(const registry::upstream_client& client,
                                      const oci::digest& d);

  [[nodiscard]] blob_source_stats stats() const;

 private:
  struct chunk_slot;
  struct fill_run;
  class write_turns;
  // One hash per blob (issue 22). Whose bytes a reader sent for a chunk: a slot's (its mark),
  // or the store's (nullptr). A slot whose store write created the chunk is the store's too.
  struct slot_mark;
  using bytes_from = std::shared_ptr<const slot_mark>;
  [[nodiscard]] static bool same_bytes(const bytes_from& a, const bytes_from& b);
  // The digest of a blob, computed once from the chunks its fills complete (in chunk order;
  // chunks ahead of the next one are read back from the store when their turn comes).
  struct blob_hash;
  // What a whole read sent, chunk by chunk, to compare with what the blob's hash took.
  struct sent_bytes;
  // Who a fill is for: a client's read (the chunk it needs now, or chunks ahead of it), or
  // work in the background (prefetch; completion). Demand never waits behind background.
  enum class fill_for { reader, read_ahead, prefetch, background };
  [[nodiscard]] static bool demand(fill_for why) {
    return why == fill_for::reader || why == fill_for::read_ahead;
  }

  std::string key_of(const oci::digest& d, std::uint32_t index) const;
  // sizes_ and heads_ keys: one upstream's word about a blob's size is not another's.
  static std::string size_key(const registry::upstream_client& client, const oci::digest& d);
  // Whether `origin` may use the store for `d`: read its chunks, join and start its fills.
  // Verified: anyone. Else the owner in owners_, taken from the record (meta.origin) or
  // claimed now by `origin` when nobody has it.
  bool claim(cache::origin_id origin, const oci::digest& d, const described_blob& meta);
  // Whether what the store holds of `d` is `origin`'s (or nobody's yet).
  bool owns(cache::origin_id origin, const oci::digest& d) const;
  // Without complete_partial, after a range read: a blob the store now holds whole (once the
  // read's store writes landed) is hashed from the store and verified.
  asio::awaitable<void> verify_if_whole(registry::upstream_client& client, std::string repository,
                                        oci::digest d, described_blob meta);
  // Until every fill's store write of `d` in flight now has finished.
  asio::awaitable<void> wait_stored(const oci::digest& d);
  struct pin;
  // Forgets the held chunks of the blob `digest` (unstored_). Under mutex_.
  void drop_held_locked(const std::string& digest);
  struct whole_read;
  struct read_plan;
  // How many unstored complete chunks to keep: what one reader has in flight ahead, and a run.
  [[nodiscard]] std::size_t keep_unstored() const {
    return std::size_t{settings_.parallel_runs + 1} *
           std::max<std::uint64_t>(1, settings_.run_bytes / settings_.chunk_size);
  }
  // Which of the chunks holding `wanted` the store holds (and, for a few chunks, their bytes).
  asio::awaitable<read_plan> plan_read(const oci::digest& d, const described_blob& meta,
                                       oci::byte_interval wanted);
  enum class stored_read { delivered, missing, sink_failed, differs };
  // Bytes `part` (offsets within the chunk) of stored chunk `i` (`length` bytes long) to
  // `out`; `admit`: keep it in the memory cache. With `before` (a failed slot that handed
  // bytes [0, part.begin) out already): `differs` when the store's are not those bytes.
  asio::awaitable<stored_read> read_stored(const oci::digest& d, std::uint32_t i,
                                           oci::byte_interval part, bool admit, std::size_t length,
                                           read_plan& plan, const sink& out, read_report* report,
                                           const chunk_slot* before = nullptr);
  // A read of a blob another origin owns: from `client`'s upstream, stored nowhere.
  asio::awaitable<bool> read_direct(registry::upstream_client& client,
                                    const std::string& repository, const oci::digest& d,
                                    const described_blob& meta, oci::byte_interval bytes,
                                    const sink& out, read_report* report);

  // The slot of chunk `first`: joined if in flight, else a new fill for the run of missing
  // chunks from `first` (up to `limit`, `run_bytes`, a present or in-flight chunk). nullptr
  // when `first` was completed into the store meanwhile. `*run` = chunks started (0 if joined).
  // A reader's chunk that a background fill asked for but has other chunks' bytes to receive
  // first is taken over (take_over_locked): `*run` then counts the chunks taken.
  std::shared_ptr<chunk_slot> join_or_start(const asio::any_io_executor& ex,
                                            registry::upstream_client& client,
                                            const std::string& repository, const oci::digest& d,
                                            const described_blob& meta, std::uint32_t first,
                                            std::uint32_t limit, const std::vector<bool>& present,
                                            std::uint32_t present_base, std::uint32_t* run,
                                            fill_for why);
  // With mutex_ held: when `slot` is a background fill's and at least half a chunk of that
  // fill's bytes is still to arrive before it, the slots from it to the end of the fill,
  // taken from that fill (which stops before them) for a new one; else nullptr.
  // The run no longer holds slot `index` (its store write has finished).
  static void let_go(fill_run& run, std::size_t index);
  std::shared_ptr<fill_run> take_over_locked(const std::shared_ptr<chunk_slot>& slot,
                                             std::uint32_t chunk_size);
  // With mutex_ held: a fill of `slots`, theirs from now on. Spawn fill() with it.
  std::shared_ptr<fill_run> make_run_locked(std::vector<std::shared_ptr<chunk_slot>> slots,
                                            fill_for why);
  // Starts fills for the missing chunks ahead of chunk `i` of a read (from `ahead`, which it
  // moves on), as many runs as the read may have in flight.
  void fill_ahead(const asio::any_io_executor& ex, registry::upstream_client& client,
                  const std::string& repository, const oci::digest& d, const described_blob& meta,
                  read_plan& plan, std::uint32_t i, std::uint32_t& ahead, fill_for why);
  // read() and read_whole(), for a client (demand) or for background work (completion).
  // With `sent`: a whole read's record of where each chunk came from.
  asio::awaitable<bool> read_for(registry::upstream_client& client, const std::string& repository,
                                 const oci::digest& d, const described_blob& meta,
                                 oci::byte_interval bytes, const sink& out, read_report* report,
                                 fill_for why, sent_bytes* sent = nullptr);
  // The blob's hash of this purge generation: the one in hashes_, or a new one there.
  std::shared_ptr<blob_hash> hash_of(const oci::digest& d, const described_blob& meta);
  // The hash a completed chunk of `d` of `generation` goes to, if a whole read made one.
  std::shared_ptr<blob_hash> hash_to_feed(const oci::digest& d, std::uint64_t generation);
  // Feeds `h` what it can take in order: `done` (a complete slot, `stored` or not) and then
  // held slots and stored chunks. On the blocking pool only (it hashes and reads the store).
  void advance(blob_hash& h, const std::shared_ptr<chunk_slot>& done, bool stored);
  // The blob's verdict once `h` took every chunk (advancing it from the store meanwhile):
  // true when it matched; nullopt when it cannot finish (a chunk neither stored, held nor
  // being filled; or the blob was purged).
  asio::awaitable<std::optional<bool>> verdict(const std::shared_ptr<blob_hash>& h);
  // Whether every chunk `sent` has is the bytes `h` took.
  static bool covered(blob_hash& h, const sent_bytes& sent);
  // Tells the blob's hash, if one lives, that a stored chunk of it was found corrupt and
  // removed: riders can no longer show what they sent from the store was what it took. The
  // _locked form (mutex_ held) also takes a chunk found `merely_gone` (not found), which
  // counts only if the blob was purged since the hash began.
  void note_store_changed(const oci::digest& d);
  void note_store_changed_locked(const oci::digest& d, bool merely_gone);
  // Whether the store holds exactly the bytes `h` took, every chunk (then a match verifies it).
  static bool stored_as_hashed(blob_hash& h);
  // Until `slot` holds at least `n` bytes (false: it failed first).
  static asio::awaitable<bool> arrived(chunk_slot& slot, std::size_t n);
  asio::awaitable<verified_read> read_hashing_myself(registry::upstream_client& client,
                                                     const std::string& repository,
                                                     const oci::digest& d,
                                                     const described_blob& meta, const sink& out,
                                                     read_report* report, fill_for why);
  asio::awaitable<verified_read> read_whole_for(registry::upstream_client& client,
                                                const std::string& repository, const oci::digest& d,
                                                const described_blob& meta, const sink& out,
                                                read_report* report, fill_for why);
  // Waits until every byte of `slot` arrived (its store write may still run), or it failed;
  // true when complete.
  // With `stored`, until its store write finished.
  static asio::awaitable<bool> wait_slot(chunk_slot& slot, bool stored = false);
  // A new slot for chunk `index` of `d`, entered in inflight_. Call with mutex_ held.
  std::shared_ptr<chunk_slot> add_slot_locked(const std::string& key, const described_blob& meta,
                                              std::uint32_t index, fill_for why);
  // `client`'s upstream answered a multi-range request with something else than the ranges.
  void refuse_multi_range(const registry::upstream_client& client);
  void forget_size(const registry::upstream_client& client, const oci::digest& d);
  [[nodiscard]] std::optional<described_blob> known_size(const registry::upstream_client& client,
                                                         const oci::digest& d) const;
  // A client read joined `slot`: true (once) if prefetch started it.
  bool claim_prefetched(chunk_slot& slot);
  // Fetches the chunks of `run` (ascending by chunk; runs of consecutive chunks become the
  // ranges of one request) into them and the store; stops early when a reader took the rest
  // over (take_over_locked).
  asio::awaitable<void> fill(registry::upstream_client& client, std::string repository,
                             oci::digest d, described_blob meta, std::shared_ptr<fill_run> run);
  struct fill_progress;
  // Demand first: before each piece of a completion's fill, while clients' fills are in flight
  // (fill() checks both), waits unless a reader waits for its chunks (at most max_yield).
  asio::awaitable<void> yield_to_demand(fill_run& run, const fill_progress& progress);
  // Whether a reader waits for any of the run's slots from `from` on (its mutex comes after
  // mutex_).
  bool wanted_locked(fill_run& run, std::size_t from) const;
  // Wakes every fill giving way: each reads a piece, then gives way again if it still should.
  void wake_yielding_locked();
  void demand_fill_ended();  // a client's fill ended: the last one wakes those giving way
  // Hands `piece` of a fill's answer to the slots it belongs to (bytes between them are
  // skipped), starting the store write (on `ex`) of each slot it completes. Not a coroutine:
  // it runs once per 64 KiB of every fill.
  void take_piece(const asio::any_io_executor& ex, registry::upstream_client& client,
                  const oci::digest& d, const described_blob& meta, fill_run& run,
                  std::uint64_t generation, const registry::blob_piece& piece,
                  fill_progress& progress);
  // Stores a completed chunk of a fill and finishes its slot (slot->done).
  // Fills' store writes take turns (write_turns): one in the blocking pool at a time.
  asio::awaitable<void> store_chunk(oci::digest d, described_blob meta, std::uint32_t chunk,
                                    std::shared_ptr<chunk_slot> slot, std::uint64_t generation,
                                    cache::origin_id origin);
  // The LRU's note that `d` was read, when a read could not make it without waiting for a
  // store writer: on the blocking pool, after the read.
  asio::awaitable<void> touch_later(oci::digest d);
  // Hands bytes `part` (offsets within the chunk) of `slot` to `out` as they arrive; adds
  // what `out` took to *delivered (also when the slot fails part-way).
  enum class slot_read { complete, slot_failed, sink_failed };
  asio::awaitable<slot_read> stream_slot(chunk_slot& slot, oci::byte_interval part, const sink& out,
                                         std::size_t* delivered);
  std::uint64_t purge_generation(const oci::digest& d) const;
  std::uint64_t purge_generation_locked(const oci::digest& d) const;  // mutex_ held
  asio::awaitable<void> complete(registry::upstream_client& client, std::string repository,
                                 oci::digest d, described_blob meta);
  void finish_slot(const oci::digest& d, std::uint32_t index, chunk_slot& slot, bool failed,
                   bool stored);

  cache::chunk_store& store_;
  blocking_pool& pool_;
  fill_settings settings_;

  // Taken inside the store's lock by the pinned query (the constructor): never call the store
  // while holding it.
  mutable std::mutex mutex_;
  std::unordered_map<std::string, std::shared_ptr<chunk_slot>> inflight_;
  // Chunks completed by a fill since it was last cleared: closes the window between a
  // reader's store lookup and its decision to fill (a cleared set only risks a second fill).
  std::unordered_set<std::string> completed_;
  // From HEADs and manifests, by size_key (upstream and digest).
  std::unordered_map<std::string, described_blob> sizes_;
  registry::flight_table heads_;  // upstream HEADs in flight, by size_key (the size goes to sizes_)
  // Blobs not verified, by digest: the origin whose bytes the store holds or will hold.
  std::unordered_map<std::string, cache::origin_id> owners_;
  std::unordered_map<std::string, unsigned> readers_;        // blobs being read: spared by eviction
  std::unordered_map<std::string, unsigned> whole_readers_;  // whole reads running, by digest
  std::unordered_set<std::string> completing_;               // background completions running
  // Upstreams that answered a multi-range request with something else (by name).
  std::unordered_set<std::string> single_range_only_;
  // Complete chunks whose store write failed (a full disk), the last keep_unstored() of them,
  // by key_of, joined like fills in flight; unstored_order_ is their order of arrival. Held
  // only while the blob is read (readers_): a read that comes later fetches them again and
  // stores them if the disk has room by then, and memory does not keep them meanwhile.
  std::unordered_map<std::string, std::shared_ptr<chunk_slot>> unstored_;
  std::deque<std::string> unstored_order_;
  // Chunks prefetch stored that no client has read yet (bounded; cleared when full).
  std::unordered_set<std::string> prefetched_;
  // Purges per digest: a fill that started before a purge must not store what it fetched.
  std::unordered_map<std::string, std::uint64_t> purges_;
  blob_source_stats stats_;
  // Client (demand) fills in flight: background reads keep one run in flight, not
  // parallel_runs, while there are any.
  std::atomic<unsigned> demand_fills_{0};
  // Completions' fills giving way to them (yield_to_demand), woken when the last one ends.
  struct yielding;
  std::unique_ptr<yielding> yielding_;
  // The last store write of a chunk failed (not for a purge): whole reads hash themselves.
  std::atomic<bool> store_refusing_{false};
  // Blobs being hashed, by digest (each alive while a whole read or a fill needs it).
  std::unordered_map<std::string, std::weak_ptr<blob_hash>> hashes_;
  std::unique_ptr<write_turns> write_turns_;
};

}  // namespace layercache::content
