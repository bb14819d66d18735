// Image references ("registry/repository:tag@digest") with Docker's normalisation.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "oci/digest.hpp"

namespace layercache::oci {

// True iff `name` is a repository path per the distribution grammar: one or more components
// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` separated by single '/', at most 255 bytes in total.
// Runs in linear time, allocates nothing; never throws.
[[nodiscard]] bool is_valid_repository(std::string_view name);

// True iff `tag` matches `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
[[nodiscard]] bool is_valid_tag(std::string_view tag);

// True iff `registry` is `host[:port]`: host is a DNS name (components of letters, digits and
// inner '-', separated by '.'), a dotted IPv4 address, or a bracketed IPv6 address
// (`[::1]`); port is 1..65535. At most 255 bytes.
[[nodiscard]] bool is_valid_registry(std::string_view registry);

// A fully normalised image reference. `tag` is empty only when the reference was given by
// digest alone; both are kept when the text had `name:tag@digest`.
struct reference {
  std::string registry;    // e.g. "docker.io", "localhost:5000", "[::1]:5000"
  std::string repository;  // e.g. "library/alpine"
  std::string tag;         // e.g. "latest"; empty when pinned by digest only
  std::optional<oci::digest> digest;

  // Parses `[registry/]repository[:tag][@digest]` with Docker's normalisation:
  // - the first path component is the registry iff it contains '.' or ':' or is "localhost";
  //   otherwise the registry is "docker.io" ("index.docker.io" is also mapped to it);
  // - a single-component repository on docker.io gets the "library/" prefix;
  // - with neither tag nor digest the tag is "latest".
  // Returns nullopt for anything malformed (bad registry, repository, tag or digest; name
  // longer than 255 bytes, as written or normalised to "registry/repository"). Never throws on
  // bad input.
  [[nodiscard]] static std::optional<reference> parse(std::string_view text);

  // "registry/repository[:tag][@digest]"; parse(str()) round-trips.
  [[nodiscard]] std::string str() const;

  friend bool operator==(const reference&, const reference&) = default;
};

}  // namespace layercache::oci
