#include "snapshot/snapshot.h"

#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "base/temp_dir.h"
#include "ledger/ledger_test_support.h"

namespace paygate::snapshot {
namespace {

class Snapshot : public LedgerFixture {
 protected:
  void SetUp() override {
    LedgerFixture::SetUp();
    user_ = funded(10'000);
    merchant_ = open(AccountKind::merchant);
    for (int i = 0; i < 5; ++i)
      hold(user_, merchant_, 10 + i, 30 + i);
    run(Command::make_transfer(user_, merchant_, 3, kUsd).with_key({9, 9}));
  }
  std::unique_ptr<Ledger> fresh() const { return std::make_unique<Ledger>(config_); }
  std::filesystem::path write_now() {
    const std::filesystem::path path = dir_.path() / file_name(ledger_->last_stamp().sequence);
    std::vector<unsigned char> buffer(4096);
    EXPECT_EQ(write_file(*ledger_, path.c_str(), buffer.data(), buffer.size()), 0);
    return path;
  }
  void more_commands(int n) {
    for (int i = 0; i < n; ++i)
      run(Command::make_transfer(user_, merchant_, 1, kUsd), 1);
  }

  TempDir dir_;
  AccountId user_, merchant_;
};

TEST_F(Snapshot, WrittenFileLoadsToTheSameState) {
  const std::filesystem::path path = write_now();
  const LoadResult loaded = load_newest(dir_.path(), [&] { return fresh(); });
  ASSERT_NE(loaded.ledger, nullptr);
  EXPECT_EQ(loaded.file, path);
  EXPECT_EQ(loaded.sequence, ledger_->last_stamp().sequence);
  EXPECT_EQ(loaded.ledger->state_digest(), ledger_->state_digest());
  EXPECT_TRUE(loaded.skipped.empty());
}

TEST_F(Snapshot, NoSnapshotMeansStartEmpty) {
  const LoadResult loaded = load_newest(dir_.path(), [&] { return fresh(); });
  EXPECT_EQ(loaded.ledger, nullptr);
  EXPECT_EQ(loaded.sequence, 0u);
}

TEST_F(Snapshot, DamagedNewestFallsBackToAnOlderOne) {
  write_now();
  const u64 older_digest = ledger_->state_digest();
  more_commands(3);
  const std::filesystem::path newest = write_now();
  {  // flip a byte in the middle of the state
    const int fd = ::open(newest.c_str(), O_RDWR);
    unsigned char byte = 0;
    ASSERT_EQ(::pread(fd, &byte, 1, 200), 1);
    byte ^= 0x10;
    ASSERT_EQ(::pwrite(fd, &byte, 1, 200), 1);
    ::close(fd);
  }
  const LoadResult loaded = load_newest(dir_.path(), [&] { return fresh(); });
  ASSERT_NE(loaded.ledger, nullptr);
  EXPECT_EQ(loaded.ledger->state_digest(), older_digest);
  ASSERT_EQ(loaded.skipped.size(), 1u);
  EXPECT_NE(loaded.skipped[0].find("checksum mismatch"), std::string::npos) << loaded.skipped[0];
}

TEST_F(Snapshot, TruncatedOrForeignSnapshotsAreSkipped) {
  const std::filesystem::path path = write_now();
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 5);
  LedgerConfig other = config_;
  other.pending_max += 1;
  const LoadResult loaded = load_newest(dir_.path(), [&] { return fresh(); });
  EXPECT_EQ(loaded.ledger, nullptr);
  ASSERT_EQ(loaded.skipped.size(), 1u);

