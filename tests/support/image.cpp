#include "tests/support/image.hpp"

#include <boost/json.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url.hpp>
#include <cstring>
#include <stdexcept>

#include "oci/www_authenticate.hpp"
#include "tests/support/http_client.hpp"

namespace layercache::testing {
namespace {

namespace json = boost::json;

constexpr std::uint64_t golden_gamma = 0x9e3779b97f4a7c15ull;
constexpr const char* created_at = "2024-01-01T00:00:00Z";
constexpr std::uint64_t tar_mtime = 1704067200;  // created_at
constexpr std::size_t tar_block = 512;

std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += golden_gamma);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

class xoshiro256 {
 public:
  explicit xoshiro256(std::uint64_t seed) {
    for (auto& word : s_) word = splitmix64(seed);
  }
  std::uint64_t next() {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

 private:
  std::uint64_t s_[4];
};

// A seed for part `index` of the thing seeded with `seed`, so parts differ from each other.
std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t index) {
  std::uint64_t state = seed ^ (index * golden_gamma + 0x632be59bd9b4e019ull);
  return splitmix64(state);
}

// NUL-terminated zero-padded octal in a ustar numeric field of `width` bytes.
void put_octal(char* field, std::size_t width, std::uint64_t value) {
  const std::size_t digits = width - 1;
  field[digits] = '\0';
  for (std::size_t i = digits; i-- > 0;) {
    field[i] = static_cast<char>('0' + (value & 7u));
    value >>= 3;
  }
  if (value != 0) throw std::invalid_argument("value does not fit a ustar field");
}

json::object descriptor(const blob& b) {
  return {{"mediaType", b.media_type},
          {"digest", b.digest.str()},
          {"size", static_cast<std::uint64_t>(b.data.size())}};
}

std::string describe(std::string_view method, std::string_view url, const http_response& res) {
  constexpr std::size_t max_body = 4096;
  std::string body = res.body.substr(0, max_body);
  if (res.body.size() > max_body) body += "...";
  return std::string(method) + " " + std::string(url) + " answered " + std::to_string(res.status) +
         ": " + body;
}

}  // namespace

std::string random_bytes(std::size_t n, std::uint64_t seed) {
  std::string out(n, '\0');
  xoshiro256 rng(seed);
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const std::uint64_t v = rng.next();
    std::memcpy(out.data() + i, &v, 8);
  }
  if (i < n) {
    const std::uint64_t v = rng.next();
    std::memcpy(out.data() + i, &v, n - i);
  }
  return out;
}

std::string make_tar_layer(std::size_t payload_size, std::uint64_t seed, std::string file_name) {
  if (file_name.empty() || file_name.size() > 100) {
    throw std::invalid_argument("make_tar_layer: file name must have 1..100 bytes");
  }
  const std::size_t padded = (payload_size + tar_block - 1) / tar_block * tar_block;
  std::string out(tar_block + padded + 2 * tar_block, '\0');
  char* h = out.data();
  std::memcpy(h, file_name.data(), file_name.size());  // name[100]
  put_octal(h + 100, 8, 0644);                         // mode
  put_octal(h + 108, 8, 0);                            // uid
  put_octal(h + 116, 8, 0);                            // gid
  put_octal(h + 124, 12, payload_size);                // size
  put_octal(h + 136, 12, tar_mtime);                   // mtime
  h[156] = '0';                                        // typeflag: regular file
  std::memcpy(h + 257, "ustar", 6);                    // magic, NUL-terminated
  std::memcpy(h + 263, "00", 2);                       // version
  std::memcpy(h + 265, "root", 4);                     // uname
  std::memcpy(h + 297, "root", 4);                     // gname
  put_octal(h + 329, 8, 0);                            // devmajor
  put_octal(h + 337, 8, 0);                            // devminor
  // The checksum is taken with its own field as spaces, then stored as 6 digits, NUL, space.
  std::memset(h + 148, ' ', 8);
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < tar_block; ++i) sum += static_cast<unsigned char>(h[i]);
  put_octal(h + 148, 7, sum);
  h[155] = ' ';
  const auto payload = random_bytes(payload_size, seed);
  std::memcpy(out.data() + tar_block, payload.data(), payload.size());
  return out;
}

