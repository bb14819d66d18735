#include "oci/manifest.hpp"

#include <algorithm>
#include <boost/json.hpp>

#include "oci/media_types.hpp"

namespace layercache::oci {
namespace {

namespace json = boost::json;

constexpr std::size_t max_json_depth = 64;

// Optional string member: absent → ok with nullopt; present and not a string → error.
struct string_field {
  bool ok = true;
  std::optional<std::string> value;
};

string_field get_string(const json::object& obj, std::string_view key) {
  const auto* v = obj.if_contains(key);
  if (v == nullptr) return {};
  const auto* s = v->if_string();
  if (s == nullptr) return {.ok = false, .value = std::nullopt};
  return {.ok = true, .value = std::string(s->data(), s->size())};
}

std::optional<std::uint64_t> as_size(const json::value& v) {
  if (const auto* i = v.if_int64()) {
    if (*i < 0) return std::nullopt;
    return static_cast<std::uint64_t>(*i);
  }
  if (const auto* u = v.if_uint64()) return *u;
  return std::nullopt;
}

std::optional<descriptor> parse_descriptor(const json::value& v) {
  const auto* obj = v.if_object();
  if (obj == nullptr) return std::nullopt;

  const auto media_type = get_string(*obj, "mediaType");
  const auto digest_text = get_string(*obj, "digest");
  const auto artifact_type = get_string(*obj, "artifactType");
  if (!media_type.ok || !digest_text.ok || !artifact_type.ok || !digest_text.value) {
    return std::nullopt;
  }
  auto d = digest::parse(*digest_text.value);
  if (!d) return std::nullopt;
  const auto* size_value = obj->if_contains("size");
  if (size_value == nullptr) return std::nullopt;
  const auto size = as_size(*size_value);
  if (!size) return std::nullopt;

  descriptor out{.media_type = media_type.value.value_or(std::string()),
                 .digest = std::move(*d),
                 .size = *size,
                 .artifact_type = artifact_type.value.value_or(std::string())};

  if (const auto* p = obj->if_contains("platform")) {
    const auto* platform = p->if_object();
    if (platform == nullptr) return std::nullopt;
    auto os = get_string(*platform, "os");
    auto arch = get_string(*platform, "architecture");
    auto variant = get_string(*platform, "variant");
    if (!os.ok || !arch.ok || !variant.ok) return std::nullopt;
    out.platform_os = std::move(os.value);
    out.platform_architecture = std::move(arch.value);
    out.platform_variant = std::move(variant.value);
  }
  return out;
}

// Absent → true with `out` untouched; present → must be an array of valid descriptors.
bool parse_descriptor_array(const json::object& obj, std::string_view key,
                            std::vector<descriptor>& out) {
  const auto* v = obj.if_contains(key);
  if (v == nullptr) return true;
  const auto* arr = v->if_array();
  if (arr == nullptr) return false;
  out.reserve(arr->size());
  for (const auto& item : *arr) {
    auto d = parse_descriptor(item);
    if (!d) return false;
    out.push_back(std::move(*d));
  }
  return true;
}

// Schema 1: fsLayers[].blobSum.
bool parse_fs_layers(const json::object& obj, std::vector<descriptor>& out) {
  const auto* v = obj.if_contains("fsLayers");
  if (v == nullptr) return false;
  const auto* arr = v->if_array();
  if (arr == nullptr) return false;
  out.reserve(arr->size());
  for (const auto& item : *arr) {
    const auto* layer = item.if_object();
    if (layer == nullptr) return false;
    const auto blob_sum = get_string(*layer, "blobSum");
    if (!blob_sum.ok || !blob_sum.value) return false;
    auto d = digest::parse(*blob_sum.value);
    if (!d) return false;
    out.push_back(descriptor{.media_type = std::string(media_types::docker_layer_tar_gzip),
                             .digest = std::move(*d),
                             .size = 0});
  }
  return true;
}

// Content-Type without parameters and whitespace, lowercased.
std::string bare_media_type(std::string_view content_type) {
  content_type = content_type.substr(0, content_type.find(';'));
  while (!content_type.empty() && (content_type.front() == ' ' || content_type.front() == '\t')) {
    content_type.remove_prefix(1);
  }
  while (!content_type.empty() && (content_type.back() == ' ' || content_type.back() == '\t')) {
    content_type.remove_suffix(1);
  }
  std::string out(content_type);
  for (auto& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

bool is_schema1(std::string_view media_type) {
  return detail::media_type_equals(media_type, media_types::docker_manifest_v1) ||
         detail::media_type_equals(media_type, media_types::docker_manifest_v1_signed);
}

}  // namespace

bool manifest::is_index() const { return is_index_media_type(media_type); }

std::vector<descriptor> manifest::blobs() const {
  std::vector<descriptor> out;
  if (config) out.push_back(*config);
  for (const auto& l : layers) {
    const bool seen = std::any_of(out.begin(), out.end(),
                                  [&](const descriptor& x) { return x.digest == l.digest; });
    if (!seen) out.push_back(l);
  }
  return out;
}

std::optional<manifest> parse_manifest(std::string_view text, std::string_view content_type) {
  json::parse_options options;
  options.max_depth = max_json_depth;
  boost::system::error_code ec;
  const json::value doc =
      json::parse(json::string_view(text.data(), text.size()), ec, json::storage_ptr(), options);
  if (ec) return std::nullopt;
  const auto* obj = doc.if_object();
  if (obj == nullptr) return std::nullopt;

  const auto* schema_version = obj->if_contains("schemaVersion");
  if (schema_version == nullptr) return std::nullopt;
  const auto version = as_size(*schema_version);
  if (!version || (*version != 1 && *version != 2)) return std::nullopt;

  manifest m;
  auto media_type = get_string(*obj, "mediaType");
  if (!media_type.ok) return std::nullopt;
  const bool has_manifests = obj->contains("manifests");
  const bool has_config = obj->contains("config");
  const bool has_layers = obj->contains("layers");
  if (media_type.value) {
    m.media_type = std::move(*media_type.value);
  } else if (auto ct = bare_media_type(content_type);
             is_manifest_media_type(ct) || is_index_media_type(ct)) {
    m.media_type = std::move(ct);
  } else if (*version == 1) {
    m.media_type = obj->contains("signatures") ? media_types::docker_manifest_v1_signed
                                               : media_types::docker_manifest_v1;
  } else {
    m.media_type = has_manifests ? media_types::oci_index : media_types::oci_manifest;
  }

  if (*version == 1 || is_schema1(m.media_type)) {
    if (*version != 1 || !is_schema1(m.media_type)) return std::nullopt;
    if (!parse_fs_layers(*obj, m.layers)) return std::nullopt;
    return m;
  }

  if (m.is_index()) {
    if (!has_manifests || has_config || has_layers) return std::nullopt;
  } else if (is_manifest_media_type(m.media_type)) {
    if (has_manifests || !has_config || !has_layers) return std::nullopt;
  } else if (has_manifests && (has_config || has_layers)) {
    return std::nullopt;  // unknown type: accept either shape, but not both
  }

  if (const auto* c = obj->if_contains("config")) {
    m.config = parse_descriptor(*c);
    if (!m.config) return std::nullopt;
  }
  if (const auto* s = obj->if_contains("subject")) {
    m.subject = parse_descriptor(*s);
    if (!m.subject) return std::nullopt;
  }
  if (!parse_descriptor_array(*obj, "layers", m.layers)) return std::nullopt;
  if (!parse_descriptor_array(*obj, "manifests", m.manifests)) return std::nullopt;
  return m;
}

}  // namespace layercache::oci
