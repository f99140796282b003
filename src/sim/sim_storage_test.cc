#include "sim/sim_storage.h"

#include <fcntl.h>
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <set>

#include "base/temp_dir.h"

namespace paygate::sim {
namespace {

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class SimStorageTest : public ::testing::Test {
 protected:
  std::filesystem::path file() const { return dir_.path() / "f"; }
  int create(SimStorage& storage) {
    const int fd = storage.open(file().c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    EXPECT_GE(fd, 0);
    return fd;
  }
  TempDir dir_{"sim-storage-test"};
};

TEST_F(SimStorageTest, WhatWasSyncedSurvivesACrash) {
  SimStorage storage(1);
  const int fd = create(storage);
  ASSERT_TRUE(storage.pwrite_all(fd, "abc", 3, 0));
  ASSERT_EQ(storage.fdatasync(fd), 0);
  ASSERT_EQ(storage.sync_directory(dir_.path().c_str()), 0);
  storage.crash({});
  EXPECT_EQ(read_file(file()), "abc");
  ASSERT_NE(storage.durable_content(file()), nullptr);
  EXPECT_EQ(*storage.durable_content(file()), "abc");
}

// A write after the last sync may or may not reach the disk, depending on the seed;
// a crash never invents bytes.
TEST_F(SimStorageTest, UnsyncedWritesMayBeLost) {
  std::set<std::string> seen;
  for (u64 seed = 0; seed < 64; ++seed) {
    SimStorage storage(seed);
    const int fd = create(storage);
    ASSERT_TRUE(storage.pwrite_all(fd, "abc", 3, 0));
    ASSERT_EQ(storage.fsync(fd), 0);
    ASSERT_EQ(storage.sync_directory(dir_.path().c_str()), 0);
    ASSERT_TRUE(storage.pwrite_all(fd, "def", 3, 3));
    const SimStorage::CrashReport report = storage.crash({});
    EXPECT_EQ(report.unsynced_writes, 1u);
    seen.insert(read_file(file()));
    std::filesystem::remove(file());
  }
  EXPECT_EQ(seen, (std::set<std::string>{"abc", "abcdef"}));
}

// A file made but whose directory was never synced may be gone after a crash.
TEST_F(SimStorageTest, UnsyncedDirectoryEntriesMayBeLost) {
  std::set<bool> exists;
  for (u64 seed = 0; seed < 64; ++seed) {
    SimStorage storage(seed);
    const int fd = create(storage);
    ASSERT_TRUE(storage.pwrite_all(fd, "abc", 3, 0));
    ASSERT_EQ(storage.fdatasync(fd), 0);
    storage.crash({});
    exists.insert(std::filesystem::exists(file()));
    if (std::filesystem::exists(file())) {
      EXPECT_EQ(read_file(file()), "abc");
    }
    std::filesystem::remove(file());
  }
  EXPECT_EQ(exists, (std::set<bool>{false, true}));
}

// A long write cut by a crash keeps whole sectors: true bytes, then what was there.
TEST_F(SimStorageTest, TornWritesEndAtASector) {
  const std::string data(4 * kSectorBytes, 'x');
  std::set<u64> lengths;
  for (u64 seed = 0; seed < 200; ++seed) {
    SimStorage storage(seed);
    const int fd = create(storage);
    ASSERT_EQ(storage.fsync(fd), 0);
    ASSERT_EQ(storage.sync_directory(dir_.path().c_str()), 0);
    ASSERT_TRUE(storage.pwrite_all(fd, data.data(), data.size(), 0));
    storage.crash({});
    const std::string kept = read_file(file());
    EXPECT_EQ(kept.size() % kSectorBytes, 0u);
    EXPECT_EQ(kept, data.substr(0, kept.size()));
    lengths.insert(kept.size());
    std::filesystem::remove(file());
  }
  EXPECT_GT(lengths.size(), 2u) << "whole, none, and some torn lengths";
}

TEST_F(SimStorageTest, ADeadDiskFailsEveryChangeUntilTheCrash) {
  SimStorage storage(3);
  const int fd = create(storage);  // one change
  storage.die_after(1);
  ASSERT_TRUE(storage.pwrite_all(fd, "a", 1, 0));
  EXPECT_FALSE(storage.dead());
  errno = 0;
  EXPECT_EQ(storage.pwrite(fd, "b", 1, 1), -1);
  EXPECT_EQ(errno, EIO);
  EXPECT_TRUE(storage.dead());
  EXPECT_EQ(storage.fdatasync(fd), -1);
  storage.crash({});
  EXPECT_FALSE(storage.dead());
  const int again = storage.open(file().c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  EXPECT_GE(again, 0);
  EXPECT_TRUE(storage.pwrite_all(again, "c", 1, 0));
}

TEST_F(SimStorageTest, InjectedFaultsFailWritesAndSyncs) {
  SimStorage storage(4);
  storage.set_faults({.write_error_per_million = 1'000'000, .sync_error_per_million = 0});
  const int fd = create(storage);
  EXPECT_EQ(storage.pwrite(fd, "a", 1, 0), -1);
  EXPECT_TRUE(errno == EIO || errno == ENOSPC);
  storage.set_faults({.write_error_per_million = 0, .sync_error_per_million = 1'000'000});
  EXPECT_EQ(storage.fdatasync(fd), -1);
  EXPECT_EQ(storage.injected_errors(), 2u);
}

TEST_F(SimStorageTest, RemovalsAreTold) {
  SimStorage storage(5);
  std::string told;
  storage.on_unlink([&](const std::string& path, const std::string& durable) {
    told = std::filesystem::path(path).filename().string() + "=" + durable;
  });
  const int fd = create(storage);
  ASSERT_TRUE(storage.pwrite_all(fd, "abc", 3, 0));
  ASSERT_EQ(storage.fdatasync(fd), 0);
  ASSERT_TRUE(storage.pwrite_all(fd, "zz", 2, 0));  // not synced: not told
  ASSERT_EQ(storage.close(fd), 0);
  ASSERT_EQ(storage.unlink(file().c_str()), 0);
  EXPECT_EQ(told, "f=abc");
  EXPECT_FALSE(std::filesystem::exists(file()));
}

TEST_F(SimStorageTest, FlippedBitsAreOnDiskAndUndoneByFlippingAgain) {
  SimStorage storage(6);
  const int fd = create(storage);
  ASSERT_TRUE(storage.pwrite_all(fd, "abc", 3, 0));
  ASSERT_EQ(storage.fdatasync(fd), 0);
  ASSERT_EQ(storage.sync_directory(dir_.path().c_str()), 0);
  storage.flip_durable_bit(file(), 1, 0);
  EXPECT_EQ(read_file(file()), "acc");
  storage.flip_durable_bit(file(), 1, 0);
  EXPECT_EQ(read_file(file()), "abc");
}

}  // namespace
}  // namespace paygate::sim
