#include "cache/chunk_store.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cache/backend.hpp"
#include "cache/crc32c.hpp"
#include "cache/records.hpp"
#include "tests/support/process.hpp"

namespace layercache::cache {
namespace {

using detail::presence_key;
using detail::presence_segment_chunks;
using ::layercache::testing::temp_dir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr std::uint32_t KiB = 1024;
constexpr std::uint32_t chunk = 64 * KiB;

oci::digest digest_n(int n, oci::digest_algorithm a = oci::digest_algorithm::sha256) {
  return oci::digest_of("blob " + std::to_string(n), a);
}

// Deterministic bytes, different for each (seed, offset).
std::string pattern(std::uint64_t seed, std::size_t size) {
  std::string out(size, '\0');
  std::uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 1;
  for (char& c : out) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c = static_cast<char>(x);
  }
  return out;
}

// The chunk `index` of a blob whose bytes are pattern(seed, size).
std::string chunk_of(const std::string& blob, std::uint32_t chunk_size, std::uint32_t index) {
  return blob.substr(std::size_t{index} * chunk_size, chunk_size);
}

// Time the test controls.
struct fake_clock {
  std::shared_ptr<std::atomic<std::uint64_t>> now =
      std::make_shared<std::atomic<std::uint64_t>>(1'700'000'000);
  [[nodiscard]] clock_fn fn() const {
    return [now = now] { return now->load(); };
  }
  void advance(std::uint64_t s) const { *now += s; }
};

enum class kind { memory, rocksdb_sst, rocksdb_blob_files };

std::string name_of(kind k) {
  switch (k) {
    case kind::memory:
      return "memory";
    case kind::rocksdb_sst:
      return "rocksdb_sst";
    case kind::rocksdb_blob_files:
      return "rocksdb_blob_files";
  }
  return "unknown";
}

std::unique_ptr<chunk_store> open_store(kind k, const std::string& dir, std::uint64_t capacity,
                                        clock_fn clock, std::uint64_t memory_cache = 0) {
  if (k == kind::memory) return make_memory_store(capacity, std::move(clock), memory_cache);
  return open_rocksdb_store(store_options{
      .path = dir,
      .capacity = capacity,
      .block_cache = 8 << 20,
      .sync_writes = false,
      .layout = k == kind::rocksdb_sst ? chunk_layout::sst : chunk_layout::blob_files,
      .clock = std::move(clock),
      .memory_cache = memory_cache,
  });
}

// ---- the suite every backend passes

class chunk_store_test : public ::testing::TestWithParam<kind> {
 protected:
  void SetUp() override { reopen(); }

  void reopen(std::uint64_t capacity = 64ULL << 20) {
    store_.reset();
    store_ = open_store(GetParam(), (dir_.path() / "db").string(), capacity, clock_.fn());
  }

  // Stores every chunk of a blob of `size` bytes; returns its bytes.
  std::string put_blob(const oci::digest& d, std::uint64_t seed, std::size_t size,
                       std::uint32_t chunk_size = chunk) {
    std::string blob = pattern(seed, size);
    const std::uint32_t n = static_cast<std::uint32_t>((size + chunk_size - 1) / chunk_size);
    for (std::uint32_t i = 0; i < n; ++i) {
      status s = store_->put_chunk(d, size, chunk_size, i, chunk_of(blob, chunk_size, i));
      EXPECT_TRUE(s.ok()) << s.message;
    }
    return blob;
  }

