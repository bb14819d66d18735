// The real layercached under a stand-in service manager: $NOTIFY_SOCKET names a datagram
// socket this test binds, as systemd binds one for a Type=notify unit
// (deploy/systemd/layercached.service). READY=1 must mean "the listeners accept": systemd starts
// the units ordered after layercached (Before=docker.service containerd.service) on it.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "tests/support/http_client.hpp"
#include "tests/support/process.hpp"

#ifndef LAYERCACHED_PATH
#error "LAYERCACHED_PATH must name the layercached binary"
#endif

namespace layercache::testing {
namespace {

using namespace std::chrono_literals;

struct notification {
  std::string state;
  pid_t sender = -1;  // from SCM_CREDENTIALS: systemd's NotifyAccess=main heeds only the main PID
};

// An abstract AF_UNIX datagram socket receiving the sender's credentials, as systemd's.
class service_manager {
 public:
  service_manager() : name_("@layercache-e2e-notify-" + std::to_string(::getpid())) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path + 1, name_.data() + 1, name_.size() - 1);
    const int one = 1;
    const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name_.size());
    if (fd_ < 0 || ::setsockopt(fd_, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) != 0 ||
        ::bind(fd_, reinterpret_cast<const sockaddr*>(&address), length) != 0) {
      throw std::runtime_error("cannot bind " + name_ + ": " +
                               std::system_category().message(errno));
    }
  }
  ~service_manager() { ::close(fd_); }
  service_manager(const service_manager&) = delete;
  service_manager& operator=(const service_manager&) = delete;

  [[nodiscard]] const std::string& name() const { return name_; }

  // The next notification; nullopt if none within `limit` (a bound against a hang, not a
  // measurement).
  std::optional<notification> receive(std::chrono::milliseconds limit = 20s) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(limit.count())) != 1) return std::nullopt;
    std::string buffer(4096, '\0');
    iovec io{buffer.data(), buffer.size()};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))] = {};
    msghdr message{};
    message.msg_iov = &io;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(fd_, &message, 0);
    if (n < 0) return std::nullopt;
    buffer.resize(static_cast<std::size_t>(n));
    notification got{std::move(buffer)};
    for (cmsghdr* c = CMSG_FIRSTHDR(&message); c != nullptr; c = CMSG_NXTHDR(&message, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
        ucred credentials{};
        std::memcpy(&credentials, CMSG_DATA(c), sizeof credentials);
        got.sender = credentials.pid;
      }
    }
    return got;
  }

 private:
  std::string name_;
  int fd_ = -1;
};

// A TCP connect to 127.0.0.1:port completes (refused at once when nothing listens there).
bool accepts_connections(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = ::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0;
  ::close(fd);
  return ok;
}

class NotifyTest : public ::testing::Test {
 protected:
  void write_config(const std::string& capacity) {
    write_file(
        config_,
        "server:\n  threads: 2\n  listen:\n    - address: 127.0.0.1:" + std::to_string(port_) +
            "\nadmin:\n  address: 127.0.0.1:" + std::to_string(admin_port_) +
            "\ncache:\n  path: " + (dir_.path() / "store").string() + "\n  capacity: " + capacity +
            "\nupstreams:\n  - name: origin\n    url: http://127.0.0.1:9\n"
            "    default: true\n");
  }

  // Starts layercached with $NOTIFY_SOCKET = `notify_socket` and returns its first
  // notification to `manager`, or (without one) once it serves; retries on other ports when a
  // free port was taken meanwhile.
  std::optional<notification> start(const std::string& notify_socket, service_manager* manager) {
    for (int attempt = 0; attempt < 3; ++attempt) {
      port_ = free_port();
      admin_port_ = free_port();
      write_config("1GiB");
      proc_ = std::make_unique<child_process>(
          std::vector<std::string>{LAYERCACHED_PATH, "--config", config_.string()},
          dir_.path() / ("layercached." + std::to_string(++starts_) + ".log"),
          env_vars{{"NOTIFY_SOCKET", notify_socket}});
      if (manager != nullptr) {
        auto first = manager->receive();
        if (first || proc_->running()) return first;
      } else {
        for (int i = 0; i < 400 && proc_->running(); ++i) {
          if (serving()) return std::nullopt;
          std::this_thread::sleep_for(50ms);
        }
      }
      proc_->stop();
    }
    return std::nullopt;
  }

