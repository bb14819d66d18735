#include "server/route.hpp"

#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>

#include "log/log.hpp"
#include "oci/digest.hpp"
#include "oci/reference.hpp"

namespace layercache::server {
namespace {

route_error error(unsigned status, std::string code, std::string message) {
  return route_error{status, std::move(code), std::move(message)};
}

// Splits "<name><marker><rest>" at the last marker; nullopt when absent or name is empty.
std::optional<std::pair<std::string_view, std::string_view>> split_last(std::string_view path,
                                                                        std::string_view marker) {
  const auto at = path.rfind(marker);
  if (at == std::string_view::npos || at == 0) return std::nullopt;
  return std::pair{path.substr(0, at), path.substr(at + marker.size())};
}

}  // namespace

bool route::reference_is_digest() const { return oci::digest::parse(reference).has_value(); }

std::variant<route, route_error> parse_route(std::string_view target) {
  auto parsed = boost::urls::parse_origin_form(target);
  if (!parsed) return error(400, "UNSUPPORTED", "malformed request target");
  const boost::urls::url_view url = *parsed;
  const std::string_view path = url.encoded_path();

  route r;
  for (auto param : url.params()) {
    if (param.key == "ns") {
      if (r.ns) return error(400, "UNSUPPORTED", "more than one ns parameter");
      r.ns = param.value;
    } else {
      r.params.emplace_back(param.key, param.value);
    }
  }

  if (path == "/v2/" || path == "/v2") {
    r.kind = route_kind::base;
    return r;
  }
  if (!path.starts_with("/v2/"))
    return error(404, "UNSUPPORTED", "not an OCI distribution endpoint");
  // Names are never percent-encoded; an encoded slash or dot is an attempt to confuse routing.
  if (path.find('%') != std::string_view::npos) {
    return error(400, "NAME_INVALID", "percent-encoding is not allowed in repository paths");
  }
  const std::string_view rest = path.substr(4);

  std::string_view name;
  if (rest.ends_with("/tags/list")) {
    r.kind = route_kind::tags_list;
    name = rest.substr(0, rest.size() - 10);
  } else if (auto m = split_last(rest, "/manifests/")) {
    r.kind = route_kind::manifest;
    name = m->first;
    r.reference = m->second;
  } else if (auto b = split_last(rest, "/blobs/")) {
    name = b->first;
    if (b->second.starts_with("uploads")) {
      return error(405, "UNSUPPORTED", "this registry mirror is read-only");
    }
    r.kind = route_kind::blob;
    r.reference = b->second;
  } else if (auto f = split_last(rest, "/referrers/")) {
    r.kind = route_kind::referrers;
    name = f->first;
    r.reference = f->second;
  } else {
    return error(404, "UNSUPPORTED", "not an OCI distribution endpoint");
  }

  if (!oci::is_valid_repository(name)) {
    return error(400, "NAME_INVALID", "invalid repository name");
  }
  r.name = name;
  switch (r.kind) {
    case route_kind::manifest:
      if (!oci::digest::parse(r.reference) && !oci::is_valid_tag(r.reference)) {
        // A reference with a ':' meant to be a digest. Anything else names a tag that cannot
        // exist: distribution, and the OCI conformance suite, answer 404 for it.
        if (r.reference.find(':') != std::string::npos) {
          return error(400, "DIGEST_INVALID", "invalid manifest reference");
        }
        return error(404, "MANIFEST_UNKNOWN", "manifest unknown: not a valid tag or digest");
      }
      break;
    case route_kind::blob:
    case route_kind::referrers:
      if (!oci::digest::parse(r.reference)) return error(400, "DIGEST_INVALID", "invalid digest");
      break;
    default:
      break;
  }
  return r;
}

std::string oci_error_body(std::string_view code, std::string_view message) {
  std::string out = R"({"errors":[{"code":)";
  out += log::json_string(code);
  out += R"(,"message":)";
  out += log::json_string(message);
  out += "}]}";
  return out;
}

}  // namespace layercache::server