  temp_dir dir_;
  fake_clock clock_;
  std::unique_ptr<chunk_store> store_;
};

TEST_P(chunk_store_test, every_chunk_round_trips_with_a_short_last_chunk) {
  const oci::digest d = digest_n(1);
  const std::size_t size = 3 * chunk + 1000;
  const std::string blob = pattern(1, size);
  // Out of order, as parallel fills would store them.
  for (std::uint32_t i : {2U, 0U, 3U, 1U}) {
    status s = store_->put_chunk(d, size, chunk, i, chunk_of(blob, chunk, i));
    ASSERT_TRUE(s.ok()) << s.message;
  }
  std::string got;
  std::string whole;
  for (std::uint32_t i = 0; i < 4; ++i) {
    got = "stale";
    status s = store_->get_chunk(d, i, got);
    ASSERT_TRUE(s.ok()) << s.message;
    EXPECT_EQ(got.size(), i == 3 ? 1000U : chunk);
    whole += got;
  }
  EXPECT_EQ(whole, blob);

  auto r = store_->blob(d);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->size, size);
  EXPECT_EQ(r->chunk_size, chunk);
  EXPECT_EQ(r->chunk_count(), 4U);
  EXPECT_EQ(r->chunk_length(3), 1000U);
  EXPECT_EQ(r->stored_bytes, size);
  EXPECT_FALSE(r->verified);
  EXPECT_EQ(r->hits, 0U);
  EXPECT_EQ(r->last_access, clock_.now->load());
  EXPECT_EQ(store_->used_bytes(), size);
}

TEST_P(chunk_store_test, single_chunk_blob_and_sha512) {
  const oci::digest d = digest_n(2, oci::digest_algorithm::sha512);
  ASSERT_TRUE(store_->put_chunk(d, 5, chunk, 0, "hello").ok());
  std::string got;
  ASSERT_TRUE(store_->get_chunk(d, 0, got).ok());
  EXPECT_EQ(got, "hello");
  EXPECT_THAT(store_->present_chunks(d), ElementsAre(0U));
  EXPECT_EQ(store_->blob(d)->chunk_count(), 1U);
}

TEST_P(chunk_store_test, has_chunk_and_present_chunks) {
  const oci::digest d = digest_n(1);
  const oci::digest other = digest_n(2);
  const std::size_t size = 4 * chunk;
  const std::string blob = pattern(1, size);
  EXPECT_FALSE(store_->has_chunk(d, 0));
  EXPECT_THAT(store_->present_chunks(d), IsEmpty());
  ASSERT_TRUE(store_->put_chunk(d, size, chunk, 2, chunk_of(blob, chunk, 2)).ok());
  ASSERT_TRUE(store_->put_chunk(d, size, chunk, 0, chunk_of(blob, chunk, 0)).ok());
  ASSERT_TRUE(store_->put_chunk(other, 10, chunk, 0, "0123456789").ok());

  EXPECT_TRUE(store_->has_chunk(d, 0));
  EXPECT_FALSE(store_->has_chunk(d, 1));
  EXPECT_TRUE(store_->has_chunk(d, 2));
  EXPECT_FALSE(store_->has_chunk(d, 3));
  EXPECT_FALSE(store_->has_chunk(d, 4));
  EXPECT_THAT(store_->present_chunks(d), ElementsAre(0U, 2U));
  EXPECT_THAT(store_->present_chunks(other), ElementsAre(0U));
  EXPECT_THAT(store_->present_chunks(digest_n(3)), IsEmpty());
  EXPECT_EQ(store_->blob(d)->stored_bytes, 2U * chunk);

  std::string got;
  EXPECT_EQ(store_->get_chunk(d, 1, got).code, errc::not_found);
  EXPECT_EQ(store_->get_chunk(digest_n(3), 0, got).code, errc::not_found);
}

TEST_P(chunk_store_test, wrong_chunk_length_is_invalid_argument) {
  const oci::digest d = digest_n(1);
  const std::size_t size = 2 * chunk + 10;
  const std::string blob = pattern(1, size);
  EXPECT_EQ(store_->put_chunk(d, size, chunk, 0, blob.substr(0, chunk - 1)).code,
            errc::invalid_argument);
  EXPECT_EQ(store_->put_chunk(d, size, chunk, 0, blob.substr(0, chunk + 1)).code,
            errc::invalid_argument);
  EXPECT_EQ(store_->put_chunk(d, size, chunk, 2, blob.substr(2 * chunk, 9)).code,
            errc::invalid_argument);
  EXPECT_EQ(store_->put_chunk(d, size, chunk, 2, blob.substr(2 * chunk - 1)).code,
            errc::invalid_argument);
  EXPECT_EQ(store_->put_chunk(d, size, chunk, 3, "x").code, errc::invalid_argument);
  EXPECT_EQ(store_->put_chunk(d, 0, chunk, 0, "").code, errc::invalid_argument);
  EXPECT_EQ(store_->put_chunk(d, size, 0, 0, "").code, errc::invalid_argument);
  status s = store_->put_chunk(d, size, chunk, 1, "short");
  EXPECT_EQ(s.code, errc::invalid_argument);
  EXPECT_THAT(s.message, HasSubstr(d.str()));
  EXPECT_FALSE(store_->blob(d).has_value());
  EXPECT_EQ(store_->used_bytes(), 0U);
}

TEST_P(chunk_store_test, sizes_must_match_the_stored_record) {
  const oci::digest d = digest_n(1);
  const std::size_t size = 4 * chunk;
  const std::string blob = pattern(1, size);
  ASSERT_TRUE(store_->put_chunk(d, size, chunk, 0, chunk_of(blob, chunk, 0)).ok());
  // The configured chunk size changed: the stored one wins.
  status s = store_->put_chunk(d, size, 2 * chunk, 0, blob.substr(0, 2 * chunk));
  EXPECT_EQ(s.code, errc::invalid_argument);
  EXPECT_THAT(s.message, HasSubstr("chunk size " + std::to_string(chunk)));
  EXPECT_EQ(store_->put_chunk(d, size + 1, chunk, 1, chunk_of(blob, chunk, 1)).code,
            errc::invalid_argument);
  EXPECT_EQ(store_->blob(d)->chunk_size, chunk);
  EXPECT_EQ(store_->blob(d)->size, size);
  EXPECT_THAT(store_->present_chunks(d), ElementsAre(0U));
  EXPECT_EQ(store_->used_bytes(), chunk);
}

TEST_P(chunk_store_test, storing_a_present_chunk_again_counts_once) {
  const oci::digest d = digest_n(1);
  const std::string blob = pattern(1, 2 * chunk);
  for (int round = 0; round < 3; ++round) {
    ASSERT_TRUE(store_->put_chunk(d, blob.size(), chunk, 1, chunk_of(blob, chunk, 1)).ok());
  }
  EXPECT_EQ(store_->used_bytes(), chunk);
  EXPECT_EQ(store_->blob(d)->stored_bytes, chunk);
}

TEST_P(chunk_store_test, mark_verified) {
  const oci::digest d = digest_n(1);
  EXPECT_EQ(store_->mark_verified(d).code, errc::not_found);
  (void)put_blob(d, 1, chunk + 1);
  EXPECT_FALSE(store_->blob(d)->verified);
  ASSERT_TRUE(store_->mark_verified(d).ok());
  EXPECT_TRUE(store_->blob(d)->verified);
  EXPECT_EQ(store_->blob(d)->stored_bytes, chunk + 1U);
}

// Until a blob is verified, its chunks come from the origin that created its record only.
TEST_P(chunk_store_test, an_unverified_blob_takes_chunks_from_its_own_origin_only) {
  const oci::digest d = digest_n(1);
  const std::string a(chunk, 'a');
  ASSERT_TRUE(store_->put_chunk(d, 3 * chunk, chunk, 0, a, 7).ok());
  EXPECT_EQ(store_->blob(d)->origin, 7U);
  EXPECT_EQ(store_->put_chunk(d, 3 * chunk, chunk, 1, a, 8).code, errc::invalid_argument);
  EXPECT_FALSE(store_->has_chunk(d, 1));
  ASSERT_TRUE(store_->put_chunk(d, 3 * chunk, chunk, 1, a, 7).ok());
  ASSERT_TRUE(store_->put_chunk(d, 3 * chunk, chunk, 2, a, 7).ok());
  ASSERT_TRUE(store_->mark_verified(d).ok());
  // Verified: whole, and anyone's (a present chunk is a no-op for any origin).
  EXPECT_TRUE(store_->put_chunk(d, 3 * chunk, chunk, 0, a, 8).ok());
  // A record of no origin is taken by the first that stores into it.
  const oci::digest e = digest_n(2);
  ASSERT_TRUE(store_->put_chunk(e, 2 * chunk, chunk, 0, a).ok());
  ASSERT_TRUE(store_->put_chunk(e, 2 * chunk, chunk, 1, a, 9).ok());
  EXPECT_EQ(store_->blob(e)->origin, 9U);
}

TEST_P(chunk_store_test, erase_blob_removes_chunks_and_bytes) {
  const oci::digest d = digest_n(1);
  const oci::digest kept = digest_n(2);
  (void)put_blob(d, 1, 3 * chunk);
  const std::string other = put_blob(kept, 2, chunk + 7);
  EXPECT_EQ(store_->used_bytes(), 4U * chunk + 7);

  ASSERT_TRUE(store_->erase_blob(d).ok());
  EXPECT_FALSE(store_->blob(d).has_value());
  EXPECT_THAT(store_->present_chunks(d), IsEmpty());
  EXPECT_FALSE(store_->has_chunk(d, 0));
  std::string got;
  EXPECT_EQ(store_->get_chunk(d, 2, got).code, errc::not_found);
  EXPECT_EQ(store_->used_bytes(), chunk + 7U);
  EXPECT_EQ(store_->erase_blob(d).code, errc::not_found);

  ASSERT_TRUE(store_->get_chunk(kept, 1, got).ok());
  EXPECT_EQ(got, other.substr(chunk));

  // Stored again from scratch, possibly with another chunk size.
  (void)put_blob(d, 1, 3 * chunk, 2 * chunk);
  EXPECT_EQ(store_->blob(d)->chunk_size, 2 * chunk);
  EXPECT_THAT(store_->present_chunks(d), ElementsAre(0U, 1U));
}

TEST_P(chunk_store_test, memory_cache_serves_admitted_chunks_and_forgets_erased_blobs) {
  store_.reset();
  store_ = open_store(GetParam(), (dir_.path() / "db").string(), 64ULL << 20, clock_.fn(),
                      3 * chunk);  // room for three chunks
  const oci::digest d = digest_n(1);
  const std::string blob = put_blob(d, 1, 5 * chunk);
  cache::shared_chunk got;

  // Read whole for the first time (and let go of): not kept.
  ASSERT_TRUE(store_->get_chunk_shared(d, 0, false, got).ok());
  EXPECT_EQ(got->bytes, chunk_of(blob, chunk, 0));
  got.reset();
  EXPECT_EQ(store_->stats().memory_hits, 0U);
  EXPECT_EQ(store_->stats().memory_bytes, 0U);

  // Admitted: a later read shares the first one's bytes, after the first reader let go.
  ASSERT_TRUE(store_->get_chunk_shared(d, 1, true, got).ok());
  const chunk_bytes* first = got.get();
  got.reset();
  ASSERT_TRUE(store_->get_chunk_shared(d, 1, false, got).ok());
  EXPECT_EQ(got.get(), first);
  EXPECT_EQ(got->bytes, chunk_of(blob, chunk, 1));
  EXPECT_EQ(store_->stats().memory_hits, 1U);

  // Bounded: five admitted chunks, three kept, least recently used out first.
  for (std::uint32_t i = 0; i < 5; ++i) {
    ASSERT_TRUE(store_->get_chunk_shared(d, i, true, got).ok());
    EXPECT_EQ(got->bytes, chunk_of(blob, chunk, i));
  }
  EXPECT_EQ(store_->stats().memory_bytes, 3U * chunk);
  const auto hits = store_->stats().memory_hits;
  ASSERT_TRUE(store_->get_chunk_shared(d, 4, false, got).ok());
  EXPECT_EQ(store_->stats().memory_hits, hits + 1);
  ASSERT_TRUE(store_->get_chunk_shared(d, 0, false, got).ok());
  EXPECT_EQ(store_->stats().memory_hits, hits + 1) << "chunk 0 was the least recently used";

  // A purged blob (its bytes may have been wrong) is not served from memory.
  ASSERT_TRUE(store_->erase_blob(d).ok());
  EXPECT_EQ(store_->stats().memory_bytes, 0U);
  EXPECT_EQ(store_->get_chunk_shared(d, 4, true, got).code, errc::not_found);
}

// A chunk read whole (a pull) is kept from its second read on, if that comes while the first
// is among the recent whole reads (twice the capacity's worth): an image pulled again is served
// from memory, and one pull bigger than that passes without flushing what is kept.
TEST_P(chunk_store_test, whole_chunk_reads_are_kept_from_their_second_read_on) {
  store_.reset();
  store_ = open_store(GetParam(), (dir_.path() / "db").string(), 64ULL << 20, clock_.fn(),
                      3 * chunk);  // room for three chunks; six remembered
  const oci::digest d = digest_n(1);
  const std::string blob = put_blob(d, 1, 12 * chunk);
  auto read_whole = [&](std::uint32_t i) {
    cache::shared_chunk got;
    EXPECT_TRUE(store_->get_chunk_shared(d, i, false, got).ok());
    EXPECT_EQ(got->bytes, chunk_of(blob, chunk, i));
    return got.get();  // let go of: only the memory cache may keep it
  };
  (void)read_whole(0);
  EXPECT_EQ(store_->stats().memory_bytes, 0U);
  const chunk_bytes* second = read_whole(0);
  EXPECT_EQ(store_->stats().memory_bytes, std::uint64_t{chunk});
  EXPECT_EQ(store_->stats().memory_hits, 0U);
  EXPECT_EQ(read_whole(0), second);
  EXPECT_EQ(store_->stats().memory_hits, 1U);

  // A scan of nine chunks read once: none kept (chunk 0 stays), and only the last six are
  // remembered.
  for (std::uint32_t i = 1; i <= 9; ++i) (void)read_whole(i);
  EXPECT_EQ(store_->stats().memory_bytes, std::uint64_t{chunk});
  (void)read_whole(0);
  EXPECT_EQ(store_->stats().memory_hits, 2U);
  (void)read_whole(1);  // forgotten: remembered again, not kept
  EXPECT_EQ(store_->stats().memory_bytes, std::uint64_t{chunk});
  (void)read_whole(9);  // still remembered: kept
  EXPECT_EQ(store_->stats().memory_bytes, 2U * chunk);

  // A purge forgets the reads too: the blob stored again starts over.
  ASSERT_TRUE(store_->erase_blob(d).ok());
  EXPECT_EQ(store_->stats().memory_bytes, 0U);
  const std::string other = put_blob(d, 2, 12 * chunk);
  cache::shared_chunk got;
  ASSERT_TRUE(store_->get_chunk_shared(d, 8, false, got).ok());
  EXPECT_EQ(got->bytes, chunk_of(other, chunk, 8));
  got.reset();
  EXPECT_EQ(store_->stats().memory_bytes, 0U) << "chunk 8's first read was before the purge";
}

// A chunk some reader still holds is handed to the next reader too, with no store read and no
// checksum, memory cache or not: readers side by side (a herd, parallel pulls) read each chunk
// about once. Let go of, it is read again; a purge is never served from a holder's copy.
TEST_P(chunk_store_test, a_chunk_a_reader_holds_is_shared_with_the_next) {
  const oci::digest d = digest_n(1);
  const std::string blob = put_blob(d, 1, 3 * chunk);
  cache::shared_chunk held;
  ASSERT_TRUE(store_->get_chunk_shared(d, 0, false, held).ok());
  EXPECT_EQ(store_->stats().memory_misses, 1U);
  for (int i = 0; i < 3; ++i) {
    cache::shared_chunk again;
    ASSERT_TRUE(store_->get_chunk_shared(d, 0, false, again).ok());
    EXPECT_EQ(again.get(), held.get());
    EXPECT_NE(store_->memory_chunk(d, 0), nullptr);  // I/O threads find it too
  }
  EXPECT_EQ(store_->stats().memory_shared, 6U);
  EXPECT_EQ(store_->stats().memory_hits, 0U) << "the memory cache's own hits stay its own";
  EXPECT_EQ(store_->stats().memory_misses, 1U);
  EXPECT_EQ(store_->stats().memory_bytes, 0U) << "held chunks take no memory-cache room";

  held.reset();
  EXPECT_EQ(store_->memory_chunk(d, 0), nullptr);
  ASSERT_TRUE(store_->get_chunk_shared(d, 0, false, held).ok());
  EXPECT_EQ(held->bytes, chunk_of(blob, chunk, 0));
  EXPECT_EQ(store_->stats().memory_misses, 2U);

  // Purged while held (its bytes may have been wrong), stored again with other bytes: the
  // next reader gets the new ones, not the holder's.
  ASSERT_TRUE(store_->erase_blob(d).ok());
  const std::string other = put_blob(d, 2, 3 * chunk);
  cache::shared_chunk fresh;
  ASSERT_TRUE(store_->get_chunk_shared(d, 0, false, fresh).ok());
  EXPECT_NE(fresh.get(), held.get());
  EXPECT_EQ(fresh->bytes, chunk_of(other, chunk, 0));
  EXPECT_EQ(held->bytes, chunk_of(blob, chunk, 0));  // still valid for its holder
}

// Chunks are kept in memory by the memory cache alone: a chunk read from disk does not also go
// into RocksDB's block cache, where the memory cache's pin made it count a second time (with
// both caches full, the block cache had no room left and the two together held only as many
// chunks as one).
TEST_P(chunk_store_test, chunk_reads_leave_the_block_cache_to_the_memory_cache) {
  const oci::digest d = digest_n(1);
  const std::uint32_t n = 40;              // 2.5 MiB of chunks; the block cache has 8 MiB
  if (GetParam() == kind::memory) return;  // no block cache, and nothing survives a reopen
  const std::string blob = put_blob(d, 1, std::size_t{n} * chunk);
  store_.reset();  // flushed to table files: reads now come from disk, not memtables
  store_ =
      open_store(GetParam(), (dir_.path() / "db").string(), 64ULL << 20, clock_.fn(), 4 * chunk);
  std::vector<cache::shared_chunk> held;
  for (std::uint32_t i = 0; i < n; ++i) {
    cache::shared_chunk got;
    ASSERT_TRUE(store_->get_chunk_shared(d, i, i % 2 == 0, got).ok());
    EXPECT_EQ(got->bytes, chunk_of(blob, chunk, i));
    held.push_back(std::move(got));
    std::string copy;
    ASSERT_TRUE(store_->get_chunk(d, i, copy).ok());
    EXPECT_EQ(copy, chunk_of(blob, chunk, i));
  }
  const store_stats s = store_->stats();
  EXPECT_EQ(s.memory_bytes, 4U * chunk);
  EXPECT_LT(s.block_cache_bytes, std::uint64_t{chunk}) << "chunks were put in the block cache";
}

// Stored chunks wait in memtables until a flush: the store says how many bytes (they are
// resident memory beyond the configured caches), and none once they are in table files.
TEST_P(chunk_store_test, stats_count_chunks_not_yet_flushed) {
  const oci::digest d = digest_n(1);
  const std::size_t bytes = 6 * chunk;
  (void)put_blob(d, 1, bytes);
  if (GetParam() == kind::memory) {
    EXPECT_EQ(store_->stats().write_buffer_bytes, 0U);  // it has no memtables
    return;
  }
  EXPECT_GE(store_->stats().write_buffer_bytes, bytes);
  store_.reset();  // flushed on close
  store_ = open_store(GetParam(), (dir_.path() / "db").string(), 64ULL << 20, clock_.fn());
  EXPECT_LT(store_->stats().write_buffer_bytes, std::uint64_t{chunk});
}

TEST_P(chunk_store_test, manifests_round_trip) {
  const oci::digest d = digest_n(1);
  EXPECT_FALSE(store_->manifest(d).has_value());
  const std::string bytes = std::string("{\"schemaVersion\":2}\0\xff", 22);
  ASSERT_TRUE(store_->put_manifest(d, "application/vnd.oci.image.manifest.v1+json", bytes).ok());
  auto m = store_->manifest(d);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->media_type, "application/vnd.oci.image.manifest.v1+json");
  EXPECT_EQ(m->bytes, bytes);

