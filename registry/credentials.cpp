#include "registry/credentials.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <system_error>
#include <thread>

#include "asio/offload.hpp"
#include "log/log.hpp"
#include "registry/auth.hpp"
#include "registry/upstream_client.hpp"

extern char** environ;

namespace layercache::registry {
namespace {

using clock = std::chrono::steady_clock;
constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t max_metadata_body = std::size_t{64} * 1024;
constexpr std::size_t max_docker_config = std::size_t{1024} * 1024;
constexpr std::size_t max_helper_output = std::size_t{1024} * 1024;
constexpr std::size_t max_helper_error = 4096;
// A credential helper's answer is reused this long (gcloud's tokens live an hour; a refusal
// drops it sooner); a failure this long, so an outage does not run a helper per request.
constexpr auto helper_success_ttl = std::chrono::seconds(60);
constexpr auto helper_failure_ttl = std::chrono::seconds(5);

upstream_failure auth_failure(std::string message) {
  return upstream_failure{upstream_errc::auth_failed, std::move(message)};
}

std::string first_line(std::string_view text, std::size_t limit = 200) {
  auto end = text.find_first_of("\r\n");
  auto line = text.substr(0, std::min(end, limit));
  while (!line.empty() && line.back() == ' ') line.remove_suffix(1);
  return std::string(line);
}

// Username and password for HTTP Basic, fixed at load time.
class static_source final : public credential_source {
 public:
  explicit static_source(credentials c) : creds_(std::move(c)) {}
  asio::awaitable<credential_result> get() override { co_return creds_; }
  void refused(const credentials&) override {}

 private:
  const credentials creds_;
};

// An access token from the GCE metadata server, refreshed before it expires; one fetch at a
// time for all workers.
class gce_metadata_source final : public credential_source {
 public:
  explicit gce_metadata_source(const config::upstream& u)
      : upstream_(u.name), url_(u.auth.metadata_url), timeouts_(u.timeouts) {
    auto split = parse_http_url(url_);
    if (!split) throw std::runtime_error("upstream " + u.name + ": bad auth.metadata_url");
    where_ = std::move(split->first);
    target_ = std::move(split->second);
    if (where_.tls()) tls_ = make_client_tls("");
  }

  asio::awaitable<credential_result> get() override {
    if (auto token = current()) co_return as_credentials(std::move(*token));
    const config::duration limit =
        timeouts_.connect + timeouts_.response + timeouts_.read + std::chrono::seconds(5);
    for (int attempt = 0; attempt < 3; ++attempt) {
      std::string key = "access_token";
      auto joined = co_await flights_.join(std::move(key), limit);
      if (auto* claimed = std::get_if<flight_table::lead>(&joined)) {
        flight_table::lead lead = std::move(*claimed);
        if (auto token = current()) {
          lead.finish(*token);
          co_return as_credentials(std::move(*token));
        }
        auto fetched = co_await fetch();
        lead.finish(fetched);
        if (auto* f = std::get_if<upstream_failure>(&fetched)) co_return std::move(*f);
        co_return as_credentials(std::move(std::get<std::string>(fetched)));
      }
      if (auto& waited = std::get<std::optional<fetch_result>>(joined)) {
        if (auto* f = std::get_if<upstream_failure>(&*waited)) co_return std::move(*f);
        co_return as_credentials(std::move(std::get<std::string>(*waited)));
      }
    }
    co_return auth_failure("GCE metadata server " + url_ + ": token fetch did not finish");
  }

  void refused(const credentials& c) override {
    std::lock_guard lock(mutex_);
    if (c.access_token == token_) token_.clear();
  }

 private:
  static credentials as_credentials(std::string token) {
    credentials c;
    c.username = "oauth2accesstoken";
    c.password = token;
    c.access_token = std::move(token);
    return c;
  }

  std::optional<std::string> current() {
    std::lock_guard lock(mutex_);
    if (token_.empty() || clock::now() >= refresh_at_) return std::nullopt;
    return token_;
  }

