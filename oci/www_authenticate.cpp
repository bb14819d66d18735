#include "oci/www_authenticate.hpp"

#include "oci/http_grammar.hpp"

namespace layercache::oci {
namespace {

using grammar::is_alpha;
using grammar::is_digit;
using grammar::is_ows;
using grammar::is_tchar;

constexpr bool is_token68_char(char c) {
  return is_alpha(c) || is_digit(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == '+' ||
         c == '/';
}

// qdtext minus '"' and '\\': HTAB / SP / VCHAR / obs-text.
constexpr bool is_qdtext(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u == '\t' || (u >= 0x20 && u != 0x7f);
}

constexpr char to_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; }

std::string lowercase(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = to_lower(c);
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (to_lower(a[i]) != to_lower(b[i])) return false;
  }
  return true;
}

// A cursor over the field value. Every method advances monotonically.
class scanner {
 public:
  explicit scanner(std::string_view s) : s_(s) {}

  [[nodiscard]] bool done() const { return pos_ == s_.size(); }
  [[nodiscard]] char peek() const { return s_[pos_]; }
  [[nodiscard]] std::size_t pos() const { return pos_; }
  void seek(std::size_t p) { pos_ = p; }
  void advance() { ++pos_; }

  void skip_ows() {
    while (!done() && is_ows(peek())) ++pos_;
  }

  std::string_view token() {
    const auto start = pos_;
    while (!done() && is_tchar(peek())) ++pos_;
    return s_.substr(start, pos_ - start);
  }

  // Reads a quoted-string at the cursor (which is on '"'); nullopt if unterminated or
  // containing control characters.
  std::optional<std::string> quoted_string() {
    ++pos_;  // opening quote
    std::string out;
    while (!done()) {
      const char c = s_[pos_++];
      if (c == '"') return out;
      if (c == '\\') {
        if (done() || !is_qdtext(peek())) return std::nullopt;
        out += s_[pos_++];
      } else if (is_qdtext(c)) {
        out += c;
      } else {
        return std::nullopt;
      }
    }
    return std::nullopt;
  }

  // If a token68 followed by optional whitespace and then ',' or the end starts at the
  // cursor, consumes the token68 and returns it.
  std::optional<std::string_view> try_token68() {
    std::size_t p = pos_;
    while (p < s_.size() && is_token68_char(s_[p])) ++p;
    if (p == pos_) return std::nullopt;
    while (p < s_.size() && s_[p] == '=') ++p;
    std::size_t q = p;
    while (q < s_.size() && is_ows(s_[q])) ++q;
    if (q != s_.size() && s_[q] != ',') return std::nullopt;
    const auto t = s_.substr(pos_, p - pos_);
    pos_ = p;
    return t;
  }

 private:
  std::string_view s_;
  std::size_t pos_ = 0;
};

enum class step { ok, garbage };

// Parses `#auth-param` after the scheme. Stops at the end, or just before a token that
// follows a comma and is not followed by '=' (the next challenge's scheme).
step parse_params(scanner& in, challenge& out) {
  bool after_comma = false;
  while (true) {
    in.skip_ows();
    if (in.done()) return step::ok;
    if (in.peek() == ',') {  // list separator or empty list element
      in.advance();
      after_comma = true;
      continue;
    }
    const auto name_start = in.pos();
    const auto name = in.token();
    if (name.empty()) {
      // After a comma this challenge is complete; what follows is the caller's problem.
      return after_comma ? step::ok : step::garbage;
    }
    in.skip_ows();
    if (in.done() || in.peek() != '=') {
      if (!after_comma) return step::garbage;  // "scheme a b": challenges need a comma
      in.seek(name_start);                     // a new challenge begins here
      return step::ok;
    }
    in.advance();  // '='
    in.skip_ows();
    if (in.done()) return step::garbage;
    std::string value;
    if (in.peek() == '"') {
      auto q = in.quoted_string();
      if (!q) return step::garbage;
      value = std::move(*q);
    } else {
      const auto t = in.token();
      if (t.empty()) return step::garbage;
      value = t;
    }
    out.params.emplace_back(lowercase(name), std::move(value));
    in.skip_ows();
    if (in.done()) return step::ok;
    if (in.peek() != ',') return step::garbage;
    in.advance();
    after_comma = true;
  }
}

}  // namespace

std::optional<std::string_view> challenge::param(std::string_view name) const {
  for (const auto& [k, v] : params) {
    if (iequals(k, name)) return std::string_view(v);
  }
  return std::nullopt;
}

std::vector<challenge> parse_www_authenticate(std::string_view value) {
  std::vector<challenge> result;
  scanner in(value);
  while (true) {
    // Skip whitespace and empty list elements between challenges.
    while (!in.done() && (is_ows(in.peek()) || in.peek() == ',')) in.advance();
    if (in.done()) break;

    const auto scheme = in.token();
    if (scheme.empty()) break;
    challenge c;
    c.scheme = lowercase(scheme);

    if (in.done() || in.peek() == ',') {
      result.push_back(std::move(c));
      continue;
    }
    if (in.peek() != ' ') break;  // scheme must be followed by 1*SP
    in.skip_ows();
    if (in.done() || in.peek() == ',') {
      result.push_back(std::move(c));
      continue;
    }
    if (const auto t = in.try_token68()) {
      c.token68 = *t;
      result.push_back(std::move(c));
      continue;
    }
    if (parse_params(in, c) == step::garbage) break;
    result.push_back(std::move(c));
  }
  return result;
}

std::optional<challenge> find_challenge(const std::vector<challenge>& challenges,
                                        std::string_view scheme) {
  for (const auto& c : challenges) {
    if (iequals(c.scheme, scheme)) return c;
  }
  return std::nullopt;
}

}  // namespace layercache::oci