  ASSERT_TRUE(store_->put_manifest(digest_n(2), "", "").ok());
  m = store_->manifest(digest_n(2));
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->media_type, "");
  EXPECT_EQ(m->bytes, "");
  // Manifests do not count against capacity.
  EXPECT_EQ(store_->used_bytes(), 0U);
}

TEST_P(chunk_store_test, tags_round_trip) {
  const std::string key = std::string("docker.io\0library/alpine\0latest\0oci", 36);
  EXPECT_FALSE(store_->tag(key).has_value());
  ASSERT_TRUE(store_->put_tag(key, tag_record{digest_n(1), 1'700'000'123}).ok());
  auto t = store_->tag(key);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->digest, digest_n(1));
  EXPECT_EQ(t->fetched_at, 1'700'000'123);

  ASSERT_TRUE(
      store_->put_tag(key, tag_record{digest_n(2, oci::digest_algorithm::sha512), -5}).ok());
  t = store_->tag(key);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->digest, digest_n(2, oci::digest_algorithm::sha512));
  EXPECT_EQ(t->fetched_at, -5);
  EXPECT_FALSE(store_->tag(key.substr(0, 10)).has_value());
}

TEST_P(chunk_store_test, used_bytes_accounting) {
  EXPECT_EQ(store_->used_bytes(), 0U);
  EXPECT_EQ(store_->capacity(), 64ULL << 20);
  (void)put_blob(digest_n(1), 1, 100);
  (void)put_blob(digest_n(2), 2, 2 * chunk + 100);
  EXPECT_EQ(store_->used_bytes(), 2U * chunk + 200);
  ASSERT_TRUE(store_->erase_blob(digest_n(1)).ok());
  EXPECT_EQ(store_->used_bytes(), 2U * chunk + 100);
  ASSERT_TRUE(store_->erase_blob(digest_n(2)).ok());
  EXPECT_EQ(store_->used_bytes(), 0U);
}

TEST_P(chunk_store_test, touch_records_hits_and_time) {
  const oci::digest d = digest_n(1);
  store_->touch(d);  // unknown: ignored
  EXPECT_FALSE(store_->blob(d).has_value());
  (void)put_blob(d, 1, 10);
  const std::uint64_t created = clock_.now->load();
  clock_.advance(100);
  store_->touch(d);
  store_->touch(d);
  auto r = store_->blob(d);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->hits, 2U);
  EXPECT_EQ(r->last_access, created + 100);
  // A chunk written later keeps the touches.
  ASSERT_TRUE(store_->mark_verified(d).ok());
  EXPECT_EQ(store_->blob(d)->hits, 2U);
}

// The lookups an I/O thread may make: no disk, no wait for a writer.
TEST_P(chunk_store_test, non_blocking_lookups_for_io_threads) {
  store_.reset();
  store_ =
      open_store(GetParam(), (dir_.path() / "db").string(), 64ULL << 20, clock_.fn(), 4 * chunk);
  const oci::digest d = digest_n(1);
  std::optional<blob_record> r{blob_record{}};
  ASSERT_TRUE(store_->try_blob(d, r));
  EXPECT_FALSE(r.has_value());
  EXPECT_TRUE(store_->try_touch(d));  // unknown: nothing to record
  const std::string blob = put_blob(d, 1, 2 * chunk);
  ASSERT_TRUE(store_->try_blob(d, r));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->size, 2U * chunk);

  clock_.advance(100);
  ASSERT_TRUE(store_->try_touch(d));
  EXPECT_EQ(store_->blob(d)->hits, 1U);
  EXPECT_EQ(store_->blob(d)->last_access, clock_.now->load());

  // Only what a read admitted is in memory; looking does not count as a miss.
  EXPECT_EQ(store_->memory_chunk(d, 1), nullptr);
  EXPECT_EQ(store_->stats().memory_misses, 0U);
  shared_chunk read;
  ASSERT_TRUE(store_->get_chunk_shared(d, 1, true, read).ok());
  auto seen = store_->memory_chunk(d, 1);
  ASSERT_NE(seen, nullptr);
  EXPECT_EQ(seen.get(), read.get());
  EXPECT_EQ(seen->bytes, chunk_of(blob, chunk, 1));
  EXPECT_EQ(store_->stats().memory_hits, 1U);
  EXPECT_EQ(store_->stats().memory_misses, 1U);
}

// A touch that would have to write the batch of dirty records (disk I/O) is refused, and
// done by touch() instead.
TEST_P(chunk_store_test, try_touch_leaves_a_flush_to_touch) {
  std::vector<oci::digest> blobs;
  for (std::uint64_t i = 1; i <= 64; ++i) {
    blobs.push_back(digest_n(i));
    (void)put_blob(blobs.back(), i, 10);
  }
  bool refused = false;
  for (const auto& d : blobs) {
    if (!store_->try_touch(d)) {
      refused = true;
      store_->touch(d);
    }
  }
  EXPECT_TRUE(refused) << "64 dirty records fill a batch";
  for (const auto& d : blobs) EXPECT_EQ(store_->blob(d)->hits, 1U) << d.str();
}

