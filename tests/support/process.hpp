// Processes, temporary directories and small file helpers for integration and end-to-end tests.
// Everything here is for tests only: errors throw std::runtime_error with a message that says
// what failed, so a test fails with a readable reason instead of a hang.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace layercache::testing {

using env_vars = std::vector<std::pair<std::string, std::string>>;

// A fresh directory (mkdtemp under $TMPDIR, else /tmp) that is removed with everything in it on
// destruction. Movable; a moved-from temp_dir owns nothing.
class temp_dir {
 public:
  explicit temp_dir(std::string_view prefix = "layercache-test");
  ~temp_dir();
  temp_dir(temp_dir&& other) noexcept;
  temp_dir& operator=(temp_dir&& other) noexcept;
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  void remove() noexcept;
  std::filesystem::path path_;
};

// A child process started with posix_spawnp (argv[0] is looked up in PATH). Its stdin is
// /dev/null and its stdout and stderr are appended to `log_file`. `env` adds to (or overrides)
// the parent's environment. Throws if the process cannot be spawned. The destructor stops it
// (SIGTERM, then SIGKILL after 5 s). Not thread-safe: use one child_process from one thread.
// Once the process has exited, its log is searched for a sanitizer report
// (sanitizer_report()): one fails the running test (ADD_FAILURE) with the report, whether or
// not the test looks at the exit status or the log — a sanitized layercached child must not
// hide what it found.
class child_process {
 public:
  child_process(std::vector<std::string> argv, std::filesystem::path log_file,
                const env_vars& env = {});
  ~child_process();
  child_process(child_process&& other) noexcept;
  child_process& operator=(child_process&& other) noexcept;
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] const std::filesystem::path& log_file() const { return log_file_; }
  // The log so far (empty if it cannot be read).
  [[nodiscard]] std::string log() const;

  // False once the process has exited (reaps it without blocking).
  [[nodiscard]] bool running();
  // Waits up to `timeout` for the process to exit. The exit code, or 128 + signal number if it
  // was killed by a signal; nullopt if it is still running at the deadline.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  // SIGTERM, then SIGKILL if it has not exited after `grace`; always reaps. Returns the exit
  // code as for wait(). Idempotent.
  int stop(std::chrono::milliseconds grace = std::chrono::seconds(5));

 private:
  bool reap(bool block);
  void check_sanitizer_report();
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
  std::filesystem::path log_file_;
};

// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it back, close).
// Another process may take it before it is used: callers that start servers must retry.
[[nodiscard]] std::uint16_t free_port();

[[nodiscard]] std::string read_file(const std::filesystem::path& path);
// Creates or truncates `path` and sets its permission bits to exactly `mode` (umask ignored).
void write_file(const std::filesystem::path& path, std::string_view data, ::mode_t mode = 0644);

struct command_result {
  int exit_code = -1;  // as child_process::wait(); -1 when timed out
  bool timed_out = false;
  std::string output;  // stdout and stderr interleaved
};

// Runs a tool (htpasswd, openssl, skopeo, tar, ...) to completion with stdin from /dev/null.
// Kills it with SIGKILL when `timeout` expires (then timed_out is true). Throws only if the
// program cannot be started. As with child_process, a sanitizer report in the output fails the
// running test.
[[nodiscard]] command_result run_command(const std::vector<std::string>& argv,
                                         std::chrono::milliseconds timeout,
                                         const env_vars& env = {});

// The first AddressSanitizer, LeakSanitizer, ThreadSanitizer or UndefinedBehaviorSanitizer
// report in a process's output (from its first line, at most ~8 KiB), or empty when there is
// none. UBSan's "FILE:LINE:COL: runtime error:" counts; Go's "panic: runtime error:" does not.
[[nodiscard]] std::string sanitizer_report(std::string_view output);

// A positive count from the environment variable `name` (how many rounds a long test runs,
// scaled down in the sanitized runs), else `fallback` (unset, not a number, or not positive).
[[nodiscard]] int count_from_env(const char* name, int fallback);

// "a b 'c d'" — for error messages.
[[nodiscard]] std::string quote_command(const std::vector<std::string>& argv);

}  // namespace layercache::testing
