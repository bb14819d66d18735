// RocksDB's diagnostic log (the LOG file in the store's directory), written by us. RocksDB's
// own file logger asserts (aborting the process, in Debian's build) on the line after a write
// that failed: a full disk killed layercached from a compaction's log line
// (tests/e2e/disk_full_test.cpp). This one drops lines it cannot write. Internal to cache/.
#pragma once

#include <memory>
#include <string>

namespace rocksdb {
class Logger;
}

namespace layercache::cache::detail {

// Appends to `dir`/LOG; past `max_size` bytes the file becomes LOG.old (one kept) and a new
// LOG starts. Thread-safe. Never fails: a line that cannot be written is lost.
[[nodiscard]] std::shared_ptr<rocksdb::Logger> make_rocksdb_logger(const std::string& dir,
                                                                   std::size_t max_size);

}  // namespace layercache::cache::detail
