// The journal reader's verdicts, after LevelDB's log_test: what a torn tail is, and
// what is corruption.
#include "journal/reader.h"

#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "base/crc32c.h"

#include "base/temp_dir.h"
#include "journal/journal_test_support.h"

namespace paygate::journal {
namespace {

// Offsets of every record in the (single-segment) journal's first file.
std::vector<u64> record_offsets(const std::filesystem::path& dir, u32* length) {
  std::vector<u64> offsets;
  scan(dir, 0, [&](const Record& r) {
    offsets.push_back(r.offset);
    *length = r.header->length;
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

// Every verdict holds for each format version the reader reads (the parameter).
class JournalReader : public ::testing::TestWithParam<u8> {
 protected:
  void SetUp() override {
    write_journal(dir_.path(), 20, 2, GetParam());  // sequences 1..40, one segment
    file_ = list_segments(dir_.path()).at(0);
    offsets_ = record_offsets(dir_.path(), &record_length_);
    ASSERT_EQ(offsets_.size(), 20u);
    // Every record has the same length (the commands differ by one in a hash).
    ASSERT_EQ(offsets_[1] - offsets_[0], record_length_);
    if (GetParam() == 1) {
      ASSERT_EQ(record_length_, record_bytes_max(RecordType::commands, 2, 1));
    }
  }
  u64 record_length() const { return record_length_; }
  std::vector<std::pair<u64, u32>> read(ScanReport* report) {
    return read_all(dir_.path(), report);
  }

  TempDir dir_;
  std::filesystem::path file_;
  std::vector<u64> offsets_;
  u32 record_length_ = 0;
};

INSTANTIATE_TEST_SUITE_P(FormatVersions, JournalReader,
                         ::testing::Range<u8>(kFormatVersionOldest, kFormatVersion + 1),
                         [](const ::testing::TestParamInfo<u8>& version) {
                           return "v" + std::to_string(version.param);
                         });

TEST(JournalReaderEmpty, NoSegmentsIsAnEmptyCleanLog) {
  TempDir dir;
  ScanReport report;
  EXPECT_TRUE(read_all(dir.path(), &report).empty());
  EXPECT_EQ(report.end, LogEnd::clean);
  EXPECT_FALSE(report.has_identity);
  EXPECT_EQ(report.next_sequence, 0u);
}

TEST_P(JournalReader, CleanLogReadsEverything) {
  ScanReport report;
  EXPECT_EQ(read(&report).size(), 20u);
  EXPECT_EQ(report.end, LogEnd::clean);
  EXPECT_EQ(report.offset, offsets_.back() + record_length());
  EXPECT_EQ(report.next_sequence, 41u);
}

TEST_P(JournalReader, FromSequenceSkipsEarlierRecords) {
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

TEST_P(JournalReader, TruncatedLastRecordIsATornTail) {
  std::filesystem::resize_file(file_, offsets_.back() + record_length() / 2);
  ScanReport report;
  EXPECT_EQ(read(&report).size(), 19u);
  EXPECT_EQ(report.end, LogEnd::torn_tail) << report.message;
  EXPECT_EQ(report.file, file_);
  EXPECT_EQ(report.offset, offsets_.back());
  EXPECT_EQ(report.next_sequence, 39u);
  EXPECT_GT(report.clear_to, report.offset);
}

TEST_P(JournalReader, LastRecordMissingItsEndIsATornTail) {
  // The write stopped after the first 40 bytes of the record: the rest reads as zero.
  zero(file_, offsets_.back() + 40, record_length() - 40);
  ScanReport report;
  EXPECT_EQ(read(&report).size(), 19u);
  EXPECT_EQ(report.end, LogEnd::torn_tail) << report.message;
  EXPECT_EQ(report.offset, offsets_.back());
  EXPECT_EQ(report.clear_to, offsets_.back() + 40);
}

TEST_P(JournalReader, LastRecordWithOnlyPartOfItsHeaderIsATornTail) {
  zero(file_, offsets_.back() + 4, record_length() - 4);  // only the CRC was written
  ScanReport report;
  EXPECT_EQ(read(&report).size(), 19u);
  EXPECT_EQ(report.end, LogEnd::torn_tail) << report.message;
}

TEST_P(JournalReader, FlippedByteInTheMiddleIsCorruption) {
  flip_byte(file_, offsets_[10] + sizeof(RecordHeader) + 2);  // in the commands
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
TEST_P(JournalReader, FlippedByteInACompleteLastRecordIsCorruption) {
  flip_byte(file_, offsets_.back() + sizeof(RecordHeader) + 1);
  ScanReport report;
  read(&report);
  EXPECT_EQ(report.end, LogEnd::corrupt) << report.message;
}

// Damage to the last record's length field, of a complete record, is corruption too:
// a torn write is cut short from its end, so its trailer would be missing. Before
// the reader looked for the trailer, both of these read as torn writes and the
// acknowledged record was dropped (found while building the simulator's bit-flip
// check; with the fix taken out, the simulator catches it too: scripts/sim-mutations.sh).
TEST_P(JournalReader, ZeroedLengthOfACompleteLastRecordIsCorruption) {
  modify(file_, offsets_.back() + 4, {0x00, 0x00, 0x00, 0x00});
  ScanReport report;
  EXPECT_EQ(read(&report).size(), 19u);
  EXPECT_EQ(report.end, LogEnd::corrupt) << report.message;
  EXPECT_EQ(report.offset, offsets_.back());
}

// The pages of one write may reach the disk out of order before its fdatasync
// returns: the last record's trailer (and body) landed, its header did not (zeros).
// It was never acknowledged: a torn write, cleared, not corruption that stops the
// group from starting after an ordinary power cut.
TEST_P(JournalReader, LastRecordWhoseHeaderNeverLandedIsATornWrite) {
  zero(file_, offsets_.back(), sizeof(RecordHeader));
  ScanReport report;
  EXPECT_EQ(read(&report).size(), 19u);
  EXPECT_EQ(report.end, LogEnd::torn_tail) << report.message;
  EXPECT_EQ(report.offset, offsets_.back());
}

TEST_P(JournalReader, LongerLengthOfACompleteLastRecordIsCorruption) {
  // Past its own trailer, where the preallocated zeros begin.
  const u32 longer = record_length() + 2 * kRecordAlign;
  modify(file_, offsets_.back() + 4,
         {static_cast<unsigned char>(longer), static_cast<unsigned char>(longer >> 8),
          static_cast<unsigned char>(longer >> 16), static_cast<unsigned char>(longer >> 24)});
  ScanReport report;
  EXPECT_EQ(read(&report).size(), 19u);
  EXPECT_EQ(report.end, LogEnd::corrupt) << report.message;
}

TEST_P(JournalReader, ZeroedRecordFollowedByValidRecordsIsCorruption) {
  zero(file_, offsets_[5] + 40, record_length() - 40);  // looks torn, but is not the end
  ScanReport report;
  EXPECT_EQ(read(&report).size(), 5u);
  EXPECT_EQ(report.end, LogEnd::corrupt) << report.message;
  EXPECT_NE(report.message.find("valid record follows"), std::string::npos) << report.message;
}

TEST_P(JournalReader, ImplausibleLengthIsCorruption) {
  modify(file_, offsets_.back() + 4, {0x07, 0x00, 0x00, 0x00});  // length 7
  ScanReport report;
  read(&report);
  EXPECT_EQ(report.end, LogEnd::corrupt) << report.message;
}

TEST_P(JournalReader, GapInSequencesIsCorruption) {
  // Rewrite record 10 with a sequence further on, CRC and all.
  const auto commands = numbered_commands(99, 2);
  std::vector<unsigned char> bytes(record_bytes_max(RecordType::commands, 2, GetParam()));
  bytes.resize(
      encode_record(bytes.data(), RecordType::commands, 99, 1000, commands, nullptr, GetParam()));
  ASSERT_EQ(bytes.size(), record_length());
  modify(file_, offsets_[10], bytes);
  ScanReport report;
  EXPECT_EQ(read(&report).size(), 10u);
  EXPECT_EQ(report.end, LogEnd::corrupt);
  EXPECT_NE(report.message.find("sequence 99 where 21 was expected"), std::string::npos)
      << report.message;
}

TEST_P(JournalReader, EmptySegmentAfterTheLastIsATornTailToDelete) {
  const std::filesystem::path extra = dir_.path() / segment_file_name(41);
  std::ofstream(extra).put('\0');
  std::filesystem::resize_file(extra, kTestSegmentBytes);
  ScanReport report;
  EXPECT_EQ(read(&report).size(), 20u);
  EXPECT_EQ(report.end, LogEnd::torn_tail) << report.message;
  ASSERT_EQ(report.delete_files.size(), 1u);
  EXPECT_EQ(report.delete_files[0], extra);
}

TEST_P(JournalReader, BadRecordWithRecordsInALaterSegmentIsCorruption) {
  // Copy the whole segment to a later name: a valid header and records at 41...
  const std::filesystem::path later = dir_.path() / segment_file_name(41);
  std::filesystem::copy_file(file_, later);
  // ...then tear the last record of the first: not a tail, since records follow.
  zero(file_, offsets_.back() + 40, record_length() - 40);
  ScanReport report;
  read(&report);
  EXPECT_EQ(report.end, LogEnd::corrupt) << report.message;
}

TEST_P(JournalReader, SegmentNamedForTheWrongSequenceIsCorruption) {
  std::filesystem::rename(file_, dir_.path() / segment_file_name(7));
  ScanReport report;
  read(&report);
  EXPECT_EQ(report.end, LogEnd::corrupt) << report.message;
}

// A packed record whose checksum holds but whose body is not `count` commands and
// zero padding was written wrong: corruption, never a torn tail.
class JournalReaderPacked : public ::testing::Test {
 protected:
  void SetUp() override {
    write_journal(dir_.path(), 3, 2);
    file_ = list_segments(dir_.path()).at(0);
    offsets_ = record_offsets(dir_.path(), &length_);
    ASSERT_EQ(offsets_.size(), 3u);
    last_.resize(length_);
    std::ifstream in(file_, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(offsets_.back()));
    in.read(reinterpret_cast<char*>(last_.data()), length_);
    std::memcpy(&header_, last_.data(), sizeof header_);
    ASSERT_EQ(header_.version, 2);
  }
  // Writes the last record back as `bytes`, with a checksum that holds.
  ScanReport rewrite_last(std::vector<unsigned char> bytes) {
    const u32 crc = crc32c(bytes.data() + 4, length_ - 4);
    std::memcpy(bytes.data(), &crc, sizeof crc);
    modify(file_, offsets_.back(), bytes);
    ScanReport report;
    EXPECT_EQ(read_all(dir_.path(), &report).size(), 2u);
    return report;
  }

  TempDir dir_;
  std::filesystem::path file_;
  std::vector<u64> offsets_;
  u32 length_ = 0;
  std::vector<unsigned char> last_;
  RecordHeader header_{};
};

TEST_F(JournalReaderPacked, MoreCommandsCountedThanWrittenIsCorruption) {
  // Two more: a zero padding byte alone would read as one more repeated command.
  RecordHeader header = header_;
  header.count += 2;
  std::vector<unsigned char> bytes = last_;
  std::memcpy(bytes.data(), &header, sizeof header);
  const ScanReport report = rewrite_last(bytes);
  EXPECT_EQ(report.end, LogEnd::corrupt) << report.message;
  EXPECT_NE(report.message.find("do not decode"), std::string::npos) << report.message;
}

TEST_F(JournalReaderPacked, NonZeroPaddingIsCorruption) {
  // Two ticks numbered by a hash pack to 7 bytes: one byte of padding follows.
  const u32 padding_at = length_ - sizeof(RecordTrailer) - 1;
  ASSERT_EQ(length_, align_up(sizeof(RecordHeader) + 7 + sizeof(RecordTrailer)));
  std::vector<unsigned char> bytes = last_;
  ASSERT_EQ(bytes[padding_at], 0);
  bytes[padding_at] = 1;
  const ScanReport report = rewrite_last(bytes);
  EXPECT_EQ(report.end, LogEnd::corrupt) << report.message;
  EXPECT_NE(report.message.find("do not decode"), std::string::npos) << report.message;
}

}  // namespace
}  // namespace paygate::journal
