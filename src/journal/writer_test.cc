#include "journal/writer.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>

#include "base/temp_dir.h"
#include "journal/journal_test_support.h"

namespace paygate::journal {
namespace {

TEST(JournalWriter, AppendsRecordsThatReadBackInOrder) {
  TempDir dir;
  write_journal(dir.path(), 1000, 3);
  ScanReport report;
  const auto seen = read_all(dir.path(), &report);
  ASSERT_EQ(report.end, LogEnd::clean) << report.message;
  ASSERT_EQ(seen.size(), 1000u);
  for (std::size_t i = 0; i < seen.size(); ++i)
    EXPECT_EQ(seen[i].first, 1 + 3 * i);
  EXPECT_EQ(report.next_sequence, 3001u);
  EXPECT_EQ(report.commands, 3000u);
  EXPECT_TRUE(report.has_identity);
  EXPECT_TRUE(report.identity.same_ledger(SegmentHeader::describe(test_ledger_config(), 0)));
}

TEST(JournalWriter, CommandsReadBackByteForByte) {
  TempDir dir;
  write_journal(dir.path(), 50, 7);
  u64 checked = 0;
  const ScanReport report = scan(dir.path(), 0, [&](const Record& record) {
    const auto expected = numbered_commands(record.header->sequence, record.header->count);
    for (u32 i = 0; i < record.header->count; ++i) {
      EXPECT_EQ(record.commands[i], expected[i]);
      ++checked;
    }
    return true;
  });
  EXPECT_EQ(report.end, LogEnd::clean);
  EXPECT_EQ(checked, 350u);
}

TEST(JournalWriter, RollsOverToNewSegmentsWithContinuousSequences) {
  TempDir dir;
  // ~5,800 bytes per record, 2 MiB segments: several segments.
  write_journal(dir.path(), 1200, 90);
  ScanReport report;
  const auto seen = read_all(dir.path(), &report);
  ASSERT_EQ(report.end, LogEnd::clean) << report.message;
  ASSERT_EQ(seen.size(), 1200u);
  ASSERT_GE(report.segments.size(), 3u);
  u64 expected = 1;
  for (const SegmentSummary& segment : report.segments) {
    EXPECT_EQ(segment.first_sequence, expected);
    expected += segment.records * 90;
  }
  EXPECT_EQ(list_segments(dir.path()).size(), report.segments.size());
}

TEST(JournalWriter, GroupCommitSyncsManyRecordsAtOnce) {
  TempDir dir;
  std::string error;
  auto writer = Writer::open(test_writer_options(dir.path()), {{}, 0, 1}, &error);
  ASSERT_NE(writer, nullptr) << error;
  writer->start();
  for (u64 s = 1; s <= 20000; ++s) {
    while (!stage(*writer, s, 1))
      std::this_thread::yield();
  }
  ASSERT_TRUE(wait_durable(*writer, 20000));
  writer->stop();
  // 20,000 records, each needing fdatasync before it counts, in far fewer syncs.
  EXPECT_LT(writer->sync_ns().count(), 20000u / 4) << "syncs: " << writer->sync_ns().count();
  EXPECT_GT(writer->write_bytes().percentile(0.5), record_bytes(RecordType::commands, 1));
}

// With a sync gap, a steady stream of records is made durable in about one sync per
// gap, and every record still becomes durable. The bound allows two per gap: when
// the stager happens to lag (a loaded machine), a sync ends with nothing queued and
// the next record is synced at once. Without the gap this stream takes hundreds.
TEST(JournalWriter, SyncGapBoundsTheSyncRate) {
  TempDir dir;
  WriterOptions options = test_writer_options(dir.path());
  options.sync_gap_ns = 20'000'000;  // 20 ms
  std::string error;
  auto writer = Writer::open(options, {{}, 0, 1}, &error);
  ASSERT_NE(writer, nullptr) << error;
  writer->start();
  const auto started = std::chrono::steady_clock::now();
  u64 sequence = 1;
  while (std::chrono::steady_clock::now() - started < std::chrono::milliseconds(200)) {
    if (stage(*writer, sequence, 1)) ++sequence;
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  ASSERT_TRUE(wait_durable(*writer, sequence - 1));
  const auto elapsed = std::chrono::steady_clock::now() - started;
  writer->stop();
  const u64 gaps = static_cast<u64>(elapsed / std::chrono::milliseconds(20));
  EXPECT_LE(writer->sync_ns().count(), 2 * gaps + 2) << "syncs in " << gaps << " gaps";
  EXPECT_GT(sequence, 100u);
}

// The gap is for load only: a record that comes when nothing was waiting is synced
// at once, however recent the last sync.
TEST(JournalWriter, SyncGapDoesNotDelayALoneRecord) {
  TempDir dir;
  WriterOptions options = test_writer_options(dir.path());
  options.sync_gap_ns = 2'000'000'000;  // 2 s
  std::string error;
  auto writer = Writer::open(options, {{}, 0, 1}, &error);
  ASSERT_NE(writer, nullptr) << error;
  writer->start();
  for (u64 s = 1; s <= 3; ++s) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the writer goes idle
    const auto started = std::chrono::steady_clock::now();
    ASSERT_TRUE(stage(*writer, s, 1));
    ASSERT_TRUE(wait_durable(*writer, s));
    EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(1)) << s;
  }
  writer->stop();
}

TEST(JournalWriter, ReopensAndAppendsWhereTheLogEnds) {
  TempDir dir;
  write_journal(dir.path(), 100, 2);
  ScanReport first;
  read_all(dir.path(), &first);
  std::string error;
  auto writer = Writer::open(test_writer_options(dir.path()),
                             AppendPosition{first.file, first.offset, first.next_sequence}, &error);
  ASSERT_NE(writer, nullptr) << error;
  writer->start();
  ASSERT_TRUE(stage(*writer, first.next_sequence, 5));
  ASSERT_TRUE(wait_durable(*writer, first.next_sequence + 4));
  writer->stop();
  ScanReport second;
  const auto seen = read_all(dir.path(), &second);
  EXPECT_EQ(second.end, LogEnd::clean) << second.message;
  EXPECT_EQ(seen.size(), 101u);
  EXPECT_EQ(second.next_sequence, 206u);
}

// A failure of any file operation stops durability for good and says why.
void expect_fails_on(FileOp failing, int error_number, u32 records_per_stage) {
  TempDir dir;
  std::atomic<int> remaining{3};  // let a few operations of that kind succeed first
  WriterOptions options = test_writer_options(dir.path());
  options.fault = [&](FileOp op) {
    return op == failing && remaining.fetch_sub(1) <= 0 ? error_number : 0;
  };
  std::string error;
  auto writer = Writer::open(options, {{}, 0, 1}, &error);
  ASSERT_NE(writer, nullptr) << error;
  writer->start();
  u64 sequence = 1;
  for (int i = 0; i < 4000 && !writer->failed(); ++i) {
    if (stage(*writer, sequence, records_per_stage)) sequence += records_per_stage;
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  ASSERT_TRUE(writer->failed());
  const u64 durable = writer->durable_sequence();
  EXPECT_LT(durable, sequence - 1);
  EXPECT_NE(writer->failure().find(std::strerror(error_number)), std::string::npos)
      << writer->failure();
  EXPECT_EQ(writer->reserve(record_bytes(RecordType::commands, 1)), nullptr);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(writer->durable_sequence(), durable) << "durability moved after a failure";
  writer->stop();
  // What is on disk still reads as a valid (possibly torn) log.
  ScanReport report;
  read_all(dir.path(), &report);
  EXPECT_TRUE(report.ok()) << report.message;
  EXPECT_GE(report.next_sequence, durable + 1);
}

TEST(JournalWriter, FailedWriteStopsDurability) {
  expect_fails_on(FileOp::write, EIO, 1);
}
TEST(JournalWriter, FailedSyncStopsDurability) {
  expect_fails_on(FileOp::sync, EIO, 1);
}
TEST(JournalWriter, NoSpaceForANewSegmentStopsDurability) {
  // Open takes the first allocation; big records fill 2 MiB segments quickly.
  expect_fails_on(FileOp::allocate, ENOSPC, 8000);
}

}  // namespace
}  // namespace paygate::journal
