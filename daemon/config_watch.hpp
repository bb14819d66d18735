// Reloads on change (`layercached --watch-config`): Kubernetes updates a ConfigMap mounted as
// a directory by swapping a symlink, and sends no signal; an edited file on a plain host is
// the same. The file is read again every few seconds and compared with what was last seen.
#pragma once

#include <cstddef>
#include <optional>
#include <string>

namespace layercache::daemon {

class config_watch {
 public:
  // Reads `path` now: its content is what later reads are compared with.
  explicit config_watch(std::string path);

  // Whether the file's content differs from the last one seen (and remembers it). A file that
  // cannot be read is no change: a ConfigMap update briefly has no file, and the running config
  // stays until a readable one differs.
  [[nodiscard]] bool changed();

  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::optional<std::string> last_;
};

}  // namespace layercache::daemon
