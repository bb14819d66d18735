#include "cache/records.hpp"

#include <algorithm>
#include <cstddef>
#include <utility>

#include "cache/crc32c.hpp"

namespace layercache::cache::detail {
namespace {

constexpr std::uint8_t blob_record_version = 3;
constexpr std::size_t blob_record_v1_bytes = 1 + 8 + 4 + 1 + 8 + 8 + 8;
constexpr std::size_t blob_record_bytes = blob_record_v1_bytes + 8;
constexpr std::uint8_t tag_record_version = 1;
constexpr std::size_t tag_head_bytes = 1 + 8;

template <class T>
void append_le(std::string& out, T v) {
  for (std::size_t i = 0; i < sizeof(T); ++i) {
    out.push_back(static_cast<char>(static_cast<std::uint64_t>(v) >> (8 * i)));
  }
}

// The caller has checked that `in` holds sizeof(T) bytes at `at`.
template <class T>
T read_le(std::string_view in, std::size_t at) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i) {
    v |= std::uint64_t{static_cast<unsigned char>(in[at + i])} << (8 * i);
  }
  return static_cast<T>(v);
}

// Key suffixes (a chunk's index, a presence segment's number) are big-endian: keys sort by them.
void append_be32(std::string& out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>(v >> shift));
}

// The caller has checked that `in` holds 4 bytes at `at`.
std::uint32_t read_be32(std::string_view in, std::size_t at) {
  std::uint32_t v = 0;
  for (std::size_t i = at; i < at + 4; ++i) v = (v << 8) | static_cast<unsigned char>(in[i]);
  return v;
}

// `byte` with bit `bit` (0-7) set or cleared.
std::uint8_t with_bit(std::uint8_t byte, std::uint32_t bit, bool set) {
  const auto mask = static_cast<std::uint8_t>(1U << bit);
  return set ? static_cast<std::uint8_t>(byte | mask) : static_cast<std::uint8_t>(byte & ~mask);
}

}  // namespace

std::string chunk_key(std::string_view raw, std::uint32_t index) {
  std::string key(raw);
  append_be32(key, index);
  return key;
}

std::optional<std::uint32_t> chunk_index(std::string_view key, std::string_view raw) {
  if (key.size() != raw.size() + 4) return std::nullopt;
  return read_be32(key, raw.size());
}

std::string chunk_range_end(std::string_view raw) {
  std::string key(raw);
  key.append(5, '\xff');
  return key;
}

std::optional<oci::digest> digest_from_raw(std::string_view raw) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string text;
  if (raw.size() == 32) {
    text = "sha256:";
  } else if (raw.size() == 64) {
    text = "sha512:";
  } else {
    return std::nullopt;
  }
  for (char c : raw) {
    const auto b = static_cast<unsigned char>(c);
    text.push_back(hex[b >> 4]);
    text.push_back(hex[b & 0xf]);
  }
  return oci::digest::parse(text);
}

std::string profile_key(const oci::digest& manifest) {
  std::string key(profile_prefix);
  key += manifest.raw();
  return key;
}

std::string encode_blob(const blob_record& r) {
  std::string out;
  out.reserve(blob_record_bytes);
  append_le(out, blob_record_version);
  append_le(out, r.size);
  append_le(out, r.chunk_size);
  append_le(out, static_cast<std::uint8_t>(r.verified ? 1 : 0));
  append_le(out, r.last_access);
  append_le(out, r.hits);
  append_le(out, r.stored_bytes);
  append_le(out, r.origin);
  return out;
}

std::optional<blob_record> decode_blob(std::string_view in, bool* presence_kept) {
  const bool v1 = in.size() == blob_record_v1_bytes && read_le<std::uint8_t>(in, 0) == 1;
  const auto version = in.empty() ? 0 : read_le<std::uint8_t>(in, 0);
  if (!v1 && (in.size() != blob_record_bytes || (version != 2 && version != 3))) {
    return std::nullopt;
  }
  if (presence_kept != nullptr) *presence_kept = version == 3;
  blob_record r;
  r.size = read_le<std::uint64_t>(in, 1);
  r.chunk_size = read_le<std::uint32_t>(in, 9);
  r.verified = read_le<std::uint8_t>(in, 13) != 0;
  r.last_access = read_le<std::uint64_t>(in, 14);
  r.hits = read_le<std::uint64_t>(in, 22);
  r.stored_bytes = read_le<std::uint64_t>(in, 30);
  if (!v1) r.origin = read_le<std::uint64_t>(in, 38);
  if (r.chunk_size == 0 || r.size == 0 || r.chunk_count() == 0) return std::nullopt;
  if (v1 && !r.verified) return std::nullopt;  // whose bytes they are is unknown: dropped
  return r;
}

chunk_presence::chunk_presence(std::uint32_t chunk_count)
    : count_(chunk_count), bits_((std::size_t{chunk_count} + 7) / 8, 0) {}

chunk_presence chunk_presence::all(std::uint32_t chunk_count) {
  chunk_presence p(chunk_count);
  for (std::uint32_t i = 0; i < chunk_count; ++i) p.set(i, true);
  return p;
}

