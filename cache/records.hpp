// The byte formats of the chunk store's keys and values, over the backend's families. Internal
// to cache/. Pure: no I/O, no state; every decoder refuses (nullopt) bytes of another shape.
//
// Keys: chunks = raw digest (32 or 64 bytes) + u32 big-endian index; blobs and manifests = raw
// digest; a blob's presence segments (blobs family) = raw digest + 'p' + u32 big-endian
// segment; tags = the caller's key; meta = a name.
// Values (integers little-endian):
//   chunks    crc32c (4) + chunk bytes
//   blobs     version 3 (1), size (8), chunk_size (4), verified (1), last_access (8), hits (8),
//             stored_bytes (8), origin (8). Version 3 keeps presence segments beside it (a
//             missing one: none of its chunks stored); version 2 (the same fields) kept none,
//             so which chunks a partial version 2 blob holds is read from its chunk keys once,
//             at open. Version 1 had no origin: its verified records are read with origin 0,
//             unverified ones dropped with their chunks at open (whose upstream served them is
//             unknown).
//   presence  a bit per chunk of segment s (chunks s × 4096 …): chunk i's is bit i % 8 of byte
//             (i % 4096) / 8; as many bytes as the segment's chunks need, no bit past the blob.
//   manifests media type length (4) + media type + manifest bytes
//   tags      version 1 (1), fetched_at (8), digest text
//   meta      "used_bytes" → u64; "profile/" + raw manifest digest → crc32c (4) + profile
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cache/chunk_store.hpp"
#include "oci/digest.hpp"

namespace layercache::cache::detail {

// The meta key of the used-bytes counter, and the prefix of the profiles' meta keys.
inline constexpr std::string_view used_bytes_key = "used_bytes";
inline constexpr std::string_view profile_prefix = "profile/";

// The key of chunk `index` of the blob whose raw digest is `raw`.
[[nodiscard]] std::string chunk_key(std::string_view raw, std::uint32_t index);
// The index of chunk key `key` of blob `raw` (the inverse of chunk_key); nullopt for a key of
// another shape under the same prefix.
[[nodiscard]] std::optional<std::uint32_t> chunk_index(std::string_view key, std::string_view raw);
// Past every chunk key of `raw` (which are raw + 4 bytes): [chunk_key(raw, 0), this) holds them.
[[nodiscard]] std::string chunk_range_end(std::string_view raw);

// The digest whose raw() is `raw`; nullopt unless 32 (sha256) or 64 (sha512) bytes.
[[nodiscard]] std::optional<oci::digest> digest_from_raw(std::string_view raw);
// The meta key of the profile of `manifest`.
[[nodiscard]] std::string profile_key(const oci::digest& manifest);

// A blob record value (the current version). decode_blob reads versions 3, 2 and 1, and
// refuses a record of another size or version, a zero size or chunk size, too many chunks, and
// an unverified version 1 record. `presence_kept`: the record's presence segments tell which
// chunks are stored (version 3); before, only the chunk keys did.
[[nodiscard]] std::string encode_blob(const blob_record& r);
[[nodiscard]] std::optional<blob_record> decode_blob(std::string_view in,
                                                     bool* presence_kept = nullptr);

// Which chunks of a blob are stored: a bit per chunk, in segments of presence_segment_chunks,
// each stored under presence_key beside the blob's record (in the same batch as the chunks
// and record it describes), so a store knows without reading chunk keys.
inline constexpr std::uint32_t presence_segment_chunks = 4096;

class chunk_presence {
 public:
  chunk_presence() = default;
  explicit chunk_presence(std::uint32_t chunk_count);
  [[nodiscard]] static chunk_presence all(std::uint32_t chunk_count);

  [[nodiscard]] std::uint32_t chunk_count() const { return count_; }
  [[nodiscard]] std::uint32_t present() const { return present_; }  // chunks stored
  [[nodiscard]] bool test(std::uint32_t index) const;
  void set(std::uint32_t index, bool present);
  [[nodiscard]] std::vector<std::uint32_t> indexes() const;  // ascending

  [[nodiscard]] std::uint32_t segment_count() const;
  [[nodiscard]] static std::uint32_t segment_of(std::uint32_t index) {
    return index / presence_segment_chunks;
  }
  // Segment `s`'s value as it is, or as it would be with chunk `index` (in it) `present`.
  [[nodiscard]] std::string segment(std::uint32_t s) const;
  [[nodiscard]] std::string segment_with(std::uint32_t index, bool present) const;
  // Takes segment `s`'s value; false (nothing taken) for one of another length or with a bit
  // past the blob's last chunk.
  bool load_segment(std::uint32_t s, std::string_view value);

 private:
  [[nodiscard]] std::size_t segment_bytes(std::uint32_t s) const;
  std::uint32_t count_ = 0;
  std::uint32_t present_ = 0;
  std::vector<std::uint8_t> bits_;
};

// The blobs-family key of segment `s` of the presence of the blob whose raw digest is `raw`
// (37 or 69 bytes: never a record's 32 or 64, nor a chunk key's 36 or 68).
[[nodiscard]] std::string presence_key(std::string_view raw, std::uint32_t s);
// The raw digest and segment of a presence key; nullopt for a key of another shape.
[[nodiscard]] std::optional<std::pair<std::string_view, std::uint32_t>> presence_key_parts(
    std::string_view key);

// The used-bytes counter: 8 bytes.
[[nodiscard]] std::string encode_u64(std::uint64_t v);
[[nodiscard]] std::optional<std::uint64_t> decode_u64(std::string_view in);

// The 4-byte head of a checksummed value (chunks, profiles): the CRC-32C of `bytes`, which
// follow it. checked_bytes returns what follows the head when it matches, nullopt otherwise.
[[nodiscard]] std::string encode_checksum(std::string_view bytes);
[[nodiscard]] std::optional<std::string_view> checked_bytes(std::string_view value);

// The head of a manifest value: the manifest's bytes follow it.
[[nodiscard]] std::string manifest_head(std::string_view media_type);
[[nodiscard]] std::optional<stored_manifest> decode_manifest(std::string_view value);

// A tag value. decode_tag refuses another version, a short value and a bad digest.
[[nodiscard]] std::string encode_tag(const tag_record& t);
[[nodiscard]] std::optional<tag_record> decode_tag(std::string_view value);

}  // namespace layercache::cache::detail
