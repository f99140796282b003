#include "cache/order_feed.h"

#include <gtest/gtest.h>

#include <map>
#include <random>

#include "base/temp_dir.h"
#include "cache/redis_test_support.h"

namespace paygate::cache {
namespace {

class OrderFeedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::RedisServer::installed()) {
      GTEST_SKIP() << "redis-server is not installed (scripts/install-deps.sh installs it)";
    }
    ASSERT_TRUE(redis_.start());
    OrderCacheConfig config;
    config.redis.address = redis_.address();
    config.redis.command_timeout_ns = 30'000'000'000;  // a busy machine
    cache_ = std::move(OrderCache::open(config)).value();
    store_ = std::move(history::Store::open(file_)).value();
  }
  std::unique_ptr<OrderFeed> feed(u32 batch_rows = 7) {
    OrderFeedConfig config;
    config.batch_rows = batch_rows;
    Result<std::unique_ptr<OrderFeed>> opened =
        OrderFeed::open(config, *cache_, {.file = file_}, kGroups);
    EXPECT_TRUE(opened.ok()) << opened.status().to_string();
    return std::move(opened).value();
  }
  // Writes `changes` commands of random order changes to each group's history, and
  // keeps what each order's entry must say: (sequence of its last change, status).
  void write_changes(std::mt19937_64& random, int commands) {
    for (u32 g = 0; g < kGroups; ++g) {
      history::Batch batch;
      batch.group = g;
      batch.after = watermark_[g];
      for (int c = 0; c < commands; ++c) {
        const u64 sequence = ++watermark_[g];
        // One or two changes per command, of a few orders (so that orders change many
        // times, some twice in a command).
        const int n = 1 + static_cast<int>(random() % 2);
        for (int i = 0; i < n; ++i) {
          Order o;
          o.id = (u64{g} << 48) | (1 + random() % 12);
          o.merchant = 9;
          o.amount = 50;
          o.currency = Currency::from("USD");
          const bool created = !known_.contains(o.id);
          o.status = created ? OrderStatus::created : static_cast<OrderStatus>(1 + random() % 5);
          known_[o.id] = {sequence, o.status};
          batch.orders.push_back(history::OrderChange{
              .sequence = sequence, .at_ns = 100 + sequence, .created = created, .order = o});
        }
      }
      batch.watermark = watermark_[g];
      ASSERT_TRUE(store_->write(batch).ok());
    }
  }
  void expect_entries_as_known() {
    for (const auto& [id, last] : known_) {
      const std::string key = cache_->entry_key(id);
      EXPECT_EQ(redis_.cli("HGET " + key + " sequence"), std::to_string(last.first)) << key;
      EXPECT_EQ(redis_.cli("HGET " + key + " status"), name(last.second)) << key;
    }
  }

  static constexpr u32 kGroups = 2;
  TempDir dir_;
  testing::RedisServer redis_{dir_.path() / "redis"};
  std::filesystem::path file_ = dir_.path() / "history.sqlite";
  std::unique_ptr<OrderCache> cache_;
  std::unique_ptr<history::Store> store_;
  u64 watermark_[kGroups] = {0, 0};
  std::map<u64, std::pair<u64, OrderStatus>> known_;
};

