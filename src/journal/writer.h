// Appends records to a group's journal with group commit.
//
// Threads: the group thread stages encoded records (reserve/commit); the writer's own
// thread takes everything staged, writes it with one pwrite per segment touched,
// fdatasyncs, and then moves durable_sequence(). While it syncs, the group thread
// stages the next batch, so a batch grows with load, capped by staging_bytes (when
// the stage is full, reserve() says so and the group waits for the sync to finish).
//
// Segments (with prepare_segments): the next segment is prepared ahead of need by a
// thread of the writer's own (started with it), asked once the current segment is
// half used: a file of
// segment_bytes of written zeros, synced, under a name that is not a segment's
// (kPreparedSegmentName). Roll-over renames it into place and
// syncs the directory; it never waits for the preparation: when none is ready it
// allocates a segment as it always did (fallocate), and the next roll-over takes
// the prepared one. Zeros that were written, unlike fallocate's unwritten extents,
// leave nothing for fdatasync to convert, so a sync inside a prepared segment
// commits data only (docs/LEDGER.md, journal). Without start() (the simulator's one
// thread) the preparation runs inline at roll-over, through the same code.
//
// Failure: a write, sync or allocation that fails puts the writer in a failed state
// for good: durable_sequence() stops, nothing is retried (after a failed fdatasync
// the page cache cannot be trusted), and the group answers not_durable until a
// restart recovers from what is on disk.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/event.h"
#include "base/histogram.h"
#include "base/status.h"
#include "base/storage.h"
#include "journal/format.h"

namespace paygate::journal {

// Where appending continues, as found by scan(): the segment, the offset in it, and
// the sequence of the next command. An empty file: start a new segment there.
struct AppendPosition {
  std::filesystem::path file;
  u64 offset = 0;
  u64 next_sequence = 1;
};

enum class FileOp { write, sync, allocate, remove };
// The next segment while it is prepared and until a roll-over takes it. A start
// removes one left by an earlier run: it holds nothing (docs/OPERATING.md).
inline constexpr const char* kPreparedSegmentName = "journal-next.prepared";
// For tests: called before each file operation; a non-zero errno makes it fail so.
using FaultHook = std::function<int(FileOp)>;

struct WriterOptions {
  std::filesystem::path dir;
  SegmentHeader identity{};  // written at the start of every segment
  u64 segment_bytes = 64u << 20;
  u64 staging_bytes = 4u << 20;            // the group-commit cap, in bytes
  u32 record_bytes_max = kRecordBytesMax;  // the largest record it is given
  Event* durable_event = nullptr;          // notified when durable_sequence() moves or on failure
  int thread_nice = 0;                     // the writer thread's nice value (best effort)
  // Under load, at most one write + sync starts per this interval: when a sync ends
  // with records already staged, the writer waits out the rest of the interval so
  // that the batch grows and syncs (each a context switch and a device round trip)
  // become fewer, for at most this much more latency. A record staged while the
  // writer is idle is synced at once. 0: sync as soon as the previous one ends.
  u64 sync_gap_ns = 0;
  // The gap ends early once this many commands are staged: a batch that big already
  // shares its sync widely, and its requests (closed-loop clients waiting on them)
  // need not wait longer. 0: the gap always runs its length.
  u64 sync_gap_commands = 0;
  // ...and once nothing more has been staged for this long: in a closed loop (each
  // client waits for its answer before sending more) every client is waiting on the
  // staged batch, and the rest of the gap would only delay them. 0: no such end.
  u64 sync_gap_quiet_ns = 0;
  // Roll over into segments prepared ahead of need (above). Off by default until
  // measurements say it helps: with it, the longest batch waits of the ledger-benchmark
  // shape were longer in a first comparison (docs/JOURNAL.md).
  bool prepare_segments = false;
  FaultHook fault = nullptr;
  Storage* storage = nullptr;  // null: Storage::posix()
};

class Writer {
 public:
  // Opens the journal for appending at `at`, creating its first segment if needed.
  static Result<std::unique_ptr<Writer>> open(const WriterOptions& options,
                                              const AppendPosition& at);
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  // Runs the writer thread, which flush()es whatever is staged as soon as it is (with
  // the sync gap under load). Without start(), whoever owns the writer calls flush()
  // itself (the simulator: one thread for everything).
  void start();
  // Writes and syncs whatever is staged, then stops the writer thread.
  void stop();
  // One group commit: takes everything staged, writes it, fdatasyncs, and moves
  // durable_sequence(). False when nothing was staged or the writer failed (before or
  // now). Called by the writer thread, or, without one, by its owner.
  bool flush();

  // Group thread only. Space for `bytes` of records in the stage, or null when the
  // stage cannot take them now (or the writer failed). A non-null reserve() must be
  // followed by commit() before the next reserve(). REQUIRES: bytes <= staging_bytes.
  unsigned char* reserve(u32 bytes) noexcept;
  // `bytes` of whole records were written at the reserved place; the last command in
  // them has sequence `last_sequence` (0: none, e.g. nothing but padding).
  void commit(u32 bytes, u64 last_sequence) noexcept;

