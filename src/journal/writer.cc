#include "journal/writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include <fmt/format.h>

#include "base/assert.h"
#include "base/thread.h"

namespace paygate::journal {
namespace {

u64 now_ns() {
  return static_cast<u64>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                              std::chrono::steady_clock::now().time_since_epoch())
                              .count());
}

}  // namespace

Writer::Writer(const WriterOptions& options)
    : options_(options),
      staging_(options.staging_bytes),
      writing_(options.staging_bytes),
      prepared_path_(options.dir / kPreparedSegmentName) {
  if (options_.storage == nullptr) options_.storage = &Storage::posix();
  PG_ASSERT(options.record_bytes_max <= kRecordBytesMax);
  PG_ASSERT(options.staging_bytes >= options.record_bytes_max);
  PG_ASSERT(options.segment_bytes >= 2 * u64{options.record_bytes_max});
}

Result<std::unique_ptr<Writer>> Writer::open(const WriterOptions& options,
                                             const AppendPosition& at) {
  std::unique_ptr<Writer> writer(new Writer(options));
  writer->dir_fd_ =
      writer->storage().open(options.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
  if (writer->dir_fd_ < 0) {
    return Status::io_error(fmt::format("cannot open journal directory {}: {}",
                                        options.dir.string(), std::strerror(errno)));
  }
  // An earlier run's prepared segment holds nothing (and may be incomplete).
  writer->storage().unlink(writer->prepared_path_.c_str());
  writer->durable_sequence_.store(at.next_sequence - 1, std::memory_order_release);
  // The first segment is allocated, not prepared: an open does not wait for a
  // segment's worth of zeros to be written.
  const bool opened = at.file.empty() ? writer->create_segment(at.next_sequence, false)
                                      : writer->open_segment(at.file, at.offset);
  if (!opened) return writer->failure();
  return writer;
}

Writer::~Writer() {
  stop();
  if (fd_ >= 0) storage().close(fd_);
  if (dir_fd_ >= 0) storage().close(dir_fd_);
}

void Writer::start() {
  PG_ASSERT(!thread_.joinable() && !preparer_.joinable());
  if (options_.prepare_segments) preparer_ = std::thread([this] { run_preparer(); });
  thread_ = std::thread([this] { run(); });
}

void Writer::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  staged_cv_.notify_one();
  if (thread_.joinable()) thread_.join();
  {
    std::lock_guard lock(prepare_mutex_);
    preparer_stopping_.store(true, std::memory_order_relaxed);
  }
  prepare_cv_.notify_one();
  if (preparer_.joinable()) preparer_.join();
}

Status Writer::failure() const {
  std::lock_guard lock(const_cast<std::mutex&>(mutex_));
  return failure_;
}

unsigned char* Writer::reserve(u32 bytes) noexcept {
  PG_ASSERT(bytes <= options_.staging_bytes);
  mutex_.lock();
  if (failed() || staged_ + bytes > staging_.size()) {
    mutex_.unlock();
    return nullptr;
  }
  return staging_.data() + staged_;  // the lock is held until commit()
}

void Writer::commit(u32 bytes, u64 last_sequence) noexcept {
  PG_ASSERT(staged_ + bytes <= staging_.size());
  PG_ASSERT(bytes % kRecordAlign == 0);  // whole records only
  // Sequences only grow, and never past what is staged behind what is durable.
  PG_ASSERT(last_sequence == 0 || last_sequence >= staged_last_sequence_);
  PG_ASSERT(last_sequence == 0 ||
            last_sequence > durable_sequence_.load(std::memory_order_relaxed));
  if (staged_ == 0) first_staged_ns_ = now_ns();
  staged_ += bytes;
  if (last_sequence != 0) staged_last_sequence_ = last_sequence;
  staged_bytes_hint_.store(staged_, std::memory_order_relaxed);
  mutex_.unlock();
  staged_cv_.notify_one();
}

void Writer::run() {
  if (options_.thread_nice != 0) set_thread_nice(options_.thread_nice);
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      staged_cv_.wait(lock, [&] { return staged_ > 0 || stopping_; });
      if (staged_ == 0) break;  // stopping, and nothing left
    }
    const u64 started = now_ns();
    if (!flush()) break;  // failed: fail() cleared syncing_ and notified
    const u64 synced = now_ns();
    if (options_.sync_gap_ns != 0 && synced - started < options_.sync_gap_ns) {
      wait_out_sync_gap(std::chrono::steady_clock::now() +
                            std::chrono::nanoseconds(options_.sync_gap_ns - (synced - started)),
                        durable_sequence_.load(std::memory_order_relaxed));
    }
  }
}

