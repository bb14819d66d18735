// layercachectl's commands about images: preload (short names to the default upstream,
// --upstream, --platform defaulting to the host's, progress on stderr while it runs) and
// profile export/import by image reference (the digest resolved through the admin API).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "daemon/ctl_client.hpp"

namespace layercache::ctl {

// This host's platform as an index names it: "linux/" + the architecture uname(2) reports,
// in Go's names (x86_64 → amd64, aarch64 → arm64, armv7l → arm/v7, i686 → 386, ...).
[[nodiscard]] std::string host_platform();
// The same mapping for a uname machine name (exposed for tests).
[[nodiscard]] std::string platform_of_machine(std::string_view machine);

// True when `text` is a digest ("sha256:<hex>"), not an image reference.
[[nodiscard]] bool looks_like_digest(std::string_view text);

// `preload [--upstream NAME] [--platform P|all] [--start] REFERENCE [PLATFORM]`; args[0] is
// "preload". Exit status as the usage text says.
int preload_command(const options& o, const std::vector<std::string>& args);

// `profile export [--upstream NAME] [--platform P] IMAGE|DIGEST [FILE]`; args[0..1] are
// "profile", "export".
int profile_export_command(const options& o, const std::vector<std::string>& args);

// `profile import [DIGEST] FILE`: without DIGEST, the document's own "manifest".
int profile_import_command(const options& o, const std::vector<std::string>& args);

}  // namespace layercache::ctl