  asio::awaitable<fetch_result> fetch() {
    std::vector<std::pair<std::string, std::string>> headers;
    headers.emplace_back("Accept", "application/json");
    headers.emplace_back("Metadata-Flavor", "Google");
    std::string target = target_;
    auto result = co_await fetch_small(where_, std::move(target), std::move(headers), timeouts_,
                                       tls_.get(), max_metadata_body);
    std::string problem;
    if (auto* f = std::get_if<upstream_failure>(&result)) {
      problem = f->message;
    } else {
      const auto& r = std::get<small_response>(result);
      if (r.status != 200) {
        problem = "answered " + std::to_string(r.status);
      } else if (auto token = parse_metadata_token(r.body)) {
        {
          std::lock_guard lock(mutex_);
          token_ = token->token;
          refresh_at_ = clock::now() + usable_lifetime(token->expires_in);
        }
        log::debug("auth", "upstream ", upstream_,
                   ": access token from the metadata server, valid ", token->expires_in.count(),
                   "s");
        co_return std::move(token->token);
      } else {
        problem = "answered without an access_token";
      }
    }
    log::error("auth", "upstream ", upstream_, ": no access token from the GCE metadata server ",
               url_, ": ", problem);
    co_return auth_failure("no access token from the GCE metadata server: " + problem);
  }

  const std::string upstream_;
  const std::string url_;
  const config::upstream_timeouts timeouts_;
  origin where_;
  std::string target_;
  std::unique_ptr<asio::ssl::context> tls_;
  flight_table flights_;
  std::mutex mutex_;
  std::string token_;
  clock::time_point refresh_at_;
};

// Credentials from a docker config.json: `auths` entries, or the output of the credential
// helper that `credHelpers`/`credsStore` name. The file is stat()ed on every use and re-read
// when its identity, size or mtime changed. File reads and helper runs happen on the source's
// own thread; the calls of all workers queue there, so a helper runs once for all of them.
class docker_config_source final : public credential_source {
 public:
  explicit docker_config_source(const config::upstream& u)
      : upstream_(u.name),
        path_(u.auth.docker_config),
        key_(docker_registry_key(u.auth.registry.empty() ? u.host + port_suffix(u)
                                                         : u.auth.registry)),
        helper_dir_(u.auth.helper_dir),
        helper_timeout_(u.auth.helper_timeout),
        thread_(1) {}

  asio::awaitable<credential_result> get() override {
    co_return co_await thread_.run([this] { return load(); });
  }

  void refused(const credentials&) override { refused_.store(true); }

 private:
  struct file_stamp {
    dev_t device = 0;
    ino_t inode = 0;
    off_t size = 0;
    std::int64_t mtime_ns = 0;
    friend bool operator==(const file_stamp&, const file_stamp&) = default;
  };

  static std::string port_suffix(const config::upstream& u) {
    const bool default_port =
        (u.scheme == "https" && u.port == 443) || (u.scheme == "http" && u.port == 80);
    return default_port ? std::string() : ":" + std::to_string(u.port);
  }

  // On the source's thread only.
  credential_result load() {
    struct stat st {};
    if (::stat(path_.c_str(), &st) != 0) {
      const int err = errno;
      if (!missing_reported_) {
        log::warn("auth", "upstream ", upstream_, ": docker config ", path_, ": ",
                  std::generic_category().message(err), "; pulling anonymously");
        missing_reported_ = true;
      }
      stamp_.reset();
      file_.reset();
      helper_result_.reset();
      return credentials{};
    }
    missing_reported_ = false;
    const file_stamp stamp{
        st.st_dev, st.st_ino, st.st_size,
        static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec};
    if (!stamp_ || !(*stamp_ == stamp)) reread(stamp);
    if (!file_) return auth_failure("docker config " + path_ + ": " + file_error_);

    const auto plan = plan_docker_credentials(*file_, key_);
    if (plan.helper.empty()) {
      if (!plan.entry) return credentials{};
      credentials c;
      c.username = plan.entry->username;
      c.password = plan.entry->password;
      c.identity_token = plan.entry->identity_token;
      return c;
    }
    if (refused_.exchange(false)) helper_result_.reset();
    const auto now = clock::now();
    if (helper_result_ && helper_result_->helper == plan.helper && now < helper_result_->until) {
      return helper_result_->result;
    }
    auto result = run_helper(plan.helper);
    const bool ok = std::holds_alternative<credentials>(result);
    helper_result_ =
        helper_answer{plan.helper, result, now + (ok ? helper_success_ttl : helper_failure_ttl)};
    return result;
  }