bool Writer::flush() {
  u64 size = 0;
  u64 last_sequence = 0;
  u64 staged_at = 0;
  {
    std::unique_lock lock(mutex_);
    if (staged_ == 0 || failed()) return false;
    staging_.swap(writing_);
    size = staged_;
    last_sequence = staged_last_sequence_;
    PG_ASSERT(size <= writing_.size() && size % kRecordAlign == 0);
    staged_ = 0;
    staged_at = first_staged_ns_;
    staged_bytes_hint_.store(0, std::memory_order_relaxed);
  }
  const u64 started = now_ns();
  pickup_ns_.record(started - std::min(started, staged_at));
  syncing_.store(true, std::memory_order_seq_cst);
  if (!write_all(writing_.data(), size)) return false;  // fail() cleared syncing_ and notified
  // Half the segment is used: time to prepare the next (once per segment, so that a
  // preparation that failed is not retried at every group commit).
  if (!next_segment_requested_ && offset_ >= options_.segment_bytes / 2 && preparer_.joinable()) {
    next_segment_requested_ = true;
    request_prepared_segment();
  }
  const u64 written = now_ns();
  const int injected = fault(FileOp::sync);
  const bool synced_ok = injected == 0 && storage().fdatasync(fd_) == 0;
  const int error = injected != 0 ? injected : errno;
  // Before the notify below (or fail()'s): see syncing().
  syncing_.store(false, std::memory_order_seq_cst);
  if (!synced_ok) return fail("fdatasync " + path_.string(), error);
  const u64 synced = now_ns();
  write_ns_.record(written - started);
  fdatasync_ns_.record(synced - written);
  sync_ns_.record(synced - started);
  write_bytes_.record(size);
  durable_at_ns_.store(synced, std::memory_order_release);
  // The durable point moves only forward, and only past what this sync wrote.
  PG_ASSERT(last_sequence == 0 ||
            last_sequence >= durable_sequence_.load(std::memory_order_relaxed));
  if (last_sequence != 0) durable_sequence_.store(last_sequence, std::memory_order_release);
  if (options_.durable_event != nullptr) options_.durable_event->notify_all();
  return true;
}

// Under load (more is staged already) the next batch grows until the gap has passed,
// or it holds sync_gap_commands, or nothing more has come for sync_gap_quiet_ns (its
// clients are all waiting on it). A lone request after an idle moment is synced at
// once.
void Writer::wait_out_sync_gap(std::chrono::steady_clock::time_point deadline, u64 synced_through) {
  std::unique_lock lock(mutex_);
  if (staged_ == 0) return;
  const auto enough = [&] {
    return stopping_ || (options_.sync_gap_commands != 0 &&
                         staged_last_sequence_ >= synced_through + options_.sync_gap_commands);
  };
  const bool quiet_ends = options_.sync_gap_quiet_ns != 0;
  for (;;) {
    const u64 seen = staged_last_sequence_;
    const auto until =
        quiet_ends ? std::min(deadline, std::chrono::steady_clock::now() +
                                            std::chrono::nanoseconds(options_.sync_gap_quiet_ns))
                   : deadline;
    staged_cv_.wait_until(
        lock, until, [&] { return enough() || (quiet_ends && staged_last_sequence_ != seen); });
    if (enough() || std::chrono::steady_clock::now() >= deadline) return;
    if (staged_last_sequence_ == seen) return;  // quiet: nothing came
  }
}

