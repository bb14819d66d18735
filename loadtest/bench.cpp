// layercache-bench: an HTTP load generator for registries and mirrors (http or https):
// scenarios from the command line or a YAML file (loadtest/scenarios/mix.yaml), run by
// loadtest/load.hpp (its requests through loadtest/client.hpp), reported as text or JSON
// (loadtest/report.hpp).
//
//   layercache-bench full   --url URL [--count N] [--concurrency C]
//   layercache-bench full   --registry URL --image REPO:TAG [--image …] [--count PULLS]
//                           [--concurrency CLIENTS] [--parallel P] [--verify]
//   layercache-bench ranges --url URL --size BLOBSIZE [--range 64KiB] [--align N] [--count N]
//                           [--concurrency C] [--seed S]
//   layercache-bench ranges --registry URL (--image REF | --blob REPO@DIGEST[:SIZE]) …
//                           [--range 64KiB] [--align N] [--count N] [--concurrency C] [--seed S]
//   layercache-bench replay --registry URL --repo REPO --read-set FILE [--count N]
//                           [--concurrency C]
//   layercache-bench mix    --registry URL --image REF … [--count PULLS] [--concurrency CLIENTS]
//                           [--parallel P] [--ranges N] [--ranges-concurrency C] [--range 64KiB]
//                           [--align N] [--seed S] [--repo REPO --read-set FILE
//                           [--replay-concurrency C]]
//   layercache-bench --scenario FILE.yaml [--registry URL]
//   every form: [--max-seconds S] [--timeout S] [--json] [--ca-file PEM | --insecure]
//               [--header 'Name: value' …]
//
// A URL may be https://: the server's certificate must chain to the system's CAs or to those
// of --ca-file and name the URL's host, unless --insecure (no check at all: throwaway
// self-signed certificates on loopback). The handshake is part of a connection's opening, not
// of a request's time; connections are kept alive, so a run pays it once per connection.
// --header (repeatable) adds a header to every request, e.g. `Authorization: Basic …` for a
// registry or a mirror that wants the client's own credentials; a redirect to another place
// gets none of them. Their values are never printed (only --header's form, when it is wrong).
// full with --url: C connections GET the URL until N requests have been started; an answer
// counts only when it is a 200 whose body has the Content-Length it announced. full with
// images: C clients pull until N pulls have been started — the manifest (an index is followed
// to linux/amd64), then the config and every layer over P connections of the client at once;
// each blob must be a 200 of its descriptor's size (and digest, with --verify).
// ranges: `Range: bytes=a-b` of `range` bytes, a uniformly random over all bytes of the blobs
// (rounded down to a multiple of --align); an answer counts only when it is a 206 with exactly
// `range` bytes. replay: the read set's lines (`<digest> <offset> <length>`) in order, C at a
// time, each a Range GET that must be a 206 of `length` bytes. mix: full pulls, ranges (and a
// replay) at the same time, each reported on its own line and in a total.
// No request starts after --max-seconds (default 120); one in flight then gets at most
// --timeout (per operation, default 60) more. A connection that fails is replaced.
// Exit status: 0 when no request failed, 1 when some did, 2 for bad arguments or a failed setup.
#include <filesystem>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "config/config.hpp"
#include "loadtest/load.hpp"
#include "loadtest/report.hpp"
#include "loadtest/scenario.hpp"