TEST_P(chunk_store_test, eviction_is_least_recently_used_first) {
  const oci::digest a = digest_n(1);
  const oci::digest b = digest_n(2);
  const oci::digest c = digest_n(3);
  (void)put_blob(a, 1, 2 * chunk);
  clock_.advance(1);
  (void)put_blob(b, 2, 2 * chunk);
  clock_.advance(1);
  (void)put_blob(c, 3, 2 * chunk);
  store_->touch(a);  // a is now the most recent: b, c, a

  EXPECT_EQ(store_->evict_to(4 * chunk, nullptr), 2U * chunk);
  EXPECT_FALSE(store_->blob(b).has_value());
  EXPECT_TRUE(store_->blob(a).has_value());
  EXPECT_TRUE(store_->blob(c).has_value());

  EXPECT_EQ(store_->evict_to(2 * chunk + 1, nullptr), 2U * chunk);
  EXPECT_FALSE(store_->blob(c).has_value());
  EXPECT_TRUE(store_->blob(a).has_value());
  EXPECT_EQ(store_->used_bytes(), 2U * chunk);
  EXPECT_EQ(store_->evict_to(2 * chunk, nullptr), 0U);
  EXPECT_EQ(store_->evict_to(0, nullptr), 2U * chunk);
  EXPECT_EQ(store_->used_bytes(), 0U);
  EXPECT_THAT(store_->present_chunks(a), IsEmpty());
}

TEST_P(chunk_store_test, touches_within_one_second_still_order) {
  const oci::digest a = digest_n(1);
  const oci::digest b = digest_n(2);
  (void)put_blob(a, 1, chunk);
  (void)put_blob(b, 2, chunk);
  store_->touch(b);
  store_->touch(a);
  EXPECT_EQ(store_->evict_to(chunk, nullptr), chunk);
  EXPECT_FALSE(store_->blob(b).has_value());
  EXPECT_TRUE(store_->blob(a).has_value());
}

TEST_P(chunk_store_test, hot_blobs_are_evicted_after_every_cold_one) {
  const oci::digest a = digest_n(1);
  const oci::digest b = digest_n(2);
  const oci::digest c = digest_n(3);
  (void)put_blob(a, 1, chunk);
  clock_.advance(1);
  (void)put_blob(b, 2, chunk);
  clock_.advance(1);
  (void)put_blob(c, 3, chunk);
  // LRU order a, b, c; a is named by an access profile.
  store_->set_hot([&](const oci::digest& d) {
    return d == a ? chunk_store::byte_ranges{{0, 100}} : chunk_store::byte_ranges{};
  });
  EXPECT_EQ(store_->evict_to(chunk, nullptr), 2U * chunk);
  EXPECT_TRUE(store_->blob(a).has_value()) << "a hot blob went before cold ones";
  EXPECT_FALSE(store_->blob(b).has_value());
  EXPECT_FALSE(store_->blob(c).has_value());
  // With nothing cold left, hot blobs go too (least recently used first).
  EXPECT_EQ(store_->evict_to(0, nullptr), chunk);
  EXPECT_FALSE(store_->blob(a).has_value());
}

TEST_P(chunk_store_test, a_hot_blob_loses_its_cold_chunks_before_it_goes) {
  const oci::digest a = digest_n(1);
  const oci::digest b = digest_n(2);
  const std::string data = put_blob(a, 1, 4 * chunk);  // chunks 0..3
  ASSERT_TRUE(store_->mark_verified(a).ok());
  clock_.advance(1);
  (void)put_blob(b, 2, chunk);
  store_->touch(b);
  // A profile names bytes inside chunk 1 and the first byte of chunk 3.
  store_->set_hot([&](const oci::digest& d) {
    return d == a ? chunk_store::byte_ranges{{chunk + 10, chunk + 21}, {3 * chunk, 3 * chunk + 1}}
                  : chunk_store::byte_ranges{};
  });
  // Cold blob b goes first although more recent, then a's cold chunks (0 and 2); its hot
  // chunks stay.
  EXPECT_EQ(store_->evict_to(3 * chunk, nullptr), 3U * chunk);
  EXPECT_FALSE(store_->blob(b).has_value());
  ASSERT_TRUE(store_->blob(a).has_value());
  EXPECT_THAT(store_->present_chunks(a), ElementsAre(1u, 3u));
  EXPECT_EQ(store_->blob(a)->stored_bytes, 2U * chunk);
  EXPECT_FALSE(store_->blob(a)->verified) << "a trimmed blob is not whole";
  EXPECT_EQ(store_->used_bytes(), 2U * chunk);
  std::string got;
  ASSERT_TRUE(store_->get_chunk(a, 1, got).ok());
  EXPECT_EQ(got, data.substr(chunk, chunk));
  // The trim is durable: a reopened store agrees.
  if (GetParam() != kind::memory) {
    reopen();
    ASSERT_TRUE(store_->blob(a).has_value());
    EXPECT_EQ(store_->blob(a)->stored_bytes, 2U * chunk);
    EXPECT_EQ(store_->used_bytes(), 2U * chunk);
    EXPECT_THAT(store_->present_chunks(a), ElementsAre(1u, 3u));
  }
  // Beyond that, hot a goes whole.
  store_->set_hot([&](const oci::digest& d) {
    return d == a ? chunk_store::byte_ranges{{chunk + 10, chunk + 21}} : chunk_store::byte_ranges{};
  });
  EXPECT_EQ(store_->evict_to(0, nullptr), 2U * chunk);
  EXPECT_FALSE(store_->blob(a).has_value());
}

TEST_P(chunk_store_test, put_chunk_evicts_cold_blobs_to_make_room_before_hot_ones) {
  const oci::digest a = digest_n(1);
  const oci::digest b = digest_n(2);
  store_->set_capacity(2 * chunk);
  store_->set_hot([&](const oci::digest& d) {
    return d == a ? chunk_store::byte_ranges{{0, 100}} : chunk_store::byte_ranges{};
  });
  (void)put_blob(a, 1, chunk);
  clock_.advance(1);
  (void)put_blob(b, 2, chunk);
  const oci::digest c = digest_n(3);
  (void)put_blob(c, 3, chunk);  // needs room: b (cold) goes although a is older
  EXPECT_TRUE(store_->blob(a).has_value());
  EXPECT_FALSE(store_->blob(b).has_value());
  EXPECT_TRUE(store_->blob(c).has_value());
}

TEST_P(chunk_store_test, pinned_blobs_are_spared) {
  const oci::digest a = digest_n(1);
  const oci::digest b = digest_n(2);
  const oci::digest c = digest_n(3);
  (void)put_blob(a, 1, chunk);
  (void)put_blob(b, 2, chunk);
  (void)put_blob(c, 3, chunk);
  std::vector<oci::digest> asked;
  auto pinned = [&](const oci::digest& d) {
    asked.push_back(d);
    return d == a || d == b;
  };
  EXPECT_EQ(store_->evict_to(0, pinned), chunk);
  EXPECT_TRUE(store_->blob(a).has_value());
  EXPECT_TRUE(store_->blob(b).has_value());
  EXPECT_FALSE(store_->blob(c).has_value());
  EXPECT_EQ(asked, (std::vector<oci::digest>{a, b, c}));
  EXPECT_EQ(store_->used_bytes(), 2U * chunk);
}

TEST_P(chunk_store_test, capacity_is_enforced_by_evicting) {
  reopen(4 * chunk);
  const oci::digest a = digest_n(1);
  const oci::digest b = digest_n(2);
  const oci::digest c = digest_n(3);
  (void)put_blob(a, 1, 2 * chunk);
  (void)put_blob(b, 2, 2 * chunk);
  EXPECT_EQ(store_->used_bytes(), 4U * chunk);
  store_->touch(a);  // b is now the least recently used
  const std::string blob_c = pattern(3, chunk);
  ASSERT_TRUE(store_->put_chunk(c, chunk, chunk, 0, blob_c).ok());
  EXPECT_FALSE(store_->blob(b).has_value());
  EXPECT_TRUE(store_->blob(a).has_value());
  EXPECT_EQ(store_->used_bytes(), 3U * chunk);
  EXPECT_LE(store_->used_bytes(), store_->capacity());
}

TEST_P(chunk_store_test, profiles_round_trip_and_list) {
  const oci::digest m1 = digest_n(11);
  const oci::digest m2 = digest_n(12);
  EXPECT_FALSE(store_->profile(m1).has_value());
  ASSERT_TRUE(store_->put_profile(m1, "{\"one\":1}").ok());
  ASSERT_TRUE(store_->put_profile(m2, "two").ok());
  ASSERT_TRUE(store_->put_profile(m2, "two, again").ok());
  EXPECT_EQ(store_->profile(m1), "{\"one\":1}");
  EXPECT_EQ(store_->profile(m2), "two, again");
  auto listed = store_->profiles();
  std::sort(listed.begin(), listed.end(),
            [](const oci::digest& a, const oci::digest& b) { return a.str() < b.str(); });
  std::vector<oci::digest> expected{m1, m2};
  std::sort(expected.begin(), expected.end(),
            [](const oci::digest& a, const oci::digest& b) { return a.str() < b.str(); });
  EXPECT_EQ(listed, expected);
  EXPECT_EQ(store_->used_bytes(), 0U);  // profiles are not chunk bytes
  ASSERT_TRUE(store_->erase_profile(m1).ok());
  EXPECT_EQ(store_->erase_profile(m1).code, errc::not_found);
  EXPECT_FALSE(store_->profile(m1).has_value());
  if (GetParam() == kind::memory) return;  // nothing survives a reopen
  reopen();
  EXPECT_EQ(store_->profile(m2), "two, again");
  EXPECT_EQ(store_->profiles().size(), 1U);
}

