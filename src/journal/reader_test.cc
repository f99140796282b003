// The journal reader's verdicts, after LevelDB's log_test: what a torn tail is, and
// what is corruption.
#include "journal/reader.h"

#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <optional>

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
    ASSERT_EQ(header_.version, kFormatVersion);  // packed
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

// Annotations (format.h): text a request carried, journaled just before the record of
// its commands, given back with that record.
class JournalAnnotations : public ::testing::Test {
 protected:
  // Stages the annotations records, then one commands record at `sequence`.
  static void stage_annotated(Writer& writer, u64 sequence, u32 count,
                              const std::vector<Annotation>& annotations,
                              u32 record_max = kRecordBytesMax) {
    const std::vector<Command> commands = numbered_commands(sequence, count);
    const u64 bytes = annotation_records_bytes(annotations, record_max) +
                      record_bytes_max(RecordType::commands, count);
    unsigned char* out = writer.reserve(static_cast<u32>(bytes));
    ASSERT_NE(out, nullptr);
    u64 records = 0;
    u32 length =
        encode_annotations(out, sequence, sequence, 1000, annotations, record_max, &records);
    length += encode_record(out + length, RecordType::commands, sequence, 1000, commands);
    writer.commit(length, sequence + count - 1);
  }
  std::unique_ptr<Writer> open_writer(const WriterOptions& options) {
    auto opened = Writer::open(options, AppendPosition{{}, 0, 1});
    EXPECT_TRUE(opened.ok()) << opened.status().to_string();
    std::unique_ptr<Writer> writer = std::move(opened).value();
    writer->start();
    return writer;
  }
  struct Seen {
    u64 record_sequence;
    u64 sequence;
    AnnotationKind kind;
    std::string text;
    bool operator==(const Seen&) const = default;
  };
  static std::vector<Seen> annotations_in(const std::filesystem::path& dir, ScanReport* report) {
    std::vector<Seen> seen;
    *report = scan(dir, 0, [&](const Record& r) {
      for (const AnnotationView& a : r.annotations)
        seen.push_back({r.header->sequence, a.sequence, a.kind, std::string(a.text)});
      return true;
    });
    return seen;
  }

  TempDir dir_;
};

TEST_F(JournalAnnotations, AreGivenBackWithTheRecordOfTheirCommands) {
  const std::string metadata = R"({"order":"A-1","note":"quote \" and \u0000"})";
  const std::string binary("a\0b\xff", 4);
  const std::string long_text(3000, 'x');
  {
    std::unique_ptr<Writer> writer = open_writer(test_writer_options(dir_.path()));
    stage(*writer, 1, 2);  // none
    stage_annotated(*writer, 3, 3,
                    {{0, AnnotationKind::reference, "ref-1"},
                     {0, AnnotationKind::metadata, metadata},
                     {2, AnnotationKind::reference, binary},
                     {2, AnnotationKind::description, ""}});
    // Split over several records of at most 1 KiB each: three long texts, one each.
    stage_annotated(*writer, 6, 1,
                    {{0, AnnotationKind::ipn_url, long_text.substr(0, 900)},
                     {0, AnnotationKind::callback_url, long_text.substr(0, 901)},
                     {0, static_cast<AnnotationKind>(77), "a kind from a later version"}},
                    1024);
    ASSERT_TRUE(wait_durable(*writer, 6));
    writer->stop();
  }
  ScanReport report;
  const std::vector<Seen> seen = annotations_in(dir_.path(), &report);
  EXPECT_EQ(report.end, LogEnd::clean) << report.message;
  EXPECT_EQ(report.records, 3u);  // command records: annotations are not counted there
  EXPECT_EQ(report.commands, 6u);
  EXPECT_EQ(report.annotations, 7u);
  EXPECT_EQ(report.next_sequence, 7u);
  const std::vector<Seen> expected{
      {3, 3, AnnotationKind::reference, "ref-1"},
      {3, 3, AnnotationKind::metadata, metadata},
      {3, 5, AnnotationKind::reference, binary},
      {3, 5, AnnotationKind::description, ""},
      {6, 6, AnnotationKind::ipn_url, long_text.substr(0, 900)},
      {6, 6, AnnotationKind::callback_url, long_text.substr(0, 901)},
      {6, 6, static_cast<AnnotationKind>(77), "a kind from a later version"},
  };
  EXPECT_EQ(seen, expected);
  // A scan from a later sequence skips what was said about the records before it.
  std::vector<Seen> later;
  scan(dir_.path(), 6, [&](const Record& r) {
    for (const AnnotationView& a : r.annotations)
      later.push_back({r.header->sequence, a.sequence, a.kind, std::string(a.text)});
    return true;
  });
  EXPECT_EQ(later, std::vector<Seen>(expected.begin() + 4, expected.end()));
}

