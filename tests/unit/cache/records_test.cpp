// The store's byte formats (cache/records.hpp): round trips, the formats as stored (a change
// would make existing stores unreadable), and refusal of malformed bytes.
#include "cache/records.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace layercache::cache::detail {
namespace {

const oci::digest blob_digest = oci::digest_of("blob");

blob_record some_record() {
  blob_record r;
  r.size = 10'000'000;
  r.chunk_size = 1 << 20;
  r.verified = true;
  r.last_access = 1'700'000'000;
  r.hits = 42;
  r.stored_bytes = 3 << 20;
  r.origin = 7;
  return r;
}

void expect_equal(const blob_record& a, const blob_record& b) {
  EXPECT_EQ(a.size, b.size);
  EXPECT_EQ(a.chunk_size, b.chunk_size);
  EXPECT_EQ(a.verified, b.verified);
  EXPECT_EQ(a.last_access, b.last_access);
  EXPECT_EQ(a.hits, b.hits);
  EXPECT_EQ(a.stored_bytes, b.stored_bytes);
  EXPECT_EQ(a.origin, b.origin);
}

TEST(records, chunk_keys_are_the_raw_digest_then_a_big_endian_index) {
  const std::string raw = blob_digest.raw();
  const std::string key = chunk_key(raw, 0x01020304);
  EXPECT_EQ(key, raw + std::string("\x01\x02\x03\x04", 4));
  EXPECT_EQ(chunk_index(key, raw), 0x01020304U);
  for (std::uint32_t index : {0U, 1U, 255U, 256U, 0xffffffffU}) {
    EXPECT_EQ(chunk_index(chunk_key(raw, index), raw), index);
  }
  // Keys sort by index, and every one of them sorts before chunk_range_end.
  EXPECT_LT(chunk_key(raw, 255), chunk_key(raw, 256));
  EXPECT_LT(chunk_key(raw, 0xffffffff), chunk_range_end(raw));
  EXPECT_EQ(chunk_index(raw + "abc", raw), std::nullopt);
  EXPECT_EQ(chunk_index(raw + "abcde", raw), std::nullopt);
}

TEST(records, raw_digests_convert_back) {
  EXPECT_EQ(digest_from_raw(blob_digest.raw()), blob_digest);
  EXPECT_EQ(digest_from_raw(std::string(16, 'x')), std::nullopt);
  EXPECT_EQ(digest_from_raw(""), std::nullopt);
  const std::string sha512(64, '\x5a');
  const auto d = digest_from_raw(sha512);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->raw(), sha512);
  EXPECT_EQ(profile_key(blob_digest), "profile/" + blob_digest.raw());
}

TEST(records, blob_records_round_trip) {
  const blob_record r = some_record();
  const std::string bytes = encode_blob(r);
  EXPECT_EQ(bytes.size(), 46U);
  EXPECT_EQ(bytes[0], '\x03');
  bool presence_kept = false;
  const auto back = decode_blob(bytes, &presence_kept);
  ASSERT_TRUE(back);
  expect_equal(*back, r);
  EXPECT_TRUE(presence_kept);
}

// Version 2 had the same fields and kept no presence segments: read, with presence to be
// found from the chunk keys.
TEST(records, version_2_records_read_with_no_presence_kept) {
  const blob_record r = some_record();
  std::string v2 = encode_blob(r);
  v2[0] = '\x02';
  bool presence_kept = true;
  const auto back = decode_blob(v2, &presence_kept);
  ASSERT_TRUE(back);
  expect_equal(*back, r);
  EXPECT_FALSE(presence_kept);
}

TEST(records, verified_version_1_records_read_with_no_origin) {
  blob_record r = some_record();
  std::string v1 = encode_blob(r).substr(0, 38);
  v1[0] = '\x01';
  auto back = decode_blob(v1);
  ASSERT_TRUE(back);
  r.origin = 0;
  expect_equal(*back, r);
  v1[13] = '\0';  // unverified: whose bytes they are is unknown
  EXPECT_EQ(decode_blob(v1), std::nullopt);
}

TEST(records, malformed_blob_records_are_refused) {
  const std::string good = encode_blob(some_record());
  EXPECT_EQ(decode_blob(""), std::nullopt);
  EXPECT_EQ(decode_blob(good.substr(0, good.size() - 1)), std::nullopt);
  EXPECT_EQ(decode_blob(good + "x"), std::nullopt);
  std::string bad = good;
  bad[0] = '\x04';
  EXPECT_EQ(decode_blob(bad), std::nullopt);
  blob_record empty = some_record();
  empty.size = 0;
  EXPECT_EQ(decode_blob(encode_blob(empty)), std::nullopt);
  blob_record no_chunks = some_record();
  no_chunks.chunk_size = 0;
  EXPECT_EQ(decode_blob(encode_blob(no_chunks)), std::nullopt);
  blob_record too_many = some_record();
  too_many.size = 1ULL << 40;
  too_many.chunk_size = 1;
  EXPECT_EQ(decode_blob(encode_blob(too_many)), std::nullopt);
}

TEST(records, chunk_presence_sets_tests_and_lists) {
  chunk_presence p(20);
  EXPECT_EQ(p.present(), 0U);
  p.set(0, true);
  p.set(19, true);
  p.set(19, true);  // twice: counted once
  p.set(20, true);  // past the end: ignored
  p.set(7, true);
  p.set(7, false);
  EXPECT_TRUE(p.test(0));
  EXPECT_FALSE(p.test(7));
  EXPECT_TRUE(p.test(19));
  EXPECT_FALSE(p.test(20));
  EXPECT_EQ(p.present(), 2U);
  EXPECT_EQ(p.indexes(), (std::vector<std::uint32_t>{0, 19}));
  EXPECT_EQ(chunk_presence::all(9).indexes(),
            (std::vector<std::uint32_t>{0, 1, 2, 3, 4, 5, 6, 7, 8}));
}

