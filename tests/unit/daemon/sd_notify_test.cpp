// sd_notify over real unix datagram sockets bound by the test, as systemd binds its own: a
// path, an abstract name, and $NOTIFY_SOCKET naming one.
#include "daemon/sd_notify.hpp"

#include <gtest/gtest.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>

namespace layercache::daemon {
namespace {

namespace fs = std::filesystem;

// A unique name per receiver: tests of one binary may run at once under ctest -j.
std::string unique_suffix() {
  static std::atomic<int> counter{0};
  return std::to_string(::getpid()) + "-" + std::to_string(counter++);
}

// A bound AF_UNIX datagram socket, as the service manager's; '@' names an abstract socket.
class receiver {
 public:
  explicit receiver(std::string name) : name_(std::move(name)) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw std::runtime_error("socket failed");
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path, name_.data(), name_.size());
    const bool abstract = name_.front() == '@';
    if (abstract) address.sun_path[0] = '\0';
    const auto length =
        static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name_.size() + (abstract ? 0 : 1));
    if (::bind(fd_, reinterpret_cast<const sockaddr*>(&address), length) != 0) {
      ::close(fd_);
      throw std::runtime_error("bind " + name_ + ": " + std::system_category().message(errno));
    }
  }
  ~receiver() {
    ::close(fd_);
    if (name_.front() == '/') ::unlink(name_.c_str());
  }
  receiver(const receiver&) = delete;
  receiver& operator=(const receiver&) = delete;

  [[nodiscard]] const std::string& name() const { return name_; }

  // The next datagram, or nullopt when none arrives within `timeout_ms` (a bound, so that a
  // lost datagram fails the test instead of hanging it).
  std::optional<std::string> receive(int timeout_ms = 5000) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) != 1) return std::nullopt;
    std::string buffer(4096, '\0');
    const ssize_t n = ::recv(fd_, buffer.data(), buffer.size(), 0);
    if (n < 0) return std::nullopt;
    buffer.resize(static_cast<std::size_t>(n));
    return buffer;
  }

 private:
  std::string name_;
  int fd_ = -1;
};

fs::path socket_path() {
  return fs::temp_directory_path() / ("layercache-notify-" + unique_suffix() + ".sock");
}

// Sets (or unsets, with nullopt) $NOTIFY_SOCKET for one test and puts back what was there.
// The environment is not thread-safe: gtest runs this binary's tests on one thread.
// NOLINTBEGIN(concurrency-mt-unsafe)
class scoped_notify_socket {
 public:
  explicit scoped_notify_socket(const std::optional<std::string>& value) {
    if (const char* old = std::getenv("NOTIFY_SOCKET")) old_ = old;
    if (value) {
      ::setenv("NOTIFY_SOCKET", value->c_str(), 1);
    } else {
      ::unsetenv("NOTIFY_SOCKET");
    }
  }
  ~scoped_notify_socket() {
    if (old_) {
      ::setenv("NOTIFY_SOCKET", old_->c_str(), 1);
    } else {
      ::unsetenv("NOTIFY_SOCKET");
    }
  }
  scoped_notify_socket(const scoped_notify_socket&) = delete;
  scoped_notify_socket& operator=(const scoped_notify_socket&) = delete;

 private:
  std::optional<std::string> old_;
};
// NOLINTEND(concurrency-mt-unsafe)

TEST(SdNotifyTest, SendsTheStateToASocketPath) {
  receiver manager(socket_path().string());
  const auto result = notify_to(manager.name(), "READY=1");
  ASSERT_EQ(result.status, notify_status::sent) << result.error;
  EXPECT_EQ(manager.receive(), "READY=1");
}

TEST(SdNotifyTest, SendsToAnAbstractSocketNamedWithAnAt) {
  receiver manager("@layercache-notify-test-" + unique_suffix());
  const auto result = notify_to(manager.name(), "STATUS=x\nREADY=1");
  ASSERT_EQ(result.status, notify_status::sent) << result.error;
  EXPECT_EQ(manager.receive(), "STATUS=x\nREADY=1");  // one datagram, every line of it
}

