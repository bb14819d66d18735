#include "tests/support/process.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <thread>

extern char** environ;  // POSIX: the application declares it

namespace layercache::testing {
namespace {

using clock = std::chrono::steady_clock;

// How often wait() looks at a child that has not exited yet. Polling a bounded deadline is how
// we wait; the interval only trades latency against CPU.
constexpr auto poll_interval = std::chrono::milliseconds(2);

[[noreturn]] void throw_errno(const std::string& what, int err = errno) {
  throw std::system_error(err, std::generic_category(), what);
}

class fd_guard {
 public:
  explicit fd_guard(int fd = -1) : fd_(fd) {}
  ~fd_guard() { reset(); }
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
  [[nodiscard]] int get() const { return fd_; }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

// argv/envp arrays that posix_spawn wants, owning their strings.
class c_strings {
 public:
  explicit c_strings(std::vector<std::string> strings) : strings_(std::move(strings)) {
    for (auto& s : strings_) pointers_.push_back(s.data());
    pointers_.push_back(nullptr);
  }
  [[nodiscard]] char* const* get() { return pointers_.data(); }

 private:
  std::vector<std::string> strings_;
  std::vector<char*> pointers_;
};

c_strings make_environment(const env_vars& additions) {
  std::vector<std::string> out;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string_view entry(*e);
    const auto name = entry.substr(0, entry.find('='));
    bool overridden = false;
    for (const auto& [key, value] : additions) overridden = overridden || key == name;
    if (!overridden) out.emplace_back(entry);
  }
  for (const auto& [key, value] : additions) out.push_back(key + "=" + value);
  return c_strings(std::move(out));
}

class file_actions {
 public:
  file_actions() {
    if (int rc = ::posix_spawn_file_actions_init(&actions_); rc != 0) {
      throw_errno("posix_spawn_file_actions_init", rc);
    }
  }
  ~file_actions() { ::posix_spawn_file_actions_destroy(&actions_); }
  file_actions(const file_actions&) = delete;
  file_actions& operator=(const file_actions&) = delete;
  void check(int rc, const char* what) {
    if (rc != 0) throw_errno(what, rc);
  }
  posix_spawn_file_actions_t* get() { return &actions_; }