bool Writer::write_all(const unsigned char* data, u64 size) {
  u64 at = 0;
  while (at < size) {
    // The whole records that still fit in this segment. Annotations records go with
    // the record after them, so a segment holds what is said about its commands
    // (unless together they would not fit even a fresh segment).
    u64 fit = 0;
    while (at + fit < size) {
      u64 unit = 0;
      u64 first_length = 0;
      for (;;) {
        RecordHeader header;
        std::memcpy(&header, data + at + fit + unit, sizeof header);
        PG_ASSERT(header.length >= kRecordOverhead && at + fit + unit + header.length <= size);
        unit += header.length;
        if (first_length == 0) first_length = header.length;
        if (header.type != RecordType::annotations || at + fit + unit == size) break;
      }
      if (unit + record_bytes_max(RecordType::segment_header, 0) > options_.segment_bytes) {
        unit = first_length;
      }
      if (offset_ + fit + unit > options_.segment_bytes) break;
      fit += unit;
    }
    PG_ASSERT(offset_ % kRecordAlign == 0 && offset_ <= options_.segment_bytes);
    if (fit > 0) {
      PG_ASSERT(offset_ + fit <= options_.segment_bytes);  // records never straddle segments
      if (const int injected = fault(FileOp::write);
          injected != 0 ||
          !storage().pwrite_all(fd_, data + at, fit, static_cast<off_t>(offset_))) {
        return fail("write " + path_.string(), injected != 0 ? injected : errno);
      }
      offset_ += fit;
      at += fit;
    }
    if (at < size) {
      // The next record opens a new segment; what this one holds is synced first.
      if (const int injected = fault(FileOp::sync);
          injected != 0 || storage().fdatasync(fd_) != 0) {
        return fail("fdatasync " + path_.string(), injected != 0 ? injected : errno);
      }
      RecordHeader next;
      std::memcpy(&next, data + at, sizeof next);
      // A fresh segment always takes a whole record (segment_bytes >= 2 records).
      PG_ASSERT(next.length + record_bytes_max(RecordType::segment_header, 0) <=
                options_.segment_bytes);
      if (!create_segment(next.sequence)) return false;
    }
  }
  return true;
}

void Writer::run_preparer() {
  if (options_.thread_nice != 0) set_thread_nice(options_.thread_nice);
  std::unique_lock lock(prepare_mutex_);
  for (;;) {
    prepare_cv_.wait(lock, [&] {
      return prepared_ == Prepared::preparing || preparer_stopping_.load(std::memory_order_relaxed);
    });
    if (preparer_stopping_.load(std::memory_order_relaxed)) return;
    lock.unlock();
    const bool ok = prepare_segment();
    lock.lock();
    prepared_ = ok ? Prepared::ready : Prepared::none;
  }
}

bool Writer::prepare_segment() {
  // Written zeros, not fallocate's unwritten extents (see the header). 1 MiB of the
  // zero page per write.
  static const unsigned char kZeros[1u << 20] = {};
  storage().unlink(prepared_path_.c_str());  // an unfinished earlier one
  // 0600, as every segment: it becomes one.
  const int fd =
      storage().open(prepared_path_.c_str(), O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0600);
  bool ok = fd >= 0 && fault(FileOp::allocate) == 0;
  for (u64 at = 0; ok && at < options_.segment_bytes; at += sizeof kZeros) {
    if (preparer_stopping_.load(std::memory_order_relaxed)) ok = false;
    ok = ok &&
         storage().pwrite_all(fd, kZeros, std::min<u64>(sizeof kZeros, options_.segment_bytes - at),
                              static_cast<off_t>(at));
  }
  ok = ok && storage().fsync(fd) == 0;  // the zeros and the size, before any rename
  if (fd >= 0) storage().close(fd);
  if (!ok) {
    storage().unlink(prepared_path_.c_str());
    if (!preparer_stopping_.load(std::memory_order_relaxed))
      prepare_failures_.fetch_add(1, std::memory_order_relaxed);
  }
  return ok;
}

bool Writer::segment_prepared() const {
  std::lock_guard lock(prepare_mutex_);
  return prepared_ == Prepared::ready;
}

void Writer::request_prepared_segment() {
  {
    std::lock_guard lock(prepare_mutex_);
    if (prepared_ != Prepared::none) return;
    prepared_ = Prepared::preparing;
  }
  prepare_cv_.notify_one();
}

