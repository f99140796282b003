// The journal reader's verdicts, after LevelDB's log_test: what a torn tail is, and
// what is corruption.
#include "journal/reader.h"

#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <fstream>

#include "base/temp_dir.h"
#include "journal/journal_test_support.h"

namespace paygate::journal {
namespace {

// Offsets of every record in the (single-segment) journal's first file.
std::vector<u64> record_offsets(const std::filesystem::path& dir) {
  std::vector<u64> offsets;
  scan(dir, 0, [&](const Record& r) {
    offsets.push_back(r.offset);
    return true;
  });
  return offsets;
}

void modify(const std::filesystem::path& file, u64 offset,
            const std::vector<unsigned char>& bytes) {
  const int fd = ::open(file.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset)),
            static_cast<ssize_t>(bytes.size()));
  ::close(fd);
}
void flip_byte(const std::filesystem::path& file, u64 offset) {
  std::ifstream in(file, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(offset));
  const unsigned char old = static_cast<unsigned char>(in.get());
  modify(file, offset, {static_cast<unsigned char>(old ^ 0x01)});
}
void zero(const std::filesystem::path& file, u64 offset, u64 count) {
  modify(file, offset, std::vector<unsigned char>(count, 0));
}

class JournalReader : public ::testing::Test {
 protected:
  void SetUp() override {
    write_journal(dir_.path(), 20, 2);  // sequences 1..40, one segment
    file_ = list_segments(dir_.path()).at(0);
    offsets_ = record_offsets(dir_.path());
    ASSERT_EQ(offsets_.size(), 20u);
  }
  u64 record_length() const { return record_bytes(RecordType::commands, 2); }
  std::vector<std::pair<u64, u32>> read(ScanReport* report) {
    return read_all(dir_.path(), report);
  }

  TempDir dir_;
  std::filesystem::path file_;
  std::vector<u64> offsets_;
};

TEST(JournalReaderEmpty, NoSegmentsIsAnEmptyCleanLog) {
  TempDir dir;
  ScanReport report;
  EXPECT_TRUE(read_all(dir.path(), &report).empty());
  EXPECT_EQ(report.end, LogEnd::clean);
  EXPECT_FALSE(report.has_identity);
  EXPECT_EQ(report.next_sequence, 0u);
}

TEST_F(JournalReader, CleanLogReadsEverything) {
  ScanReport report;
  EXPECT_EQ(read(&report).size(), 20u);
  EXPECT_EQ(report.end, LogEnd::clean);
  EXPECT_EQ(report.offset, offsets_.back() + record_length());
  EXPECT_EQ(report.next_sequence, 41u);
}

TEST_F(JournalReader, FromSequenceSkipsEarlierRecords) {
  std::vector<u64> sequences;
  const ScanReport report = scan(dir_.path(), 21, [&](const Record& r) {
    sequences.push_back(r.header->sequence);
    return true;
  });
  EXPECT_EQ(report.end, LogEnd::clean);
  ASSERT_EQ(sequences.size(), 10u);
  EXPECT_EQ(sequences.front(), 21u);
  // A start inside a record is a mismatch between snapshot and journal: refused.
  EXPECT_EQ(scan(dir_.path(), 22, nullptr).end, LogEnd::corrupt);
}

TEST_F(JournalReader, TruncatedLastRecordIsATornTail) {
  std::filesystem::resize_file(file_, offsets_.back() + record_length() / 2);
  ScanReport report;
  EXPECT_EQ(read(&report).size(), 19u);
  EXPECT_EQ(report.end, LogEnd::torn_tail) << report.message;
  EXPECT_EQ(report.file, file_);
  EXPECT_EQ(report.offset, offsets_.back());
  EXPECT_EQ(report.next_sequence, 39u);
  EXPECT_GT(report.clear_to, report.offset);
}

TEST_F(JournalReader, LastRecordMissingItsEndIsATornTail) {
  // The write stopped after the first 40 bytes of the record: the rest reads as zero.
  zero(file_, offsets_.back() + 40, record_length() - 40);
  ScanReport report;
  EXPECT_EQ(read(&report).size(), 19u);
  EXPECT_EQ(report.end, LogEnd::torn_tail) << report.message;
  EXPECT_EQ(report.offset, offsets_.back());
  EXPECT_EQ(report.clear_to, offsets_.back() + 40);
}

