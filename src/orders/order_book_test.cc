// The order machine inside the ledger: one test per transition and per refusal, the
// money each moves, expiry and retention by the group's time, and the state across a
// snapshot (docs/ORDERS.md).
#include "orders/order_book.h"

#include <gtest/gtest.h>

#include <map>
#include <random>

#include "ledger/ledger.h"
#include "ledger/ledger_test_support.h"

namespace paygate {
namespace {

constexpr u8 kWallet = static_cast<u8>(OrderMethod::wallet);
constexpr u8 kExternal = static_cast<u8>(OrderMethod::external);
constexpr u8 kSuccess = 1, kFailed = 2;
constexpr MerchantId kShop{7};
constexpr MerchantId kPayer{9};

class OrderBookTest : public LedgerFixture {
 protected:
  void SetUp() override {
    config_.accounts_max = 64;
    config_.recent_transfers_max = 64;
    config_.idempotency_keys_max = 64;
    config_.orders_max = 8;
    config_.order_final_retained_ns = 50 * kNanosPerSecond;
    LedgerFixture::SetUp();
    shop_ = open(AccountKind::merchant, 0, kUsd, kShop);
    wallet_ = open(AccountKind::user, 0, kUsd, kPayer);
    clearing_ = open(AccountKind::system, 0, kUsd, MerchantId{11});
    ASSERT_EQ(code(Command::make_transfer(treasury(), wallet_, 1000, kUsd)), ResultCode::ok);
  }
  u64 create(u64 amount = 100, u32 expires_in_s = 30, u64 ref = 0) {
    const CommandResult r = run(Command::make_order_create(shop_, amount, kUsd, expires_in_s, ref));
    EXPECT_EQ(r.code, ResultCode::ok);
    return r.id;
  }
  CommandResult step(CommandKind kind, u64 order, AccountId account = {}, u64 amount = 0,
                     u8 action = 0, u64 advance_s = 0) {
    return run(Command::make_order(kind, order, account, amount, action), advance_s);
  }
  const Order& order(u64 id) {
    const Order* found = ledger_->find_order(id);
    EXPECT_NE(found, nullptr);
    static Order none;
    return found == nullptr ? none : *found;
  }
  i64 balance(AccountId id) { return account(id).balance(); }
  void expect_state(const CommandResult& r, OrderStatus status) {
    EXPECT_EQ(r.code, ResultCode::invalid_order_state);
    EXPECT_EQ(r.channel_number, static_cast<u32>(status));
  }

