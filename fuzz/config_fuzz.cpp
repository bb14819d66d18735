// Config loader (config/config.hpp). The input is a YAML document: load_string must return a
// config or throw config::invalid_config; any other exception (a yaml-cpp type leaking, say)
// or a crash is a bug.
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string_view>
#include <typeinfo>

#include "config/config.hpp"
#include "fuzz/check.hpp"

namespace {

void check(const layercache::config::config& cfg) {
  FUZZ_CHECK(!cfg.server.listen.empty());
  FUZZ_CHECK(!cfg.upstreams.empty());
  int defaults = 0;
  for (const auto& u : cfg.upstreams) {
    FUZZ_CHECK(!u.name.empty());
    FUZZ_CHECK(u.scheme == "http" || u.scheme == "https");
    FUZZ_CHECK(!u.host.empty());
    FUZZ_CHECK(u.port != 0);
    if (u.is_default) ++defaults;
  }
  FUZZ_CHECK(defaults <= 1);
  const auto* d = cfg.default_upstream();
  FUZZ_CHECK((d != nullptr) == (defaults == 1));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    check(layercache::config::load_string(text, "fuzz"));
  } catch (const layercache::config::invalid_config& e) {
    FUZZ_CHECK(!e.problems().empty());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "load_string threw %s: %s\n", typeid(e).name(), e.what());
    std::abort();
  } catch (...) {
    std::fprintf(stderr, "load_string threw a non-std exception\n");
    std::abort();
  }
  return 0;
}
