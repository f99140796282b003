// The history store's worker (docs/HISTORY.md): one thread that keeps every group's
// projection up to what the group has made durable, and tells each group how far it
// has read so that the journal's retention keeps the rest. A slow or failing store
// never holds a group back: the worker only reads the groups' files and their
// durable sequence, and retention stops waiting for it past a bound.
#pragma once

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "base/histogram.h"
#include "history/projector.h"
#include "history/store.h"
#include "pipeline/engine.h"

namespace paygate::history {

struct HistoryConfig {
  bool enabled = true;
  // Where (docs/HISTORY.md): SQLite's file (default <data dir>/history.sqlite), or a
  // MariaDB server's database.
  StoreConfig store;
  u64 poll_interval_ns = 20'000'000;  // how often it looks for more when idle
  u64 batch_events = 200'000;         // events (and other rows but statement lines) per transaction
  // Retention waits for the store up to this many journal segments per group.
  u32 retention_segments_max = 64;
  // How long a start tries again to open a store it cannot (a MariaDB server not up
  // yet), a second apart, before it goes on without history.
  u64 open_retry_ns = 30 * kNanosPerSecond;
  // After that, a store still closed is tried again in the background, first after
  // this long, then twice as long each time up to 5 min (0: only at the next start).
  u64 reopen_interval_ns = 10 * kNanosPerSecond;
  int thread_nice = 19;  // the worker's nice value (best effort): the lowest
  // How long a list of orders waits for the store to reflect what was durable when it
  // was asked (or its min_sequence), and a wallet checkout for its callback_url.
  u64 read_wait_ns = 5 * kNanosPerSecond;
  u64 redirect_wait_ns = kNanosPerSecond;
  // How long a read of an order or transfer the group holds waits for the store to have
  // its request's texts (merchant_ref, reference, metadata, …).
  u64 texts_wait_ns = kNanosPerSecond;
  // An order processing longer than this needs attention (GET /v1/orders?attention=true).
  u64 attention_after_ns = 3600 * kNanosPerSecond;
};

// The retention floor that holds a group's journal for a store whose place in it is not
// known (it could not open): the oldest snapshot on disk in `group_dir` (0: none). The
// last run kept the newest snapshot at or before the store's watermark, so the oldest
// is at or before it; a floor there keeps that snapshot and every segment after it, all
// the next start's projector needs to catch up (within retention_segments_max).
u64 unknown_reader_floor(const std::filesystem::path& group_dir);

class HistoryWorker {
 public:
  // Opens the store and a projector per group, each at the store's watermark (its
  // ledger loaded and replayed to there), and sets the groups' retention floors.
  // Before the engine starts. A group whose projector cannot open (its journal gone
  // past the store's watermark: rebuild) is logged and left out; a store that cannot
  // open fails the whole.
  static Result<std::unique_ptr<HistoryWorker>> open(const HistoryConfig& config, Engine& engine);
  ~HistoryWorker();
  HistoryWorker(const HistoryWorker&) = delete;
  HistoryWorker& operator=(const HistoryWorker&) = delete;

  void start();
  void stop();  // finishes the round it is in

  Store& store() noexcept { return *store_; }
  const HistoryConfig& config() const noexcept { return config_; }
  u32 groups() const noexcept { return static_cast<u32>(projectors_.size()); }
  // How far group g's rows reach (every command up to it), for retention and readers.
  u64 watermark(u32 g) const noexcept { return floors_[g].value.load(std::memory_order_acquire); }
  // The first sequence of group g the store holds (1: its whole history; 0: none or
  // the store cannot say). Any thread.
  u64 first_sequence(u32 g) {
    const Result<u64> first = store_->first_sequence(g);
    return first.ok() ? first.value() : 0;
  }
  // Whether group g's history runs (its projector opened; else logged then).
  bool projecting(u32 g) const noexcept { return projectors_[g] != nullptr; }
  // How long group g's rows have been behind `durable` (0: they reach it).
  u64 behind_ns(u32 g, u64 durable) const noexcept;
  // For a read that asks for rows up to `sequence` of group g (?min_sequence=): hands
  // `waiter` an Outcome, on the worker's thread, once the watermark reaches it, or
  // `timeout_ns` passes (checked each poll interval), or the worker stops. False, and
  // nothing kept, when there is nothing to wait for: the watermark is there, the group
  // is not projected, or kWaitersMax reads wait already (the caller answers now).
  bool wait_async(u32 g, u64 sequence, u64 timeout_ns, Completion* waiter);
  static constexpr std::size_t kWaitersMax = 1u << 16;

  // For /metrics.
  u64 rows_written() const noexcept { return rows_.load(std::memory_order_relaxed); }
  u64 failures() const noexcept { return failures_.load(std::memory_order_relaxed); }
  const Histogram& round_ns() const noexcept { return round_ns_; }

 private:
  HistoryWorker(const HistoryConfig& config, Engine& engine);
  void run();
  // One pass over the groups; true when any made progress.
  bool round();
  // Completes the waiters whose watermark came or whose time ran out (all: `all`).
  void release_waiters(bool all);

  struct Waiter {
    u32 group = 0;
    u64 sequence = 0;
    u64 deadline_ns = 0;  // steady clock
    Completion* completion = nullptr;
  };

  struct alignas(64) Floor {
    std::atomic<u64> value{0};
    std::atomic<u64> caught_up_ns{0};  // steady clock: when it last reached durable
  };

  HistoryConfig config_;
  Engine& engine_;
  std::unique_ptr<Store> store_;
  std::vector<std::unique_ptr<Projector>> projectors_;
  std::unique_ptr<Floor[]> floors_;
  std::vector<u64> failing_since_ns_;  // per group: 0 while it projects
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable moved_;  // a watermark moved, or stop
  bool stopping_ = false;
  std::vector<Waiter> waiters_;  // under mutex_
  // Worker thread: the last round stopped at a transaction's worth with more to do.
  bool behind_by_a_batch_ = false;
  std::atomic<u64> rows_{0};
  std::atomic<u64> failures_{0};
  Histogram round_ns_;
};

}  // namespace paygate::history