  AccountId shop_, wallet_, clearing_;
};

TEST_F(OrderBookTest, CreateChecksItsFieldsAndMerchantRefsAreUniquePerMerchant) {
  const u64 id = create(100, 30, /*ref=*/42);
  EXPECT_EQ(id_prefix(id), config_.prefix);
  const Order& o = order(id);
  EXPECT_EQ(o.status, OrderStatus::created);
  EXPECT_EQ(o.merchant, kShop.value);
  EXPECT_EQ(o.expires_at_ns, now_ns_ + 30 * kNanosPerSecond);
  // The same ref again names the first order.
  const CommandResult again = run(Command::make_order_create(shop_, 5, kUsd, 30, 42));
  EXPECT_EQ(again.code, ResultCode::duplicate_order);
  EXPECT_EQ(again.id, id);
  // Another merchant may use it.
  const AccountId other = open(AccountKind::merchant, 0, kUsd, MerchantId{8});
  EXPECT_EQ(code(Command::make_order_create(other, 5, kUsd, 30, 42)), ResultCode::ok);
  EXPECT_EQ(code(Command::make_order_create(shop_, 0, kUsd, 30, 0)), ResultCode::invalid_amount);
  EXPECT_EQ(code(Command::make_order_create(shop_, 5, kEur, 30, 0)), ResultCode::currency_mismatch);
  EXPECT_EQ(code(Command::make_order_create(shop_, 5, kUsd, 0, 0)), ResultCode::invalid_command);
  EXPECT_EQ(code(Command::make_order_create(treasury(), 5, kUsd, 30, 0)),
            ResultCode::account_not_found);  // no merchant's
  EXPECT_EQ(
      code(Command::make_order_create(AccountId{make_id(config_.prefix, 60)}, 5, kUsd, 30, 0)),
      ResultCode::account_not_found);
  expect_invariants();
}

TEST_F(OrderBookTest, AWalletCheckoutMovesTheMoneyInTheSameCommandOrNothing) {
  const u64 id = create(300);
  const CommandResult paid = step(CommandKind::order_checkout, id, wallet_, 0, kWallet);
  ASSERT_EQ(paid.code, ResultCode::ok);
  EXPECT_EQ(order(id).status, OrderStatus::success);
  EXPECT_EQ(order(id).transfer_id.value, paid.id);
  EXPECT_EQ(balance(wallet_), 700);
  EXPECT_EQ(balance(shop_), 300);
  expect_state(step(CommandKind::order_checkout, id, wallet_, 0, kWallet), OrderStatus::success);
  EXPECT_EQ(balance(wallet_), 700);

  // Short of funds: refused, the order unchanged, nothing moved.
  const u64 big = create(5000);
  EXPECT_EQ(step(CommandKind::order_checkout, big, wallet_, 0, kWallet).code,
            ResultCode::insufficient_funds);
  EXPECT_EQ(order(big).status, OrderStatus::created);
  EXPECT_EQ(balance(wallet_), 700);
  const AccountId euros = open(AccountKind::user, 0, kEur, kPayer);
  EXPECT_EQ(step(CommandKind::order_checkout, big, euros, 0, kWallet).code,
            ResultCode::currency_mismatch);
  EXPECT_EQ(step(CommandKind::order_checkout, big, wallet_, 0, 0).code,
            ResultCode::invalid_command);
  EXPECT_EQ(
      step(CommandKind::order_checkout, make_id(config_.prefix, 77), wallet_, 0, kWallet).code,
      ResultCode::order_not_found);
  // Any id a command names, 0 too (the fuzzer sent one: it is the index's empty key).
  for (const CommandKind kind :
       {CommandKind::order_checkout, CommandKind::order_result, CommandKind::order_cancel,
        CommandKind::order_refund, CommandKind::order_resolve}) {
    EXPECT_EQ(step(kind, 0, wallet_, 0, 1).code, ResultCode::order_not_found);
  }
  EXPECT_EQ(ledger_->find_order(0), nullptr);
  EXPECT_FALSE(ledger_->order_archived(0));
  expect_invariants();
}

TEST_F(OrderBookTest, AnExternalCheckoutWaitsForItsProvidersResult) {
  const u64 id = create(250);
  ASSERT_EQ(step(CommandKind::order_checkout, id, clearing_, 0, kExternal).code, ResultCode::ok);
  EXPECT_EQ(order(id).status, OrderStatus::processing);
  EXPECT_EQ(balance(shop_), 0);  // nothing held or moved until the provider says so
  expect_state(step(CommandKind::order_checkout, id, wallet_, 0, kWallet), OrderStatus::processing);
  ASSERT_EQ(step(CommandKind::order_result, id, {}, 0, kSuccess).code, ResultCode::ok);
  EXPECT_EQ(order(id).status, OrderStatus::success);
  EXPECT_EQ(balance(shop_), 250);
  EXPECT_EQ(balance(clearing_), -250);
  expect_state(step(CommandKind::order_result, id, {}, 0, kSuccess), OrderStatus::success);
  expect_state(step(CommandKind::order_cancel, id), OrderStatus::success);
  EXPECT_EQ(balance(shop_), 250);

  const u64 declined = create(40);
  ASSERT_EQ(step(CommandKind::order_checkout, declined, clearing_, 0, kExternal).code,
            ResultCode::ok);
  ASSERT_EQ(step(CommandKind::order_result, declined, {}, 0, kFailed).code, ResultCode::ok);
  EXPECT_EQ(order(declined).status, OrderStatus::failed);
  expect_state(step(CommandKind::order_result, declined, {}, 0, kSuccess), OrderStatus::failed);
  EXPECT_EQ(step(CommandKind::order_result, declined, {}, 0, 3).code, ResultCode::invalid_command);
  EXPECT_EQ(balance(shop_), 250);
  expect_invariants();
}

TEST_F(OrderBookTest, ABalanceCheckoutHoldsTheMerchantsMoneyUntilItsProvidersResult) {
  constexpr u8 kBalance = static_cast<u8>(OrderMethod::balance);
  ASSERT_EQ(code(Command::make_transfer(treasury(), shop_, 500, kUsd)), ResultCode::ok);
  // More than the prefunded account holds: refused, nothing held, the order open.
  const u64 big = create(501);
  EXPECT_EQ(step(CommandKind::order_checkout, big, clearing_, 0, kBalance).code,
            ResultCode::insufficient_funds);
  EXPECT_EQ(order(big).status, OrderStatus::created);
  EXPECT_EQ(account(shop_).debits_pending, 0u);

  const u64 paid = create(200);
  ASSERT_EQ(step(CommandKind::order_checkout, paid, clearing_, 0, kBalance).code, ResultCode::ok);
  const Order& held = order(paid);
  EXPECT_EQ(held.status, OrderStatus::processing);
  EXPECT_EQ(held.method, OrderMethod::balance);
  ASSERT_NE(held.hold_id.value, 0u);
  EXPECT_EQ(account(shop_).debits_pending, 200u);
  EXPECT_EQ(account(shop_).available(), 300);
  expect_invariants();
  // Only the order ends its hold: a transfer command may not post or void it.
  const TransferId hold = held.hold_id;
  EXPECT_EQ(code(Command::make_post(hold)), ResultCode::awaits_provider);
  EXPECT_EQ(code(Command::make_void(hold)), ResultCode::awaits_provider);
  EXPECT_EQ(account(shop_).debits_pending, 200u);
  ASSERT_EQ(step(CommandKind::order_result, paid, {}, 0, kSuccess).code, ResultCode::ok);
  EXPECT_EQ(order(paid).status, OrderStatus::success);
  EXPECT_EQ(order(paid).transfer_id, hold);  // the hold, posted
  EXPECT_EQ(balance(shop_), 300);
  EXPECT_EQ(balance(clearing_), 200);
  EXPECT_EQ(account(shop_).debits_pending, 0u);
  // A refund comes back from the provider.
  ASSERT_EQ(step(CommandKind::order_refund, paid, {}, 50).code, ResultCode::ok);
  EXPECT_EQ(balance(shop_), 350);
  EXPECT_EQ(balance(clearing_), 150);

  // Failed, cancelled, timed out: the hold is released, nothing moves.
  const u64 declined = create(100), cancelled = create(100), late = create(100, 5);
  for (const u64 id : {declined, cancelled, late}) {
    ASSERT_EQ(step(CommandKind::order_checkout, id, clearing_, 0, kBalance).code, ResultCode::ok);
  }
  EXPECT_EQ(account(shop_).debits_pending, 300u);
  ASSERT_EQ(step(CommandKind::order_result, declined, {}, 0, kFailed).code, ResultCode::ok);
  ASSERT_EQ(step(CommandKind::order_cancel, cancelled).code, ResultCode::ok);
  EXPECT_EQ(account(shop_).debits_pending, 100u);
  ASSERT_EQ(code(Command::make_tick(), 5), ResultCode::ok);
  EXPECT_EQ(order(late).status, OrderStatus::timeout);
  EXPECT_EQ(account(shop_).debits_pending, 0u);
  EXPECT_EQ(balance(shop_), 350);
  expect_invariants();
  // The provider paid after all: an exception, which an accept settles from the
  // merchant's account as the success would have, if it still can.
  ASSERT_EQ(step(CommandKind::order_result, late, {}, 0, kSuccess).code, ResultCode::ok);
  EXPECT_EQ(order(late).status, OrderStatus::exception_checkout);
  ASSERT_EQ(code(Command::make_transfer(shop_, wallet_, 300, kUsd)), ResultCode::ok);
  EXPECT_EQ(step(CommandKind::order_resolve, late, {}, 0, 1).code, ResultCode::insufficient_funds);
  EXPECT_EQ(order(late).status, OrderStatus::exception_checkout);
  ASSERT_EQ(code(Command::make_transfer(wallet_, shop_, 300, kUsd)), ResultCode::ok);
  ASSERT_EQ(step(CommandKind::order_resolve, late, {}, 0, 1).code, ResultCode::ok);
  EXPECT_EQ(order(late).status, OrderStatus::success);
  EXPECT_EQ(balance(shop_), 250);
  EXPECT_EQ(balance(clearing_), 250);
  expect_invariants();
}

TEST_F(OrderBookTest, ACheckoutRefusedByRiskRulesIsRecordedAndMovesNothing) {
  const u64 id = create(300);
  const CommandResult refused = step(CommandKind::order_checkout, id, wallet_, 0,
                                     checkout_action(OrderMethod::wallet, RiskRule::max_amount));
  ASSERT_EQ(refused.code, ResultCode::ok);
  EXPECT_EQ(order(id).status, OrderStatus::rejected_risk);
  EXPECT_EQ(order(id).risk_rule, RiskRule::max_amount);
  EXPECT_NE(order(id).finished_at_ns, 0u);
  EXPECT_EQ(balance(wallet_), 1000);
  EXPECT_EQ(balance(shop_), 0);
  // Final: no checkout, refusal, cancel or refund after it.
  expect_state(step(CommandKind::order_checkout, id, wallet_, 0, kWallet),
               OrderStatus::rejected_risk);
  expect_state(step(CommandKind::order_checkout, id, wallet_, 0,
                    checkout_action(OrderMethod::wallet, RiskRule::blocked_payer)),
               OrderStatus::rejected_risk);
  expect_state(step(CommandKind::order_cancel, id), OrderStatus::rejected_risk);
  // Actions that name no method, or no rule there is, are malformed.
  const u64 open_order = create(10);
  for (const u8 action : {u8{0x10}, u8{0x41}, u8{0x04}}) {
    EXPECT_EQ(step(CommandKind::order_checkout, open_order, wallet_, 0, action).code,
              ResultCode::invalid_command);
  }
  EXPECT_EQ(order(open_order).status, OrderStatus::created);
  expect_invariants();
}

TEST_F(OrderBookTest, AStepsKeyCountsAgainstTheSideThatSendsIt) {
  constexpr u8 kBalance = static_cast<u8>(OrderMethod::balance);
  constexpr MerchantId kProvider{11};  // clearing_'s owner
  ASSERT_EQ(code(Command::make_transfer(treasury(), shop_, 500, kUsd)), ResultCode::ok);
  const auto keys_of = [&](MerchantId owner) -> u32 {
    const OwnerQuota* q = ledger_->find_quota(owner);
    return q == nullptr ? 0 : q->used[static_cast<u32>(Quota::idempotency_keys)];
  };
  u64 next_key = 100;
  // Runs a keyed step and says whose key count went up by one.
  const auto keyed = [&](const Command& command) {
    const u32 shop = keys_of(kShop), payer = keys_of(kPayer), provider = keys_of(kProvider);
    const CommandResult r = run(Command(command).with_key(key(next_key++)));
    EXPECT_EQ(r.code, ResultCode::ok);
    const u32 counted =
        (keys_of(kShop) - shop) + (keys_of(kPayer) - payer) + (keys_of(kProvider) - provider);
    EXPECT_EQ(counted, 1u);  // one key, one owner
    return keys_of(kShop) > shop ? kShop : keys_of(kPayer) > payer ? kPayer : kProvider;
  };
  // The merchant's: create, cancel, refund, a balance checkout (its own money).
  EXPECT_EQ(keyed(Command::make_order_create(shop_, 100, kUsd, 30, 0)), kShop);
  const u64 paid = create(100), routed = create(50), billed = create(20), dropped = create(10);
  EXPECT_EQ(keyed(Command::make_order(CommandKind::order_cancel, dropped)), kShop);
  // The payer's: its wallet checkout.
  EXPECT_EQ(keyed(Command::make_order(CommandKind::order_checkout, paid, wallet_, 0, kWallet)),
            kPayer);
  EXPECT_EQ(keyed(Command::make_order(CommandKind::order_refund, paid, {}, 10)), kShop);
  // The provider's: the external checkout naming its clearing account, and its result.
  EXPECT_EQ(
      keyed(Command::make_order(CommandKind::order_checkout, routed, clearing_, 0, kExternal)),
      kProvider);
  EXPECT_EQ(keyed(Command::make_order(CommandKind::order_result, routed, {}, 0, kSuccess)),
            kProvider);
  // A balance checkout names the provider's clearing account but spends the merchant's
  // money: the merchant's key, refused by a risk rule or not.
  EXPECT_EQ(keyed(Command::make_order(CommandKind::order_checkout, billed, clearing_, 0, kBalance)),
            kShop);
  const u64 risky = create(10);
  EXPECT_EQ(keyed(Command::make_order(CommandKind::order_checkout, risky, clearing_, 0,
                                      checkout_action(OrderMethod::balance, RiskRule::max_amount))),
            kShop);
  expect_invariants();
}

TEST_F(OrderBookTest, CancelBeforeAResultOnly) {
  const u64 fresh = create();
  ASSERT_EQ(step(CommandKind::order_cancel, fresh).code, ResultCode::ok);
  EXPECT_EQ(order(fresh).status, OrderStatus::cancelled);
  expect_state(step(CommandKind::order_checkout, fresh, wallet_, 0, kWallet),
               OrderStatus::cancelled);
  const u64 routed = create();
  ASSERT_EQ(step(CommandKind::order_checkout, routed, clearing_, 0, kExternal).code,
            ResultCode::ok);
  ASSERT_EQ(step(CommandKind::order_cancel, routed).code, ResultCode::ok);
  expect_state(step(CommandKind::order_result, routed, {}, 0, kFailed), OrderStatus::cancelled);
  EXPECT_EQ(balance(shop_), 0);
  EXPECT_EQ(balance(wallet_), 1000);
  expect_invariants();
}

TEST_F(OrderBookTest, ExpiryTimesOutAndALateSuccessIsAnExceptionForAnOperator) {
  const u64 unpaid = create(10, /*expires_in_s=*/5);
  const u64 routed = create(60, /*expires_in_s=*/10);
  ASSERT_EQ(step(CommandKind::order_checkout, routed, clearing_, 0, kExternal).code,
            ResultCode::ok);
  ASSERT_EQ(code(Command::make_tick(), 5), ResultCode::ok);
  EXPECT_EQ(order(unpaid).status, OrderStatus::timeout);
  EXPECT_EQ(order(routed).status, OrderStatus::processing);
  expect_state(step(CommandKind::order_checkout, unpaid, wallet_, 0, kWallet),
               OrderStatus::timeout);
  // The provider's success arrives after the order timed out: recorded, nothing moves.
  const CommandResult late = step(CommandKind::order_result, routed, {}, 0, kSuccess, 5);
  ASSERT_EQ(late.code, ResultCode::ok);
  EXPECT_EQ(order(routed).status, OrderStatus::exception_checkout);
  EXPECT_EQ(order(routed).late_result, 1);
  EXPECT_EQ(balance(shop_), 0);
  expect_state(step(CommandKind::order_result, routed, {}, 0, kSuccess),
               OrderStatus::exception_checkout);
  // Held past its retention until resolved; the others leave memory.
  ASSERT_EQ(code(Command::make_tick(), 100), ResultCode::ok);
  EXPECT_EQ(ledger_->find_order(unpaid), nullptr);
  EXPECT_TRUE(ledger_->order_archived(unpaid));
  ASSERT_NE(ledger_->find_order(routed), nullptr);
  ASSERT_EQ(step(CommandKind::order_resolve, routed, {}, 0, 1).code, ResultCode::ok);
  EXPECT_EQ(order(routed).status, OrderStatus::success);
  EXPECT_EQ(order(routed).resolution, OrderResolution::accepted);
  EXPECT_EQ(balance(shop_), 60);
  EXPECT_EQ(balance(clearing_), -60);
  expect_state(step(CommandKind::order_resolve, routed, {}, 0, 1), OrderStatus::success);

  // Rejected: the provider owes the payer; the order fails and nothing moves.
  const u64 other = create(70, 5);
  ASSERT_EQ(step(CommandKind::order_checkout, other, clearing_, 0, kExternal).code, ResultCode::ok);
  ASSERT_EQ(step(CommandKind::order_result, other, {}, 0, kSuccess, 6).code, ResultCode::ok);
  ASSERT_EQ(step(CommandKind::order_resolve, other, {}, 0, 2).code, ResultCode::ok);
  EXPECT_EQ(order(other).status, OrderStatus::failed);
  EXPECT_EQ(order(other).resolution, OrderResolution::rejected);
  EXPECT_EQ(balance(shop_), 60);
  // A success after the merchant cancelled is an exception too: the provider may have
  // charged the payer.
  const u64 cancelled = create(30, 50);
  ASSERT_EQ(step(CommandKind::order_checkout, cancelled, clearing_, 0, kExternal).code,
            ResultCode::ok);
  ASSERT_EQ(step(CommandKind::order_cancel, cancelled).code, ResultCode::ok);
  ASSERT_EQ(step(CommandKind::order_result, cancelled, {}, 0, kSuccess).code, ResultCode::ok);
  EXPECT_EQ(order(cancelled).status, OrderStatus::exception_checkout);
  // A late failure is no exception.
  const u64 quiet = create(5, 5);
  ASSERT_EQ(step(CommandKind::order_checkout, quiet, clearing_, 0, kExternal).code, ResultCode::ok);
  expect_state(step(CommandKind::order_result, quiet, {}, 0, kFailed, 6), OrderStatus::timeout);
  expect_invariants();
}

TEST_F(OrderBookTest, RefundsGoBackWhereTheMoneyCameFromUpToTheAmount) {
  const u64 paid = create(300);
  ASSERT_EQ(step(CommandKind::order_checkout, paid, wallet_, 0, kWallet).code, ResultCode::ok);
  ASSERT_EQ(step(CommandKind::order_refund, paid, {}, 100).code, ResultCode::ok);
  EXPECT_EQ(order(paid).amount_refunded, 100u);
  EXPECT_EQ(balance(wallet_), 800);
  EXPECT_EQ(step(CommandKind::order_refund, paid, {}, 201).code, ResultCode::refund_exceeds_order);
  ASSERT_EQ(step(CommandKind::order_refund, paid, {}, 0).code, ResultCode::ok);  // the rest
  EXPECT_EQ(order(paid).amount_refunded, 300u);
  EXPECT_EQ(balance(wallet_), 1000);
  EXPECT_EQ(balance(shop_), 0);
  EXPECT_EQ(step(CommandKind::order_refund, paid, {}, 0).code, ResultCode::refund_exceeds_order);

  const u64 card = create(80);
  ASSERT_EQ(step(CommandKind::order_checkout, card, clearing_, 0, kExternal).code, ResultCode::ok);
  expect_state(step(CommandKind::order_refund, card, {}, 10), OrderStatus::processing);
  ASSERT_EQ(step(CommandKind::order_result, card, {}, 0, kSuccess).code, ResultCode::ok);
  // The merchant spent it: the refund is refused, nothing recorded.
  ASSERT_EQ(code(Command::make_transfer(shop_, wallet_, 50, kUsd)), ResultCode::ok);
  EXPECT_EQ(step(CommandKind::order_refund, card, {}, 80).code, ResultCode::insufficient_funds);
  EXPECT_EQ(order(card).amount_refunded, 0u);
  ASSERT_EQ(step(CommandKind::order_refund, card, {}, 30).code, ResultCode::ok);
  EXPECT_EQ(balance(clearing_), -50);  // back to the provider
  expect_invariants();
}

TEST_F(OrderBookTest, ATableFullOfOpenOrdersRefusesAndFinalOnesMakeRoom) {
  std::vector<u64> ids;
  for (u32 i = 0; i < config_.orders_max; ++i)
    ids.push_back(create(1, 30, 100 + i));
  EXPECT_EQ(code(Command::make_order_create(shop_, 1, kUsd, 30, 0)), ResultCode::orders_full);
  // A final order keeps its slot (and its ref) for its whole retention: it can still be
  // refunded or get a late result.
  ASSERT_EQ(step(CommandKind::order_cancel, ids[3]).code, ResultCode::ok);
  EXPECT_EQ(code(Command::make_order_create(shop_, 1, kUsd, 30, 0)), ResultCode::orders_full);
  EXPECT_EQ(code(Command::make_order_create(shop_, 1, kUsd, 30, 103)), ResultCode::duplicate_order);
  // Past it, the slot and the ref are free; the open ones timed out meanwhile.
  ASSERT_EQ(code(Command::make_tick(), 60), ResultCode::ok);
  EXPECT_EQ(ledger_->find_order(ids[3]), nullptr);
  EXPECT_TRUE(ledger_->order_archived(ids[3]));
  EXPECT_EQ(order(ids[4]).status, OrderStatus::timeout);
  const u64 next = create(1, 30, 103);
  EXPECT_FALSE(ledger_->order_archived(next));
  EXPECT_FALSE(ledger_->order_archived(make_id(config_.prefix, 1000)));
  expect_invariants();
}

TEST_F(OrderBookTest, OrdersSurviveASnapshotAndKeysReplayTheirAnswers) {
  const u64 paid = create(100, 30, 1);
  ASSERT_EQ(step(CommandKind::order_checkout, paid, wallet_, 0, kWallet).code, ResultCode::ok);
  const u64 routed = create(50, 20, 2);
  ASSERT_EQ(step(CommandKind::order_checkout, routed, clearing_, 0, kExternal).code,
            ResultCode::ok);
  const u64 late = create(20, 5, 3);
  ASSERT_EQ(step(CommandKind::order_checkout, late, clearing_, 0, kExternal).code, ResultCode::ok);
  ASSERT_EQ(step(CommandKind::order_result, late, {}, 0, kSuccess, 6).code, ResultCode::ok);
  // A balance order processing: its hold is in the state, and its expiry releases it.
  const u64 billed = create(60, 20, 6);
  ASSERT_EQ(
      step(CommandKind::order_checkout, billed, clearing_, 0, static_cast<u8>(OrderMethod::balance))
          .code,
      ResultCode::ok);
  // A keyed create answered again.
  const Command keyed = Command::make_order_create(shop_, 9, kUsd, 30, 4).with_key(key(1));
  const CommandResult first = run(keyed);
  ASSERT_EQ(first.code, ResultCode::ok);
  EXPECT_EQ(run(keyed).id, first.id);

  const std::vector<unsigned char> state = saved_state(*ledger_);
  Ledger restored(config_);
  BytesSource source(state);
  const Status loaded = restored.load(source);
  ASSERT_TRUE(loaded.ok()) << loaded.to_string();
  EXPECT_EQ(restored.state_digest(), ledger_->state_digest());
  EXPECT_EQ(saved_state(restored), state);
  // Both go on alike: the digest covers every order.
  for (Ledger* l : {ledger_.get(), &restored}) {
    const Stamp stamp{sequence_ + 1, now_ns_ + 100 * kNanosPerSecond};
    const CommandResult resolved =
        l->apply(stamp, Command::make_order(CommandKind::order_resolve, late, {}, 0, 1));
    EXPECT_EQ(resolved.code, ResultCode::ok) << resolved.channel_number;
    EXPECT_TRUE(l->check_invariants().ok());
  }
  EXPECT_EQ(restored.state_digest(), ledger_->state_digest());
  EXPECT_EQ(restored.find_order(routed)->status, OrderStatus::timeout);
  EXPECT_EQ(restored.find_order(billed)->status, OrderStatus::timeout);
  EXPECT_EQ(restored.find_account(shop_)->debits_pending, 0u);
  EXPECT_TRUE(restored.order_archived(paid));
  // The digest sees an order's state.
  const u64 before = restored.state_digest();
  const Stamp stamp{sequence_ + 2, now_ns_ + 101 * kNanosPerSecond};
  ASSERT_EQ(restored.apply(stamp, Command::make_order_create(shop_, 3, kUsd, 30, 5)).code,
            ResultCode::ok);
  EXPECT_NE(restored.state_digest(), before);
}

// Random order workflows against a deliberately simple model: every command's code,
// every order's status and refunds, and every balance must agree after each step, and
// the ledger's invariants (its own and the order book's) must hold throughout.
TEST_F(OrderBookTest, RandomWorkflowsMatchASimpleModel) {
  struct Model {
    OrderStatus status = OrderStatus::created;
    OrderMethod method = OrderMethod::none;
    u64 merchant = 0, amount = 0, refunded = 0, ref = 0, expires_at = 0, finished_at = 0;
    AccountId account, payer, provider;
  };
  const u64 seeds = 6, steps = 1500;
  std::map<ResultCode, u64> codes_seen;
  std::map<OrderStatus, u64> statuses_seen;
  u64 archived_seen = 0;
  std::map<OrderStatus, u64> balance_finals;
  for (u64 seed = 1; seed <= seeds; ++seed) {
    SCOPED_TRACE(testing::Message() << "seed " << seed);
    config_.orders_max = 4096;  // no early eviction: the model need not know it
    config_.accounts_max = 64;
    config_.idempotency_keys_max = 64;
    reconfigure(config_);
    std::mt19937_64 rng(seed);
    const auto pick = [&](u64 n) { return rng() % n; };
    const AccountId treasury_account = treasury();
    std::vector<AccountId> shops = {open(AccountKind::merchant, 0, kUsd, MerchantId{7}),
                                    open(AccountKind::merchant, 0, kUsd, MerchantId{8})};
    std::vector<AccountId> wallets, clearings;
    std::map<u64, i64> balances;
    for (const AccountId shop : shops) {  // prefunded, for balance checkouts
      ASSERT_EQ(code(Command::make_transfer(treasury_account, shop, 600, kUsd)), ResultCode::ok);
      balances[shop.value] = 600;
    }
    for (u32 i = 0; i < 3; ++i) {
      wallets.push_back(open(AccountKind::user, 0, kUsd, MerchantId{20 + i}));
      ASSERT_EQ(code(Command::make_transfer(treasury_account, wallets.back(), 250, kUsd)),
                ResultCode::ok);
      balances[wallets.back().value] = 250;
    }
    for (u32 i = 0; i < 2; ++i)
      clearings.push_back(open(AccountKind::system, 0, kUsd, MerchantId{30 + i}));
    std::map<u64, i64> held;  // by balance orders, on their accounts
    const auto available = [&](AccountId id) { return balances[id.value] - held[id.value]; };
    const auto move = [&](AccountId from, AccountId to, u64 amount) {
      balances[from.value] -= static_cast<i64>(amount);
      balances[to.value] += static_cast<i64>(amount);
    };
    const auto is_system = [&](AccountId id) { return id == clearings[0] || id == clearings[1]; };
    std::map<u64, Model> model;
    std::vector<u64> ids;  // every id made (some leave memory)
    const u64 retained = config_.order_final_retained_ns;
    const auto finish = [&](Model& m, OrderStatus status) {
      if (m.method == OrderMethod::balance) ++balance_finals[status];
      if (m.method == OrderMethod::balance && m.status == OrderStatus::processing) {
        // The hold is posted to the provider, or released.
        held[m.account.value] -= static_cast<i64>(m.amount);
        if (status == OrderStatus::success) move(m.account, m.provider, m.amount);
      }
      m.status = status;
      m.finished_at = now_ns_;
    };
    for (u64 step = 0; step < steps; ++step) {
      now_ns_ += pick(4) * kNanosPerSecond;
      // What the ledger does before the command at this time: expiry, then retention.
      for (auto& [id, m] : model) {
        if (!is_final(m.status) && m.expires_at <= now_ns_) finish(m, OrderStatus::timeout);
      }
      std::erase_if(model, [&](const auto& entry) {
        const Model& m = entry.second;
        return is_final(m.status) && m.status != OrderStatus::exception_checkout &&
               m.finished_at + retained <= now_ns_;
      });
      // Mostly an order held, sometimes any made (archived ones too), or none.
      u64 target = make_id(config_.prefix, 5000);
      const u64 aim = pick(10);
      std::vector<u64> processing;  // a result or cancel for one is the interesting case
      for (const auto& [id, held_order] : model) {
        if (held_order.status == OrderStatus::processing) processing.push_back(id);
      }
      if (aim >= 8 && !processing.empty()) {
        target = processing[pick(processing.size())];
      } else if (aim >= 3 && !model.empty()) {
        target = std::next(model.begin(), static_cast<long>(pick(model.size())))->first;
      } else if (aim >= 1 && !ids.empty()) {
        target = ids[pick(ids.size())];
      }
      Model* m = model.contains(target) ? &model[target] : nullptr;
      ResultCode expected = ResultCode::ok;
      Command command;
      switch (pick(8)) {
        case 0:
        case 1: {  // create
          const u32 which = static_cast<u32>(pick(2));
          const u64 amount = 1 + pick(400);
          const u32 expires_in = 1 + static_cast<u32>(pick(20));
          const u64 ref = 1 + pick(40);
          command = Command::make_order_create(shops[which], amount, kUsd, expires_in, ref);
          for (const auto& [id, other] : model) {
            if (other.merchant == 7u + which && other.ref == ref)
              expected = ResultCode::duplicate_order;
          }
          const CommandResult r = run(command);
          ASSERT_EQ(r.code, expected) << step;
          if (r.ok()) {
            ids.push_back(r.id);
            Model& made = model[r.id];
            made.merchant = 7u + which;
            made.amount = amount;
            made.ref = ref;
            made.expires_at = now_ns_ + expires_in * kNanosPerSecond;
            made.account = shops[which];
          }
          break;
        }
        case 2: {  // checkout
          const auto method = static_cast<OrderMethod>(1 + pick(3));
          const bool wallet = method == OrderMethod::wallet;
          const AccountId from = wallet ? wallets[pick(3)] : clearings[pick(2)];
          // Now and then the gateway's risk rules refused it.
          const auto rule = pick(8) == 0 ? static_cast<RiskRule>(1 + pick(3)) : RiskRule::none;
          command = Command::make_order(CommandKind::order_checkout, target, from, 0,
                                        checkout_action(method, rule));
          if (m == nullptr) {
            expected = ResultCode::order_not_found;
          } else if (m->status != OrderStatus::created) {
            expected = ResultCode::invalid_order_state;
          } else if (rule != RiskRule::none) {
            ASSERT_EQ(code(command), ResultCode::ok) << step;
            finish(*m, OrderStatus::rejected_risk);  // nothing moves
            break;
          } else if (wallet && available(from) < static_cast<i64>(m->amount)) {
            expected = ResultCode::insufficient_funds;
          } else if (method == OrderMethod::balance &&
                     available(m->account) < static_cast<i64>(m->amount)) {
            expected = ResultCode::insufficient_funds;  // the merchant's prefunded account
          }
          ASSERT_EQ(code(command), expected) << step;
          if (expected != ResultCode::ok) break;
          m->method = method;
          if (wallet) {
            move(from, m->account, m->amount);
            m->payer = from;
            finish(*m, OrderStatus::success);
          } else {
            if (method == OrderMethod::balance) {
              held[m->account.value] += static_cast<i64>(m->amount);
              m->payer = m->account;
            }
            m->provider = from;
            m->status = OrderStatus::processing;
          }
          break;
        }
        case 3: {  // result
          const bool success = pick(3) != 0;
          command = Command::make_order(CommandKind::order_result, target, {}, 0,
                                        success ? kSuccess : kFailed);
          bool late = false;
          if (m == nullptr) {
            expected = ResultCode::order_not_found;
          } else if ((m->status == OrderStatus::timeout || m->status == OrderStatus::cancelled) &&
                     (m->method == OrderMethod::external || m->method == OrderMethod::balance) &&
                     success) {
            late = true;
          } else if (m->status != OrderStatus::processing) {
            expected = ResultCode::invalid_order_state;
          }
          ASSERT_EQ(code(command), expected) << step;
          if (expected != ResultCode::ok) break;
          if (late) {
            m->status = OrderStatus::exception_checkout;
          } else {
            if (success && m->method == OrderMethod::external) {
              move(m->provider, m->account, m->amount);
            }
            finish(*m, success ? OrderStatus::success : OrderStatus::failed);
          }
          break;
        }
        case 4: {  // cancel
          command = Command::make_order(CommandKind::order_cancel, target);
          expected = m == nullptr          ? ResultCode::order_not_found
                     : is_final(m->status) ? ResultCode::invalid_order_state
                                           : ResultCode::ok;
          ASSERT_EQ(code(command), expected) << step;
          if (expected == ResultCode::ok) finish(*m, OrderStatus::cancelled);
          break;
        }
        case 5:
        case 6: {  // refund
          // At the edges as often as not: all, exactly what is left, one more.
          const u64 left_now = m == nullptr ? 0 : m->amount - m->refunded;
          const u64 choice = pick(4);
          const u64 amount = choice == 0   ? 0
                             : choice == 1 ? left_now
                             : choice == 2 ? left_now + 1
                                           : 1 + pick(300);
          command = Command::make_order(CommandKind::order_refund, target, {}, amount);
          u64 refund = 0;
          if (m == nullptr) {
            expected = ResultCode::order_not_found;
          } else if (m->status != OrderStatus::success) {
            expected = ResultCode::invalid_order_state;
          } else {
            const u64 left = m->amount - m->refunded;
            refund = amount == 0 ? left : amount;
            if (refund == 0 || refund > left) {
              expected = ResultCode::refund_exceeds_order;
            } else if (m->method != OrderMethod::balance &&  // balance: from the provider
                       available(m->account) < static_cast<i64>(refund)) {
              expected = ResultCode::insufficient_funds;
            }
          }
          ASSERT_EQ(code(command), expected) << step;
          if (expected == ResultCode::ok) {
            if (m->method == OrderMethod::balance) {
              move(m->provider, m->account, refund);
            } else {
              move(m->account, m->method == OrderMethod::wallet ? m->payer : m->provider, refund);
            }
            m->refunded += refund;
          }
          break;
        }
        default: {  // resolve
          const bool accept = pick(2) == 0;
          command = Command::make_order(CommandKind::order_resolve, target, {}, 0, accept ? 1 : 2);
          expected = m == nullptr ? ResultCode::order_not_found
                     : m->status != OrderStatus::exception_checkout
                         ? ResultCode::invalid_order_state
                         : ResultCode::ok;
          // Accepting a late balance success takes the merchant's money now.
          const bool balance = m != nullptr && m->method == OrderMethod::balance;
          if (expected == ResultCode::ok && accept && balance &&
              available(m->account) < static_cast<i64>(m->amount)) {
            expected = ResultCode::insufficient_funds;
          }
          ASSERT_EQ(code(command), expected) << step;
          if (expected == ResultCode::ok) {
            if (accept && balance) move(m->account, m->provider, m->amount);
            if (accept && !balance) move(m->provider, m->account, m->amount);
            finish(*m, accept ? OrderStatus::success : OrderStatus::failed);
          }
          break;
        }
      }
      ++codes_seen[expected];
      // Everything the model holds, the ledger holds alike; the rest are archived.
      for (const auto& [id, expect] : model) {
        ++statuses_seen[expect.status];
        const Order* o = ledger_->find_order(id);
        ASSERT_NE(o, nullptr) << step;
        ASSERT_EQ(o->status, expect.status) << step << " order " << id;
        ASSERT_EQ(o->amount_refunded, expect.refunded) << step;
        ASSERT_EQ((o->status == OrderStatus::success), o->transfer_id.value != 0);
      }
      for (const u64 id : ids) {
        ASSERT_EQ(ledger_->find_order(id) != nullptr, model.contains(id)) << step;
        ASSERT_EQ(ledger_->order_archived(id), !model.contains(id)) << step;
        archived_seen += model.contains(id) ? 0 : 1;
      }
      i64 total = 0;
      for (const auto& [id, expect] : balances) {
        ASSERT_EQ(account(AccountId{id}).balance(), expect) << step << " account " << id;
        ASSERT_EQ(account(AccountId{id}).debits_pending, static_cast<u64>(held[id])) << step;
        if (!is_system(AccountId{id})) {
          ASSERT_GE(expect, 0);
        }
        total += expect;
      }
      ASSERT_EQ(total, 3 * 250 + 2 * 600);        // only the treasury's deposits came in
      if (step % 16 == 0 || step + 1 == steps) {  // O(state), and a sanitizer stage runs it
        const Status invariants = ledger_->check_invariants();
        ASSERT_TRUE(invariants.ok()) << step << ": " << invariants.message();
      }
    }
    EXPECT_GT(ids.size(), steps / 8);
  }
  // The workflows reached every outcome (else the model checks little).
  for (const ResultCode c : {ResultCode::ok, ResultCode::order_not_found,
                             ResultCode::invalid_order_state, ResultCode::duplicate_order,
                             ResultCode::insufficient_funds, ResultCode::refund_exceeds_order}) {
    EXPECT_GT(codes_seen[c], 10u) << name(c);
  }
  for (const OrderStatus st : {OrderStatus::created, OrderStatus::processing, OrderStatus::success,
                               OrderStatus::failed, OrderStatus::timeout, OrderStatus::cancelled,
                               OrderStatus::exception_checkout, OrderStatus::rejected_risk}) {
    EXPECT_GT(statuses_seen[st], 10u) << name(st);
  }
  EXPECT_GT(archived_seen, 10u);
  for (const OrderStatus st :
       {OrderStatus::success, OrderStatus::failed, OrderStatus::timeout, OrderStatus::cancelled}) {
    EXPECT_GT(balance_finals[st], 2u) << "balance " << name(st);
  }
}

}  // namespace
}  // namespace paygate
