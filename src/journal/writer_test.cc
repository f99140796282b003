#include "journal/writer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>

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

// Commands whose every word is random: packing cannot shrink them.
std::vector<Command> random_commands(std::mt19937_64& rng, u32 count) {
  std::vector<Command> commands(count);
  for (Command& c : commands) {
    u64 words[8];
    for (u64& w : words)
      w = rng();
    std::memcpy(static_cast<void*>(&c), words, sizeof words);
  }
  return commands;
}

TEST(JournalWriter, RollsOverToNewSegmentsWithContinuousSequences) {
  for (u8 version = kFormatVersionOldest; version <= kFormatVersion; ++version) {
    SCOPED_TRACE(static_cast<int>(version));
    TempDir dir;
    std::mt19937_64 rng(version);
    std::vector<std::vector<Command>> written;
    {
      auto opened = Writer::open(test_writer_options(dir.path()), {{}, 0, 1});
      ASSERT_TRUE(opened.ok()) << opened.status().to_string();
      auto writer = std::move(opened).value();
      writer->start();
      // ~5,800 bytes per record, 2 MiB segments: several segments.
      u64 sequence = 1;
      for (int r = 0; r < 1200; ++r) {
        written.push_back(random_commands(rng, 90));
        while (!stage_commands(*writer, sequence, written.back(), 1000, version))
          std::this_thread::yield();
        sequence += 90;
      }
      ASSERT_TRUE(wait_durable(*writer, sequence - 1));
      writer->stop();
    }
    std::size_t index = 0;
    const ScanReport report = scan(dir.path(), 0, [&](const Record& r) {
      EXPECT_EQ(r.header->version, version);
      EXPECT_TRUE(std::equal(r.commands.begin(), r.commands.end(), written.at(index).begin(),
                             written.at(index).end()))
          << "record " << index;
      ++index;
      return true;
    });
    ASSERT_EQ(report.end, LogEnd::clean) << report.message;
    ASSERT_EQ(index, 1200u);
    ASSERT_GE(report.segments.size(), 3u);
    u64 expected = 1;
    for (const SegmentSummary& segment : report.segments) {
      EXPECT_EQ(segment.first_sequence, expected);
      expected += segment.records * 90;
    }
    EXPECT_EQ(list_segments(dir.path()).size(), report.segments.size());
  }
}

// An upgraded server appends version 2 records to a version 1 journal, in the same
// segment and in new ones; the reader reads both, each as it was written.
TEST(JournalWriter, VersionTwoRecordsFollowVersionOneInOneJournal) {
  TempDir dir;
  write_journal(dir.path(), 300, 90, 1);  // 27,000 commands, about 1.7 MB: one segment
  {
    // As version 1 wrote it: its segment header too.
    SegmentHeader identity = test_writer_options(dir.path()).identity;
    identity.format_version = 1;
    unsigned char header[record_bytes_max(RecordType::segment_header, 0)];
    RecordEncoder encoder(header, RecordType::segment_header, 1, 0, 0, 1);
    encoder.append_identity(identity);
    const u32 length = encoder.finish();
    std::fstream file(list_segments(dir.path()).at(0),
                      std::ios::in | std::ios::out | std::ios::binary);
    file.write(reinterpret_cast<const char*>(header), length);
  }
  ScanReport before;
  read_all(dir.path(), &before);
  ASSERT_EQ(before.end, LogEnd::clean) << before.message;
  ASSERT_EQ(before.segments.size(), 1u);
  {
    auto opened = Writer::open(test_writer_options(dir.path()),
                               {before.file, before.offset, before.next_sequence});
    ASSERT_TRUE(opened.ok()) << opened.status().to_string();
    auto writer = std::move(opened).value();
    writer->start();
    std::mt19937_64 rng(3);
    u64 sequence = before.next_sequence;
    for (int r = 0; r < 100; ++r) {  // enough to open a second segment
      while (!stage_commands(*writer, sequence, random_commands(rng, 90)))
        std::this_thread::yield();
      sequence += 90;
    }
    ASSERT_TRUE(wait_durable(*writer, sequence - 1));
    writer->stop();
  }
  u64 v1 = 0;
  u64 v2 = 0;
  const ScanReport after = scan(dir.path(), 0, [&](const Record& r) {
    if (r.header->version == 1) {
      ++v1;
      EXPECT_EQ(v2, 0u) << "a version 1 record after a version 2 one";
      EXPECT_EQ(std::vector<Command>(r.commands.begin(), r.commands.end()),
                numbered_commands(r.header->sequence, r.header->count));
    } else {
      ++v2;
    }
    return true;
  });
  EXPECT_EQ(after.end, LogEnd::clean) << after.message;
  EXPECT_EQ(after.identity.format_version, 1u);
  EXPECT_EQ(v1, 300u);
  EXPECT_EQ(v2, 100u);
  EXPECT_GE(after.segments.size(), 2u);
  EXPECT_EQ(after.next_sequence, 1 + 400u * 90);
}