TEST_P(chunk_store_test, stats_count_blobs_chunks_and_evictions) {
  const oci::digest a = digest_n(1);
  const oci::digest b = digest_n(2);
  (void)put_blob(a, 1, 2 * chunk + 10);  // 3 chunks, the last short
  clock_.advance(1);
  ASSERT_TRUE(store_->put_chunk(b, 3 * chunk, chunk, 1, pattern(2, chunk)).ok());
  ASSERT_TRUE(store_->mark_verified(a).ok());
  store_stats s = store_->stats();
  EXPECT_EQ(s.blobs, 2U);
  EXPECT_EQ(s.verified_blobs, 1U);
  EXPECT_EQ(s.chunks, 4U);
  EXPECT_EQ(s.used_bytes, 3U * chunk + 10);
  EXPECT_EQ(s.capacity, 64ULL << 20);
  EXPECT_EQ(s.evicted_blobs, 0U);

  const auto listed = store_->list_blobs();  // most recent first
  ASSERT_EQ(listed.size(), 2U);
  EXPECT_EQ(listed[0].digest, b);
  EXPECT_EQ(listed[1].digest, a);
  EXPECT_EQ(listed[1].record.size, 2U * chunk + 10);
  EXPECT_TRUE(listed[1].record.verified);

  EXPECT_EQ(store_->evict_to(chunk, nullptr), 2U * chunk + 10);
  s = store_->stats();
  EXPECT_EQ(s.blobs, 1U);
  EXPECT_EQ(s.chunks, 1U);
  EXPECT_EQ(s.evicted_blobs, 1U);
  EXPECT_EQ(s.evicted_bytes, 2U * chunk + 10);
}

TEST_P(chunk_store_test, set_capacity_shrinks_by_evicting_and_grows) {
  const oci::digest a = digest_n(1);
  const oci::digest b = digest_n(2);
  (void)put_blob(a, 1, 2 * chunk);
  clock_.advance(1);
  (void)put_blob(b, 2, 2 * chunk);
  store_->set_capacity(3 * chunk);
  EXPECT_EQ(store_->capacity(), 3U * chunk);
  EXPECT_FALSE(store_->blob(a).has_value());
  EXPECT_TRUE(store_->blob(b).has_value());
  EXPECT_EQ(store_->used_bytes(), 2U * chunk);
  // Full at 3 chunks: a third and fourth chunk of another blob evict b.
  const oci::digest c = digest_n(3);
  (void)put_blob(c, 3, 2 * chunk);
  EXPECT_FALSE(store_->blob(b).has_value());
  store_->set_capacity(8 * chunk);
  (void)put_blob(a, 1, 2 * chunk);
  (void)put_blob(b, 2, 2 * chunk);
  EXPECT_EQ(store_->used_bytes(), 6U * chunk);
  EXPECT_EQ(store_->stats().blobs, 3U);
}

TEST_P(chunk_store_test, a_blob_larger_than_capacity_gets_no_space) {
  reopen(4 * chunk);
  const oci::digest other = digest_n(2);
  (void)put_blob(other, 2, chunk);
  const oci::digest big = digest_n(1);
  const std::size_t size = 5 * chunk;
  const std::string blob = pattern(1, size);
  for (std::uint32_t i = 0; i < 4; ++i) {
    ASSERT_TRUE(store_->put_chunk(big, size, chunk, i, chunk_of(blob, chunk, i)).ok()) << i;
  }
  // `other` made room; the blob being written is never evicted for itself.
  EXPECT_FALSE(store_->blob(other).has_value());
  status s = store_->put_chunk(big, size, chunk, 4, chunk_of(blob, chunk, 4));
  EXPECT_EQ(s.code, errc::no_space);
  EXPECT_THAT(store_->present_chunks(big), ElementsAre(0U, 1U, 2U, 3U));
  EXPECT_EQ(store_->used_bytes(), 4U * chunk);
}

TEST_P(chunk_store_test, pinned_blobs_can_leave_no_space) {
  reopen(2 * chunk);
  (void)put_blob(digest_n(1), 1, 2 * chunk);
  EXPECT_EQ(store_->evict_to(0, [](const oci::digest&) { return true; }), 0U);
  EXPECT_EQ(store_->used_bytes(), 2U * chunk);
}

// Bounded loops of puts and gets from 8 threads: some on their own blobs, all on a shared one.
TEST_P(chunk_store_test, concurrent_puts_and_gets) {
  const oci::digest shared = digest_n(1000);
  const std::size_t shared_size = 8 * chunk;
  const std::string shared_blob = pattern(1000, shared_size);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      const oci::digest own = digest_n(t);
      const std::string own_blob = pattern(static_cast<std::uint64_t>(t), 4 * chunk);
      std::string got;
      for (int round = 0; round < 20; ++round) {
        const auto i = static_cast<std::uint32_t>((round + t) % 8);
        if (!store_->put_chunk(shared, shared_size, chunk, i, chunk_of(shared_blob, chunk, i))
                 .ok()) {
          ++failures;
        }
        if (!store_->get_chunk(shared, i, got).ok() || got != chunk_of(shared_blob, chunk, i)) {
          ++failures;
        }
        const auto j = static_cast<std::uint32_t>(round % 4);
        if (!store_->put_chunk(own, own_blob.size(), chunk, j, chunk_of(own_blob, chunk, j)).ok()) {
          ++failures;
        }
        if (!store_->get_chunk(own, j, got).ok() || got != chunk_of(own_blob, chunk, j)) {
          ++failures;
        }
        store_->touch(own);
        (void)store_->present_chunks(shared);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(store_->blob(shared)->stored_bytes, shared_size);
  EXPECT_EQ(store_->used_bytes(), shared_size + 8U * 4 * chunk);
}

INSTANTIATE_TEST_SUITE_P(backends, chunk_store_test,
                         ::testing::Values(kind::memory, kind::rocksdb_sst,
                                           kind::rocksdb_blob_files),
                         [](const auto& info) { return name_of(info.param); });

// ---- RocksDB only: what must survive a restart, and damage on disk

class rocksdb_store_test : public ::testing::Test {
 protected:
  [[nodiscard]] std::string db_path() const { return (dir_.path() / "db").string(); }

  std::unique_ptr<chunk_store> open(std::uint64_t capacity = 64ULL << 20) {
    return open_store(kind::rocksdb_sst, db_path(), capacity, clock_.fn());
  }

  // Runs `fn` on a raw handle to the (closed) store's database and its column families.
  template <class Fn>
  void with_raw_db(Fn fn) {
    std::vector<std::string> names;
    ASSERT_TRUE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), db_path(), &names).ok());
    std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
    for (const auto& n : names) descriptors.emplace_back(n, rocksdb::ColumnFamilyOptions());
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* db = nullptr;
    ASSERT_TRUE(
        rocksdb::DB::Open(rocksdb::DBOptions(), db_path(), descriptors, &handles, &db).ok());
    auto cf = [&](const std::string& name) {
      for (std::size_t i = 0; i < names.size(); ++i) {
        if (names[i] == name) return handles[i];
      }
      ADD_FAILURE() << "no column family " << name;
      return handles[0];
    };
    fn(*db, cf);
    for (auto* h : handles) ASSERT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
    ASSERT_TRUE(db->Close().ok());
    delete db;
  }

  // Where the store keeps blob records: in the chunks family, after 8 zero bytes
  // (rocksdb_backend.cpp, record_prefix).
  static std::string record_key(const oci::digest& d) { return std::string(8, '\0') + d.raw(); }
  // Where it keeps segment `s` of a blob's presence: beside the record (records.hpp).
  static std::string presence_at(const oci::digest& d, std::uint32_t s) {
    return std::string(8, '\0') + presence_key(d.raw(), s);
  }

  temp_dir dir_;
  fake_clock clock_;
};

// A chunk read from a table file is RocksDB's block itself, pinned: two reads held at once
// point at the same bytes (a copy per read was 10% of a warm pull's CPU).
TEST_F(rocksdb_store_test, chunk_reads_pin_the_block_instead_of_copying) {
  const store_options options{.path = db_path(), .capacity = 64ULL << 20, .block_cache = 8 << 20};
  const std::string key = digest_n(1).raw() + std::string("\0\0\0\0", 4);
  const std::string value = pattern(1, 4 + chunk);
  {
    auto b = detail::open_rocksdb_backend(options);
    auto batch = b->make_batch();
    batch->put(detail::family::chunks, key, value);
    ASSERT_TRUE(b->write(*batch).ok());
  }  // closed: flushed to a table file
  auto b = detail::open_rocksdb_backend(options);
  std::shared_ptr<const void> owner_a;
  std::shared_ptr<const void> owner_b;
  std::string_view a;
  std::string_view bv;
  ASSERT_TRUE(b->read_shared(detail::family::chunks, key, owner_a, a).ok());
  ASSERT_TRUE(b->read_shared(detail::family::chunks, key, owner_b, bv).ok());
  EXPECT_EQ(a, value);
  EXPECT_EQ(a.data(), bv.data()) << "chunk bytes were copied out of RocksDB";
  EXPECT_LT(b->block_cache_bytes(), std::uint64_t{chunk}) << "a chunk went to the block cache";
}

