// The Kafka publisher against librdkafka's mock cluster (several brokers in this
// process, on 127.0.0.1): every row of the store reaches its topic in its group's
// order with no gap, through a broker down, failed deliveries and restarts.
#include "publish/kafka_publisher.h"

#include <chrono>
#include <map>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "base/durable_file.h"
#include "base/temp_dir.h"
#include "publish/kafka_test_support.h"

namespace paygate::publish {
namespace {

using std::chrono::steady_clock;
using testing::CheckingConsumer;
using testing::ExpectedRows;
using testing::MockCluster;
using testing::RowKey;

constexpr u32 kGroups = 3;
constexpr std::int32_t kPartitions = 2;  // fewer than the groups: a partition carries two

// Commands from..to of `group`: sequence s has s % 3 ledger events (none for some) and
// every fifth an order change, so that some commands leave no row at all.
void fill(history::Store& store, u32 group, u64 from, u64 to, ExpectedRows& events,
          ExpectedRows& changes, bool orders = true) {
  history::Batch batch;
  batch.group = group;
  batch.after = from - 1;
  batch.watermark = to;
  for (u64 s = from; s <= to; ++s) {
    for (u32 i = 0; i < s % 3; ++i) {
      LedgerEvent e;
      e.sequence = s;
      e.index = i;
      e.kind = LedgerEventKind::transfer_posted;
      e.id = s * 10 + i;
      e.debit_account_id = AccountId{11};
      e.credit_account_id = AccountId{12};
      e.amount = 5;
      e.currency = Currency::from("USD");
      e.timestamp_ns = 1000 + s;
      batch.events.push_back(e);
      events[group].push_back({s, i});
    }
    if (orders && s % 5 == 0) {
      Order o;
      o.id = (u64{group} << 40) | s;
      o.merchant = 7;
      o.amount = 100;
      o.currency = Currency::from("USD");
      o.status = OrderStatus::created;
      batch.orders.push_back(
          history::OrderChange{.sequence = s, .at_ns = 1000 + s, .created = true, .order = o});
      changes[group].push_back({s, 0});
    }
  }
  ASSERT_TRUE(store.write(batch).ok());
}

KafkaRenderers test_renderers() {
  return KafkaRenderers{
      .event =
          [](u32 group, const LedgerEvent& e, std::string& key, std::string& value) {
            key = fmt::format("acc_{}", e.debit_account_id.value);
            value = fmt::format(R"({{"group":{},"sequence":{},"index":{},"amount":{}}})", group,
                                e.sequence, e.index, e.amount);
          },
      .order_change =
          [](u32 group, const history::OrderChangeRow& c, std::string& key, std::string& value) {
            key = fmt::format("ord_{}", c.order.order.id);
            value = fmt::format(R"({{"group":{},"sequence":{},"n":{},"status":"{}"}})", group,
                                c.sequence, c.n, name(c.status));
          }};
}

// Waits (bounded: 60 s) for `condition`.
template <typename Condition>
bool eventually(Condition condition) {
  const auto deadline = steady_clock::now() + std::chrono::seconds(60);
  while (!condition()) {
    if (steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

class KafkaPublisherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto opened = history::Store::open(dir_.path() / "history.sqlite");
    ASSERT_TRUE(opened.ok()) << opened.status().to_string();
    store_ = std::move(opened).value();
    config_.brokers = cluster_.brokers();
    config_.topic_prefix = "t.";
    config_.watermark_file = dir_.path() / "kafka.watermarks";
    config_.batch_rows = 500;  // several rounds per fill, reads cut inside a sequence
    config_.poll_interval_ns = 5'000'000;
    config_.watermark_interval_ns = 20'000'000;
    config_.thread_nice = 0;
  }
  std::unique_ptr<KafkaPublisher> open_publisher() {
    auto opened = KafkaPublisher::open(config_, {.file = dir_.path() / "history.sqlite"}, kGroups,
                                       test_renderers());
    EXPECT_TRUE(opened.ok()) << opened.status().to_string();
    return opened.ok() ? std::move(opened).value() : nullptr;
  }
  // A publisher opened and started (null, and a failure, when it cannot open).
  std::unique_ptr<KafkaPublisher> start_publisher() {
    std::unique_ptr<KafkaPublisher> publisher = open_publisher();
    if (publisher != nullptr) publisher->start();
    return publisher;
  }
  // Reads both topics until every row filled so far has come, kept by the consumer's
  // rule in order (from `start`, the keys of the last ledger and orders rows a consumer
  // kept before, for every group); the duplicates dropped, or nullopt (a failure) when
  // a row never came or one came out of order.
  std::optional<u64> every_row_arrives(std::optional<std::pair<RowKey, RowKey>> start = {}) {
    CheckingConsumer consumer(cluster_, {{"t.ledger", events_}, {"t.orders", changes_}});
    for (u32 g = 0; start && g < kGroups; ++g) {
      consumer.start_after("t.ledger", g, start->first);
      consumer.start_after("t.orders", g, start->second);
    }
    if (!consumer.read_all()) {
      ADD_FAILURE() << "not every row came: " << consumer.received << " received";
      return std::nullopt;
    }
    if (!consumer.problems.empty()) {
      ADD_FAILURE() << consumer.first_problem();
      return std::nullopt;
    }
    return consumer.duplicates;
  }
  void fill_all(u64 from, u64 to) {
    for (u32 g = 0; g < kGroups; ++g)
      fill(*store_, g, from, to, events_, changes_);
  }
  // Waits (bounded) for the durable watermarks to reach `to` in every group.
  static bool durable_at(const KafkaPublisher& p, u64 to) {
    return eventually([&] {
      for (u32 g = 0; g < kGroups; ++g) {
        if (p.durable_watermark(g) < to) return false;
      }
      return true;
    });
  }

  TempDir dir_;
  MockCluster cluster_{{"t.ledger", "t.orders"}, kPartitions};
  std::unique_ptr<history::Store> store_;
  KafkaConfig config_;
  ExpectedRows events_, changes_;
};

TEST_F(KafkaPublisherTest, EveryRowOnceInItsGroupsOrder) {
  fill_all(1, 1500);
  auto publisher = start_publisher();
  ASSERT_NE(publisher, nullptr);
  fill_all(1501, 3000);  // while it publishes
  const std::optional<u64> duplicates = every_row_arrives();
  ASSERT_TRUE(duplicates);
  // One producer, nothing failed: the idempotent producer sends each once.
  EXPECT_EQ(*duplicates, 0u);
  ASSERT_TRUE(durable_at(*publisher, 3000));
  EXPECT_EQ(publisher->rewinds(), 0u);
  publisher->stop();
  // The file says where it stands.
  const Result<std::string> file = read_file(config_.watermark_file);
  ASSERT_TRUE(file.ok());
  // Each group's last rows at 3000: the events of 2999 (3000 has none), the order change of
  // 3000.
  EXPECT_EQ(file.value(),
            "paygate-kafka-watermarks 1\npartitions 2 2\n0 3000 2999 1 3000 0\n"
            "1 3000 2999 1 3000 0\n2 3000 2999 1 3000 0\n");
}

TEST_F(KafkaPublisherTest, ABrokerDownAndBackLosesNothing) {
  fill_all(1, 1000);
  auto publisher = start_publisher();
  ASSERT_NE(publisher, nullptr);
  ASSERT_TRUE(durable_at(*publisher, 1000));
  // The leader of every partition goes down while more is written, and comes back.
  cluster_.set_down(1);
  fill_all(1001, 2000);
  // Every row is handed to librdkafka (each once: nothing failed) while no leader can
  // take it.
  u64 rows = 0;
  for (u32 g = 0; g < kGroups; ++g)
    rows += events_[g].size() + changes_[g].size();
  ASSERT_TRUE(eventually([&] { return publisher->produced() >= rows; }));
  EXPECT_LT(publisher->watermark(0), 2000u);
  cluster_.set_up(1);
  ASSERT_TRUE(every_row_arrives());
  ASSERT_TRUE(durable_at(*publisher, 2000));
}

// With a local timeout (not the default), messages that time out may leave a hole that
// later ones pass: the publisher goes back to its watermark, and the prev headers let
// the consumer keep every row once, in order.
TEST_F(KafkaPublisherTest, TimedOutDeliveriesArePublishedAgainAndThePrevHeadersKeepTheOrder) {
  config_.message_timeout_ms = 1000;  // deliveries fail while the leader is down
  fill_all(1, 500);
  auto publisher = start_publisher();
  ASSERT_NE(publisher, nullptr);
  ASSERT_TRUE(durable_at(*publisher, 500));
  cluster_.set_down(1);
  fill_all(501, 1500);
  ASSERT_TRUE(eventually([&] { return publisher->delivery_errors() > 0; }));
  EXPECT_LT(publisher->watermark(0), 1500u);  // a failed round holds it
  cluster_.set_up(1);
  ASSERT_TRUE(every_row_arrives());
  ASSERT_TRUE(durable_at(*publisher, 1500));
  EXPECT_GE(publisher->rewinds(), 1u);
}

// A batch the cluster refuses for good: with the gap-less guarantee librdkafka stops
// the producer (a fatal error) rather than let later batches pass it; the publisher
// makes a new one and publishes again from its watermark.
TEST_F(KafkaPublisherTest, ARefusedBatchStopsTheProducerAndANewOneGoesOn) {
  fill_all(1, 500);
  auto publisher = start_publisher();
  ASSERT_NE(publisher, nullptr);
  ASSERT_TRUE(durable_at(*publisher, 500));
  cluster_.fail_produce(1, RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);
  fill_all(501, 1500);
  ASSERT_TRUE(every_row_arrives());
  ASSERT_TRUE(durable_at(*publisher, 1500));
  EXPECT_GE(publisher->rewinds(), 1u);
  EXPECT_GE(publisher->delivery_errors(), 1u);
}

TEST_F(KafkaPublisherTest, ARestartResumesFromTheDurableWatermark) {
  fill_all(1, 1000);
  {
    auto first = start_publisher();
    ASSERT_NE(first, nullptr);
    ASSERT_TRUE(durable_at(*first, 1000));
    fill_all(1001, 3000);
    // Gone as in a crash: what it had in flight is dropped, the file is as last written.
    first->stop_abruptly();
  }
  fill_all(3001, 4000);  // while it is down: the store keeps it
  const Result<std::string> file = read_file(config_.watermark_file);
  ASSERT_TRUE(file.ok());
  auto second = open_publisher();
  ASSERT_NE(second, nullptr);
  for (u32 g = 0; g < kGroups; ++g)
    EXPECT_GE(second->watermark(g), 1000u);
  second->start();
  const std::optional<u64> duplicates = every_row_arrives();
  ASSERT_TRUE(duplicates);
  ASSERT_TRUE(durable_at(*second, 4000));
  // Duplicates are only what the first had sent past its durable watermark.
  std::printf("duplicates dropped after the restart: %llu\n",
              static_cast<unsigned long long>(*duplicates));
}

TEST_F(KafkaPublisherTest, AClusterThatCannotBeReachedHoldsNothingUp) {
  config_.brokers = "127.0.0.1:1";  // nothing listens there
  fill_all(1, 100);
  auto publisher = start_publisher();
  ASSERT_NE(publisher, nullptr);
  ASSERT_TRUE(eventually([&] { return publisher->connect_attempts() >= 2; }));
  EXPECT_FALSE(publisher->connected());
  EXPECT_EQ(publisher->watermark(0), 0u);
  fill_all(101, 200);  // the store goes on
  publisher->stop();   // and stopping does not wait for the cluster
  EXPECT_EQ(store_->watermark(0).value(), 200u);
}

// A store whose history of a group starts after the group's watermark (rebuilt from a
// journal whose start was removed) lacks rows Kafka never had: that group stops, said
// in the log and the metrics; the others go on.
TEST_F(KafkaPublisherTest, AStoreThatStartsAfterTheWatermarkStopsThatGroup) {
  ASSERT_TRUE(write_file_durably(config_.watermark_file,
                                 "paygate-kafka-watermarks 1\n0 100 98 1 100 0\n1 0 0 0 0 0\n",
                                 0600)
                  .ok());
  history::Batch late;
  late.group = 0;
  late.after = 499;  // its history in this store starts at 500
  late.watermark = 600;
  LedgerEvent e;
  e.sequence = 500;
  e.kind = LedgerEventKind::transfer_posted;
  e.currency = Currency::from("USD");
  late.events.push_back(e);
  ASSERT_TRUE(store_->write(late).ok());
  for (u32 g = 1; g < kGroups; ++g)
    fill(*store_, g, 1, 600, events_, changes_);
  auto publisher = start_publisher();
  ASSERT_NE(publisher, nullptr);
  ASSERT_TRUE(eventually([&] {
    return publisher->gaps() == 1 && publisher->durable_watermark(1) == 600 &&
           publisher->durable_watermark(2) == 600;
  }));
  EXPECT_EQ(publisher->watermark(0), 100u);
}

TEST_F(KafkaPublisherTest, AWatermarkFileItDidNotWriteIsRefused) {
  const auto opens = [&](const std::string& text) {
    EXPECT_TRUE(write_file_durably(config_.watermark_file, text, 0600).ok());
    return KafkaPublisher::open(config_, {.file = dir_.path() / "history.sqlite"}, kGroups,
                                test_renderers());
  };
  EXPECT_FALSE(opens("0 12 0 0 0 0\n").ok());                                // no header
  EXPECT_FALSE(opens("paygate-kafka-watermarks 1\n0 x 0 0 0 0\n").ok());     // not a number
  EXPECT_FALSE(opens("paygate-kafka-watermarks 1\n1 12\n").ok());            // no last rows
  EXPECT_FALSE(opens("paygate-kafka-watermarks 1\n1 12 13 0 0 0\n").ok());   // a row past it
  EXPECT_FALSE(opens("paygate-kafka-watermarks 1\npartitions 0 2\n").ok());  // no partition
  EXPECT_FALSE(opens("paygate-kafka-watermarks 1\n1 12 11 0 0 0").ok());     // cut short
  auto opened = opens("paygate-kafka-watermarks 1\npartitions 2 2\n1 12 11 1 10 0\n");
  ASSERT_TRUE(opened.ok()) << opened.status().to_string();
  EXPECT_EQ(opened.value()->watermark(0), 0u);
  EXPECT_EQ(opened.value()->watermark(1), 12u);
  // A timeout the producer cannot have (librdkafka wants it above linger.ms).
  config_.message_timeout_ms = config_.linger_ms;
  EXPECT_FALSE(KafkaPublisher::open(config_, {.file = dir_.path() / "history.sqlite"}, kGroups,
                                    test_renderers())
                   .ok());
}

// A store rebuilt to start right after the watermark (no hole) has none of the rows
// before: the file names them, so that the first messages continue what consumers kept.
TEST_F(KafkaPublisherTest, TheFileNamesThePrevRowsWhereTheStoreHasThemNot) {
  for (u32 g = 0; g < kGroups; ++g) {
    // Rows 1..100 went to Kafka from an older store; this one starts at 101.
    fill(*store_, g, 101, 400, events_, changes_);
  }
  ASSERT_TRUE(write_file_durably(config_.watermark_file,
                                 "paygate-kafka-watermarks 1\npartitions 2 2\n"
                                 "0 100 98 1 100 0\n1 100 98 1 100 0\n2 100 98 1 100 0\n",
                                 0600)
                  .ok());
  auto publisher = start_publisher();
  ASSERT_NE(publisher, nullptr);
  const std::optional<u64> duplicates = every_row_arrives(std::pair{RowKey{98, 1}, RowKey{100, 0}});
  ASSERT_TRUE(duplicates);
  EXPECT_EQ(*duplicates, 0u);
  EXPECT_EQ(publisher->gaps(), 0u);
}

// A topic with no row since the file's mark keeps the mark's key (the store, which
// starts after it, has none): after a restart its next message still names it.
TEST_F(KafkaPublisherTest, ATopicWithNoNewRowKeepsItsPrevAcrossARestart) {
  for (u32 g = 0; g < kGroups; ++g)
    fill(*store_, g, 101, 300, events_, changes_, false);
  ASSERT_TRUE(write_file_durably(config_.watermark_file,
                                 "paygate-kafka-watermarks 1\npartitions 2 2\n"
                                 "0 100 98 1 100 0\n1 100 98 1 100 0\n2 100 98 1 100 0\n",
                                 0600)
                  .ok());
  {
    auto first = start_publisher();
    ASSERT_NE(first, nullptr);
    ASSERT_TRUE(durable_at(*first, 300));
    first->stop();
  }
  const Result<std::string> file = read_file(config_.watermark_file);
  ASSERT_TRUE(file.ok());
  EXPECT_NE(file.value().find("\n0 300 299 1 100 0\n"), std::string::npos) << file.value();
  for (u32 g = 0; g < kGroups; ++g)
    fill(*store_, g, 301, 400, events_, changes_);
  auto second = start_publisher();
  ASSERT_NE(second, nullptr);
  ASSERT_TRUE(every_row_arrives(std::pair{RowKey{98, 1}, RowKey{100, 0}}));
}

// A watermark file whose last rows are not the store's (another data directory's) is
// refused, rather than name a prev no consumer kept.
TEST_F(KafkaPublisherTest, AWatermarkFileOfAnotherStoreIsRefused) {
  fill_all(1, 100);
  ASSERT_TRUE(write_file_durably(config_.watermark_file,
                                 "paygate-kafka-watermarks 1\n0 100 50 0 100 0\n", 0600)
                  .ok());
  const auto refused = KafkaPublisher::open(config_, {.file = dir_.path() / "history.sqlite"},
                                            kGroups, test_renderers());
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("does not match"), std::string::npos);
  // The store's own last rows at 100: the event of 100 (100 % 3 = 1), its order change.
  ASSERT_TRUE(write_file_durably(config_.watermark_file,
                                 "paygate-kafka-watermarks 1\n0 100 100 0 100 0\n", 0600)
                  .ok());
  EXPECT_TRUE(KafkaPublisher::open(config_, {.file = dir_.path() / "history.sqlite"}, kGroups,
                                   test_renderers())
                  .ok());
}

}  // namespace
}  // namespace paygate::publish
