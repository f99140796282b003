#include "pipeline/group.h"

#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <random>
#include <thread>

#include "base/temp_dir.h"
#include "journal/reader.h"
#include "ledger/ledger_test_support.h"
#include "pipeline/engine.h"

namespace paygate {
namespace {

constexpr Currency kUsdCurrency = Currency::from("USD");

// A request and everything it points at, waited on by one thread.
struct Call {
  std::vector<Command> commands;
  std::vector<CommandResult> results;
  WaitableCompletion completion;
  Account account{};
  Transfer transfer{};

  Request request(RequestKind kind = RequestKind::commands, IdempotencyKey key = {}) {
    results.assign(commands.size(), CommandResult{});
    return Request{.kind = kind,
                   .count = static_cast<u32>(commands.size()),
                   .commands = commands.data(),
                   .results = results.data(),
                   .batch_key = key,
                   .completion = &completion};
  }
};

class GroupTest : public ::testing::Test {
 protected:
  GroupConfig config() {
    GroupConfig c;
    c.dir = dir_.path() / "group-0000";
    c.ledger = LedgerConfig{.prefix = {0, 0},
                            .accounts_max = 1024,
                            .pending_max = 1024,
                            .recent_transfers_max = 1024,
                            .idempotency_keys_max = 1024};
    c.journal_segment_bytes = 2u << 20;
    c.group_commit_bytes_max = 1u << 20;
    c.ring_capacity = 1024;
    c.snapshot_every_commands = 0;
    c.idle_spin = 100;
    return c;
  }
  std::unique_ptr<Group> open(const GroupConfig& c) {
    std::string error;
    auto group = Group::open(c, &error);
    EXPECT_NE(group, nullptr) << error;
    if (group) group->start();
    return group;
  }
  // Submits and waits; the request must be accepted.
  const Outcome& run(Group& group, Call& call, RequestKind kind = RequestKind::commands,
                     IdempotencyKey key = {}) {
    const ResultCode accepted = group.submit(call.request(kind, key));
    EXPECT_EQ(accepted, ResultCode::ok);
    return call.completion.wait();
  }
  CommandResult one(Group& group, const Command& command) {
    Call call;
    call.commands = {command};
    const Outcome& outcome = run(group, call);
    EXPECT_EQ(outcome.status, ResultCode::ok);
    EXPECT_GE(group.durable_sequence(), outcome.first_sequence);  // durable before answered
    return call.results[0];
  }
  AccountId open_account(Group& group, AccountKind kind = AccountKind::user) {
    const CommandResult r =
        one(group, Command::make_create_account(MerchantId{1}, kUsdCurrency, kind));
    EXPECT_EQ(r.code, ResultCode::ok);
    return AccountId{r.id};
  }
  AccountId funded(Group& group, u64 amount) {
    const AccountId bank = open_account(group, AccountKind::system);
    const AccountId account = open_account(group);
    EXPECT_EQ(one(group, Command::make_transfer(bank, account, amount, kUsdCurrency)).code,
              ResultCode::ok);
    return account;
  }
  Account lookup(Group& group, AccountId id) {
    Call call;
    Request r{.kind = RequestKind::lookup_account, .lookup_id = id.value};
    r.account_out = &call.account;
    r.completion = &call.completion;
    EXPECT_EQ(group.submit(r), ResultCode::ok);
    EXPECT_TRUE(call.completion.wait().found);
    return call.account;
  }
  // One page of events (read_events) or of an account's statement (read_entries).
  std::vector<LedgerEvent> read(Group& group, RequestKind kind, std::optional<EventKey> cursor,
                                u32 limit, EventPage* page, AccountId account = {}) {
    Call call;
    std::vector<LedgerEvent> out(limit);
    Request r{.kind = kind, .count = limit, .lookup_id = account.value};
    r.events_out = out.data();
    r.cursor = cursor;
    r.completion = &call.completion;
    EXPECT_EQ(group.submit(r), ResultCode::ok);
    *page = call.completion.wait().page;
    out.resize(page->count);
    return out;
  }
  std::optional<Transfer> lookup(Group& group, TransferId id) {
    Call call;
    Request r{.kind = RequestKind::lookup_transfer, .lookup_id = id.value};
    r.transfer_out = &call.transfer;
    r.completion = &call.completion;
    EXPECT_EQ(group.submit(r), ResultCode::ok);
    if (!call.completion.wait().found) return std::nullopt;
    return call.transfer;
  }