TEST_F(rocksdb_store_test, reopening_keeps_everything) {
  const oci::digest a = digest_n(1);
  const oci::digest b = digest_n(2);
  const std::string blob_a = pattern(1, 3 * chunk + 5);
  {
    auto store = open();
    for (std::uint32_t i : {0U, 1U, 3U}) {
      ASSERT_TRUE(store->put_chunk(a, blob_a.size(), chunk, i, chunk_of(blob_a, chunk, i)).ok());
    }
    ASSERT_TRUE(store->put_chunk(b, 3, chunk, 0, "abc").ok());
    ASSERT_TRUE(store->mark_verified(b).ok());
    clock_.advance(50);
    store->touch(a);  // lazily written: must reach disk on close
    ASSERT_TRUE(store->put_manifest(a, "application/json", "{}").ok());
    ASSERT_TRUE(store->put_tag("k", tag_record{b, 42}).ok());
  }
  auto store = open();
  EXPECT_EQ(store->used_bytes(), 2U * chunk + 5 + 3);
  auto ra = store->blob(a);
  ASSERT_TRUE(ra.has_value());
  EXPECT_EQ(ra->size, blob_a.size());
  EXPECT_EQ(ra->chunk_size, chunk);
  EXPECT_EQ(ra->stored_bytes, 2U * chunk + 5);
  EXPECT_EQ(ra->hits, 1U);
  EXPECT_EQ(ra->last_access, clock_.now->load());
  EXPECT_FALSE(ra->verified);
  EXPECT_TRUE(store->blob(b)->verified);
  EXPECT_THAT(store->present_chunks(a), ElementsAre(0U, 1U, 3U));
  std::string got;
  ASSERT_TRUE(store->get_chunk(a, 3, got).ok());
  EXPECT_EQ(got, blob_a.substr(3 * chunk));
  EXPECT_EQ(store->manifest(a)->bytes, "{}");
  EXPECT_EQ(store->tag("k")->digest, b);
  // The LRU order survives too: b was used longest ago.
  EXPECT_EQ(store->evict_to(2U * chunk + 5, nullptr), 3U);
  EXPECT_FALSE(store->blob(b).has_value());
}

TEST_F(rocksdb_store_test, a_corrupted_chunk_is_detected_and_removed) {
  const oci::digest d = digest_n(1);
  const std::string blob = pattern(1, 2 * chunk);
  {
    auto store = open();
    ASSERT_TRUE(store->put_chunk(d, blob.size(), chunk, 0, chunk_of(blob, chunk, 0)).ok());
    ASSERT_TRUE(store->put_chunk(d, blob.size(), chunk, 1, chunk_of(blob, chunk, 1)).ok());
    ASSERT_TRUE(store->mark_verified(d).ok());
  }
  with_raw_db([&](rocksdb::DB& db, auto cf) {
    std::string key = d.raw();
    key.append("\0\0\0\1", 4);
    std::string value;
    ASSERT_TRUE(db.Get(rocksdb::ReadOptions(), cf("chunks"), key, &value).ok());
    ASSERT_EQ(value.size(), 4U + chunk);
    value[4 + 1000] = static_cast<char>(value[4 + 1000] ^ 0x01);
    ASSERT_TRUE(db.Put(rocksdb::WriteOptions(), cf("chunks"), key, value).ok());
  });
  auto store = open();
  std::string got;
  status s = store->get_chunk(d, 1, got);
  EXPECT_EQ(s.code, errc::corruption);
  EXPECT_THAT(s.message, HasSubstr(d.str()));
  EXPECT_FALSE(store->has_chunk(d, 1));
  EXPECT_THAT(store->present_chunks(d), ElementsAre(0U));
  EXPECT_EQ(store->used_bytes(), chunk);
  EXPECT_EQ(store->blob(d)->stored_bytes, chunk);
  EXPECT_FALSE(store->blob(d)->verified);
  EXPECT_EQ(store->get_chunk(d, 1, got).code, errc::not_found);
  ASSERT_TRUE(store->get_chunk(d, 0, got).ok());
  EXPECT_EQ(store->stats().corrupt_chunks, 1U);

  // Refetched.
  ASSERT_TRUE(store->put_chunk(d, blob.size(), chunk, 1, chunk_of(blob, chunk, 1)).ok());
  ASSERT_TRUE(store->get_chunk(d, 1, got).ok());
  EXPECT_EQ(got, chunk_of(blob, chunk, 1));
  EXPECT_EQ(store->used_bytes(), 2U * chunk);
}

// get_chunk_shared hands out RocksDB's own block (no copy): it stays valid after the store
// that read it is gone (ASan would see a use after free), and a bad one is still caught.
TEST_F(rocksdb_store_test, shared_chunks_outlive_the_store_and_are_checked) {
  const oci::digest d = digest_n(1);
  const std::string blob = pattern(1, 2 * chunk);
  shared_chunk kept;
  {
    auto store = open();
    ASSERT_TRUE(store->put_chunk(d, blob.size(), chunk, 0, chunk_of(blob, chunk, 0)).ok());
    ASSERT_TRUE(store->put_chunk(d, blob.size(), chunk, 1, chunk_of(blob, chunk, 1)).ok());
  }
  {
    auto store = open();  // chunks now come from table files, not the memtable
    ASSERT_TRUE(store->get_chunk_shared(d, 0, true, kept).ok());
  }
  ASSERT_NE(kept, nullptr);
  EXPECT_EQ(kept->bytes, chunk_of(blob, chunk, 0));

  with_raw_db([&](rocksdb::DB& db, auto cf) {
    std::string key = d.raw();
    key.append("\0\0\0\1", 4);
    std::string value;
    ASSERT_TRUE(db.Get(rocksdb::ReadOptions(), cf("chunks"), key, &value).ok());
    value[4 + 7] = static_cast<char>(value[4 + 7] ^ 0x40);
    ASSERT_TRUE(db.Put(rocksdb::WriteOptions(), cf("chunks"), key, value).ok());
    ASSERT_TRUE(db.Flush(rocksdb::FlushOptions(), cf("chunks")).ok());
  });
  auto store = open();
  shared_chunk got;
  EXPECT_EQ(store->get_chunk_shared(d, 1, true, got).code, errc::corruption);
  EXPECT_EQ(store->memory_chunk(d, 1), nullptr);
  EXPECT_EQ(store->get_chunk_shared(d, 1, true, got).code, errc::not_found);
  EXPECT_EQ(store->stats().corrupt_chunks, 1U);
  EXPECT_EQ(kept->bytes, chunk_of(blob, chunk, 0));
}

TEST_F(rocksdb_store_test, a_truncated_chunk_value_is_corruption) {
  const oci::digest d = digest_n(1);
  {
    auto store = open();
    ASSERT_TRUE(store->put_chunk(d, 3, chunk, 0, "abc").ok());
  }
  with_raw_db([&](rocksdb::DB& db, auto cf) {
    std::string key = d.raw();
    key.append(4, '\0');
    ASSERT_TRUE(db.Put(rocksdb::WriteOptions(), cf("chunks"), key, "ab").ok());
  });
  auto store = open();
  std::string got;
  EXPECT_EQ(store->get_chunk(d, 0, got).code, errc::corruption);
  EXPECT_EQ(store->used_bytes(), 0U);
}

TEST_F(rocksdb_store_test, a_missing_used_bytes_counter_is_recomputed) {
  {
    auto store = open();
    ASSERT_TRUE(store->put_chunk(digest_n(1), chunk + 1, chunk, 1, "x").ok());
    ASSERT_TRUE(store->put_chunk(digest_n(2), 2, chunk, 0, "yz").ok());
  }
  with_raw_db([&](rocksdb::DB& db, auto cf) {
    ASSERT_TRUE(db.Delete(rocksdb::WriteOptions(), cf("meta"), "used_bytes").ok());
  });
  EXPECT_EQ(open()->used_bytes(), 3U);
  // And it was written back.
  with_raw_db([&](rocksdb::DB& db, auto cf) {
    std::string value;
    EXPECT_TRUE(db.Get(rocksdb::ReadOptions(), cf("meta"), "used_bytes", &value).ok());
  });
}

TEST_F(rocksdb_store_test, unreadable_blob_records_are_dropped_with_their_chunks) {
  {
    auto store = open();
    ASSERT_TRUE(store->put_chunk(digest_n(1), 3, chunk, 0, "abc").ok());
    ASSERT_TRUE(store->put_chunk(digest_n(2), 2, chunk, 0, "yz").ok());
  }
  with_raw_db([&](rocksdb::DB& db, auto cf) {
    ASSERT_TRUE(
        db.Put(rocksdb::WriteOptions(), cf("chunks"), record_key(digest_n(1)), "junk").ok());
  });
  auto store = open();
  EXPECT_FALSE(store->blob(digest_n(1)).has_value());
  EXPECT_FALSE(store->has_chunk(digest_n(1), 0));
  EXPECT_EQ(store->used_bytes(), 2U);
}