TEST(SdNotifyTest, NotifyUsesNotifySocketAndLeavesItSet) {
  receiver manager(socket_path().string());
  const scoped_notify_socket env(manager.name());
  ASSERT_EQ(notify("READY=1").status, notify_status::sent);
  ASSERT_EQ(notify("STOPPING=1").status, notify_status::sent);  // still there for the drain
  EXPECT_EQ(manager.receive(), "READY=1");
  EXPECT_EQ(manager.receive(), "STOPPING=1");
  ASSERT_NE(std::getenv("NOTIFY_SOCKET"), nullptr);  // NOLINT(concurrency-mt-unsafe): one thread
}

TEST(SdNotifyTest, WithoutNotifySocketNothingIsSent) {
  receiver manager(socket_path().string());
  {
    const scoped_notify_socket env(std::nullopt);
    EXPECT_EQ(notify("READY=1").status, notify_status::no_socket);
    notify_service_manager("READY=1");
  }
  {
    const scoped_notify_socket env{std::string()};
    EXPECT_EQ(notify("READY=1").status, notify_status::no_socket);
  }
  EXPECT_EQ(notify_to("", "READY=1").status, notify_status::no_socket);
  EXPECT_EQ(manager.receive(100), std::nullopt);
}

TEST(SdNotifyTest, UnusableNamesFailNamingTheSocket) {
  const auto relative = notify_to("run/systemd/notify", "READY=1");
  EXPECT_EQ(relative.status, notify_status::failed);
  EXPECT_NE(relative.error.find("run/systemd/notify"), std::string::npos) << relative.error;

  // sun_path holds 108 bytes: a path needs its NUL in them, an abstract name does not.
  const std::string too_long = "/" + std::string(107, 'a');
  EXPECT_EQ(notify_to(too_long, "READY=1").status, notify_status::failed);
  receiver longest("@" + std::string(107 - unique_suffix().size(), 'b') + unique_suffix());
  EXPECT_EQ(notify_to(longest.name(), "READY=1").status, notify_status::sent);
  EXPECT_EQ(longest.receive(), "READY=1");

  const auto nobody = notify_to(socket_path().string(), "READY=1");  // nothing bound there
  EXPECT_EQ(nobody.status, notify_status::failed);
  EXPECT_NE(nobody.error.find("sendto"), std::string::npos) << nobody.error;
}

// A manager that stopped reading: its queue fills and the sender gets an error at once. A
// blocking send would hang the daemon's main thread here (and this test until its timeout).
TEST(SdNotifyTest, AFullQueueFailsInsteadOfBlocking) {
  receiver manager(socket_path().string());
  notify_result last;
  int sent = 0;
  for (; sent < 100000; ++sent) {
    last = notify_to(manager.name(), std::string(1024, 'x'));
    if (last.status != notify_status::sent) break;
  }
  EXPECT_EQ(last.status, notify_status::failed) << "sent " << sent << " without a full queue";
  EXPECT_GT(sent, 0);
}

std::uint64_t monotonic_usec() {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<std::uint64_t>(now.tv_sec) * 1000000 +
         static_cast<std::uint64_t>(now.tv_nsec) / 1000;
}

TEST(SdNotifyTest, ReloadingCarriesTheMonotonicTimeOfTheReload) {
  const std::uint64_t before = monotonic_usec();
  const std::string state = reloading_state();
  const std::uint64_t after = monotonic_usec();
  const std::string prefix = "RELOADING=1\nMONOTONIC_USEC=";
  ASSERT_EQ(state.rfind(prefix, 0), 0U) << state;
  const std::string digits = state.substr(prefix.size());
  ASSERT_FALSE(digits.empty());
  ASSERT_EQ(digits.find_first_not_of("0123456789"), std::string::npos) << state;
  const std::uint64_t usec = std::stoull(digits);
  EXPECT_LE(before, usec);
  EXPECT_LE(usec, after);
}

}  // namespace
}  // namespace layercache::daemon
