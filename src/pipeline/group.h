// A group: one ledger, driven by one thread, made durable by its journal.
//
// The whole pipeline, in order (group.cc, Group::process):
//   0. callers submit()            any thread → the input ring (MpscRing)
//   1. sequence                    each command its sequence, each batch one time
//   2. journal                     records staged for the writer thread, which
//                                  writes and fdatasyncs them (group commit)
//   3. apply                       the ledger, while the writer syncs
//   4. release                     a caller's completion runs only once the journal is
//                                  durable up to its last command
// Plus: ticks when idle (holds expire on time), snapshots in a forked child, and
// retention of old snapshots and journal segments.
//
// Lifecycle: open() recovers from the directory (newest good snapshot + journal
// replay; a torn last write is cleared with a warning; corruption refuses to open and
// names the file and offset). start() runs the threads; stop() stops taking requests,
// answers everything taken, syncs, and joins.
#pragma once

#include <atomic>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "base/event.h"
#include "base/fixed_array.h"
#include "base/histogram.h"
#include "journal/writer.h"
#include "ledger/ledger.h"
#include "pipeline/clock.h"
#include "pipeline/event_log.h"
#include "pipeline/request.h"
#include "pipeline/ring.h"
#include "snapshot/snapshot.h"

namespace paygate {

struct GroupConfig {
  std::filesystem::path dir;      // this group's own directory
  LedgerConfig ledger;            // ledger.prefix is the group's region and number
  u32 ring_capacity = 1u << 14;   // requests waiting to be sequenced
  u32 batch_requests_max = 4096;  // requests taken from the ring at once
  // The most commands one request may log (its claim included), and so one journal
  // record: kBatchMax, or less to size records, and with them the journal's least
  // segment, for the simulator's small disks. A larger request: batch_too_large.
  u32 request_commands_max = kBatchMax;
  u32 release_queue_max = 1u << 18;  // requests applied, waiting to be durable
  // Recent events held for /v1/events and statements (EventLog), rounded up to a power
  // of two of at least kBatchMax. 112 bytes each, plus 8 bytes per account of the ledger.
  u32 events_max = 1u << 18;
  u64 journal_segment_bytes = 64u << 20;
  u64 group_commit_bytes_max = 8u << 20;             // bytes staged while a write + sync runs
  u64 journal_sync_gap_ns = 0;                       // see journal::WriterOptions::sync_gap_ns
  u64 journal_sync_gap_commands = 0;                 // ... sync_gap_commands
  u64 journal_sync_gap_quiet_ns = 0;                 // ... and sync_gap_quiet_ns
  bool journal_prepare_segments = false;             // see journal::WriterOptions
  u64 tick_interval_ns = 100'000'000;                // idle this long with a hold due: log a tick
  u64 heartbeat_interval_ns = 10 * kNanosPerSecond;  // idle this long: log a tick anyway
  u64 snapshot_every_commands = 10'000'000;          // 0: never
  u32 snapshots_kept = 2;
  bool keep_journal = false;           // true: never delete journal segments
  u64 submit_timeout_ns = 50'000'000;  // how long submit() waits on a full ring
  u32 idle_spin = 200;                 // polls before the group thread sleeps
  // Scheduling priority (nice) of the group and journal threads: they do little work
  // each but every answer waits on them, so they should run as soon as they can.
  // Best effort: raising priority needs CAP_SYS_NICE; without it they keep the default.
  int thread_nice = -10;
  Clock* clock = nullptr;                      // default: SystemClock
  journal::FaultHook journal_fault = nullptr;  // tests: fail journal file operations
  bool snapshot_fork_fails = false;            // tests: every snapshot's fork fails
  // The simulator (src/sim, docs/SIMULATION.md): every change to the group's files
  // goes through `storage` (null: the system), and with drive_inline the group runs no
  // threads: start() starts none, snapshots are written in process, and the owner
  // turns the group with step() and flush_journal(), all in its one thread.
  Storage* storage = nullptr;
  bool drive_inline = false;
};

// What open() found and did.
struct RecoveryReport {
  std::filesystem::path snapshot_file;  // empty: none used
  u64 snapshot_sequence = 0;
  std::vector<std::string> snapshots_skipped;
  u64 records_replayed = 0;
  u64 commands_replayed = 0;
  u64 next_sequence = 1;
  std::string torn_tail;  // the warning, when a torn last write was cleared
  double seconds = 0;
};

class Group {
 public:
  // Recovers the group from its directory: invalid_config (journal sizes too small,
  // or a journal written with another configuration), busy (another process has it),
  // corruption (names the file and offset), io_error.
  static Result<std::unique_ptr<Group>> open(const GroupConfig& config);
  // The largest journal record a group of this configuration writes.
  static u32 record_bytes_max(const GroupConfig& config) noexcept;
  ~Group();
  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;

