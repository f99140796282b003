#include "journal/reader.h"

#include "base/assert.h"
#include "journal/command_layout.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "base/crc32c.h"

namespace paygate::journal {
namespace {

// A segment file mapped read-only for the scan.
class MappedFile {
 public:
  explicit MappedFile(const std::filesystem::path& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      error_ = fmt::format("cannot open {}: {}", path.string(), std::strerror(errno));
      return;
    }
    struct stat st {};
    if (::fstat(fd, &st) == 0 && st.st_size > 0) {
      size_ = static_cast<u64>(st.st_size);
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        error_ = fmt::format("cannot map {}: {}", path.string(), std::strerror(errno));
        size_ = 0;
      } else {
        data_ = static_cast<const unsigned char*>(p);
        ::madvise(p, size_, MADV_SEQUENTIAL);
      }
    }
    ::close(fd);
  }
  ~MappedFile() {
    if (data_ != nullptr) ::munmap(const_cast<unsigned char*>(data_), size_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const unsigned char* data() const noexcept { return data_; }
  u64 size() const noexcept { return size_; }
  const std::string& error() const noexcept { return error_; }

 private:
  const unsigned char* data_ = nullptr;
  u64 size_ = 0;
  std::string error_;
};

// memcmp against a zero page: a segment's unused tail can be tens of megabytes.
bool all_zero(const unsigned char* p, u64 size) noexcept {
  static const unsigned char kZeros[4096] = {};
  while (size > 0) {
    const u64 chunk = std::min<u64>(size, sizeof kZeros);
    if (std::memcmp(p, kZeros, chunk) != 0) return false;
    p += chunk;
    size -= chunk;
  }
  return true;
}

// Why the bytes at `offset` are not a record, or "" when they are one (sequence
// continuity aside).
std::string check_record(const MappedFile& file, u64 offset, RecordHeader* out) {
  if (offset + sizeof(RecordHeader) > file.size()) return "header runs past the end of the file";
  RecordHeader header;
  std::memcpy(&header, file.data() + offset, sizeof header);
  if (header.length % kRecordAlign != 0 || header.length < kRecordOverhead ||
      header.length > kRecordBytesMax) {
    return fmt::format("implausible length {}", header.length);
  }
  if (offset + header.length > file.size()) return "record runs past the end of the file";
  RecordTrailer trailer;
  std::memcpy(&trailer, file.data() + offset + header.length - sizeof trailer, sizeof trailer);
  if (trailer.length != header.length || trailer.magic != kTrailerMagic) return "bad trailer";
  const u32 crc = crc32c(file.data() + offset + 4, header.length - 4);
  if (crc != header.crc)
    return fmt::format("checksum mismatch (stored {:08x}, computed {:08x})", header.crc, crc);
  if (header.version < kFormatVersionOldest || header.version > kFormatVersion)
    return fmt::format("unknown format version {}", header.version);
  const bool known = header.type == RecordType::segment_header ||
                     header.type == RecordType::commands || header.type == RecordType::atomic ||
                     header.type == RecordType::annotations;
  if (!known) return fmt::format("unknown record type {}", static_cast<int>(header.type));
  if (header.type == RecordType::annotations) {
    // Entries of any size: read_annotations checks that they fill the body exactly.
    if (header.version < kAnnotationsVersion) return "annotations in a record of an older version";
    if (header.count == 0 ||
        header.count > (header.length - kRecordOverhead) / sizeof(AnnotationEntry)) {
      return "bad annotation count";
    }
    *out = header;
    return {};
  }
  if (header.type == RecordType::segment_header ? header.count != 0 : header.count == 0) {
    return "bad command count";
  }
  if (header.count > kRecordCommandsMax) return "bad command count";
  const u32 most = record_bytes_max(header.type, header.count, header.version);
  // Packed commands take at least a byte each; every other body has one size.
  const bool packed = header.version >= 2 && header.type != RecordType::segment_header;
  const u32 least =
      packed ? align_up(kRecordOverhead + body_bytes_max(header.type, 0) + header.count) : most;
  if (header.length < least || header.length > most) {
    return "length does not match the command count";
  }
  *out = header;
  return {};
}

// True when a record starting at `offset` (whose header is there) was written to its
// end: a trailer that names the length from `offset` to itself. A record with its
// header and its trailer in place was written whole, whatever its length field says:
// if it fails its checks, its bytes changed after they were written (corruption,
// never a torn write), even when the damage hit the header's length.
bool trailer_in_place(const MappedFile& file, u64 offset) {
  const u64 last = std::min<u64>(file.size(), offset + kRecordBytesMax);
  RecordTrailer trailer;
  for (u64 end = offset + kRecordOverhead; end <= last; end += kRecordAlign) {
    std::memcpy(&trailer, file.data() + end - sizeof trailer, sizeof trailer);
    if (trailer.magic == kTrailerMagic && trailer.length == end - offset) return true;
  }
  return false;
}

// The bytes at `offset` could be the start of a write that stopped early.
bool looks_torn(const MappedFile& file, u64 offset) {
  if (offset + sizeof(RecordHeader) > file.size()) return true;
  // A header of zeros was never written: the pages of one write may reach the disk in
  // any order before its fdatasync returns, so a later page (holding the trailer) can
  // land while the header's does not. Never acknowledged, so a torn write. (Bit rot
  // does not zero a whole header; a header that is there with a damaged length is
  // caught below, by its trailer.)
  if (all_zero(file.data() + offset, sizeof(RecordHeader))) return true;
  if (trailer_in_place(file, offset)) return false;
  RecordHeader header;
  std::memcpy(&header, file.data() + offset, sizeof header);
  if (header.length == 0) return true;  // the header itself was cut short
  if (header.length % kRecordAlign != 0 || header.length < kRecordOverhead ||
      header.length > kRecordBytesMax) {
    return false;  // a torn write leaves true bytes or zeros, never a wrong length
  }
  if (offset + header.length > file.size()) return true;
  return all_zero(file.data() + offset + header.length - sizeof(RecordTrailer),
                  sizeof(RecordTrailer));
}

// The first offset after `offset` where a complete, valid record starts, or 0.
u64 valid_record_after(const MappedFile& file, u64 offset) {
  RecordHeader header;
  for (u64 at = offset + kRecordAlign; at + kRecordOverhead <= file.size(); at += kRecordAlign) {
    if (check_record(file, at, &header).empty()) return at;
  }
  return 0;
}

// Where the non-zero bytes of the file end (so a torn region can be cleared).
u64 end_of_data(const MappedFile& file, u64 from) {
  u64 end = file.size();
  while (end > from && file.data()[end - 1] == 0)
    --end;
  return std::min<u64>(file.size(), (end + kRecordAlign - 1) & ~u64{kRecordAlign - 1});
}

// Annotations read but not yet given to the command record they belong to.
struct PendingAnnotations {
  struct Entry {
    u64 sequence;
    AnnotationKind kind;
    std::size_t at;  // in text
    u32 length;
  };
  std::vector<Entry> entries;
  std::string text;  // copied: the record after them may be in the next segment's mapping
  std::vector<AnnotationView> views;
  std::filesystem::path first_file;  // where the first of them starts
  u64 first_offset = 0;

  bool empty() const noexcept { return entries.empty(); }
  void clear() noexcept {
    entries.clear();
    text.clear();
  }
  // The entries of the checked annotations record at `offset`, or why they are bad (a
  // writer's bug: its CRC held).
  std::string read(const MappedFile& file, u64 offset, const RecordHeader& header,
                   const std::filesystem::path& path) {
    const unsigned char* p = file.data() + offset + sizeof(RecordHeader);
    const unsigned char* const end = file.data() + offset + header.length - sizeof(RecordTrailer);
    if (empty()) {
      first_file = path;
      first_offset = offset;
    }
    // In sequence order within a record and across the records before one command
    // record, so the last entry names the furthest command (checked against it).
    u64 last = empty() ? header.sequence : std::max(header.sequence, entries.back().sequence);
    for (u32 i = 0; i < header.count; ++i) {
      AnnotationEntry entry;
      if (static_cast<std::size_t>(end - p) < sizeof entry)
        return "annotation runs past its record";
      std::memcpy(&entry, p, sizeof entry);
      p += sizeof entry;
      if (entry.kind == 0 || entry.reserved != 0) return "bad annotation entry";
      if (entry.sequence < last) return "annotations out of sequence order";
      last = entry.sequence;
      const u64 padded = annotation_bytes(entry.length) - sizeof entry;
      if (padded > static_cast<u64>(end - p)) return "annotation runs past its record";
      if (!all_zero(p + entry.length, padded - entry.length)) return "annotation padding not zero";
      entries.push_back(
          {entry.sequence, static_cast<AnnotationKind>(entry.kind), text.size(), entry.length});
      text.append(reinterpret_cast<const char*>(p), entry.length);
      p += padded;
    }
    if (p != end) return "annotations do not fill their record";
    return {};
  }
  // Views of them all, for the command record they belong to.
  std::span<const AnnotationView> view() {
    views.clear();
    for (const Entry& e : entries)
      views.push_back({e.sequence, e.kind, std::string_view(text).substr(e.at, e.length)});
    return views;
  }
};

}  // namespace

const char* name(LogEnd end) noexcept {
  switch (end) {
    case LogEnd::clean:
      return "clean";
    case LogEnd::torn_tail:
      return "torn_tail";
    case LogEnd::corrupt:
      return "corrupt";
  }
  return "unknown";
}

std::vector<std::filesystem::path> list_segments(const std::filesystem::path& dir) {
  std::vector<std::pair<u64, std::filesystem::path>> found;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const u64 first = parse_segment_file_name(entry.path().filename().string());
    if (first != 0 && entry.is_regular_file()) found.emplace_back(first, entry.path());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::filesystem::path> paths;
  for (auto& [first, path] : found)
    paths.push_back(std::move(path));
  return paths;
}

u32 remove_covered_segments(const std::filesystem::path& dir, u64 sequence, Storage& storage) {
  const std::vector<std::filesystem::path> files = list_segments(dir);
  u32 removed = 0;
  for (std::size_t i = 0; i + 1 < files.size(); ++i) {
    // A segment's last command is the one just before the next segment's first.
    const u64 next_first = parse_segment_file_name(files[i + 1].filename().string());
    if (next_first - 1 > sequence) break;
    if (storage.unlink(files[i].c_str()) == 0) ++removed;
  }
  if (removed > 0) storage.sync_directory(dir.c_str());
  return removed;
}

bool read_identity(const std::filesystem::path& dir, SegmentHeader* identity) {
  bool found = false;
  for (const std::filesystem::path& path : list_segments(dir)) {
    const MappedFile file(path);
    RecordHeader header;
    if (!file.error().empty() || !check_record(file, 0, &header).empty() ||
        header.type != RecordType::segment_header) {
      continue;
    }
    SegmentHeader segment;
    std::memcpy(&segment, file.data() + sizeof(RecordHeader), sizeof segment);
    if (segment.magic != kSegmentMagic) continue;
    if (!found) {
      *identity = segment;
      found = true;
    } else if (identity->signature_keys_max == 0) {
      identity->signature_keys_max = segment.signature_keys_max;
      identity->signature_window_ns = segment.signature_window_ns;
    }
  }
  return found;
}

ScanReport scan(const std::filesystem::path& dir, u64 from_sequence,
                const std::function<bool(const Record&)>& visit, const ScanStart* start) {
  ScanReport report;
  std::vector<std::filesystem::path> files = list_segments(dir);
  if (start != nullptr) {
    // Only the segments from the start's on; its records before the start were read.
    const auto at = std::find(files.begin(), files.end(), start->file);
    if (at == files.end()) {
      report.end = LogEnd::corrupt;
      report.file = start->file;
      report.message =
          fmt::format("journal segment {} to continue from is gone", start->file.string());
      return report;
    }
    files.erase(files.begin(), at);
  }
  const auto corrupt = [&](const std::filesystem::path& file, u64 offset, std::string why) {
    report.end = LogEnd::corrupt;
    report.file = file;
    report.offset = offset;
    report.message =
        fmt::format("journal corrupt in {} at offset {}: {}", file.string(), offset, why);
    return report;
  };

  u64 expected = 0;                                   // the sequence the next record must start at
  std::vector<Command> unpacked(kRecordCommandsMax);  // a packed record's commands
  PendingAnnotations pending;
  // Annotations with no command record after them: their commands' write was lost
  // (never acknowledged), so the log ends, torn, where they start. Later segments
  // hold no command record (else the annotations would not be pending): removed.
  const auto end_at_orphaned_annotations = [&]() -> ScanReport& {
    report.end = LogEnd::torn_tail;
    report.delete_files.clear();
    bool later = false;
    for (const std::filesystem::path& other : files) {
      if (later) report.delete_files.push_back(other);
      later = later || other == pending.first_file;
    }
    while (!report.segments.empty() && report.segments.back().file != pending.first_file)
      report.segments.pop_back();
    PG_ASSERT(!report.segments.empty() && pending.first_offset > 0);
    report.segments.back().end_offset = pending.first_offset;
    const MappedFile file(pending.first_file);
    report.file = pending.first_file;
    report.offset = pending.first_offset;
    report.clear_to = std::max(pending.first_offset, end_of_data(file, pending.first_offset));
    report.message = fmt::format(
        "journal ends with annotations whose commands were never written (a torn write) in {} "
        "at offset {}: {} bytes to clear",
        pending.first_file.string(), pending.first_offset, report.clear_to - pending.first_offset);
    report.next_sequence = expected;
    return report;
  };
  for (std::size_t index = 0; index < files.size(); ++index) {
    const std::filesystem::path& path = files[index];
    const u64 named_first = parse_segment_file_name(path.filename().string());
    const MappedFile file(path);
    if (!file.error().empty()) return corrupt(path, 0, file.error());
    SegmentSummary summary{path, named_first, 0, 0};
    if (index == 0) expected = start != nullptr ? start->sequence : named_first;
    if (named_first != expected && !(index == 0 && start != nullptr)) {
      return corrupt(
          path, 0,
          fmt::format("segment starts at sequence {}, expected {}", named_first, expected));
    }

    const bool continuing = index == 0 && start != nullptr;
    u64 offset = continuing ? start->offset : 0;
    if (continuing && (offset == 0 || offset % kRecordAlign != 0 || offset > file.size())) {
      return corrupt(path, offset, "no record boundary to continue from");
    }
    for (;;) {
      // Records sit end to end, aligned, inside the file.
      PG_ASSERT(offset % kRecordAlign == 0 && offset <= file.size());
      RecordHeader header{};
      std::string why;
      const bool at_end = offset + sizeof(RecordHeader) > file.size() ||
                          all_zero(file.data() + offset, sizeof(RecordHeader));
      if (at_end && all_zero(file.data() + offset, file.size() - std::min(offset, file.size()))) {
        if (offset == 0) {
          why = "segment has no header record";  // created, never written
        } else {
          break;  // clean end of this segment
        }
      } else {
        why = check_record(file, offset, &header);
        if (why.empty()) {
          if (offset == 0 && header.type != RecordType::segment_header)
            why = "first record is not a segment header";
          if (offset != 0 && header.type == RecordType::segment_header)
            why = "segment header in the middle";
          if (why.empty() && header.sequence != expected) {
            why = fmt::format("sequence {} where {} was expected", header.sequence, expected);
          }
        }
      }

      if (!why.empty()) {
        // A bad record. It ends the log cleanly only as a torn last write.
        bool later_data = false;
        for (std::size_t later = index + 1; later < files.size(); ++later) {
          const MappedFile other(files[later]);
          if (other.size() > 0 &&
              (check_record(other, 0, &header).empty() || valid_record_after(other, 0) != 0)) {
            later_data = true;
          }
        }
        const u64 next_valid = valid_record_after(file, offset);
        if (later_data || next_valid != 0 || !looks_torn(file, offset)) {
          return corrupt(
              path, offset,
              why + (next_valid != 0
                         ? fmt::format(" (a valid record follows at offset {})", next_valid)
                     : later_data ? " (later segments hold records)"
                                  : ""));
        }
        report.end = LogEnd::torn_tail;
        report.file = path;
        report.offset = offset;
        report.clear_to = end_of_data(file, offset);
        report.message =
            fmt::format("journal ends with a torn write in {} at offset {} ({}): {} bytes to clear",
                        path.string(), offset, why, report.clear_to - offset);
        if (offset == 0) report.delete_files.push_back(path);
        for (std::size_t later = index + 1; later < files.size(); ++later)
          report.delete_files.push_back(files[later]);
        summary.end_offset = offset;
        report.segments.push_back(summary);
        report.next_sequence = expected;
        if (!pending.empty()) return end_at_orphaned_annotations();
        return report;
      }

      if (header.type == RecordType::segment_header) {
        SegmentHeader identity;
        std::memcpy(&identity, file.data() + offset + sizeof(RecordHeader), sizeof identity);
        if (identity.magic != kSegmentMagic) return corrupt(path, offset, "bad segment magic");
        if (!report.has_identity) {
          report.identity = identity;
          report.has_identity = true;
          report.first_sequence = header.sequence;
        } else if (!identity.same_ledger(report.identity)) {
          return corrupt(path, offset, "segment written for a different ledger configuration");
        } else if (report.identity.signature_keys_max == 0) {
          // Older segments predate the signature table: the first that has one says
          // how the journal was written from there on.
          report.identity.signature_keys_max = identity.signature_keys_max;
          report.identity.signature_window_ns = identity.signature_window_ns;
        }
      } else if (header.type == RecordType::annotations) {
        if (std::string bad = pending.read(file, offset, header, path); !bad.empty()) {
          return corrupt(path, offset, bad);
        }
        report.annotations += header.count;
      } else {
        Record record;
        record.header = reinterpret_cast<const RecordHeader*>(file.data() + offset);
        const unsigned char* body = file.data() + offset + sizeof(RecordHeader);
        const unsigned char* body_end =
            file.data() + offset + header.length - sizeof(RecordTrailer);
        if (header.type == RecordType::atomic) {
          std::memcpy(&record.batch_key, body, sizeof(IdempotencyKey));
          body += sizeof(IdempotencyKey);
        }
        if (header.version == 1) {
          // As laid out on disk (command_layout.h), into the ledger's commands.
          for (u32 c = 0; c < header.count; ++c) {
            CommandLayout layout;
            std::memcpy(layout.words, body + std::size_t{c} * sizeof layout, sizeof layout);
            unpacked[c] = decode(layout);
          }
          record.commands = std::span<const Command>(unpacked.data(), header.count);
        } else {
          // The CRC held, so a failure here is a writer's bug, not a torn write.
          const std::size_t room = static_cast<std::size_t>(body_end - body);
          const std::size_t used = unpack_commands(body, room, header.count, unpacked.data());
          if (used == 0 || room - used >= kRecordAlign || !all_zero(body + used, room - used)) {
            return corrupt(path, offset, "packed commands do not decode");
          }
          record.commands = std::span<const Command>(unpacked.data(), header.count);
        }
        if (!pending.empty()) {
          if (pending.entries.back().sequence >= header.sequence + header.count) {
            return corrupt(path, offset,
                           fmt::format("an annotation names sequence {}, past this record's",
                                       pending.entries.back().sequence));
          }
          record.annotations = pending.view();
        }
        record.file = &path;
        record.offset = offset;
        ++report.records;
        report.commands += header.count;
        ++summary.records;
        PG_ASSERT(header.sequence == expected && header.count > 0);
        expected = header.sequence + header.count;
        if (record.next_sequence() > from_sequence && header.sequence < from_sequence) {
          return corrupt(path, offset,
                         fmt::format("record {}+{} straddles sequence {}", header.sequence,
                                     header.count, from_sequence));
        }
        if (header.sequence >= from_sequence && visit && !visit(record)) {
          summary.end_offset = offset + header.length;
          report.segments.push_back(summary);
          report.file = path;
          report.offset = offset + header.length;
          report.next_sequence = expected;
          return report;
        }
        pending.clear();  // given to their record (the views die with the visit)
      }
      PG_ASSERT(header.length >= kRecordOverhead);  // a checked record moves the scan on
      offset += header.length;
    }
    summary.end_offset = offset;
    report.segments.push_back(summary);
    report.file = path;
    report.offset = offset;
  }
  report.next_sequence = expected;
  if (!pending.empty()) return end_at_orphaned_annotations();
  return report;
}

}  // namespace paygate::journal