  void reread(const file_stamp& stamp) {
    stamp_ = stamp;
    file_.reset();
    helper_result_.reset();
    warn_if_exposed(path_, "docker config");
    std::string content;
    const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      file_error_ = std::generic_category().message(errno);
      log::error("auth", "upstream ", upstream_, ": cannot read docker config ", path_, ": ",
                 file_error_);
      return;
    }
    char buf[8192];
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      content.append(buf, static_cast<std::size_t>(n));
      if (content.size() > max_docker_config) break;
    }
    ::close(fd);
    if (content.size() > max_docker_config) {
      file_error_ = "larger than 1 MiB";
    } else if (auto parsed = parse_docker_config(content, file_error_)) {
      file_ = std::move(*parsed);
      log::info("auth", "upstream ", upstream_, ": read docker config ", path_);
      return;
    }
    log::error("auth", "upstream ", upstream_, ": docker config ", path_, ": ", file_error_);
  }

  credential_result run_helper(const std::string& helper) {
    const std::string name = "docker-credential-" + helper;
    const std::string program = find_credential_helper(helper, helper_dir_);
    if (program.empty()) {
      log::error("auth", "upstream ", upstream_, ": credential helper ", name, " not found",
                 helper_dir_.empty() ? std::string(" on PATH") : " in " + helper_dir_);
      return auth_failure("credential helper " + name + " not found");
    }
    const auto run =
        run_credential_helper(program, docker_helper_server_url(key_), helper_timeout_);
    std::string problem;
    if (run.timed_out) {
      problem = "timed out after " + std::to_string(helper_timeout_.count()) + "ms";
    } else if (run.exit_code != 0) {
      // docker-credential-helpers print "credentials not found in native keychain" on stdout.
      if (run.output.find("credentials not found") != std::string::npos) {
        log::info("auth", "upstream ", upstream_, ": ", name, " has no credentials for ", key_,
                  "; pulling anonymously");
        return credentials{};
      }
      problem = run.exit_code < 0 ? run.error
                                  : "exit status " + std::to_string(run.exit_code) +
                                        (run.error.empty() ? std::string() : ": " + run.error);
    } else if (auto entry = parse_helper_output(run.output)) {
      credentials c;
      c.username = entry->username;
      c.password = entry->password;
      c.identity_token = entry->identity_token;
      return c;
    } else {
      problem = "output is not {\"Username\", \"Secret\"} JSON";
    }
    log::error("auth", "upstream ", upstream_, ": credential helper ", program, " get ", key_, ": ",
               problem);
    return auth_failure("credential helper " + name + ": " + problem);
  }

  struct helper_answer {
    std::string helper;
    credential_result result;
    clock::time_point until;
  };

  const std::string upstream_;
  const std::string path_;
  const std::string key_;
  const std::string helper_dir_;
  const config::duration helper_timeout_;
  std::atomic<bool> refused_{false};
  // Owned by the source's thread:
  std::optional<file_stamp> stamp_;
  std::optional<docker_config_file> file_;
  std::string file_error_;
  std::optional<helper_answer> helper_result_;
  bool missing_reported_ = false;
  // Last: its destructor joins the thread, before the state above goes.
  blocking_pool thread_;
};

}  // namespace

void flight_table::lead::complete(std::optional<fetch_result> r) {
  if (table_ == nullptr) return;
  std::lock_guard lock(table_->mutex_);
  flight_->result = std::move(r);
  flight_->done = true;
  if (auto it = table_->flights_.find(key_);
      it != table_->flights_.end() && it->second == flight_) {
    table_->flights_.erase(it);
  }
  // Woken under the lock: a waiter that goes away removes its wake-up under it too, so none
  // is posted to an executor that is gone.
  for (auto& [id, wake] : flight_->waiters) wake();
  flight_->waiters.clear();
  table_ = nullptr;
}

