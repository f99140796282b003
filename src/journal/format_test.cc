#include "journal/format.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "base/crc32c.h"

namespace paygate::journal {
namespace {

TEST(JournalFormat, EncodedRecordHasHeaderBodyPaddingAndTrailer) {
  const Command tick = Command::make_tick().with_extra_hash(7);
  const IdempotencyKey key{11, 12};
  std::vector<unsigned char> out(record_bytes(RecordType::atomic, 1), 0xCC);
  const u32 length = encode_record(out.data(), RecordType::atomic, 42, 99, 1, &key, sizeof key,
                                   &tick, sizeof tick);
  ASSERT_EQ(length, out.size());
  ASSERT_EQ(length % kRecordAlign, 0u);
  RecordHeader header;
  std::memcpy(&header, out.data(), sizeof header);
  EXPECT_EQ(header.length, length);
  EXPECT_EQ(header.sequence, 42u);
  EXPECT_EQ(header.timestamp_ns, 99u);
  EXPECT_EQ(header.type, RecordType::atomic);
  EXPECT_EQ(header.version, kFormatVersion);
  EXPECT_EQ(header.count, 1u);
  EXPECT_EQ(header.crc, crc32c(out.data() + 4, length - 4));
  IdempotencyKey read_key;
  std::memcpy(&read_key, out.data() + sizeof header, sizeof read_key);
  EXPECT_EQ(read_key, key);
  Command read_command;
  std::memcpy(&read_command, out.data() + sizeof header + sizeof key, sizeof read_command);
  EXPECT_EQ(read_command, tick);
  RecordTrailer trailer;
  std::memcpy(&trailer, out.data() + length - sizeof trailer, sizeof trailer);
  EXPECT_EQ(trailer.length, length);
  EXPECT_EQ(trailer.magic, kTrailerMagic);
  // Every byte was written (no 0xCC left from before).
  for (unsigned char b : out)
    EXPECT_NE(b, 0xCC);
}

TEST(JournalFormat, SegmentFileNames) {
  EXPECT_EQ(segment_file_name(1), "journal-00000000000000000001.seg");
  EXPECT_EQ(parse_segment_file_name(segment_file_name(1234567890123)), 1234567890123u);
  EXPECT_EQ(parse_segment_file_name("journal-0000000000000000001.seg"), 0u);
  EXPECT_EQ(parse_segment_file_name("journal-0000000000000000000x.seg"), 0u);
  EXPECT_EQ(parse_segment_file_name("journal-00000000000000000001.tmp"), 0u);
  EXPECT_EQ(parse_segment_file_name("snapshot-00000000000000000001.snap"), 0u);
}

TEST(JournalFormat, SegmentHeaderComparesTheLedgerNotTheSegmentSize) {
  const LedgerConfig config{.prefix = {1, 2}};
  const SegmentHeader a = SegmentHeader::describe(config, 1u << 20);
  EXPECT_TRUE(a.same_ledger(SegmentHeader::describe(config, 2u << 20)));
  LedgerConfig other = config;
  other.pending_max -= 1;
  EXPECT_FALSE(a.same_ledger(SegmentHeader::describe(other, 1u << 20)));
}

}  // namespace
}  // namespace paygate::journal
