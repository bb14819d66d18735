// Content digests ("sha256:<hex>") and incremental hashing.
#pragma once

#include <compare>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace layercache::oci {

enum class digest_algorithm { sha256, sha512 };

// A validated digest: "sha256:" + 64 lowercase hex, or "sha512:" + 128 lowercase hex.
class digest {
 public:
  // nullopt unless `text` is exactly a supported, well-formed digest.
  [[nodiscard]] static std::optional<digest> parse(std::string_view text);

  [[nodiscard]] digest_algorithm algorithm() const { return algorithm_; }
  [[nodiscard]] std::string_view hex() const;  // the part after ':'
  [[nodiscard]] const std::string& str() const { return text_; }
  // The decoded hash bytes (32 or 64), e.g. for compact storage keys.
  [[nodiscard]] std::string raw() const;

  friend bool operator==(const digest&, const digest&) = default;
  friend auto operator<=>(const digest& a, const digest& b) { return a.text_ <=> b.text_; }

 private:
  digest(digest_algorithm a, std::string text) : algorithm_(a), text_(std::move(text)) {}
  digest_algorithm algorithm_ = digest_algorithm::sha256;
  std::string text_;
  friend class hasher;
};

// Incremental hash of a byte stream (OpenSSL EVP). Movable, not copyable.
class hasher {
 public:
  explicit hasher(digest_algorithm a = digest_algorithm::sha256);
  ~hasher();
  hasher(hasher&&) noexcept;
  hasher& operator=(hasher&&) noexcept;
  hasher(const hasher&) = delete;
  hasher& operator=(const hasher&) = delete;

  void update(const void* data, std::size_t size);
  void update(std::string_view bytes) { update(bytes.data(), bytes.size()); }
  // Ends the stream; the hasher must not be used afterwards.
  [[nodiscard]] digest finish();

 private:
  struct state;
  digest_algorithm algorithm_;
  std::unique_ptr<state> state_;
};

[[nodiscard]] digest digest_of(std::string_view bytes,
                               digest_algorithm a = digest_algorithm::sha256);

}  // namespace layercache::oci
