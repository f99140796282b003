// The projector against journals a real group wrote: every event once, with its
// annotations and running balances, across reopenings at any point, while the group
// goes on writing.
#include "history/projector.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <thread>

#include "history/mariadb_test_support.h"
#include "history/worker.h"
#include "pipeline/group_test_support.h"
#include "snapshot/snapshot.h"

namespace paygate::history {
namespace {

using paygate::testing::Call;
using paygate::testing::kUsdCurrency;

// Each test with the store in SQLite, and again in MariaDB (a real server).
class ProjectorTest : public paygate::testing::GroupTest,
                      public ::testing::WithParamInterface<sql::Dialect> {
 protected:
  void SetUp() override {
    if (GetParam() == sql::Dialect::mariadb) PAYGATE_REQUIRE_MARIADB();
  }
  GroupConfig group_config() {
    GroupConfig c = config();
    c.keep_journal = true;
    return c;
  }
  ProjectorConfig projector_config(const GroupConfig& c) {
    return ProjectorConfig{.dir = c.dir, .ledger = c.ledger, .group = 0, .batch_events = 7};
  }
  // The test's store: a file of its directory, or a database of its own.
  std::unique_ptr<Store> open_store() {
    if (!store_config_) {
      store_config_ = GetParam() == sql::Dialect::sqlite
                          ? StoreConfig{.file = dir_.path() / "history.sqlite"}
                          : testing::MariaDbServer::shared()->store(
                                ::testing::UnitTest::GetInstance()->current_test_info()->name());
    }
    auto store = Store::open(*store_config_);
    EXPECT_TRUE(store.ok()) << store.status().to_string();
    return store.ok() ? std::move(store).value() : nullptr;
  }
  // One command with its annotations.
  CommandResult annotated(Group& group, const Command& command,
                          const std::vector<journal::Annotation>& said) {
    Call call;
    call.commands = {command};
    Request r = call.request();
    r.annotations = said.data();
    r.annotation_count = static_cast<u32>(said.size());
    EXPECT_EQ(group.submit(r), ResultCode::ok);
    EXPECT_EQ(call.completion.wait().status, ResultCode::ok);
    return call.results[0];
  }
  // A transfer with a reference (and metadata), journaled as annotations.
  CommandResult annotated_transfer(Group& group, AccountId from, AccountId to, u64 amount,
                                   const std::string& reference, bool hold = false) {
    const std::string metadata = R"({"ref":")" + reference + R"("})";
    return annotated(group,
                     hold ? Command::make_hold(from, to, amount, kUsdCurrency, 0)
                          : Command::make_transfer(from, to, amount, kUsdCurrency),
                     {{0, journal::AnnotationKind::reference, reference},
                      {0, journal::AnnotationKind::metadata, metadata}});
  }
  // Every event the group holds (its event log: the truth the store must match).
  std::vector<LedgerEvent> group_events(Group& group) {
    std::vector<LedgerEvent> all;
    std::optional<EventKey> cursor;
    for (;;) {
      EventPage page;
      const std::vector<LedgerEvent> some =
          read(group, RequestKind::read_events, cursor, 500, &page);
      all.insert(all.end(), some.begin(), some.end());
      if (some.empty() || !page.more) return all;
      cursor = key_of(some.back());
    }
  }
  // A workload: accounts, transfers (some annotated), holds posted, voided, refused.
  void workload(Group& group, AccountId bank, std::vector<AccountId>& accounts, u32 rounds) {
    for (u32 i = 0; i < rounds; ++i) {
      const AccountId a = accounts[i % accounts.size()];
      const AccountId b = accounts[(i + 1) % accounts.size()];
      EXPECT_EQ(one(group, Command::make_transfer(bank, a, 50, kUsdCurrency)).code, ResultCode::ok);
      annotated_transfer(group, a, b, 10 + i, "t-" + std::to_string(i));
      const CommandResult held = annotated_transfer(group, b, a, 5, "h-" + std::to_string(i), true);
      ASSERT_EQ(held.code, ResultCode::ok);
      if (i % 2 == 0) {
        EXPECT_EQ(one(group, Command::make_post(TransferId{held.id}, 3)).code, ResultCode::ok);
      } else {
        EXPECT_EQ(one(group, Command::make_void(TransferId{held.id})).code, ResultCode::ok);
      }
      // Refused (short of funds): no event, no row.
      EXPECT_EQ(one(group, Command::make_transfer(a, b, 1'000'000, kUsdCurrency)).code,
                ResultCode::insufficient_funds);
    }
  }
  // The store's events of group 0, in order.
  static std::vector<LedgerEvent> stored_events(Store& store) {
    const Result<std::vector<LedgerEvent>> all = store.events(0, std::nullopt, 1'000'000);
    EXPECT_TRUE(all.ok());
    return all.ok() ? all.value() : std::vector<LedgerEvent>{};
  }

  // A group's journal of workload() over two accounts, the group stopped: its events,
  // and its last durable sequence.
  std::pair<std::vector<LedgerEvent>, u64> journal_of_a_workload(const GroupConfig& c) {
    auto group = open(c);
    const AccountId bank = open_account(*group, AccountKind::system);
    std::vector<AccountId> accounts{open_account(*group), open_account(*group)};
    workload(*group, bank, accounts, 10);
    std::pair<std::vector<LedgerEvent>, u64> out{group_events(*group), group->durable_sequence()};
    group->stop();
    return out;
  }
  // `store` has the very rows of a store rebuilt from the journal up to `durable` in
  // one go (in SQLite: so MariaDB's are held to SQLite's, when the test's is there).
  void expect_rows_of_a_rebuild(const GroupConfig& c, u64 durable, Store& store) {
    static int rebuilt_count = 0;
    auto rebuilt =
        Store::open(dir_.path() / ("rebuilt-" + std::to_string(++rebuilt_count) + ".sqlite"));
    ASSERT_TRUE(rebuilt.ok());
    auto again = Projector::open(projector_config(c), *rebuilt.value());
    ASSERT_TRUE(again.ok());
    ASSERT_TRUE(again.value()->catch_up_all(durable).ok());
    EXPECT_EQ(rebuilt.value()->digest().value(), store.digest().value());
  }

  std::optional<StoreConfig> store_config_;
};

std::vector<std::tuple<u64, u32, int, u64, u64>> keys_of(const std::vector<LedgerEvent>& events) {
  std::vector<std::tuple<u64, u32, int, u64, u64>> out;
  for (const LedgerEvent& e : events)
    out.emplace_back(e.sequence, e.index, static_cast<int>(e.kind), e.id, e.amount);
  return out;
}

TEST_P(ProjectorTest, EveryEventOnceWithAnnotationsAndRunningBalances) {
  const GroupConfig c = group_config();
  auto group = open(c);
  const AccountId bank = open_account(*group, AccountKind::system);
  std::vector<AccountId> accounts{open_account(*group), open_account(*group), open_account(*group)};
  workload(*group, bank, accounts, 12);
  const std::vector<LedgerEvent> events = group_events(*group);
  const u64 durable = group->durable_sequence();
  std::map<u64, i64> balances;
  for (const AccountId id : accounts)
    balances[id.value] = lookup(*group, id).balance();

  auto store = open_store();
  auto opened = Projector::open(projector_config(c), *store);
  ASSERT_TRUE(opened.ok()) << opened.status().to_string();
  Projector& projector = *opened.value();
  const Result<u64> projected = projector.catch_up_all(durable);
  ASSERT_TRUE(projected.ok()) << projected.status().to_string();
  EXPECT_EQ(projector.watermark(), durable);
  EXPECT_EQ(projector.first_sequence(), 1u);
  EXPECT_EQ(store->watermark(0).value(), durable);
  EXPECT_EQ(store->rows("events").value(), events.size());
  EXPECT_EQ(keys_of(stored_events(*store)), keys_of(events));
  EXPECT_EQ(projector.ledger().state_digest(), [&] {
    group->stop();
    return group->ledger().state_digest();
  }());

  // Each transfer with what its request said; holds with how they ended.
  u32 transfers = 0, holds = 0;
  for (const LedgerEvent& e : events) {
    if (e.kind != LedgerEventKind::transfer_posted && e.kind != LedgerEventKind::transfer_pending)
      continue;
    const std::optional<TransferRow> row = store->transfer(0, e.id).value();
    ASSERT_TRUE(row.has_value()) << e.id;
    EXPECT_EQ(row->created_sequence, e.sequence);
    EXPECT_EQ(row->amount, e.amount);
    if (row->reference.empty()) {
      EXPECT_EQ(e.debit_account_id, bank) << "only the funding transfers are not annotated";
      continue;
    }
    EXPECT_EQ(row->metadata, R"({"ref":")" + row->reference + R"("})");
    if (e.kind == LedgerEventKind::transfer_pending) {
      ++holds;
      EXPECT_TRUE(row->reference.starts_with("h-"));
      const u32 i = static_cast<u32>(std::stoul(row->reference.substr(2)));
      EXPECT_EQ(row->status, i % 2 == 0 ? "posted" : "voided");
      EXPECT_EQ(row->posted_amount, i % 2 == 0 ? 3u : 0u);
    } else {
      ++transfers;
      EXPECT_TRUE(row->reference.starts_with("t-"));
      EXPECT_EQ(row->status, "posted");
    }
  }
  EXPECT_EQ(transfers, 12u);
  EXPECT_EQ(holds, 12u);
  // The newest statement line of each account carries its balance now, and each line's
  // balance is the one before it moved by its amount.
  for (const AccountId id : accounts) {
    const std::vector<EntryRow> lines = store->entries(id.value, std::nullopt, 1000).value();
    ASSERT_FALSE(lines.empty());
    EXPECT_EQ(lines.front().balance, balances[id.value]);
    for (std::size_t i = 0; i + 1 < lines.size(); ++i)
      EXPECT_EQ(lines[i].balance, lines[i + 1].balance + lines[i].amount) << i;
    EXPECT_EQ(lines.back().balance, lines.back().amount);  // the first moved it from 0
  }
}

// MariaDB drops the store's connections again and again while it projects (a server
// restart, a network cut): each write that fails is written again, whole, and the
// store ends with every event once, the same rows as a store that never saw a failure.
TEST_P(ProjectorTest, ConnectionsDroppedWhileItProjectsLoseAndDoubleNothing) {
  if (GetParam() != sql::Dialect::mariadb) GTEST_SKIP() << "a server's connections: MariaDB's";
  const GroupConfig c = group_config();
  const auto [events, durable] = journal_of_a_workload(c);

  auto store = open_store();
  auto opened = Projector::open(projector_config(c), *store);
  ASSERT_TRUE(opened.ok()) << opened.status().to_string();
  Projector& projector = *opened.value();
  u32 failures = 0;
  for (u32 call = 0; call < 10'000 && projector.watermark() < durable; ++call) {
    // The server drops both connections before every other call.
    if (call % 2 == 0) {
      ASSERT_GE(testing::MariaDbServer::shared()->kill_connections(store_config_->mariadb.database),
                0);
    }
    if (!projector.catch_up(durable).ok()) ++failures;
  }
  ASSERT_EQ(projector.watermark(), durable);
  EXPECT_GT(failures, 0u);  // (it did meet dropped connections)
  EXPECT_EQ(keys_of(stored_events(*store)), keys_of(events));
  expect_rows_of_a_rebuild(c, durable, *store);
}

// Reopened after every step (a crash between transactions, or before a batch's write
// was known), the projector writes each event exactly once.
TEST_P(ProjectorTest, ExactlyOnceWhereverItStops) {
  const GroupConfig c = group_config();
  const auto [events, durable] = journal_of_a_workload(c);

  for (u64 limit = 1; limit <= durable + 3; limit += 4) {
    auto store = open_store();
    auto opened = Projector::open(projector_config(c), *store);
    ASSERT_TRUE(opened.ok()) << opened.status().to_string();
    ASSERT_TRUE(opened.value()->catch_up_all(std::min(limit, durable)).ok());
    EXPECT_EQ(store->watermark(0).value(), std::min(limit, durable));
  }
  auto store = open_store();
  EXPECT_EQ(keys_of(stored_events(*store)), keys_of(events));
  EXPECT_EQ(store->rows("transfers").value(),
            static_cast<u64>(std::count_if(events.begin(), events.end(), [](const LedgerEvent& e) {
              return e.kind == LedgerEventKind::transfer_posted ||
                     e.kind == LedgerEventKind::transfer_pending;
            })));
  EXPECT_EQ(store->rows("annotations").value(), 2u * 20u);
}

// A write refused because the store already holds that very stretch (a COMMIT that
// was reported failed but happened; here, a second projector that wrote it first) is
// taken as written: history goes on, each row once.
TEST_P(ProjectorTest, AStretchTheStoreAlreadyHoldsIsTakenAsWritten) {
  const GroupConfig c = group_config();
  auto group = open(c);
  const AccountId bank = open_account(*group, AccountKind::system);
  std::vector<AccountId> accounts{open_account(*group), open_account(*group)};
  workload(*group, bank, accounts, 4);
  const u64 first_stretch = group->durable_sequence();
  auto store = open_store();
  ProjectorConfig whole = projector_config(c);
  whole.batch_events = 1'000'000;  // one batch to the end: both write the same stretch
  auto first = Projector::open(whole, *store);
  auto second = Projector::open(whole, *store);
  ASSERT_TRUE(first.ok() && second.ok());
  ASSERT_TRUE(first.value()->catch_up(first_stretch).ok());
  const Result<u64> again = second.value()->catch_up(first_stretch);
  ASSERT_TRUE(again.ok()) << again.status().to_string();
  EXPECT_EQ(second.value()->watermark(), first_stretch);
  // It goes on from there, each row once.
  workload(*group, bank, accounts, 2);
  const u64 durable = group->durable_sequence();
  const std::vector<LedgerEvent> events = group_events(*group);
  group->stop();
  ASSERT_TRUE(second.value()->catch_up_all(durable).ok());
  EXPECT_EQ(store->watermark(0).value(), durable);
  EXPECT_EQ(keys_of(stored_events(*store)), keys_of(events));
}

// The projector follows a group that keeps writing, reading only what is durable, and
// from a snapshot when the journal before its watermark is gone.
TEST_P(ProjectorTest, FollowsALiveGroupAndResumesFromASnapshot) {
  GroupConfig c = group_config();
  c.keep_journal = false;
  c.snapshot_every_commands = 40;
  c.request_commands_max = 16;  // small records, so small segments: several of them
  c.journal_segment_bytes = 4u << 10;
  c.group_commit_bytes_max = 4u << 10;
  auto group = open(c);
  const AccountId bank = open_account(*group, AccountKind::system);
  std::vector<AccountId> accounts{open_account(*group), open_account(*group)};
  auto store = open_store();
  std::unique_ptr<Projector> projector;
  {
    auto opened = Projector::open(projector_config(c), *store);
    ASSERT_TRUE(opened.ok()) << opened.status().to_string();
    projector = std::move(opened).value();
  }
  for (u32 round = 0; round < 10; ++round) {
    workload(*group, bank, accounts, 4);
    ASSERT_TRUE(projector->catch_up_all(group->durable_sequence()).ok());
    EXPECT_EQ(projector->watermark(), group->durable_sequence());
    if (round == 3) {
      // Reopened: from a snapshot at or before the watermark (the journal's start is
      // gone by now), the journal after it replayed without writing.
      projector.reset();
      auto opened = Projector::open(projector_config(c), *store);
      ASSERT_TRUE(opened.ok()) << opened.status().to_string();
      projector = std::move(opened).value();
    }
  }
  const std::vector<LedgerEvent> events = group_events(*group);  // since the last snapshot
  group->stop();
  EXPECT_GT(group->stats().snapshots.load(), 2u);
  EXPECT_GT(
      journal::parse_segment_file_name(journal::list_segments(c.dir).front().filename().string()),
      1u);
  EXPECT_EQ(projector->ledger().state_digest(), group->ledger().state_digest());
  EXPECT_EQ(store->watermark(0).value(), group->durable_sequence());
  EXPECT_EQ(store->first_sequence(0).value(), 1u);
  // The events the group still holds (those since its last snapshot) are the store's
  // newest, at the same keys; the store has every one before them too.
  const std::vector<LedgerEvent> stored = stored_events(*store);
  ASSERT_GE(stored.size(), events.size());
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(keys_of(std::vector<LedgerEvent>(stored.end() - static_cast<long>(events.size()),
                                             stored.end())),
            keys_of(events));
  EXPECT_EQ(stored.front().sequence, 1u);  // the first account's creation
}

// Every change of every order is a row of its history, and the order's row is as the
// last left it, with what its creating request said; pages of orders newest first.
TEST_P(ProjectorTest, OrdersEveryChangeWithWhatTheirRequestSaid) {
  ManualClock clock(1'700'000'000 * kNanosPerSecond);
  GroupConfig c = group_config();
  c.clock = &clock;
  auto group = open(c);
  const AccountId merchant = open_account(*group);
  const AccountId wallet = funded(*group, 1'000);
  const AccountId provider = funded(*group, 1'000);
  const auto create = [&](const std::string& ref, u64 amount, u32 expires_in_s) {
    clock.advance(kNanosPerSecond / 1000);  // distinct creation times
    Call call;
    call.commands = {Command::make_order_create(merchant, amount, kUsdCurrency, expires_in_s,
                                                std::hash<std::string>{}(ref) | 1)};
    const std::string description = "about " + ref;
    const std::string callback_url = "https://shop.test/back?o=" + ref;
    const std::vector<journal::Annotation> said{
        {0, journal::AnnotationKind::merchant_ref, ref},
        {0, journal::AnnotationKind::description, description},
        {0, journal::AnnotationKind::callback_url, callback_url}};
    Request r = call.request();
    r.annotations = said.data();
    r.annotation_count = static_cast<u32>(said.size());
    EXPECT_EQ(group->submit(r), ResultCode::ok);
    EXPECT_EQ(call.completion.wait().status, ResultCode::ok);
    EXPECT_EQ(call.results[0].code, ResultCode::ok);
    return call.results[0].id;
  };
  const auto step = [&](CommandKind kind, u64 order, AccountId account, u64 amount, u8 action) {
    return one(*group, Command::make_order(kind, order, account, amount, action)).code;
  };
  const u64 paid = create("ref-a", 100, 600);
  EXPECT_EQ(
      step(CommandKind::order_checkout, paid, wallet, 0, checkout_action(OrderMethod::wallet)),
      ResultCode::ok);
  EXPECT_EQ(step(CommandKind::order_refund, paid, {}, 30, 0), ResultCode::ok);
  const u64 external = create("ref-b", 200, 600);
  EXPECT_EQ(step(CommandKind::order_checkout, external, provider, 0,
                 checkout_action(OrderMethod::external)),
            ResultCode::ok);
  EXPECT_EQ(step(CommandKind::order_result, external, {}, 0, 1), ResultCode::ok);
  const u64 cancelled = create("ref-c", 300, 600);
  EXPECT_EQ(step(CommandKind::order_cancel, cancelled, {}, 0, 0), ResultCode::ok);
  // Refused steps change nothing: no row.
  EXPECT_EQ(step(CommandKind::order_cancel, cancelled, {}, 0, 0), ResultCode::invalid_order_state);
  const u64 expired = create("ref-d", 400, 1);
  clock.advance(2 * kNanosPerSecond);
  EXPECT_EQ(one(*group, Command::make_tick()).code, ResultCode::ok);  // it times out
  const u64 durable = group->durable_sequence();

  auto store = open_store();
  {
    auto opened = Projector::open(projector_config(c), *store);
    ASSERT_TRUE(opened.ok()) << opened.status().to_string();
    ASSERT_TRUE(opened.value()->catch_up_all(durable).ok());
  }
  group->stop();
  const auto statuses = [&](u64 id) {
    std::vector<std::pair<OrderStatus, u64>> out;
    const Result<std::vector<Store::OrderStep>> steps = store->order_history(id);
    EXPECT_TRUE(steps.ok());
    if (steps.ok()) {
      for (const Store::OrderStep& change : steps.value())
        out.emplace_back(change.status, change.amount_refunded);
    }
    return out;
  };
  using S = OrderStatus;
  EXPECT_EQ(statuses(paid),
            (std::vector<std::pair<S, u64>>{{S::created, 0}, {S::success, 0}, {S::success, 30}}));
  EXPECT_EQ(statuses(external),
            (std::vector<std::pair<S, u64>>{{S::created, 0}, {S::processing, 0}, {S::success, 0}}));
  EXPECT_EQ(statuses(cancelled),
            (std::vector<std::pair<S, u64>>{{S::created, 0}, {S::cancelled, 0}}));
  EXPECT_EQ(statuses(expired), (std::vector<std::pair<S, u64>>{{S::created, 0}, {S::timeout, 0}}));
  EXPECT_EQ(store->rows("order_changes").value(), 10u);
  // The outbox: one event per final status or refund, in the order they were made.
  {
    const std::vector<OrderEventRow> events = store->order_events(0, 0, 0, 100).value();
    std::vector<std::pair<u64, std::string>> said;
    for (const OrderEventRow& e : events)
      said.emplace_back(e.order.id, e.type);
    EXPECT_EQ(said, (std::vector<std::pair<u64, std::string>>{{paid, "order.success"},
                                                              {paid, "order.refunded"},
                                                              {external, "order.success"},
                                                              {cancelled, "order.cancelled"},
                                                              {expired, "order.timeout"}}));
    for (std::size_t i = 1; i < events.size(); ++i) {
      EXPECT_GT(events[i].seq, events[i - 1].seq);
      EXPECT_GT(events[i].sequence, events[i - 1].sequence);
    }
    EXPECT_EQ(events[1].order.amount_refunded, 30u);  // each as its change left it
    EXPECT_EQ(events[0].order.amount_refunded, 0u);
    // A reader resumes after the last it read.
    EXPECT_EQ(store->order_events(0, events[2].sequence, events[2].n, 100).value().size(), 2u);
    EXPECT_TRUE(store->order_events(1, 0, 0, 100).value().empty());
    EXPECT_EQ(order_event_id(events[0].group, events[0].sequence, events[0].n),
              "evt_0_" + std::to_string(events[0].sequence) + "_0");
  }

  // Each order's row is the book's record as it was left, with its request's texts.
  for (const u64 id : {paid, external, cancelled, expired}) {
    const std::optional<OrderRow> row = store->order(id).value();
    ASSERT_TRUE(row.has_value());
    const Order* held = group->ledger().find_order(id);
    ASSERT_NE(held, nullptr);
    EXPECT_EQ(std::memcmp(&row->order, held, sizeof(Order)), 0) << std::hex << id;
    EXPECT_EQ(row->description, "about " + row->merchant_ref);
    EXPECT_EQ(row->callback_url, "https://shop.test/back?o=" + row->merchant_ref);
    EXPECT_GT(row->created_sequence, 0u);
  }
  EXPECT_EQ(store->order(paid).value()->merchant_ref, "ref-a");
  EXPECT_FALSE(store->order(paid + 1000).value().has_value());

  // Pages: newest first; filters; a cursor continues after its order.
  const auto ids = [&](const OrderQuery& q) {
    std::vector<u64> out;
    const auto page = store->orders(q).value();
    EXPECT_TRUE(page.has_value());
    if (page) {
      for (const OrderRow& row : *page)
        out.push_back(row.order.id);
    }
    return out;
  };
  const u64 merchant_id = 1;
  EXPECT_EQ(ids({}), (std::vector<u64>{expired, cancelled, external, paid}));
  EXPECT_EQ(ids({.merchant = merchant_id, .status = S::success}),
            (std::vector<u64>{external, paid}));
  EXPECT_EQ(ids({.merchant_ref = "ref-c"}), (std::vector<u64>{cancelled}));
  EXPECT_TRUE(ids({.merchant = 2}).empty());
  const u64 second_ns = store->order(external).value()->order.created_at_ns;
  EXPECT_EQ(ids({.created_from_ns = second_ns}), (std::vector<u64>{expired, cancelled, external}));
  EXPECT_EQ(ids({.created_to_ns = second_ns}), (std::vector<u64>{paid}));
  std::vector<u64> walked;
  std::optional<u64> cursor;
  for (int pages = 0; pages < 10; ++pages) {
    const std::vector<u64> page = ids({.after_order = cursor, .limit = 1});
    if (page.empty()) break;
    walked.push_back(page[0]);
    cursor = page[0];
  }
  EXPECT_EQ(walked, (std::vector<u64>{expired, cancelled, external, paid}));
  // A cursor that is no order of the caller's is refused, not taken as the start.
  EXPECT_FALSE(store->orders({.merchant = 2, .after_order = paid}).value().has_value());
}

// A final order leaves the group's memory when its retention passes; the projector
// moves its row to the archive at that very command, and every read finds it there.
// The same rows in either database, and in a rebuild (expect_rows_of_a_rebuild).
TEST_P(ProjectorTest, FinalOrdersLeaveForTheArchiveAsTheGroupLetsThemGo) {
  ManualClock clock(1'700'000'000 * kNanosPerSecond);
  GroupConfig c = group_config();
  c.clock = &clock;
  c.ledger.order_final_retained_ns = 10 * kNanosPerSecond;
  auto group = open(c);
  const AccountId merchant = open_account(*group);
  std::vector<u64> orders;
  std::vector<Order> final_records;
  for (u64 ref = 1; ref <= 12; ++ref) {
    clock.advance(kNanosPerSecond);
    const CommandResult made =
        one(*group, Command::make_order_create(merchant, 10 * ref, kUsdCurrency, 600, ref));
    ASSERT_EQ(made.code, ResultCode::ok);
    orders.push_back(made.id);
    if (ref <= 8) {  // eight final (cancelled), four still open
      ASSERT_EQ(one(*group, Command::make_order(CommandKind::order_cancel, made.id, {}, 0, 0)).code,
                ResultCode::ok);
      final_records.push_back(*group->ledger().find_order(made.id));
    }
  }
  // Past the first three's retention (each order a second apart; the first two left as
  // the last orders were made): they leave.
  clock.advance(kNanosPerSecond);
  ASSERT_EQ(one(*group, Command::make_tick()).code, ResultCode::ok);
  u32 gone = 0;
  for (u64 i = 0; i < 8; ++i)
    gone += group->ledger().find_order(orders[i]) == nullptr ? 1 : 0;
  ASSERT_GT(gone, 0u);
  ASSERT_LT(gone, 8u);
  const u64 durable = group->durable_sequence();
  auto store = open_store();
  {
    auto opened = Projector::open(projector_config(c), *store);  // batches of 7: several
    ASSERT_TRUE(opened.ok()) << opened.status().to_string();
    ASSERT_TRUE(opened.value()->catch_up_all(durable).ok());
  }
  EXPECT_EQ(store->rows("order_archive").value(), gone);
  EXPECT_EQ(store->rows("orders").value(), 12u - gone);
  for (u64 i = 0; i < orders.size(); ++i) {
    const std::optional<OrderRow> row = store->order(orders[i]).value();
    ASSERT_TRUE(row.has_value()) << i;
    const Order* held = group->ledger().find_order(orders[i]);
    const Order& expected = held != nullptr ? *held : final_records[i];
    EXPECT_EQ(std::memcmp(&row->order, &expected, sizeof(Order)), 0) << i;
  }
  std::vector<u64> listed;
  const std::optional<std::vector<OrderRow>> page = store->orders({.limit = 100}).value();
  ASSERT_TRUE(page.has_value());
  for (const OrderRow& row : *page)
    listed.push_back(row.order.id);
  EXPECT_EQ(listed, std::vector<u64>(orders.rbegin(), orders.rend()));
  group->stop();
  expect_rows_of_a_rebuild(c, durable, *store);
}

// One command may change an order twice: orders due time out before it runs (at its
// sequence), then it changes one of them again (a late result). Each change is a row.
TEST_P(ProjectorTest, OneCommandMayChangeAnOrderTwice) {
  ManualClock clock(1'700'000'000 * kNanosPerSecond);
  GroupConfig c = group_config();
  c.clock = &clock;
  auto group = open(c);
  const AccountId merchant = open_account(*group);
  const AccountId provider = funded(*group, 1'000);
  std::vector<u64> orders;
  for (u64 ref = 1; ref <= 2; ++ref) {
    const CommandResult made =
        one(*group, Command::make_order_create(merchant, 10, kUsdCurrency, 1, ref));
    ASSERT_EQ(made.code, ResultCode::ok);
    orders.push_back(made.id);
    ASSERT_EQ(one(*group, Command::make_order(CommandKind::order_checkout, made.id, provider, 0,
                                              checkout_action(OrderMethod::external)))
                  .code,
              ResultCode::ok);
  }
  clock.advance(2 * kNanosPerSecond);
  // Both time out before the result runs; the result makes the first an exception.
  ASSERT_EQ(one(*group, Command::make_order(CommandKind::order_result, orders[0], {}, 0, 1)).code,
            ResultCode::ok);
  const u64 durable = group->durable_sequence();
  auto store = open_store();
  auto opened = Projector::open(projector_config(c), *store);
  ASSERT_TRUE(opened.ok()) << opened.status().to_string();
  const Result<u64> projected = opened.value()->catch_up_all(durable);
  ASSERT_TRUE(projected.ok()) << projected.status().to_string();
  EXPECT_EQ(store->watermark(0).value(), durable);
  const std::vector<Store::OrderStep> first = store->order_history(orders[0]).value();
  ASSERT_EQ(first.size(), 4u);
  EXPECT_EQ(first[2].status, OrderStatus::timeout);
  EXPECT_EQ(first[3].status, OrderStatus::exception_checkout);
  EXPECT_EQ(first[2].sequence, first[3].sequence);
  EXPECT_EQ(store->order(orders[1]).value()->order.status, OrderStatus::timeout);
  // Both changes of one command raise an event each, told apart by their place (n).
  const std::vector<OrderEventRow> events = store->order_events(0, 0, 0, 100).value();
  ASSERT_EQ(events.size(), 3u);
  // The exception comes after both timeouts of its command, by place.
  EXPECT_EQ(store->order_events(0, events[1].sequence, events[1].n, 100).value().size(), 1u);
  EXPECT_EQ(events[0].type, "order.timeout");
  EXPECT_EQ(events[1].type, "order.timeout");
  EXPECT_EQ(events[2].type, "order.exception_checkout");
  EXPECT_EQ(events[2].sequence, events[0].sequence);
  EXPECT_NE(order_event_id(events[2].group, events[2].sequence, events[2].n),
            order_event_id(events[0].group, events[0].sequence, events[0].n));
}

// A withdrawal (a hold whose command carried a destination) raises one event when it
// closes, for the owner of the account it is drawn from; other holds raise none. One
// command that times out an order and expires a withdrawal raises both, numbered on.
TEST_P(ProjectorTest, WithdrawalsRaiseAnEventWhenTheyClose) {
  ManualClock clock(1'700'000'000 * kNanosPerSecond);
  GroupConfig c = group_config();
  c.clock = &clock;
  auto group = open(c);
  constexpr MerchantId kPayer{0x4000'0000'0042};
  const AccountId bank = open_account(*group, AccountKind::system);
  const CommandResult opened_wallet =
      one(*group, Command::make_create_account(kPayer, kUsdCurrency, AccountKind::user));
  ASSERT_EQ(opened_wallet.code, ResultCode::ok);
  const AccountId wallet{opened_wallet.id};
  ASSERT_EQ(one(*group, Command::make_transfer(bank, wallet, 1'000, kUsdCurrency)).code,
            ResultCode::ok);
  const AccountId clearing = open_account(*group);
  const AccountId merchant = open_account(*group);
  const auto withdraw = [&](u64 amount, u32 timeout_s, const std::string& destination) {
    const CommandResult made =
        annotated(*group, Command::make_hold(wallet, clearing, amount, kUsdCurrency, timeout_s),
                  {{0, journal::AnnotationKind::destination, destination}});
    EXPECT_EQ(made.code, ResultCode::ok);
    return made.id;
  };
  const u64 paid = withdraw(100, 600, "IBAN-1");
  const u64 refused = withdraw(200, 600, "IBAN-2");
  const u64 lapsed = withdraw(300, 1, "IBAN-3");
  // A hold that is no withdrawal (no destination), posted: no event.
  const CommandResult plain =
      one(*group, Command::make_hold(wallet, clearing, 50, kUsdCurrency, 600));
  ASSERT_EQ(plain.code, ResultCode::ok);
  ASSERT_EQ(one(*group, Command::make_post(TransferId{plain.id}, 50)).code, ResultCode::ok);
  ASSERT_EQ(one(*group, Command::make_void(TransferId{refused})).code, ResultCode::ok);
  const CommandResult order =
      one(*group, Command::make_order_create(merchant, 10, kUsdCurrency, 1, 99));
  ASSERT_EQ(order.code, ResultCode::ok);
  clock.advance(2 * kNanosPerSecond);
  // The provider's result, with its reference: its command also times out the order
  // and the short withdrawal, whose event must not take this reference.
  ASSERT_EQ(annotated(*group, Command::make_post(TransferId{paid}, 100),
                      {{0, journal::AnnotationKind::provider_ref, "bank-7"}})
                .code,
            ResultCode::ok);
  const u64 durable = group->durable_sequence();
  group->stop();

  auto store = open_store();
  auto opened = Projector::open(projector_config(c), *store);
  ASSERT_TRUE(opened.ok()) << opened.status().to_string();
  ASSERT_TRUE(opened.value()->catch_up_all(durable).ok());
  const std::vector<OrderEventRow> events = store->order_events(0, 0, 0, 100).value();
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events[0].type, "withdrawal.failed");
  EXPECT_EQ(events[0].object_id, refused);
  EXPECT_EQ(events[0].recipient, kPayer.value);
  ASSERT_TRUE(events[0].withdrawal);
  EXPECT_EQ(events[0].withdrawal->debit, wallet.value);
  EXPECT_EQ(events[0].withdrawal->credit, clearing.value);
  EXPECT_EQ(events[0].withdrawal->amount, 200u);
  EXPECT_EQ(events[0].destination, "IBAN-2");
  EXPECT_EQ(events[0].provider_ref, "");
  // The result's command: the order's timeout first (n 0), then the withdrawals' in
  // the order they closed: the expiry (without the result's reference), the success.
  EXPECT_EQ(events[1].type, "order.timeout");
  EXPECT_EQ(events[1].object_id, order.id);
  EXPECT_EQ(events[1].recipient, 1u);
  EXPECT_EQ(events[2].type, "withdrawal.timeout");
  EXPECT_EQ(events[2].object_id, lapsed);
  EXPECT_EQ(events[2].destination, "IBAN-3");
  EXPECT_EQ(events[2].provider_ref, "");
  EXPECT_EQ(events[3].type, "withdrawal.success");
  EXPECT_EQ(events[3].object_id, paid);
  EXPECT_EQ(events[3].destination, "IBAN-1");
  EXPECT_EQ(events[3].provider_ref, "bank-7");
  EXPECT_EQ(events[3].withdrawal->amount, 100u);
  for (u32 i = 1; i < 4; ++i) {
    EXPECT_EQ(events[i].sequence, events[1].sequence);
    EXPECT_EQ(events[i].n, i - 1);
  }
  EXPECT_EQ(store->order_events(0, events[1].sequence, events[1].n, 100).value().size(), 2u);

  // A store rebuilt from the same journal has the same outbox.
  expect_rows_of_a_rebuild(c, durable, *store);
}

// A store that could not open at a start (its place in the journal then unknown to the
// group): the floor unknown_reader_floor() sets keeps what its projector needs at the
// next start, however many snapshots come and go meanwhile.
TEST_P(ProjectorTest, AStoreThatCouldNotOpenCatchesUpAtTheNextStart) {
  GroupConfig c = group_config();
  c.keep_journal = false;
  c.snapshot_every_commands = 40;
  c.request_commands_max = 16;
  c.journal_segment_bytes = 4u << 10;
  c.group_commit_bytes_max = 4u << 10;
  AccountId bank{};
  std::vector<AccountId> accounts;
  u64 watermark = 0, first = 0;
  {
    auto group = open(c);
    bank = open_account(*group, AccountKind::system);
    accounts = {open_account(*group), open_account(*group)};
    workload(*group, bank, accounts, 30);
    watermark = group->durable_sequence();
    group->stop();
  }
  {
    auto store = open_store();
    auto projector = Projector::open(projector_config(c), *store);
    ASSERT_TRUE(projector.ok()) << projector.status().to_string();
    ASSERT_TRUE(projector.value()->catch_up_all(watermark).ok());
    first = store->first_sequence(0).value();
  }
  ASSERT_FALSE(snapshot::list(c.dir).empty());
  // The next start: the store cannot open, the group holds its journal from here.
  std::atomic<u64> floor{unknown_reader_floor(c.dir)};
  EXPECT_GT(floor.load(), 0u);
  EXPECT_LE(floor.load(), watermark);
  Result<std::unique_ptr<Group>> opened = Group::open(c);
  ASSERT_TRUE(opened.ok()) << opened.status().to_string();
  std::unique_ptr<Group> group = std::move(opened).value();
  group->set_retention_floor(&floor, 1000);
  group->start();
  // As many new snapshots as the group keeps for itself, so that without the floor every
  // snapshot of before the start would be gone (written in the background: more work
  // until they are there, bounded).
  const u64 newest_at_start = snapshot::list(c.dir).front().first;
  const auto new_ones = [&] {
    u32 n = 0;
    for (const auto& [sequence, file] : snapshot::list(c.dir))
      n += sequence > newest_at_start;
    return n;
  };
  for (int round = 0; round < 600 && new_ones() < c.snapshots_kept; ++round) {
    workload(*group, bank, accounts, 2);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_GE(new_ones(), c.snapshots_kept);
  const u64 durable = group->durable_sequence();
  group->stop();
  // The start after: the store opens where it stood and catches up.
  auto store = open_store();
  auto projector = Projector::open(projector_config(c), *store);
  ASSERT_TRUE(projector.ok()) << projector.status().to_string();
  ASSERT_TRUE(projector.value()->catch_up_all(durable).ok());
  EXPECT_EQ(store->watermark(0).value(), durable);
  EXPECT_EQ(store->first_sequence(0).value(), first);  // no gap: one history
}

// A store whose history of the group begins after orders were made (from a snapshot:
// the journal before it is gone) gets a row for each order the group holds, as it is.
TEST_P(ProjectorTest, OrdersHeldWhenHistoryBeginsGetRows) {
  GroupConfig c = group_config();
  c.keep_journal = false;
  c.snapshot_every_commands = 40;
  c.request_commands_max = 16;
  c.journal_segment_bytes = 4u << 10;
  c.group_commit_bytes_max = 4u << 10;
  auto group = open(c);
  const AccountId bank = open_account(*group, AccountKind::system);
  std::vector<AccountId> accounts{open_account(*group), open_account(*group)};
  const CommandResult open_order =
      one(*group, Command::make_order_create(accounts[0], 10, kUsdCurrency, 3600, 7));
  ASSERT_EQ(open_order.code, ResultCode::ok);
  const CommandResult cancelled =
      one(*group, Command::make_order_create(accounts[0], 20, kUsdCurrency, 3600, 8));
  ASSERT_EQ(one(*group, Command::make_order(CommandKind::order_cancel, cancelled.id)).code,
            ResultCode::ok);
  // Snapshots, and the journal's start goes once one is published: they are written in
  // the background, so more work until it has gone (bounded), however busy the machine.
  const auto first_segment = [&] {
    return journal::parse_segment_file_name(
        journal::list_segments(c.dir).front().filename().string());
  };
  workload(*group, bank, accounts, 48);
  for (int round = 0; round < 600 && first_segment() <= 1; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    workload(*group, bank, accounts, 2);
  }
  const u64 durable = group->durable_sequence();
  group->stop();
  ASSERT_GT(first_segment(), 1u);
  auto store = open_store();
  auto opened = Projector::open(projector_config(c), *store);
  ASSERT_TRUE(opened.ok()) << opened.status().to_string();
  ASSERT_TRUE(opened.value()->catch_up_all(durable).ok());
  EXPECT_GT(store->first_sequence(0).value(), 1u);
  const std::optional<OrderRow> held = store->order(open_order.id).value();
  ASSERT_TRUE(held.has_value());
  EXPECT_EQ(held->order.status, OrderStatus::created);
  EXPECT_EQ(held->created_sequence, 0u);  // made before the store's history
  EXPECT_EQ(store->order(cancelled.id).value()->order.status, OrderStatus::cancelled);
  // Opened again: nothing twice.
  opened.value().reset();
  auto again = Projector::open(projector_config(c), *store);
  ASSERT_TRUE(again.ok()) << again.status().to_string();
  EXPECT_EQ(store->rows("orders").value(), 2u);
}

INSTANTIATE_TEST_SUITE_P(Stores, ProjectorTest,
                         ::testing::Values(sql::Dialect::sqlite, sql::Dialect::mariadb),
                         [](const ::testing::TestParamInfo<sql::Dialect>& param) {
                           return param.param == sql::Dialect::sqlite ? "Sqlite" : "MariaDb";
                         });

}  // namespace
}  // namespace paygate::history
