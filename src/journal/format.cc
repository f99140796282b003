#include "journal/format.h"

#include "base/sequence_file_name.h"
#include "journal/command_layout.h"

#include <charconv>
#include <cstring>

#include <fmt/format.h>

#include "base/assert.h"
#include "base/crc32c.h"

namespace paygate::journal {

RecordEncoder::RecordEncoder(unsigned char* out, RecordType type, u64 sequence, u64 timestamp_ns,
                             u32 count, u8 version) noexcept
    : out_(out), type_(type), version_(version), count_(count), used_(sizeof(RecordHeader)) {
  PG_ASSERT(version >= kFormatVersionOldest && version <= kFormatVersion);
  PG_ASSERT(record_bytes_max(type, count, version) <= kRecordBytesMax);
  PG_ASSERT((type == RecordType::segment_header) == (count == 0));
  RecordHeader header{};
  header.sequence = sequence;
  header.timestamp_ns = timestamp_ns;
  header.type = type;
  header.version = version;
  header.count = count;
  std::memcpy(out_, &header, sizeof header);
}

void RecordEncoder::append_key(const IdempotencyKey& key) noexcept {
  PG_ASSERT(type_ == RecordType::atomic && used_ == sizeof(RecordHeader));
  std::memcpy(out_ + used_, &key, sizeof key);
  used_ += sizeof key;
}

void RecordEncoder::append_identity(const SegmentHeader& identity) noexcept {
  PG_ASSERT(type_ == RecordType::segment_header && used_ == sizeof(RecordHeader));
  std::memcpy(out_ + used_, &identity, sizeof identity);
  used_ += sizeof identity;
}

void RecordEncoder::append(std::span<const Command> commands) noexcept {
  PG_ASSERT(appended_ + commands.size() <= count_);
  PG_ASSERT(type_ != RecordType::atomic || used_ >= sizeof(RecordHeader) + sizeof(IdempotencyKey));
  appended_ += static_cast<u32>(commands.size());
  if (version_ == 1) {
    for (const Command& command : commands) {
      const CommandLayout layout = encode(command);
      std::memcpy(out_ + used_, layout.words, sizeof layout);
      used_ += static_cast<u32>(sizeof layout);
    }
    return;
  }
  unsigned char* at = out_ + used_;
  for (const Command& command : commands)
    at = packer_.pack(command, at);
  used_ = static_cast<u32>(at - out_);
}

u32 RecordEncoder::finish() noexcept {
  PG_ASSERT(appended_ == count_);
  PG_ASSERT(used_ <= sizeof(RecordHeader) + body_bytes_max(type_, count_, version_));
  const u32 length = align_up(used_ + sizeof(RecordTrailer));
  std::memset(out_ + used_, 0, length - sizeof(RecordTrailer) - used_);
  const RecordTrailer trailer{length, kTrailerMagic};
  std::memcpy(out_ + length - sizeof(RecordTrailer), &trailer, sizeof trailer);
  std::memcpy(out_ + offsetof(RecordHeader, length), &length, sizeof length);
  const u32 crc = crc32c(out_ + 4, length - 4);
  std::memcpy(out_, &crc, sizeof crc);
  return length;
}

u32 encode_record(unsigned char* out, RecordType type, u64 sequence, u64 timestamp_ns,
                  std::span<const Command> commands, const IdempotencyKey* batch_key,
                  u8 version) noexcept {
  PG_ASSERT((type == RecordType::atomic) == (batch_key != nullptr));
  RecordEncoder encoder(out, type, sequence, timestamp_ns, static_cast<u32>(commands.size()),
                        version);
  if (batch_key != nullptr) encoder.append_key(*batch_key);
  encoder.append(commands);
  return encoder.finish();
}

namespace {

// How many of `annotations`, from the first, go in one record of at most record_max
// bytes, and the record's length.
u32 annotations_in_record(std::span<const Annotation> annotations, u32 record_max,
                          u32* length) noexcept {
  u64 used = kRecordOverhead;
  u32 taken = 0;
  for (const Annotation& a : annotations) {
    PG_ASSERT(annotation_fits(a.text.size(), record_max));
    if (used + annotation_bytes(a.text.size()) > record_max) break;
    used += annotation_bytes(a.text.size());
    ++taken;
  }
  PG_ASSERT(taken > 0 && used % kRecordAlign == 0);
  *length = static_cast<u32>(used);
  return taken;
}

}  // namespace

u64 annotation_records_bytes(std::span<const Annotation> annotations, u32 record_max) noexcept {
  u64 total = 0;
  while (!annotations.empty()) {
    u32 length = 0;
    const u32 taken = annotations_in_record(annotations, record_max, &length);
    total += length;
    annotations = annotations.subspan(taken);
  }
  return total;
}

u32 encode_annotations(unsigned char* out, u64 record_sequence, u64 command_base, u64 timestamp_ns,
                       std::span<const Annotation> annotations, u32 record_max,
                       u64* records) noexcept {
  unsigned char* const start = out;
  while (!annotations.empty()) {
    u32 length = 0;
    const u32 taken = annotations_in_record(annotations, record_max, &length);
    RecordHeader header{};
    header.length = length;
    header.sequence = record_sequence;
    header.timestamp_ns = timestamp_ns;
    header.type = RecordType::annotations;
    header.version = kFormatVersion;
    header.count = taken;
    std::memcpy(out, &header, sizeof header);
    u32 used = sizeof header;
    for (const Annotation& a : annotations.first(taken)) {
      // Every annotation names a command at or after the record's sequence.
      PG_ASSERT(command_base + a.command >= record_sequence);
      const AnnotationEntry entry{command_base + a.command, static_cast<u16>(a.kind), 0,
                                  static_cast<u32>(a.text.size())};
      std::memcpy(out + used, &entry, sizeof entry);
      used += sizeof entry;
      if (!a.text.empty()) std::memcpy(out + used, a.text.data(), a.text.size());
      const u32 padded = static_cast<u32>(annotation_bytes(a.text.size()) - sizeof entry);
      std::memset(out + used + a.text.size(), 0, padded - a.text.size());
      used += padded;
    }
    PG_ASSERT(used + sizeof(RecordTrailer) == length);
    const RecordTrailer trailer{length, kTrailerMagic};
    std::memcpy(out + used, &trailer, sizeof trailer);
    const u32 crc = crc32c(out + 4, length - 4);
    std::memcpy(out, &crc, sizeof crc);
    out += length;
    ++*records;
    annotations = annotations.subspan(taken);
  }
  return static_cast<u32>(out - start);
}

u32 encode_segment_header(unsigned char* out, u64 first_sequence,
                          const SegmentHeader& identity) noexcept {
  RecordEncoder encoder(out, RecordType::segment_header, first_sequence, 0, 0);
  encoder.append_identity(identity);
  return encoder.finish();
}

std::string segment_file_name(u64 first_sequence) {
  return sequence_file_name("journal-", first_sequence, ".seg");
}

u64 parse_segment_file_name(std::string_view name) noexcept {
  return parse_sequence_file_name(name, "journal-", ".seg");
}

}  // namespace paygate::journal
