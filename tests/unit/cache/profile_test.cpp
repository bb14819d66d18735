#include "cache/profile.hpp"

#include <gtest/gtest.h>

namespace layercache::cache {
namespace {

oci::digest d(int n) { return oci::digest_of("blob " + std::to_string(n)); }
const oci::digest manifest = oci::digest_of("manifest");
// `length` bytes from `offset`.
oci::byte_interval at(std::uint64_t offset, std::uint64_t length) {
  return oci::byte_interval::at(offset, length);
}

std::vector<std::pair<int, std::uint64_t>> order_of(const profile& p) {
  std::vector<std::pair<int, std::uint64_t>> out;
  for (const auto& e : p.entries) {
    for (int n = 0; n < 10; ++n) {
      if (e.blob == d(n)) out.emplace_back(n, e.bytes.begin);
    }
  }
  return out;
}

TEST(profile, a_first_run_keeps_first_touch_order) {
  const auto p = merge_run(std::nullopt, manifest,
                           {{d(1), at(0, 100), 5},
                            {d(2), at(1 << 20, 100), 9},
                            {d(1), at(0, 100), 20},
                            {d(1), at(1 << 20, 50), 30},
                            {d(3), at(0, 0), 31}});
  EXPECT_EQ(p.manifest, manifest);
  EXPECT_EQ(p.runs, 1u);
  using v = std::vector<std::pair<int, std::uint64_t>>;
  // The repeated touch keeps its first time; the empty one is dropped.
  EXPECT_EQ(order_of(p), (v{{1, 0}, {2, 1 << 20}, {1, 1 << 20}}));
  EXPECT_EQ(p.entries[0].at_ms, 5u);
  EXPECT_EQ(p.entries[0].seen, 1u);
}

TEST(profile, entries_seen_in_more_runs_come_first_then_by_mean_time) {
  auto p = merge_run(std::nullopt, manifest, {{d(1), at(0, 10), 100}, {d(2), at(0, 10), 200}});
  p = merge_run(p, manifest, {{d(3), at(0, 10), 10}, {d(2), at(0, 10), 100}});
  p = merge_run(p, manifest, {{d(2), at(0, 10), 300}, {d(3), at(0, 10), 50}, {d(4), at(0, 10), 1}});
  EXPECT_EQ(p.runs, 3u);
  using v = std::vector<std::pair<int, std::uint64_t>>;
  // 2 seen 3 times; 3 seen twice (mean 30); then once-seen 4 (1 ms) before 1 (100 ms).
  EXPECT_EQ(order_of(p), (v{{2, 0}, {3, 0}, {4, 0}, {1, 0}}));
  EXPECT_EQ(p.entries[0].seen, 3u);
  EXPECT_EQ(p.entries[0].at_ms, 200u);  // (200 + 100 + 300) / 3
  EXPECT_EQ(p.entries[1].at_ms, 30u);
}

// A probe of two bytes, then the read of the file at the same offset: the entry keeps the
// probe's time and the read's length (the stargz snapshotter probes every layer at offset 0).
TEST(profile, a_later_longer_read_at_an_offset_extends_its_entry) {
  const auto p =
      merge_run(std::nullopt, manifest,
                {{d(1), at(0, 2), 5}, {d(2), at(0, 10), 8}, {d(1), at(0, 1050000), 400}});
  ASSERT_EQ(p.entries.size(), 2u);
  EXPECT_EQ(p.entries[0].blob, d(1));
  EXPECT_EQ(p.entries[0].bytes.length(), 1050000u);
  EXPECT_EQ(p.entries[0].at_ms, 5u);
  EXPECT_EQ(p.entries[0].seen, 1u);
}

TEST(profile, a_profile_of_another_manifest_is_not_merged) {
  auto other = merge_run(std::nullopt, oci::digest_of("other"), {{d(1), at(0, 10), 1}});
  const auto p = merge_run(other, manifest, {{d(2), at(0, 10), 1}});
  EXPECT_EQ(p.runs, 1u);
  ASSERT_EQ(p.entries.size(), 1u);
  EXPECT_EQ(p.entries[0].blob, d(2));
}

TEST(profile, entries_are_capped_dropping_the_least_seen) {
  std::vector<touch> hot, cold;
  for (std::uint64_t i = 0; i < 10; ++i) hot.push_back({d(1), at(i * 4096, 4096), 0});
  for (std::uint64_t i = 0; i < max_profile_entries; ++i)
    cold.push_back({d(2), at(i * 4096, 4096), 1});
  auto p = merge_run(std::nullopt, manifest, hot);
  p = merge_run(p, manifest, hot);
  p = merge_run(p, manifest, cold);
  ASSERT_EQ(p.entries.size(), max_profile_entries);
  EXPECT_EQ(p.entries[0].blob, d(1));
  EXPECT_EQ(p.entries[9].blob, d(1));
  EXPECT_EQ(p.entries[9].seen, 2u);
}

TEST(profile, json_round_trips) {
  auto p = merge_run(std::nullopt, manifest, {{d(1), at(0, 100), 5}, {d(2), at(4096, 7), 9}});
  p = merge_run(p, manifest, {{d(2), at(4096, 7), 1}});
  const auto back = profile_from_json(to_json(p));
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->manifest, p.manifest);
  EXPECT_EQ(back->runs, 2u);
  ASSERT_EQ(back->entries.size(), 2u);
  EXPECT_EQ(back->entries[0].blob, d(2));
  EXPECT_EQ(back->entries[0].bytes.begin, 4096u);
  EXPECT_EQ(back->entries[0].bytes.length(), 7u);
  EXPECT_EQ(back->entries[0].seen, 2u);
  EXPECT_EQ(back->entries[0].at_ms, 5u);
}

TEST(profile, tags_round_trip_newest_first_capped_and_kept_by_merges) {
  auto p = merge_run(std::nullopt, manifest, {{d(1), at(0, 100), 5}});
  EXPECT_EQ(to_json(p).find("\"tags\""), std::string::npos) << "no tags: no key";
  for (int i = 0; i < 10; ++i) add_tag(p, {"up", "team/app", "v" + std::to_string(i)});
  add_tag(p, {"up", "team/app", "v5"});  // seen again: first
  ASSERT_EQ(p.tags.size(), max_profile_tags);
  EXPECT_EQ(p.tags[0], (profile_tag{"up", "team/app", "v5"}));
  EXPECT_EQ(p.tags[1], (profile_tag{"up", "team/app", "v9"}));
  p = merge_run(p, manifest, {{d(2), at(0, 10), 1}});
  ASSERT_EQ(p.tags.size(), max_profile_tags) << "a merge dropped the tags";
  const auto back = profile_from_json(to_json(p));
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->tags, p.tags);
}

