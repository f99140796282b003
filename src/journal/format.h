// The journal's on-disk format. docs/JOURNAL.md gives the same in prose; a change here
// is a new kFormatVersion.
//
// A group's journal is a directory of segment files, journal-<first sequence, 20
// digits>.seg, each preallocated to segment_bytes and zero beyond its last record.
// A segment is a sequence of records, each 8-byte aligned:
//
//   offset  size  field
//   0       4     crc        CRC-32C of bytes [4, length): the rest of the record
//   4       4     length     the whole record: header + body + padding + trailer
//   8       8     sequence   the first command's sequence (segment_header: the next one)
//   16      8     timestamp  the stamp's time, ns since the Unix epoch
//   24      1     type       RecordType
//   25      1     version    kFormatVersion
//   26      2     reserved   0
//   28      4     count      commands in the body
//   32      ...   body       by type (below), then zero padding to a multiple of 8
//   len-8   4     length     again: a record whose last 8 bytes are zero was torn
//   len-4   4     magic      kTrailerMagic
//
// Bodies:
//   segment_header  SegmentHeader (first record of every segment; count 0)
//   commands        count × Command (64 bytes each); command i has sequence + i
//   atomic          IdempotencyKey (16 bytes), then count × Command: one atomic batch
//
// Integers are little-endian (the only byte order paygate runs on).
#pragma once

#include <cstddef>

#include "base/types.h"
#include "ledger/command.h"
#include "ledger/ledger.h"

namespace paygate::journal {

inline constexpr u8 kFormatVersion = 1;
inline constexpr u32 kTrailerMagic = 0x45524750u;  // "PGRE"
inline constexpr u64 kSegmentMagic = tag8("PGJOURNL");
inline constexpr u32 kRecordAlign = 8;

enum class RecordType : u8 {
  segment_header = 1,
  commands = 2,
  atomic = 3,
};

struct RecordHeader {
  u32 crc;
  u32 length;
  u64 sequence;
  u64 timestamp_ns;
  RecordType type;
  u8 version;
  u16 reserved;
  u32 count;
};
static_assert(sizeof(RecordHeader) == 32);
static_assert(offsetof(RecordHeader, length) == 4 && offsetof(RecordHeader, sequence) == 8);
static_assert(offsetof(RecordHeader, timestamp_ns) == 16 && offsetof(RecordHeader, type) == 24);
static_assert(offsetof(RecordHeader, count) == 28);

struct RecordTrailer {
  u32 length;
  u32 magic;
};
static_assert(sizeof(RecordTrailer) == 8);

// Who wrote the journal and with what ledger capacities: a journal is only replayed
// into a ledger configured the same (results depend on the capacities).
struct SegmentHeader {
  u64 magic;
  u32 format_version;
  u32 region;
  u32 group;
  u32 accounts_max;
  u32 pending_max;
  u32 recent_transfers_max;
  u32 idempotency_keys_max;
  u32 reserved0;
  u64 idempotency_window_ns;
  u64 segment_bytes;
  u64 reserved1[2];

  static SegmentHeader describe(const LedgerConfig& config, u64 segment_bytes) noexcept {
    SegmentHeader h{};
    h.magic = kSegmentMagic;
    h.format_version = kFormatVersion;
    h.region = config.prefix.region;
    h.group = config.prefix.group;
    h.accounts_max = config.accounts_max;
    h.pending_max = config.pending_max;
    h.recent_transfers_max = config.recent_transfers_max;
    h.idempotency_keys_max = config.idempotency_keys_max;
    h.idempotency_window_ns = config.idempotency_window_ns;
    h.segment_bytes = segment_bytes;
    return h;
  }
  // The same ledger (segment size may differ between segments).
  bool same_ledger(const SegmentHeader& o) const noexcept {
    return magic == o.magic && format_version == o.format_version && region == o.region &&
           group == o.group && accounts_max == o.accounts_max && pending_max == o.pending_max &&
           recent_transfers_max == o.recent_transfers_max &&
           idempotency_keys_max == o.idempotency_keys_max &&
           idempotency_window_ns == o.idempotency_window_ns;
  }
};
static_assert(sizeof(SegmentHeader) == 72);

inline constexpr u32 kRecordOverhead = sizeof(RecordHeader) + sizeof(RecordTrailer);
// The most commands one record carries (the group splits larger runs).
inline constexpr u32 kRecordCommandsMax = 8190;
inline constexpr u32 kRecordBytesMax =
    kRecordOverhead + sizeof(IdempotencyKey) + kRecordCommandsMax * sizeof(Command);
static_assert(kRecordBytesMax % kRecordAlign == 0);

constexpr u32 align_up(u32 bytes) noexcept {
  return (bytes + kRecordAlign - 1) & ~(kRecordAlign - 1);
}

constexpr u32 body_bytes(RecordType type, u32 count) noexcept {
  switch (type) {
    case RecordType::segment_header:
      return sizeof(SegmentHeader);
    case RecordType::commands:
      return count * static_cast<u32>(sizeof(Command));
    case RecordType::atomic:
      return static_cast<u32>(sizeof(IdempotencyKey)) + count * static_cast<u32>(sizeof(Command));
  }
  return 0;
}
constexpr u32 record_bytes(RecordType type, u32 count) noexcept {
  return align_up(kRecordOverhead + body_bytes(type, count));
}
static_assert(record_bytes(RecordType::commands, 1) == 104);
static_assert(record_bytes(RecordType::atomic, kRecordCommandsMax) == kRecordBytesMax);
static_assert(sizeof(Command) % kRecordAlign == 0 && sizeof(IdempotencyKey) % kRecordAlign == 0);

// Writes one record piece by piece: the body is appended in parts (so commands from
// several callers go straight into one record), then finish() pads it, adds the
// trailer and the CRC. Writes all record_bytes(type, count) bytes.
class RecordEncoder {
 public:
  RecordEncoder(unsigned char* out, RecordType type, u64 sequence, u64 timestamp_ns,
                u32 count) noexcept;
  void append(const void* data, std::size_t bytes) noexcept;
  u32 finish() noexcept;  // the record's length

 private:
  unsigned char* out_;
  u32 length_;
  u32 body_expected_;
  u32 used_;
};

// Writes one record at `out` (record_bytes(type, count) bytes, all of them) and returns
// its length. The two body parts are copied back to back into the body.
u32 encode_record(unsigned char* out, RecordType type, u64 sequence, u64 timestamp_ns, u32 count,
                  const void* body_a, std::size_t body_a_bytes, const void* body_b = nullptr,
                  std::size_t body_b_bytes = 0) noexcept;

// The segment file for a first sequence: journal-00000000000000000001.seg
std::string segment_file_name(u64 first_sequence);
// The first sequence in a segment file's name, or 0 if the name is not a segment's.
u64 parse_segment_file_name(std::string_view name) noexcept;

}  // namespace paygate::journal
