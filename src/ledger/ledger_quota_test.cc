// Per-merchant quotas (ledger/owner_quotas.h): what each counts, what frees it, and
// that limits survive a snapshot. The randomized model test checks the same rules
// against the reference ledger.
#include <gtest/gtest.h>

#include <cstring>

#include "ledger/ledger.h"
#include "ledger/ledger_test_support.h"

namespace paygate {
namespace {

constexpr MerchantId kAlice{7};  // the fixture's default owner
constexpr MerchantId kBob{8};
constexpr u32 kDefault = kQuotaGroupDefault;
constexpr u32 kKeep = kQuotaUnchanged;

class LedgerQuota : public LedgerFixture {
 protected:
  u32 used(MerchantId owner, Quota quota) {
    const OwnerQuota* entry = ledger_->find_quota(owner);
    return entry == nullptr ? 0 : entry->used[static_cast<u32>(quota)];
  }
  CommandResult set(MerchantId owner, u32 accounts, u32 holds, u32 keys, u32 orders = kKeep) {
    return run(Command::make_set_quota(owner, accounts, holds, keys, orders));
  }
  CommandResult new_order(AccountId account, u64 ref, u64 advance_s = 0) {
    return run(Command::make_order_create(account, 10, kUsd, 60, ref * 2 + 1), advance_s);
  }
};

TEST_F(LedgerQuota, AMerchantsAccountsStopAtItsLimitAndNoOneElses) {
  ASSERT_TRUE(set(kAlice, 2, kDefault, kDefault).ok());
  open();
  open();
  EXPECT_EQ(code(Command::make_create_account(kAlice, kUsd, AccountKind::user)),
            ResultCode::quota_accounts);
  // Another merchant, and accounts of no merchant, are not held back.
  EXPECT_EQ(code(Command::make_create_account(kBob, kUsd, AccountKind::user)), ResultCode::ok);
  treasury();
  EXPECT_EQ(used(kAlice, Quota::accounts), 2u);
  EXPECT_EQ(used(kBob, Quota::accounts), 1u);
  // Raised, it admits one more; unchanged fields keep their values.
  ASSERT_TRUE(set(kAlice, 3, kKeep, kKeep).ok());
  EXPECT_EQ(code(Command::make_create_account(kAlice, kUsd, AccountKind::user)), ResultCode::ok);
  expect_invariants();
}

TEST_F(LedgerQuota, TheGroupDefaultAppliesToMerchantsWithoutTheirOwn) {
  ASSERT_TRUE(set(MerchantId{}, 1, kDefault, kDefault).ok());
  open();
  EXPECT_EQ(code(Command::make_create_account(kAlice, kUsd, AccountKind::user)),
            ResultCode::quota_accounts);
  EXPECT_EQ(code(Command::make_create_account(kBob, kUsd, AccountKind::user)), ResultCode::ok);
  EXPECT_EQ(code(Command::make_create_account(kBob, kUsd, AccountKind::user)),
            ResultCode::quota_accounts);
  // A merchant's own limit overrides the default; kDefault returns to it.
  ASSERT_TRUE(set(kBob, 5, kKeep, kKeep).ok());
  EXPECT_EQ(code(Command::make_create_account(kBob, kUsd, AccountKind::user)), ResultCode::ok);
  ASSERT_TRUE(set(kBob, kDefault, kKeep, kKeep).ok());
  EXPECT_EQ(code(Command::make_create_account(kBob, kUsd, AccountKind::user)),
            ResultCode::quota_accounts);
  expect_invariants();
}

TEST_F(LedgerQuota, OpenHoldsCountAgainstTheDebitAccountsOwnerUntilTheyClose) {
  const AccountId alice = funded(1000);
  const AccountId bob_account = open(AccountKind::user, 0, kUsd, kBob);
  ASSERT_TRUE(set(kAlice, kKeep, 2, kKeep).ok());
  const TransferId expiring = hold(alice, bob_account, 1, 5);
  const TransferId voided = hold(alice, bob_account, 1);
  EXPECT_EQ(code(Command::make_hold(alice, bob_account, 1, kUsd, 0)), ResultCode::quota_holds);
  // Immediate transfers are no holds.
  EXPECT_EQ(code(Command::make_transfer(alice, bob_account, 1, kUsd)), ResultCode::ok);
  EXPECT_EQ(used(kAlice, Quota::holds), 2u);
  EXPECT_EQ(used(kBob, Quota::holds), 0u);
  ASSERT_EQ(code(Command::make_void(voided)), ResultCode::ok);
  const TransferId posted = hold(alice, bob_account, 1);
  ASSERT_EQ(code(Command::make_post(posted)), ResultCode::ok);
  // The expiring one leaves when its time comes, and with it the quota it took.
  EXPECT_EQ(used(kAlice, Quota::holds), 1u);
  hold(alice, bob_account, 1);
  EXPECT_EQ(code(Command::make_hold(alice, bob_account, 1, kUsd, 0)), ResultCode::quota_holds);
  run(Command::make_tick(), 6);
  EXPECT_EQ(ledger_->find_transfer(expiring)->status, TransferStatus::expired);
  EXPECT_EQ(used(kAlice, Quota::holds), 1u);
  hold(alice, bob_account, 1);
  expect_invariants();
}

TEST_F(LedgerQuota, KeysCountUntilTheirWindowEndsAndARetryIsStillAnswered) {
  const AccountId alice = funded(1000);
  const AccountId other = open();
  ASSERT_TRUE(set(kAlice, kKeep, kKeep, 2).ok());
  const Command first = Command::make_transfer(alice, other, 1, kUsd).with_key(key(1));
  const CommandResult made = run(first);
  ASSERT_TRUE(made.ok());
  ASSERT_TRUE(run(Command::make_transfer(alice, other, 2, kUsd).with_key(key(2))).ok());
  EXPECT_EQ(code(Command::make_transfer(alice, other, 3, kUsd).with_key(key(3))),
            ResultCode::quota_idempotency_keys);
  // A retry of a remembered key takes no more room: it gets its first answer.
  EXPECT_EQ(run(first), made);
  // An unkeyed request is not held back.
  EXPECT_EQ(code(Command::make_transfer(alice, other, 3, kUsd)), ResultCode::ok);
  EXPECT_EQ(used(kAlice, Quota::idempotency_keys), 2u);
  // Past the window (100 s) the keys are let go, and their room with them.
  EXPECT_EQ(code(Command::make_transfer(alice, other, 3, kUsd).with_key(key(3)), 101),
            ResultCode::ok);
  EXPECT_EQ(used(kAlice, Quota::idempotency_keys), 1u);
  expect_invariants();
}

// A key on a post or void counts against the hold's debit side, open or closed (a
// key on a closed hold takes room in the table too): whoever sends it.
TEST_F(LedgerQuota, KeysOnAHoldCountAgainstItsDebitSide) {
  const AccountId alice = funded(100);
  const AccountId bob = open(AccountKind::user, 0, kUsd, kBob);
  const TransferId held = hold(alice, bob, 5);
  const u32 before = used(kAlice, Quota::idempotency_keys);
  EXPECT_TRUE(run(Command::make_void(held).with_key(key(1))).ok());
  EXPECT_EQ(used(kAlice, Quota::idempotency_keys), before + 1);
  for (u64 k = 2; k < 4; ++k) {
    EXPECT_EQ(code(Command::make_void(held).with_key(key(k))),
              ResultCode::pending_transfer_already_voided);
  }
  EXPECT_EQ(used(kAlice, Quota::idempotency_keys), before + 3);
  EXPECT_EQ(used(kBob, Quota::idempotency_keys), 0u);
  expect_invariants();
}

TEST_F(LedgerQuota, AClaimCountsAgainstTheMerchantItNames) {
  ASSERT_TRUE(set(kBob, kKeep, kKeep, 1).ok());
  EXPECT_TRUE(run(Command::make_claim(key(1), 11, 0, KeyLane::client, kBob)).ok());
  EXPECT_EQ(code(Command::make_claim(key(2), 12, 0, KeyLane::client, kBob)),
            ResultCode::quota_idempotency_keys);
  // An operator's claim (no merchant) is not counted.
  EXPECT_TRUE(run(Command::make_claim(key(3), 13, 0)).ok());
  EXPECT_EQ(used(kBob, Quota::idempotency_keys), 1u);
  expect_invariants();
}

TEST_F(LedgerQuota, AFailedAtomicBatchGivesBackWhatItCounted) {
  const AccountId alice = funded(100);
  const AccountId other = open();
  std::vector<Command> batch = {
      Command::make_create_account(kAlice, kUsd, AccountKind::user),
      Command::make_hold(alice, other, 10, kUsd, 0),
      Command::make_transfer(alice, other, 1000, kUsd),  // insufficient funds: all undone
  };
  std::vector<CommandResult> results(batch.size());
  const u32 accounts_before = used(kAlice, Quota::accounts);
  EXPECT_EQ(ledger_->apply_atomic(batch_stamp(batch.size()), batch, key(9), results),
            ResultCode::insufficient_funds);
  EXPECT_EQ(used(kAlice, Quota::accounts), accounts_before);
  EXPECT_EQ(used(kAlice, Quota::holds), 0u);
  EXPECT_EQ(used(kAlice, Quota::idempotency_keys), 1u);  // the batch's key is remembered
  expect_invariants();
  // Limits are set on their own, never inside an atomic batch.
  batch = {Command::make_set_quota(kAlice, 1, 1, 1)};
  EXPECT_EQ(ledger_->apply_atomic(batch_stamp(1), batch, {}, results), ResultCode::invalid_command);
}

TEST_F(LedgerQuota, ALimitBelowUseRefusesMoreAndTakesNothingAway) {
  open();
  open();
  ASSERT_TRUE(set(kAlice, 1, kKeep, kKeep).ok());
  EXPECT_EQ(used(kAlice, Quota::accounts), 2u);
  EXPECT_EQ(code(Command::make_create_account(kAlice, kUsd, AccountKind::user)),
            ResultCode::quota_accounts);
  // Malformed limits change nothing.
  EXPECT_EQ(code(Command::make_set_quota(kAlice, kQuotaMax + 1, kKeep, kKeep)),
            ResultCode::invalid_command);
  Command reserved = Command::make_set_quota(kAlice, 9, kKeep, kKeep);
  reserved.set_quota.reserved1 = 1;
  EXPECT_EQ(code(reserved), ResultCode::invalid_command);
  EXPECT_EQ(ledger_->find_quota(kAlice)->limits.limit[0], 1u);
}

TEST_F(LedgerQuota, TheTableOfMerchantsRefusesOneMoreAndReusesAnIdleEntry) {
  LedgerConfig config = config_;
  config.owners_max = 2;
  reconfigure(config);
  open(AccountKind::user, 0, kUsd, kAlice);
  ASSERT_TRUE(set(kBob, 3, kKeep, kKeep).ok());
  EXPECT_EQ(code(Command::make_create_account(MerchantId{9}, kUsd, AccountKind::user)),
            ResultCode::owners_full);
  EXPECT_EQ(code(Command::make_set_quota(MerchantId{9}, 1, 1, 1)), ResultCode::owners_full);
  // Bob back on the defaults, with nothing counted: his entry is idle and reused.
  ASSERT_TRUE(set(kBob, kDefault, kKeep, kKeep).ok());
  EXPECT_EQ(code(Command::make_create_account(MerchantId{9}, kUsd, AccountKind::user)),
            ResultCode::ok);
  expect_invariants();
}

TEST_F(LedgerQuota, LimitsAndUsageSurviveASnapshotAndChangeTheDigest) {
  const AccountId alice = funded(100);
  hold(alice, open(), 5);
  ASSERT_TRUE(set(kAlice, 4, 1, kKeep).ok());
  ASSERT_TRUE(set(MerchantId{}, 10, kKeep, 3).ok());
  const u64 digest = ledger_->state_digest();
  const std::vector<unsigned char> state = saved_state(*ledger_);
  Ledger restored(config_);
  BytesSource source(state);
  ASSERT_TRUE(restored.load(source).ok());
  EXPECT_EQ(restored.state_digest(), digest);
  EXPECT_EQ(saved_state(restored), state);
  const OwnerQuota* entry = restored.find_quota(kAlice);
  ASSERT_NE(entry, nullptr);
  EXPECT_EQ(entry->used[static_cast<u32>(Quota::accounts)], 2u);
  EXPECT_EQ(entry->used[static_cast<u32>(Quota::holds)], 1u);
  EXPECT_EQ(entry->limits.limit[0], 4u);
  EXPECT_EQ(restored.quotas().defaults().limit[2], 3u);
  // A limit no command can set (here "keep as is", in the defaults) is damage.
  std::vector<unsigned char> damaged = state;
  const std::size_t defaults_at =
      state.size() - 8 - 40 /* no orders */ - (8 + sizeof(QuotaLimits)) - 8 - sizeof(QuotaLimits);
  u32 saved_default = 0;
  std::memcpy(&saved_default, state.data() + defaults_at, sizeof saved_default);
  ASSERT_EQ(saved_default, 10u) << "the layout this test assumes has changed";
  std::memcpy(damaged.data() + defaults_at, &kKeep, sizeof kKeep);
  Ledger refused(config_);
  BytesSource damaged_source(damaged);
  EXPECT_EQ(refused.load(damaged_source).code(), StatusCode::corruption);
  // The restored ledger refuses what the original would.
  const Command another =
      Command::make_hold(alice, AccountId{make_id(config_.prefix, 3)}, 1, kUsd, 0);
  EXPECT_EQ(restored.apply(next_stamp(), another).code, ResultCode::quota_holds);
  // A limit is state: setting one changes the digest.
  ASSERT_TRUE(set(kAlice, 5, kKeep, kKeep).ok());
  EXPECT_NE(ledger_->state_digest(), digest);
}

TEST_F(LedgerQuota, OrdersCountAgainstTheirMerchantUntilTheyLeaveMemory) {
  LedgerConfig config = config_;
  config.order_final_retained_ns = 10 * kNanosPerSecond;
  reconfigure(config);
  const AccountId alice = open();
  const AccountId bob = open(AccountKind::user, 0, kUsd, kBob);
  ASSERT_TRUE(set(kAlice, kKeep, kKeep, kKeep, 2).ok());
  const CommandResult first = new_order(alice, 1);
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(new_order(alice, 2).ok());
  EXPECT_EQ(new_order(alice, 3).code, ResultCode::quota_orders);
  // The order's own checks come first: a duplicate merchant_ref is still named.
  const CommandResult duplicate = new_order(alice, 1);
  EXPECT_EQ(duplicate.code, ResultCode::duplicate_order);
  EXPECT_EQ(duplicate.id, first.id);
  EXPECT_TRUE(new_order(bob, 4).ok());  // not held back by Alice's share
  EXPECT_EQ(used(kAlice, Quota::orders), 2u);
  EXPECT_EQ(used(kBob, Quota::orders), 1u);
  // A final order still takes its place while it is held in memory...
  ASSERT_TRUE(run(Command::make_order(CommandKind::order_cancel, first.id)).ok());
  EXPECT_EQ(new_order(alice, 5).code, ResultCode::quota_orders);
  expect_invariants();
  // ... and a snapshot keeps the count and the limit.
  const std::vector<unsigned char> state = saved_state(*ledger_);
  Ledger restored(config_);
  BytesSource source(state);
  ASSERT_TRUE(restored.load(source).ok());
  EXPECT_EQ(restored.find_quota(kAlice)->used[static_cast<u32>(Quota::orders)], 2u);
  EXPECT_EQ(restored.find_quota(kAlice)->limits.limit[static_cast<u32>(Quota::orders)], 2u);
  EXPECT_EQ(restored.state_digest(), ledger_->state_digest());
  // Once it leaves memory (its retention passed), the place is free again.
  EXPECT_EQ(new_order(alice, 6, /*advance_s=*/11).code, ResultCode::ok);
  EXPECT_EQ(used(kAlice, Quota::orders), 2u);
  expect_invariants();
}

TEST_F(LedgerQuota, ALimitCommandFromBeforeTheOrdersQuotaLeavesItAsItIs) {
  ASSERT_TRUE(set(kAlice, kKeep, kKeep, kKeep, 3).ok());
  // As journaled before the orders quota: no flag, a zero where the limit now is.
  Command old = Command::make_set_quota(kAlice, 5, kKeep, kKeep);
  old.flags = 0;
  old.set_quota.orders_limit = 0;
  ASSERT_TRUE(run(old).ok());
  EXPECT_EQ(ledger_->find_quota(kAlice)->limits.limit[0], 5u);
  EXPECT_EQ(ledger_->find_quota(kAlice)->limits.limit[static_cast<u32>(Quota::orders)], 3u);
  // Without the flag, anything there is malformed; so is an unknown flag.
  old.set_quota.orders_limit = 4;
  EXPECT_EQ(code(old), ResultCode::invalid_command);
  Command unknown = Command::make_set_quota(kAlice, 5, kKeep, kKeep, 4);
  unknown.flags = 2;
  EXPECT_EQ(code(unknown), ResultCode::invalid_command);
  EXPECT_EQ(ledger_->find_quota(kAlice)->limits.limit[static_cast<u32>(Quota::orders)], 3u);
  // A request that leaves the orders limit alone is the command it always was (its
  // key's fingerprint too); one that sets it is told apart by the value.
  Command before = Command::make_set_quota(kAlice, 1, 2, 3);
  EXPECT_EQ(before.flags, 0);
  EXPECT_EQ(before.set_quota.orders_limit, 0u);
  EXPECT_NE(content_hash(Command::make_set_quota(kAlice, 1, 2, 3, 5)),
            content_hash(Command::make_set_quota(kAlice, 1, 2, 3, 6)));
  EXPECT_NE(content_hash(Command::make_set_quota(kAlice, 1, 2, 3, 5)), content_hash(before));
}

TEST_F(LedgerQuota, AStateSavedBeforeTheOrdersQuotaLoadsWithoutAnOrdersLimit) {
  ASSERT_TRUE(set(MerchantId{}, 10, kKeep, kKeep).ok());
  ASSERT_TRUE(set(kAlice, 4, kKeep, kKeep).ok());
  const u64 digest = ledger_->state_digest();
  std::vector<unsigned char> state = saved_state(*ledger_);
  // Version 5: its own magic, and a reserved zero where the orders limit now is, in
  // the defaults and in each merchant's limits. At the end: the defaults, the count of
  // merchants' limits (1), Alice's id and limits, the orders (none: 40 bytes), the end.
  const std::size_t alice_at = state.size() - 8 - 40 - sizeof(QuotaLimits);
  const std::size_t defaults_at = alice_at - 8 - 8 - sizeof(QuotaLimits);
  for (const auto& [at, expected] : {std::pair{defaults_at, 10u}, std::pair{alice_at, 4u}}) {
    u32 saved = 0;
    std::memcpy(&saved, state.data() + at, sizeof saved);
    ASSERT_EQ(saved, expected) << "the layout this test assumes has changed";
    const u32 zero = 0;
    std::memcpy(state.data() + at + 3 * sizeof(u32), &zero, sizeof zero);
  }
  ASSERT_EQ(std::memcmp(state.data(), "PGLEDGR6", 8), 0);
  std::memcpy(state.data(), "PGLEDGR5", 8);
  Ledger restored(config_);
  BytesSource source(state);
  ASSERT_TRUE(restored.load(source).ok());
  EXPECT_EQ(restored.quotas().defaults().limit[static_cast<u32>(Quota::orders)], kDefault);
  ASSERT_NE(restored.find_quota(kAlice), nullptr);
  EXPECT_EQ(restored.find_quota(kAlice)->limits.limit[0], 4u);
  EXPECT_EQ(restored.find_quota(kAlice)->limits.limit[static_cast<u32>(Quota::orders)], kDefault);
  EXPECT_EQ(restored.state_digest(), digest);
  // The same bytes under version 6 are a limit of 0 orders: version 5 is what makes
  // the difference.
  std::memcpy(state.data(), "PGLEDGR6", 8);
  Ledger as_six(config_);
  BytesSource six(state);
  ASSERT_TRUE(as_six.load(six).ok());
  EXPECT_EQ(as_six.quotas().defaults().limit[static_cast<u32>(Quota::orders)], 0u);
}

}  // namespace
}  // namespace paygate