asio::awaitable<std::variant<flight_table::lead, std::optional<fetch_result>>> flight_table::join(
    std::string key, config::duration limit) {
  const auto ex = co_await asio::this_coro::executor;
  auto timer = std::make_shared<asio::steady_timer>(ex);
  std::shared_ptr<flight> f;
  std::uint64_t id = 0;
  bool leader = false;
  {
    std::lock_guard lock(mutex_);
    auto it = flights_.find(key);
    if (it == flights_.end()) {
      f = std::make_shared<flight>();
      flights_.emplace(key, f);
      leader = true;
    } else {
      f = it->second;
      id = f->next_waiter++;
      f->waiters.emplace(id, [timer, ex] { asio::post(ex, [timer] { timer->cancel(); }); });
    }
  }
  if (leader) {
    lead claimed(this, std::move(key), std::move(f));
    co_return std::move(claimed);
  }
  // Removes this waiter's wake-up however the wait ends (even when the frame is destroyed).
  // NOLINTNEXTLINE(cppcoreguidelines-special-member-functions): a scope guard, never copied
  struct unregister {
    flight_table* table;
    flight* f;
    std::uint64_t id;
    ~unregister() {
      std::lock_guard lock(table->mutex_);
      f->waiters.erase(id);
    }
  } guard{this, f.get(), id};
  timer->expires_after(limit);
  (void)co_await timer->async_wait(use_nothrow);
  std::lock_guard lock(mutex_);
  if (f->done) co_return f->result;
  co_return std::nullopt;
}

std::size_t flight_table::size() const {
  std::lock_guard lock(mutex_);
  return flights_.size();
}

std::size_t flight_table::waiters(std::string_view key) const {
  std::lock_guard lock(mutex_);
  const auto it = flights_.find(key);
  return it == flights_.end() ? 0 : it->second->waiters.size();
}

upstream_credentials::upstream_credentials(const config::upstream& u) {
  switch (u.auth.type) {
    case config::auth_type::anonymous:
      break;
    case config::auth_type::basic: {
      if (!u.auth.password_file.empty()) warn_if_exposed(u.auth.password_file, "password file");
      credentials c;
      c.username = u.auth.username;
      c.password = u.auth.password;
      source_ = std::make_unique<static_source>(std::move(c));
      break;
    }
    case config::auth_type::gce_metadata:
      source_ = std::make_unique<gce_metadata_source>(u);
      break;
    case config::auth_type::docker_config:
      source_ = std::make_unique<docker_config_source>(u);
      break;
  }
}

upstream_credentials::~upstream_credentials() = default;

void warn_if_exposed(const std::string& path, std::string_view what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return;
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    log::warn("auth", what, " ", path, " holds a secret but has mode ", mode,
              ": group or others may read it (chmod 600)");
  }
}

std::string find_credential_helper(const std::string& name, const std::string& dir) {
  const std::string file = "docker-credential-" + name;
  auto executable = [](const std::string& p) {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(p.c_str(), X_OK) == 0;
  };
  if (!dir.empty()) {
    std::string p = dir + "/" + file;
    return executable(p) ? p : std::string();
  }
  // NOLINTNEXTLINE(concurrency-mt-unsafe): layercache never changes its environment
  const char* path = std::getenv("PATH");
  std::string_view rest = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  while (!rest.empty()) {
    const auto colon = rest.find(':');
    std::string_view entry = rest.substr(0, colon);
    rest = colon == std::string_view::npos ? std::string_view{} : rest.substr(colon + 1);
    if (entry.empty() || entry.front() != '/') continue;  // relative PATH entries: never
    std::string p = std::string(entry) + "/" + file;
    if (executable(p)) return p;
  }
  return {};
}

namespace {

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

// The pipes of a helper's stdin, stdout and stderr ([0] the read end, [1] the write end).
struct helper_pipes {
  int in[2] = {-1, -1};
  int out[2] = {-1, -1};
  int err[2] = {-1, -1};

