#include "journal/writer.h"

#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
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

// Whether any extent of the file is allocated but unwritten (fallocate's), so that
// the first write there makes fdatasync commit metadata. nullopt: the file system
// cannot say (no FIEMAP).
std::optional<bool> has_unwritten_extents(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  constexpr u32 kExtents = 64;
  std::vector<unsigned char> buffer(sizeof(fiemap) + kExtents * sizeof(fiemap_extent));
  std::optional<bool> unwritten = false;
  u64 start = 0;
  for (;;) {
    std::fill(buffer.begin(), buffer.end(), 0);
    auto* map = reinterpret_cast<fiemap*>(buffer.data());
    map->fm_start = start;
    map->fm_length = FIEMAP_MAX_OFFSET;
    map->fm_flags = FIEMAP_FLAG_SYNC;
    map->fm_extent_count = kExtents;
    if (::ioctl(fd, FS_IOC_FIEMAP, map) != 0) {
      unwritten = std::nullopt;
      break;
    }
    if (map->fm_mapped_extents == 0) break;
    bool last = false;
    for (u32 i = 0; i < map->fm_mapped_extents; ++i) {
      const fiemap_extent& extent = map->fm_extents[i];
      if ((extent.fe_flags & FIEMAP_EXTENT_UNWRITTEN) != 0) unwritten = true;
      if ((extent.fe_flags & FIEMAP_EXTENT_LAST) != 0) last = true;
      start = extent.fe_logical + extent.fe_length;
    }
    if (last) break;
  }
  ::close(fd);
  return unwritten;
}

bool wait_prepared(const Writer& writer) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!writer.segment_prepared()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// ~5,800 bytes per record of random commands: 2 MiB segments roll over every ~360.
u64 fill_segments(Writer& writer, u64 sequence, int records) {
  std::mt19937_64 rng(sequence);
  for (int r = 0; r < records; ++r) {
    const std::vector<Command> commands = random_commands(rng, 90);
    while (!stage_commands(writer, sequence, commands))
      std::this_thread::yield();
    sequence += 90;
  }
  return sequence;
}

TEST(JournalWriter, RollOverTakesTheSegmentPreparedAheadWithWrittenZeros) {
  TempDir dir;
  const std::filesystem::path prepared = dir.path() / kPreparedSegmentName;
  WriterOptions options = test_writer_options(dir.path());
  options.prepare_segments = true;
  auto opened = Writer::open(options, {{}, 0, 1});
  ASSERT_TRUE(opened.ok()) << opened.status().to_string();
  auto writer = std::move(opened).value();
  writer->start();
  const std::filesystem::path first = writer->current_file();
  const std::optional<bool> first_unwritten = has_unwritten_extents(first);

  // Under half a segment (~5,800-byte records, 2 MiB segments): nothing is prepared.
  u64 sequence = fill_segments(*writer, 1, 150);
  ASSERT_TRUE(wait_durable(*writer, sequence - 1));
  EXPECT_FALSE(writer->segment_prepared());
  EXPECT_FALSE(std::filesystem::exists(prepared)) << "prepared before half the segment was used";
  // Past half: the next segment is prepared, at full size.
  sequence = fill_segments(*writer, sequence, 50);
  ASSERT_TRUE(wait_durable(*writer, sequence - 1));
  ASSERT_TRUE(wait_prepared(*writer)) << "the preparer made no segment within 60 s";
  EXPECT_EQ(std::filesystem::file_size(prepared), kTestSegmentBytes);
  EXPECT_EQ(writer->segments_created(), 1u);

  // Past the first segment: the roll-over takes the prepared one, named as a segment.
  sequence = fill_segments(*writer, sequence, 200);
  ASSERT_TRUE(wait_durable(*writer, sequence - 1));
  ASSERT_EQ(writer->segments_created(), 2u);
  EXPECT_EQ(writer->segments_prepared(), 1u);
  EXPECT_EQ(writer->prepare_failures(), 0u);
  EXPECT_FALSE(std::filesystem::exists(prepared));
  const std::filesystem::path second = writer->current_file();
  EXPECT_NE(second, first);
  EXPECT_EQ(std::filesystem::file_size(second), kTestSegmentBytes);
  if (!first_unwritten.has_value()) {
    GTEST_LOG_(INFO) << "this file system does not answer FIEMAP: extents not checked";
  } else {
    // The allocated first segment had unwritten extents; the prepared one has none.
    EXPECT_TRUE(*first_unwritten) << "fallocate left written extents: the check cannot tell";
    EXPECT_EQ(has_unwritten_extents(second), false);
  }
  // Half of the second segment: the next is prepared again, and taken in turn.
  sequence = fill_segments(*writer, sequence, 200);
  ASSERT_TRUE(wait_durable(*writer, sequence - 1));
  ASSERT_TRUE(wait_prepared(*writer));
  sequence = fill_segments(*writer, sequence, 200);
  ASSERT_TRUE(wait_durable(*writer, sequence - 1));
  EXPECT_EQ(writer->segments_created(), 3u);
  EXPECT_EQ(writer->segments_prepared(), 2u);
  writer->stop();
  ScanReport report;
  read_all(dir.path(), &report);
  EXPECT_EQ(report.end, LogEnd::clean) << report.message;
  EXPECT_EQ(report.next_sequence, sequence);
  EXPECT_EQ(list_segments(dir.path()).size(), 3u) << "the prepared file is not a segment";
}

