#include "journal/format.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "base/crc32c.h"

namespace paygate::journal {
namespace {

// Version 1 writes commands as they are.
TEST(JournalFormat, EncodedRecordHasHeaderBodyPaddingAndTrailer) {
  const Command tick = Command::make_tick().with_extra_hash(7);
  const IdempotencyKey key{11, 12};
  std::vector<unsigned char> out(record_bytes_max(RecordType::atomic, 1, 1), 0xCC);
  const u32 length =
      encode_record(out.data(), RecordType::atomic, 42, 99, std::span(&tick, 1), &key, 1);
  ASSERT_EQ(length, out.size());
  ASSERT_EQ(length % kRecordAlign, 0u);
  RecordHeader header;
  std::memcpy(&header, out.data(), sizeof header);
  EXPECT_EQ(header.length, length);
  EXPECT_EQ(header.sequence, 42u);
  EXPECT_EQ(header.timestamp_ns, 99u);
  EXPECT_EQ(header.type, RecordType::atomic);
  EXPECT_EQ(header.version, 1);
  EXPECT_EQ(header.count, 1u);
  EXPECT_EQ(header.crc, crc32c(out.data() + 4, length - 4));
  IdempotencyKey read_key;
  std::memcpy(&read_key, out.data() + sizeof header, sizeof read_key);
  EXPECT_EQ(read_key, key);
  Command read_command;
  std::memcpy(static_cast<void*>(&read_command), out.data() + sizeof header + sizeof key,
              sizeof read_command);
  EXPECT_EQ(read_command, tick);
  RecordTrailer trailer;
  std::memcpy(&trailer, out.data() + length - sizeof trailer, sizeof trailer);
  EXPECT_EQ(trailer.length, length);
  EXPECT_EQ(trailer.magic, kTrailerMagic);
  // Every byte was written (no 0xCC left from before).
  for (unsigned char b : out)
    EXPECT_NE(b, 0xCC);
}

// Version 2 packs them: a request's thousand alike holds take a byte each after the
// first, the record is zero-padded to its trailer, and nothing past it is touched.
TEST(JournalFormat, PackedRecordIsSmallAndEndsAtItsTrailer) {
  const std::vector<Command> holds(
      1000, Command::make_hold(AccountId{0x0103000000000007}, AccountId{0x0103000000000009}, 2500,
                               Currency::from("EUR"), 600));
  std::vector<unsigned char> out(record_bytes_max(RecordType::commands, 1000), 0xCC);
  ASSERT_EQ(out.size(), align_up(kRecordOverhead + 1000 * kPackedCommandBytesMax));
  const u32 length = encode_record(out.data(), RecordType::commands, 5, 6, holds);
  EXPECT_LE(length, kRecordOverhead + 40 + 999 + kRecordAlign);
  EXPECT_EQ(length % kRecordAlign, 0u);
  RecordHeader header;
  std::memcpy(&header, out.data(), sizeof header);
  EXPECT_EQ(header.version, kFormatVersion);
  EXPECT_EQ(header.length, length);
  EXPECT_EQ(header.count, 1000u);
  EXPECT_EQ(header.crc, crc32c(out.data() + 4, length - 4));
  RecordTrailer trailer;
  std::memcpy(&trailer, out.data() + length - sizeof trailer, sizeof trailer);
  EXPECT_EQ(trailer.length, length);
  EXPECT_EQ(trailer.magic, kTrailerMagic);
  for (u32 i = 0; i < length; ++i)
    ASSERT_NE(out[i], 0xCC) << i;
  std::vector<Command> read(1000);
  const std::size_t used =
      unpack_commands(out.data() + sizeof header, length - kRecordOverhead, 1000, read.data());
  ASSERT_GT(used, 0u);
  EXPECT_LT(length - kRecordOverhead - used, kRecordAlign);
  EXPECT_EQ(read, holds);
}

TEST(JournalFormat, PackedAtomicRecordKeepsItsKey) {
  const IdempotencyKey key{21, 22};
  const std::vector<Command> commands{Command::make_void(TransferId{77}),
                                      Command::make_post(TransferId{78}, 5)};
  std::vector<unsigned char> out(record_bytes_max(RecordType::atomic, 2));
  const u32 length = encode_record(out.data(), RecordType::atomic, 1, 2, commands, &key);
  IdempotencyKey read_key;
  std::memcpy(&read_key, out.data() + sizeof(RecordHeader), sizeof read_key);
  EXPECT_EQ(read_key, key);
  std::vector<Command> read(2);
  EXPECT_GT(unpack_commands(out.data() + sizeof(RecordHeader) + sizeof key,
                            length - kRecordOverhead - sizeof key, 2, read.data()),
            0u);
  EXPECT_EQ(read, commands);
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
  // An upgraded journal's new segments carry the new version: still the same ledger.
  SegmentHeader older = a;
  older.format_version = 1;
  EXPECT_TRUE(a.same_ledger(older));
}

// So is the order book's configuration; a segment from before orders (zeros) matches any.
TEST(JournalFormat, SegmentHeaderComparesTheOrderBookWhenBothHaveOne) {
  const LedgerConfig config{.prefix = {1, 2}};
  const SegmentHeader a = SegmentHeader::describe(config, 1u << 20);
  EXPECT_EQ(a.orders_max, config.orders_max);
  LedgerConfig other = config;
  other.orders_max += 1;
  EXPECT_FALSE(a.same_ledger(SegmentHeader::describe(other, 1u << 20)));
  other = config;
  other.order_final_retained_ns += kNanosPerSecond;
  EXPECT_FALSE(a.same_ledger(SegmentHeader::describe(other, 1u << 20)));
  SegmentHeader before = a;
  before.orders_max = 0;
  before.order_final_retained_s = 0;
  EXPECT_TRUE(a.same_ledger(before));
  EXPECT_TRUE(before.same_ledger(SegmentHeader::describe(other, 1u << 20)));
}

// The table of signatures is part of the ledger; a segment from before it (zeros)
// holds no signature keys and so matches any.
TEST(JournalFormat, SegmentHeaderComparesTheSignatureTableWhenBothHaveOne) {
  const LedgerConfig config{.prefix = {1, 2}};
  const SegmentHeader a = SegmentHeader::describe(config, 1u << 20);
  EXPECT_EQ(a.signature_keys_max, config.idempotency_keys_max);  // 0 means "as many"
  EXPECT_EQ(a.signature_window_ns, config.signature_window_ns);
  LedgerConfig other = config;
  other.signature_keys_max = 5;
  EXPECT_FALSE(a.same_ledger(SegmentHeader::describe(other, 1u << 20)));
  other = config;
  other.signature_window_ns += kNanosPerSecond;
  EXPECT_FALSE(a.same_ledger(SegmentHeader::describe(other, 1u << 20)));
  SegmentHeader before = a;
  before.signature_keys_max = 0;
  before.signature_window_ns = 0;
  EXPECT_TRUE(a.same_ledger(before));
  EXPECT_TRUE(before.same_ledger(SegmentHeader::describe(other, 1u << 20)));
}

}  // namespace
}  // namespace paygate::journal
