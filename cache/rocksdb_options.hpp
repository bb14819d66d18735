// The chunk column family's RocksDB options, for the backend (cache/rocksdb_backend.cpp) and
// for the benchmarks that measure RocksDB alone with them (tests/bench/ingest_bench.cpp).
// Internal to cache/: nothing outside it and its benchmarks knows RocksDB.
#pragma once

#include <rocksdb/cache.h>
#include <rocksdb/options.h>

#include <memory>

#include "cache/chunk_store.hpp"

namespace layercache::cache::detail {

// Chunks are layer bytes, already compressed: no compression; XXH3 block checksums, bloom
// filters, level compaction with dynamic level bytes, 32 MiB memtables. `blocks` is the
// chunks' own block cache; `layout` adds BlobDB's options for chunk_layout::blob_files.
[[nodiscard]] rocksdb::ColumnFamilyOptions chunk_family(
    const std::shared_ptr<rocksdb::Cache>& blocks, chunk_layout layout);

}  // namespace layercache::cache::detail
