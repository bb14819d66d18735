// Validated, immutable configuration of layercached.
//
// config/ knows YAML and nothing of Asio or HTTP. load_file()/load_string() parse YAML into
// these plain structs, fill defaults, validate, and report *every* problem with its key path
// and line. Once loaded, a config is a plain value: copy it freely, share it read-only.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace layercache::config {

using duration = std::chrono::milliseconds;

// A TLS identity served by a listener.
struct tls_identity {
  std::string cert_file;  // PEM chain
  std::string key_file;   // PEM private key
  // PEM CA certificates. Set: clients must present a certificate one of them signed (mTLS).
  std::string client_ca_file;
};

// One address the proxy listens on. Plain HTTP unless `tls` is set.
struct listener {
  std::string host;  // literal IP address, e.g. "127.0.0.1" or "::1"
  std::uint16_t port = 0;
  std::optional<tls_identity> tls;
};

struct server_timeouts {
  duration request_header{std::chrono::seconds(30)};  // reading one request's header
  duration idle{std::chrono::seconds(120)};           // keep-alive wait for the next request
  duration write{std::chrono::seconds(60)};           // one write to a client
  duration shutdown{std::chrono::seconds(30)};        // SIGTERM: drain in-flight requests
};

struct server_settings {
  std::vector<listener> listen;  // at least one
  unsigned threads = 0;          // I/O threads; 0 = number of cores
  server_timeouts timeouts;
  std::uint64_t max_connections = 4096;
  std::uint64_t max_header_size = 16ULL * 1024;          // request header bytes (431 beyond)
  std::uint64_t max_manifest_size = 4ULL * 1024 * 1024;  // buffered manifest bytes (upstream)
  // Client authentication (`client_auth.token_file`): every request must carry this token,
  // as `Authorization: Bearer <token>` or as the password of HTTP Basic. Empty: none.
  std::string client_token;
  std::string client_token_file;
};

enum class auth_type {
  anonymous,      // anonymous bearer tokens (Docker Hub public images)
  basic,          // username + password (file or environment variable)
  gce_metadata,   // an access token from the GCE metadata server (user oauth2accesstoken)
  docker_config,  // a docker config.json: auths entries, credHelpers, credsStore
};

inline constexpr std::string_view default_metadata_url =
    "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token";

// Credentials for one upstream. Secrets are read at load time (basic) or when needed
// (gce_metadata, docker_config) and never logged.
struct upstream_auth {
  auth_type type = auth_type::anonymous;
  // basic
  std::string username;
  std::string password;       // resolved from password_file or password_env
  std::string password_file;  // where it came from (for messages only)
  std::string password_env;
  // gce_metadata: where the access token comes from (http or https).
  std::string metadata_url{default_metadata_url};
  // docker_config: the config.json read (and re-read when it changes).
  std::string docker_config;
  // docker_config: the key looked up in `auths` and `credHelpers`, and handed to a credential
  // helper; empty: the upstream's host[:port] (Docker Hub hosts: index.docker.io).
  std::string registry;
  // docker_config: where docker-credential-<name> helpers are; empty: the PATH.
  std::string helper_dir;
  duration helper_timeout{std::chrono::seconds(10)};  // a helper run longer than this is killed
  // Hosts a token realm may be on to receive credentials (lowercase; "*.example.com" matches
  // any subdomain; "host:port" that port only, a bare host the realm scheme's default port).
  // Empty: the upstream's host:port and hosts under its parent domain on the upstream's port.
  std::vector<std::string> realm_hosts;
};

struct upstream_timeouts {
  duration connect{std::chrono::seconds(10)};   // TCP connect + TLS handshake
  duration response{std::chrono::seconds(30)};  // request sent → response header received
  duration read{std::chrono::seconds(60)};      // longest pause between body bytes
  // The whole of a body that is read into memory (a manifest, a tag list's error, a token
  // answer), from its first read: a body that trickles forever fails after it.
  duration body{std::chrono::seconds(60)};
};

