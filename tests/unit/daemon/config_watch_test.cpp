#include "daemon/config_watch.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/support/process.hpp"

namespace layercache::daemon {
namespace {

namespace fs = std::filesystem;

void write(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
}

TEST(ConfigWatch, AnEditedFileIsOneChange) {
  testing::temp_dir dir("lc-watch");
  const fs::path file = dir.path() / "layercache.yaml";
  write(file, "log: {level: info}\n");
  config_watch watch(file.string());
  EXPECT_FALSE(watch.changed());
  write(file, "log: {level: debug}\n");
  EXPECT_TRUE(watch.changed());
  EXPECT_FALSE(watch.changed()) << "the same content counted twice";
  write(file, "log: {level: debug}\n");  // rewritten, same bytes
  EXPECT_FALSE(watch.changed());
}

// How the kubelet updates a ConfigMap volume: the file is a symlink through `..data`, a
// symlink to a timestamped directory, swapped atomically for a new one.
TEST(ConfigWatch, AConfigMapSymlinkSwapIsOneChange) {
  testing::temp_dir dir("lc-watch");
  const fs::path root = dir.path();
  fs::create_directory(root / "..2026_12_07_1");
  write(root / "..2026_12_07_1" / "layercache.yaml", "cache: {capacity: 1GiB}\n");
  fs::create_directory_symlink("..2026_12_07_1", root / "..data");
  fs::create_symlink("..data/layercache.yaml", root / "layercache.yaml");
  config_watch watch((root / "layercache.yaml").string());
  EXPECT_FALSE(watch.changed());

  fs::create_directory(root / "..2026_12_07_2");
  write(root / "..2026_12_07_2" / "layercache.yaml", "cache: {capacity: 2GiB}\n");
  fs::create_directory_symlink("..2026_12_07_2", root / "..data_tmp");
  fs::rename(root / "..data_tmp", root / "..data");
  fs::remove_all(root / "..2026_12_07_1");
  EXPECT_TRUE(watch.changed());
  EXPECT_FALSE(watch.changed());
}

TEST(ConfigWatch, AMissingFileIsNoChangeAndItsReturnIs) {
  testing::temp_dir dir("lc-watch");
  const fs::path file = dir.path() / "layercache.yaml";
  write(file, "a: 1\n");
  config_watch watch(file.string());
  fs::remove(file);
  EXPECT_FALSE(watch.changed()) << "a file briefly gone must not reload";
  write(file, "a: 1\n");
  EXPECT_FALSE(watch.changed()) << "the same content back is no change";
  write(file, "a: 2\n");
  EXPECT_TRUE(watch.changed());
}

}  // namespace
}  // namespace layercache::daemon
