// One test per result code and per rule of the ledger (docs/LEDGER.md).
#include "ledger/ledger.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "ledger/ledger_test_support.h"

namespace paygate {
namespace {

using Ledger_ = LedgerFixture;

// ---------------------------------------------------------------------------
// Currencies

// valid() is branch-free bit arithmetic: check it against the plain rule everywhere.
TEST(Currency, ValidIsExactlyThreeUpperCaseLetters) {
  const auto upper = [](u32 c) { return c >= 'A' && c <= 'Z'; };
  for (u32 code = 0; code < (1u << 24); ++code) {
    const bool expected = upper(code & 0xFF) && upper((code >> 8) & 0xFF) && upper(code >> 16);
    ASSERT_EQ(Currency{code}.valid(), expected) << code;
  }
  for (u32 high : {1u, 0x41u, 0x80u, 0xFFu}) {
    EXPECT_FALSE(Currency{(high << 24) | Currency::from("USD").code}.valid());
  }
  EXPECT_EQ(Currency::from("EUR").letters(), "EUR");
  EXPECT_EQ(Currency::from("EU").code, 0u);
  EXPECT_EQ(Currency::from("EURO").code, 0u);
}

// ---------------------------------------------------------------------------
// Accounts

TEST_F(Ledger_, CreateAccountAssignsDenseIdsCarryingRegionAndGroup) {
  const AccountId first = open(AccountKind::merchant, kAccountAllowNegative, kEur, MerchantId{42});
  const AccountId second = open();
  EXPECT_EQ(id_prefix(first.value), (IdPrefix{1, 2}));
  EXPECT_EQ(id_serial(first.value), 1u);
  EXPECT_EQ(id_serial(second.value), 2u);
  const Account& a = account(first);
  EXPECT_EQ(a.owner, MerchantId{42});
  EXPECT_EQ(a.currency, kEur);
  EXPECT_EQ(a.kind, AccountKind::merchant);
  EXPECT_EQ(a.flags, kAccountAllowNegative);
  EXPECT_EQ(a.updated_seq, 1u);
  EXPECT_EQ(a.debits_posted + a.credits_posted + a.debits_pending + a.credits_pending, 0u);
  EXPECT_EQ(ledger_->account_count(), 2u);
}

TEST_F(Ledger_, CreateAccountRejectsInvalidCurrency) {
  EXPECT_EQ(code(Command::make_create_account(MerchantId{1}, Currency{}, AccountKind::user)),
            ResultCode::invalid_currency);
  EXPECT_EQ(code(Command::make_create_account(MerchantId{1}, Currency{0x00646173},  // "usd"
                                              AccountKind::user)),
            ResultCode::invalid_currency);
  EXPECT_EQ(ledger_->account_count(), 0u);
}

TEST_F(Ledger_, CreateAccountRejectsInvalidKind) {
  EXPECT_EQ(code(Command::make_create_account(MerchantId{1}, kUsd, static_cast<AccountKind>(0))),
            ResultCode::invalid_account_kind);
  EXPECT_EQ(code(Command::make_create_account(MerchantId{1}, kUsd, static_cast<AccountKind>(9))),
            ResultCode::invalid_account_kind);
  EXPECT_EQ(ledger_->account_count(), 0u);
}

TEST_F(Ledger_, CreateAccountRejectsUnknownFlags) {
  EXPECT_EQ(code(Command::make_create_account(MerchantId{1}, kUsd, AccountKind::user, 0x80)),
            ResultCode::invalid_command);
}

TEST_F(Ledger_, AccountsFullAtCapacity) {
  for (u32 i = 0; i < config_.accounts_max; ++i)
    open();
  EXPECT_EQ(code(Command::make_create_account(MerchantId{1}, kUsd, AccountKind::user)),
            ResultCode::accounts_full);
  EXPECT_EQ(ledger_->account_count(), config_.accounts_max);
  expect_invariants();
}

TEST_F(Ledger_, UnknownCommandKindIsInvalid) {
  Command command = Command::make_tick();
  command.kind = static_cast<CommandKind>(77);
  EXPECT_EQ(code(command), ResultCode::invalid_command);
}

// ---------------------------------------------------------------------------
// Immediate transfers

TEST_F(Ledger_, TransferMovesMoneyBetweenAccounts) {
  const AccountId payer = funded(1000);
  const AccountId merchant = open(AccountKind::merchant);
  const CommandResult result = run(Command::make_transfer(payer, merchant, 300, kUsd));
  ASSERT_EQ(result.code, ResultCode::ok);
  EXPECT_EQ(account(payer).debits_posted, 300u);
  EXPECT_EQ(account(payer).balance(), 700);
  EXPECT_EQ(account(merchant).credits_posted, 300u);
  EXPECT_EQ(account(merchant).updated_seq, sequence_);

  const std::optional<Transfer> made = ledger_->find_transfer(TransferId{result.id});
  ASSERT_TRUE(made.has_value());
  EXPECT_EQ(made->status, TransferStatus::posted);
  EXPECT_EQ(made->amount, 300u);
  EXPECT_EQ(made->debit_account_id, payer);
  EXPECT_EQ(made->credit_account_id, merchant);
  EXPECT_EQ(made->created_at_ns, now_ns_);
  EXPECT_FALSE(made->two_phase());
  expect_invariants();
}

TEST_F(Ledger_, TransferRejectsZeroAndTooLargeAmounts) {
  const AccountId a = funded(10);
  const AccountId b = open();
  EXPECT_EQ(code(Command::make_transfer(a, b, 0, kUsd)), ResultCode::invalid_amount);
  EXPECT_EQ(code(Command::make_transfer(a, b, kAmountMax + 1, kUsd)), ResultCode::invalid_amount);
  EXPECT_EQ(code(Command::make_transfer(a, b, ~u64{0}, kUsd)), ResultCode::invalid_amount);
  EXPECT_EQ(account(a).balance(), 10);
}

TEST_F(Ledger_, TransferRejectsInvalidCurrency) {
  const AccountId a = funded(10);
  const AccountId b = open();
  EXPECT_EQ(code(Command::make_transfer(a, b, 1, Currency{})), ResultCode::invalid_currency);
}

TEST_F(Ledger_, TransferRejectsSameAccount) {
  const AccountId a = funded(10);
  EXPECT_EQ(code(Command::make_transfer(a, a, 1, kUsd)), ResultCode::same_account);
}

TEST_F(Ledger_, TransferRejectsUnknownDebitAccount) {
  const AccountId b = open();
  EXPECT_EQ(code(Command::make_transfer(AccountId{make_id({1, 2}, 99)}, b, 1, kUsd)),
            ResultCode::debit_account_not_found);
  EXPECT_EQ(code(Command::make_transfer(AccountId{}, b, 1, kUsd)),
            ResultCode::debit_account_not_found);
  // The right serial in another group is another account.
  EXPECT_EQ(code(Command::make_transfer(AccountId{make_id({1, 3}, 1)}, b, 1, kUsd)),
            ResultCode::debit_account_not_found);
}

TEST_F(Ledger_, TransferRejectsUnknownCreditAccount) {
  const AccountId a = funded(10);
  EXPECT_EQ(code(Command::make_transfer(a, AccountId{make_id({1, 2}, 99)}, 1, kUsd)),
            ResultCode::credit_account_not_found);
  EXPECT_EQ(code(Command::make_transfer(a, AccountId{make_id({2, 2}, 1)}, 1, kUsd)),
            ResultCode::credit_account_not_found);
}

TEST_F(Ledger_, TransferRejectsCurrencyMismatch) {
  const AccountId usd = funded(10);
  const AccountId eur = open(AccountKind::user, 0, kEur);
  const AccountId usd2 = open();
  EXPECT_EQ(code(Command::make_transfer(usd, eur, 1, kUsd)), ResultCode::currency_mismatch);
  EXPECT_EQ(code(Command::make_transfer(usd, usd2, 1, kEur)), ResultCode::currency_mismatch);
  EXPECT_EQ(account(usd).balance(), 10);
}

TEST_F(Ledger_, RestrictedAccountCannotGoBelowZero) {
  const AccountId user = funded(100);
  const AccountId merchant = funded(100, AccountKind::merchant);
  const AccountId other = open();
  EXPECT_EQ(code(Command::make_transfer(user, other, 101, kUsd)), ResultCode::insufficient_funds);
  EXPECT_EQ(code(Command::make_transfer(merchant, other, 101, kUsd)),
            ResultCode::insufficient_funds);
  EXPECT_EQ(code(Command::make_transfer(user, other, 100, kUsd)), ResultCode::ok);
  EXPECT_EQ(account(user).balance(), 0);
  EXPECT_EQ(code(Command::make_transfer(user, other, 1, kUsd)), ResultCode::insufficient_funds);
  expect_invariants();
}

TEST_F(Ledger_, AllowNegativeAndSystemAccountsMayGoBelowZero) {
  const AccountId overdraft = open(AccountKind::user, kAccountAllowNegative);
  const AccountId system = treasury();
  const AccountId other = open();
  EXPECT_EQ(code(Command::make_transfer(overdraft, other, 50, kUsd)), ResultCode::ok);
  EXPECT_EQ(code(Command::make_transfer(system, other, 70, kUsd)), ResultCode::ok);
  EXPECT_EQ(account(overdraft).balance(), -50);
  EXPECT_EQ(account(system).balance(), -70);
  EXPECT_EQ(account(other).balance(), 120);
  expect_invariants();
}

TEST_F(Ledger_, TransferRejectsOverflowOnCreditSide) {
  const AccountId source = treasury();
  const AccountId rich = open();
  ASSERT_EQ(code(Command::make_transfer(source, rich, kAmountMax - 10, kUsd)), ResultCode::ok);
  EXPECT_EQ(code(Command::make_transfer(source, rich, 11, kUsd)), ResultCode::overflow);
  // Holds count toward the same limit: credits posted + pending.
  EXPECT_EQ(code(Command::make_hold(source, rich, 11, kUsd, 0)), ResultCode::overflow);
  EXPECT_EQ(code(Command::make_hold(source, rich, 10, kUsd, 0)), ResultCode::ok);
  EXPECT_EQ(code(Command::make_transfer(source, rich, 1, kUsd)), ResultCode::overflow);
  EXPECT_EQ(account(rich).credits_posted + account(rich).credits_pending, kAmountMax);
  expect_invariants();
}

TEST_F(Ledger_, TransferRejectsOverflowOnDebitSide) {
  const AccountId source = treasury();
  const AccountId sink = open();
  const AccountId sink2 = open();
  ASSERT_EQ(code(Command::make_hold(source, sink, 5, kUsd, 0)), ResultCode::ok);
  ASSERT_EQ(code(Command::make_transfer(source, sink, kAmountMax - 5, kUsd)), ResultCode::ok);
  EXPECT_EQ(code(Command::make_transfer(source, sink2, 1, kUsd)), ResultCode::overflow);
  EXPECT_EQ(code(Command::make_hold(source, sink2, 1, kUsd, 0)), ResultCode::overflow);
  EXPECT_EQ(account(source).debits_posted + account(source).debits_pending, kAmountMax);
  // Even at the limit, balance and availability are exact i64 values.
  EXPECT_EQ(account(source).balance(), -static_cast<i64>(kAmountMax - 5));
  EXPECT_EQ(account(source).available(), -static_cast<i64>(kAmountMax));
  expect_invariants();
}

TEST_F(Ledger_, ImmediateTransferWithTimeoutIsInvalid) {
  const AccountId a = funded(10);
  const AccountId b = open();
  Command command = Command::make_transfer(a, b, 1, kUsd);
  command.transfer.timeout_s = 5;
  EXPECT_EQ(code(command), ResultCode::invalid_command);
  command = Command::make_transfer(a, b, 1, kUsd);
  command.flags = 0x40;
  EXPECT_EQ(code(command), ResultCode::invalid_command);
}

TEST_F(Ledger_, IdsExhaustedWhenSerialsRunOut) {
  const AccountId a = funded(10);
  const AccountId b = open();
  LedgerTestAccess::set_next_transfer_serial(*ledger_, kSerialMax);
  EXPECT_EQ(code(Command::make_transfer(a, b, 1, kUsd)), ResultCode::ok);  // the last serial
  EXPECT_EQ(code(Command::make_transfer(a, b, 1, kUsd)), ResultCode::ids_exhausted);
  EXPECT_EQ(account(a).balance(), 9);
}

// ---------------------------------------------------------------------------
// Holds: pending, post, void, expiry

TEST_F(Ledger_, HoldReservesWithoutMovingMoney) {
  const AccountId user = funded(100);
  const AccountId merchant = open(AccountKind::merchant);
  const TransferId id = hold(user, merchant, 60, 30);
  EXPECT_EQ(account(user).debits_pending, 60u);
  EXPECT_EQ(account(user).balance(), 100);
  EXPECT_EQ(account(user).available(), 40);
  EXPECT_EQ(account(merchant).credits_pending, 60u);
  EXPECT_EQ(account(merchant).balance(), 0);
  EXPECT_EQ(ledger_->pending_count(), 1u);
  const std::optional<Transfer> held = ledger_->find_transfer(id);
  ASSERT_TRUE(held.has_value());
  EXPECT_EQ(held->status, TransferStatus::pending);
  EXPECT_EQ(held->expires_at_ns, now_ns_ + 30 * kNanosPerSecond);
  EXPECT_TRUE(held->two_phase());
  // The held part is not available to other debits.
  EXPECT_EQ(code(Command::make_transfer(user, merchant, 41, kUsd)), ResultCode::insufficient_funds);
  EXPECT_EQ(code(Command::make_hold(user, merchant, 41, kUsd, 0)), ResultCode::insufficient_funds);
  EXPECT_EQ(code(Command::make_transfer(user, merchant, 40, kUsd)), ResultCode::ok);
  expect_invariants();
}

TEST_F(Ledger_, PostCapturesTheWholeHold) {
  const AccountId user = funded(100);
  const AccountId merchant = open(AccountKind::merchant);
  const TransferId id = hold(user, merchant, 60);
  const CommandResult result = run(Command::make_post(id));
  ASSERT_EQ(result.code, ResultCode::ok);
  EXPECT_EQ(result.id, id.value);
  EXPECT_EQ(account(user).debits_pending, 0u);
  EXPECT_EQ(account(user).balance(), 40);
  EXPECT_EQ(account(merchant).balance(), 60);
  EXPECT_EQ(account(merchant).credits_pending, 0u);
  EXPECT_EQ(ledger_->pending_count(), 0u);
  const std::optional<Transfer> posted = ledger_->find_transfer(id);
  ASSERT_TRUE(posted.has_value());
  EXPECT_EQ(posted->status, TransferStatus::posted);
  EXPECT_EQ(posted->posted_amount, 60u);
  expect_invariants();
}

TEST_F(Ledger_, PartialPostReleasesTheRest) {
  const AccountId user = funded(100);
  const AccountId merchant = open(AccountKind::merchant);
  const TransferId id = hold(user, merchant, 60);
  ASSERT_EQ(code(Command::make_post(id, 25)), ResultCode::ok);
  EXPECT_EQ(account(user).balance(), 75);
  EXPECT_EQ(account(user).available(), 75);
  EXPECT_EQ(account(merchant).balance(), 25);
  EXPECT_EQ(ledger_->find_transfer(id)->posted_amount, 25u);
  EXPECT_EQ(ledger_->find_transfer(id)->amount, 60u);
  expect_invariants();
}

TEST_F(Ledger_, PostRejectsMoreThanHeld) {
  const AccountId user = funded(100);
  const AccountId merchant = open();
  const TransferId id = hold(user, merchant, 60);
  EXPECT_EQ(code(Command::make_post(id, 61)), ResultCode::exceeds_pending_amount);
  EXPECT_EQ(ledger_->pending_count(), 1u);
  EXPECT_EQ(account(user).debits_pending, 60u);
}

// A hold reserves room under the limit on both sides, so capturing it never overflows.
TEST_F(Ledger_, PostNeverOverflows) {
  const AccountId source = treasury();
  const AccountId sink = open();
  const TransferId id = hold(source, sink, 10);
  EXPECT_EQ(code(Command::make_transfer(source, sink, kAmountMax - 9, kUsd)), ResultCode::overflow);
  ASSERT_EQ(code(Command::make_transfer(source, sink, kAmountMax - 10, kUsd)), ResultCode::ok);
  EXPECT_EQ(code(Command::make_post(id)), ResultCode::ok);
  EXPECT_EQ(account(sink).credits_posted, kAmountMax);
  EXPECT_EQ(account(source).balance(), -static_cast<i64>(kAmountMax));
  expect_invariants();
}

TEST_F(Ledger_, VoidReleasesTheHold) {
  const AccountId user = funded(100);
  const AccountId merchant = open();
  const TransferId id = hold(user, merchant, 60);
  const CommandResult result = run(Command::make_void(id));
  ASSERT_EQ(result.code, ResultCode::ok);
  EXPECT_EQ(result.id, id.value);
  EXPECT_EQ(account(user).available(), 100);
  EXPECT_EQ(account(user).debits_pending, 0u);
  EXPECT_EQ(account(merchant).credits_pending, 0u);
  EXPECT_EQ(ledger_->find_transfer(id)->status, TransferStatus::voided);
  EXPECT_EQ(ledger_->pending_count(), 0u);
  expect_invariants();
}

TEST_F(Ledger_, PostAndVoidRejectUnknownTransfer) {
  funded(100);
  EXPECT_EQ(code(Command::make_post(TransferId{make_id({1, 2}, 500)})),
            ResultCode::transfer_not_found);
  EXPECT_EQ(code(Command::make_void(TransferId{make_id({1, 2}, 500)})),
            ResultCode::transfer_not_found);
  EXPECT_EQ(code(Command::make_void(TransferId{})), ResultCode::transfer_not_found);
  // Serial 1 exists in group 2 (the funding transfer), not in group 9.
  EXPECT_EQ(code(Command::make_post(TransferId{make_id({1, 9}, 1)})),
            ResultCode::transfer_not_found);
}

TEST_F(Ledger_, PostAndVoidRejectImmediateTransfer) {
  const AccountId user = funded(100);
  const AccountId merchant = open();
  const TransferId id{run(Command::make_transfer(user, merchant, 5, kUsd)).id};
  EXPECT_EQ(code(Command::make_post(id)), ResultCode::transfer_not_pending);
  EXPECT_EQ(code(Command::make_void(id)), ResultCode::transfer_not_pending);
  EXPECT_EQ(account(user).balance(), 95);
}

TEST_F(Ledger_, HoldIsPostedAtMostOnce) {
  const AccountId user = funded(100);
  const AccountId merchant = open();
  const TransferId id = hold(user, merchant, 60);
  ASSERT_EQ(code(Command::make_post(id, 10)), ResultCode::ok);
  EXPECT_EQ(code(Command::make_post(id, 10)), ResultCode::pending_transfer_already_posted);
  EXPECT_EQ(code(Command::make_void(id)), ResultCode::pending_transfer_already_posted);
  EXPECT_EQ(account(merchant).balance(), 10);
  expect_invariants();
}

TEST_F(Ledger_, HoldIsVoidedAtMostOnce) {
  const AccountId user = funded(100);
  const AccountId merchant = open();
  const TransferId id = hold(user, merchant, 60);
  ASSERT_EQ(code(Command::make_void(id)), ResultCode::ok);
  EXPECT_EQ(code(Command::make_void(id)), ResultCode::pending_transfer_already_voided);
  EXPECT_EQ(code(Command::make_post(id)), ResultCode::pending_transfer_already_voided);
  EXPECT_EQ(account(merchant).balance(), 0);
  expect_invariants();
}

TEST_F(Ledger_, VoidWithAmountOrFlagsIsInvalid) {
  const AccountId user = funded(100);
  const TransferId id = hold(user, open(), 60);
  Command command = Command::make_void(id);
  command.pending.amount = 5;
  EXPECT_EQ(code(command), ResultCode::invalid_command);
  command = Command::make_post(id);
  command.flags = 1;
  EXPECT_EQ(code(command), ResultCode::invalid_command);
  EXPECT_EQ(ledger_->pending_count(), 1u);
}

TEST_F(Ledger_, TickExpiresHoldsWhoseTimeoutPassed) {
  const AccountId user = funded(100);
  const AccountId merchant = open();
  const TransferId id = hold(user, merchant, 60, 10);
  ASSERT_EQ(code(Command::make_tick(), 9), ResultCode::ok);
  EXPECT_EQ(ledger_->pending_count(), 1u);
  ASSERT_EQ(code(Command::make_tick(), 1), ResultCode::ok);  // exactly at the timeout
  EXPECT_EQ(ledger_->pending_count(), 0u);
  EXPECT_EQ(account(user).available(), 100);
  EXPECT_EQ(account(merchant).credits_pending, 0u);
  EXPECT_EQ(account(user).updated_seq, sequence_);
  EXPECT_EQ(ledger_->find_transfer(id)->status, TransferStatus::expired);
  EXPECT_EQ(code(Command::make_post(id)), ResultCode::transfer_expired);
  EXPECT_EQ(code(Command::make_void(id)), ResultCode::transfer_expired);
  expect_invariants();
}

TEST_F(Ledger_, HoldNeverPostedAfterItsTimeoutEvenWithoutTick) {
  const AccountId user = funded(100);
  const AccountId merchant = open();
  const TransferId id = hold(user, merchant, 60, 10);
  // No tick in between: the post arrives at the timeout and finds the hold expired.
  EXPECT_EQ(code(Command::make_post(id), 10), ResultCode::transfer_expired);
  EXPECT_EQ(account(merchant).balance(), 0);
  EXPECT_EQ(account(user).available(), 100);
  expect_invariants();
}

TEST_F(Ledger_, HoldWithoutTimeoutNeverExpires) {
  const AccountId user = funded(100);
  const TransferId id = hold(user, open(), 60, 0);
  ASSERT_EQ(code(Command::make_tick(), 1'000'000'000), ResultCode::ok);
  EXPECT_EQ(ledger_->find_transfer(id)->status, TransferStatus::pending);
  EXPECT_EQ(code(Command::make_post(id)), ResultCode::ok);
}

TEST_F(Ledger_, ExpiryOrderIsByTimeThenId) {
  const AccountId user = funded(100);
  const AccountId merchant = open();
  const TransferId late = hold(user, merchant, 10, 20);
  const TransferId early = hold(user, merchant, 10, 5);
  const TransferId same_time = hold(user, merchant, 10, 5);
  ASSERT_EQ(code(Command::make_tick(), 5), ResultCode::ok);
  EXPECT_EQ(ledger_->find_transfer(early)->status, TransferStatus::expired);
  EXPECT_EQ(ledger_->find_transfer(same_time)->status, TransferStatus::expired);
  EXPECT_EQ(ledger_->find_transfer(late)->status, TransferStatus::pending);
  EXPECT_EQ(account(user).debits_pending, 10u);
  expect_invariants();
}

TEST_F(Ledger_, PendingTransfersFullAtCapacity) {
  const AccountId user = funded(100);
  const AccountId merchant = open();
  std::vector<TransferId> holds;
  for (u32 i = 0; i < config_.pending_max; ++i)
    holds.push_back(hold(user, merchant, 1));
  EXPECT_EQ(code(Command::make_hold(user, merchant, 1, kUsd, 0)),
            ResultCode::pending_transfers_full);
  // Immediate transfers still work, and closing a hold frees a place.
  EXPECT_EQ(code(Command::make_transfer(user, merchant, 1, kUsd)), ResultCode::ok);
  ASSERT_EQ(code(Command::make_void(holds[3])), ResultCode::ok);
  EXPECT_EQ(code(Command::make_hold(user, merchant, 1, kUsd, 0)), ResultCode::ok);
  expect_invariants();
}

TEST_F(Ledger_, OpenHoldOutlivesTheRecentWindow) {
  const AccountId user = funded(1000);
  const AccountId merchant = open();
  const TransferId old_hold = hold(user, merchant, 50);
  const TransferId old_posted{run(Command::make_transfer(user, merchant, 1, kUsd)).id};
  for (u32 i = 0; i < 2 * config_.recent_transfers_max; ++i) {
    ASSERT_EQ(code(Command::make_transfer(user, merchant, 1, kUsd)), ResultCode::ok);
  }
  // The open hold is still found and can be posted; the old posted transfer is gone
  // from memory (history is the read side's job) and is no open hold.
  EXPECT_EQ(ledger_->find_transfer(old_hold)->status, TransferStatus::pending);
  EXPECT_FALSE(ledger_->find_transfer(old_posted).has_value());
  EXPECT_EQ(code(Command::make_post(old_posted)), ResultCode::transfer_not_pending);
  EXPECT_EQ(code(Command::make_post(old_hold)), ResultCode::ok);
  // Once closed and out of the window, a second post is refused all the same.
  for (u32 i = 0; i < 2 * config_.recent_transfers_max; ++i) {
    ASSERT_EQ(code(Command::make_transfer(user, merchant, 1, kUsd)), ResultCode::ok);
  }
  EXPECT_FALSE(ledger_->find_transfer(old_hold).has_value());
  EXPECT_EQ(code(Command::make_post(old_hold)), ResultCode::transfer_not_pending);
  EXPECT_EQ(code(Command::make_void(old_hold)), ResultCode::transfer_not_pending);
  expect_invariants();
}

// ---------------------------------------------------------------------------
// Batches

TEST_F(Ledger_, BatchIsTheSameAsSingleCommands) {
  const AccountId user = funded(100);
  const AccountId merchant = open();
  const std::vector<Command> commands = {
      Command::make_transfer(user, merchant, 10, kUsd),
      Command::make_transfer(user, merchant, 200, kUsd),
      Command::make_hold(user, merchant, 20, kUsd, 5),
      Command::make_post(TransferId{make_id({1, 2}, 3)}),  // the hold just above
  };
  std::vector<CommandResult> results(commands.size());
  ledger_->apply_batch(batch_stamp(commands.size()), commands, results);
  EXPECT_EQ(results[0].code, ResultCode::ok);
  EXPECT_EQ(results[1].code, ResultCode::insufficient_funds);
  EXPECT_EQ(results[2].code, ResultCode::ok);
  EXPECT_EQ(results[3].code, ResultCode::ok);
  EXPECT_EQ(results[3].id, results[2].id);
  EXPECT_EQ(account(merchant).balance(), 30);
  expect_invariants();
}

TEST_F(Ledger_, EachCommandOfABatchHasItsOwnSequence) {
  const AccountId user = funded(100);
  const AccountId a = open();
  const AccountId b = open();
  const std::vector<Command> commands = {Command::make_transfer(user, a, 1, kUsd),
                                         Command::make_transfer(user, b, 1, kUsd)};
  std::vector<CommandResult> results(2);
  const Stamp first = batch_stamp(2);
  ledger_->apply_batch(first, commands, results);
  EXPECT_EQ(account(a).updated_seq, first.sequence);
  EXPECT_EQ(account(b).updated_seq, first.sequence + 1);
  EXPECT_EQ(account(user).updated_seq, first.sequence + 1);
  EXPECT_EQ(ledger_->last_stamp().sequence, first.sequence + 1);
  ASSERT_EQ(ledger_->apply_atomic(batch_stamp(2), commands, {}, results), ResultCode::ok);
  EXPECT_EQ(account(b).updated_seq, first.sequence + 3);
}

TEST_F(Ledger_, AtomicBatchAppliesAll) {
  const AccountId user = funded(100);
  const AccountId merchant = open();
  const std::vector<Command> commands = {
      Command::make_create_account(MerchantId{1}, kUsd, AccountKind::user),
      Command::make_transfer(user, merchant, 10, kUsd),
      Command::make_hold(user, merchant, 20, kUsd, 0),
  };
  std::vector<CommandResult> results(commands.size());
  ASSERT_EQ(ledger_->apply_atomic(batch_stamp(commands.size()), commands, {}, results),
            ResultCode::ok);
  for (const CommandResult& r : results)
    EXPECT_EQ(r.code, ResultCode::ok);
  EXPECT_EQ(ledger_->account_count(), 4u);
  EXPECT_EQ(account(merchant).balance(), 10);
  EXPECT_EQ(account(merchant).credits_pending, 20u);
  expect_invariants();
}

TEST_F(Ledger_, AtomicBatchFailureChangesNothing) {
  const AccountId user = funded(100);
  const AccountId merchant = open();
  const TransferId open_hold = hold(user, merchant, 15, 50);
  const TransferId to_void = hold(user, merchant, 5, 0);
  const u64 transfers_before = ledger_->transfers_made();
  const std::vector<Command> commands = {
      Command::make_create_account(MerchantId{1}, kUsd, AccountKind::user),
      Command::make_transfer(user, merchant, 10, kUsd),
      Command::make_post(open_hold, 7),
      Command::make_void(to_void),
      Command::make_hold(user, merchant, 20, kUsd, 3),
      Command::make_transfer(user, merchant, 1000, kUsd),  // fails: insufficient funds
      Command::make_transfer(user, merchant, 1, kUsd),
  };
  std::vector<CommandResult> results(commands.size());
  const Stamp stamp = batch_stamp(commands.size());
  EXPECT_EQ(ledger_->apply_atomic(stamp, commands, {}, results), ResultCode::insufficient_funds);
  for (std::size_t i = 0; i < results.size(); ++i) {
    EXPECT_EQ(results[i].code,
              i == 5 ? ResultCode::insufficient_funds : ResultCode::atomic_batch_failed);
  }
  // The stamp moved on (it is part of the digest); nothing else did.
  EXPECT_EQ(ledger_->transfers_made(), transfers_before);
  EXPECT_EQ(ledger_->account_count(), 3u);
  EXPECT_EQ(ledger_->find_transfer(open_hold)->status, TransferStatus::pending);
  EXPECT_EQ(ledger_->find_transfer(to_void)->status, TransferStatus::pending);
  EXPECT_EQ(account(user).debits_pending, 20u);
  EXPECT_EQ(account(merchant).balance(), 0);
  expect_invariants();
}

TEST_F(Ledger_, AtomicBatchRollbackRestoresTheExactState) {
  const AccountId user = funded(100);
  const AccountId merchant = open();
  hold(user, merchant, 15, 50);
  std::vector<CommandResult> results(3);
  const std::vector<Command> failing = {
      Command::make_hold(user, merchant, 20, kUsd, 3),
      Command::make_transfer(user, merchant, 10, kUsd),
      Command::make_transfer(user, user, 1, kUsd),  // same_account
  };
  const Stamp stamp = batch_stamp(failing.size());
  ASSERT_EQ(ledger_->apply_atomic(stamp, failing, {}, results), ResultCode::same_account);
  // The same history with three ticks in the batch's place: the same state, digest
  // and all (the batch used its sequences, as ticks do).
  EXPECT_EQ(twin_after_noop(stamp, failing.size())->state_digest(), ledger_->state_digest());
}

TEST_F(Ledger_, AtomicBatchIdsAreReusedAfterRollback) {
  const AccountId user = funded(100);
  const AccountId merchant = open();
  std::vector<CommandResult> results(2);
  const std::vector<Command> failing = {Command::make_transfer(user, merchant, 10, kUsd),
                                        Command::make_transfer(user, merchant, 0, kUsd)};
  ASSERT_EQ(ledger_->apply_atomic(batch_stamp(failing.size()), failing, {}, results),
            ResultCode::invalid_amount);
  const CommandResult next = run(Command::make_transfer(user, merchant, 10, kUsd));
  EXPECT_EQ(id_serial(next.id), 2u);  // serial 1 funded the user; the batch used none
}

TEST_F(Ledger_, AtomicBatchKeyReplaysResults) {
  const AccountId user = funded(100);
  const AccountId merchant = open();
  const std::vector<Command> commands = {
      Command::make_create_account(MerchantId{1}, kUsd, AccountKind::user),
      Command::make_transfer(user, merchant, 10, kUsd),
      Command::make_hold(user, merchant, 20, kUsd, 0),
      Command::make_tick(),
  };
  std::vector<CommandResult> first(commands.size()), again(commands.size());
  ASSERT_EQ(ledger_->apply_atomic(batch_stamp(commands.size()), commands, key(7), first),
            ResultCode::ok);
  const TransferId hold_id{first[2].id};
  ASSERT_EQ(code(Command::make_post(hold_id)), ResultCode::ok);
  ASSERT_EQ(ledger_->apply_atomic(batch_stamp(commands.size()), commands, key(7), again),
            ResultCode::ok);
  EXPECT_EQ(again, first);
  EXPECT_EQ(account(merchant).balance(), 30);  // applied once
  EXPECT_EQ(ledger_->account_count(), 4u);

  // Different content under the same key is refused, for every command.
  std::vector<Command> changed = commands;
  changed[1].transfer.amount = 11;
  ASSERT_EQ(ledger_->apply_atomic(batch_stamp(changed.size()), changed, key(7), again),
            ResultCode::idempotency_key_reused);
  for (const CommandResult& r : again)
    EXPECT_EQ(r.code, ResultCode::idempotency_key_reused);
}

TEST_F(Ledger_, AtomicBatchKeyReplaysFailure) {
  const AccountId user = funded(100);
  const AccountId merchant = open();
  const std::vector<Command> commands = {Command::make_transfer(user, merchant, 10, kUsd),
                                         Command::make_transfer(user, merchant, 500, kUsd)};
  std::vector<CommandResult> first(2), again(2);
  ASSERT_EQ(ledger_->apply_atomic(batch_stamp(commands.size()), commands, key(8), first),
            ResultCode::insufficient_funds);
  ASSERT_EQ(code(Command::make_transfer(treasury(), user, 1000, kUsd)), ResultCode::ok);
  EXPECT_EQ(ledger_->apply_atomic(batch_stamp(commands.size()), commands, key(8), again),
            ResultCode::insufficient_funds);
  EXPECT_EQ(again, first);
  EXPECT_EQ(account(merchant).balance(), 0);
}

TEST_F(Ledger_, AtomicBatchRejectsKeysOnItsCommands) {
  const AccountId user = funded(100);
  const AccountId merchant = open();
  const std::vector<Command> commands = {
      Command::make_transfer(user, merchant, 10, kUsd),
      Command::make_transfer(user, merchant, 10, kUsd).with_key(key(1)),
  };
  std::vector<CommandResult> results(2);
  EXPECT_EQ(ledger_->apply_atomic(batch_stamp(commands.size()), commands, {}, results),
            ResultCode::idempotency_key_in_atomic_batch);
  EXPECT_EQ(results[0].code, ResultCode::atomic_batch_failed);
  EXPECT_EQ(results[1].code, ResultCode::idempotency_key_in_atomic_batch);
  EXPECT_EQ(account(merchant).balance(), 0);
}

TEST_F(Ledger_, AtomicBatchTooLargeOrEmpty) {
  const AccountId user = funded(100);
  const AccountId merchant = open();
  std::vector<Command> commands(kBatchMax + 1, Command::make_transfer(user, merchant, 1, kUsd));
  std::vector<CommandResult> results(commands.size());
  EXPECT_EQ(ledger_->apply_atomic(batch_stamp(commands.size()), commands, {}, results),
            ResultCode::batch_too_large);
  EXPECT_EQ(results.back().code, ResultCode::batch_too_large);
  EXPECT_EQ(account(merchant).balance(), 0);
  const u64 digest = ledger_->state_digest();
  EXPECT_EQ(ledger_->apply_atomic(next_stamp(), {}, {}, results), ResultCode::batch_empty);
  EXPECT_EQ(ledger_->state_digest(), digest);
}

TEST_F(Ledger_, AtomicBatchOfTheMaximumSizeRollsBack) {
  reconfigure(LedgerConfig{.prefix = {0, 1},
                           .accounts_max = 16,
                           .pending_max = kBatchMax,
                           .recent_transfers_max = 64,
                           .idempotency_keys_max = 4});
  const AccountId user = funded(1'000'000);
  const AccountId merchant = open();
  std::vector<Command> commands;
  for (u32 i = 0; i + 1 < kBatchMax; ++i) {
    commands.push_back(i % 2 == 0 ? Command::make_hold(user, merchant, 1, kUsd, 9)
                                  : Command::make_transfer(user, merchant, 1, kUsd));
  }
  commands.push_back(Command::make_transfer(user, merchant, 10'000'000, kUsd));
  std::vector<CommandResult> results(commands.size());
  const Stamp stamp = batch_stamp(commands.size(), 9);  // the holds would expire now
  EXPECT_EQ(ledger_->apply_atomic(stamp, commands, {}, results), ResultCode::insufficient_funds);
  EXPECT_EQ(twin_after_noop(stamp, commands.size())->state_digest(), ledger_->state_digest());
  expect_invariants();
}

}  // namespace
}  // namespace paygate
