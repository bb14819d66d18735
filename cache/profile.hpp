// Access profiles: which parts of an image's blobs a container start reads, in what order.
//
// A *run* is what one start touched after its manifest was served: (blob, byte range) in
// first-touch order, each with the time since the manifest was served. Runs merge into the
// manifest's *profile*: entries seen in most runs first, then by earliest (mean) time. Entries
// are byte ranges, not chunk numbers, so a profile recorded with one chunk size replays on a
// node with another. Pure data: no I/O.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "oci/digest.hpp"
#include "oci/range.hpp"

namespace layercache::cache {

struct touch {
  oci::digest blob;
  oci::byte_interval bytes;  // of the blob
  std::uint32_t at_ms = 0;   // since the manifest was served
};

struct profile_entry {
  oci::digest blob;
  oci::byte_interval bytes;  // of the blob; the document spells it "offset" and "length"
  std::uint32_t seen = 0;    // runs that touched it
  std::uint32_t at_ms = 0;   // mean first-touch time over those runs
};

// A tag a client named the manifest by, where: lets a node that imports the profile start
// its replay while that tag is still being resolved (docs/architecture.md, "Prefetch").
struct profile_tag {
  std::string upstream;  // configured upstream name
  std::string repository;
  std::string tag;
  friend bool operator==(const profile_tag&, const profile_tag&) = default;
};

struct profile {
  oci::digest manifest;
  std::uint32_t runs = 0;
  std::vector<profile_entry> entries;  // replay order
  std::vector<profile_tag> tags;       // newest first, at most max_profile_tags
};

inline constexpr std::size_t max_profile_entries = 1 << 16;
inline constexpr std::size_t max_profile_tags = 8;

// Puts `t` first in `p.tags` (moved there if present), keeping at most max_profile_tags.
void add_tag(profile& p, profile_tag t);

// Merges `run` (first-touch order; a repeated (blob, bytes.begin) keeps its first touch and
// the longest end) into `base` (or a new profile of `manifest`); empty touches are dropped.
// Ordered by seen (descending), then at_ms, then (blob, bytes.begin); at most
// max_profile_entries, the least seen dropped.
[[nodiscard]] profile merge_run(std::optional<profile> base, const oci::digest& manifest,
                                const std::vector<touch>& run);

// JSON: {"version":1,"manifest":"sha256:…","runs":N,"entries":[{"blob":…,"offset":…,
// "length":…,"seen":…,"at_ms":…},…],"tags":[{"upstream":…,"repository":…,"tag":…},…]} —
// also the export/import format; "tags" is left out when empty and optional on input.
[[nodiscard]] std::string to_json(const profile& p);
// nullopt for anything that is not a valid profile document (bad digests, seen > runs, zero
// lengths, more than max_profile_entries entries, more than max_profile_tags tags or a tag
// field that is empty, longer than 255 bytes or holds a control character, ...).
[[nodiscard]] std::optional<profile> profile_from_json(std::string_view json);

}  // namespace layercache::cache