int Writer::take_prepared_segment(const std::filesystem::path& path) {
  bool ready = false;
  if (preparer_.joinable()) {
    std::lock_guard lock(prepare_mutex_);
    ready = prepared_ == Prepared::ready;
    if (ready) prepared_ = Prepared::none;
  } else {
    ready = prepare_segment();  // one thread: prepared now, at need
  }
  if (!ready) return -1;
  if (storage().rename(prepared_path_.c_str(), path.c_str()) != 0) {
    fail("rename " + prepared_path_.string() + " to " + path.string(), errno);
    return -2;
  }
  const int fd = storage().open(path.c_str(), O_RDWR | O_CLOEXEC, 0);
  if (fd < 0) {
    fail("open " + path.string(), errno);
    return -2;
  }
  if (storage().fsync(dir_fd_) != 0) {
    const int error = errno;
    storage().close(fd);
    fail("fsync journal directory for " + path.string(), error);
    return -2;
  }
  return fd;
}

int Writer::allocate_segment(const std::filesystem::path& path) {
  // 0600: every balance is in here (docs/OPERATING.md, files and permissions).
  const int fd = storage().open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) {
    fail("create " + path.string(), errno);
    return -1;
  }
  // Allocated up front: appends then never change the file's size, and fdatasync
  // does not have to write size metadata.
  if (const int injected = fault(FileOp::allocate);
      injected != 0 || storage().fallocate(fd, static_cast<off_t>(options_.segment_bytes)) != 0) {
    const int error = injected != 0 ? injected : errno;
    storage().close(fd);
    storage().unlink(path.c_str());
    fail("allocate " + path.string(), error);
    return -1;
  }
  if (storage().fsync(fd) != 0 || storage().fsync(dir_fd_) != 0) {
    const int error = errno;
    storage().close(fd);
    fail("fsync new segment " + path.string(), error);
    return -1;
  }
  return fd;
}

bool Writer::create_segment(u64 first_sequence, bool prepare) {
  PG_ASSERT(first_sequence >= 1);
  const std::filesystem::path path = options_.dir / segment_file_name(first_sequence);
  int fd = prepare && options_.prepare_segments ? take_prepared_segment(path) : -1;
  if (fd == -2) return false;
  const bool prepared = fd >= 0;
  if (!prepared) fd = allocate_segment(path);
  if (fd < 0) return false;
  if (fd_ >= 0) storage().close(fd_);
  fd_ = fd;
  path_ = path;
  offset_ = 0;
  next_segment_requested_ = false;
  segments_created_.fetch_add(1, std::memory_order_relaxed);
  // After the count of all: /metrics' allocated (created less prepared) never drops.
  if (prepared) segments_prepared_.fetch_add(1, std::memory_order_relaxed);

  unsigned char header[record_bytes_max(RecordType::segment_header, 0)];
  const u32 length = encode_segment_header(header, first_sequence, options_.identity);
  PG_ASSERT(length == sizeof header && length < options_.segment_bytes);
  if (const int injected = fault(FileOp::write);
      injected != 0 || !storage().pwrite_all(fd_, header, length, 0)) {
    return fail("write " + path_.string(), injected != 0 ? injected : errno);
  }
  offset_ = length;
  return true;
}

bool Writer::open_segment(const std::filesystem::path& path, u64 offset) {
  // Appends continue where the reader found the records end: aligned, inside.
  PG_ASSERT(offset % kRecordAlign == 0 && offset > 0 && offset <= options_.segment_bytes);
  const int fd = storage().open(path.c_str(), O_RDWR | O_CLOEXEC, 0);
  if (fd < 0) return fail("open " + path.string(), errno);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int error = errno;
    storage().close(fd);
    return fail("stat " + path.string(), error);
  }
  // A segment cut short (by a crash or an operator) is allocated to full size again.
  if (static_cast<u64>(st.st_size) < options_.segment_bytes) {
    if (storage().fallocate(fd, static_cast<off_t>(options_.segment_bytes)) != 0 ||
        storage().fsync(fd) != 0) {
      const int error = errno;
      storage().close(fd);
      return fail("allocate " + path.string(), error);
    }
  }
  fd_ = fd;
  path_ = path;
  offset_ = offset;
  return true;
}

bool Writer::fail(const std::string& what, int error) {
  {
    std::lock_guard lock(mutex_);
    if (failure_.ok())
      failure_ = Status::io_error(fmt::format("{}: {}", what, std::strerror(error)));
  }
  failed_.store(true, std::memory_order_release);
  syncing_.store(false, std::memory_order_seq_cst);  // before the notify: see syncing()
  if (options_.durable_event != nullptr) options_.durable_event->notify_all();
  return false;
}

}  // namespace paygate::journal