  std::filesystem::remove(path);
  write_now();
  const LoadResult foreign =
      load_newest(dir_.path(), [&] { return std::make_unique<Ledger>(other); });
  EXPECT_EQ(foreign.ledger, nullptr);
  ASSERT_EQ(foreign.skipped.size(), 1u);
  EXPECT_NE(foreign.skipped[0].find("different configuration"), std::string::npos)
      << foreign.skipped[0];
}

Snapshotter::Progress wait_until_written(Snapshotter& snapshotter, std::string* message) {
  // Durable sequence 0: the child may finish, but nothing is published yet.
  for (int i = 0; i < 2000; ++i) {
    const auto progress = snapshotter.poll(0, message);
    if (progress != Snapshotter::Progress::running) return progress;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return Snapshotter::Progress::running;
}

// The forked child writes the state as it was at fork(), while the parent goes on;
// the file appears only once the journal is durable up to its sequence.
TEST_F(Snapshot, SnapshotterWritesTheForkTimeStateAndPublishesWhenDurable) {
  Snapshotter snapshotter(dir_.path());
  const u64 digest_at_fork = ledger_->state_digest();
  const u64 sequence = ledger_->last_stamp().sequence;
  ASSERT_TRUE(snapshotter.start(*ledger_));
  EXPECT_FALSE(snapshotter.start(*ledger_));  // one at a time
  more_commands(20);                          // the parent moves on at once
  std::string message;
  EXPECT_EQ(wait_until_written(snapshotter, &message), Snapshotter::Progress::running);
  EXPECT_TRUE(list(dir_.path()).empty());  // written, not yet published
  EXPECT_EQ(snapshotter.poll(sequence - 1, &message), Snapshotter::Progress::running);
  EXPECT_EQ(snapshotter.poll(sequence, &message), Snapshotter::Progress::published);
  EXPECT_EQ(snapshotter.last_published(), sequence);
  EXPECT_NE(message.find("published"), std::string::npos);
  EXPECT_EQ(snapshotter.poll(sequence, &message), Snapshotter::Progress::idle);
  EXPECT_EQ(snapshotter.pause_ns().count(), 1u);

  const LoadResult loaded = load_newest(dir_.path(), [&] { return fresh(); });
  ASSERT_NE(loaded.ledger, nullptr);
  EXPECT_EQ(loaded.sequence, sequence);
  EXPECT_EQ(loaded.ledger->state_digest(), digest_at_fork);
}

// A server killed while its snapshot child wrote leaves the child writing (it holds
// no LOCK, so the restart is not refused); the restarted server may snapshot the same
// sequence. What the old child writes, however late, never reaches the published file.
TEST_F(Snapshot, AnEarlierServersChildWritingTheSameSequenceCannotTouchThePublishedFile) {
  const u64 sequence = ledger_->last_stamp().sequence;
  const std::string name = file_name(sequence);
  // The old child's open files: its server's temporary name, the same name as this
  // server's (a reused pid), and the name all servers shared before temporary names
  // carried the pid.
  std::vector<int> old_child;
  const std::string same_pid = name + "." + std::to_string(::getpid()) + ".tmp";
  for (const std::string& tmp : {name + ".1.tmp", same_pid, name + ".tmp"}) {
    old_child.push_back(::open((dir_.path() / tmp).c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
    ASSERT_GE(old_child.back(), 0) << tmp;
  }
  Snapshotter snapshotter(dir_.path());
  const u64 digest = ledger_->state_digest();
  ASSERT_TRUE(snapshotter.start(*ledger_));
  std::string message;
  ASSERT_EQ(wait_until_written(snapshotter, &message), Snapshotter::Progress::running);
  ASSERT_EQ(snapshotter.poll(sequence, &message), Snapshotter::Progress::published) << message;
  // Now the old child writes on.
  const std::vector<unsigned char> junk(64 << 10, 0xA5);
  for (const int fd : old_child) {
    EXPECT_EQ(::pwrite(fd, junk.data(), junk.size(), 0), static_cast<ssize_t>(junk.size()));
    ::close(fd);
  }
  const LoadResult loaded = load_newest(dir_.path(), [&] { return fresh(); });
  ASSERT_NE(loaded.ledger, nullptr) << (loaded.skipped.empty() ? "" : loaded.skipped.front());
  EXPECT_EQ(loaded.sequence, sequence);
  EXPECT_EQ(loaded.ledger->state_digest(), digest);
  EXPECT_TRUE(loaded.skipped.empty());
  // The old child's leftovers go with the next prune.
  prune(dir_.path(), 1);
  EXPECT_FALSE(std::filesystem::exists(dir_.path() / (name + ".1.tmp")));
  EXPECT_FALSE(std::filesystem::exists(dir_.path() / same_pid));
  EXPECT_FALSE(std::filesystem::exists(dir_.path() / (name + ".tmp")));
}

TEST_F(Snapshot, PruneKeepsTheNewestAndClearsTemporaryFiles) {
  for (int i = 0; i < 4; ++i) {
    write_now();
    more_commands(1);
  }
  std::ofstream(dir_.path() / "snapshot-00000000000000000099.snap.tmp") << "partial";
  const auto before = list(dir_.path());
  ASSERT_EQ(before.size(), 4u);
  EXPECT_EQ(prune(dir_.path(), 2), before[1].first);
  const auto after = list(dir_.path());
  ASSERT_EQ(after.size(), 2u);
  EXPECT_EQ(after[0].first, before[0].first);
  EXPECT_FALSE(std::filesystem::exists(dir_.path() / "snapshot-00000000000000000099.snap.tmp"));
}

TEST(SnapshotNames, RoundTrip) {
  EXPECT_EQ(file_name(42), "snapshot-00000000000000000042.snap");
  EXPECT_EQ(parse_file_name(file_name(42)), 42u);
  EXPECT_EQ(parse_file_name("snapshot-00000000000000000042.snap.tmp"), 0u);
}

}  // namespace
}  // namespace paygate::snapshot