 private:
  posix_spawn_file_actions_t actions_{};
};

// Spawns argv with stdin from /dev/null, stdout and stderr on `out_fd`, and no other inherited
// descriptors (tests run servers whose sockets must not leak into tools).
pid_t spawn(const std::vector<std::string>& argv, int out_fd, const env_vars& env) {
  if (argv.empty()) throw std::invalid_argument("spawn: empty argv");
  file_actions actions;
  actions.check(::posix_spawn_file_actions_addopen(actions.get(), 0, "/dev/null", O_RDONLY, 0),
                "posix_spawn_file_actions_addopen");
  actions.check(::posix_spawn_file_actions_adddup2(actions.get(), out_fd, 1),
                "posix_spawn_file_actions_adddup2");
  actions.check(::posix_spawn_file_actions_adddup2(actions.get(), out_fd, 2),
                "posix_spawn_file_actions_adddup2");
  actions.check(::posix_spawn_file_actions_addclosefrom_np(actions.get(), 3),
                "posix_spawn_file_actions_addclosefrom_np");
  c_strings args(argv);
  auto envp = make_environment(env);
  pid_t pid = -1;
  if (int rc =
          ::posix_spawnp(&pid, argv[0].c_str(), actions.get(), nullptr, args.get(), envp.get());
      rc != 0) {
    throw_errno("posix_spawnp " + quote_command(argv), rc);
  }
  return pid;
}

// How much of a sanitizer report a failure message carries: the report's first lines (the
// error and the top of its stack) — the whole output is in the process's log.
constexpr std::size_t report_excerpt = 8 * 1024;

int decode_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

}  // namespace

temp_dir::temp_dir(std::string_view prefix) {
  const char* base = std::getenv("TMPDIR");
  std::filesystem::path dir = (base != nullptr && *base != '\0') ? base : "/tmp";
  std::string pattern = (dir / (std::string(prefix) + "-XXXXXX")).string();
  if (::mkdtemp(pattern.data()) == nullptr) throw_errno("mkdtemp " + pattern);
  path_ = pattern;
}

temp_dir::~temp_dir() { remove(); }

temp_dir::temp_dir(temp_dir&& other) noexcept : path_(std::exchange(other.path_, {})) {}

temp_dir& temp_dir::operator=(temp_dir&& other) noexcept {
  if (this != &other) {
    remove();
    path_ = std::exchange(other.path_, {});
  }
  return *this;
}

void temp_dir::remove() noexcept {
  if (path_.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);  // best effort: a leftover dir must not fail a test
  path_.clear();
}

child_process::child_process(std::vector<std::string> argv, std::filesystem::path log_file,
                             const env_vars& env)
    : log_file_(std::move(log_file)) {
  fd_guard log_fd(::open(log_file_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (log_fd.get() < 0) throw_errno("open " + log_file_.string());
  pid_ = spawn(argv, log_fd.get(), env);
}

child_process::~child_process() {
  if (pid_ > 0) stop();
}

child_process::child_process(child_process&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      exit_code_(std::exchange(other.exit_code_, std::nullopt)),
      log_file_(std::move(other.log_file_)) {}

child_process& child_process::operator=(child_process&& other) noexcept {
  if (this != &other) {
    if (pid_ > 0) stop();
    pid_ = std::exchange(other.pid_, -1);
    exit_code_ = std::exchange(other.exit_code_, std::nullopt);
    log_file_ = std::move(other.log_file_);
  }
  return *this;
}

std::string child_process::log() const {
  try {
    return read_file(log_file_);
  } catch (const std::exception&) {
    return {};
  }
}

bool child_process::reap(bool block) {
  if (exit_code_) return true;
  if (pid_ <= 0) return true;
  int status = 0;
  for (;;) {
    const pid_t rc = ::waitpid(pid_, &status, block ? 0 : WNOHANG);
    if (rc == pid_) {
      exit_code_ = decode_status(status);
      check_sanitizer_report();
      return true;
    }
    if (rc == 0) return false;
    if (errno == EINTR) continue;
    exit_code_ = -1;  // ECHILD: someone else reaped it; treat as gone
    check_sanitizer_report();
    return true;
  }
}

void child_process::check_sanitizer_report() {
  if (const auto report = sanitizer_report(log()); !report.empty()) {
    ADD_FAILURE() << "sanitizer report from process " << pid_ << " (exit "
                  << exit_code_.value_or(-1) << ", log " << log_file_.string() << "):\n"
                  << report;
  }
}

bool child_process::running() { return !reap(false); }

std::optional<int> child_process::wait(std::chrono::milliseconds timeout) {
  const auto deadline = clock::now() + timeout;
  while (!reap(false)) {
    if (clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(poll_interval);
  }
  return exit_code_;
}

int child_process::stop(std::chrono::milliseconds grace) {
  if (pid_ <= 0) return exit_code_.value_or(-1);
  if (!reap(false)) {
    ::kill(pid_, SIGTERM);
    if (!wait(grace)) {
      ::kill(pid_, SIGKILL);
      reap(true);
    }
  }
  return exit_code_.value_or(-1);
}

std::uint16_t free_port() {
  fd_guard fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) throw_errno("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = 0;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) throw_errno("bind");
  socklen_t len = sizeof addr;
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    throw_errno("getsockname");
  }
  return ntohs(addr.sin_port);
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path.string());
  std::ostringstream out;
  out << in.rdbuf();
  if (in.bad()) throw std::runtime_error("cannot read " + path.string());
  return std::move(out).str();
}

int count_from_env(const char* name, int fallback) {
  const char* v = std::getenv(name);
  const int n = v != nullptr ? std::atoi(v) : 0;
  return n > 0 ? n : fallback;
}

void write_file(const std::filesystem::path& path, std::string_view data, ::mode_t mode) {
  fd_guard fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (fd.get() < 0) throw_errno("open " + path.string());
  if (::fchmod(fd.get(), mode) != 0) throw_errno("fchmod " + path.string());
  while (!data.empty()) {
    const ssize_t n = ::write(fd.get(), data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("write " + path.string());
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
}

command_result run_command(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                           const env_vars& env) {
  const auto deadline = clock::now() + timeout;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe2");
  fd_guard read_end(fds[0]);
  fd_guard write_end(fds[1]);
  const pid_t pid = spawn(argv, write_end.get(), env);
  write_end.reset();

  command_result result;
  bool eof = false;
  char buffer[16 * 1024];
  while (!eof) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - clock::now()).count();
    if (left <= 0) {
      result.timed_out = true;
      break;
    }
    pollfd p{read_end.get(), POLLIN, 0};
    const int rc = ::poll(&p, 1, static_cast<int>(left));
    if (rc < 0 && errno != EINTR) throw_errno("poll");
    if (rc <= 0) continue;
    const ssize_t n = ::read(read_end.get(), buffer, sizeof buffer);
    if (n > 0) {
      result.output.append(buffer, static_cast<std::size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      eof = true;
    }
  }

  // The output is closed; the process normally exits right after. Bound that wait too.
  std::optional<int> code;
  for (;;) {
    int status = 0;
    const pid_t rc = ::waitpid(pid, &status, WNOHANG);
    if (rc == pid) {
      code = decode_status(status);
      break;
    }
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) break;  // ECHILD: nothing left to wait for
    if (result.timed_out || clock::now() >= deadline) {
      result.timed_out = true;
      ::kill(pid, SIGKILL);
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      break;
    }
    std::this_thread::sleep_for(poll_interval);
  }
  result.exit_code = result.timed_out ? -1 : code.value_or(-1);
  if (const auto report = sanitizer_report(result.output); !report.empty()) {
    ADD_FAILURE() << "sanitizer report from " << quote_command(argv) << " (exit "
                  << result.exit_code << "):\n"
                  << report;
  }
  return result;
}

std::string sanitizer_report(std::string_view output) {
  static constexpr std::array<std::string_view, 5> markers{
      "ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "WARNING: ThreadSanitizer",
      "ThreadSanitizer: ", "SUMMARY: UndefinedBehaviorSanitizer"};
  std::size_t first = std::string_view::npos;
  for (const auto marker : markers) first = std::min(first, output.find(marker));
  // UBSan without a summary line: "FILE:LINE:COL: runtime error: ..." (or "<unknown>" /
  // "(module+0x...)" without debug information). Go prints "panic: runtime error:".
  constexpr std::string_view ub = ": runtime error: ";
  for (auto at = output.find(ub); at != std::string_view::npos && at < first;
       at = output.find(ub, at + 1)) {
    const unsigned char before = at == 0 ? ' ' : static_cast<unsigned char>(output[at - 1]);
    if (std::isdigit(before) != 0 || before == '>' || before == ')') {
      first = at;
      break;
    }
  }
  if (first == std::string_view::npos) return {};
  const auto line = output.rfind('\n', first);
  const auto start = line == std::string_view::npos ? 0 : line + 1;
  return std::string(output.substr(start, report_excerpt));
}

std::string quote_command(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& arg : argv) {
    if (!out.empty()) out += ' ';
    if (!arg.empty() && arg.find_first_of(" \t\n'\"\\$") == std::string::npos) {
      out += arg;
      continue;
    }
    out += '\'';
    for (char c : arg) {
      if (c == '\'') {
        out += "'\\''";
      } else {
        out += c;
      }
    }
    out += '\'';
  }
  return out;
}

}  // namespace layercache::testing
