#include "history/worker.h"

#include <chrono>

#include "base/assert.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/thread.h"
#include "snapshot/snapshot.h"

namespace paygate::history {

u64 unknown_reader_floor(const std::filesystem::path& group_dir) {
  const std::vector<std::pair<u64, std::filesystem::path>> snapshots = snapshot::list(group_dir);
  return snapshots.empty() ? 0 : snapshots.back().first;  // (newest first)
}

HistoryWorker::HistoryWorker(const HistoryConfig& config, Engine& engine)
    : config_(config), engine_(engine) {}

HistoryWorker::~HistoryWorker() {
  stop();
}

Result<std::unique_ptr<HistoryWorker>> HistoryWorker::open(const HistoryConfig& config,
                                                           Engine& engine) {
  std::unique_ptr<HistoryWorker> worker(new HistoryWorker(config, engine));
  Result<std::unique_ptr<Store>> store = Store::open(config.store);
  if (!store.ok()) return store.status();
  worker->store_ = std::move(store).value();
  worker->floors_ = std::make_unique<Floor[]>(engine.groups());
  worker->failing_since_ns_.assign(engine.groups(), 0);
  for (u32 g = 0; g < engine.groups(); ++g) {
    const GroupConfig& group = engine.group(g).config();
    Result<std::unique_ptr<Projector>> projector =
        Projector::open(ProjectorConfig{.dir = group.dir,
                                        .ledger = group.ledger,
                                        .group = g,
                                        .batch_events = config.batch_events},
                        *worker->store_);
    if (!projector.ok()) {
      // This group's history stops here (the others go on). Retention keeps its journal
      // all the same, within retention_segments_max: the cause may pass (the store's
      // server unreachable for a moment), and the next start then catches up.
      worker->floors_[g].value.store(unknown_reader_floor(group.dir), std::memory_order_release);
      engine.group(g).set_retention_floor(&worker->floors_[g].value, config.retention_segments_max);
      worker->failures_.fetch_add(1, std::memory_order_relaxed);
      PG_LOG_ERROR("event=history_failed group={} message=\"{}\"", g, projector.status().message());
      worker->projectors_.push_back(nullptr);
      continue;
    }
    worker->floors_[g].value.store(projector.value()->watermark(), std::memory_order_release);
    worker->floors_[g].caught_up_ns.store(steady_ns(), std::memory_order_relaxed);
    worker->projectors_.push_back(std::move(projector).value());
    engine.group(g).set_retention_floor(&worker->floors_[g].value, config.retention_segments_max);
    PG_LOG_INFO("event=history_opened group={} watermark={} first_sequence={} store=\"{}\"", g,
                worker->projectors_.back()->watermark(),
                worker->projectors_.back()->first_sequence(), config.store.describe());
  }
  return worker;
}

void HistoryWorker::start() {
  PG_ASSERT(!thread_.joinable());
  thread_ = std::thread([this] {
    // Below the groups and the edge: on a busy machine the store falls behind (and
    // catches up when load eases) rather than taking CPU from the answers.
    if (config_.thread_nice != 0) set_thread_nice(config_.thread_nice);
    run();
  });
}

void HistoryWorker::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  moved_.notify_all();
  if (thread_.joinable()) thread_.join();
  release_waiters(/*all=*/true);
}

u64 HistoryWorker::behind_ns(u32 g, u64 durable) const noexcept {
  // A group left out is not followed at all: its lag in commands says so.
  if (!projecting(g) || watermark(g) >= durable) return 0;
  const u64 now = steady_ns();
  const u64 since = floors_[g].caught_up_ns.load(std::memory_order_relaxed);
  return now > since ? now - since : 0;
}

bool HistoryWorker::wait_async(u32 g, u64 sequence, u64 timeout_ns, Completion* waiter) {
  if (g >= groups() || !projecting(g)) return false;
  std::lock_guard lock(mutex_);  // the watermark moves under it: no wake-up is lost
  if (stopping_ || watermark(g) >= sequence || waiters_.size() >= kWaitersMax) return false;
  waiters_.push_back({g, sequence, steady_ns() + timeout_ns, waiter});
  return true;
}

void HistoryWorker::release_waiters(bool all) {
  std::vector<Completion*> done;
  {
    std::lock_guard lock(mutex_);
    if (waiters_.empty()) return;
    const u64 now = steady_ns();
    std::erase_if(waiters_, [&](const Waiter& w) {
      const bool release = all || watermark(w.group) >= w.sequence || now >= w.deadline_ns;
      if (release) done.push_back(w.completion);
      return release;
    });
  }
  // Outside the lock: a completion hands the read back to its IO thread, which looks
  // at the watermark again to tell which it was.
  for (Completion* c : done)
    c->complete(Outcome{});
}

void HistoryWorker::run() {
  for (;;) {
    const u64 started = steady_ns();
    if (round()) round_ns_.record(steady_ns() - started);
    release_waiters(/*all=*/false);
    // Between rounds it waits, even when there is more: a round of a few commands costs
    // a transaction and its sync, so under load rounds should be few and large. Behind
    // by more than a transaction's worth, it goes on at once (each round writes one
    // transaction a group, so that waiting reads are answered between them).
    std::unique_lock lock(mutex_);
    if (stopping_) return;
    if (!behind_by_a_batch_) {
      moved_.wait_for(lock, std::chrono::nanoseconds(config_.poll_interval_ns),
                      [&] { return stopping_; });
      if (stopping_) return;
    }
  }
}

bool HistoryWorker::round() {
  bool progressed = false;
  bool behind = false;
  for (u32 g = 0; g < projectors_.size(); ++g) {
    if (projectors_[g] == nullptr) continue;  // failed to open: logged then
    Projector& projector = *projectors_[g];
    const u64 durable = engine_.group(g).durable_sequence();
    if (durable <= projector.watermark()) {
      floors_[g].caught_up_ns.store(steady_ns(), std::memory_order_relaxed);
      continue;
    }
    const u64 rows_before = store_->rows_written();
    const Result<u64> projected = projector.catch_up(durable);
    if (!projected.ok()) {
      failures_.fetch_add(1, std::memory_order_relaxed);
      // Logged when it starts failing and once a minute while it does.
      const u64 now = steady_ns();
      if (failing_since_ns_[g] == 0 || now - failing_since_ns_[g] > 60 * kNanosPerSecond) {
        failing_since_ns_[g] = now;
        PG_LOG_ERROR("event=history_failed group={} watermark={} message=\"{}\"", g,
                     projector.watermark(), projected.status().message());
      }
      continue;
    }
    failing_since_ns_[g] = 0;
    // More to do (a call writes one transaction): the next round comes at once.
    behind = behind || (projected.value() > 0 && projector.watermark() < durable);
    if (projector.watermark() >= durable) {
      floors_[g].caught_up_ns.store(steady_ns(), std::memory_order_relaxed);
    }
    rows_.fetch_add(store_->rows_written() - rows_before, std::memory_order_relaxed);
    // Moved (a retried write moves it without new commands, too).
    if (projector.watermark() != watermark(g)) {
      progressed = true;
      {
        std::lock_guard lock(mutex_);
        floors_[g].value.store(projector.watermark(), std::memory_order_release);
      }
      moved_.notify_all();
    }
  }
  behind_by_a_batch_ = behind;
  return progressed;
}

}  // namespace paygate::history
