// Reads a group's journal: every record of every segment in order, checked.
//
// The end of the log is one of:
//   clean      the last record is followed by zeros (the preallocated rest)
//   torn_tail  the last write was cut short: a record whose trailer is missing
//              (zero, or beyond the end of the file) with no valid record after it
//              anywhere; or annotations records with no command record after them
//              (their commands' write lost). Its bytes belong to a write that was
//              never acknowledged (acknowledgement waits for fdatasync), so recovery
//              clears them.
//   corrupt    anything else: a complete record that fails its CRC, a gap or
//              repeat in sequences, a bad segment, valid records after a bad one.
//              Recovery refuses to start and names the file and offset.
#pragma once

#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "base/storage.h"
#include "journal/format.h"

namespace paygate::journal {

// One record as read. Valid only during the visit (it points into a mapping, or into
// the reader's buffer for packed commands).
struct Record {
  const RecordHeader* header = nullptr;
  IdempotencyKey batch_key;           // atomic records
  std::span<const Command> commands;  // commands and atomic records
  // What the annotations records just before this one said about its commands, in
  // the order written (format.h): each names a sequence of this record.
  std::span<const AnnotationView> annotations;
  const std::filesystem::path* file = nullptr;
  u64 offset = 0;

  Stamp first_stamp() const noexcept { return Stamp{header->sequence, header->timestamp_ns}; }
  u64 next_sequence() const noexcept { return header->sequence + header->count; }
};

enum class LogEnd { clean, torn_tail, corrupt };

struct SegmentSummary {
  std::filesystem::path file;
  u64 first_sequence = 0;  // from the file name
  u64 records = 0;         // valid command records
  u64 end_offset = 0;      // where its valid records end
};

struct ScanReport {
  LogEnd end = LogEnd::clean;
  std::string message;         // torn_tail and corrupt: what was found and where
  std::filesystem::path file;  // the segment where the log ends (or the bad record is)
  u64 offset = 0;              // the byte where valid records end in `file`
  u64 clear_to = 0;            // torn_tail: bytes [offset, clear_to) of `file` to zero
  std::vector<std::filesystem::path> delete_files;  // torn_tail: segments to remove

  bool has_identity = false;
  SegmentHeader identity{};  // from the first segment
  u64 first_sequence = 0;    // of the first segment
  u64 next_sequence = 0;     // after the last valid record
  u64 records = 0;           // command records visited or skipped
  u64 commands = 0;
  u64 annotations = 0;  // annotations read (of the records visited or skipped)
  std::vector<SegmentSummary> segments;

  bool ok() const noexcept { return end != LogEnd::corrupt; }
};

// Where a scan continues one that came before: just after a command record it visited
// (Record::file, offset + length, next_sequence()). Segments before `file` are not
// read, nor its bytes before `offset`.
struct ScanStart {
  std::filesystem::path file;
  u64 offset = 0;
  u64 sequence = 0;  // of the next command
};

// Visits, in order, every valid command record whose commands come at or after
// from_sequence (records before it are checked and skipped), with its annotations.
// From `start` when given (a reader following a journal as it grows, up to what it
// knows is durable: records past that may be half written); the report then has no
// identity. visit returns
// false to stop early (the report then ends clean at that point). A directory with no segments is
// an empty, clean log.
ScanReport scan(const std::filesystem::path& dir, u64 from_sequence,
                const std::function<bool(const Record&)>& visit, const ScanStart* start = nullptr);

// The identity the journal in `dir` was written with, from the first record of each
// segment that has a valid one (merged as scan() merges it), without reading anything
// else: recovery checks it before replaying a single command. False when no segment
// has one (scan() then says why, if anything is wrong).
bool read_identity(const std::filesystem::path& dir, SegmentHeader* identity);

// The segment files in dir, ordered by their first sequence.
std::vector<std::filesystem::path> list_segments(const std::filesystem::path& dir);

const char* name(LogEnd end) noexcept;

// Deletes the segments whose every command is at or before `sequence` (a snapshot
// covers them), never the last segment. Returns how many were deleted.
u32 remove_covered_segments(const std::filesystem::path& dir, u64 sequence,
                            Storage& storage = Storage::posix());

}  // namespace paygate::journal
