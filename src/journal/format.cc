#include "journal/format.h"
#include "base/sequence_file_name.h"

#include <charconv>
#include <cstring>

#include <fmt/format.h>

#include "base/assert.h"
#include "base/crc32c.h"

namespace paygate::journal {

RecordEncoder::RecordEncoder(unsigned char* out, RecordType type, u64 sequence, u64 timestamp_ns,
                             u32 count) noexcept
    : out_(out),
      length_(record_bytes(type, count)),
      body_expected_(body_bytes(type, count)),
      used_(sizeof(RecordHeader)) {
  PG_ASSERT(length_ <= kRecordBytesMax);
  RecordHeader header{};
  header.length = length_;
  header.sequence = sequence;
  header.timestamp_ns = timestamp_ns;
  header.type = type;
  header.version = kFormatVersion;
  header.count = count;
  std::memcpy(out_, &header, sizeof header);
}

void RecordEncoder::append(const void* data, std::size_t bytes) noexcept {
  PG_ASSERT(used_ + bytes <= sizeof(RecordHeader) + body_expected_);
  std::memcpy(out_ + used_, data, bytes);
  used_ += static_cast<u32>(bytes);
}

u32 RecordEncoder::finish() noexcept {
  PG_ASSERT(used_ == sizeof(RecordHeader) + body_expected_);
  std::memset(out_ + used_, 0, length_ - sizeof(RecordTrailer) - used_);
  const RecordTrailer trailer{length_, kTrailerMagic};
  std::memcpy(out_ + length_ - sizeof(RecordTrailer), &trailer, sizeof trailer);
  const u32 crc = crc32c(out_ + 4, length_ - 4);
  std::memcpy(out_, &crc, sizeof crc);
  return length_;
}

u32 encode_record(unsigned char* out, RecordType type, u64 sequence, u64 timestamp_ns, u32 count,
                  const void* body_a, std::size_t body_a_bytes, const void* body_b,
                  std::size_t body_b_bytes) noexcept {
  RecordEncoder encoder(out, type, sequence, timestamp_ns, count);
  if (body_a_bytes > 0) encoder.append(body_a, body_a_bytes);
  if (body_b_bytes > 0) encoder.append(body_b, body_b_bytes);
  return encoder.finish();
}

std::string segment_file_name(u64 first_sequence) {
  return sequence_file_name("journal-", first_sequence, ".seg");
}

u64 parse_segment_file_name(std::string_view name) noexcept {
  return parse_sequence_file_name(name, "journal-", ".seg");
}

}  // namespace paygate::journal