namespace {

using namespace layercache::loadtest;

int usage() {
  std::cerr
      << "usage: layercache-bench full   --url URL [--count N] [--concurrency C]\n"
         "       layercache-bench full   --registry URL --image REPO:TAG [--image …] [--count "
         "PULLS]\n"
         "                               [--concurrency CLIENTS] [--parallel P] [--verify]\n"
         "       layercache-bench ranges --url URL --size BLOBSIZE [--range 64KiB] [--align N] "
         "[--count N]\n"
         "                               [--concurrency C] [--seed S]\n"
         "       layercache-bench ranges --registry URL (--image REF | --blob "
         "REPO@DIGEST[:SIZE]) …\n"
         "                               [--range 64KiB] [--align N] [--count N] "
         "[--concurrency C] [--seed S]\n"
         "       layercache-bench replay --registry URL --repo REPO --read-set FILE [--count N] "
         "[--concurrency C]\n"
         "       layercache-bench mix    --registry URL --image REF … [--count PULLS] "
         "[--concurrency CLIENTS]\n"
         "                               [--parallel P] [--ranges N] [--ranges-concurrency C] "
         "[--range 64KiB]\n"
         "                               [--align N] [--seed S] [--repo REPO --read-set FILE\n"
         "                               [--replay-concurrency C]]\n"
         "       layercache-bench --scenario FILE.yaml [--registry URL]\n"
         "       every form: [--max-seconds S] [--timeout S] [--json] [--ca-file PEM | "
         "--insecure]\n"
         "                   [--header 'Name: value' …]\n";
  return 2;
}

void split_list(const std::string& text, std::vector<std::string>& out) {
  std::stringstream list(text);
  for (std::string item; std::getline(list, item, ',');) {
    if (!item.empty()) out.push_back(item);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  std::string mode = argv[1];
  int first_option = 2;
  if (mode.rfind("--", 0) == 0) {  // --scenario FILE comes without a mode
    mode = "scenario";
    first_option = 1;
  }
  if (mode != "full" && mode != "ranges" && mode != "replay" && mode != "mix" &&
      mode != "scenario") {
    return usage();
  }

  plan p;
  scenario s;
  s.kind = mode == "ranges"   ? scenario_kind::ranges
           : mode == "replay" ? scenario_kind::replay
                              : scenario_kind::full;
  std::string scenario_file, registry, read_set, ca_file;
  std::uint64_t ranges_count = 0;
  unsigned ranges_concurrency = 8, replay_concurrency = 8;
  double max_seconds = 0, timeout = 0;
  bool json = false;
  bool insecure = false;
  bool count_given = false;
  std::vector<header_field> headers;
  try {
    for (int i = first_option; i < argc; ++i) {
      const std::string arg = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw std::invalid_argument(arg + " needs a value");
        return argv[++i];
      };
      auto size_value = [&]() -> std::uint64_t {
        const auto v = value();
        const auto n = layercache::config::parse_size(v);
        // NOLINTNEXTLINE(performance-inefficient-string-concatenation): once, then throws
        if (!n) throw std::invalid_argument(arg + ": bad size " + v);
        return *n;
      };
      auto count_value = [&]() -> unsigned {
        const auto n = std::stoul(value());
        if (n == 0 || n > 100000) throw std::invalid_argument(arg + ": 1 to 100000");
        return static_cast<unsigned>(n);
      };
      if (arg == "--url") {
        s.url = value();
      } else if (arg == "--registry") {
        registry = value();
      } else if (arg == "--scenario") {
        scenario_file = value();
      } else if (arg == "--image") {
        split_list(value(), s.images);
      } else if (arg == "--blob") {
        const auto text = value();
        const auto b = parse_blob_ref(text);
        if (!b) throw std::invalid_argument("--blob: expected REPO@sha256:<hex>[:SIZE]: " + text);
        s.blobs.push_back(*b);
      } else if (arg == "--repo") {
        s.repo = value();
      } else if (arg == "--read-set") {
        read_set = value();
      } else if (arg == "--count") {
        s.count = std::stoull(value());
        count_given = true;
      } else if (arg == "--concurrency") {
        s.concurrency = count_value();
      } else if (arg == "--parallel") {
        s.parallel = count_value();
      } else if (arg == "--ranges") {
        ranges_count = std::stoull(value());
      } else if (arg == "--ranges-concurrency") {
        ranges_concurrency = count_value();
      } else if (arg == "--replay-concurrency") {
        replay_concurrency = count_value();
      } else if (arg == "--size") {
        s.size = size_value();
      } else if (arg == "--range") {
        s.range = size_value();
      } else if (arg == "--align") {
        s.align = size_value();
      } else if (arg == "--seed") {
        s.seed = std::stoull(value());
      } else if (arg == "--verify") {
        s.verify = true;
      } else if (arg == "--max-seconds") {
        max_seconds = std::stod(value());
        if (!(max_seconds > 0)) throw std::invalid_argument("--max-seconds must be above 0");
      } else if (arg == "--timeout") {
        timeout = std::stod(value());
        if (!(timeout > 0)) throw std::invalid_argument("--timeout must be above 0");
      } else if (arg == "--json") {
        json = true;
      } else if (arg == "--ca-file") {
        ca_file = value();
      } else if (arg == "--insecure") {
        insecure = true;
      } else if (arg == "--header") {
        // The value may be a secret: the message never repeats it.
        auto h = parse_header(value());
        if (!h) {
          throw std::invalid_argument(
              "--header: expected 'Name: value' (a token name; one line; not Host, Range, Accept, "
              "Content-Length, Transfer-Encoding or Connection)");
        }
        headers.push_back(std::move(*h));
      } else {
        std::cerr << "unknown argument " << arg << "\n";
        return usage();
      }
    }

    if (mode == "scenario") {
      if (scenario_file.empty()) return usage();
      p = load_plan(scenario_file);
    } else {
      if (!read_set.empty()) s.reads = load_read_set(read_set);
      s.name = mode == "mix" ? "pulls" : std::string(kind_name(s.kind));
      if (s.count == 0 && s.kind != scenario_kind::replay) {
        throw std::invalid_argument("--count must be at least 1");
      }
      if (s.align == 0 || s.range == 0) throw std::invalid_argument("--range, --align above 0");
      const bool by_url = !s.url.empty();
      if (by_url && (!registry.empty() || !s.images.empty() || !s.blobs.empty())) {
        throw std::invalid_argument("--url goes without --registry, --image and --blob");
      }
      if (by_url && !parse_http_url(s.url)) {
        throw std::invalid_argument("--url must be http(s)://host[:port]/path");
      }
      if (!by_url && registry.empty()) throw std::invalid_argument("--registry or --url needed");
      if (mode == "full" && !by_url && s.images.empty()) {
        throw std::invalid_argument("full needs --url or --image");
      }
      if (mode == "ranges") {
        if (by_url && s.size < s.range) {
          throw std::invalid_argument("ranges needs --size at least --range (and --range > 0)");
        }
        if (!by_url && s.images.empty() && s.blobs.empty()) {
          throw std::invalid_argument("ranges needs --url, --image or --blob");
        }
      }
      if ((mode == "replay" || (mode == "mix" && !read_set.empty())) &&
          (s.repo.empty() || s.reads.empty())) {
        throw std::invalid_argument("replay needs --repo and a non-empty --read-set");
      }
      if (mode == "mix") {
        if (by_url || s.images.empty()) throw std::invalid_argument("mix needs --image");
        const scenario pulls = s;
        p.scenarios.push_back(pulls);
        scenario ranges = s;
        ranges.name = "ranges";
        ranges.kind = scenario_kind::ranges;
        ranges.count = ranges_count > 0 ? ranges_count : 1000;
        ranges.concurrency = ranges_concurrency;
        p.scenarios.push_back(ranges);
        if (!s.reads.empty()) {
          scenario replay = s;
          replay.name = "replay";
          replay.kind = scenario_kind::replay;
          replay.count = 0;
          replay.concurrency = replay_concurrency;
          p.scenarios.push_back(replay);
        }
      } else {
        if (s.kind == scenario_kind::replay && !count_given) s.count = 0;  // every line
        p.scenarios.push_back(s);
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "layercache-bench: " << e.what() << "\n";
    return 2;
  }
  if (!ca_file.empty() && insecure) {
    std::cerr << "layercache-bench: --ca-file and --insecure exclude each other\n";
    return 2;
  }
  if (!registry.empty()) p.registry = registry;
  if (!ca_file.empty()) p.ca_file = ca_file;
  if (insecure) p.insecure = true;
  p.headers = std::move(headers);
  if (max_seconds > 0) p.max_seconds = max_seconds;
  if (timeout > 0) p.timeout_seconds = timeout;

  run_result result;
  try {
    result = run_plan(p);
  } catch (const std::exception& e) {
    std::cerr << "layercache-bench: " << e.what() << "\n";
    return 2;
  }
  std::cout << (json ? json_report(result) : text_report(result)) << std::flush;
  std::uint64_t errors = 0;
  for (const auto& r : result.scenarios) {
    errors += r.errors;
    if (!r.first_error.empty()) std::cerr << r.name << ": first error: " << r.first_error << "\n";
  }
  return errors == 0 ? 0 : 1;
}
