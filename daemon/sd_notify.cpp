#include "daemon/sd_notify.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <system_error>

#include "log/log.hpp"

namespace layercache::daemon {

namespace {

notify_result failure(std::string_view socket_name, std::string_view what) {
  return {notify_status::failed,
          "NOTIFY_SOCKET " + std::string(socket_name) + ": " + std::string(what)};
}

std::string errno_text(int error) { return std::system_category().message(error); }

// An fd closed on every return path.
class socket_fd {
 public:
  explicit socket_fd(int fd) : fd_(fd) {}
  ~socket_fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  socket_fd(const socket_fd&) = delete;
  socket_fd& operator=(const socket_fd&) = delete;
  [[nodiscard]] int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

notify_result notify_to(std::string_view socket_name, std::string_view state) {
  if (socket_name.empty()) return {};
  const bool abstract = socket_name.front() == '@';
  if (!abstract && socket_name.front() != '/') {
    return failure(socket_name, "neither an absolute path nor an abstract name ('@name')");
  }
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  // A path needs its terminating NUL inside sun_path; an abstract name is counted by length.
  if (socket_name.size() + (abstract ? 0 : 1) > sizeof(address.sun_path)) {
    return failure(socket_name, "name too long for a unix socket");
  }
  std::memcpy(address.sun_path, socket_name.data(), socket_name.size());
  if (abstract) address.sun_path[0] = '\0';
  const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + socket_name.size() +
                                             (abstract ? 0 : 1));

  const socket_fd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) return failure(socket_name, "socket: " + errno_text(errno));
  const auto* target = reinterpret_cast<const sockaddr*>(&address);
  const ssize_t n = ::sendto(fd.get(), state.data(), state.size(), MSG_NOSIGNAL, target, length);
  if (n < 0) return failure(socket_name, "sendto: " + errno_text(errno));
  if (static_cast<std::size_t>(n) != state.size()) return failure(socket_name, "short send");
  return {notify_status::sent, {}};
}

notify_result notify(std::string_view state) {
  const char* name = std::getenv("NOTIFY_SOCKET");  // NOLINT(concurrency-mt-unsafe): see header
  return notify_to(name != nullptr ? name : "", state);
}

void notify_service_manager(std::string_view state) {
  const auto result = notify(state);
  if (result.status == notify_status::failed) {
    std::string shown(state);  // one log line: the fields on it side by side
    std::replace(shown.begin(), shown.end(), '\n', ' ');
    log::warn("main", "service manager not notified of ", shown, ": ", result.error);
  }
}

std::string reloading_state() {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  const auto usec = static_cast<unsigned long long>(now.tv_sec) * 1000000ULL +
                    static_cast<unsigned long long>(now.tv_nsec) / 1000ULL;
  return "RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec);
}

}  // namespace layercache::daemon
