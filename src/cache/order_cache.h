// Orders read through Redis (docs/REDIS.md), the seeds' query service: an entry per
// order, a Redis hash `<prefix>order:<ord_id>` holding the order's row as the history
// store has it, and the sequence of the command that last changed it.
//
// - An entry is replaced only by one of a newer sequence (a Lua script compares and
//   writes at once), so a reader's load of an old row never overwrites a newer one
//   that the feed (cache/order_feed.h) wrote meanwhile, whatever their order.
// - A miss is loaded from the store by exactly one reader per key: the first takes a
//   lock record (`<prefix>lock:<ord_id>`, SET NX with an expiry, so a loader that dies
//   frees it), reads the store and writes the entry; the others wait, bounded, for the
//   entry (or for the lock to come free, when they take it), and past the bound are
//   answered `pending`.
// - Redis is a cache: when it cannot be reached the caller reads the store itself.
//
// Threads: any; each call takes a connection from a pool (made on demand, kept up to
// `connections_idle_max`).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "cache/redis.h"
#include "history/store.h"

namespace paygate::cache {

struct OrderCacheConfig {
  RedisAddress redis;  // address empty: no cache
  std::string key_prefix = "paygate:";
  // Entries expire this long after they were last written (0: never): with Redis's
  // maxmemory-policy volatile-lru, old orders leave first and the feed's cursors never.
  u64 entry_ttl_s = 7 * 86'400;
  u64 lock_ns = 2'000'000'000;  // a loader's lock lapses after this (a loader that died)
  u64 wait_ns = 500'000'000;    // how long a reader waits for another's load: then pending
  u64 poll_ns = 2'000'000;      // how often a waiting reader looks again
  // After Redis could not be reached (or did not answer), it is skipped this long:
  // readers go to the store without spending a timeout each.
  u64 failure_pause_ns = 1'000'000'000;
  u32 connections_idle_max = 16;
};

// An order row as an entry keeps it: a versioned binary form (the order book's record
// as the history store keeps it, and the creating request's texts). nullopt: not one.
std::string encode_order_row(const history::OrderRow& row);
std::optional<history::OrderRow> decode_order_row(std::string_view bytes);

class OrderCache {
 public:
  static Result<std::unique_ptr<OrderCache>> open(const OrderCacheConfig& config);

  enum class Outcome : u8 {
    hit,        // the entry was there
    loaded,     // this reader loaded it from the store (and wrote the entry)
    waited,     // another reader loaded it while this one waited
    not_found,  // the store has no row of the order
    pending,    // another reader is loading it, and did not finish within wait_ns
  };
  struct Read {
    Outcome outcome = Outcome::pending;
    std::optional<history::OrderRow> row = std::nullopt;  // hit, loaded, waited
  };
  // Reads the store's row of an order: it is called by at most one reader per key at a
  // time (across every process that shares the Redis), and its row becomes the entry;
  // one it sets `keep` false for (a row that may not be the order's last) for
  // kUnsureTtlMs only, for the readers waiting on the load.
  using Loader = std::function<Result<std::optional<history::OrderRow>>(bool& keep)>;
  // The order `id`'s row, from its entry or loaded. A failed Status: Redis could not be
  // used (the caller reads the store itself), or the loader failed.
  Result<Read> order(u64 id, const Loader& load);
  // Writes the row as the order's entry unless the entry is of the same or a newer
  // sequence (row.updated_sequence); true when written.
  Result<bool> put(const history::OrderRow& row);
  // Writes each row as put() does and, in the same script (atomically), moves the
  // feed's cursor of `group` from `from` (nullopt: none) to `to`, the key of the last
  // order change the rows reflect. Busy, and nothing written, when the cursor in Redis
  // is not `from`.
  Status put_changes(u32 group, const std::vector<history::OrderRow>& rows,
                     std::optional<EventKey> from, EventKey to);
  // The feed's cursor of `group` (nullopt: none, a new or emptied Redis).
  Result<std::optional<EventKey>> cursor(u32 group);
  // Removes the order's entry (tests, and an entry that cannot be read).
  Status forget(u64 id);

  static constexpr u64 kUnsureTtlMs = 1'000;

  std::string entry_key(u64 id) const;
  std::string lock_key(u64 id) const;
  std::string cursor_key(u32 group) const;
  const OrderCacheConfig& config() const noexcept { return config_; }

  // For /metrics.
  struct Counters {
    // Reads by outcome.
    std::atomic<u64> hits{0}, loaded{0}, waits{0}, not_found{0}, pending{0};
    std::atomic<u64> store_reads{0};  // loader calls
    std::atomic<u64> lock_seen{0};    // reads that found another's load under way
    std::atomic<u64> errors{0}, writes{0}, fallbacks{0};
  };
  const Counters& counters() const noexcept { return counters_; }
  void count_error() noexcept { counters_.errors.fetch_add(1, std::memory_order_relaxed); }
  // Counts a read the caller answered from the store itself, Redis failing.
  void count_fallback() noexcept { counters_.fallbacks.fetch_add(1, std::memory_order_relaxed); }

 private:
  explicit OrderCache(const OrderCacheConfig& config);
  class Lease;
  std::unique_ptr<RedisConnection> take();
  // Ok for a reply; else counts the failure (and pauses Redis if it was unreachable).
  // `readers`: a failure to reach Redis pauses it for readers (not for the feed's).
  Status failed(const Result<RedisReply>& reply, const RedisConnection& redis, bool readers = true);
  Status paused() const;  // failed while Redis is skipped after a failure
  std::string new_token();
  void give_back(std::unique_ptr<RedisConnection> connection);
  std::vector<std::string> entry_args(const history::OrderRow& row) const;
  Result<Read> load(RedisConnection& redis, u64 id, const std::string& lock,
                    const std::string& token, const Loader& loader);

  OrderCacheConfig config_;
  std::mutex pool_mutex_;
  std::vector<std::unique_ptr<RedisConnection>> idle_;
  std::atomic<u64> tokens_{0};
  std::atomic<u64> down_until_ns_{0};  // steady clock
  Counters counters_;
};

std::string_view name(OrderCache::Outcome outcome) noexcept;

}  // namespace paygate::cache