TEST(JournalWriter, GroupCommitSyncsManyRecordsAtOnce) {
  TempDir dir;
  auto opened = Writer::open(test_writer_options(dir.path()), {{}, 0, 1});
  ASSERT_TRUE(opened.ok()) << opened.status().to_string();
  auto writer = std::move(opened).value();
  writer->start();
  for (u64 s = 1; s <= 20000; ++s) {
    while (!stage(*writer, s, 1))
      std::this_thread::yield();
  }
  ASSERT_TRUE(wait_durable(*writer, 20000));
  writer->stop();
  // 20,000 records, each needing fdatasync before it counts, in far fewer syncs.
  EXPECT_LT(writer->sync_ns().count(), 20000u / 4) << "syncs: " << writer->sync_ns().count();
  EXPECT_GT(writer->write_bytes().percentile(0.5), record_bytes_max(RecordType::commands, 1));
}

// With a sync gap, a steady stream of records is made durable in about one sync per
// gap, and every record still becomes durable. The bound allows two per gap: when
// the stager happens to lag (a loaded machine), a sync ends with nothing queued and
// the next record is synced at once. Without the gap this stream takes hundreds.
TEST(JournalWriter, SyncGapBoundsTheSyncRate) {
  TempDir dir;
  WriterOptions options = test_writer_options(dir.path());
  options.sync_gap_ns = 20'000'000;  // 20 ms
  auto opened = Writer::open(options, {{}, 0, 1});
  ASSERT_TRUE(opened.ok()) << opened.status().to_string();
  auto writer = std::move(opened).value();
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
  auto opened = Writer::open(options, {{}, 0, 1});
  ASSERT_TRUE(opened.ok()) << opened.status().to_string();
  auto writer = std::move(opened).value();
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

// Opens a writer whose first sync takes 30 ms, stages a record, and another during
// that sync: when it ends, the writer is in its gap with the second one staged.
std::unique_ptr<Writer> writer_in_its_gap(WriterOptions options, std::atomic<int>* slow_syncs) {
  slow_syncs->store(1);
  options.fault = [slow_syncs](FileOp op) {
    if (op == FileOp::sync && slow_syncs->fetch_sub(1) > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(30));
    }
    return 0;
  };
  auto opened = Writer::open(options, {{}, 0, 1});
  EXPECT_TRUE(opened.ok()) << opened.status().to_string();
  if (!opened.ok()) return nullptr;
  auto writer = std::move(opened).value();
  writer->start();
  EXPECT_TRUE(stage(*writer, 1, 1));
  while (!writer->syncing() && writer->durable_sequence() == 0)
    std::this_thread::yield();
  EXPECT_TRUE(stage(*writer, 2, 1));
  EXPECT_TRUE(wait_durable(*writer, 1));
  return writer;
}

// Under load the gap ends early once sync_gap_commands are staged: a big batch is
// synced at once, not held for the rest of a (here very long) gap.
TEST(JournalWriter, SyncGapEndsOnceEnoughCommandsWait) {
  TempDir dir;
  WriterOptions options = test_writer_options(dir.path());
  options.sync_gap_ns = 3'000'000'000;  // 3 s
  options.sync_gap_commands = 100;
  std::atomic<int> slow_syncs{0};
  auto writer = writer_in_its_gap(options, &slow_syncs);
  ASSERT_NE(writer, nullptr);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_EQ(writer->durable_sequence(), 1u) << "the second record should wait out the gap";
  const auto started = std::chrono::steady_clock::now();
  ASSERT_TRUE(stage(*writer, 3, 150));
  ASSERT_TRUE(wait_durable(*writer, 152));
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(1));
  writer->stop();
}

// The gap also ends once nothing more comes for sync_gap_quiet_ns: clients that each
// wait for their answer are all waiting, and the rest of the gap would only delay them.
TEST(JournalWriter, SyncGapEndsWhenNothingMoreComes) {
  TempDir dir;
  WriterOptions options = test_writer_options(dir.path());
  options.sync_gap_ns = 3'000'000'000;    // 3 s
  options.sync_gap_quiet_ns = 5'000'000;  // 5 ms
  std::atomic<int> slow_syncs{0};
  const auto started = std::chrono::steady_clock::now();
  auto writer = writer_in_its_gap(options, &slow_syncs);
  ASSERT_NE(writer, nullptr);
  ASSERT_TRUE(wait_durable(*writer, 2));
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(1));
  writer->stop();
}

TEST(JournalWriter, ReopensAndAppendsWhereTheLogEnds) {
  TempDir dir;
  write_journal(dir.path(), 100, 2);
  ScanReport first;
  read_all(dir.path(), &first);
  auto opened = Writer::open(test_writer_options(dir.path()),
                             AppendPosition{first.file, first.offset, first.next_sequence});
  ASSERT_TRUE(opened.ok()) << opened.status().to_string();
  auto writer = std::move(opened).value();
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
  auto opened = Writer::open(options, {{}, 0, 1});
  ASSERT_TRUE(opened.ok()) << opened.status().to_string();
  auto writer = std::move(opened).value();
  writer->start();
  u64 sequence = 1;
  for (int i = 0; i < 4000 && !writer->failed(); ++i) {
    if (stage(*writer, sequence, records_per_stage)) sequence += records_per_stage;
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  ASSERT_TRUE(writer->failed());
  const u64 durable = writer->durable_sequence();
  EXPECT_LT(durable, sequence - 1);
  EXPECT_NE(writer->failure().message().find(std::strerror(error_number)), std::string::npos)
      << writer->failure().to_string();
  EXPECT_EQ(writer->reserve(record_bytes_max(RecordType::commands, 1)), nullptr);
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
