#include "cache/order_feed.h"

#include <fmt/format.h>
#include <pthread.h>

#include <algorithm>
#include <unordered_set>

#include "base/clock.h"
#include "base/log.h"
#include "base/thread.h"

namespace paygate::cache {

Result<std::unique_ptr<OrderFeed>> OrderFeed::open(const OrderFeedConfig& config, OrderCache& cache,
                                                   const history::StoreConfig& store_config,
                                                   u32 groups) {
  if (config.batch_rows == 0) return Status::invalid_config("[redis] feed_batch_rows must be > 0");
  Result<std::unique_ptr<history::Store>> store = history::Store::open_reader(store_config);
  if (!store.ok()) return store.status();
  std::unique_ptr<OrderFeed> feed(new OrderFeed(config, cache, groups));
  feed->store_ = std::move(store).value();
  return feed;
}

OrderFeed::OrderFeed(const OrderFeedConfig& config, OrderCache& cache, u32 groups)
    : config_(config), cache_(cache), state_(groups), positions_(groups) {}

OrderFeed::~OrderFeed() {
  stop();
}

void OrderFeed::start() {
  PG_ASSERT(!thread_.joinable());
  {
    const std::lock_guard lock(mutex_);
    stopping_ = false;
  }
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "paygate-feed");
    if (config_.thread_nice != 0) set_thread_nice(config_.thread_nice);
    run();
  });
}

void OrderFeed::stop() {
  {
    const std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool OrderFeed::catch_up() {
  PG_ASSERT(!thread_.joinable());
  for (;;) {
    const Result<u64> written = round();
    if (!written.ok()) return false;
    if (written.value() == 0) return true;
  }
}

void OrderFeed::run() {
  u64 backoff_ns = 0;
  u64 last_complaint_ns = 0;
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    lock.unlock();
    const Result<u64> written = round();
    u64 pause_ns = config_.poll_interval_ns;
    if (!written.ok()) {
      failures_.fetch_add(1, std::memory_order_relaxed);
      backoff_ns = std::clamp<u64>(backoff_ns * 2, 100'000'000, config_.retry_max_ns);
      pause_ns = backoff_ns;
      if (const u64 now = steady_ns(); now - last_complaint_ns >= kNanosPerSecond) {
        last_complaint_ns = now;
        PG_LOG_WARN("event=order_feed_failed retry_ms={} message=\"{}\"", pause_ns / 1'000'000,
                    written.status().message());
      }
    } else {
      backoff_ns = 0;
      if (written.value() > 0) pause_ns = 0;  // more may wait
    }
    lock.lock();
    if (pause_ns > 0)
      wake_.wait_for(lock, std::chrono::nanoseconds(pause_ns), [&] { return stopping_; });
  }
}

Result<u64> OrderFeed::round() {
  u64 written = 0;
  std::vector<history::OrderRow> rows;
  std::unordered_set<u64> ids;  // of the orders in rows
  for (u32 g = 0; g < groups(); ++g) {
    GroupState& state = state_[g];
    if (!state.cursor_read) {
      Result<std::optional<EventKey>> cursor = cache_.cursor(g);
      if (!cursor.ok()) return cursor.status();
      state.cursor = cursor.value();
      state.cursor_read = true;
      positions_[g].store(state.cursor ? state.cursor->sequence : 0, std::memory_order_relaxed);
    }
    Result<std::vector<history::OrderChangeRow>> changes =
        store_->order_changes(g, state.cursor, config_.batch_rows);
    if (!changes.ok()) return changes.status();
    if (changes.value().empty()) continue;
    // Each order changed in the batch is written once, as the store has it now, with
    // its request's texts (which a change's row lacks).
    rows.clear();
    ids.clear();
    for (const history::OrderChangeRow& change : changes.value()) {
      if (!ids.insert(change.order.order.id).second) continue;
      Result<std::optional<history::OrderRow>> row = store_->order(change.order.order.id);
      if (!row.ok()) return row.status();
      if (row.value()) rows.push_back(std::move(*row.value()));
    }
    const history::OrderChangeRow& last = changes.value().back();
    const EventKey cursor{last.sequence, last.n};
    if (Status put = cache_.put_changes(g, rows, state.cursor, cursor); !put.ok()) {
      // Read the cursor again before going on: the script may have run.
      state.cursor_read = false;
      if (put.code() != StatusCode::busy) return put;
      // The cursor is not where this feed left it. Behind it (or gone): Redis was
      // emptied or restored from an older snapshot, and its entries are as the cursor
      // says: go on from there. Ahead of it: another gateway writes these keys (each
      // needs its own key_prefix): that is not followed, and says so.
      Result<std::optional<EventKey>> now = cache_.cursor(g);
      if (!now.ok()) return now.status();
      if (now.value() && (!state.cursor || *now.value() > *state.cursor)) {
        // Kept where it was: every round fails the same way until the prefixes differ.
        state.cursor_read = true;
        return Status::invalid_config(fmt::format(
            "the order feed's cursor of group {} in Redis ({}) is ahead of this gateway's: "
            "another gateway writes with the same [redis] key_prefix",
            g, cache_.cursor_key(g)));
      }
      PG_LOG_WARN(
          "event=order_feed_cursor_moved group={} message=\"Redis was emptied or "
          "restored: the feed goes on from its cursor there\"",
          g);
      state.cursor = now.value();
      state.cursor_read = true;
      positions_[g].store(state.cursor ? state.cursor->sequence : 0, std::memory_order_relaxed);
      ++written;  // (not a change written, but a round to run again)
      continue;
    }
    state.cursor = cursor;
    positions_[g].store(cursor.sequence, std::memory_order_relaxed);
    changes_.fetch_add(changes.value().size(), std::memory_order_relaxed);
    written += changes.value().size();
  }
  return written;
}

}  // namespace paygate::cache
