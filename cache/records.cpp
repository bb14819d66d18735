#include "cache/records.hpp"

#include <cstddef>
#include <utility>

#include "cache/crc32c.hpp"

namespace layercache::cache::detail {
namespace {

constexpr std::uint8_t blob_record_version = 2;
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

}  // namespace

std::string chunk_key(std::string_view raw, std::uint32_t index) {
  std::string key(raw);
  for (int shift = 24; shift >= 0; shift -= 8) {
    key.push_back(static_cast<char>(index >> shift));
  }
  return key;
}

std::optional<std::uint32_t> chunk_index(std::string_view key, std::string_view raw) {
  if (key.size() != raw.size() + 4) return std::nullopt;
  std::uint32_t index = 0;
  for (std::size_t i = raw.size(); i < key.size(); ++i) {
    index = (index << 8) | static_cast<unsigned char>(key[i]);
  }
  return index;
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

std::optional<blob_record> decode_blob(std::string_view in) {
  const bool v1 = in.size() == blob_record_v1_bytes && read_le<std::uint8_t>(in, 0) == 1;
  if (!v1 &&
      (in.size() != blob_record_bytes || read_le<std::uint8_t>(in, 0) != blob_record_version)) {
    return std::nullopt;
  }
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