  // Every command with a sequence up to this one is on disk.
  u64 durable_sequence() const noexcept {
    return durable_sequence_.load(std::memory_order_acquire);
  }
  bool failed() const noexcept { return failed_.load(std::memory_order_acquire); }
  // Why the writer failed (io_error: the operation, the file, the system's reason); ok
  // while it has not.
  Status failure() const;
  // True from when the writer takes a batch until its write and fdatasync are over,
  // after which it notifies durable_event: a producer that reads true (after a
  // seq_cst fence) may count on that notify to wake the group.
  bool syncing() const noexcept { return syncing_.load(std::memory_order_seq_cst); }

  // write + fdatasync of one group commit
  const Histogram& sync_ns() const noexcept { return sync_ns_; }
  // The parts: staged until the writer took it, the writes, the fdatasync alone.
  const Histogram& pickup_ns() const noexcept { return pickup_ns_; }
  const Histogram& write_ns() const noexcept { return write_ns_; }
  const Histogram& fdatasync_ns() const noexcept { return fdatasync_ns_; }
  const Histogram& write_bytes() const noexcept { return write_bytes_; }
  // When durable_sequence() last moved (steady clock, ns).
  u64 durable_at_ns() const noexcept { return durable_at_ns_.load(std::memory_order_acquire); }
  u64 staged_bytes() const noexcept { return staged_bytes_hint_.load(std::memory_order_relaxed); }
  u64 segments_created() const noexcept {
    return segments_created_.load(std::memory_order_relaxed);
  }
  // Of those, the ones a roll-over took prepared (zero-filled ahead of need); the rest
  // were allocated when needed (the first, and any roll-over that found none ready).
  u64 segments_prepared() const noexcept {
    return segments_prepared_.load(std::memory_order_relaxed);
  }
  // Preparations that failed (a write or sync of the zeros): the file is removed, and
  // the next roll-over allocates as it would have without one.
  u64 prepare_failures() const noexcept {
    return prepare_failures_.load(std::memory_order_relaxed);
  }
  // A prepared segment waits for the next roll-over.
  bool segment_prepared() const;
  const std::filesystem::path& current_file() const noexcept { return path_; }

 private:
  explicit Writer(const WriterOptions& options);

  void run();
  // The preparer thread: prepares the next segment whenever none is ready.
  void run_preparer();
  // Writes the prepared segment (zeros, synced); false (the file removed) on failure.
  bool prepare_segment();
  // Asks the preparer for the next segment, unless one is ready or on its way.
  void request_prepared_segment();
  // Takes the prepared segment, if one is ready, as `path`: renamed into place, the
  // directory synced. The open file, -1 when none was ready, or -2 after fail().
  int take_prepared_segment(const std::filesystem::path& path);
  // Creates `path` allocated to segment_bytes (fallocate), synced with its directory.
  // The open file, or -1 after fail().
  int allocate_segment(const std::filesystem::path& path);
  void wait_out_sync_gap(std::chrono::steady_clock::time_point deadline, u64 synced_through);
  bool write_all(const unsigned char* data, u64 size);
  // The segment that starts at `first_sequence`: the prepared one when one is ready
  // (with `prepare` and no preparer thread, prepared here first), else allocated.
  bool create_segment(u64 first_sequence, bool prepare = true);
  bool open_segment(const std::filesystem::path& path, u64 offset);
  bool fail(const std::string& what, int error);
  int fault(FileOp op) const { return options_.fault ? options_.fault(op) : 0; }
  Storage& storage() const noexcept { return *options_.storage; }

  WriterOptions options_;
  int dir_fd_ = -1;
  int fd_ = -1;
  std::filesystem::path path_;
  u64 offset_ = 0;

  std::mutex mutex_;  // guards the stage and the swap
  std::condition_variable staged_cv_;
  std::vector<unsigned char> staging_;  // filled by the group thread
  std::vector<unsigned char> writing_;  // written by the writer thread
  u64 staged_ = 0;
  u64 staged_last_sequence_ = 0;
  bool stopping_ = false;
  std::atomic<u64> staged_bytes_hint_{0};

  std::atomic<u64> durable_sequence_{0};
  std::atomic<bool> failed_{false};
  std::atomic<bool> syncing_{false};
  Status failure_;  // guarded by mutex_

  u64 first_staged_ns_ = 0;  // guarded by mutex_: when the stage went from empty to not
  std::atomic<u64> durable_at_ns_{0};
  Histogram sync_ns_;
  Histogram pickup_ns_;
  Histogram write_ns_;
  Histogram fdatasync_ns_;
  Histogram write_bytes_;
  std::atomic<u64> segments_created_{0};
  std::atomic<u64> segments_prepared_{0};
  std::thread thread_;

  std::filesystem::path prepared_path_;
  bool next_segment_requested_ = false;  // writer thread: asked for the current one's successor
  enum class Prepared { none, preparing, ready };
  mutable std::mutex prepare_mutex_;  // guards prepared_ and the cv
  std::condition_variable prepare_cv_;
  Prepared prepared_ = Prepared::none;  // ready: the file is complete and synced
  std::atomic<bool> preparer_stopping_{false};
  std::atomic<u64> prepare_failures_{0};
  std::thread preparer_;
};

}  // namespace paygate::journal