  TempDir dir_;
};

TEST_F(GroupTest, AppliesCommandsAndAnswersOnlyWhenDurable) {
  auto group = open(config());
  const AccountId user = funded(*group, 1000);
  const AccountId shop = open_account(*group, AccountKind::merchant);
  const CommandResult paid = one(*group, Command::make_transfer(user, shop, 300, kUsdCurrency));
  EXPECT_EQ(paid.code, ResultCode::ok);
  EXPECT_EQ(one(*group, Command::make_transfer(user, shop, 800, kUsdCurrency)).code,
            ResultCode::insufficient_funds);
  EXPECT_EQ(lookup(*group, shop).balance(), 300);
  EXPECT_EQ(lookup(*group, TransferId{paid.id})->amount, 300u);
  EXPECT_FALSE(lookup(*group, TransferId{paid.id + 1000}).has_value());
  group->stop();
  EXPECT_TRUE(group->ledger().check_invariants().ok);
  EXPECT_GE(group->stats().commands.load(), 6u);
}

// A journal too small for its largest record is a configuration error, said so,
// before anything is created.
TEST_F(GroupTest, JournalSizesTooSmallForARecordAreRefused) {
  for (const bool stage : {true, false}) {
    GroupConfig c = config();
    if (stage) {
      c.group_commit_bytes_max = journal::kRecordBytesMax - 8;
    } else {
      c.journal_segment_bytes = 2 * u64{journal::kRecordBytesMax} - 8;
    }
    std::string error;
    EXPECT_EQ(Group::open(c, &error), nullptr);
    EXPECT_NE(error.find(stage ? "group_commit_bytes_max" : "journal_segment_bytes"),
              std::string::npos)
        << error;
    EXPECT_FALSE(std::filesystem::exists(c.dir)) << "nothing is created for a refused config";
  }
  GroupConfig c = config();
  c.group_commit_bytes_max = journal::kRecordBytesMax;
  c.journal_segment_bytes = 2 * u64{journal::kRecordBytesMax};
  EXPECT_NE(open(c), nullptr);
}

TEST_F(GroupTest, LooksUpManyIdsInOneRequest) {
  auto group = open(config());
  const AccountId user = funded(*group, 1000);
  const AccountId shop = open_account(*group, AccountKind::merchant);
  const CommandResult paid = one(*group, Command::make_transfer(user, shop, 300, kUsdCurrency));
  const u64 ids[] = {paid.id, paid.id + 1000, paid.id};
  Transfer out[3];
  WaitableCompletion done;
  Request r{.kind = RequestKind::lookup_transfer, .count = 3};
  r.lookup_ids = ids;
  r.transfer_out = out;
  r.completion = &done;
  ASSERT_EQ(group->submit(r), ResultCode::ok);
  EXPECT_FALSE(done.wait().found);  // one of them is unknown
  EXPECT_EQ(out[0].amount, 300u);
  EXPECT_EQ(out[1].id.value, 0u);
  EXPECT_EQ(out[2].debit_account_id, user);
  Request empty{.kind = RequestKind::lookup_account, .count = 0};
  empty.lookup_ids = ids;
  empty.completion = &done;
  EXPECT_EQ(group->submit(empty), ResultCode::batch_empty);
}

// kill -9 cannot tell "after write()" from "after fdatasync()" (the page cache
// survives a killed process); this can: with a sync that takes 150 ms, no answer may
// come sooner.
TEST_F(GroupTest, NoAnswerBeforeTheSyncReturns) {
  GroupConfig c = config();
  std::atomic<bool> slow{false};
  std::atomic<u64> syncs_done{0};
  c.journal_fault = [&](journal::FileOp op) {
    if (op == journal::FileOp::sync && slow.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(150));
      syncs_done.fetch_add(1);
    }
    return 0;
  };
  auto group = open(c);
  const AccountId user = funded(*group, 100);
  const AccountId shop = open_account(*group);
  slow = true;
  const u64 syncs_before = syncs_done.load();
  const auto started = std::chrono::steady_clock::now();
  Call call;
  call.commands = {Command::make_transfer(user, shop, 1, kUsdCurrency)};
  ASSERT_EQ(run(*group, call).status, ResultCode::ok);
  EXPECT_GE(std::chrono::steady_clock::now() - started, std::chrono::milliseconds(150));
  EXPECT_GT(syncs_done.load(), syncs_before);
  slow = false;
}

TEST_F(GroupTest, RestartRecoversTheSameState) {
  u64 digest = 0;
  {
    auto group = open(config());
    const AccountId user = funded(*group, 1000);
    const AccountId shop = open_account(*group);
    for (int i = 0; i < 50; ++i)
      one(*group, Command::make_transfer(user, shop, 3, kUsdCurrency));
    group->stop();
    digest = group->ledger().state_digest();
  }
  auto group = open(config());
  EXPECT_EQ(group->recovery().records_replayed, 54u);
  EXPECT_EQ(group->recovery().next_sequence, 55u);
  group->stop();
  EXPECT_EQ(group->ledger().state_digest(), digest);
}

TEST_F(GroupTest, LookupsSeeTheCommandsBeforeThem) {
  auto group = open(config());
  const AccountId user = funded(*group, 1000);
  const AccountId shop = open_account(*group);
  Call pay;
  pay.commands = {Command::make_transfer(user, shop, 5, kUsdCurrency)};
  ASSERT_EQ(group->submit(pay.request()), ResultCode::ok);
  const Account seen = lookup(*group, shop);  // submitted right after, not awaited first
  EXPECT_EQ(seen.balance(), 5);
  EXPECT_EQ(pay.completion.wait().status, ResultCode::ok);
}

TEST_F(GroupTest, AtomicRequestsAreAllOrNothing) {
  auto group = open(config());
  const AccountId user = funded(*group, 100);
  const AccountId shop = open_account(*group);
  Call batch;
  batch.commands = {Command::make_transfer(user, shop, 60, kUsdCurrency),
                    Command::make_transfer(user, shop, 60, kUsdCurrency)};
  const Outcome& outcome = run(*group, batch, RequestKind::atomic, IdempotencyKey{5, 6});
  EXPECT_EQ(outcome.status, ResultCode::ok);
  EXPECT_EQ(outcome.atomic, ResultCode::insufficient_funds);
  EXPECT_EQ(batch.results[0].code, ResultCode::atomic_batch_failed);
  EXPECT_EQ(batch.results[1].code, ResultCode::insufficient_funds);
  EXPECT_EQ(lookup(*group, shop).balance(), 0);
  // The same key and content: the same answer, from the idempotency window.
  Call again;
  again.commands = batch.commands;
  EXPECT_EQ(run(*group, again, RequestKind::atomic, IdempotencyKey{5, 6}).atomic,
            ResultCode::insufficient_funds);
}

// Many threads pay out of one account holding exactly enough for some of them: the
// balance ends exact and never below zero.
TEST_F(GroupTest, ConcurrentProducersOnOneHotAccount) {
  auto group = open(config());
  const AccountId hot = funded(*group, 5000);  // 5,000 payments of 1 fit
  std::vector<AccountId> sinks;
  for (int i = 0; i < 8; ++i)
    sinks.push_back(open_account(*group));
  constexpr int kThreads = 4, kEach = 2000;
  std::atomic<int> ok{0}, refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; i += 10) {
        Call call;
        for (int k = 0; k < 10; ++k) {
          call.commands.push_back(
              Command::make_transfer(hot, sinks[(t + k) % sinks.size()], 1, kUsdCurrency));
        }
        ASSERT_EQ(group->submit(call.request()), ResultCode::ok);
        ASSERT_EQ(call.completion.wait().status, ResultCode::ok);
        for (const CommandResult& r : call.results) {
          (r.code == ResultCode::ok ? ok : refused).fetch_add(1);
          ASSERT_TRUE(r.code == ResultCode::ok || r.code == ResultCode::insufficient_funds);
        }
      }
    });
  }
  for (auto& t : threads)
    t.join();
  EXPECT_EQ(ok.load(), 5000);
  EXPECT_EQ(refused.load(), kThreads * kEach - 5000);
  EXPECT_EQ(lookup(*group, hot).balance(), 0);
  group->stop();
  EXPECT_TRUE(group->ledger().check_invariants().ok);
}

