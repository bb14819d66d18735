#include "cache/rocksdb_logger.hpp"

#include <fcntl.h>
#include <rocksdb/env.h>
#include <sys/time.h>
#include <unistd.h>

#include <array>
#include <cstdarg>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace layercache::cache::detail {
namespace {

class file_logger final : public rocksdb::Logger {
 public:
  file_logger(const std::string& dir, std::size_t max_size)
      : path_(dir + "/LOG"), old_path_(dir + "/LOG.old"), max_size_(max_size) {
    open_locked();
  }
  ~file_logger() override {
    if (fd_ >= 0) ::close(fd_);
  }
  file_logger(const file_logger&) = delete;
  file_logger& operator=(const file_logger&) = delete;

  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override {
    std::array<char, 4096> line{};
    const std::size_t head = timestamp(line.data(), line.size());
    va_list copy;
    va_copy(copy, ap);
    const int n = std::vsnprintf(line.data() + head, line.size() - head - 1, format, copy);
    va_end(copy);
    if (n < 0) return;
    std::size_t size =
        head + std::min<std::size_t>(static_cast<std::size_t>(n), line.size() - head - 2);
    line[size++] = '\n';
    std::lock_guard lock(mu_);
    if (written_ + size > max_size_) roll_locked();
    if (fd_ < 0) return;
    // One write per line; a short or failed one (no space) is dropped, never retried.
    const ssize_t w = ::write(fd_, line.data(), size);
    if (w > 0) written_ += static_cast<std::size_t>(w);
  }

 private:
  static std::size_t timestamp(char* out, std::size_t room) {
    timeval now{};
    ::gettimeofday(&now, nullptr);
    std::tm t{};
    ::localtime_r(&now.tv_sec, &t);
    const int n = std::snprintf(out, room, "%04d/%02d/%02d-%02d:%02d:%02d.%06ld ", t.tm_year + 1900,
                                t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec,
                                static_cast<long>(now.tv_usec));
    return n > 0 ? static_cast<std::size_t>(n) : 0;
  }

  void open_locked() {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    const off_t end = fd_ >= 0 ? ::lseek(fd_, 0, SEEK_END) : 0;
    written_ = end > 0 ? static_cast<std::size_t>(end) : 0;
  }

  void roll_locked() {
    if (fd_ >= 0) ::close(fd_);
    (void)::rename(path_.c_str(), old_path_.c_str());
    open_locked();
    written_ = 0;
  }

  const std::string path_;
  const std::string old_path_;
  const std::size_t max_size_;
  std::mutex mu_;
  int fd_ = -1;
  std::size_t written_ = 0;
};

}  // namespace

std::shared_ptr<rocksdb::Logger> make_rocksdb_logger(const std::string& dir, std::size_t max_size) {
  return std::make_shared<file_logger>(dir, max_size);
}

}  // namespace layercache::cache::detail