// A store written before records moved into the chunks family (they were in "blobs", flushed
// atomically with the chunks): its records are moved at open and the old family dropped.
TEST_F(rocksdb_store_test, records_of_a_store_from_before_move_into_the_chunks_family) {
  std::string record_of_1;
  {
    auto store = open();
    ASSERT_TRUE(store->put_chunk(digest_n(1), 3, chunk, 0, "abc").ok());
    ASSERT_TRUE(store->mark_verified(digest_n(1)).ok());
    ASSERT_TRUE(store->put_chunk(digest_n(2), 2, chunk, 0, "yz").ok());
  }
  // Make it look as it did: the records in a "blobs" family, none in the chunks family.
  with_raw_db([&](rocksdb::DB& db, auto cf) {
    ASSERT_TRUE(
        db.Get(rocksdb::ReadOptions(), cf("chunks"), record_key(digest_n(1)), &record_of_1).ok());
    rocksdb::ColumnFamilyHandle* blobs = nullptr;
    ASSERT_TRUE(db.CreateColumnFamily(rocksdb::ColumnFamilyOptions(), "blobs", &blobs).ok());
    for (int n : {1, 2}) {
      std::string value;
      ASSERT_TRUE(
          db.Get(rocksdb::ReadOptions(), cf("chunks"), record_key(digest_n(n)), &value).ok());
      ASSERT_TRUE(db.Put(rocksdb::WriteOptions(), blobs, digest_n(n).raw(), value).ok());
      ASSERT_TRUE(db.Delete(rocksdb::WriteOptions(), cf("chunks"), record_key(digest_n(n))).ok());
    }
    ASSERT_TRUE(db.DestroyColumnFamilyHandle(blobs).ok());
  });
  {
    auto store = open();
    ASSERT_TRUE(store->blob(digest_n(1)).has_value());
    EXPECT_TRUE(store->blob(digest_n(1))->verified);
    EXPECT_TRUE(store->blob(digest_n(2)).has_value());
    EXPECT_EQ(store->used_bytes(), 5U);
    std::string out;
    ASSERT_TRUE(store->get_chunk(digest_n(1), 0, out).ok());
    EXPECT_EQ(out, "abc");
  }
  std::vector<std::string> names;
  ASSERT_TRUE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), db_path(), &names).ok());
  EXPECT_EQ(std::count(names.begin(), names.end(), "blobs"), 0) << "the old family stays";
  with_raw_db([&](rocksdb::DB& db, auto cf) {
    std::string value;
    ASSERT_TRUE(db.Get(rocksdb::ReadOptions(), cf("chunks"), record_key(digest_n(1)), &value).ok());
    EXPECT_EQ(value, record_of_1);
  });
}

// Which chunks of a partial blob are stored survives a restart (the presence segments beside
// its record), across segments, and is what the store acts on: a present chunk is not written
// again, a trimmed or erased blob leaves no segment behind.
TEST_F(rocksdb_store_test, which_chunks_a_partial_blob_holds_survives_reopening) {
  const std::uint32_t n = presence_segment_chunks + 3;  // two segments of one-byte chunks
  const auto d = digest_n(1);
  {
    auto store = open();
    for (std::uint32_t i : {1U, 7U, presence_segment_chunks + 1}) {
      ASSERT_TRUE(store->put_chunk(d, n, 1, i, "x").ok());
    }
    ASSERT_TRUE(store->put_chunk(digest_n(2), 2, chunk, 0, "yz").ok());
    ASSERT_TRUE(store->erase_blob(digest_n(2)).ok());
  }
  with_raw_db([&](rocksdb::DB& db, auto cf) {
    std::string value;
    EXPECT_TRUE(db.Get(rocksdb::ReadOptions(), cf("chunks"), presence_at(d, 1), &value).ok());
    EXPECT_EQ(value, std::string("\x02", 1));  // chunk 4097 of chunks 4096..4098
    EXPECT_TRUE(db.Get(rocksdb::ReadOptions(), cf("chunks"), presence_at(digest_n(2), 0), &value)
                    .IsNotFound())
        << "an erased blob's segment stays";
  });
  auto store = open();
  EXPECT_EQ(store->present_chunks(d),
            (std::vector<std::uint32_t>{1, 7, presence_segment_chunks + 1}));
  EXPECT_TRUE(store->has_chunk(d, 7));
  EXPECT_FALSE(store->has_chunk(d, 8));
  EXPECT_EQ(store->used_bytes(), 3U);
  bool created = true;
  ASSERT_TRUE(store->put_chunk(d, n, 1, 7, "x", 0, &created).ok());
  EXPECT_FALSE(created);
  EXPECT_EQ(store->used_bytes(), 3U);
}

// A store written before presence segments (version 2 records): at its first open, a partial
// blob's presence is read from its chunk keys and written beside its record (version 3); a
// whole one's needs no read. Segments that disagree with their record are rebuilt the same way.
TEST_F(rocksdb_store_test, presence_from_before_segments_or_disagreeing_is_read_from_chunk_keys) {
  {
    auto store = open();
    ASSERT_TRUE(store->put_chunk(digest_n(1), 10, 2, 0, "ab").ok());
    ASSERT_TRUE(store->put_chunk(digest_n(1), 10, 2, 3, "gh").ok());
    ASSERT_TRUE(store->put_chunk(digest_n(2), 3, chunk, 0, "abc").ok());
    ASSERT_TRUE(store->put_chunk(digest_n(3), 10, 2, 4, "ij").ok());
  }
  with_raw_db([&](rocksdb::DB& db, auto cf) {
    for (int k : {1, 2}) {  // as version 2 left them
      std::string record;
      ASSERT_TRUE(
          db.Get(rocksdb::ReadOptions(), cf("chunks"), record_key(digest_n(k)), &record).ok());
      record[0] = '\x02';
      ASSERT_TRUE(
          db.Put(rocksdb::WriteOptions(), cf("chunks"), record_key(digest_n(k)), record).ok());
      ASSERT_TRUE(
          db.Delete(rocksdb::WriteOptions(), cf("chunks"), presence_at(digest_n(k), 0)).ok());
    }
    // Blob 3's segment says chunk 0, its record and chunk keys chunk 4.
    ASSERT_TRUE(db.Put(rocksdb::WriteOptions(), cf("chunks"), presence_at(digest_n(3), 0),
                       std::string("\x01\0", 2))
                    .ok());
  });
  {
    auto store = open();
    EXPECT_EQ(store->present_chunks(digest_n(1)), (std::vector<std::uint32_t>{0, 3}));
    EXPECT_EQ(store->present_chunks(digest_n(2)), (std::vector<std::uint32_t>{0}));
    EXPECT_EQ(store->present_chunks(digest_n(3)), (std::vector<std::uint32_t>{4}));
    EXPECT_EQ(store->used_bytes(), 9U);
  }
  with_raw_db([&](rocksdb::DB& db, auto cf) {
    std::string value;
    ASSERT_TRUE(db.Get(rocksdb::ReadOptions(), cf("chunks"), record_key(digest_n(1)), &value).ok());
    EXPECT_EQ(value[0], '\x03');
    ASSERT_TRUE(
        db.Get(rocksdb::ReadOptions(), cf("chunks"), presence_at(digest_n(1), 0), &value).ok());
    EXPECT_EQ(value, std::string("\x09", 1));  // chunks 0 and 3
    ASSERT_TRUE(
        db.Get(rocksdb::ReadOptions(), cf("chunks"), presence_at(digest_n(3), 0), &value).ok());
    EXPECT_EQ(value, std::string("\x10", 1));  // chunk 4
  });
}

// A record's origin survives a restart; a record written before origins existed (version 1)
// is kept if verified (anyone's) and dropped with its chunks if not (whose bytes is unknown).
TEST_F(rocksdb_store_test, origins_persist_and_records_without_one_are_kept_only_verified) {
  {
    auto store = open();
    ASSERT_TRUE(store->put_chunk(digest_n(1), 3, chunk, 0, "abc", 5).ok());
    ASSERT_TRUE(store->put_chunk(digest_n(2), 2, chunk, 0, "yz", 5).ok());
    ASSERT_TRUE(store->mark_verified(digest_n(2)).ok());
    ASSERT_TRUE(store->put_chunk(digest_n(3), 1, chunk, 0, "q", 6).ok());
  }
  // Blobs 2 and 3 as version 1 wrote them: 38 bytes, no origin.
  with_raw_db([&](rocksdb::DB& db, auto cf) {
    for (int n : {2, 3}) {
      std::string value;
      ASSERT_TRUE(
          db.Get(rocksdb::ReadOptions(), cf("chunks"), record_key(digest_n(n)), &value).ok());
      ASSERT_EQ(value.size(), 46U);
      value.resize(38);
      value[0] = 1;
      ASSERT_TRUE(
          db.Put(rocksdb::WriteOptions(), cf("chunks"), record_key(digest_n(n)), value).ok());
    }
  });
  auto store = open();
  ASSERT_TRUE(store->blob(digest_n(1)).has_value());
  EXPECT_EQ(store->blob(digest_n(1))->origin, 5U);
  ASSERT_TRUE(store->blob(digest_n(2)).has_value());
  EXPECT_TRUE(store->blob(digest_n(2))->verified);
  EXPECT_EQ(store->blob(digest_n(2))->origin, 0U);
  EXPECT_FALSE(store->blob(digest_n(3)).has_value());
  EXPECT_FALSE(store->has_chunk(digest_n(3), 0));
  EXPECT_EQ(store->used_bytes(), 5U);
}

// A chunk whose key starts like a record (a digest of 64 leading zero bits) is not read as one.
TEST_F(rocksdb_store_test, a_chunk_key_among_the_records_is_not_a_record) {
  const auto zeros = oci::digest::parse("sha256:0000000000000000" + std::string(48, 'a'));
  ASSERT_TRUE(zeros.has_value());
  {
    auto store = open();
    ASSERT_TRUE(store->put_chunk(*zeros, 3, chunk, 0, "abc").ok());
    ASSERT_TRUE(store->put_chunk(digest_n(2), 2, chunk, 0, "yz").ok());
  }
  auto store = open();
  EXPECT_EQ(store->list_blobs().size(), 2U);
  EXPECT_EQ(store->used_bytes(), 5U);
  std::string out;
  ASSERT_TRUE(store->get_chunk(*zeros, 0, out).ok());
  EXPECT_EQ(out, "abc");
}

TEST_F(rocksdb_store_test, opening_a_bad_path_throws_a_clear_error) {
  const std::string file = (dir_.path() / "file").string();
  std::ofstream(file) << "x";
  try {
    (void)open_store(kind::rocksdb_sst, file + "/db", 1 << 20, clock_.fn());
    FAIL() << "opened a store under a regular file";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr(file));
  }
}

// ---- the checksum