  void start();
  void stop();

  // A reader of the journal that must find what it has not yet read (the history
  // store's projector, docs/HISTORY.md): retention keeps the segments after `floor`
  // (its watermark) and the newest snapshot at or before it, unless that would keep
  // more than `segments_max` segments, which is logged and counted
  // (Stats::retention_overrides): the reader then has to be rebuilt. Any time, from
  // any thread: a reader opened later (the history store, opened in the background)
  // takes over from the floor that held the journal for it.
  void set_retention_floor(const std::atomic<u64>* floor, u32 segments_max) noexcept {
    retention_segments_max_.store(segments_max, std::memory_order_relaxed);
    retention_floor_.store(floor, std::memory_order_release);
  }

  // drive_inline only, from the owner's thread. step(): one turn of the group thread's
  // loop (answers what is durable, takes a batch from the ring: sequences, stages and
  // applies it; or when idle, a tick or a snapshot when due); true when it took a
  // batch. flush_journal(): one group commit (write + fdatasync of what is staged),
  // then the answers it makes durable; false when nothing was staged or the journal
  // failed.
  bool step();
  bool flush_journal();

  // Any thread. ok: accepted, the completion will run. overloaded: the ring stayed
  // full for submit_timeout_ns. shutting_down: stopping or stopped. batch_empty,
  // batch_too_large, invalid_command: a malformed request (no completion), such as a
  // claim that covers more commands than follow it in its request, or annotations
  // that name no command of it or too much text (Request::annotations).
  [[nodiscard]] ResultCode submit(const Request& request) noexcept;

  // Only while the group thread is not running (before start(), after stop()).
  const Ledger& ledger() const noexcept { return *ledger_; }

  const RecoveryReport& recovery() const noexcept { return recovery_; }
  const GroupConfig& config() const noexcept { return config_; }
  bool failed() const noexcept { return failed_.load(std::memory_order_acquire); }
  Status failure() const { return journal_->failure(); }

  // Counters and histograms, readable from any thread.
  struct Stats {
    std::atomic<u64> commands{0};
    std::atomic<u64> requests{0};
    std::atomic<u64> records{0};
    std::atomic<u64> ticks{0};
    std::atomic<u64> overloaded{0};
    std::atomic<u64> not_durable{0};
    std::atomic<u64> snapshots{0};
    std::atomic<u64> last_snapshot_sequence{0};
    // Snapshots that could not be started (fork) or written; while they fail, journal
    // segments are not removed and the disk fills, so the next try backs off (1 s,
    // doubling, up to 5 min) and each failure is logged.
    std::atomic<u64> snapshot_failures{0};
    // Segments removed although a reader had not passed them (set_retention_floor).
    std::atomic<u64> retention_overrides{0};
    // The ledger's tables of remembered keys (KeyLane::client, KeyLane::signature).
    std::atomic<u64> idempotency_keys{0};
    std::atomic<u64> signature_keys{0};
    std::atomic<u64> key_capacity_refusals{0};  // idempotency_capacity answers
    // While a table is full: when it next has room (wall ns), for Retry-After; else 0.
    std::atomic<u64> idempotency_room_at_ns{0};
    std::atomic<u64> signature_room_at_ns{0};
    // Command time minus the wall clock (Sequencer), and how often it went past 1 s.
    std::atomic<i64> clock_offset_ns{0};
    std::atomic<u64> clock_jumps{0};
    Histogram batch_requests;    // requests per ring batch
    Histogram release_delay_ns;  // from the journal's durable point to the answers
  };
  const Stats& stats() const noexcept { return stats_; }
  u64 ring_occupancy() const noexcept { return ring_.occupancy(); }
  u64 ring_capacity() const noexcept { return ring_.capacity(); }
  u64 durable_sequence() const noexcept { return journal_->durable_sequence(); }
  const Histogram& sync_ns() const noexcept { return journal_->sync_ns(); }
  // Bytes written to the journal (each group commit's write): the disk bandwidth used.
  u64 journal_written_bytes() const noexcept { return journal_->write_bytes().sum(); }
  const journal::Writer& journal() const noexcept { return *journal_; }
  const Histogram& snapshot_pause_ns() const noexcept { return snapshotter_.pause_ns(); }