TEST_F(JournalAnnotations, WithoutTheirCommandsAreATornTailThatRecoveryClears) {
  {
    std::unique_ptr<Writer> writer = open_writer(test_writer_options(dir_.path()));
    stage(*writer, 1, 2);
    stage_annotated(*writer, 3, 1, {{0, AnnotationKind::reference, "never acknowledged"}});
    ASSERT_TRUE(wait_durable(*writer, 3));
    writer->stop();
  }
  const std::filesystem::path file = list_segments(dir_.path()).at(0);
  u64 annotated_at = 0;
  u32 commands_length = 0;
  ScanReport report = scan(dir_.path(), 0, [&](const Record& r) {
    if (!r.annotations.empty()) {
      annotated_at = r.offset;
      commands_length = r.header->length;
    }
    return true;
  });
  ASSERT_GT(annotated_at, 0u);
  // The commands' page never reached the disk; the annotations' did.
  zero(file, annotated_at, commands_length);
  ScanReport torn;
  const std::vector<Seen> seen = annotations_in(dir_.path(), &torn);
  EXPECT_TRUE(seen.empty());
  EXPECT_EQ(torn.end, LogEnd::torn_tail) << torn.message;
  EXPECT_NE(torn.message.find("annotations whose commands were never written"), std::string::npos)
      << torn.message;
  EXPECT_EQ(torn.next_sequence, 3u);
  EXPECT_EQ(torn.file, file);
  EXPECT_LT(torn.offset, annotated_at);  // where the annotations start
  EXPECT_GE(torn.clear_to, annotated_at);
  ASSERT_EQ(torn.segments.size(), 1u);
  EXPECT_EQ(torn.segments[0].end_offset, torn.offset);
  // Once cleared, the next command at that sequence carries nothing of theirs.
  zero(file, torn.offset, torn.clear_to - torn.offset);
  {
    auto opened = Writer::open(test_writer_options(dir_.path()),
                               AppendPosition{file, torn.offset, torn.next_sequence});
    ASSERT_TRUE(opened.ok()) << opened.status().to_string();
    std::unique_ptr<Writer> writer = std::move(opened).value();
    writer->start();
    stage(*writer, 3, 1);
    ASSERT_TRUE(wait_durable(*writer, 3));
    writer->stop();
  }
  ScanReport after;
  EXPECT_TRUE(annotations_in(dir_.path(), &after).empty());
  EXPECT_EQ(after.end, LogEnd::clean) << after.message;
  EXPECT_EQ(after.next_sequence, 4u);
}

TEST_F(JournalAnnotations, NamingACommandPastTheirRecordIsCorruption) {
  {
    std::unique_ptr<Writer> writer = open_writer(test_writer_options(dir_.path()));
    // Written whole, checksums holding: only a writer's bug makes this.
    stage_annotated(*writer, 1, 2, {{2, AnnotationKind::reference, "names sequence 3"}});
    stage(*writer, 3, 1);
    ASSERT_TRUE(wait_durable(*writer, 3));
    writer->stop();
  }
  ScanReport report;
  annotations_in(dir_.path(), &report);
  EXPECT_EQ(report.end, LogEnd::corrupt) << report.message;
  EXPECT_NE(report.message.find("past this record"), std::string::npos) << report.message;
}