TEST_F(OrderFeedTest, EveryChangeReachesItsEntryAndTheFeedResumesFromItsCursor) {
  std::mt19937_64 random(7);
  write_changes(random, 40);
  {
    std::unique_ptr<OrderFeed> f = feed();
    ASSERT_TRUE(f->catch_up());
    for (u32 g = 0; g < kGroups; ++g)
      EXPECT_EQ(f->position(g), watermark_[g]);
  }
  expect_entries_as_known();
  for (u32 g = 0; g < kGroups; ++g) {
    EXPECT_EQ(cache_->cursor(g).value()->sequence, watermark_[g]);
  }
  // A new feed (a restart) goes on from the cursors: only what came after is written.
  write_changes(random, 25);
  const u64 writes_before = cache_->counters().writes.load();
  {
    std::unique_ptr<OrderFeed> f = feed(1000);
    ASSERT_TRUE(f->catch_up());
    EXPECT_EQ(f->changes(), [&] {
      u64 n = 0;
      for (u32 g = 0; g < kGroups; ++g) {
        n += store_->order_changes(g, EventKey{watermark_[g] - 25, ~u32{0}}, 1000).value().size();
      }
      return n;
    }());
  }
  EXPECT_GT(cache_->counters().writes.load(), writes_before);
  expect_entries_as_known();
  // A Redis emptied (FLUSHALL): the feed starts again from the first change, and the
  // entries come back as they were.
  ASSERT_EQ(redis_.cli("FLUSHALL"), "OK");
  {
    std::unique_ptr<OrderFeed> f = feed();
    ASSERT_TRUE(f->catch_up());
  }
  expect_entries_as_known();
}

// A cursor behind the feed's (Redis restored from an older snapshot) is gone on from;
// one ahead of it (another gateway writing the same keys) stops the feed.
TEST_F(OrderFeedTest, ACursorMovedBehindIsFollowedAndOneMovedAheadStopsTheFeed) {
  std::mt19937_64 random(5);
  write_changes(random, 20);
  std::unique_ptr<OrderFeed> f = feed(1000);
  ASSERT_TRUE(f->catch_up());
  // Restored: the cursor back at the first change, entries as they were then (here:
  // none).
  ASSERT_EQ(redis_.cli("FLUSHALL"), "OK");
  ASSERT_EQ(redis_.cli("SET " + cache_->cursor_key(0) + " \"1 0\""), "OK");
  write_changes(random, 5);
  ASSERT_TRUE(f->catch_up());
  EXPECT_EQ(cache_->cursor(0).value()->sequence, watermark_[0]);
  // Every order of group 0 whose last change came after the cursor is there again.
  for (const auto& [id, last] : known_) {
    if ((id >> 48) != 0 || last.first <= 1) continue;
    EXPECT_EQ(redis_.cli("HGET " + cache_->entry_key(id) + " status"), name(last.second));
  }
  // Ahead: not followed.
  ASSERT_EQ(redis_.cli("SET " + cache_->cursor_key(1) + " \"999999 0\""), "OK");
  write_changes(random, 5);
  const u64 position = f->position(1);
  EXPECT_FALSE(f->catch_up());
  EXPECT_FALSE(f->catch_up());  // every time, not only the first
  EXPECT_EQ(f->position(1), position);
  EXPECT_EQ(cache_->cursor(1).value()->sequence, 999'999u);
}

TEST_F(OrderFeedTest, TheThreadFollowsTheStoreAndRidesOutARedisThatIsDown) {
  std::mt19937_64 random(11);
  write_changes(random, 10);
  OrderFeedConfig config;
  config.poll_interval_ns = 1'000'000;
  config.retry_max_ns = 50'000'000;
  std::unique_ptr<OrderFeed> f =
      std::move(OrderFeed::open(config, *cache_, {.file = file_}, kGroups)).value();
  f->start();
  const auto reached = [&] {
    for (u32 g = 0; g < kGroups; ++g) {
      if (f->position(g) != watermark_[g]) return false;
    }
    return true;
  };
  const auto wait_until = [&](const auto& condition) {
    for (int i = 0; i < 6'000 && !condition(); ++i) {  // 60 s at most: a busy machine
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return condition();
  };
  ASSERT_TRUE(wait_until(reached));
  expect_entries_as_known();
  // Redis goes away while changes come: the feed fails, backs off, and catches up
  // once a Redis is there again (the same port, a new and empty server: from the
  // first change).
  redis_.stop();
  write_changes(random, 10);
  ASSERT_TRUE(wait_until([&] { return f->failures() > 0; }));
  ASSERT_TRUE(redis_.start(redis_.port()));
  ASSERT_TRUE(wait_until(reached));
  f->stop();
  expect_entries_as_known();
}

}  // namespace
}  // namespace paygate::cache
