// What layercache-bench runs: scenarios (full image pulls, random ranges, a recorded read set)
// from the command line or a YAML file, and the small parsers around them.
// No Boost or Asio here; loadtest/load.hpp runs a plan, loadtest/report.hpp reports it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace layercache::loadtest {

enum class scenario_kind {
  full,    // full pulls: the manifest (and the platform manifest of an index), then every blob
  ranges,  // random byte ranges of blobs
  replay,  // a recorded read set, in order
};
[[nodiscard]] std::string_view kind_name(scenario_kind kind);

// A blob of a repository; size 0 means "ask the registry" (HEAD) before the run.
struct blob_ref {
  std::string repo;
  std::string digest;
  std::uint64_t size = 0;
};

// One line of a read set: `<digest> <offset> <length>`.
struct read_op {
  std::string digest;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
};

struct scenario {
  std::string name;  // label in reports; the kind's name when not given
  scenario_kind kind = scenario_kind::full;
  // A single http:// or https:// URL to GET over and over (full) or to take ranges of (ranges, with
  // `size`) instead of registry paths; the form scripts/bench.sh uses.
  std::string url;
  std::uint64_t size = 0;           // url ranges: the blob's size
  std::vector<std::string> images;  // full, ranges: "repo:tag" or "repo@digest"
  std::vector<blob_ref> blobs;      // ranges: blobs besides the images' layers
  std::string repo;                 // replay: the repository of the read set's digests
  std::vector<read_op> reads;       // replay
  // full: pulls (url: GETs); ranges: requests; replay: lines to replay (0: all of them).
  std::uint64_t count = 10;
  unsigned concurrency = 1;            // clients, each with its own connections
  unsigned parallel = 1;               // full: blobs of one pull fetched at once (docker: 3)
  std::uint64_t range = 64ULL * 1024;  // ranges: bytes per request
  std::uint64_t align = 1;             // ranges: offsets are multiples of this
  std::uint64_t seed = 1;              // ranges: random offsets
  bool verify = false;                 // full: hash each blob and check it against its digest
};

// A header sent with every request of a run (layercache-bench --header), typically
// `Authorization: Basic …`. Its value may be a secret: nothing prints it.
struct header_field {
  std::string name;
  std::string value;
};

struct plan {
  std::string registry;             // http(s)://host[:port][/prefix]: base of the /v2/ paths
  double max_seconds = 120;         // YAML max_time: no request starts after it
  double timeout_seconds = 60;      // YAML timeout: per read, write or connect
  std::vector<scenario> scenarios;  // run at the same time (more than one: a mix)
  // https: the server's certificate must chain to the system's CAs or to those of `ca_file`
  // (PEM, YAML ca_file, relative to the file), and name the URL's host; `insecure` (YAML insecure)
  // checks nothing, for throwaway self-signed certificates on loopback.
  std::string ca_file;
  bool insecure = false;
  // Sent with every request to the registry or url, and to a redirect that stays on the same
  // scheme, address and port; never to another place (a storage host), as registry clients
  // drop Authorization there. Only from the command line: a scenario file has no headers.
  std::vector<header_field> headers;
};

// Parses a scenario file (see loadtest/scenarios/mix.yaml). Relative read-set paths are taken
// from `base_dir`. Unknown keys are errors. Throws std::runtime_error listing every problem as
// "path: message (line N)".
[[nodiscard]] plan parse_plan(std::string_view yaml, const std::filesystem::path& base_dir);
[[nodiscard]] plan load_plan(const std::filesystem::path& file);

// Lines `<digest> <offset> <length>` separated by blanks; empty lines and lines starting with
// '#' are skipped. Throws std::runtime_error naming the first bad line.
[[nodiscard]] std::vector<read_op> parse_read_set(std::string_view text);
[[nodiscard]] std::vector<read_op> load_read_set(const std::filesystem::path& file);

struct http_url {
  bool tls = false;  // https
  std::string host;
  std::string port;    // "80" (http) or "443" (https) when absent
  std::string target;  // the path, "/" when absent; no trailing '/' is removed
};
// http://host[:port][/path] or https://host[:port][/path]; nullopt for any other scheme or an
// empty host or port.
[[nodiscard]] std::optional<http_url> parse_http_url(std::string_view url);

// "repo:tag", "repo@sha256:…" or "repo" (tag latest) → repository and reference.
[[nodiscard]] std::optional<std::pair<std::string, std::string>> split_image(std::string_view ref);

// "Name: value" (blanks around the value dropped) → a header; nullopt when the name is not an
// HTTP token, the value holds a control character (a line break: a second header), or the name
// is one the bench sets itself (Host, Range, Accept, Content-Length, Transfer-Encoding,
// Connection), case-insensitively.
[[nodiscard]] std::optional<header_field> parse_header(std::string_view text);

// "repo@sha256:…[:size]" → a blob; nullopt when malformed.
[[nodiscard]] std::optional<blob_ref> parse_blob_ref(std::string_view text);

}  // namespace layercache::loadtest
