#include "daemon/config_watch.hpp"

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <system_error>
#include <utility>

namespace layercache::daemon {
namespace {

// A config file is small; past this it is not read (and is no change).
constexpr std::uintmax_t max_config_size = 16 << 20;

std::optional<std::string> read_file(const std::string& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);  // follows the ConfigMap's symlinks
  if (ec || size > max_config_size) return std::nullopt;
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::string text(std::istreambuf_iterator<char>(in), {});
  if (in.bad()) return std::nullopt;
  return text;
}

}  // namespace

config_watch::config_watch(std::string path) : path_(std::move(path)), last_(read_file(path_)) {}

bool config_watch::changed() {
  auto now = read_file(path_);
  if (!now || now == last_) return false;
  last_ = std::move(now);
  return true;
}

}  // namespace layercache::daemon
