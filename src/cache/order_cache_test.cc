#include "cache/order_cache.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "base/temp_dir.h"
#include "cache/redis_test_support.h"

namespace paygate::cache {
namespace {

using namespace std::chrono_literals;

history::OrderRow row_of(u64 id, u64 sequence, OrderStatus status = OrderStatus::success) {
  history::OrderRow row;
  row.order.id = id;
  row.order.merchant = 0x0001'0000'0000'0007;
  row.order.amount = 1'250;
  row.order.status = status;
  row.group = 1;
  row.created_sequence = 3;
  row.updated_sequence = sequence;
  row.merchant_ref = "ref-" + std::to_string(id);
  row.description = "a lamp";
  row.metadata = R"({"sku":"l1"})";
  row.callback_url = "https://shop.example/back";
  return row;
}

TEST(OrderRowCoding, ARowComesBackAsItWentAndAnythingElseIsRefused) {
  const history::OrderRow row = row_of(42, 9);
  const std::string bytes = encode_order_row(row);
  const std::optional<history::OrderRow> back = decode_order_row(bytes);
  ASSERT_TRUE(back);
  EXPECT_EQ(std::memcmp(&back->order, &row.order, sizeof(Order)), 0);
  EXPECT_EQ(back->group, row.group);
  EXPECT_EQ(back->created_sequence, row.created_sequence);
  EXPECT_EQ(back->updated_sequence, row.updated_sequence);
  EXPECT_EQ(back->merchant_ref, row.merchant_ref);
  EXPECT_EQ(back->description, row.description);
  EXPECT_EQ(back->metadata, row.metadata);
  EXPECT_EQ(back->ipn_url, "");
  EXPECT_EQ(back->callback_url, row.callback_url);
  // Every shorter prefix, a longer text, and another format are not rows.
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_FALSE(decode_order_row(std::string_view(bytes).substr(0, n))) << n;
  }
  EXPECT_FALSE(decode_order_row(bytes + "x"));
  std::string other = bytes;
  other[0] = 1;  // the layout before the record's format was written
  EXPECT_FALSE(decode_order_row(other));
  other = bytes;
  other[1] = static_cast<char>(history::kOrderStateFormat + 1);  // another record layout
  EXPECT_FALSE(decode_order_row(other));
}

TEST(OrderCacheConfig, ABadAddressIsRefused) {
  for (const char* address : {"", "localhost", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:70000",
                              ":6379", "127.0.0.1:63x79"}) {
    OrderCacheConfig config;
    config.redis.address = address;
    EXPECT_FALSE(OrderCache::open(config).ok()) << address;
  }
  OrderCacheConfig config;
  config.redis.address = "/run/redis/redis.sock";
  EXPECT_TRUE(OrderCache::open(config).ok());
}

class OrderCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::RedisServer::installed()) {
      GTEST_SKIP() << "redis-server is not installed (scripts/install-deps.sh installs it)";
    }
    ASSERT_TRUE(redis_.start());
    cache_ = open_cache();
  }
  std::unique_ptr<OrderCache> open_cache(u64 wait_ns = 60'000'000'000) {
    OrderCacheConfig config;
    config.redis.address = redis_.address();
    config.redis.command_timeout_ns = 30'000'000'000;  // a busy machine
    config.wait_ns = wait_ns;
    config.lock_ns = 120'000'000'000;  // no loader here outlives its lock
    Result<std::unique_ptr<OrderCache>> opened = OrderCache::open(config);
    EXPECT_TRUE(opened.ok()) << opened.status().to_string();
    return opened.ok() ? std::move(opened).value() : nullptr;
  }
  // A loader that counts its calls and finds `row`.
  OrderCache::Loader loader(std::optional<history::OrderRow> row) {
    return [this, row](bool&) -> Result<std::optional<history::OrderRow>> {
      loads_.fetch_add(1);
      return row;
    };
  }

  TempDir dir_;
  testing::RedisServer redis_{dir_.path() / "redis"};
  std::unique_ptr<OrderCache> cache_;
  std::atomic<int> loads_{0};
};