TEST(profile, bad_tags_are_refused) {
  const std::string head = R"({"version":1,"manifest":")" + manifest.str() +
                           R"(","runs":1,"entries":[{"blob":")" + d(1).str() +
                           R"(","offset":0,"length":10,"seen":1,"at_ms":0}])";
  auto with = [&](const std::string& tags) { return head + R"(,"tags":)" + tags + "}"; };
  ASSERT_TRUE(profile_from_json(with(R"([{"upstream":"u","repository":"r","tag":"t"}])")));
  EXPECT_FALSE(profile_from_json(with(R"({})")));
  EXPECT_FALSE(profile_from_json(with(R"([{"upstream":"u","repository":"r"}])")));
  EXPECT_FALSE(profile_from_json(with(R"([{"upstream":"","repository":"r","tag":"t"}])")));
  EXPECT_FALSE(profile_from_json(with(R"([{"upstream":"u","repository":"r\nx","tag":"t"}])")))
      << "a newline could forge a tag record key";
  EXPECT_FALSE(profile_from_json(
      with(R"([{"upstream":"u","repository":")" + std::string(256, 'r') + R"(","tag":"t"}])")));
  std::string nine = "[";
  for (int i = 0; i < 9; ++i) {
    nine += std::string(i ? "," : "") + R"({"upstream":"u","repository":"r","tag":"t)" +
            std::to_string(i) + R"("})";
  }
  EXPECT_FALSE(profile_from_json(with(nine + "]")));
}

TEST(profile, bad_json_is_refused) {
  const std::string m = manifest.str();
  const std::string b = d(1).str();
  const std::string good_entry =
      R"({"blob":")" + b + R"(","offset":0,"length":10,"seen":1,"at_ms":0})";
  auto doc = [&](const std::string& runs, const std::string& entries) {
    return R"({"version":1,"manifest":")" + m + R"(","runs":)" + runs + R"(,"entries":[)" +
           entries + "]}";
  };
  ASSERT_TRUE(profile_from_json(doc("1", good_entry)).has_value());
  EXPECT_FALSE(profile_from_json("").has_value());
  EXPECT_FALSE(profile_from_json("[]").has_value());
  EXPECT_FALSE(profile_from_json(R"({"version":2})").has_value());
  EXPECT_FALSE(profile_from_json(doc("0", "")).has_value());
  EXPECT_FALSE(profile_from_json(doc("-1", good_entry)).has_value());
  EXPECT_FALSE(profile_from_json(doc("1", good_entry + "," + good_entry)).has_value());  // dup
  EXPECT_FALSE(profile_from_json(
                   doc("1", R"({"blob":"sha256:zz","offset":0,"length":1,"seen":1,"at_ms":0})"))
                   .has_value());
  EXPECT_FALSE(profile_from_json(
                   doc("1", R"({"blob":")" + b + R"(","offset":0,"length":0,"seen":1,"at_ms":0})"))
                   .has_value());
  EXPECT_FALSE(profile_from_json(
                   doc("1", R"({"blob":")" + b + R"(","offset":0,"length":1,"seen":2,"at_ms":0})"))
                   .has_value());
  EXPECT_FALSE(profile_from_json(doc("1", R"({"blob":")" + b +
                                              R"(","offset":"0","length":1,"seen":1,"at_ms":0})"))
                   .has_value());
}

}  // namespace
}  // namespace layercache::cache