// How a request that failed before its answer began is tried again: transport failures
// (connect, reset, timeout) and 429, 500, 502, 503, 504 answers, for GET and HEAD only. The
// waits grow exponentially (with jitter); a Retry-After header sets the wait instead.
struct upstream_retry {
  unsigned attempts = 3;                               // tries in all (1: no retries)
  duration backoff{std::chrono::milliseconds(200)};    // before the second try; doubles
  duration max_backoff{std::chrono::seconds(5)};       // cap of the exponential wait
  duration max_retry_after{std::chrono::seconds(30)};  // longer asked waits: the client decides
};

// A registry-API endpoint asked before the origin for blobs (whole and ranged) and manifests
// by digest: a node-local P2P daemon (Spegel, Dragonfly's dfdaemon), a zonal cache tier (other
// layercaches), a pull-through registry. Requests to it carry `ns=<origin host>`.
struct mirror {
  std::string url;  // as written
  // Parsed from url:
  std::string scheme;
  std::string host;
  std::uint16_t port = 0;
  std::string ca_file;  // extra trusted CAs (PEM)
  upstream_auth auth;   // its own; the origin's credentials never go to a mirror
  // `response` is the first-byte budget: a mirror that has not answered by then is passed
  // over for the next one (and counted as a failure).
  upstream_timeouts timeouts{std::chrono::seconds(2), std::chrono::seconds(5),
                             std::chrono::seconds(10), std::chrono::seconds(30)};
  bool resolve = false;  // tags are resolved here too (else only at the origin)
};

// Whose right to pull a repository lets a client have its cached bytes (upstream.access).
enum class access_mode {
  node,    // the node's: every client that reaches layercache gets what it cached
  client,  // the client's own: its credentials are confirmed with the upstream per repository
};

// How the mirrors of one upstream are chosen for a blob.
enum class mirror_selection {
  ordered,  // as listed: the first that answers
  hash,     // rendezvous hashing of the digest: each blob has an owner, then the next
};

// A mirror that fails `failures` times in a row is not asked for `open_for`; then it gets one
// request, and a failure opens it again.
struct mirror_breaker {
  unsigned failures = 3;
  duration open_for{std::chrono::seconds(30)};
};

// One registry the proxy pulls from.
struct upstream {
  std::string name;  // routing name: path prefix (/v2/<name>/...) and a `ns=` value
  std::string url;   // as written, e.g. "https://registry-1.docker.io"
  // Parsed from url:
  std::string scheme;  // "http" or "https"
  std::string host;    // lowercase; without brackets for IPv6
  std::uint16_t port = 0;
  bool is_default = false;
  std::vector<std::string> aliases;  // more `ns=` values that select this upstream (lowercase)
  std::string ca_file;               // extra trusted CAs (PEM), beside the system store
  upstream_auth auth;
  upstream_timeouts timeouts;
  upstream_retry retry;
  std::uint64_t max_idle_connections = 16;  // kept per upstream host
  // Connections opened ahead when a tag is resolved at the upstream (the blob reads that
  // follow skip the connect and TLS handshake); 0: none.
  unsigned warm_connections = 4;
  unsigned max_redirects = 5;
  // How long the place a blob GET was redirected to is used again for that blob's later GETs
  // (ranges of it) without asking the upstream first; 0: never. A refused or failed reuse asks
  // the upstream again.
  duration redirect_reuse{std::chrono::seconds(60)};
  // Blob redirects may lead to loopback, private and link-local addresses even when the
  // upstream itself is not on an address of that kind (never to layercache's own listeners).
  bool allow_internal_redirects = false;
  // Asked before this upstream for blobs and manifests by digest (never sent its credentials).
  std::vector<mirror> mirrors;
  mirror_selection mirror_select = mirror_selection::ordered;
  mirror_breaker breaker;
  // access: client — each client presents its own credentials for the upstream, confirmed
  // there per repository (server/access.hpp) and trusted for access_ttl (never beyond a
  // token's own expiry).
  access_mode access = access_mode::node;
  duration access_ttl{std::chrono::seconds(60)};
};