TEST_F(OrderCacheTest, AMissIsLoadedOnceThenServedFromTheEntry) {
  Result<OrderCache::Read> first = cache_->order(42, loader(row_of(42, 9)));
  ASSERT_TRUE(first.ok()) << first.status().to_string();
  EXPECT_EQ(first.value().outcome, OrderCache::Outcome::loaded);
  ASSERT_TRUE(first.value().row);
  EXPECT_EQ(first.value().row->merchant_ref, "ref-42");
  Result<OrderCache::Read> second = cache_->order(42, loader(row_of(42, 9)));
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second.value().outcome, OrderCache::Outcome::hit);
  EXPECT_EQ(second.value().row->description, "a lamp");
  EXPECT_EQ(loads_.load(), 1);
  // The entry is readable by anyone: its status, sequence and merchant in plain text.
  const std::string key = cache_->entry_key(42);
  EXPECT_EQ(key, "paygate:order:ord_000000000000002a");
  EXPECT_EQ(redis_.cli("HGET " + key + " status"), "success");
  EXPECT_EQ(redis_.cli("HGET " + key + " sequence"), "9");
  EXPECT_EQ(redis_.cli("HGET " + key + " merchant"), "mer_0001000000000007");
  // It expires (a week by default), and the lock is gone.
  const long ttl = std::stol(redis_.cli("TTL " + key));
  EXPECT_GT(ttl, 6 * 86'400);
  EXPECT_LE(ttl, 7 * 86'400);
  EXPECT_EQ(redis_.cli("EXISTS " + cache_->lock_key(42)), "0");
  EXPECT_EQ(cache_->counters().store_reads.load(), 1u);
  EXPECT_EQ(cache_->counters().loaded.load(), 1u);
  EXPECT_EQ(cache_->counters().hits.load(), 1u);
}

TEST_F(OrderCacheTest, AnEntryIsReplacedOnlyByANewerSequence) {
  ASSERT_EQ(cache_->put(row_of(7, 100, OrderStatus::processing)).value(), true);
  EXPECT_EQ(cache_->put(row_of(7, 99, OrderStatus::created)).value(), false);  // older
  EXPECT_EQ(cache_->put(row_of(7, 100, OrderStatus::failed)).value(), false);  // the same
  EXPECT_EQ(redis_.cli("HGET " + cache_->entry_key(7) + " status"), "processing");
  EXPECT_EQ(cache_->put(row_of(7, 101, OrderStatus::success)).value(), true);
  // Compared as numbers of any size, not as text, nor as doubles.
  EXPECT_EQ(cache_->put(row_of(7, 1'000, OrderStatus::success)).value(), true);
  EXPECT_EQ(cache_->put(row_of(7, 999, OrderStatus::failed)).value(), false);
  EXPECT_EQ(cache_->put(row_of(7, 9'007'199'254'740'993, OrderStatus::success)).value(), true);
  EXPECT_EQ(cache_->put(row_of(7, 9'007'199'254'740'992, OrderStatus::failed)).value(), false);
  EXPECT_EQ(redis_.cli("HGET " + cache_->entry_key(7) + " sequence"), "9007199254740993");
  // A reader's load of an old row does not overwrite the newer entry either.
  ASSERT_TRUE(cache_->forget(8).ok());
  ASSERT_EQ(cache_->put(row_of(8, 50, OrderStatus::success)).value(), true);
  Result<OrderCache::Read> read = cache_->order(8, loader(row_of(8, 40, OrderStatus::processing)));
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read.value().outcome, OrderCache::Outcome::hit);
  EXPECT_EQ(loads_.load(), 0);
}

// The issue's test: hundreds of readers miss the same key at once, from two caches
// (two gateways sharing the Redis); the store is read once and every reader gets it.
TEST_F(OrderCacheTest, HundredsOfConcurrentMissesReadTheStoreOnce) {
  std::unique_ptr<OrderCache> other = open_cache();
  constexpr int kReaders = 300;
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::atomic<int> loaded{0}, waited{0}, hits{0}, other_outcome{0};
  // The load finishes only once every other reader has found it under way (bounded:
  // were that never so, the counts below would say), so that every one of them waits
  // for it, whatever the machine's timing.
  const OrderCache::Loader slow = [&](bool&) -> Result<std::optional<history::OrderRow>> {
    loads_.fetch_add(1);
    for (auto deadline = std::chrono::steady_clock::now() + 60s;
         cache_->counters().lock_seen.load() + other->counters().lock_seen.load() <
             static_cast<u64>(kReaders - 1) &&
         std::chrono::steady_clock::now() < deadline;) {
      std::this_thread::sleep_for(1ms);
    }
    return std::optional<history::OrderRow>(row_of(77, 12));
  };
  std::vector<std::thread> readers;
  for (int i = 0; i < kReaders; ++i) {
    readers.emplace_back([&, i] {
      ready.fetch_add(1);
      while (!go.load())
        std::this_thread::yield();
      Result<OrderCache::Read> read = (i % 2 == 0 ? *cache_ : *other).order(77, slow);
      if (!read.ok() || !read.value().row || read.value().row->merchant_ref != "ref-77") {
        other_outcome.fetch_add(1);
        return;
      }
      switch (read.value().outcome) {
        case OrderCache::Outcome::loaded:
          loaded.fetch_add(1);
          break;
        case OrderCache::Outcome::waited:
          waited.fetch_add(1);
          break;
        case OrderCache::Outcome::hit:
          hits.fetch_add(1);
          break;
        default:
          other_outcome.fetch_add(1);
      }
    });
  }
  while (ready.load() < kReaders)
    std::this_thread::yield();
  go.store(true);
  for (std::thread& t : readers)
    t.join();
  EXPECT_EQ(loads_.load(), 1);
  EXPECT_EQ(loaded.load(), 1);
  EXPECT_EQ(waited.load(), kReaders - 1);  // each found the lock, none loaded
  EXPECT_EQ(hits.load(), 0);
  EXPECT_EQ(other_outcome.load(), 0);
  EXPECT_EQ(cache_->counters().store_reads.load() + other->counters().store_reads.load(), 1u);
}

TEST_F(OrderCacheTest, AReaderPastItsWaitIsAnsweredPendingAndLoadsOnceTheLockIsFree) {
  std::unique_ptr<OrderCache> impatient = open_cache(/*wait_ns=*/20'000'000);
  // Another reader holds the lock and does not finish (no expiry: it stays).
  ASSERT_EQ(redis_.cli("SET " + impatient->lock_key(5) + " someone-else"), "OK");
  Result<OrderCache::Read> read = impatient->order(5, loader(row_of(5, 3)));
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read.value().outcome, OrderCache::Outcome::pending);
  EXPECT_FALSE(read.value().row);
  EXPECT_EQ(loads_.load(), 0);
  EXPECT_EQ(impatient->counters().pending.load(), 1u);
  // A loader that died: its lock lapses, and a waiting reader takes over.
  ASSERT_EQ(redis_.cli("SET " + impatient->lock_key(5) + " someone-else PX 300"), "OK");
  read = cache_->order(5, loader(row_of(5, 3)));
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read.value().outcome, OrderCache::Outcome::loaded);
  EXPECT_EQ(loads_.load(), 1);
}

TEST_F(OrderCacheTest, NothingFoundOrAFailedLoadWritesNothingAndFreesTheLock) {
  Result<OrderCache::Read> read = cache_->order(6, loader(std::nullopt));
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read.value().outcome, OrderCache::Outcome::not_found);
  EXPECT_EQ(redis_.cli("EXISTS " + cache_->entry_key(6)), "0");
  EXPECT_EQ(redis_.cli("EXISTS " + cache_->lock_key(6)), "0");
  const OrderCache::Loader failing = [](bool&) -> Result<std::optional<history::OrderRow>> {
    return Status::io_error("the store is gone");
  };
  read = cache_->order(6, failing);
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().message(), "the store is gone");
  EXPECT_EQ(redis_.cli("EXISTS " + cache_->lock_key(6)), "0");
  // The next reader loads.
  read = cache_->order(6, loader(row_of(6, 4)));
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read.value().outcome, OrderCache::Outcome::loaded);
}

TEST_F(OrderCacheTest, AnEntryThisBuildCannotReadIsLoadedAgain) {
  ASSERT_EQ(redis_.cli("HSET " + cache_->entry_key(9) + " sequence 5 row garbage"), "2");
  Result<OrderCache::Read> read = cache_->order(9, loader(row_of(9, 5)));
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read.value().outcome, OrderCache::Outcome::loaded);
  EXPECT_EQ(loads_.load(), 1);
  EXPECT_EQ(cache_->order(9, loader(row_of(9, 5))).value().outcome, OrderCache::Outcome::hit);
  // Another order's row under this order's key is not served either.
  ASSERT_TRUE(cache_->put(row_of(10, 5)).value());
  ASSERT_EQ(redis_.cli("RENAME " + cache_->entry_key(10) + " " + cache_->entry_key(11)), "OK");
  read = cache_->order(11, loader(row_of(11, 6)));
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read.value().outcome, OrderCache::Outcome::loaded);
  EXPECT_EQ(read.value().row->order.id, 11u);
}

TEST_F(OrderCacheTest, ALoaderThatSaysNotToKeepItsRowIsServedAndKeptOnlyAMoment) {
  const OrderCache::Loader unsure = [&](bool& keep) -> Result<std::optional<history::OrderRow>> {
    loads_.fetch_add(1);
    keep = false;
    return std::optional<history::OrderRow>(row_of(14, 3));
  };
  Result<OrderCache::Read> read = cache_->order(14, unsure);
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read.value().outcome, OrderCache::Outcome::loaded);
  // Kept a second at most (for the readers that waited on the load), not a week.
  const long ttl_ms = std::stol(redis_.cli("PTTL " + cache_->entry_key(14)));
  EXPECT_LE(ttl_ms, 1000);
  EXPECT_TRUE(ttl_ms > 0 || ttl_ms == -2) << ttl_ms;  // (-2: gone already)
  EXPECT_EQ(redis_.cli("EXISTS " + cache_->lock_key(14)), "0");
  EXPECT_EQ(loads_.load(), 1);
}

TEST(OrderCacheConfig, SettingsOutOfTheirBoundsAreRefused) {
  const auto refused = [](auto change) {
    OrderCacheConfig config;
    config.redis.address = "127.0.0.1:6379";
    change(config);
    return !OrderCache::open(config).ok();
  };
  EXPECT_FALSE(refused([](OrderCacheConfig&) {}));
  EXPECT_TRUE(refused([](OrderCacheConfig& c) { c.entry_ttl_s = ~u64{0} / 1000 + 1; }));
  EXPECT_TRUE(refused([](OrderCacheConfig& c) { c.lock_ns = 0; }));
  EXPECT_TRUE(refused([](OrderCacheConfig& c) { c.lock_ns = 7'200'000'000'000; }));
  EXPECT_TRUE(refused([](OrderCacheConfig& c) { c.wait_ns = 3'600'000'000'000; }));
  EXPECT_TRUE(refused([](OrderCacheConfig& c) { c.poll_ns = 0; }));
  EXPECT_TRUE(refused([](OrderCacheConfig& c) { c.redis.command_timeout_ns = 0; }));
  EXPECT_TRUE(refused([](OrderCacheConfig& c) { c.key_prefix.clear(); }));
}

TEST_F(OrderCacheTest, ARedisThatIsDownIsAnErrorAndOneThatComesBackIsUsedAgain) {
  ASSERT_EQ(cache_->order(3, loader(row_of(3, 2))).value().outcome, OrderCache::Outcome::loaded);
  ASSERT_EQ(redis_.cli("SCRIPT FLUSH"), "OK");  // a restarted server has no scripts
  ASSERT_EQ(cache_->order(3, loader(row_of(3, 2))).value().outcome, OrderCache::Outcome::hit);
  redis_.stop();
  Result<OrderCache::Read> read = cache_->order(3, loader(row_of(3, 2)));
  EXPECT_FALSE(read.ok());
  EXPECT_FALSE(cache_->put(row_of(3, 4)).ok());
  EXPECT_GE(cache_->counters().errors.load(), 1u);
  EXPECT_EQ(loads_.load(), 1);
  // A cache that met a failure skips Redis for failure_pause_ms (a second by default):
  // no second attempt, so no second error, within it (the test needs no timing: the
  // pause is made long).
  {
    OrderCacheConfig config;
    config.redis.address = redis_.address();
    config.failure_pause_ns = 3'600'000'000'000;
    std::unique_ptr<OrderCache> paused = std::move(OrderCache::open(config)).value();
    EXPECT_FALSE(paused->order(3, loader(row_of(3, 2))).ok());
    EXPECT_EQ(paused->counters().errors.load(), 1u);
    EXPECT_FALSE(paused->order(3, loader(row_of(3, 2))).ok());
    EXPECT_FALSE(paused->put(row_of(3, 4)).ok());
    EXPECT_EQ(paused->counters().errors.load(), 1u);
  }
  // Another server (on its own port): the same cache object reconnects to its address
  // only, so a new cache is made for it; the old one keeps failing without hanging.
  ASSERT_TRUE(redis_.start());
  cache_ = open_cache();
  read = cache_->order(3, loader(row_of(3, 2)));
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read.value().outcome, OrderCache::Outcome::loaded);
}