blob make_blob(std::string media_type, std::string data) {
  auto d = oci::digest_of(data);
  return blob{std::move(media_type), std::move(data), std::move(d)};
}

image make_image(image_format format, const std::vector<std::size_t>& layer_sizes,
                 std::uint64_t seed, std::string_view architecture) {
  const bool oci = format == image_format::oci;
  std::vector<blob> layers;
  json::array diff_ids;
  json::array history;
  for (std::size_t i = 0; i < layer_sizes.size(); ++i) {
    const std::string name = "layer" + std::to_string(i) + ".bin";
    layers.push_back(make_blob(std::string(oci ? media_type::oci_layer : media_type::docker_layer),
                               make_tar_layer(layer_sizes[i], derive_seed(seed, i), name)));
    diff_ids.emplace_back(layers.back().digest.str());  // uncompressed: diff_id == digest
    history.emplace_back(
        json::object{{"created", created_at}, {"created_by", "layercache test: add " + name}});
  }
  const json::object config{
      {"created", created_at},
      {"architecture", architecture},
      {"os", "linux"},
      {"config",
       json::object{
           {"Env",
            json::array{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}},
           {"Cmd", json::array{"/layer0.bin"}},
           {"Labels", json::object{{"org.layercache.test.seed", std::to_string(seed)}}}}},
      {"rootfs", json::object{{"type", "layers"}, {"diff_ids", std::move(diff_ids)}}},
      {"history", std::move(history)}};
  auto config_blob =
      make_blob(std::string(oci ? media_type::oci_config : media_type::docker_config),
                json::serialize(config));

  json::array layer_descriptors;
  for (const auto& layer : layers) layer_descriptors.emplace_back(descriptor(layer));
  const auto manifest_type = oci ? media_type::oci_manifest : media_type::docker_manifest;
  const json::object manifest{{"schemaVersion", 2},
                              {"mediaType", manifest_type},
                              {"config", descriptor(config_blob)},
                              {"layers", std::move(layer_descriptors)}};
  auto manifest_blob = make_blob(std::string(manifest_type), json::serialize(manifest));
  return image{std::move(config_blob), std::move(layers), std::move(manifest_blob)};
}

blob make_index(image_format format,
                const std::vector<std::pair<const image*, std::string>>& manifests) {
  const auto type =
      format == image_format::oci ? media_type::oci_index : media_type::docker_manifest_list;
  json::array entries;
  for (const auto& [img, architecture] : manifests) {
    auto entry = descriptor(img->manifest);
    entry["platform"] = json::object{{"architecture", architecture}, {"os", "linux"}};
    entries.emplace_back(std::move(entry));
  }
  const json::object index{
      {"schemaVersion", 2}, {"mediaType", type}, {"manifests", std::move(entries)}};
  return make_blob(std::string(type), json::serialize(index));
}

registry_pusher::registry_pusher(std::string base_url, std::string ca_file,
                                 std::optional<std::pair<std::string, std::string>> basic)
    : base_url_(std::move(base_url)), ca_file_(std::move(ca_file)), basic_(std::move(basic)) {
  while (!base_url_.empty() && base_url_.back() == '/') base_url_.pop_back();
}

std::vector<std::pair<std::string, std::string>> registry_pusher::auth_headers(
    std::string_view repo) const {
  if (auto it = tokens_.find(repo); it != tokens_.end()) {
    return {{"Authorization", "Bearer " + it->second}};
  }
  if (!basic_) return {};
  return {{"Authorization", basic_auth_header(basic_->first, basic_->second)}};
}

