// The service manager's readiness protocol (sd_notify(3)), without libsystemd: one datagram
// of "KEY=VALUE" lines to the AF_UNIX socket named by $NOTIFY_SOCKET. systemd sets it for
// Type=notify units (deploy/systemd/layercached.service), so `Before=docker.service` and
// `systemctl start` wait until layercached listens; elsewhere it is unset and nothing is sent.
#pragma once

#include <string>
#include <string_view>

namespace layercache::daemon {

enum class notify_status {
  sent,
  no_socket,  // $NOTIFY_SOCKET unset or empty: not run by a service manager that listens
  failed,     // the name is not usable, or the datagram could not be sent (error says why)
};

struct notify_result {
  notify_status status = notify_status::no_socket;
  std::string error;  // with failed: what went wrong, naming the socket
};

// Sends `state` (e.g. "READY=1") as one datagram to `socket_name`: an absolute path, or an
// abstract socket name written with a leading '@' (as systemd writes it in $NOTIFY_SOCKET).
// An empty name is no_socket. Never blocks for long: a datagram socket whose receiver's
// queue is full fails with EAGAIN instead of waiting. Thread-safe; opens and closes its own
// socket on each call.
[[nodiscard]] notify_result notify_to(std::string_view socket_name, std::string_view state);

// notify_to($NOTIFY_SOCKET, state). $NOTIFY_SOCKET stays set (reloads and the drain notify
// again later). Reads the environment: call it while no thread calls setenv.
[[nodiscard]] notify_result notify(std::string_view state);

// notify(state), and a warning in the log when it failed; nothing when there is no socket.
void notify_service_manager(std::string_view state);

// "RELOADING=1\nMONOTONIC_USEC=<now>": what a service sends when a reload starts (READY=1
// when it is done). systemd 253 and later need the CLOCK_MONOTONIC time of the reload with it
// to tell this reload from an earlier one; older versions ignore the field.
[[nodiscard]] std::string reloading_state();

}  // namespace layercache::daemon
