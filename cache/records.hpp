// The byte formats of the chunk store's keys and values, over the backend's families. Internal
// to cache/. Pure: no I/O, no state; every decoder refuses (nullopt) bytes of another shape.
//
// Keys: chunks = raw digest (32 or 64 bytes) + u32 big-endian index; blobs and manifests = raw
// digest; tags = the caller's key; meta = a name.
// Values (integers little-endian):
//   chunks    crc32c (4) + chunk bytes
//   blobs     version 2 (1), size (8), chunk_size (4), verified (1), last_access (8), hits (8),
//             stored_bytes (8), origin (8). Version 1 had no origin: its verified records are
//             read with origin 0, unverified ones dropped with their chunks at open (whose
//             upstream served them is unknown).
//   manifests media type length (4) + media type + manifest bytes
//   tags      version 1 (1), fetched_at (8), digest text
//   meta      "used_bytes" → u64; "profile/" + raw manifest digest → crc32c (4) + profile
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

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

// A blob record value (the current version). decode_blob reads version 2 and version 1, and
// refuses a record of another size or version, a zero size or chunk size, too many chunks, and
// an unverified version 1 record.
[[nodiscard]] std::string encode_blob(const blob_record& r);
[[nodiscard]] std::optional<blob_record> decode_blob(std::string_view in);

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