bool chunk_presence::test(std::uint32_t index) const {
  return index < count_ && (bits_[index / 8] >> (index % 8) & 1U) != 0;
}

void chunk_presence::set(std::uint32_t index, bool present) {
  if (index >= count_ || test(index) == present) return;
  bits_[index / 8] = with_bit(bits_[index / 8], index % 8, present);
  if (present) {
    ++present_;
  } else {
    --present_;
  }
}

std::vector<std::uint32_t> chunk_presence::indexes() const {
  std::vector<std::uint32_t> out;
  out.reserve(present_);
  for (std::uint32_t i = 0; i < count_ && out.size() < present_; ++i) {
    if (test(i)) out.push_back(i);
  }
  return out;
}

std::uint32_t chunk_presence::segment_count() const {
  return (count_ + presence_segment_chunks - 1) / presence_segment_chunks;
}

std::size_t chunk_presence::segment_bytes(std::uint32_t s) const {
  const std::uint64_t first = std::uint64_t{s} * presence_segment_chunks;
  if (first >= count_) return 0;
  const std::uint64_t chunks = std::min<std::uint64_t>(presence_segment_chunks, count_ - first);
  return static_cast<std::size_t>((chunks + 7) / 8);
}

std::string chunk_presence::segment(std::uint32_t s) const {
  const std::size_t first = std::size_t{s} * presence_segment_chunks / 8;
  const std::size_t n = segment_bytes(s);
  return {reinterpret_cast<const char*>(bits_.data()) + (n == 0 ? 0 : first), n};
}

std::string chunk_presence::segment_with(std::uint32_t index, bool present) const {
  std::string out = segment(segment_of(index));
  const std::size_t at = (index % presence_segment_chunks) / 8;
  if (at >= out.size()) return out;
  out[at] = static_cast<char>(with_bit(static_cast<std::uint8_t>(out[at]), index % 8, present));
  return out;
}

bool chunk_presence::load_segment(std::uint32_t s, std::string_view value) {
  const std::size_t n = segment_bytes(s);
  if (n == 0 || value.size() != n) return false;
  const std::uint32_t first = s * presence_segment_chunks;
  const std::uint32_t chunks = std::min(presence_segment_chunks, count_ - first);
  if (chunks % 8 != 0 && (static_cast<unsigned char>(value.back()) >> (chunks % 8)) != 0) {
    return false;  // a bit past the blob's last chunk
  }
  for (std::uint32_t k = 0; k < chunks; ++k) {
    set(first + k, (static_cast<unsigned char>(value[k / 8]) >> (k % 8) & 1U) != 0);
  }
  return true;
}

std::string presence_key(std::string_view raw, std::uint32_t s) {
  std::string key(raw);
  key.push_back('p');
  append_be32(key, s);
  return key;
}

std::optional<std::pair<std::string_view, std::uint32_t>> presence_key_parts(std::string_view key) {
  if ((key.size() != 32 + 5 && key.size() != 64 + 5) || key[key.size() - 5] != 'p') {
    return std::nullopt;
  }
  return std::pair{key.substr(0, key.size() - 5), read_be32(key, key.size() - 4)};
}

std::string encode_u64(std::uint64_t v) {
  std::string out;
  append_le(out, v);
  return out;
}

std::optional<std::uint64_t> decode_u64(std::string_view in) {
  if (in.size() != 8) return std::nullopt;
  return read_le<std::uint64_t>(in, 0);
}

std::string encode_checksum(std::string_view bytes) {
  std::string out;
  append_le(out, crc32c(bytes));
  return out;
}

std::optional<std::string_view> checked_bytes(std::string_view value) {
  if (value.size() < 4) return std::nullopt;
  const std::string_view bytes = value.substr(4);
  if (read_le<std::uint32_t>(value, 0) != crc32c(bytes)) return std::nullopt;
  return bytes;
}

std::string manifest_head(std::string_view media_type) {
  std::string head;
  head.reserve(4 + media_type.size());
  append_le(head, static_cast<std::uint32_t>(media_type.size()));
  head.append(media_type);
  return head;
}

std::optional<stored_manifest> decode_manifest(std::string_view value) {
  if (value.size() < 4) return std::nullopt;
  const auto type_size = read_le<std::uint32_t>(value, 0);
  if (value.size() - 4 < type_size) return std::nullopt;
  return stored_manifest{std::string(value.substr(4, type_size)),
                         std::string(value.substr(4 + type_size))};
}

std::string encode_tag(const tag_record& t) {
  std::string value;
  append_le(value, tag_record_version);
  append_le(value, t.fetched_at);
  value.append(t.digest.str());
  return value;
}

std::optional<tag_record> decode_tag(std::string_view value) {
  if (value.size() < tag_head_bytes || read_le<std::uint8_t>(value, 0) != tag_record_version) {
    return std::nullopt;
  }
  auto d = oci::digest::parse(value.substr(tag_head_bytes));
  if (!d) return std::nullopt;
  return tag_record{std::move(*d), read_le<std::int64_t>(value, 1)};
}

}  // namespace layercache::cache::detail
