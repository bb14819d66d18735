#include "oci/digest.hpp"

#include <openssl/evp.h>

#include <stdexcept>

namespace layercache::oci {
namespace {

constexpr std::size_t hex_length(digest_algorithm a) {
  return a == digest_algorithm::sha256 ? 64 : 128;
}

constexpr bool is_lower_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

int hex_value(char c) { return c <= '9' ? c - '0' : c - 'a' + 10; }

}  // namespace

std::optional<digest> digest::parse(std::string_view text) {
  digest_algorithm a;
  std::string_view rest;
  if (text.starts_with("sha256:")) {
    a = digest_algorithm::sha256;
    rest = text.substr(7);
  } else if (text.starts_with("sha512:")) {
    a = digest_algorithm::sha512;
    rest = text.substr(7);
  } else {
    return std::nullopt;
  }
  if (rest.size() != hex_length(a)) return std::nullopt;
  for (char c : rest) {
    if (!is_lower_hex(c)) return std::nullopt;
  }
  return digest(a, std::string(text));
}

std::string_view digest::hex() const { return std::string_view(text_).substr(7); }

std::string digest::raw() const {
  const auto h = hex();
  std::string out(h.size() / 2, '\0');
  for (std::size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<char>(hex_value(h[2 * i]) * 16 + hex_value(h[2 * i + 1]));
  }
  return out;
}

struct hasher::state {
  EVP_MD_CTX* ctx = nullptr;
  state() = default;
  state(const state&) = delete;  // one owner of the OpenSSL context
  state& operator=(const state&) = delete;
  ~state() { EVP_MD_CTX_free(ctx); }
};

hasher::hasher(digest_algorithm a) : algorithm_(a), state_(std::make_unique<state>()) {
  state_->ctx = EVP_MD_CTX_new();
  const EVP_MD* md = a == digest_algorithm::sha256 ? EVP_sha256() : EVP_sha512();
  if (state_->ctx == nullptr || EVP_DigestInit_ex(state_->ctx, md, nullptr) != 1) {
    throw std::runtime_error("OpenSSL: cannot initialise digest");
  }
}

hasher::~hasher() = default;
hasher::hasher(hasher&&) noexcept = default;
hasher& hasher::operator=(hasher&&) noexcept = default;

void hasher::update(const void* data, std::size_t size) {
  if (size > 0) EVP_DigestUpdate(state_->ctx, data, size);
}

digest hasher::finish() {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(state_->ctx, out, &n);
  static constexpr char digits[] = "0123456789abcdef";
  std::string text = algorithm_ == digest_algorithm::sha256 ? "sha256:" : "sha512:";
  for (unsigned i = 0; i < n; ++i) {
    text += digits[out[i] >> 4];
    text += digits[out[i] & 15];
  }
  return digest(algorithm_, std::move(text));
}

digest digest_of(std::string_view bytes, digest_algorithm a) {
  hasher h(a);
  h.update(bytes);
  return h.finish();
}

}  // namespace layercache::oci
