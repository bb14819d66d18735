#include "registry/artifacts.hpp"

#include <boost/json.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url.hpp>

#include "log/log.hpp"
#include "oci/manifest.hpp"
#include "oci/media_types.hpp"
#include "registry/targets.hpp"

namespace layercache::registry {
namespace {

constexpr std::size_t max_index_size = std::size_t{4} * 1024 * 1024;
constexpr std::string_view empty_config = "{}";

struct reply {
  unsigned status = 0;
  std::string error;  // non-empty: no answer (connection, auth, protocol)
  std::string location;
  bool oci_subject = false;
  std::string body;
};

// One request. Built in a local and passed by reference: g++ 12 mishandles non-trivial
// temporaries in co_await expressions.
struct call_args {
  http::verb method = http::verb::get;
  std::string target;
  std::string accept;
  std::string body;
  std::string content_type;
  std::size_t limit = std::size_t{64} * 1024;  // largest body read
  bool follow_redirects = false;               // a blob GET
};

asio::awaitable<reply> call(upstream_client& client, const std::string& repository, call_args& a) {
  upstream_request req;
  req.method = a.method;
  req.target = a.target;
  req.repository = repository;
  req.push = a.method == http::verb::post || a.method == http::verb::put;
  req.follow_redirects = a.follow_redirects;
  if (!a.accept.empty()) req.headers.emplace_back(http::field::accept, a.accept);
  if (!a.content_type.empty()) req.headers.emplace_back(http::field::content_type, a.content_type);
  if (a.body.empty() && req.push) req.headers.emplace_back(http::field::content_length, "0");
  req.body = std::move(a.body);
  auto result = co_await client.send(std::move(req));
  reply r;
  if (auto* f = std::get_if<upstream_failure>(&result)) {
    r.error = f->message;
    co_return r;
  }
  auto& up = *std::get<std::unique_ptr<upstream_response>>(result);
  r.status = up.status();
  r.location = std::string(up.fields()[http::field::location]);
  r.oci_subject = !up.fields()["OCI-Subject"].empty();
  if (a.method == http::verb::head) co_return r;
  if (r.status >= 200 && r.status < 300) {
    auto [ec, text] = co_await up.read_all(a.limit);
    if (ec) {
      r.error = "reading the body: " + ec.message();
      co_return r;
    }
    r.body = std::move(text);
  } else {
    co_await up.discard();
  }
  co_return r;
}

std::string describe(const reply& r, std::string_view what) {
  if (!r.error.empty()) return std::string(what) + ": " + r.error;
  return std::string(what) + ": upstream answered " + std::to_string(r.status);
}

// The origin-form target of an upload Location, which must be at the upstream itself.
std::optional<std::string> upload_target(const upstream_client& client, std::string_view location) {
  if (location.starts_with("/")) return std::string(location);
  auto parsed = parse_http_url(location);
  if (!parsed) return std::nullopt;
  const auto& cfg = client.settings();
  const auto& [where, target] = *parsed;
  if (where.scheme != cfg.scheme || where.host != cfg.host || where.port != cfg.port) {
    return std::nullopt;  // credentials never go to another host
  }
  return target;
}

// Pushes `data` as blob `d` unless the registry has it. Empty on success.
asio::awaitable<std::string> push_blob(upstream_client& client, const std::string& repository,
                                       const oci::digest& d, const std::string& data) {
  call_args head{http::verb::head, blob_target(repository, d.str())};
  auto exists = co_await call(client, repository, head);
  if (exists.error.empty() && exists.status == 200) co_return std::string();
  call_args post{http::verb::post, "/v2/" + repository + "/blobs/uploads/"};
  auto started = co_await call(client, repository, post);
  if (!started.error.empty() || started.status != 202) {
    co_return describe(started, "starting a blob upload");
  }
  auto target = upload_target(client, started.location);
  if (!target) co_return "the upload Location is not at the upstream";
  *target += target->find('?') == std::string::npos ? "?" : "&";
  *target += "digest=" + d.str();
  call_args put{http::verb::put, *target, {}, data, "application/octet-stream"};
  auto done = co_await call(client, repository, put);
  if (!done.error.empty() || done.status != 201) co_return describe(done, "uploading a blob");
  co_return std::string();
}

boost::json::object descriptor_json(std::string_view media_type, const oci::digest& d,
                                    std::uint64_t size) {
  return boost::json::object{{"mediaType", media_type}, {"digest", d.str()}, {"size", size}};
}

// A media type as a query value: '+' would be read as a space.
std::string query_value(std::string_view media_type) {
  std::string out;
  for (char c : media_type) {
    if (c == '+') {
      out += "%2B";
    } else {
      out += c;
    }
  }
  return out;
}

// "sha256-<hex>": the referrers tag schema's tag for `subject`.
std::string referrers_tag(const oci::digest& subject) {
  std::string tag = subject.str();
  tag[tag.find(':')] = '-';
  return tag;
}

struct artifact_entry {
  oci::digest manifest;
  std::uint64_t size = 0;
};

// Lists the artifact manifest `added` of `artifact_type` in the index tagged
// sha256-<hex of subject>, replacing earlier ones of that type. Empty on success.
asio::awaitable<std::string> add_to_referrers_tag(upstream_client& client,
                                                  const std::string& repository,
                                                  const oci::digest& subject,
                                                  const std::string& artifact_type,
                                                  const artifact_entry& added) {
  const std::string tag_target = manifest_target(repository, referrers_tag(subject));
  call_args get{http::verb::get, tag_target, std::string(oci::media_types::oci_index)};
  get.limit = max_index_size;
  auto current = co_await call(client, repository, get);
  boost::json::array entries;
  if (current.error.empty() && current.status == 200) {
    boost::system::error_code ec;
    auto parsed = boost::json::parse(current.body, ec);
    const auto* list =
        ec || !parsed.is_object() ? nullptr : parsed.as_object().if_contains("manifests");
    if (list != nullptr && list->is_array()) {
      for (const auto& e : list->as_array()) {
        const auto* type = e.is_object() ? e.as_object().if_contains("artifactType") : nullptr;
        if (type != nullptr && type->is_string() && type->as_string() == artifact_type) {
          continue;  // an earlier artifact of the type: replaced
        }
        entries.push_back(e);
      }
    }
  } else if (!current.error.empty() || current.status != 404) {
    co_return describe(current, "reading the referrers tag");
  }
  auto entry = descriptor_json(oci::media_types::oci_manifest, added.manifest, added.size);
  entry["artifactType"] = artifact_type;
  entries.push_back(std::move(entry));
  const boost::json::object index{{"schemaVersion", 2},
                                  {"mediaType", oci::media_types::oci_index},
                                  {"manifests", std::move(entries)}};
  call_args tag{http::verb::put,
                tag_target,
                {},
                boost::json::serialize(index),
                std::string(oci::media_types::oci_index)};
  auto tagged = co_await call(client, repository, tag);
  if (!tagged.error.empty() || tagged.status != 201) {
    co_return describe(tagged, "writing the referrers tag");
  }
  co_return std::string();
}

}  // namespace

asio::awaitable<std::string> push_artifact(upstream_client& client, const std::string& repository,
                                           const artifact_subject& subject,
                                           const std::string& artifact_type,
                                           const std::string& document) {
  const std::string config_text(empty_config);
  const oci::digest config_digest = oci::digest_of(config_text);
  if (auto e = co_await push_blob(client, repository, config_digest, config_text); !e.empty()) {
    co_return e;
  }
  const oci::digest layer_digest = oci::digest_of(document);
  if (auto e = co_await push_blob(client, repository, layer_digest, document); !e.empty()) {
    co_return e;
  }
  boost::json::object manifest{
      {"schemaVersion", 2},
      {"mediaType", oci::media_types::oci_manifest},
      {"artifactType", artifact_type},
      {"config", descriptor_json(oci::media_types::oci_empty, config_digest, config_text.size())},
      {"layers", boost::json::array{descriptor_json(artifact_type, layer_digest, document.size())}},
      {"subject", descriptor_json(subject.media_type, subject.digest, subject.size)},
  };
  const std::string manifest_text = boost::json::serialize(manifest);
  const oci::digest manifest_digest = oci::digest_of(manifest_text);
  call_args put{http::verb::put,
                manifest_target(repository, manifest_digest.str()),
                {},
                manifest_text,
                std::string(oci::media_types::oci_manifest)};
  auto pushed = co_await call(client, repository, put);
  if (!pushed.error.empty() || pushed.status != 201) {
    co_return describe(pushed, "pushing the artifact");
  }
  if (pushed.oci_subject) co_return std::string();  // the registry keeps referrers itself

  // The referrers tag schema: add the artifact to the index tagged sha256-<hex>.
  const artifact_entry entry{manifest_digest, manifest_text.size()};
  co_return co_await add_to_referrers_tag(client, repository, subject.digest, artifact_type, entry);
}

asio::awaitable<std::optional<std::string>> find_artifact(upstream_client& client,
                                                          const std::string& repository,
                                                          const oci::digest& subject,
                                                          const std::string& artifact_type,
                                                          std::size_t max_size) {
  // 1. The referrers API; 2. the referrers tag.
  std::string index_text;
  call_args api{http::verb::get,
                "/v2/" + repository + "/referrers/" + subject.str() +
                    "?artifactType=" + query_value(artifact_type),
                std::string(oci::media_types::oci_index)};
  api.limit = max_index_size;
  auto listed = co_await call(client, repository, api);
  if (listed.error.empty() && listed.status == 200) {
    index_text = std::move(listed.body);
  } else {
    call_args tag{http::verb::get, manifest_target(repository, referrers_tag(subject)),
                  std::string(oci::media_types::oci_index)};
    tag.limit = max_index_size;
    auto tagged = co_await call(client, repository, tag);
    if (!tagged.error.empty() || tagged.status != 200) co_return std::nullopt;
    index_text = std::move(tagged.body);
  }
  const auto index = oci::parse_manifest(index_text, oci::media_types::oci_index);
  if (!index || !index->is_index()) co_return std::nullopt;
  const oci::descriptor* newest = nullptr;  // the last one listed
  for (const auto& m : index->manifests) {
    if (m.artifact_type == artifact_type) newest = &m;
  }
  if (newest == nullptr) co_return std::nullopt;
  const oci::digest artifact = newest->digest;

  call_args get{http::verb::get, manifest_target(repository, artifact.str()),
                std::string(oci::media_types::oci_manifest)};
  get.limit = max_index_size;
  auto got = co_await call(client, repository, get);
  if (!got.error.empty() || got.status != 200) co_return std::nullopt;
  if (oci::digest_of(got.body, artifact.algorithm()) != artifact) {
    log::warn("registry", "upstream ", client.settings().name, ": artifact ", artifact.str(),
              " does not match its digest; ignored");
    co_return std::nullopt;
  }
  const auto manifest = oci::parse_manifest(got.body, oci::media_types::oci_manifest);
  if (!manifest || !manifest->subject || manifest->subject->digest != subject ||
      manifest->layers.size() != 1 || manifest->layers[0].media_type != artifact_type ||
      manifest->layers[0].size > max_size) {
    co_return std::nullopt;
  }
  const oci::digest layer = manifest->layers[0].digest;
  call_args blob{http::verb::get, blob_target(repository, layer.str())};
  blob.limit = max_size;
  blob.follow_redirects = true;
  auto fetched = co_await call(client, repository, blob);
  if (!fetched.error.empty() || fetched.status != 200) co_return std::nullopt;
  if (oci::digest_of(fetched.body, layer.algorithm()) != layer) {
    log::warn("registry", "upstream ", client.settings().name, ": artifact blob ", layer.str(),
              " does not match its digest; ignored");
    co_return std::nullopt;
  }
  co_return std::move(fetched.body);
}

}  // namespace layercache::registry
