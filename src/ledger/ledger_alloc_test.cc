// Shows that applying commands allocates nothing once the ledger is built: every
// operator new in this binary is counted, and the count must not move while a warm
// ledger runs every kind of command, including rollbacks, expiry and eviction.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <vector>

#include "ledger/ledger.h"
#include "ledger/ledger_test_support.h"

namespace {
std::atomic<unsigned long> g_allocations{0};
}  // namespace

// These replace the global allocation functions, so malloc/free are the matching pair;
// GCC cannot see that and warns.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) {
  return ::operator new(size);
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete[](void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  std::free(p);
}
#pragma GCC diagnostic pop

namespace paygate {
namespace {

class Workload {
 public:
  explicit Workload(Ledger& ledger) : ledger_(ledger) {}

  // One pass over every command kind; prepared buffers only, nothing allocated here.
  void run_once(u64 round) {
    const AccountId treasury = accounts_[0];
    for (int i = 1; i < kAccounts; ++i) {
      check(apply(Command::make_transfer(treasury, accounts_[i], 1000, kUsd)));
    }
    for (int i = 1; i + 1 < kAccounts; ++i) {
      // Immediate, keyed (fresh and retried), failing, hold + post, hold + void,
      // hold left to expire.
      check(apply(Command::make_transfer(accounts_[i], accounts_[i + 1], 3, kUsd)));
      const Command keyed = Command::make_transfer(accounts_[i], accounts_[i + 1], 2, kUsd)
                                .with_key({round * 100 + i, 9});
      check_keyed(apply(keyed));
      check_keyed(apply(keyed));
      const Command signed_once = Command::make_transfer(accounts_[i], accounts_[i + 1], 1, kUsd)
                                      .with_key({round * 100 + i, 10}, KeyLane::signature);
      if (check_keyed(apply(signed_once))) {
        expect_code(apply(signed_once), ResultCode::signature_replayed);
      }
      expect_code(apply(Command::make_transfer(accounts_[i], accounts_[i + 1], 1u << 30, kUsd)),
                  ResultCode::insufficient_funds);
      const TransferId posted{
          apply(Command::make_hold(accounts_[i], accounts_[i + 1], 5, kUsd, 60)).id};
      check(apply(Command::make_post(posted, 2)));
      const TransferId voided{
          apply(Command::make_hold(accounts_[i], accounts_[i + 1], 5, kUsd, 0)).id};
      check(apply(Command::make_void(voided)));
      check(apply(Command::make_hold(accounts_[i], accounts_[i + 1], 1, kUsd, 1)));
    }
    // A batch, and an atomic batch that rolls back.
    for (int i = 0; i < 8; ++i) {
      batch_[i] = Command::make_transfer(accounts_[1 + i], accounts_[2 + i], 1, kUsd);
    }
    ledger_.apply_batch(next(8), std::span(batch_, 8), std::span(results_, 8));
    // A request under a claim, then under the same key again with other content.
    batch_[0] = Command::make_claim({round + 1, 2}, round, 7);
    ledger_.apply_batch(next(8), std::span(batch_, 8), std::span(results_, 8));
    batch_[0] = Command::make_claim({round + 1, 2}, round + 1, 7);
    ledger_.apply_batch(next(8), std::span(batch_, 8), std::span(results_, 8));
    expect_code_or_full(results_[7], ResultCode::idempotency_key_reused);
    batch_[0] = Command::make_transfer(accounts_[1], accounts_[2], 1, kUsd);
    batch_[7] = Command::make_transfer(accounts_[1], accounts_[2], 1u << 30, kUsd);
    expect_code_or_full(CommandResult{ledger_.apply_atomic(next(8), std::span(batch_, 8),
                                                           {round + 1, 1}, std::span(results_, 8))},
                        ResultCode::insufficient_funds);
    // Time passes: holds expire, keys leave the window.
    now_ns_ += 2 * kNanosPerSecond;
    check(apply(Command::make_tick()));
  }

  void open_accounts() {
    accounts_[0] = AccountId{apply(Command::make_create_account({}, kUsd, AccountKind::system)).id};
    for (int i = 1; i < kAccounts; ++i) {
      accounts_[i] =
          AccountId{apply(Command::make_create_account({1}, kUsd, AccountKind::user)).id};
    }
  }

  u64 failures() const { return failures_; }
  u64 refusals() const { return refusals_; }

 private:
  static constexpr int kAccounts = 32;

  // The stamp of the first of `count` commands.
  Stamp next(u64 count = 1) {
    const Stamp first{sequence_ + 1, now_ns_};
    sequence_ += count;
    return first;
  }
  CommandResult apply(const Command& command) { return ledger_.apply(next(), command); }
  // Counted rather than asserted: gtest's failure path allocates.
  void check(CommandResult result) { failures_ += result.ok() ? 0 : 1; }
  // A keyed command runs, or finds its table full (the full path must not allocate
  // either; refusals() says it was taken).
  bool check_keyed(CommandResult result) {
    refusals_ += result.code == ResultCode::idempotency_capacity ? 1 : 0;
    failures_ += result.ok() || result.code == ResultCode::idempotency_capacity ? 0 : 1;
    return result.ok();
  }
  void expect_code(CommandResult result, ResultCode code) {
    failures_ += result.code == code ? 0 : 1;
  }
  void expect_code_or_full(CommandResult result, ResultCode code) {
    refusals_ += result.code == ResultCode::idempotency_capacity ? 1 : 0;
    failures_ += result.code == code || result.code == ResultCode::idempotency_capacity ? 0 : 1;
  }

  Ledger& ledger_;
  AccountId accounts_[kAccounts];
  Command batch_[8];
  CommandResult results_[8];
  u64 sequence_ = 0;
  u64 now_ns_ = kStartNs;
  u64 failures_ = 0;
  u64 refusals_ = 0;
};

TEST(LedgerAllocation, HotPathAllocatesNothingOnceWarm) {
  Ledger ledger(LedgerConfig{.prefix = {0, 1},
                             .accounts_max = 64,
                             .pending_max = 256,
                             .recent_transfers_max = 64,
                             .idempotency_keys_max = 40,  // fills: refusals happen
                             .idempotency_window_ns = 3 * kNanosPerSecond,
                             .signature_keys_max = 40,
                             .signature_window_ns = 3 * kNanosPerSecond});
  Workload workload(ledger);
  workload.open_accounts();
  workload.run_once(0);  // warm

  const unsigned long before = g_allocations.load();
  for (u64 round = 1; round <= 50; ++round)
    workload.run_once(round);
  const unsigned long during = g_allocations.load() - before;

  EXPECT_EQ(workload.failures(), 0u);
  EXPECT_GT(workload.refusals(), 0u);
  EXPECT_EQ(during, 0u) << "allocations on the hot path";
  const Status report = ledger.check_invariants();
  EXPECT_TRUE(report.ok()) << report.message();
}

// The counter itself works: a test that could not fail would prove nothing.
TEST(LedgerAllocation, CounterSeesAllocations) {
  const unsigned long before = g_allocations.load();
  auto* values = new std::vector<int>(100);
  delete values;
  EXPECT_GE(g_allocations.load() - before, 2u);
}

}  // namespace
}  // namespace paygate