 private:
  struct Pending {
    Completion* completion;
    u64 durable_at;  // released when the journal is durable up to here
    Outcome outcome;
  };

  explicit Group(const GroupConfig& config);
  Status recover();
  Status configuration_mismatch(const journal::SegmentHeader& written) const;

  void run();
  bool turn();
  Storage& storage() const noexcept {
    return config_.storage != nullptr ? *config_.storage : Storage::posix();
  }
  u32 take_batch_bytes(u32 available, u64* bytes) const noexcept;
  void process(u32 count, u64 record_bytes);
  void journal_batch(u32 count, u64 bytes, Stamp first);
  unsigned char* reserve_stage(u64 bytes) noexcept;
  void apply_batch(u32 count, Stamp first, u64 taken_ns);
  bool lookup(const Request& request) noexcept;
  EventPage read(const Request& request) noexcept;
  void inject_tick();
  void publish_key_stats() noexcept;
  void publish_clock_stats() noexcept;
  void release_durable() noexcept;
  void refuse_batch(u32 count) noexcept;
  void fail_pending() noexcept;
  void maybe_snapshot();
  void snapshot_failed(const std::string& why);
  void poll_snapshot();
  bool has_work(bool waiting_for_room) const noexcept;
  void idle_wait(bool waiting_for_room);
  ResultCode enqueue(const Request& request) noexcept;
  ResultCode check_annotations(const Request& request) const noexcept;
  bool queue_full() const noexcept { return release_count_ == release_.size(); }
  void push_release(const Pending& pending) noexcept;

  GroupConfig config_;
  Clock* clock_;
  int lock_fd_ = -1;
  std::unique_ptr<Ledger> ledger_;
  std::unique_ptr<EventLog> events_;  // the ledger's event sink
  RecoveryReport recovery_;
  std::unique_ptr<Sequencer> sequencer_;
  std::unique_ptr<journal::Writer> journal_;
  snapshot::Snapshotter snapshotter_;

  MpscRing<Request> ring_;
  u64 next_read_ = 0;  // group thread: the next ring sequence to take
  Event wake_;         // producers published, or the journal moved
  Event space_;        // the group freed ring slots

  FixedArray<Pending> release_;  // a FIFO of applied requests
  u64 release_head_ = 0;
  u64 release_count_ = 0;
  std::vector<CommandResult> scratch_results_;  // for ticks

  std::atomic<bool> accepting_{false};
  std::atomic<u32> submitting_{0};  // producers between the accepting check and publish
  std::atomic<bool> failed_{false};
  u64 last_snapshot_sequence_ = 0;
  std::atomic<const std::atomic<u64>*> retention_floor_{nullptr};
  std::atomic<u32> retention_segments_max_{0};
  u64 snapshot_retry_at_ns_ = 0;   // steady clock: no new try before
  u64 snapshot_backoff_ns_ = 0;    // 0 while snapshots succeed
  u64 opened_at_ns_ = 0;           // idle time for ticks is counted from here at the latest
  u64 refusals_logged_ = 0;        // key_capacity_refusals when last logged
  u64 refusals_logged_at_ns_ = 0;  // steady clock
  std::thread thread_;
  Stats stats_;
};

// Waits for `done`, a request submitted to `group`: blocks, or, for a group driven
// inline (GroupConfig::drive_inline), turns it from this thread until it answers.
const Outcome& wait_for(Group& group, WaitableCompletion& done);

// Applies `commands`, each on its own, in requests of up to kBatchMax, and waits until
// each is durable: for setup, tools and the engine's own steps, not for hot paths.
// results[i] answers commands[i]. Returns ok, or why a request was not taken or not
// made durable (the commands after it were not submitted).
ResultCode apply_and_wait(Group& group, std::span<const Command> commands,
                          std::vector<CommandResult>& results);

}  // namespace paygate