// Segments of 4096 chunks, a bit each, the last one as long as its chunks need; a segment read
// back restores exactly its chunks.
TEST(records, chunk_presence_round_trips_through_its_segments) {
  const std::uint32_t n = presence_segment_chunks + 10;
  chunk_presence p(n);
  for (std::uint32_t i : {0U, 9U, presence_segment_chunks - 1, presence_segment_chunks + 9}) {
    p.set(i, true);
  }
  ASSERT_EQ(p.segment_count(), 2U);
  EXPECT_EQ(p.segment(0).size(), presence_segment_chunks / 8);
  EXPECT_EQ(p.segment(1), std::string("\0\x02", 2));  // chunks 4096..4105: bit 9 set
  EXPECT_EQ(p.segment_with(presence_segment_chunks + 1, true), std::string("\x02\x02", 2));
  EXPECT_EQ(p.segment_with(presence_segment_chunks + 9, false), std::string("\0\0", 2));
  EXPECT_EQ(p.segment(2), "");

  chunk_presence back(n);
  ASSERT_TRUE(back.load_segment(1, p.segment(1)));
  ASSERT_TRUE(back.load_segment(0, p.segment(0)));
  EXPECT_EQ(back.indexes(), p.indexes());
  EXPECT_EQ(back.present(), 4U);
}

TEST(records, malformed_presence_segments_are_refused) {
  chunk_presence p(presence_segment_chunks + 10);
  EXPECT_FALSE(p.load_segment(1, std::string("\0", 1)));      // short
  EXPECT_FALSE(p.load_segment(1, std::string("\0\0\0", 3)));  // long
  EXPECT_FALSE(p.load_segment(1, std::string("\0\x04", 2)));  // chunk 4106: past the end
  EXPECT_FALSE(p.load_segment(2, std::string("\0", 1)));      // no such segment
  EXPECT_EQ(p.present(), 0U);
}

TEST(records, presence_keys_are_neither_records_nor_chunk_keys) {
  const std::string raw(32, '\x11');
  const std::string key = presence_key(raw, 0x01020304);
  EXPECT_EQ(key.size(), 37U);
  const auto parts = presence_key_parts(key);
  ASSERT_TRUE(parts);
  EXPECT_EQ(parts->first, raw);
  EXPECT_EQ(parts->second, 0x01020304U);
  EXPECT_EQ(presence_key_parts(presence_key(std::string(64, 'x'), 7))->second, 7U);
  EXPECT_FALSE(presence_key_parts(raw));
  EXPECT_FALSE(presence_key_parts(chunk_key(raw, 1)));
  std::string not_p = key;
  not_p[32] = 'q';
  EXPECT_FALSE(presence_key_parts(not_p));
}

TEST(records, counters_are_eight_little_endian_bytes) {
  EXPECT_EQ(encode_u64(0x0102), std::string("\x02\x01\0\0\0\0\0\0", 8));
  EXPECT_EQ(decode_u64(encode_u64(0xfedcba9876543210ULL)), 0xfedcba9876543210ULL);
  EXPECT_EQ(decode_u64("1234567"), std::nullopt);
  EXPECT_EQ(decode_u64("123456789"), std::nullopt);
}

TEST(records, checksummed_values_refuse_damaged_bytes) {
  const std::string payload = "chunk bytes";
  std::string value = encode_checksum(payload) + payload;
  EXPECT_EQ(encode_checksum(payload).size(), 4U);
  EXPECT_EQ(checked_bytes(value), payload);
  EXPECT_EQ(checked_bytes(encode_checksum("") + ""), "");
  value.back() ^= 1;
  EXPECT_EQ(checked_bytes(value), std::nullopt);
  EXPECT_EQ(checked_bytes("abc"), std::nullopt);
}

TEST(records, manifests_round_trip) {
  const std::string type = "application/vnd.oci.image.manifest.v1+json";
  const auto m = decode_manifest(manifest_head(type) + "{}");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->media_type, type);
  EXPECT_EQ(m->bytes, "{}");
  const auto empty = decode_manifest(manifest_head(""));
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->media_type, "");
  EXPECT_EQ(empty->bytes, "");
}

TEST(records, malformed_manifests_are_refused) {
  EXPECT_EQ(decode_manifest(""), std::nullopt);
  EXPECT_EQ(decode_manifest("abc"), std::nullopt);
  // A media type longer than what follows it.
  EXPECT_EQ(decode_manifest(manifest_head("application/json").substr(0, 10)), std::nullopt);
  EXPECT_EQ(decode_manifest(std::string("\xff\xff\xff\xff", 4) + "x"), std::nullopt);
}

TEST(records, tags_round_trip) {
  const tag_record t{blob_digest, -5};
  const std::string value = encode_tag(t);
  EXPECT_EQ(value.substr(9), blob_digest.str());
  const auto back = decode_tag(value);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->digest, blob_digest);
  EXPECT_EQ(back->fetched_at, -5);
}

TEST(records, malformed_tags_are_refused) {
  const std::string good = encode_tag(tag_record{blob_digest, 1'700'000'000});
  EXPECT_EQ(decode_tag(""), std::nullopt);
  EXPECT_EQ(decode_tag(good.substr(0, 8)), std::nullopt);
  EXPECT_EQ(decode_tag(good.substr(0, 9)), std::nullopt);  // no digest
  EXPECT_EQ(decode_tag(good.substr(0, good.size() - 1)), std::nullopt);
  std::string bad = good;
  bad[0] = '\x02';
  EXPECT_EQ(decode_tag(bad), std::nullopt);
}

}  // namespace
}  // namespace layercache::cache::detail
