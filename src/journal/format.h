// The journal's on-disk format. docs/JOURNAL.md gives the same in prose; a change here
// is a new kFormatVersion, and the reader keeps reading every older one.
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
//   25      1     version    the format version that wrote the record (below)
//   26      2     reserved   0
//   28      4     count      commands in the body
//   32      ...   body       by type (below), then zero padding to a multiple of 8
//   len-8   4     length     again: a record whose last 8 bytes are zero was torn
//   len-4   4     magic      kTrailerMagic
//
// Bodies:
//   segment_header  SegmentHeader (first record of every segment; count 0)
//   commands        count commands; command i has sequence + i
//   atomic          IdempotencyKey (16 bytes), then count commands: one atomic batch
//   annotations     count entries (AnnotationEntry, then its text, zero-padded to a
//                   multiple of 8): text requests carried that the ledger does not keep
//                   (a transfer's reference and metadata, an order's URLs), each naming
//                   the sequence of its command. Its header's sequence is the next
//                   command's, and it does not advance the sequence: annotation records
//                   come just before the commands or atomic record holding every
//                   command they name, in the same group commit. One with no such
//                   record after it (the commands' write torn) was never acknowledged;
//                   recovery clears it with the torn tail.
// The record's version says how its commands are written:
//   1  as they are: count × Command (64 bytes each)
//   2  packed (command_packing.h): each as its difference from the one before it
//   3  as 2; annotations records exist from this version on
//   4  as 3; an order_create may carry kOrderCallbackUrl in its flags (a build that
//      reads only up to 3 would replay such a create as refused: it must refuse the
//      journal instead, and does, by its version)
// A writer writes kFormatVersion; a journal may hold records of all of them (an
// upgrade appends version 4 to a version 1, 2 or 3 journal).
//
// Integers are little-endian (the only byte order paygate runs on).
#pragma once

#include <cstddef>
#include <span>

#include "base/types.h"
#include "journal/annotation.h"
#include "journal/command_layout.h"
#include "journal/command_packing.h"
#include "ledger/command.h"
#include "ledger/ledger.h"

namespace paygate::journal {

inline constexpr u8 kFormatVersion = 4;
inline constexpr u8 kAnnotationsVersion = 3;       // the first version with annotations
inline constexpr u8 kFormatVersionOldest = 1;      // the oldest the reader reads
inline constexpr u32 kTrailerMagic = 0x45524750u;  // "PGRE"
inline constexpr u64 kSegmentMagic = tag8("PGJOURNL");
inline constexpr u32 kRecordAlign = 8;

enum class RecordType : u8 {
  segment_header = 1,
  commands = 2,
  atomic = 3,
  annotations = 4,
};

// On disk, before each annotation's text.
struct AnnotationEntry {
  u64 sequence;
  u16 kind;
  u16 reserved;
  u32 length;  // of the text, without its padding
};
static_assert(sizeof(AnnotationEntry) == 16);

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
  u32 signature_keys_max;  // 0 in segments written before the signature table existed
  u64 idempotency_window_ns;
  u64 segment_bytes;
  u64 signature_window_ns;  // likewise
  // The order book's configuration (0 in segments written before orders): results
  // depend on it (orders_full, early eviction, archiving).
  u32 orders_max;
  u32 order_final_retained_s;

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
    h.signature_keys_max = config.signature_capacity();
    h.signature_window_ns = config.signature_window_ns;
    h.orders_max = config.orders_max;
    h.order_final_retained_s =
        static_cast<u32>(std::min<u64>(config.order_final_retained_ns / kNanosPerSecond, ~u32{0}));
    return h;
  }
  // The same ledger (segment size and format version may differ between segments). A
  // segment from before the signature table (zeros there) holds no signature keys, so
  // it replays the same under any signature configuration; one from before orders
  // (zeros there) holds no orders, and replays the same under any order configuration.
  bool same_ledger(const SegmentHeader& o) const noexcept {
    const bool orders_differ =
        orders_max != 0 && o.orders_max != 0 &&
        (orders_max != o.orders_max || order_final_retained_s != o.order_final_retained_s);
    const bool signatures_differ = signature_keys_max != 0 && o.signature_keys_max != 0 &&
                                   (signature_keys_max != o.signature_keys_max ||
                                    signature_window_ns != o.signature_window_ns);
    return magic == o.magic && region == o.region && group == o.group &&
           accounts_max == o.accounts_max && pending_max == o.pending_max &&
           recent_transfers_max == o.recent_transfers_max &&
           idempotency_keys_max == o.idempotency_keys_max &&
           idempotency_window_ns == o.idempotency_window_ns && !signatures_differ && !orders_differ;
  }
};
static_assert(sizeof(SegmentHeader) == 72);

inline constexpr u32 kRecordOverhead = sizeof(RecordHeader) + sizeof(RecordTrailer);
// The most commands one record carries (the group splits larger runs).
inline constexpr u32 kRecordCommandsMax = 8190;