TEST_F(OrderCacheTest, TheFeedsCursorIsWrittenWithItsEntries) {
  EXPECT_FALSE(cache_->cursor(2).value());
  ASSERT_TRUE(
      cache_->put_changes(2, {row_of(11, 20), row_of(12, 21)}, std::nullopt, EventKey{21, 1}).ok());
  EXPECT_EQ(cache_->cursor(2).value(), (EventKey{21, 1}));
  EXPECT_EQ(redis_.cli("HGET " + cache_->entry_key(12) + " sequence"), "21");
  // Older rows leave newer entries as they are; the cursor moves on.
  ASSERT_TRUE(
      cache_
          ->put_changes(2, {row_of(11, 19, OrderStatus::created)}, EventKey{21, 1}, EventKey{22, 0})
          .ok());
  EXPECT_EQ(redis_.cli("HGET " + cache_->entry_key(11) + " status"), "success");
  EXPECT_EQ(cache_->cursor(2).value(), (EventKey{22, 0}));
  // A feed that thinks the cursor is elsewhere writes nothing (a Redis restored from an
  // older snapshot, a second feed).
  const Status moved = cache_->put_changes(2, {row_of(13, 30)}, EventKey{21, 1}, EventKey{30, 0});
  EXPECT_EQ(moved.code(), StatusCode::busy);
  EXPECT_EQ(redis_.cli("EXISTS " + cache_->entry_key(13)), "0");
  EXPECT_EQ(cache_->cursor(2).value(), (EventKey{22, 0}));
  EXPECT_EQ(cache_->put_changes(2, {}, std::nullopt, EventKey{30, 0}).code(), StatusCode::busy);
  EXPECT_FALSE(cache_->cursor(3).value());
  ASSERT_EQ(redis_.cli("SET " + cache_->cursor_key(3) + " nonsense"), "OK");
  EXPECT_FALSE(cache_->cursor(3).ok());
}

}  // namespace
}  // namespace paygate::cache
