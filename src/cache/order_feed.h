// The order feed (docs/REDIS.md): one thread that writes every order change the
// history store holds into the orders' Redis entries (cache/order_cache.h), in each
// group's order, so that an entry follows its order without anyone reading it first:
// the seeds' query service, for paygate's readers and any other service's.
//
// Per group it keeps a cursor in Redis itself (`<prefix>feed:<group>`: the key of the
// last order change written), set by the same script that writes the batch's entries,
// so the cursor and the entries never disagree, even in a Redis restored from its own
// snapshot. A Redis without a cursor (new, flushed) is fed from each group's first
// change in the store; an entry is replaced only by a newer sequence, so going over
// changes again is harmless.
//
// Threads: open/start/stop from one thread; the counters from any.
#pragma once

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "base/status.h"
#include "cache/order_cache.h"
#include "history/store.h"

namespace paygate::cache {

struct OrderFeedConfig {
  bool enabled = true;
  u32 batch_rows = 1'000;             // order changes per script, at most
  u64 poll_interval_ns = 20'000'000;  // how often it looks for more when idle
  u64 retry_max_ns = 30'000'000'000;  // back-off cap while Redis fails
  int thread_nice = 10;
};

class OrderFeed {
 public:
  // Opens a reading connection of its own to the history store `store_config` (it must exist).
  static Result<std::unique_ptr<OrderFeed>> open(const OrderFeedConfig& config, OrderCache& cache,
                                                 const history::StoreConfig& store_config,
                                                 u32 groups);
  ~OrderFeed();
  OrderFeed(const OrderFeed&) = delete;
  OrderFeed& operator=(const OrderFeed&) = delete;

  void start();
  void stop();
  // Runs rounds until every group's cursor reaches the store's last change (tests and
  // tools; not while started). False when Redis or the store failed.
  bool catch_up();

  u32 groups() const noexcept { return static_cast<u32>(positions_.size()); }
  // The sequence of the last change written for group g (0: none yet).
  u64 position(u32 g) const noexcept { return positions_[g].load(std::memory_order_relaxed); }
  u64 changes() const noexcept { return changes_.load(std::memory_order_relaxed); }
  u64 failures() const noexcept { return failures_.load(std::memory_order_relaxed); }

 private:
  OrderFeed(const OrderFeedConfig& config, OrderCache& cache, u32 groups);
  void run();
  // One pass over the groups: how many changes it wrote (0: every group is caught up);
  // a failed Status stops the pass.
  Result<u64> round();

  struct GroupState {
    bool cursor_read = false;  // from Redis, once per life (and after each failure)
    std::optional<EventKey> cursor;
  };

  OrderFeedConfig config_;
  OrderCache& cache_;
  std::unique_ptr<history::Store> store_;
  std::vector<GroupState> state_;
  std::vector<std::atomic<u64>> positions_;
  std::atomic<u64> changes_{0}, failures_{0};
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;  // under mutex_
};

}  // namespace paygate::cache