constexpr u32 align_up(u32 bytes) noexcept {
  return (bytes + kRecordAlign - 1) & ~(kRecordAlign - 1);
}

constexpr u32 command_bytes_max(u8 version) noexcept {
  return version >= 2 ? kPackedCommandBytesMax : static_cast<u32>(sizeof(CommandLayout));
}
// The most bytes a body takes (for version 1 commands, and for segment headers, the
// exact size). Annotations: any size up to a record's limit, at least an entry each.
constexpr u32 body_bytes_max(RecordType type, u32 count, u8 version = kFormatVersion) noexcept {
  switch (type) {
    case RecordType::annotations:
      return 0;  // sized by annotation_bytes() instead
    case RecordType::segment_header:
      return sizeof(SegmentHeader);
    case RecordType::commands:
      return count * command_bytes_max(version);
    case RecordType::atomic:
      return static_cast<u32>(sizeof(IdempotencyKey)) + count * command_bytes_max(version);
  }
  return 0;
}
// The most bytes a record takes: what to reserve for it before encoding.
constexpr u32 record_bytes_max(RecordType type, u32 count, u8 version = kFormatVersion) noexcept {
  return align_up(kRecordOverhead + body_bytes_max(type, count, version));
}
inline constexpr u32 kRecordBytesMax = record_bytes_max(RecordType::atomic, kRecordCommandsMax);
static_assert(record_bytes_max(RecordType::commands, 1, 1) == 104);
static_assert(kRecordBytesMax >= record_bytes_max(RecordType::atomic, kRecordCommandsMax, 1));
static_assert(kRecordBytesMax % kRecordAlign == 0);

// Annotations: the bytes one takes in a record's body; whether one fits a record of
// record_max bytes on its own (else it cannot be written: the caller refuses it).
constexpr u64 annotation_bytes(std::size_t text_bytes) noexcept {
  return sizeof(AnnotationEntry) + ((u64{text_bytes} + kRecordAlign - 1) & ~u64{kRecordAlign - 1});
}
constexpr bool annotation_fits(std::size_t text_bytes, u32 record_max) noexcept {
  return text_bytes <= record_max && kRecordOverhead + annotation_bytes(text_bytes) <= record_max;
}
// The bytes the records for `annotations` take, split in order into records of at most
// record_max bytes. REQUIRES: each fits (annotation_fits); 0 when there are none.
u64 annotation_records_bytes(std::span<const Annotation> annotations, u32 record_max) noexcept;
// Writes those records: each with header sequence record_sequence (the next command's),
// each annotation naming command_base + its command. Returns the bytes written
// (annotation_records_bytes) and adds the records to *records.
u32 encode_annotations(unsigned char* out, u64 record_sequence, u64 command_base, u64 timestamp_ns,
                       std::span<const Annotation> annotations, u32 record_max,
                       u64* records) noexcept;
static_assert(sizeof(CommandLayout) % kRecordAlign == 0 &&
              sizeof(IdempotencyKey) % kRecordAlign == 0);

// Writes one record piece by piece: the batch key (atomic records), then the commands
// in parts (so commands from several callers go straight into one record), then
// finish() pads it, adds the trailer and the CRC. Writes at most
// record_bytes_max(type, count, version) bytes; finish() says how many it used.
class RecordEncoder {
 public:
  RecordEncoder(unsigned char* out, RecordType type, u64 sequence, u64 timestamp_ns, u32 count,
                u8 version = kFormatVersion) noexcept;
  void append_key(const IdempotencyKey& key) noexcept;           // atomic only, before the commands
  void append_identity(const SegmentHeader& identity) noexcept;  // segment_header only
  void append(std::span<const Command> commands) noexcept;
  u32 finish() noexcept;  // the record's length

 private:
  unsigned char* out_;
  RecordType type_;
  u8 version_;
  u32 count_;
  u32 appended_ = 0;  // commands so far
  u32 used_;          // header + body so far
  CommandPacker packer_;
};

// Writes one commands or atomic record (batch_key for atomic ones) and returns its
// length, at most record_bytes_max(type, commands.size(), version).
u32 encode_record(unsigned char* out, RecordType type, u64 sequence, u64 timestamp_ns,
                  std::span<const Command> commands, const IdempotencyKey* batch_key = nullptr,
                  u8 version = kFormatVersion) noexcept;
// Writes a segment's first record: its identity, the sequence the segment starts at.
u32 encode_segment_header(unsigned char* out, u64 first_sequence,
                          const SegmentHeader& identity) noexcept;

// The segment file for a first sequence: journal-00000000000000000001.seg
std::string segment_file_name(u64 first_sequence);
// The first sequence in a segment file's name, or 0 if the name is not a segment's.
u64 parse_segment_file_name(std::string_view name) noexcept;

}  // namespace paygate::journal
