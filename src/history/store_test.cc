#include "history/store.h"

#include <sqlite3.h>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "base/temp_dir.h"
#include "history/mariadb_test_support.h"

namespace paygate::history {
namespace {

LedgerEvent event(u64 sequence, u32 index, LedgerEventKind kind, u64 id, u64 amount) {
  LedgerEvent e;
  e.sequence = sequence;
  e.index = index;
  e.kind = kind;
  e.id = id;
  e.debit_account_id = AccountId{11};
  e.credit_account_id = AccountId{12};
  e.amount = amount;
  e.currency = Currency::from("USD");
  e.timestamp_ns = 1000 + sequence;
  return e;
}

TEST(Store, MigratesOnceAndRefusesANewerSchema) {
  TempDir dir;
  const std::filesystem::path file = dir.path() / "history.sqlite";
  {
    auto store = Store::open(file);
    ASSERT_TRUE(store.ok()) << store.status().to_string();
    EXPECT_EQ(store.value()->schema_version(), kSchemaVersion);
    EXPECT_EQ(store.value()->rows("schema_migrations").value(), u64{kSchemaVersion});
    // Its files are the server's alone, as every file of the data directory.
    EXPECT_EQ(std::filesystem::status(file).permissions() & std::filesystem::perms::all,
              std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  }
  {
    auto again = Store::open(file);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again.value()->rows("schema_migrations").value(), u64{kSchemaVersion});
  }
  // A store a later paygate migrated further is not this one's to write.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(file.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(
      sqlite3_exec(db, "INSERT INTO schema_migrations VALUES (99, 0)", nullptr, nullptr, nullptr),
      SQLITE_OK);
  sqlite3_close(db);
  const auto newer = Store::open(file);
  ASSERT_FALSE(newer.ok());
  EXPECT_NE(newer.status().message().find("newer"), std::string::npos);
}

// Which change tells the merchant what (docs/WEBHOOKS.md, "Events").
TEST(OrderEvents, AFinalStatusOrARefundRaisesOneAndNothingElseDoes) {
  const auto with = [](OrderStatus status, u64 refunded = 0) {
    Order o;
    o.status = status;
    o.amount = 100;
    o.amount_refunded = refunded;
    return o;
  };
  using S = OrderStatus;
  const auto type = [](const std::optional<Order>& before, const Order& after) {
    const std::optional<std::string_view> t = order_event_type(before ? &*before : nullptr, after);
    return t ? std::string(*t) : std::string("none");
  };
  EXPECT_EQ(type(std::nullopt, with(S::created)), "none");
  EXPECT_EQ(type(with(S::created), with(S::processing)), "none");
  EXPECT_EQ(type(with(S::created), with(S::success)), "order.success");
  EXPECT_EQ(type(with(S::processing), with(S::failed)), "order.failed");
  EXPECT_EQ(type(with(S::processing), with(S::timeout)), "order.timeout");
  EXPECT_EQ(type(with(S::created), with(S::cancelled)), "order.cancelled");
  EXPECT_EQ(type(with(S::created), with(S::rejected_risk)), "order.rejected_risk");
  EXPECT_EQ(type(with(S::timeout), with(S::exception_checkout)), "order.exception_checkout");
  // An exception settled: accepted is a success, rejected a failure.
  EXPECT_EQ(type(with(S::exception_checkout), with(S::success)), "order.success");
  EXPECT_EQ(type(with(S::exception_checkout), with(S::failed)), "order.failed");
  EXPECT_EQ(type(with(S::success), with(S::success, 30)), "order.refunded");
  EXPECT_EQ(type(with(S::success, 30), with(S::success, 100)), "order.refunded");
  EXPECT_EQ(type(with(S::success, 30), with(S::success, 0)), "order.refund_returned");
  EXPECT_EQ(type(with(S::success, 30), with(S::success, 30)), "none");
  // Backfilled (no row before): a final order is told of.
  EXPECT_EQ(type(std::nullopt, with(S::success)), "order.success");
  for (const std::string_view t : kOrderEventTypes)
    EXPECT_TRUE(t.starts_with("order."));
}

// Each test with the store in SQLite, and again in MariaDB (a real server).
class StoreTest : public ::testing::TestWithParam<sql::Dialect> {
 protected:
  void SetUp() override {
    if (GetParam() == sql::Dialect::mariadb) PAYGATE_REQUIRE_MARIADB();
    config_ = GetParam() == sql::Dialect::sqlite
                  ? StoreConfig{.file = dir_.path() / "history.sqlite"}
                  : testing::MariaDbServer::shared()->store(
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
  }
  TempDir dir_;
  StoreConfig config_;
};

TEST_P(StoreTest, ABatchMustContinueItsGroupsWatermark) {
  auto opened = Store::open(config_);
  ASSERT_TRUE(opened.ok()) << opened.status().to_string();
  Store& store = *opened.value();
  Batch first;
  first.group = 2;
  first.after = 40;  // history of the group starts at 41
  first.watermark = 42;
  first.events = {event(41, 0, LedgerEventKind::transfer_pending, 7, 100)};
  first.annotations = {{41, journal::AnnotationKind::reference, "r-41"},
                       {41, journal::AnnotationKind::metadata, R"({"a":1})"}};
  ASSERT_TRUE(store.write(first).ok());
  EXPECT_EQ(store.watermark(2).value(), 42u);
  EXPECT_EQ(store.first_sequence(2).value(), 41u);
  EXPECT_EQ(store.watermark(3).value(), 0u);

  // Again (a projector that crashed before it knew the first was written): refused
  // whole, nothing doubled.
  const Status twice = store.write(first);
  EXPECT_EQ(twice.code(), StatusCode::busy) << twice.to_string();
  EXPECT_EQ(store.rows("events").value(), 1u);
  EXPECT_EQ(store.rows("annotations").value(), 2u);

  Batch next;
  next.group = 2;
  next.after = 42;
  next.watermark = 43;
  next.events = {event(43, 0, LedgerEventKind::pending_posted, 7, 60)};
  next.events[0].released = 40;
  ASSERT_TRUE(store.write(next).ok());
  const std::optional<TransferRow> row = store.transfer(2, 7).value();
  ASSERT_TRUE(row.has_value());
  EXPECT_EQ(row->status, "posted");
  EXPECT_EQ(row->amount, 100u);
  EXPECT_EQ(row->posted_amount, 60u);
  EXPECT_EQ(row->created_sequence, 41u);
  EXPECT_EQ(row->updated_sequence, 43u);
  EXPECT_EQ(row->reference, "r-41");
  EXPECT_EQ(row->metadata, R"({"a":1})");
  EXPECT_FALSE(store.transfer(3, 7).value().has_value());  // another group's id space
  EXPECT_EQ(store.annotations(2, 41).value().size(), 2u);
}

// A batch that fails part way (MariaDB: in rows it had queued, sent at the commit)
// leaves nothing behind, and the same batch written again goes in whole.
TEST_P(StoreTest, ABatchThatFailsLeavesNothing) {
  auto opened = Store::open(config_);
  ASSERT_TRUE(opened.ok()) << opened.status().to_string();
  Store& store = *opened.value();
  Batch batch;
  batch.group = 1;
  batch.watermark = 2;
  batch.events = {event(1, 0, LedgerEventKind::transfer_posted, 5, 10),
                  event(2, 0, LedgerEventKind::transfer_posted, 6, 20)};
  batch.annotations = {{1, journal::AnnotationKind::reference, "a"},
                       {2, journal::AnnotationKind::reference, "b"}};
  // A statement line twice: its row breaks the entries table's key, after the events'
  // and transfers' rows went (MariaDB: their queued inserts sent before it).
  Batch broken = batch;
  const EntryRow line{.account = 11, .sequence = 2, .transfer = 6, .amount = -20};
  broken.entries = {line, line};
  EXPECT_FALSE(store.write(broken).ok());
  EXPECT_EQ(store.watermark(1).value(), 0u);
  EXPECT_EQ(store.rows("events").value(), 0u);
  EXPECT_EQ(store.rows("transfers").value(), 0u);
  EXPECT_EQ(store.rows("annotations").value(), 0u);
  ASSERT_TRUE(store.write(batch).ok());
  EXPECT_EQ(store.watermark(1).value(), 2u);
  EXPECT_EQ(store.rows("events").value(), 2u);
  EXPECT_EQ(store.transfer(1, 6).value()->reference, "b");
}

// Many rows in one batch (MariaDB: more than one INSERT's worth of queued rows), and
// texts of every byte, read back as they were written.
TEST_P(StoreTest, ManyRowsAndEveryByteOfATextComeBackAsWritten) {
  auto opened = Store::open(config_);
  ASSERT_TRUE(opened.ok()) << opened.status().to_string();
  Store& store = *opened.value();
  Batch batch;
  batch.group = 0;
  batch.watermark = 20'000;
  std::string every_byte;
  for (int c = 0; c < 256; ++c)
    every_byte += static_cast<char>(c);
  every_byte += "'; DROP TABLE events; --";
  for (u64 s = 1; s <= batch.watermark; ++s) {
    batch.events.push_back(event(s, 0, LedgerEventKind::transfer_posted, s, s));
    batch.entries.push_back(EntryRow{.account = 11,
                                     .sequence = s,
                                     .transfer = s,
                                     .amount = -static_cast<i64>(s),
                                     .balance = -1});
    if (s % 1000 == 0) {
      batch.annotations.push_back({s, journal::AnnotationKind::metadata, every_byte});
    }
  }
  ASSERT_TRUE(store.write(batch).ok());
  EXPECT_EQ(store.rows("events").value(), 20'000u);
  EXPECT_EQ(store.rows("entries").value(), 20'000u);
  EXPECT_EQ(store.transfer(0, 5000).value()->metadata, every_byte);
  EXPECT_EQ(store.transfer(0, 5001).value()->metadata, "");
  const std::vector<EntryRow> newest = store.entries(11, std::nullopt, 3).value();
  ASSERT_EQ(newest.size(), 3u);
  EXPECT_EQ(newest[0].sequence, 20'000u);
  EXPECT_EQ(newest[0].amount, -20'000);
  const std::vector<LedgerEvent> page = store.events(0, EventKey{19'998, 0}, 10).value();
  ASSERT_EQ(page.size(), 2u);
  EXPECT_EQ(page[1].id, 20'000u);
  EXPECT_EQ(page[1].currency, Currency::from("USD"));
}

// A final order that leaves the group's memory moves from `orders` to `order_archive`,
// after the batch's changes of it; every read of orders finds it there: one order, a
// list (newest first across both tables, a cursor in either), its changes and events.
TEST_P(StoreTest, OrdersThatLeftMemoryAreReadFromTheArchive) {
  auto opened = Store::open(config_);
  ASSERT_TRUE(opened.ok()) << opened.status().to_string();
  Store& store = *opened.value();
  constexpr u64 kNovember = 1'793'491'200ull * kNanosPerSecond;  // 2026-11-01T00:00:00Z
  constexpr u64 kJanuary = 1'798'761'600ull * kNanosPerSecond;   // 2027-01-01T00:00:00Z
  ASSERT_EQ(archive_month(kNovember), 202611u);
  ASSERT_EQ(archive_month(kNovember - 1), 202610u);
  ASSERT_EQ(archive_month(kJanuary), 202701u);
  ASSERT_EQ(next_month(202612), 202701u);
  const auto order = [](u64 id, u64 created_ns, OrderStatus status) {
    Order o;
    o.id = id;
    o.merchant = 9;
    o.amount = 50;
    o.currency = Currency::from("USD");
    o.created_at_ns = created_ns;
    o.status = status;
    return o;
  };
  // Three orders (November, December, January), made then finished; the first two
  // leave memory in the next batch, the January one in the same batch it finished in.
  Batch made;
  made.group = 0;
  made.watermark = 6;
  const u64 created[] = {kNovember + 5, kNovember + 40 * 86'400 * kNanosPerSecond, kJanuary + 7};
  for (u64 i = 0; i < 3; ++i) {
    made.orders.push_back(OrderChange{.sequence = i + 1,
                                      .at_ns = created[i],
                                      .created = true,
                                      .order = order(100 + i, created[i], OrderStatus::created)});
    made.annotations.push_back(
        {i + 1, journal::AnnotationKind::merchant_ref, "ref-" + std::to_string(i)});
  }
  for (u64 i = 0; i < 3; ++i) {
    made.orders.push_back(OrderChange{.sequence = 4 + i,
                                      .at_ns = kJanuary + 100 + i,
                                      .order = order(100 + i, created[i], OrderStatus::success)});
  }
  made.orders_left = {{.sequence = 6, .id = 102, .created_ns = created[2]}};
  ASSERT_TRUE(store.write(made).ok());
  Batch left;
  left.group = 0;
  left.after = 6;
  left.watermark = 7;
  left.orders_left = {{.sequence = 7, .id = 100, .created_ns = created[0]},
                      {.sequence = 7, .id = 101, .created_ns = created[1]}};
  // And a fourth, held, made after them all.
  left.orders.push_back(OrderChange{.sequence = 7,
                                    .at_ns = kJanuary + 500,
                                    .created = true,
                                    .order = order(103, kJanuary + 500, OrderStatus::created)});
  ASSERT_TRUE(store.write(left).ok());
  EXPECT_EQ(store.rows("orders").value(), 1u);
  EXPECT_EQ(store.rows("order_archive").value(), 3u);

  for (u64 id = 100; id <= 103; ++id) {
    const std::optional<OrderRow> row = store.order(id).value();
    ASSERT_TRUE(row.has_value()) << id;
    EXPECT_EQ(row->order.id, id);
    EXPECT_EQ(row->order.status, id == 103 ? OrderStatus::created : OrderStatus::success);
    if (id < 103) {
      EXPECT_EQ(row->merchant_ref, "ref-" + std::to_string(id - 100));
    }
  }
  EXPECT_FALSE(store.order(104).value().has_value());
  const auto list = [&](OrderQuery q) {
    std::vector<u64> ids;
    const auto page = store.orders(q).value();
    EXPECT_TRUE(page.has_value());
    if (page) {
      for (const OrderRow& row : *page)
        ids.push_back(row.order.id);
    }
    return ids;
  };
  EXPECT_EQ(list({.merchant = 9, .limit = 10}), (std::vector<u64>{103, 102, 101, 100}));
  EXPECT_EQ(list({.merchant = 9, .after_order = 103, .limit = 2}), (std::vector<u64>{102, 101}));
  EXPECT_EQ(list({.merchant = 9, .after_order = 101, .limit = 2}), (std::vector<u64>{100}));
  EXPECT_EQ(list({.merchant = 9, .status = OrderStatus::success, .limit = 10}),
            (std::vector<u64>{102, 101, 100}));
  EXPECT_EQ(list({.merchant_ref = "ref-1", .limit = 10}), (std::vector<u64>{101}));
  EXPECT_EQ(list({.created_from_ns = kJanuary, .limit = 10}), (std::vector<u64>{103, 102}));
  // The changes of archived orders still come with their order.
  const std::vector<OrderChangeRow> changes = store.order_changes(0, std::nullopt, 100).value();
  ASSERT_EQ(changes.size(), 7u);
  EXPECT_EQ(changes[0].order.order.id, 100u);
  EXPECT_EQ(changes[0].order.merchant_ref, "ref-0");
  const std::vector<OrderEventRow> events = store.order_events(0, 0, 0, 100).value();
  ASSERT_EQ(events.size(), 3u);  // the three successes
  for (const OrderEventRow& e : events) {
    ASSERT_TRUE(e.order_row.has_value()) << e.type;
    EXPECT_EQ(e.order_row->merchant_ref, "ref-" + std::to_string(e.object_id - 100));
  }
}

INSTANTIATE_TEST_SUITE_P(Stores, StoreTest,
                         ::testing::Values(sql::Dialect::sqlite, sql::Dialect::mariadb),
                         [](const ::testing::TestParamInfo<sql::Dialect>& param) {
                           return param.param == sql::Dialect::sqlite ? "Sqlite" : "MariaDb";
                         });

class MariaDbStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PAYGATE_REQUIRE_MARIADB();
    server_ = testing::MariaDbServer::shared();
    config_ = server_->store(::testing::UnitTest::GetInstance()->current_test_info()->name());
  }
  // A connection of the test's own to the server, for what paygate never does.
  std::unique_ptr<sql::Connection> admin() {
    auto connection = sql::open_mariadb(config_.mariadb, /*writing=*/true);
    EXPECT_TRUE(connection.ok()) << connection.status().to_string();
    return connection.ok() ? std::move(connection).value() : nullptr;
  }
  testing::MariaDbServer* server_ = nullptr;
  StoreConfig config_;
};

TEST_F(MariaDbStoreTest, MigratesOnceAndRefusesANewerSchemaOrAServerThatDoesNotFlush) {
  // A server of the test's own: it changes the server's settings.
  const std::unique_ptr<testing::MariaDbServer> own = testing::MariaDbServer::own();
  ASSERT_NE(own, nullptr) << "MariaDB did not start";
  config_ = own->store("own");
  {
    auto store = Store::open(config_);
    ASSERT_TRUE(store.ok()) << store.status().to_string();
    EXPECT_EQ(store.value()->schema_version(), kSchemaVersion);
    EXPECT_EQ(store.value()->rows("schema_migrations").value(), u64{kSchemaVersion});
  }
  {
    auto again = Store::open(config_);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again.value()->rows("schema_migrations").value(), u64{kSchemaVersion});
    auto reader = Store::open_reader(config_);
    ASSERT_TRUE(reader.ok()) << reader.status().to_string();
  }
  const std::unique_ptr<sql::Connection> db = admin();
  ASSERT_NE(db, nullptr);
  // A commit that may be lost in a crash would let the journal go before the store has
  // what it held: refused, whatever else is right.
  ASSERT_TRUE(db->exec("SET GLOBAL innodb_flush_log_at_trx_commit = 2")) << db->error();
  const auto unflushed = Store::open(config_);
  ASSERT_TRUE(db->exec("SET GLOBAL innodb_flush_log_at_trx_commit = 1")) << db->error();
  ASSERT_FALSE(unflushed.ok());
  EXPECT_EQ(unflushed.status().code(), StatusCode::invalid_config);
  EXPECT_NE(unflushed.status().message().find("innodb_flush_log_at_trx_commit"), std::string::npos);
  ASSERT_TRUE(db->exec("INSERT INTO schema_migrations VALUES (99, 0)")) << db->error();
  const auto newer = Store::open(config_);
  ASSERT_FALSE(newer.ok());
  EXPECT_NE(newer.status().message().find("newer"), std::string::npos);
  EXPECT_FALSE(Store::open_reader(config_).ok());
}

// MariaDB keeps the archive of orders in a partition per month of their creation,
// made as the first order of the month is archived; one of a month older than the
// first partition shares it.
TEST_F(MariaDbStoreTest, TheOrderArchiveHasAPartitionPerMonth) {
  auto opened = Store::open(config_);
  ASSERT_TRUE(opened.ok()) << opened.status().to_string();
  Store& store = *opened.value();
  constexpr u64 kNovember = 1'793'491'200ull * kNanosPerSecond;  // 2026-11-01T00:00:00Z
  constexpr u64 kDay = 86'400 * kNanosPerSecond;
  u64 sequence = 0;
  const auto archive = [&](u64 id, u64 created_ns) {
    Order o;
    o.id = id;
    o.merchant = 9;
    o.created_at_ns = created_ns;
    o.status = OrderStatus::success;
    Batch b;
    b.after = sequence;
    b.watermark = ++sequence;
    b.orders.push_back(
        OrderChange{.sequence = sequence, .at_ns = created_ns, .created = true, .order = o});
    b.orders_left = {{.sequence = sequence, .id = id, .created_ns = created_ns}};
    return store.write(b);
  };
  ASSERT_TRUE(archive(1, kNovember + kDay).ok());
  ASSERT_TRUE(archive(2, kNovember + 75 * kDay).ok());  // mid-January: December made too
  ASSERT_TRUE(archive(3, kNovember - 40 * kDay).ok());  // September: into November's
  ASSERT_TRUE(archive(4, kNovember + 80 * kDay).ok());
  const std::unique_ptr<sql::Connection> db = admin();
  ASSERT_NE(db, nullptr);
  std::vector<std::pair<std::string, i64>> partitions;
  {
    sql::Statement read(*db,
                        "SELECT PARTITION_NAME, PARTITION_ORDINAL_POSITION FROM "
                        "information_schema.PARTITIONS WHERE TABLE_SCHEMA = DATABASE() AND "
                        "TABLE_NAME = 'order_archive' ORDER BY PARTITION_ORDINAL_POSITION");
    for (int rc = read.step(); rc == sql::kRow; rc = read.step())
      partitions.emplace_back(read.text(0), read.integer(1));
  }
  // (Each made with the month after it, ready for its first order.)
  const std::vector<std::pair<std::string, i64>> expected{
      {"p202611", 1}, {"p202612", 2}, {"p202701", 3}, {"p202702", 4}, {"p_future", 5}};
  EXPECT_EQ(partitions, expected);
  const auto rows_in = [&](const std::string& partition) {
    sql::Statement count(*db, "SELECT COUNT(*) FROM order_archive PARTITION (" + partition + ")");
    return count.step() == sql::kRow ? count.integer(0) : -1;
  };
  EXPECT_EQ(rows_in("p202611"), 2);
  EXPECT_EQ(rows_in("p202612"), 0);
  EXPECT_EQ(rows_in("p202701"), 2);
  EXPECT_EQ(rows_in("p_future"), 0);
  // A store opened again finds the partitions made and goes on from them.
  opened = Store::open(config_);
  ASSERT_TRUE(opened.ok());
  Store& again = *opened.value();
  Order o;
  o.id = 5;
  o.created_at_ns = kNovember + 100 * kDay;  // February
  Batch b;
  b.after = sequence;
  b.watermark = sequence + 1;
  b.orders.push_back(OrderChange{.sequence = sequence + 1, .created = true, .order = o});
  b.orders_left = {{.sequence = sequence + 1, .id = 5, .created_ns = o.created_at_ns}};
  ASSERT_TRUE(again.write(b).ok());
  EXPECT_EQ(rows_in("p202702"), 1);
  EXPECT_EQ(again.order(5).value()->order.id, 5u);
  EXPECT_EQ(again.partition_failures(), 0u);

  // A partition that cannot be made (here: an operator reorganized p_future away)
  // holds nothing back: the failure is counted, the row goes where the table takes it.
  ASSERT_TRUE(
      db->exec("ALTER TABLE order_archive REORGANIZE PARTITION p_future INTO "
               "(PARTITION p_rest VALUES LESS THAN MAXVALUE)"))
      << db->error();
  o.id = 6;
  o.created_at_ns = kNovember + 200 * kDay;  // May
  Batch later;
  later.after = sequence + 1;
  later.watermark = sequence + 2;
  later.orders.push_back(OrderChange{.sequence = sequence + 2, .created = true, .order = o});
  later.orders_left = {{.sequence = sequence + 2, .id = 6, .created_ns = o.created_at_ns}};
  const Status written = again.write(later);
  ASSERT_TRUE(written.ok()) << written.to_string();
  EXPECT_EQ(again.partition_failures(), 1u);
  EXPECT_EQ(rows_in("p_rest"), 1);
  EXPECT_EQ(again.order(6).value()->order.id, 6u);
}

// The server drops the store's connections (a restart, a network cut, an operator's
// KILL): what was running fails, and the next write and read connect again.
TEST_F(MariaDbStoreTest, ConnectsAgainAfterTheServerDropsItsConnections) {
  auto opened = Store::open(config_);
  ASSERT_TRUE(opened.ok()) << opened.status().to_string();
  Store& store = *opened.value();
  Batch batch;
  batch.group = 0;
  batch.watermark = 1;
  batch.events = {event(1, 0, LedgerEventKind::transfer_posted, 1, 10)};
  ASSERT_TRUE(store.write(batch).ok());
  ASSERT_EQ(store.watermark(0).value(), 1u);

  ASSERT_EQ(server_->kill_connections(config_.mariadb.database), 2);  // writer and reader

  Batch next;
  next.group = 0;
  next.after = 1;
  next.watermark = 2;
  next.events = {event(2, 0, LedgerEventKind::transfer_posted, 2, 20)};
  // The first try may meet the dropped connection; one more goes through.
  if (!store.write(next).ok()) {
    ASSERT_TRUE(store.write(next).ok());
  }
  Result<u64> mark = store.watermark(0);
  if (!mark.ok()) mark = store.watermark(0);
  ASSERT_TRUE(mark.ok()) << mark.status().to_string();
  EXPECT_EQ(mark.value(), 2u);
  EXPECT_EQ(store.rows("events").value(), 2u);
}

// Schema 5 gives each order change its group: a store migrated from 4 reads each
// group's changes in order and has the digest of a store made at 5 from the same rows.
TEST(Store, MigrationFiveGivesOrderChangesTheirGroup) {
  TempDir dir;
  const std::filesystem::path file = dir.path() / "history.sqlite";
  std::vector<Store::TableDigest> made_at_five;
  {
    auto store = Store::open(file);
    ASSERT_TRUE(store.ok());
    for (u32 g = 0; g < 2; ++g) {
      Batch batch;
      batch.group = g;
      batch.watermark = 3;
      for (u64 s = 1; s <= 3; ++s) {
        Order o;
        o.id = (u64{g} << 32) | s;
        o.merchant = 9;
        o.amount = 50;
        o.currency = Currency::from("USD");
        o.status = s == 3 ? OrderStatus::cancelled : OrderStatus::created;
        if (s == 3) o.id = (u64{g} << 32) | 1;  // the first order, cancelled
        batch.orders.push_back(
            OrderChange{.sequence = s, .at_ns = 100 + s, .created = s != 3, .order = o});
      }
      ASSERT_TRUE(store.value()->write(batch).ok());
    }
    made_at_five = store.value()->digest().value();
  }
  // Back to schema 4, as an older paygate left it.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(file.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db,
                         "DROP TABLE order_archive; "
                         "DROP INDEX order_changes_by_group; "
                         "ALTER TABLE order_changes DROP COLUMN grp; "
                         "DELETE FROM schema_migrations WHERE version >= 5",
                         nullptr, nullptr, nullptr),
            SQLITE_OK)
      << sqlite3_errmsg(db);
  sqlite3_close(db);
  auto migrated = Store::open(file);
  ASSERT_TRUE(migrated.ok()) << migrated.status().to_string();
  EXPECT_EQ(migrated.value()->schema_version(), kSchemaVersion);
  EXPECT_EQ(migrated.value()->digest().value(), made_at_five);
  const std::vector<OrderChangeRow> changes =
      migrated.value()->order_changes(1, std::nullopt, 100).value();
  ASSERT_EQ(changes.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(changes[i].sequence, i + 1);
    EXPECT_EQ(changes[i].order.group, 1u);
  }
  EXPECT_EQ(changes[2].status, OrderStatus::cancelled);
  EXPECT_EQ(changes[2].order.order.id, (u64{1} << 32) | 1);
  // A reader of its own sees the same; it will not read a store of another schema.
  auto reader = Store::open_reader(file);
  ASSERT_TRUE(reader.ok());
  EXPECT_EQ(reader.value()->order_changes(0, std::nullopt, 100).value().size(), 3u);
  const Store::LastKeys last = reader.value()->last_keys(0, 2).value();
  ASSERT_TRUE(last.order_change.has_value());
  EXPECT_EQ(last.order_change->sequence, 2u);
  EXPECT_FALSE(last.event.has_value());
}

// TLS to the server (docs/HISTORY.md): with mariadb_ssl the session is encrypted and
// the server's certificate verified against the CA given; a server another CA vouches
// for is refused, and so is a server without TLS.
TEST_F(MariaDbStoreTest, TlsIsRequiredAndTheServerVerified) {
  // Certificates for 127.0.0.1 from a CA of the test's, and a CA that signed nothing.
  // (Where the server may read them: as root the script runs it as the user mysql.)
  char made[] = "/var/tmp/paygate-tls.XXXXXX";
  ASSERT_NE(::mkdtemp(made), nullptr);
  const std::filesystem::path certs(made);
  const std::string quiet = " >/dev/null 2>&1";
  const std::string script = fmt::format(
      "cd '{0}' && chmod 755 . && "
      "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=paygate-test-ca "
      "-keyout ca.key -out ca.pem{1} && "
      "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=someone-else "
      "-keyout other.key -out other.pem{1} && "
      "openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key "
      "-out server.csr{1} && printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext && "
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
      "-extfile san.ext -out server.pem{1} && chmod 644 *",
      certs.string(), quiet);
  ASSERT_EQ(std::system(script.c_str()), 0) << script;
  const std::unique_ptr<testing::MariaDbServer> own = testing::MariaDbServer::own(fmt::format(
      "--ssl-ca={0}/ca.pem --ssl-cert={0}/server.pem --ssl-key={0}/server.key", certs.string()));
  ASSERT_NE(own, nullptr) << "MariaDB did not start with TLS";
  StoreConfig tls = own->store("tls");
  tls.mariadb.ssl = true;
  tls.mariadb.ssl_ca = (certs / "ca.pem").string();
  {
    auto store = Store::open(tls);
    ASSERT_TRUE(store.ok()) << store.status().to_string();
    auto session = sql::open_mariadb(tls.mariadb, /*writing=*/false);
    ASSERT_TRUE(session.ok()) << session.status().to_string();
    sql::Statement cipher(*session.value(), "SHOW SESSION STATUS LIKE 'Ssl_cipher'");
    ASSERT_EQ(cipher.step(), sql::kRow) << session.value()->error();
    EXPECT_NE(cipher.text(1), "") << "the session is not encrypted";
  }
  // Another CA's word is not the server's.
  StoreConfig wrong = tls;
  wrong.mariadb.ssl_ca = (certs / "other.pem").string();
  EXPECT_FALSE(Store::open(wrong).ok());
  // A server without TLS (the shared one) is refused, not used in the clear.
  StoreConfig plain = config_;
  plain.mariadb.ssl = true;
  plain.mariadb.ssl_ca = tls.mariadb.ssl_ca;
  const Result<std::unique_ptr<Store>> cleartext = Store::open(plain);
  EXPECT_FALSE(cleartext.ok());
  // Settings that do not hang together are refused before any connection.
  StoreConfig unverified = tls;
  unverified.mariadb.ssl_ca.clear();
  EXPECT_EQ(Store::open(unverified).status().code(), StatusCode::invalid_config);
  unverified.mariadb.ssl_verify = false;  // said plainly: encrypted, not verified
  EXPECT_TRUE(Store::open(unverified).ok());
  StoreConfig unused = config_;
  unused.mariadb.ssl_ca = tls.mariadb.ssl_ca;  // without ssl = true
  EXPECT_EQ(Store::open(unused).status().code(), StatusCode::invalid_config);
  // The server's certificate made out to another name (the CA's own, reloaded by the
  // server): refused, unless verification was turned off.
  const std::string renamed = fmt::format(
      "cd '{0}' && openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.9 -keyout server.key "
      "-out server.csr{1} && printf 'subjectAltName=IP:127.0.0.9\\n' > san.ext && "
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
      "-extfile san.ext -out server.pem{1} && chmod 644 *",
      certs.string(), quiet);
  ASSERT_EQ(std::system(renamed.c_str()), 0) << renamed;
  ASSERT_TRUE(own->run_sql("FLUSH SSL"));
  const Result<std::unique_ptr<Store>> misnamed = Store::open(tls);
  EXPECT_FALSE(misnamed.ok());
  EXPECT_NE(misnamed.status().message().find("TLS"), std::string::npos)
      << misnamed.status().to_string();
  EXPECT_TRUE(Store::open(unverified).ok());
  std::filesystem::remove_all(certs);
}

}  // namespace
}  // namespace paygate::history