TEST_F(GroupTest, IdleTicksExpireHoldsOnTimeAndReplayTheSame) {
  ManualClock clock(1'800'000'000ull * kNanosPerSecond);
  GroupConfig c = config();
  c.clock = &clock;
  c.tick_interval_ns = 2'000'000;  // the group checks every 2 ms of real time
  u64 digest = 0;
  {
    auto group = open(c);
    const AccountId user = funded(*group, 100);
    const CommandResult held =
        one(*group, Command::make_hold(user, open_account(*group), 40, kUsdCurrency, 5));
    ASSERT_EQ(held.code, ResultCode::ok);
    EXPECT_EQ(lookup(*group, user).available(), 60);
    clock.advance(6 * kNanosPerSecond);  // no command arrives: a tick must come by itself
    for (int i = 0; i < 2000 && lookup(*group, user).available() != 100; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    EXPECT_EQ(lookup(*group, user).available(), 100);
    EXPECT_EQ(lookup(*group, TransferId{held.id})->status, TransferStatus::expired);
    EXPECT_GE(group->stats().ticks.load(), 1u);
    group->stop();
    digest = group->ledger().state_digest();
  }
  auto group = open(c);
  group->stop();
  EXPECT_EQ(group->ledger().state_digest(), digest);
}

TEST_F(GroupTest, EventsAndStatementsAreReadInOrderAndReplayTheSame) {
  ManualClock clock(1'800'000'000ull * kNanosPerSecond);
  GroupConfig c = config();
  c.clock = &clock;
  c.tick_interval_ns = 2'000'000;
  std::vector<LedgerEvent> before_restart;
  AccountId user;
  {
    auto group = open(c);
    user = funded(*group, 100);
    const AccountId shop = open_account(*group);
    ASSERT_TRUE(one(*group, Command::make_hold(user, shop, 40, kUsdCurrency, 5)).ok());
    ASSERT_TRUE(one(*group, Command::make_transfer(user, shop, 10, kUsdCurrency)).ok());
    const CommandResult hold = one(*group, Command::make_hold(user, shop, 20, kUsdCurrency, 0));
    ASSERT_TRUE(one(*group, Command::make_post(TransferId{hold.id}, 15)).ok());
    // A failed command tells nothing.
    ASSERT_EQ(one(*group, Command::make_transfer(user, shop, 1000, kUsdCurrency)).code,
              ResultCode::insufficient_funds);
    clock.advance(6 * kNanosPerSecond);  // the first hold expires on an idle tick
    for (int i = 0; i < 2000 && lookup(*group, user).debits_pending != 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }

    // The whole stream, two events a page.
    EventPage page;
    std::optional<EventKey> cursor;
    do {
      const std::vector<LedgerEvent> events =
          read(*group, RequestKind::read_events, cursor, 2, &page);
      before_restart.insert(before_restart.end(), events.begin(), events.end());
      if (!events.empty()) cursor = key_of(events.back());
    } while (page.more);
    using K = LedgerEventKind;
    std::vector<K> kinds;
    for (const LedgerEvent& e : before_restart)
      kinds.push_back(e.kind);
    EXPECT_EQ(kinds, (std::vector<K>{K::account_created, K::account_created, K::transfer_posted,
                                     K::account_created, K::transfer_pending, K::transfer_posted,
                                     K::transfer_pending, K::pending_posted, K::pending_expired}));
    ASSERT_EQ(before_restart.size(), 9u);
    EXPECT_EQ(before_restart[7].amount, 15u);
    EXPECT_EQ(before_restart[7].released, 5u);
    EXPECT_EQ(before_restart[8].released, 40u);
    EXPECT_GT(before_restart[8].sequence, before_restart[7].sequence);  // a tick's sequence

    // The user's statement, newest first, down to its opening.
    const std::vector<LedgerEvent> lines =
        read(*group, RequestKind::read_entries, std::nullopt, 10, &page, user);
    std::vector<u64> amounts;
    for (const LedgerEvent& e : lines)
      amounts.push_back(e.amount + e.released);
    EXPECT_EQ(amounts, (std::vector<u64>{40, 20, 20, 10, 40, 100}));
    EXPECT_TRUE(page.complete);
    EXPECT_FALSE(page.more);
    // Paged by the cursor of the last line.
    const std::vector<LedgerEvent> older =
        read(*group, RequestKind::read_entries, key_of(lines[1]), 2, &page, user);
    ASSERT_EQ(older.size(), 2u);
    EXPECT_EQ(key_of(older[0]), key_of(lines[2]));
    EXPECT_TRUE(page.more);
    // An unknown account, or a cursor that is not one of its events.
    read(*group, RequestKind::read_entries, std::nullopt, 10, &page,
         AccountId{make_id({0, 0}, 999)});
    EXPECT_TRUE(page.unknown);
    read(*group, RequestKind::read_entries, key_of(before_restart[0]), 10, &page, user);
    EXPECT_TRUE(page.unknown);
    group->stop();
  }
  // Replay tells the same events again.
  auto group = open(c);
  EventPage page;
  const std::vector<LedgerEvent> replayed =
      read(*group, RequestKind::read_events, std::nullopt, 100, &page);
  EXPECT_TRUE(replayed == before_restart);
  group->stop();
}

TEST_F(GroupTest, TimeNeverGoesBackwardsWhenTheClockDoes) {
  ManualClock clock(1'800'000'000ull * kNanosPerSecond);
  GroupConfig c = config();
  c.clock = &clock;
  auto group = open(c);
  const AccountId user = funded(*group, 100);
  const AccountId shop = open_account(*group);
  const CommandResult before = one(*group, Command::make_transfer(user, shop, 1, kUsdCurrency));
  clock.set(clock.now_ns() - 3600 * kNanosPerSecond);  // the wall clock jumps back an hour
  const CommandResult after = one(*group, Command::make_transfer(user, shop, 1, kUsdCurrency));
  EXPECT_GE(lookup(*group, TransferId{after.id})->created_at_ns,
            lookup(*group, TransferId{before.id})->created_at_ns);
}

// Issue: a step of the wall clock forward was taken at once, expiring holds early.
TEST_F(GroupTest, StepOfTheWallClockDoesNotExpireHoldsEarly) {
  ManualClock clock(1'800'000'000ull * kNanosPerSecond);
  GroupConfig c = config();
  c.clock = &clock;
  auto group = open(c);
  const AccountId user = funded(*group, 100);
  const CommandResult held =
      one(*group, Command::make_hold(user, open_account(*group), 40, kUsdCurrency, 60));
  ASSERT_EQ(held.code, ResultCode::ok);
  clock.set(clock.now_ns() + 3600 * kNanosPerSecond);  // NTP steps an hour forward
  clock.advance(kNanosPerSecond);                      // and a second passes
  one(*group, Command::make_tick());
  EXPECT_EQ(lookup(*group, TransferId{held.id})->status, TransferStatus::pending);
  EXPECT_EQ(lookup(*group, user).available(), 60);
  EXPECT_EQ(group->stats().clock_jumps.load(), 1u);
  EXPECT_LT(group->stats().clock_offset_ns.load(), -3598 * static_cast<i64>(kNanosPerSecond));
  // Time that passes still expires it.
  clock.advance(60 * kNanosPerSecond);
  one(*group, Command::make_tick());
  EXPECT_EQ(lookup(*group, TransferId{held.id})->status, TransferStatus::expired);
  group->stop();
}

TEST_F(GroupTest, MalformedRequestsAreRefusedAtTheDoor) {
  auto group = open(config());
  Call empty;
  EXPECT_EQ(group->submit(empty.request()), ResultCode::batch_empty);
  Call huge;
  huge.commands.assign(kBatchMax + 1, Command::make_tick());
  EXPECT_EQ(group->submit(huge.request()), ResultCode::batch_too_large);
  Call orphan;
  orphan.commands = {Command::make_tick()};
  Request r = orphan.request();
  r.completion = nullptr;
  EXPECT_EQ(group->submit(r), ResultCode::invalid_command);
  // A claim covers its own request's commands, no more: the journal joins requests,
  // and one that reached further would skip the next request's on replay only.
  Call reaching;
  reaching.commands = {Command::make_claim({1, 2}, 3, 2), Command::make_tick()};
  EXPECT_EQ(group->submit(reaching.request()), ResultCode::invalid_command);
  Call opened;
  opened.commands = {Command::make_tick()};
  const Command wrong = Command::make_claim({1, 2}, 3, 2);
  CommandResult claimed;
  Request with_claim = opened.request();
  with_claim.claim = &wrong;
  with_claim.claim_result = &claimed;
  EXPECT_EQ(group->submit(with_claim), ResultCode::invalid_command);
  group->stop();
  Call late;
  late.commands = {Command::make_tick()};
  EXPECT_EQ(group->submit(late.request()), ResultCode::shutting_down);
}

TEST_F(GroupTest, StopAnswersEverythingItAccepted) {
  auto group = open(config());
  const AccountId user = funded(*group, 1'000'000);
  const AccountId shop = open_account(*group);
  std::vector<std::unique_ptr<Call>> calls;
  for (int i = 0; i < 500; ++i) {
    auto call = std::make_unique<Call>();
    call->commands = {Command::make_transfer(user, shop, 1, kUsdCurrency)};
    ASSERT_EQ(group->submit(call->request()), ResultCode::ok);
    calls.push_back(std::move(call));
  }
  group->stop();
  for (auto& call : calls) {
    ASSERT_TRUE(call->completion.done());
    EXPECT_EQ(call->completion.wait().status, ResultCode::ok);
    EXPECT_EQ(call->results[0].code, ResultCode::ok);
  }
  EXPECT_EQ(group->ledger().find_account(shop)->balance(), 500);
}

TEST_F(GroupTest, FullRingAnswersOverloaded) {
  GroupConfig c = config();
  c.ring_capacity = 4;
  c.release_queue_max = 4;
  c.submit_timeout_ns = 20'000'000;
  std::atomic<bool> slow{false};
  c.journal_fault = [&](journal::FileOp op) {
    if (op == journal::FileOp::sync && slow.load())
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    return 0;
  };
  auto group = open(c);
  slow = true;
  std::vector<std::unique_ptr<Call>> calls;
  ResultCode last = ResultCode::ok;
  for (int i = 0; i < 64 && last == ResultCode::ok; ++i) {
    auto call = std::make_unique<Call>();
    call->commands = {Command::make_tick()};
    last = group->submit(call->request());
    if (last == ResultCode::ok) calls.push_back(std::move(call));
  }
  EXPECT_EQ(last, ResultCode::overloaded);
  EXPECT_GE(group->stats().overloaded.load(), 1u);
  slow = false;
  for (auto& call : calls)
    EXPECT_EQ(call->completion.wait().status, ResultCode::ok);
}

TEST_F(GroupTest, JournalFailureAnswersNotDurableAndRestartRecovers) {
  GroupConfig c = config();
  std::atomic<bool> broken{false};
  c.journal_fault = [&](journal::FileOp op) {
    return op == journal::FileOp::sync && broken.load() ? EIO : 0;
  };
  std::vector<std::pair<CommandResult, u64>> acknowledged;  // result, sequence
  AccountId user, shop;
  {
    auto group = open(c);
    user = funded(*group, 1000);
    shop = open_account(*group);
    for (int i = 0; i < 10; ++i) {
      Call call;
      call.commands = {Command::make_transfer(user, shop, 1, kUsdCurrency)};
      const Outcome& outcome = run(*group, call);
      ASSERT_EQ(outcome.status, ResultCode::ok);
      acknowledged.emplace_back(call.results[0], outcome.first_sequence);
    }
    broken = true;
    Call failing;
    failing.commands = {Command::make_transfer(user, shop, 1, kUsdCurrency)};
    EXPECT_EQ(run(*group, failing).status, ResultCode::not_durable);
    EXPECT_TRUE(group->failed());
    EXPECT_NE(group->failure().find("Input/output error"), std::string::npos) << group->failure();
    // From now on nothing is acknowledged, reads included.
    Call after;
    after.commands = {Command::make_transfer(user, shop, 1, kUsdCurrency)};
    EXPECT_EQ(run(*group, after).status, ResultCode::not_durable);
    Call read;
    Request r{.kind = RequestKind::lookup_account, .lookup_id = shop.value};
    r.account_out = &read.account;
    r.completion = &read.completion;
    ASSERT_EQ(group->submit(r), ResultCode::ok);
    EXPECT_EQ(read.completion.wait().status, ResultCode::not_durable);
    group->stop();
  }
  broken = false;
  auto group = open(c);
  // Everything acknowledged is there; the not_durable payment may or may not be.
  const i64 balance = lookup(*group, shop).balance();
  EXPECT_GE(balance, 10);
  EXPECT_LE(balance, 12);
  group->stop();
  EXPECT_TRUE(group->ledger().check_invariants().ok);
}

// Retention, under conditions the test decides (issue: on a loaded machine group
// commits grew, the packed journal stayed within one segment, and nothing was left to
// remove): the smallest segment a group accepts, and more data than one can hold at
// the densest packing these commands allow; then the rule itself is checked against
// the snapshot that is kept.
TEST_F(GroupTest, SnapshotsAreTakenAndCoveredSegmentsRemoved) {
  GroupConfig c = config();
  c.snapshot_every_commands = 3000;
  c.snapshots_kept = 1;
  c.journal_segment_bytes = 2 * u64{journal::kRecordBytesMax};
  u64 digest = 0;
  u64 last_sequence = 0;
  AccountId shop_account;
  {
    auto group = open(c);
    const AccountId user = funded(*group, 1'000'000'000);
    const AccountId shop = open_account(*group);
    shop_account = shop;
    // 250,000 transfers, each with a random 64-bit hash: packed, a command costs at
    // least the 8 bytes of that word's difference, however records are batched, so
    // the journal takes at least 2 MB: at least two segments of 1.1 MB.
    std::mt19937_64 rng(514);
    for (int round = 0; round < 250; ++round) {
      Call call;
      for (int i = 0; i < 1000; ++i) {
        call.commands.push_back(
            Command::make_transfer(user, shop, 1, kUsdCurrency).with_extra_hash(rng()));
      }
      const Outcome& outcome = run(*group, call);
      ASSERT_EQ(outcome.status, ResultCode::ok);
      last_sequence = outcome.first_sequence + 999;
    }
    // Idle now, the group snapshots what it has not yet (every 3,000 commands): wait,
    // bounded, for a snapshot within 3,000 of the end to be published.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (group->stats().last_snapshot_sequence.load() + c.snapshot_every_commands <
               last_sequence &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ASSERT_GE(group->stats().last_snapshot_sequence.load() + c.snapshot_every_commands,
              last_sequence)
        << "no snapshot near the end was published within 120 s";
    EXPECT_GE(group->stats().snapshots.load(), 2u);
    EXPECT_GE(group->snapshot_pause_ns().count(), 2u);
    group->stop();
    digest = group->ledger().state_digest();
  }
  // One snapshot kept; the segments wholly before it removed, the one holding the
  // first command after it kept.
  const auto snapshots = snapshot::list(c.dir);
  ASSERT_EQ(snapshots.size(), 1u);
  const u64 kept = snapshots.front().first;
  const auto segments = journal::list_segments(c.dir);
  ASSERT_FALSE(segments.empty());
  std::vector<u64> firsts;
  for (const auto& segment : segments)
    firsts.push_back(journal::parse_segment_file_name(segment.filename().string()));
  EXPECT_LE(firsts.front(), kept + 1) << "the segment holding the snapshot's next command is gone";
  if (firsts.size() > 1) {
    EXPECT_GT(firsts[1], kept + 1) << "a segment wholly before the snapshot was kept";
  }
  // The data filled more than the first segment, and the snapshot is past it.
  EXPECT_GE(firsts.front(), 2u) << "the first segment should have been removed";

  auto group = open(c);
  const u64 snapshot_at = group->recovery().snapshot_sequence;
  EXPECT_EQ(snapshot_at, kept);
  EXPECT_LT(group->recovery().commands_replayed, 250000u);
  // Events made again by replay are held; those the snapshot covers are gone, and a
  // reader asking for them is told so rather than handed a gap.
  EventPage page;
  const std::vector<LedgerEvent> held =
      read(*group, RequestKind::read_events, std::nullopt, 10, &page);
  if (snapshot_at < last_sequence) {
    ASSERT_FALSE(held.empty());
    EXPECT_EQ(held.front().sequence, snapshot_at + 1);
  }
  read(*group, RequestKind::read_events, EventKey{snapshot_at - 1, 0}, 10, &page);
  EXPECT_TRUE(page.expired);
  read(*group, RequestKind::read_entries, std::nullopt, 10, &page, shop_account);
  EXPECT_FALSE(page.complete) << "the shop's older lines are behind the snapshot";
  group->stop();
  EXPECT_EQ(group->ledger().state_digest(), digest);
}

// Issue: a failed snapshot fork was silent, so snapshots stopped, segments were never
// removed, and the disk filled unseen. Now: counted, logged, retried with back-off,
// and the group goes on.
TEST_F(GroupTest, FailedSnapshotIsCountedAndRetriedWithBackOff) {
  GroupConfig c = config();
  c.snapshot_every_commands = 100;
  c.snapshot_fork_fails = true;
  auto group = open(c);
  const AccountId user = funded(*group, 1'000'000);
  const AccountId shop = open_account(*group);
  Call call;
  call.commands.assign(200, Command::make_transfer(user, shop, 1, kUsdCurrency));
  ASSERT_EQ(run(*group, call).status, ResultCode::ok);
  // Idle, the group tries; bounded wait for the first failure.
  for (int i = 0; i < 10'000 && group->stats().snapshot_failures.load() == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_EQ(group->stats().snapshot_failures.load(), 1u);
  // The next try waits a second at least: idle loops meanwhile do not retry.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(group->stats().snapshot_failures.load(), 1u);
  EXPECT_EQ(group->stats().snapshots.load(), 0u);
  // The group still serves.
  EXPECT_EQ(one(*group, Command::make_transfer(user, shop, 1, kUsdCurrency)).code, ResultCode::ok);
  group->stop();
}

TEST_F(GroupTest, CorruptJournalRefusesToOpenAndNamesTheSpot) {
  {
    auto group = open(config());
    funded(*group, 100);
    for (int i = 0; i < 20; ++i)
      one(*group, Command::make_tick());
    group->stop();
  }
  const auto file = journal::list_segments(config().dir).at(0);
  const int fd = ::open(file.c_str(), O_RDWR);
  unsigned char byte = 0;
  ASSERT_EQ(::pread(fd, &byte, 1, 700), 1);
  byte ^= 0x20;
  ASSERT_EQ(::pwrite(fd, &byte, 1, 700), 1);
  ::close(fd);
  std::string error;
  EXPECT_EQ(Group::open(config(), &error), nullptr);
  EXPECT_NE(error.find(file.string()), std::string::npos) << error;
  EXPECT_NE(error.find("offset"), std::string::npos) << error;
}

TEST_F(GroupTest, TornTailIsClearedAndAppendsContinue) {
  {
    auto group = open(config());
    const AccountId user = funded(*group, 100);
    const AccountId shop = open_account(*group);
    one(*group, Command::make_transfer(user, shop, 1, kUsdCurrency));
    group->stop();
  }
  // Tear the last record: keep its first 40 bytes, zero the rest.
  journal::ScanReport report;
  std::vector<u64> offsets;
  report = journal::scan(config().dir, 0, [&](const journal::Record& r) {
    offsets.push_back(r.offset);
    return true;
  });
  const auto file = journal::list_segments(config().dir).at(0);
  const int fd = ::open(file.c_str(), O_RDWR);
  const std::vector<unsigned char> zeros(64, 0);
  ASSERT_EQ(::pwrite(fd, zeros.data(), zeros.size(), static_cast<off_t>(offsets.back() + 40)), 64);
  ::close(fd);

  auto group = open(config());
  EXPECT_NE(group->recovery().torn_tail.find("torn"), std::string::npos);
  EXPECT_EQ(group->recovery().next_sequence, offsets.size());  // the last command is gone
  one(*group, Command::make_tick());
  group.reset();  // stops and unlocks the directory
  auto again = open(config());
  EXPECT_TRUE(again->recovery().torn_tail.empty());
  EXPECT_EQ(again->recovery().records_replayed, offsets.size());
}

// Issue: a failed remove while clearing a torn tail was ignored and the repair went
// on. A segment of zeros after the last (a crash after creating it, before its
// header) is the torn tail here; its removal fails, and the group refuses to start.
TEST_F(GroupTest, TornTailThatCannotBeClearedRefusesToStart) {
  {
    auto group = open(config());
    funded(*group, 100);
    group->stop();
  }
  const auto first = journal::list_segments(config().dir).at(0);
  const u64 next = journal::scan(config().dir, 0, [](const journal::Record&) { return true; })
                       .next_sequence;
  const std::filesystem::path empty = config().dir / journal::segment_file_name(next);
  std::filesystem::copy_file(first, empty);
  std::filesystem::resize_file(empty, 0);
  std::filesystem::resize_file(empty, 4096);  // zeros: a header never written
  GroupConfig c = config();
  c.journal_fault = [](journal::FileOp op) { return op == journal::FileOp::remove ? EIO : 0; };
  std::string error;
  EXPECT_EQ(Group::open(c, &error), nullptr);
  EXPECT_NE(error.find("cannot remove"), std::string::npos) << error;
  EXPECT_NE(error.find(empty.filename().string()), std::string::npos) << error;
  EXPECT_TRUE(std::filesystem::exists(empty));
  // Without the fault it is cleared, and the group starts.
  auto group = open(config());
  ASSERT_NE(group, nullptr);
  EXPECT_FALSE(group->recovery().torn_tail.empty());
  EXPECT_FALSE(std::filesystem::exists(empty));
}

// Issue: a journal written with another configuration was replayed before it was
// refused. Here its body is also corrupt: refused for the configuration means the
// identity was checked before any record was read.
TEST_F(GroupTest, AnotherConfigurationIsRefusedBeforeAnythingIsReplayed) {
  {
    auto group = open(config());
    funded(*group, 100);
    for (int i = 0; i < 20; ++i)
      one(*group, Command::make_tick());
    group->stop();
  }
  const auto file = journal::list_segments(config().dir).at(0);
  const int fd = ::open(file.c_str(), O_RDWR);
  unsigned char byte = 0;
  ASSERT_EQ(::pread(fd, &byte, 1, 700), 1);
  byte ^= 0x20;
  ASSERT_EQ(::pwrite(fd, &byte, 1, 700), 1);
  ::close(fd);
  GroupConfig other = config();
  other.ledger.pending_max = 2048;
  std::string error;
  EXPECT_EQ(Group::open(other, &error), nullptr);
  EXPECT_NE(error.find("another ledger configuration"), std::string::npos) << error;
  EXPECT_NE(error.find("pending_max 1024"), std::string::npos) << error;
}

TEST_F(GroupTest, AnotherConfigurationOrASecondOpenIsRefused) {
  {
    auto group = open(config());
    funded(*group, 100);
    std::string error;
    EXPECT_EQ(Group::open(config(), &error), nullptr);
    EXPECT_NE(error.find("another paygate"), std::string::npos) << error;
    group->stop();
  }
  GroupConfig other = config();
  other.ledger.accounts_max = 2048;
  std::string error;
  EXPECT_EQ(Group::open(other, &error), nullptr);
  EXPECT_NE(error.find("configuration"), std::string::npos) << error;
  other = config();
  other.ledger.signature_keys_max = 7;
  EXPECT_EQ(Group::open(other, &error), nullptr);
  EXPECT_NE(error.find("configuration"), std::string::npos) << error;
}

// A request may open with a claim: the claim and the commands it covers are logged
// together and replay the same, whether the claim held or not.
TEST_F(GroupTest, RequestsOpenedByAClaimReplayTheSame) {
  u64 digest = 0;
  AccountId user, shop;
  {
    auto group = open(config());
    user = funded(*group, 100);
    shop = open_account(*group);
    const auto claimed = [&](IdempotencyKey key, u64 fingerprint, u64 amount) {
      Call call;
      call.commands = {Command::make_transfer(user, shop, amount, kUsdCurrency),
                       Command::make_transfer(user, shop, amount, kUsdCurrency)};
      const Command claim = Command::make_claim(key, fingerprint, 2);
      CommandResult claim_result;
      Request r = call.request();
      r.claim = &claim;
      r.claim_result = &claim_result;
      EXPECT_EQ(group->submit(r), ResultCode::ok);
      EXPECT_EQ(call.completion.wait().status, ResultCode::ok);
      return std::pair(claim_result.code, call.results[1].code);
    };
    EXPECT_EQ(claimed({5, 5}, 1, 10), std::pair(ResultCode::ok, ResultCode::ok));
    EXPECT_EQ(claimed({5, 5}, 2, 10),
              std::pair(ResultCode::idempotency_key_reused, ResultCode::idempotency_key_reused));
    EXPECT_EQ(claimed({6, 6}, 1, 5), std::pair(ResultCode::ok, ResultCode::ok));
    EXPECT_EQ(lookup(*group, user).balance(), 100 - 20 - 10);
    group->stop();
    digest = group->ledger().state_digest();
  }
  auto group = open(config());
  EXPECT_EQ(lookup(*group, user).balance(), 70);
  group->stop();
  EXPECT_EQ(group->ledger().state_digest(), digest);
}

TEST(Engine, RoutesByTheGroupInTheId) {
  TempDir dir;
  EngineConfig config{.data_dir = dir.path(), .region = 2, .groups = 3};
  config.group.ledger = LedgerConfig{.accounts_max = 16,
                                     .pending_max = 16,
                                     .recent_transfers_max = 16,
                                     .idempotency_keys_max = 16};
  config.group.journal_segment_bytes = 2u << 20;
  config.group.group_commit_bytes_max = 1u << 20;
  config.group.ring_capacity = 64;
  config.group.release_queue_max = 64;
  std::string error;
  auto engine = Engine::open(config, &error);
  ASSERT_NE(engine, nullptr) << error;
  engine->start();
  for (u32 g = 0; g < 3; ++g) {
    Call call;
    call.commands = {Command::make_create_account(MerchantId{1}, kUsdCurrency, AccountKind::user)};
    ASSERT_EQ(engine->group(g).submit(call.request()), ResultCode::ok);
    ASSERT_EQ(call.completion.wait().status, ResultCode::ok);
    const u64 id = call.results[0].id;
    EXPECT_EQ(id_prefix(id), (IdPrefix{2, g}));
    EXPECT_EQ(engine->route(id), &engine->group(g));
  }
  EXPECT_EQ(engine->route(make_id({2, 7}, 1)), nullptr);
  EXPECT_EQ(engine->route(make_id({1, 0}, 1)), nullptr);
  engine->stop();
  EXPECT_TRUE(std::filesystem::exists(dir.path() / "group-0002"));
}

}  // namespace
}  // namespace paygate