TEST_F(JournalReader, LastRecordWithOnlyPartOfItsHeaderIsATornTail) {
  zero(file_, offsets_.back() + 4, record_length() - 4);  // only the CRC was written
  ScanReport report;
  EXPECT_EQ(read(&report).size(), 19u);
  EXPECT_EQ(report.end, LogEnd::torn_tail) << report.message;
}

TEST_F(JournalReader, FlippedByteInTheMiddleIsCorruption) {
  flip_byte(file_, offsets_[10] + 50);
  ScanReport report;
  EXPECT_EQ(read(&report).size(), 10u);
  EXPECT_EQ(report.end, LogEnd::corrupt);
  EXPECT_EQ(report.offset, offsets_[10]);
  EXPECT_NE(report.message.find(file_.string()), std::string::npos) << report.message;
  EXPECT_NE(report.message.find("offset " + std::to_string(offsets_[10])), std::string::npos)
      << report.message;
  EXPECT_NE(report.message.find("checksum"), std::string::npos) << report.message;
}

// The last record is complete (its trailer is there) but wrong: that is not a torn
// write, and an acknowledged record must not be dropped silently.
TEST_F(JournalReader, FlippedByteInACompleteLastRecordIsCorruption) {
  flip_byte(file_, offsets_.back() + 40);
  ScanReport report;
  read(&report);
  EXPECT_EQ(report.end, LogEnd::corrupt) << report.message;
}

TEST_F(JournalReader, ZeroedRecordFollowedByValidRecordsIsCorruption) {
  zero(file_, offsets_[5] + 40, record_length() - 40);  // looks torn, but is not the end
  ScanReport report;
  EXPECT_EQ(read(&report).size(), 5u);
  EXPECT_EQ(report.end, LogEnd::corrupt) << report.message;
  EXPECT_NE(report.message.find("valid record follows"), std::string::npos) << report.message;
}

TEST_F(JournalReader, ImplausibleLengthIsCorruption) {
  modify(file_, offsets_.back() + 4, {0x07, 0x00, 0x00, 0x00});  // length 7
  ScanReport report;
  read(&report);
  EXPECT_EQ(report.end, LogEnd::corrupt) << report.message;
}

TEST_F(JournalReader, GapInSequencesIsCorruption) {
  // Rewrite record 10 with a sequence further on, CRC and all.
  const auto commands = numbered_commands(99, 2);
  std::vector<unsigned char> bytes(record_length());
  encode_record(bytes.data(), RecordType::commands, 99, 1000, 2, commands.data(),
                2 * sizeof(Command));
  modify(file_, offsets_[10], bytes);
  ScanReport report;
  EXPECT_EQ(read(&report).size(), 10u);
  EXPECT_EQ(report.end, LogEnd::corrupt);
  EXPECT_NE(report.message.find("sequence 99 where 21 was expected"), std::string::npos)
      << report.message;
}

TEST_F(JournalReader, EmptySegmentAfterTheLastIsATornTailToDelete) {
  const std::filesystem::path extra = dir_.path() / segment_file_name(41);
  std::ofstream(extra).put('\0');
  std::filesystem::resize_file(extra, kTestSegmentBytes);
  ScanReport report;
  EXPECT_EQ(read(&report).size(), 20u);
  EXPECT_EQ(report.end, LogEnd::torn_tail) << report.message;
  ASSERT_EQ(report.delete_files.size(), 1u);
  EXPECT_EQ(report.delete_files[0], extra);
}

TEST_F(JournalReader, BadRecordWithRecordsInALaterSegmentIsCorruption) {
  // Copy the whole segment to a later name: a valid header and records at 41...
  const std::filesystem::path later = dir_.path() / segment_file_name(41);
  std::filesystem::copy_file(file_, later);
  // ...then tear the last record of the first: not a tail, since records follow.
  zero(file_, offsets_.back() + 40, record_length() - 40);
  ScanReport report;
  read(&report);
  EXPECT_EQ(report.end, LogEnd::corrupt) << report.message;
}

TEST_F(JournalReader, SegmentNamedForTheWrongSequenceIsCorruption) {
  std::filesystem::rename(file_, dir_.path() / segment_file_name(7));
  ScanReport report;
  read(&report);
  EXPECT_EQ(report.end, LogEnd::corrupt) << report.message;
}

}  // namespace
}  // namespace paygate::journal