TEST(JournalWriter, WithoutItsThreadsARollOverPreparesInlineAndAFailedPreparationAllocates) {
  TempDir dir;
  const std::filesystem::path prepared = dir.path() / kPreparedSegmentName;
  { std::ofstream(prepared) << "left by an earlier run"; }
  std::atomic<int> allocations{0};
  std::atomic<bool> fail_next_allocation{false};
  WriterOptions options = test_writer_options(dir.path());
  options.prepare_segments = true;
  options.fault = [&](FileOp op) {
    if (op != FileOp::allocate) return 0;
    ++allocations;
    return fail_next_allocation.exchange(false) ? ENOSPC : 0;
  };
  auto opened = Writer::open(options, {{}, 0, 1});
  ASSERT_TRUE(opened.ok()) << opened.status().to_string();
  auto writer = std::move(opened).value();
  EXPECT_FALSE(std::filesystem::exists(prepared)) << "an earlier run's prepared file stays";
  EXPECT_EQ(allocations.load(), 1);  // the first segment, allocated

  // One record per flush, on this thread: the roll-over prepares its segment itself.
  std::mt19937_64 rng(7);
  u64 sequence = 1;
  const auto write_records = [&](int records) {
    for (int r = 0; r < records; ++r) {
      ASSERT_TRUE(stage_commands(*writer, sequence, random_commands(rng, 90)));
      sequence += 90;
      ASSERT_TRUE(writer->flush());
    }
  };
  write_records(400);
  EXPECT_EQ(writer->segments_created(), 2u);
  EXPECT_EQ(writer->segments_prepared(), 1u);
  EXPECT_FALSE(std::filesystem::exists(prepared)) << "taken as soon as it was made";

  // A preparation that fails (no space for the zeros) leaves no file, and the
  // roll-over allocates its segment instead.
  fail_next_allocation = true;
  write_records(400);
  EXPECT_FALSE(writer->failed()) << writer->failure().to_string();
  EXPECT_EQ(writer->segments_created(), 3u);
  EXPECT_EQ(writer->segments_prepared(), 1u);
  EXPECT_EQ(writer->prepare_failures(), 1u);
  EXPECT_FALSE(std::filesystem::exists(prepared));
  EXPECT_EQ(writer->durable_sequence(), sequence - 1);
  writer.reset();
  ScanReport report;
  read_all(dir.path(), &report);
  EXPECT_EQ(report.end, LogEnd::clean) << report.message;
  EXPECT_EQ(report.next_sequence, sequence);
}

TEST(JournalWriter, WithoutPreparedSegmentsEveryRollOverAllocates) {
  TempDir dir;
  auto opened = Writer::open(test_writer_options(dir.path()), {{}, 0, 1});
  ASSERT_TRUE(opened.ok()) << opened.status().to_string();
  auto writer = std::move(opened).value();
  writer->start();
  const u64 sequence = fill_segments(*writer, 1, 400);
  ASSERT_TRUE(wait_durable(*writer, sequence - 1));
  EXPECT_EQ(writer->segments_created(), 2u);
  EXPECT_EQ(writer->segments_prepared(), 0u);
  EXPECT_FALSE(std::filesystem::exists(dir.path() / kPreparedSegmentName));
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
