// WWW-Authenticate challenges (RFC 9110 §11.6.1), as sent by registries to ask for a token.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace layercache::oci {

struct challenge {
  std::string scheme;  // lowercased, e.g. "bearer", "basic"
  // In order of appearance; names lowercased, values unquoted and unescaped.
  std::vector<std::pair<std::string, std::string>> params;
  // The token68 form (`Negotiate abc==`), if the challenge used it instead of params.
  std::string token68;

  // Value of the first parameter called `name` (case-insensitive), or nullopt. The view points
  // into this challenge and is invalidated by changes to it.
  [[nodiscard]] std::optional<std::string_view> param(std::string_view name) const;

  friend bool operator==(const challenge&, const challenge&) = default;
};

// Parses a WWW-Authenticate field value: one or more challenges separated by commas, each
// `scheme [ 1*SP ( token68 / #auth-param ) ]`, auth-param `name BWS "=" BWS ( token /
// quoted-string )`. Tolerant: returns the challenges parsed before the first syntax error
// (the challenge containing the error is dropped), so garbage yields an empty vector.
// Single pass, no recursion, linear time; never throws.
[[nodiscard]] std::vector<challenge> parse_www_authenticate(std::string_view value);

// The first challenge whose scheme equals `scheme` (case-insensitive), or nullopt.
[[nodiscard]] std::optional<challenge> find_challenge(const std::vector<challenge>& challenges,
                                                      std::string_view scheme);

}  // namespace layercache::oci