  // GET /v2/ answers: the registry listener accepts.
  bool serving() {
    try {
      return client_
                 .request("GET", "http://127.0.0.1:" + std::to_string(port_) + "/v2/", {}, {}, 5s)
                 .status == 200;
    } catch (const std::exception&) {
      return false;
    }
  }

  temp_dir dir_{"layercache-notify"};
  std::filesystem::path config_ = dir_.path() / "layercached.yaml";
  std::unique_ptr<child_process> proc_;
  std::uint16_t port_ = 0;
  std::uint16_t admin_port_ = 0;
  int starts_ = 0;
  http_client client_;
};

TEST_F(NotifyTest, ReadyOnceListeningReloadingAroundSighupStoppingOnDrain) {
  service_manager manager;
  const auto ready = start(manager.name(), &manager);
  ASSERT_TRUE(ready.has_value()) << "no notification from layercached:\n" << proc_->log();
  EXPECT_EQ(ready->state, "READY=1");
  // When READY=1 arrives, the listeners already accept. The daemon is stopped at once, so
  // that a daemon still binding after it said READY=1 would be caught not listening; a
  // stopped process's listening socket still completes TCP handshakes (the kernel does).
  ASSERT_EQ(::kill(proc_->pid(), SIGSTOP), 0);
  const bool listening = accepts_connections(port_);
  const bool admin_listening = accepts_connections(admin_port_);
  ASSERT_EQ(::kill(proc_->pid(), SIGCONT), 0);
  EXPECT_TRUE(listening && admin_listening) << "READY=1 before the listeners were open";
  EXPECT_EQ(ready->sender, proc_->pid());
  EXPECT_TRUE(serving()) << proc_->log();
  EXPECT_EQ(client_.get("http://127.0.0.1:" + std::to_string(admin_port_) + "/healthz").status,
            200U);

  // A reload, then one the daemon refuses: both end in READY=1 (it serves either way).
  for (const std::string capacity : {"512MiB", "lots"}) {
    write_config(capacity);
    ASSERT_EQ(::kill(proc_->pid(), SIGHUP), 0);
    const auto reloading = manager.receive();
    ASSERT_TRUE(reloading.has_value()) << proc_->log();
    EXPECT_EQ(reloading->state.rfind("RELOADING=1\nMONOTONIC_USEC=", 0), 0U) << reloading->state;
    const auto done = manager.receive();
    ASSERT_TRUE(done.has_value()) << proc_->log();
    EXPECT_EQ(done->state, "READY=1");
    EXPECT_TRUE(serving());
  }
  EXPECT_NE(proc_->log().find("reload refused"), std::string::npos) << proc_->log();

  ASSERT_EQ(::kill(proc_->pid(), SIGTERM), 0);
  const auto stopping = manager.receive();
  ASSERT_TRUE(stopping.has_value()) << proc_->log();
  EXPECT_EQ(stopping->state, "STOPPING=1");
  EXPECT_EQ(proc_->wait(60s), std::optional<int>(0)) << proc_->log();
}

// Not run by a service manager, or one that went away: layercached serves all the same, and
// says so only when a socket was named and could not be reached.
TEST_F(NotifyTest, WithoutAManagerItServesAndAMissingSocketIsLogged) {
  const std::string missing = (dir_.path() / "no-manager.sock").string();
  for (const std::string& socket : {std::string(), missing}) {
    start(socket, nullptr);
    ASSERT_TRUE(proc_->running() && serving()) << proc_->log();
    EXPECT_EQ(proc_->stop(30s), 0);
    const bool warned = proc_->log().find(
                            "service manager not notified of READY=1: "
                            "NOTIFY_SOCKET " +
                            missing) != std::string::npos;
    EXPECT_EQ(warned, !socket.empty()) << proc_->log();
  }
}

}  // namespace
}  // namespace layercache::testing