enum class log_level { debug, info, warn, error };

struct log_settings {
  log_level level = log_level::info;
  bool access = true;  // one JSON line per client request (logger "access", level info)
};

// The operations listener: /metrics, /healthz, /readyz and the admin API (/admin/...).
// Plain HTTP; loopback by default. A non-loopback address requires a token.
struct admin_settings {
  bool enabled = true;
  std::string host = "127.0.0.1";
  std::uint16_t port = 9401;
  // Bearer token required by /admin/* (and by /metrics when metrics_need_token); read from
  // token_file at load. Empty: no token (loopback only).
  std::string token;
  std::string token_file;
  bool metrics_need_token = false;
  // Connections open at once on the operations listener; more are closed at accept.
  std::uint64_t max_connections = 64;
  // Host header values accepted beside the listener's own address (and `localhost` on a
  // loopback listener): names the operations listener is reached by, lowercase, with or
  // without a port. Anything else is refused (421): no DNS rebinding.
  std::vector<std::string> hosts;
};

// The chunk store (RocksDB) on local disk.
struct cache_settings {
  std::string path = "/var/lib/layercache";  // store directory, created when missing
  std::uint64_t capacity = 10ULL << 30;      // chunk bytes kept before LRU eviction
  // Chunk size of newly cached blobs: 64KiB..16MiB, a power of two. Each blob keeps the chunk
  // size it was stored with, so changing this never misreads cached data.
  std::uint32_t chunk_size = 1U << 20;
  // RocksDB block cache: index and filter blocks, records, manifests (chunks are not kept
  // there: the memory cache keeps those worth keeping).
  std::uint64_t block_cache = 32ULL << 20;
  // Checked chunks kept in memory after a read of part of them (random ranges, lazy pulls),
  // served again with no store read; 0: none.
  std::uint64_t memory_cache = 256ULL << 20;
  // New chunks are not stored while the disk under `path` has less free space than this
  // (serving goes on from upstream); 0: no check.
  std::uint64_t min_free_disk = 256ULL << 20;
  // New chunks are not stored while the store's files take more than this; reaching it starts a
  // compaction, and evicts least recently used blobs when that is not enough. 0: no limit.
  std::uint64_t max_disk = 0;
  // true: every store write goes through RocksDB's write-ahead log and is fsynced. false (the
  // default): no log; a crash loses the writes since the last flush, consistently.
  bool sync_writes = false;
  bool enabled = true;                    // false: blobs pass straight through, no store
  std::uint64_t fetch_size = 8ULL << 20;  // largest upstream range request (64KiB..256MiB)
  unsigned parallel_fetches = 4;          // runs in flight ahead of one reader (1..64)
  unsigned io_threads = 2;                // blocking store I/O threads (1..64)
  bool complete_partial = true;  // after a range read, fetch the rest of the blob and verify it
  // A tag resolved this long ago is served from the store without asking the upstream; older,
  // it is revalidated with an upstream HEAD. 0s: always revalidate.
  duration tag_ttl{std::chrono::seconds(60)};
  // When the upstream fails (unreachable, timeout, 5xx, 429), a tag resolved at most this long
  // ago is still served, flagged with `X-Layercache-Stale: true`. 0s: never serve stale.
  duration max_stale{std::chrono::hours(24)};
};

// When serving a manifest starts fetching all the blobs it lists.
enum class eager_mode {
  automatic,  // only when the manifest has no access profile
  always,     // also after replaying a profile
  never,
};