TEST_F(JournalAnnotations, ABadEntryIsCorruption) {
  {
    std::unique_ptr<Writer> writer = open_writer(test_writer_options(dir_.path()));
    stage_annotated(*writer, 1, 1, {{0, AnnotationKind::reference, "abc"}});
    ASSERT_TRUE(wait_durable(*writer, 1));
    writer->stop();
  }
  // The annotations record follows the segment header; its entry's text length grows
  // past the record, with a checksum that holds.
  const std::filesystem::path file = list_segments(dir_.path()).at(0);
  const u64 at = record_bytes_max(RecordType::segment_header, 0);
  std::vector<unsigned char> bytes(align_up(kRecordOverhead + annotation_bytes(3)));
  {
    std::ifstream in(file, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(at));
    in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
  RecordHeader header;
  std::memcpy(&header, bytes.data(), sizeof header);
  ASSERT_EQ(header.type, RecordType::annotations);
  ASSERT_EQ(header.length, bytes.size());
  const u32 length = 64;
  std::memcpy(bytes.data() + sizeof(RecordHeader) + offsetof(AnnotationEntry, length), &length,
              sizeof length);
  const u32 crc = crc32c(bytes.data() + 4, static_cast<u32>(bytes.size()) - 4);
  std::memcpy(bytes.data(), &crc, sizeof crc);
  modify(file, at, bytes);
  ScanReport report;
  annotations_in(dir_.path(), &report);
  EXPECT_EQ(report.end, LogEnd::corrupt) << report.message;
  EXPECT_NE(report.message.find("runs past its record"), std::string::npos) << report.message;
}

TEST_F(JournalAnnotations, GoIntoTheSegmentOfTheirCommands) {
  WriterOptions options = test_writer_options(dir_.path());
  options.segment_bytes = 4096;
  options.record_bytes_max = 1024;
  options.identity = SegmentHeader::describe(test_ledger_config(), options.segment_bytes);
  const u64 header_bytes = record_bytes_max(RecordType::segment_header, 0);
  const std::vector<Command> one = numbered_commands(1, 1);
  std::vector<unsigned char> probe(record_bytes_max(RecordType::commands, 1));
  const u64 record = encode_record(probe.data(), RecordType::commands, 1, 1000, one);
  // Records of one command until the annotations alone would still fit, but not with
  // the record of their command after them.
  const u64 records = (options.segment_bytes - header_bytes - 600) / record;
  const u64 room = options.segment_bytes - header_bytes - records * record;
  ASSERT_GT(room, kRecordOverhead + annotation_bytes(0));
  ASSERT_LT(room, options.record_bytes_max);
  const std::string text(room - kRecordOverhead - sizeof(AnnotationEntry), 't');
  ASSERT_EQ(annotation_records_bytes({{{0, AnnotationKind::metadata, text}}}, 1024), room);
  {
    std::unique_ptr<Writer> writer = open_writer(options);
    for (u64 s = 1; s <= records; ++s)
      stage(*writer, s, 1);
    stage_annotated(*writer, records + 1, 1, {{0, AnnotationKind::metadata, text}}, 1024);
    ASSERT_TRUE(wait_durable(*writer, records + 1));
    writer->stop();
  }
  std::filesystem::path annotated_file;
  ScanReport report = scan(dir_.path(), 0, [&](const Record& r) {
    if (!r.annotations.empty()) annotated_file = *r.file;
    return true;
  });
  EXPECT_EQ(report.end, LogEnd::clean) << report.message;
  ASSERT_EQ(report.segments.size(), 2u);
  EXPECT_EQ(report.segments[0].end_offset, header_bytes + records * record);  // not in the first
  EXPECT_EQ(annotated_file, report.segments[1].file);
  EXPECT_EQ(report.annotations, 1u);
}

// A follower reads a growing journal piece by piece, each scan starting just after
// the last command record the one before visited: together they see what one scan
// sees, annotations included, across segments.
TEST_F(JournalAnnotations, AScanContinuesWhereTheLastOneStopped) {
  WriterOptions options = test_writer_options(dir_.path());
  options.segment_bytes = 4096;
  options.record_bytes_max = 1024;
  options.identity = SegmentHeader::describe(test_ledger_config(), options.segment_bytes);
  u64 sequence = 1;
  {
    std::unique_ptr<Writer> writer = open_writer(options);
    for (u32 r = 0; r < 120; ++r) {
      if (r % 3 == 0) {
        stage_annotated(*writer, sequence, 2,
                        {{1, AnnotationKind::reference, "r" + std::to_string(r)}}, 1024);
      } else {
        stage(*writer, sequence, 2);
      }
      sequence += 2;
    }
    ASSERT_TRUE(wait_durable(*writer, sequence - 1));
    writer->stop();
  }
  ASSERT_GE(list_segments(dir_.path()).size(), 3u);
  std::vector<Seen> whole;
  const ScanReport all = scan(dir_.path(), 0, [&](const Record& r) {
    for (const AnnotationView& a : r.annotations)
      whole.push_back({r.header->sequence, a.sequence, a.kind, std::string(a.text)});
    return true;
  });
  ASSERT_EQ(all.end, LogEnd::clean) << all.message;
  ASSERT_EQ(whole.size(), 40u);

  std::vector<Seen> pieces;
  std::optional<ScanStart> start;
  u64 next = 1;  // the next sequence to see
  for (u64 limit = 7; next < sequence; limit += 23) {
    const ScanReport piece = scan(
        dir_.path(), 0,
        [&](const Record& r) {
          if (r.header->sequence > limit) return false;  // not known to be durable yet
          EXPECT_EQ(r.header->sequence, next);
          for (const AnnotationView& a : r.annotations)
            pieces.push_back({r.header->sequence, a.sequence, a.kind, std::string(a.text)});
          next = r.next_sequence();
          start = ScanStart{*r.file, r.offset + r.header->length, r.next_sequence()};
          return true;
        },
        start ? &*start : nullptr);
    ASSERT_NE(piece.end, LogEnd::corrupt) << piece.message;
  }
  EXPECT_EQ(next, sequence);
  EXPECT_EQ(pieces, whole);
  // A start whose segment is gone is refused, not read from elsewhere.
  const ScanStart gone{dir_.path() / segment_file_name(999), 112, 999};
  EXPECT_EQ(scan(dir_.path(), 0, nullptr, &gone).end, LogEnd::corrupt);
}

}  // namespace
}  // namespace paygate::journal