  bool open() {
    return ::pipe2(in, O_CLOEXEC) == 0 && ::pipe2(out, O_CLOEXEC) == 0 &&
           ::pipe2(err, O_CLOEXEC) == 0;
  }
  void close_all() {
    for (int* p : {in, out, err}) {
      close_fd(p[0]);
      close_fd(p[1]);
    }
  }
};

// Starts `program get` on `p`, and closes the child's ends; 0, or the error number.
int spawn_helper(const std::string& program, helper_pipes& p, pid_t& pid) {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_adddup2(&actions, p.in[0], 0);
  posix_spawn_file_actions_adddup2(&actions, p.out[1], 1);
  posix_spawn_file_actions_adddup2(&actions, p.err[1], 2);
  // Its own process group (killed as a whole on timeout), default signal handling.
  sigset_t none;
  sigemptyset(&none);
  sigset_t all;
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::string arg0 = program;
  std::string arg1 = "get";
  char* argv[] = {arg0.data(), arg1.data(), nullptr};
  const int rc = ::posix_spawn(&pid, program.c_str(), &actions, &attr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  close_fd(p.in[0]);
  close_fd(p.out[1]);
  close_fd(p.err[1]);
  return rc;
}

// Writes `input` to the helper's stdin `fd` (as much as it takes) and closes it.
void feed_helper(int& fd, const std::string& input) {
  // A helper that exits without reading its input must not kill us with SIGPIPE.
  sigset_t pipe_set;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  sigset_t old_mask;
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old_mask);
  for (std::size_t written = 0; written < input.size();) {
    const ssize_t n = ::write(fd, input.data() + written, input.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    written += static_cast<std::size_t>(n);
  }
  close_fd(fd);
  const timespec zero{0, 0};
  while (sigtimedwait(&pipe_set, nullptr, &zero) == SIGPIPE) {
  }
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
}

// Reads the helper's stdout into `output` and its stderr into `errors` (each capped) until
// both close; at `deadline` kills its process group instead: true then.
bool read_helper(helper_pipes& p, pid_t pid, clock::time_point deadline, std::string& output,
                 std::string& errors) {
  while (p.out[0] >= 0 || p.err[0] >= 0) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
    if (left <= 0) {
      ::kill(-pid, SIGKILL);
      return true;
    }
    pollfd fds[2] = {{p.out[0], POLLIN, 0}, {p.err[0], POLLIN, 0}};
    const int ready = ::poll(fds, 2, static_cast<int>(std::min<long long>(left, 1000)));
    if (ready < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      char buf[4096];
      const ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        close_fd(i == 0 ? p.out[0] : p.err[0]);
        continue;
      }
      std::string& sink = i == 0 ? output : errors;
      const std::size_t cap = i == 0 ? max_helper_output : max_helper_error;
      sink.append(buf, std::min<std::size_t>(static_cast<std::size_t>(n),
                                             cap - std::min(cap, sink.size())));
    }
  }
  return false;
}

// Waits for the helper to exit; one still running past `deadline` (its output closed) is
// killed (`killed` set). Its wait status.
int reap_helper(pid_t pid, clock::time_point deadline, bool& killed) {
  int status = 0;
  for (;;) {
    const pid_t w = ::waitpid(pid, &status, killed ? 0 : WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) break;
    if (w == 0) {
      // Output closed but still running: wait out the deadline, then kill.
      if (clock::now() >= deadline) {
        ::kill(-pid, SIGKILL);
        killed = true;
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
  }
  return status;
}

// The exit code and error of a helper that ended with wait status `status` (or was killed).
void note_exit(helper_run& out, int status, bool killed, config::duration timeout,
               const std::string& errors) {
  if (killed) {
    out.timed_out = true;
    out.exit_code = -1;
    out.error = "killed after " + std::to_string(timeout.count()) + "ms";
  } else if (WIFEXITED(status)) {
    out.exit_code = WEXITSTATUS(status);
    out.error = first_line(errors);
  } else {
    out.exit_code = -1;
    out.error = "killed by signal " + std::to_string(WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  }
}

}  // namespace

helper_run run_credential_helper(const std::string& program, const std::string& input,
                                 config::duration timeout) {
  helper_run out;
  helper_pipes pipes;
  if (!pipes.open()) {
    out.error = std::string("pipe: ") + std::system_category().message(errno);
    pipes.close_all();
    return out;
  }
  pid_t pid = -1;
  if (const int rc = spawn_helper(program, pipes, pid); rc != 0) {
    out.error = "cannot run " + program + ": " + std::system_category().message(rc);
    pipes.close_all();
    return out;
  }
  feed_helper(pipes.in[1], input);
  const auto deadline = clock::now() + timeout;
  std::string err_text;
  bool killed = read_helper(pipes, pid, deadline, out.output, err_text);
  pipes.close_all();
  const int status = reap_helper(pid, deadline, killed);
  note_exit(out, status, killed, timeout, err_text);
  return out;
}

}  // namespace layercache::registry