// Access profiles and prefetch (needs the cache). A manifest served to a client opens a
// recording window; the chunks its blobs are read at in that window, in first-touch order,
// are merged into the manifest's profile. Serving a manifest that has a profile fetches those
// chunks ahead of the client.
struct prefetch_settings {
  bool enabled = true;
  duration window{std::chrono::seconds(60)};  // recording window after a manifest is served
  // With a non-zero `quiet`, recording also ends once no read came for this long after the
  // first: a lazy-pulling snapshotter's background fetch of whole layers (5 s after the start
  // went quiet, in the stargz snapshotter) is not part of the start.
  duration quiet{0};
  unsigned concurrency = 16;  // prefetch fills in flight per replay (1..64)
  eager_mode eager_layers = eager_mode::automatic;
  // Image references ("[registry/]repository[:tag][@digest]") preloaded at start-up.
  std::vector<std::string> preload;
  // Push recorded profiles to the manifest's upstream as OCI artifacts (needs push rights).
  bool publish = false;
  // With no profile of its own, look for one published in the upstream registry.
  bool fetch_published = true;
};

// What the node's runtime does with layers (the top-level `mode`; docs/configuration.md):
// pull = downloads them whole before a container starts (dockerd, containerd's overlayfs);
// lazy = a lazy-pulling snapshotter (stargz) reads them by range while the container runs. A
// mode only sets defaults: cache.chunk_size, cache.complete_partial, prefetch.eager_layers and
// prefetch.quiet written in the file win.
enum class node_mode { pull, lazy };

struct config {
  node_mode mode = node_mode::pull;
  server_settings server;
  admin_settings admin;
  log_settings log;
  cache_settings cache;
  prefetch_settings prefetch;
  std::vector<upstream> upstreams;  // at least one; exactly one is_default, or none

  // The upstream marked default, or nullptr when none is.
  [[nodiscard]] const upstream* default_upstream() const;
};

// True for a literal loopback address (127.0.0.0/8 or ::1), as listener hosts are written.
[[nodiscard]] bool is_loopback(std::string_view host);

// True iff `text` is an image reference `[registry/]repository[:tag][@digest]` that
// oci::reference::parse accepts (prefetch.preload). A grammar of its own, since config/
// depends on nothing of ours; tests/unit/config/image_reference_test.cpp keeps it equal to
// the oci one.
[[nodiscard]] bool is_image_reference(std::string_view text);

// One validation problem. `path` is the key path ("upstreams[1].tls.ca_file"; empty for the
// whole document), `line` is 1-based: the line of the offending key (or list item); for a
// missing key, the line where its parent mapping starts; 0 when unknown (e.g. unreadable file).
struct problem {
  std::string path;
  int line = 0;
  std::string message;
  // "upstreams[1].url: ... (line 14)"; no "path: " when path is empty, no " (line N)" when 0.
  [[nodiscard]] std::string to_string() const;
};

// Thrown by load_*() when the document is not a valid config; what() is
// "<source>: N problem(s)" followed by one problem::to_string() per line. Messages never
// contain a password.
class invalid_config : public std::runtime_error {
 public:
  invalid_config(const std::string& source, std::vector<problem> problems);
  [[nodiscard]] const std::vector<problem>& problems() const { return problems_; }

 private:
  std::vector<problem> problems_;
};

// Reads and validates a YAML file. Throws invalid_config (including for an unreadable file
// or YAML syntax errors, reported as a problem with the line).
[[nodiscard]] config load_file(const std::string& path);

// Same, from text; `source` names it in messages.
[[nodiscard]] config load_string(std::string_view yaml, std::string_view source = "<string>");

// The default configuration shipped as config/layercache.yaml, compiled into the binary.
[[nodiscard]] std::string_view default_yaml();

// "64MiB", "4KiB", "1GB", "1.5GiB", "1024" (bytes). Units B, KB (or kB), MB, GB, TB (1000-based),
// KiB, MiB, GiB, TiB (1024-based), case-sensitive, no spaces; a fraction needs a unit above B
// and is rounded down to whole bytes. nullopt when malformed or overflowing.
[[nodiscard]] std::optional<std::uint64_t> parse_size(std::string_view text);

// "30s", "500ms", "2m", "1h", "1h30m", "0s": whole numbers with units h, m, s, ms, each unit at
// most once and largest first, no spaces. nullopt when malformed or overflowing.
[[nodiscard]] std::optional<duration> parse_duration(std::string_view text);

}  // namespace layercache::config