http_response registry_pusher::send(http_client& client, std::string_view method,
                                    const std::string& url, std::string_view repo,
                                    const std::vector<std::pair<std::string, std::string>>& headers,
                                    const std::string& body) {
  auto all = auth_headers(repo);
  all.insert(all.end(), headers.begin(), headers.end());
  auto res = client.request(method, url, all, body);
  if (res.status != 401) return res;
  std::string challenge_text;
  for (const auto& v : res.headers_named("WWW-Authenticate")) {
    if (!challenge_text.empty()) challenge_text += ", ";
    challenge_text += v;
  }
  const auto challenges = oci::parse_www_authenticate(challenge_text);
  const auto bearer = oci::find_challenge(challenges, "bearer");
  if (!bearer || !bearer->param("realm")) return res;
  auto realm = boost::urls::parse_absolute_uri(*bearer->param("realm"));
  if (!realm) throw std::runtime_error("bad token realm in " + challenge_text);
  boost::urls::url token_url = *realm;
  if (auto service = bearer->param("service")) token_url.params().append({"service", *service});
  token_url.params().append({"scope", "repository:" + std::string(repo) + ":pull,push"});
  header_list token_headers;
  if (basic_) {
    token_headers.emplace_back("Authorization", basic_auth_header(basic_->first, basic_->second));
  }
  const std::string token_target(token_url.buffer());
  const auto token_res = client.request("GET", token_target, token_headers);
  if (token_res.status != 200) throw std::runtime_error(describe("GET", token_target, token_res));
  boost::system::error_code ec;
  const auto parsed = json::parse(token_res.body, ec);
  const auto* object = ec ? nullptr : parsed.if_object();
  const auto* token = object != nullptr ? object->if_contains("token") : nullptr;
  if (token == nullptr || !token->is_string()) {
    throw std::runtime_error("token realm gave no token: " + token_res.body);
  }
  tokens_[std::string(repo)] = std::string(token->as_string());
  all = auth_headers(repo);
  all.insert(all.end(), headers.begin(), headers.end());
  return client.request(method, url, all, body);
}

void registry_pusher::push_blob(std::string_view repo, const blob& b) {
  http_client client(ca_file_);
  const auto blob_url = base_url_ + "/v2/" + std::string(repo) + "/blobs/" + b.digest.str();
  const auto exists = send(client, "HEAD", blob_url, repo);
  if (exists.status / 100 == 2 || exists.status == 307) return;
  if (exists.status != 404) throw std::runtime_error(describe("HEAD", blob_url, exists));

  const auto start_url = base_url_ + "/v2/" + std::string(repo) + "/blobs/uploads/";
  const auto started = send(client, "POST", start_url, repo);
  const auto location = started.header("Location");
  if (started.status != 202 || !location) {
    throw std::runtime_error(describe("POST", start_url, started));
  }
  const auto base = boost::urls::parse_uri(start_url);
  const auto reference = boost::urls::parse_uri_reference(*location);
  if (!base || !reference) {
    throw std::runtime_error("POST " + start_url + ": bad Location '" + *location + "'");
  }
  boost::urls::url upload;
  if (auto r = boost::urls::resolve(*base, *reference, upload); !r) {
    throw std::runtime_error("cannot resolve upload Location '" + *location +
                             "': " + r.error().message());
  }
  upload.params().append({"digest", b.digest.str()});

  const std::vector<std::pair<std::string, std::string>> headers = {
      {"Content-Type", "application/octet-stream"}};
  const std::string upload_url(upload.buffer());
  const auto done = send(client, "PUT", upload_url, repo, headers, b.data);
  if (done.status != 201) throw std::runtime_error(describe("PUT", upload_url, done));
}

void registry_pusher::push_manifest(std::string_view repo, std::string_view reference,
                                    const blob& manifest) {
  http_client client(ca_file_);
  const auto url = base_url_ + "/v2/" + std::string(repo) + "/manifests/" + std::string(reference);
  const std::vector<std::pair<std::string, std::string>> headers = {
      {"Content-Type", manifest.media_type}};
  const auto res = send(client, "PUT", url, repo, headers, manifest.data);
  if (res.status != 201) throw std::runtime_error(describe("PUT", url, res));
  if (auto d = res.header("Docker-Content-Digest"); d && *d != manifest.digest.str()) {
    throw std::runtime_error("PUT " + url + ": registry computed digest " + *d + ", expected " +
                             manifest.digest.str());
  }
}

void registry_pusher::push_image(std::string_view repo, std::string_view tag, const image& img) {
  push_blob(repo, img.config);
  for (const auto& layer : img.layers) push_blob(repo, layer);
  push_manifest(repo, tag, img.manifest);
}

}  // namespace layercache::testing
