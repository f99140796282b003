#include "pipeline/group.h"

#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <random>
#include <thread>

#include "base/temp_dir.h"
#include "journal/reader.h"
#include "ledger/ledger_test_support.h"
#include "pipeline/engine.h"

#include "pipeline/group_test_support.h"

namespace paygate {
namespace {

using testing::Call;
using testing::GroupTest;
using testing::kUsdCurrency;

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
  EXPECT_TRUE(group->ledger().check_invariants().ok());
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
    error = open_error(c);
    EXPECT_FALSE(error.empty());
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
  EXPECT_TRUE(group->ledger().check_invariants().ok());
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
  // Annotations name commands of their own request, in order, each fitting a record.
  const auto annotated = [&](std::vector<journal::Annotation> annotations) {
    Call call;
    call.commands = {Command::make_tick(), Command::make_tick()};
    Request request = call.request();
    request.annotations = annotations.data();
    request.annotation_count = static_cast<u32>(annotations.size());
    return group->submit(request);
  };
  EXPECT_EQ(annotated({{2, journal::AnnotationKind::reference, "past the end"}}),
            ResultCode::invalid_command);
  EXPECT_EQ(annotated({{1, journal::AnnotationKind::reference, "b"},
                       {0, journal::AnnotationKind::reference, "a"}}),
            ResultCode::invalid_command);
  EXPECT_EQ(annotated({{0, static_cast<journal::AnnotationKind>(0), "kind 0"}}),
            ResultCode::invalid_command);
  const std::string too_long(Group::record_bytes_max(config()), 'x');
  EXPECT_EQ(annotated({{0, journal::AnnotationKind::metadata, too_long}}),
            ResultCode::batch_too_large);
  Call looked_up;
  const journal::Annotation said{0, journal::AnnotationKind::reference, "a lookup"};
  Request lookup_request{.kind = RequestKind::lookup_account, .lookup_id = 1};
  lookup_request.account_out = &looked_up.account;
  lookup_request.completion = &looked_up.completion;
  lookup_request.annotations = &said;
  lookup_request.annotation_count = 1;
  EXPECT_EQ(group->submit(lookup_request), ResultCode::invalid_command);
  group->stop();
  Call late;
  late.commands = {Command::make_tick()};
  EXPECT_EQ(group->submit(late.request()), ResultCode::shutting_down);
}

// What requests say about their commands is journaled with them (journal/format.h,
// annotations), whatever record the group joins them into, and replay ignores it.
TEST_F(GroupTest, AnnotationsAreJournaledWithTheirCommands) {
  using journal::AnnotationKind;
  std::map<u64, std::vector<std::pair<AnnotationKind, std::string>>> expected;
  u64 digest = 0;
  {
    auto group = open(config());
    const AccountId user = funded(*group, 100);
    const AccountId shop = open_account(*group);
    const std::string metadata = R"({"cart":[1,2,3]})";
    // Submitted together, so that the group may join them into one record.
    Call plain, claimed, atomic, silent;
    plain.commands = {Command::make_tick(), Command::make_tick(), Command::make_tick()};
    const std::vector<journal::Annotation> plain_said{{0, AnnotationKind::reference, "p0"},
                                                      {2, AnnotationKind::metadata, metadata}};
    Request plain_request = plain.request();
    plain_request.annotations = plain_said.data();
    plain_request.annotation_count = 2;
    claimed.commands = {Command::make_transfer(user, shop, 10, kUsdCurrency),
                        Command::make_transfer(user, shop, 20, kUsdCurrency)};
    const Command claim = Command::make_claim({7, 7}, 1, 2);
    CommandResult claim_result;
    const std::vector<journal::Annotation> claimed_said{{1, AnnotationKind::reference, "c1"}};
    Request claimed_request = claimed.request();
    claimed_request.claim = &claim;
    claimed_request.claim_result = &claim_result;
    claimed_request.annotations = claimed_said.data();
    claimed_request.annotation_count = 1;
    atomic.commands = {Command::make_transfer(user, shop, 5, kUsdCurrency)};
    const std::vector<journal::Annotation> atomic_said{{0, AnnotationKind::description, "a0"}};
    Request atomic_request = atomic.request(RequestKind::atomic, IdempotencyKey{9, 9});
    atomic_request.annotations = atomic_said.data();
    atomic_request.annotation_count = 1;
    silent.commands = {Command::make_tick()};
    for (const Request& r : {plain_request, claimed_request, atomic_request, silent.request()})
      ASSERT_EQ(group->submit(r), ResultCode::ok);
    const u64 plain_first = plain.completion.wait().first_sequence;
    const u64 claimed_first = claimed.completion.wait().first_sequence;  // the claim's
    const u64 atomic_first = atomic.completion.wait().first_sequence;
    EXPECT_EQ(silent.completion.wait().status, ResultCode::ok);
    EXPECT_EQ(claimed.results[1].code, ResultCode::ok);
    expected[plain_first] = {{AnnotationKind::reference, "p0"}};
    expected[plain_first + 2] = {{AnnotationKind::metadata, metadata}};
    expected[claimed_first + 2] = {{AnnotationKind::reference, "c1"}};
    expected[atomic_first] = {{AnnotationKind::description, "a0"}};
    group->stop();
    digest = group->ledger().state_digest();
  }
  // A restart replays the same state, the annotations aside.
  auto group = open(config());
  group->stop();
  EXPECT_EQ(group->ledger().state_digest(), digest);
  std::map<u64, std::vector<std::pair<AnnotationKind, std::string>>> seen;
  const journal::ScanReport report =
      journal::scan(config().dir, 0, [&](const journal::Record& record) {
        for (const journal::AnnotationView& a : record.annotations) {
          EXPECT_GE(a.sequence, record.header->sequence);
          EXPECT_LT(a.sequence, record.next_sequence());
          seen[a.sequence].emplace_back(a.kind, std::string(a.text));
        }
        return true;
      });
  EXPECT_EQ(report.end, journal::LogEnd::clean) << report.message;
  EXPECT_EQ(seen, expected);
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
  Result<std::unique_ptr<Engine>> opened = Engine::open(config);
  auto engine = opened.ok() ? std::move(opened).value() : nullptr;
  const std::string error = opened.status().to_string();
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