// ---- cache.max_disk: the store's files stay within it (RocksDB only: memory has no files)

class max_disk_test : public ::testing::Test {
 protected:
  static constexpr std::uint64_t max_disk = 24ULL << 20;
  static constexpr std::uint32_t big_chunk = 1U << 20;  // few puts: this suite also runs under TSan

  void SetUp() override {
    store_ = open_rocksdb_store(store_options{.path = (dir_.path() / "db").string(),
                                              .capacity = 256ULL << 20,
                                              .block_cache = 8 << 20,
                                              .clock = clock_.fn(),
                                              .max_disk = max_disk});
  }

  // Stores every chunk of blob `n` (`size` bytes), each one retried while the store answers
  // no_space (waiting for a compaction), for at most 30 s. Returns the chunks refused in the
  // end; any other error fails the test.
  std::size_t put_waiting(int n, std::size_t size) {
    const std::string blob = pattern(static_cast<std::uint64_t>(n), size);
    std::size_t refused = 0;
    for (std::uint32_t i = 0; i < size / big_chunk; ++i) {
      status s = status::success();
      for (int attempt = 0; attempt < 600; ++attempt) {
        s = store_->put_chunk(digest_n(n), size, big_chunk, i, chunk_of(blob, big_chunk, i));
        if (s.code != errc::no_space) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      EXPECT_TRUE(s.ok() || s.code == errc::no_space) << s.message;
      if (!s.ok()) ++refused;
    }
    return refused;
  }

  // Stores blob `n` until one of its chunks is refused; whether one was.
  bool put_until_refused(int n, std::size_t size) {
    const std::string blob = pattern(static_cast<std::uint64_t>(n), size);
    for (std::uint32_t i = 0; i < size / big_chunk; ++i) {
      const status s =
          store_->put_chunk(digest_n(n), size, big_chunk, i, chunk_of(blob, big_chunk, i));
      if (s.code == errc::no_space) {
        EXPECT_THAT(s.message, ::testing::HasSubstr("cache.max_disk"));
        return true;
      }
      EXPECT_TRUE(s.ok()) << s.message;
    }
    return false;
  }

  temp_dir dir_;
  fake_clock clock_;
  std::unique_ptr<chunk_store> store_;
};

TEST_F(max_disk_test, storing_stops_at_the_limit_and_resumes_once_a_compaction_returns_space) {
  int n = 1;
  bool refused = false;
  for (; n <= 12 && !refused; ++n) refused = put_until_refused(n, 4ULL << 20);
  ASSERT_TRUE(refused) << "48 MiB stored under a max_disk of 24 MiB";
  auto st = store_->stats();
  EXPECT_TRUE(st.disk_full);
  EXPECT_GE(st.disk_compactions, 1U);
  EXPECT_EQ(st.max_disk, max_disk);
  ASSERT_TRUE(st.disk_bytes.has_value());
  EXPECT_LE(st.used_bytes, max_disk);

  // Deleted blobs' space comes back with the compaction their deletion needs: storing resumes
  // and nothing had to be evicted.
  for (int i = 1; i < n; ++i) ASSERT_TRUE(store_->erase_blob(digest_n(i)).ok());
  EXPECT_EQ(put_waiting(100, 4ULL << 20), 0U);
  st = store_->stats();
  EXPECT_FALSE(st.disk_full);
  EXPECT_EQ(st.evicted_blobs, 0U);
  EXPECT_EQ(st.used_bytes, 4ULL << 20);
}

TEST_F(max_disk_test, live_chunks_beyond_the_limit_are_evicted_least_recently_used_first) {
  // 40 MiB through a store whose files may take 24 MiB, with a capacity of 256 MiB: the limit
  // that binds is max_disk.
  for (int n = 1; n <= 10; ++n) {
    clock_.advance(1);
    ASSERT_EQ(put_waiting(n, 4ULL << 20), 0U) << "blob " << n << " never stored";
  }
  auto st = store_->stats();
  EXPECT_GT(st.evicted_blobs, 0U);
  EXPECT_GE(st.disk_compactions, 2U);
  EXPECT_LE(st.used_bytes, max_disk);
  EXPECT_FALSE(store_->blob(digest_n(1)).has_value()) << "the oldest blob was kept";
  const auto last = store_->blob(digest_n(10));
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->stored_bytes, 4ULL << 20);
  // The files (with what the memtables hold, which the check counts) come back within the limit,
  // give or take what was stored between two reads of their size, once the compaction that
  // evicted blobs ended: while it runs its new files exist beside the old ones (documented under
  // max_disk in docs/configuration.md; under TSan it can still run here). Read up to 600 times,
  // 50 ms apart.
  ASSERT_TRUE(st.disk_bytes.has_value());
  for (int read = 0; read < 600 && *st.disk_bytes > max_disk + (1ULL << 20); ++read) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    st = store_->stats();
    ASSERT_TRUE(st.disk_bytes.has_value());
  }
  EXPECT_LE(*st.disk_bytes, max_disk + (1ULL << 20));
}

std::uint32_t reference_crc32c(std::string_view s) {
  std::uint32_t crc = ~0U;
  for (char c : s) {
    crc ^= static_cast<unsigned char>(c);
    for (int k = 0; k < 8; ++k) crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82f63b78 : crc >> 1;
  }
  return ~crc;
}

// ---- cache.min_free_disk: the disk's free space, less what the memtables will take

// The memory backend with a disk of the test's: its free space and its memtables' bytes.
class sized_disk_backend final : public detail::backend {
 public:
  std::atomic<std::uint64_t> free{1000};
  std::atomic<std::uint64_t> memtables{0};

  std::unique_ptr<detail::write_batch> make_batch() override { return base_->make_batch(); }
  status write(detail::write_batch& batch) override { return base_->write(batch); }
  status read(detail::family f, std::string_view key,
              const std::function<void(std::string_view)>& on_value) override {
    return base_->read(f, key, on_value);
  }
  status read_shared(detail::family f, std::string_view key, std::shared_ptr<const void>& owner,
                     std::string_view& value) override {
    return base_->read_shared(f, key, owner, value);
  }
  status scan(detail::family f, std::string_view prefix, scan_mode mode,
              const std::function<bool(std::string_view, std::string_view)>& on_entry) override {
    return base_->scan(f, prefix, static_cast<detail::backend::scan_mode>(mode), on_entry);
  }
  void reclaim(detail::family f, std::string_view begin, std::string_view end) override {
    base_->reclaim(f, begin, end);
  }
  void persist() override {}
  std::uint64_t block_cache_bytes() override { return 0; }
  std::uint64_t write_buffer_bytes() override { return memtables; }
  bool writes_stopped() override { return false; }
  std::optional<std::uint64_t> free_disk() override { return free.load(); }
  std::optional<std::uint64_t> disk_bytes() override { return 0; }
  bool compact() override { return false; }
  bool compacting() override { return false; }

 private:
  std::unique_ptr<detail::backend> base_ = detail::make_memory_backend();
};

// Memtables become table files at their flush: a chunk is refused when the free space less
// them is below min_free_disk, and `disk_full` says so as soon as it is, stored chunk or not.
// (Before, a disk with memtables of 30 MB pending took chunks down to min_free_disk, then
// fell below it at their flush with `disk_full` 0: DiskFull's check under ctest -j2.)
TEST(min_free_disk, memtables_count_against_the_free_space) {
  auto owned = std::make_unique<sized_disk_backend>();
  sized_disk_backend& disk = *owned;
  fake_clock clock;
  auto store = detail::make_store(std::move(owned), 1 << 20, clock.fn(), 0, 100);
  ASSERT_TRUE(store->put_chunk(digest_n(1), 20, 10, 0, std::string(10, 'a')).ok());
  EXPECT_FALSE(store->stats().disk_full);

  disk.memtables = 905;  // 1000 free, 95 once they flush: less than min_free_disk
  EXPECT_TRUE(store->stats().disk_full) << "as the next chunk would find it";
  std::this_thread::sleep_for(std::chrono::milliseconds(150));  // free space is read every 100 ms
  const status refused = store->put_chunk(digest_n(1), 20, 10, 1, std::string(10, 'b'));
  EXPECT_EQ(refused.code, errc::no_space) << refused.message;
  EXPECT_EQ(store->stats().disk_refusals, 1U);

  disk.memtables = 0;  // flushed, and the space is there
  EXPECT_TRUE(store->stats().disk_full) << "refused until the next chunk finds room";
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  EXPECT_TRUE(store->put_chunk(digest_n(1), 20, 10, 1, std::string(10, 'b')).ok());
  EXPECT_FALSE(store->stats().disk_full);
}

TEST(crc32c, known_values) {
  EXPECT_EQ(detail::crc32c(""), 0U);
  EXPECT_EQ(detail::crc32c("123456789"), 0xe3069283U);
  EXPECT_EQ(detail::crc32c(std::string(32, '\0')), 0x8a9136aaU);
}

TEST(crc32c, matches_a_bitwise_reference_at_every_split) {
  const std::string data = pattern(7, 3 * 4096 + 100);
  for (std::size_t n : {0, 1, 7, 8, 9, 4095, 4096, 4097, 4100, 5000, 12288, 12388}) {
    const std::string_view s(data.data(), n);
    EXPECT_EQ(detail::crc32c(s), reference_crc32c(s)) << n;
    EXPECT_EQ(detail::crc32c(s.substr(n > 0 ? 1 : 0)), reference_crc32c(s.substr(n > 0 ? 1 : 0)))
        << n;
  }
  const std::string big = pattern(8, (1 << 20) + 3);
  EXPECT_EQ(detail::crc32c(big), reference_crc32c(big));
}

}  // namespace
}  // namespace layercache::cache
