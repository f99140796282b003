// Transfers between groups (docs/LEDGER.md): several ledgers of one region, with the
// three steps — hold, deliver, settle — carried between them by the test, which can
// repeat, reorder and lose them the way a crash would.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <random>
#include <vector>

#include "ledger/ledger.h"
#include "ledger/ledger_test_support.h"

namespace paygate {
namespace {

// The ledgers of one region's groups, each with its own sequence, on one clock.
class Region {
 public:
  explicit Region(u32 groups, u32 pending_max = 64, u32 accounts_max = 64) {
    for (u32 g = 0; g < groups; ++g) {
      configs_.push_back(LedgerConfig{.prefix = {1, g},
                                      .accounts_max = accounts_max,
                                      .pending_max = pending_max,
                                      .recent_transfers_max = 64,
                                      .idempotency_keys_max = 16,
                                      .idempotency_window_ns = 100 * kNanosPerSecond,
                                      .groups = groups});
      ledgers_.push_back(std::make_unique<Ledger>(configs_.back()));
      sequences_.push_back(0);
      history_.emplace_back();
    }
  }

  Ledger& operator[](u32 g) { return *ledgers_[g]; }
  u32 size() const { return static_cast<u32>(ledgers_.size()); }
  // Every command runs a millisecond after the one before, in whichever group.
  static constexpr u64 kTickNs = kNanosPerSecond / 1000;
  u64 next_command_ns() const { return now_ns_ + kTickNs; }
  void pass(u64 ns) { now_ns_ += ns; }

  CommandResult run(u32 g, const Command& command) {
    now_ns_ += kTickNs;
    const Stamp stamp{++sequences_[g], now_ns_};
    history_[g].push_back({stamp, command});
    return ledgers_[g]->apply(stamp, command);
  }
  ResultCode atomic(u32 g, std::span<const Command> commands) {
    now_ns_ += kNanosPerSecond / 1000;
    const Stamp first{sequences_[g] + 1, now_ns_};
    sequences_[g] += commands.size();
    std::vector<CommandResult> results(commands.size());
    history_[g].push_back({first, Command::make_tick()});  // what a failed batch leaves
    for (std::size_t i = 1; i < commands.size(); ++i)
      history_[g].push_back({Stamp{first.sequence + i, now_ns_}, Command::make_tick()});
    return ledgers_[g]->apply_atomic(first, commands, {}, results);
  }
  AccountId open(u32 g, Currency currency = kUsd, AccountKind kind = AccountKind::user) {
    const CommandResult made = run(g, Command::make_create_account(MerchantId{7}, currency, kind));
    EXPECT_EQ(made.code, ResultCode::ok);
    return AccountId{made.id};
  }
  AccountId funded(u32 g, u64 amount, Currency currency = kUsd) {
    const AccountId treasury = open(g, currency, AccountKind::system);
    const AccountId account = open(g, currency);
    EXPECT_EQ(run(g, Command::make_transfer(treasury, account, amount, currency)).code,
              ResultCode::ok);
    return account;
  }
  static Command between(AccountId debit, AccountId credit, u64 amount, Currency c = kUsd) {
    Command command = Command::make_transfer(debit, credit, amount, c);
    command.flags = kTransferBetweenGroups;
    return command;
  }
  static Command hold_between(AccountId debit, AccountId credit, u64 amount, u32 timeout_s = 0) {
    Command command = Command::make_hold(debit, credit, amount, kUsd, timeout_s);
    command.flags |= kTransferBetweenGroups;
    return command;
  }
  // Steps 2 and 3 for a hold made by step 1 in group `from`.
  // (A payment of an order names the order and its payer: pipeline/carry.cc.)
  ResultCode deliver(u32 to, const Transfer& hold, u32 number) {
    return run(to,
               hold.pays_order()
                   ? Command::make_order_deliver(hold.id, hold.paid_order(), hold.debit_account_id,
                                                 hold.amount, hold.currency, number)
                   : Command::make_deliver(hold.id, hold.credit_account_id, hold.delivery_amount(),
                                           hold.currency, number))
        .code;
  }
  ResultCode settle(u32 from, TransferId id, u32 number, ResultCode delivery) {
    return run(from, Command::make_settle(id, number, delivery)).code;
  }

  // Snapshot and reload group g, as a restart does.
  void restart(u32 g) {
    const std::vector<unsigned char> state = saved_state(*ledgers_[g]);
    auto fresh = std::make_unique<Ledger>(configs_[g]);
    BytesSource source(state);
    ASSERT_TRUE(fresh->load(source).ok());
    ASSERT_EQ(fresh->state_digest(), ledgers_[g]->state_digest());
    ledgers_[g] = std::move(fresh);
  }
  // Every command applied again on a fresh ledger gives the same state.
  void expect_replay_equal(u32 g) {
    Ledger replayed(configs_[g]);
    for (const auto& [stamp, command] : history_[g])
      (void)replayed.apply(stamp, command);
    EXPECT_EQ(replayed.state_digest(), ledgers_[g]->state_digest()) << "group " << g;
  }
  void expect_invariants() {
    for (u32 g = 0; g < size(); ++g) {
      const Status report = ledgers_[g]->check_invariants();
      EXPECT_TRUE(report.ok()) << "group " << g << ": " << report.message();
    }
  }
  i64 balance(AccountId id) {
    const Account* account = ledgers_[id_prefix(id.value).group]->find_account(id);
    EXPECT_NE(account, nullptr);
    return account == nullptr ? 0 : account->balance();
  }
  const Account& clearing(u32 g, u32 peer, Currency currency = kUsd) {
    const Account* account = ledgers_[g]->find_clearing_account(peer, currency);
    EXPECT_NE(account, nullptr);
    return *account;
  }

 private:
  std::vector<LedgerConfig> configs_;
  std::vector<std::unique_ptr<Ledger>> ledgers_;
  std::vector<u64> sequences_;
  std::vector<std::vector<std::pair<Stamp, Command>>> history_;
  u64 now_ns_ = kStartNs;
};

// A step in flight taken off the wire at random, or a copy of it (a repeat to come).
template <typename Message>
Message take_one(std::vector<Message>& from, std::mt19937_64& random, bool leave_copy) {
  const std::size_t at = random() % from.size();
  Message m = from[at];
  if (!leave_copy) {
    from[at] = from.back();
    from.pop_back();
  }
  return m;
}

Transfer open_hold(Ledger& ledger, TransferId id) {
  const std::optional<Transfer> hold = ledger.find_transfer(id);
  EXPECT_TRUE(hold.has_value());
  return hold.value_or(Transfer{});
}

TEST(LedgerBetweenGroups, HoldDeliverSettleMovesTheMoneyOnce) {
  Region region(2);
  const AccountId payer = region.funded(0, 1000);
  const AccountId payee = region.open(1);

  const CommandResult sent = region.run(0, Region::between(payer, payee, 300));
  ASSERT_EQ(sent.code, ResultCode::ok);
  EXPECT_EQ(sent.channel_number, 0u);
  const TransferId id{sent.id};
  const Transfer hold = open_hold(region[0], id);
  EXPECT_EQ(hold.status, TransferStatus::pending);
  EXPECT_EQ(hold.credit_account_id, payee);  // the transfer names where the money goes
  EXPECT_TRUE(hold.between_groups());
  EXPECT_EQ(hold.expires_at_ns, 0u);
  EXPECT_EQ(region[0].find_account(payer)->available(), 700);
  EXPECT_EQ(region.clearing(0, 1).credits_pending, 300u);
  u32 unsettled = 0;
  region[0].for_each_unsettled([&](const Transfer& t, u32 number) {
    ++unsettled;
    EXPECT_EQ(t.id, id);
    EXPECT_EQ(number, 0u);
  });
  EXPECT_EQ(unsettled, 1u);
  region.expect_invariants();

  // Step 2, twice: the second changes nothing and answers the same.
  ASSERT_EQ(region.deliver(1, hold, 0), ResultCode::ok);
  EXPECT_EQ(region.balance(payee), 300);
  EXPECT_EQ(region.clearing(1, 0).balance(), -300);
  const u64 after_delivery = region[1].state_digest();
  EXPECT_EQ(region.deliver(1, hold, 0), ResultCode::ok);
  EXPECT_EQ(region.balance(payee), 300);
  EXPECT_NE(region[1].state_digest(), after_delivery);  // only the stamp moved on...
  EXPECT_EQ(region[1].transfers_made(), 1u);            // ...no second transfer was made

  // Step 3, twice.
  ASSERT_EQ(region.settle(0, id, 0, ResultCode::ok), ResultCode::ok);
  EXPECT_EQ(region.balance(payer), 700);
  EXPECT_EQ(region.clearing(0, 1).balance(), 300);
  EXPECT_EQ(region.clearing(0, 1).credits_pending, 0u);
  EXPECT_EQ(open_hold(region[0], id).status, TransferStatus::posted);
  EXPECT_EQ(region.settle(0, id, 0, ResultCode::ok), ResultCode::ok);
  EXPECT_EQ(region.balance(payer), 700);
  // The two clearing accounts mirror each other once settled.
  EXPECT_EQ(region.clearing(0, 1).balance() + region.clearing(1, 0).balance(), 0);
  region[0].for_each_unsettled([](const Transfer&, u32) { ADD_FAILURE() << "still unsettled"; });
  region.expect_invariants();
  region.expect_replay_equal(0);
  region.expect_replay_equal(1);
}

TEST(LedgerBetweenGroups, ARefusedDeliveryVoidsTheHoldAndSaysWhy) {
  Region region(2);
  const AccountId payer = region.funded(0, 1000);
  const AccountId euros = region.open(1, kEur);
  const AccountId missing{make_id({1, 1}, 60)};

  for (const auto& [credit, why] : {std::pair{missing, ResultCode::credit_account_not_found},
                                    std::pair{euros, ResultCode::currency_mismatch}}) {
    const CommandResult sent = region.run(0, Region::between(payer, credit, 400));
    ASSERT_EQ(sent.code, ResultCode::ok);
    const Transfer hold = open_hold(region[0], TransferId{sent.id});
    EXPECT_EQ(region.deliver(1, hold, sent.channel_number), why);
    EXPECT_EQ(region.deliver(1, hold, sent.channel_number), why);  // a repeat, the same
    EXPECT_EQ(region.settle(0, hold.id, sent.channel_number, why), why);
    EXPECT_EQ(region.settle(0, hold.id, sent.channel_number, why), why);
    const Transfer closed = open_hold(region[0], hold.id);
    EXPECT_EQ(closed.status, TransferStatus::voided);
    EXPECT_EQ(closed.refused, why);
    EXPECT_EQ(region.balance(payer), 1000);
    EXPECT_EQ(region[0].find_account(payer)->available(), 1000);
  }
  EXPECT_EQ(region.clearing(0, 1).balance(), 0);
  region.expect_invariants();
}

TEST(LedgerBetweenGroups, NoRoomOrAnOverflowRefusesWithoutMovingMoney) {
  {
    // No room here for the clearing account: refused at once, nothing held.
    Region region(2, 64, /*accounts_max=*/4);
    const AccountId payer = region.funded(0, 1000);
    region.open(0);
    region.open(0);
    const AccountId payee = region.open(1);
    EXPECT_EQ(region.run(0, Region::between(payer, payee, 10)).code, ResultCode::accounts_full);
    EXPECT_EQ(region[0].find_account(payer)->available(), 1000);
    region[0].for_each_unsettled([](const Transfer&, u32) { ADD_FAILURE() << "unsettled"; });
    region.expect_invariants();
  }
  {
    // No room there: the other group refuses, and the hold is voided.
    Region region(2, 64, /*accounts_max=*/4);
    const AccountId payer = region.funded(0, 1000);
    const AccountId payee = region.open(1);
    for (int i = 0; i < 3; ++i)
      region.open(1);
    const CommandResult sent = region.run(0, Region::between(payer, payee, 10));
    ASSERT_TRUE(sent.ok());
    const Transfer hold = open_hold(region[0], TransferId{sent.id});
    EXPECT_EQ(region.deliver(1, hold, sent.channel_number), ResultCode::accounts_full);
    EXPECT_EQ(region.settle(0, hold.id, sent.channel_number, ResultCode::accounts_full),
              ResultCode::accounts_full);
    EXPECT_EQ(region.balance(payer), 1000);
    EXPECT_EQ(region.balance(payee), 0);
    region.expect_invariants();
  }
  {
    // The credit would pass the largest amount a side may total.
    Region region(2);
    const AccountId payer = region.funded(0, 1000);
    const AccountId payee = region.funded(1, kAmountMax - 50);
    const CommandResult sent = region.run(0, Region::between(payer, payee, 100));
    ASSERT_TRUE(sent.ok());
    const Transfer hold = open_hold(region[0], TransferId{sent.id});
    EXPECT_EQ(region.deliver(1, hold, sent.channel_number), ResultCode::overflow);
    EXPECT_EQ(region.settle(0, hold.id, sent.channel_number, ResultCode::overflow),
              ResultCode::overflow);
    EXPECT_EQ(region.balance(payer), 1000);
    EXPECT_EQ(region.balance(payee), static_cast<i64>(kAmountMax - 50));
    EXPECT_EQ(region[1].find_clearing_account(0, kUsd), nullptr);  // refused before it was made
    region.expect_invariants();
  }
}

TEST(LedgerBetweenGroups, SettlingAgainAnswersUntilTheRecordIsGone) {
  Region region(2);  // recent_transfers_max 64
  const AccountId payer = region.funded(0, 1000);
  const AccountId other = region.open(0);
  const AccountId payee = region.open(1);
  const CommandResult sent = region.run(0, Region::between(payer, payee, 10));
  ASSERT_TRUE(sent.ok());
  const Transfer hold = open_hold(region[0], TransferId{sent.id});
  ASSERT_EQ(region.deliver(1, hold, sent.channel_number), ResultCode::ok);
  ASSERT_EQ(region.settle(0, hold.id, sent.channel_number, ResultCode::ok), ResultCode::ok);
  EXPECT_EQ(region.settle(0, hold.id, sent.channel_number, ResultCode::ok), ResultCode::ok);
  for (int i = 0; i < 64; ++i) {
    ASSERT_TRUE(region.run(0, Command::make_transfer(payer, other, 1, kUsd)).ok());
  }
  // Older than the recent ring: made, settled, but how is no longer held here.
  EXPECT_EQ(region.settle(0, hold.id, sent.channel_number, ResultCode::ok),
            ResultCode::outcome_expired);
  EXPECT_EQ(region.balance(payer), 1000 - 10 - 64);
  EXPECT_EQ(region.balance(payee), 10);
  region.expect_invariants();
}

TEST(LedgerBetweenGroups, RefusesWhatCannotCrossOrIsNotTheirs) {
  Region region(3);
  const AccountId payer = region.funded(0, 1000);
  const AccountId local = region.open(0);
  const AccountId payee = region.open(1);

  // Never in an atomic batch, only to a group of this region.
  std::vector<Command> batch{Region::between(payer, payee, 10)};
  EXPECT_EQ(region.atomic(0, batch), ResultCode::cross_group_transfer);
  batch[0] = Region::hold_between(payer, payee, 10);
  EXPECT_EQ(region.atomic(0, batch), ResultCode::cross_group_transfer);
  EXPECT_EQ(region.run(0, Region::between(payer, AccountId{make_id({1, 3}, 1)}, 10)).code,
            ResultCode::credit_account_not_found);  // no group 3
  EXPECT_EQ(region.run(0, Region::between(payer, AccountId{make_id({2, 1}, 1)}, 10)).code,
            ResultCode::credit_account_not_found);  // another region
  EXPECT_EQ(region.run(0, Region::between(payer, payee, 1001)).code,
            ResultCode::insufficient_funds);
  // Without the flag, another group's account is simply unknown here.
  EXPECT_EQ(region.run(0, Command::make_transfer(payer, payee, 10, kUsd)).code,
            ResultCode::credit_account_not_found);

  const CommandResult sent = region.run(0, Region::between(payer, payee, 10));
  ASSERT_EQ(sent.code, ResultCode::ok);
  const TransferId id{sent.id};
  // Only settle closes it: not a client's post or void, and no wrong number or answer.
  EXPECT_EQ(region.run(0, Command::make_post(id)).code, ResultCode::transfer_not_pending);
  EXPECT_EQ(region.run(0, Command::make_post_between_groups(id)).code,
            ResultCode::transfer_not_pending);
  EXPECT_EQ(region.run(0, Command::make_void(id)).code, ResultCode::transfer_not_pending);
  EXPECT_EQ(region.settle(0, id, sent.channel_number + 1, ResultCode::ok),
            ResultCode::invalid_command);
  EXPECT_EQ(region.settle(0, id, sent.channel_number, ResultCode::stale_delivery),
            ResultCode::invalid_command);
  Command keyed = Command::make_settle(id, sent.channel_number, ResultCode::ok);
  keyed.key = IdempotencyKey{1, 2};
  EXPECT_EQ(region.run(0, keyed).code, ResultCode::invalid_command);
  EXPECT_EQ(open_hold(region[0], id).status, TransferStatus::pending);

  // Clearing accounts move only with the transfers they serve.
  const AccountId clearing = region.clearing(0, 1).id;
  EXPECT_EQ(region.run(0, Command::make_transfer(clearing, local, 1, kUsd)).code,
            ResultCode::debit_account_not_found);
  EXPECT_EQ(region.run(0, Command::make_transfer(payer, clearing, 1, kUsd)).code,
            ResultCode::credit_account_not_found);
  // A delivery names a transfer of another group, and credits no clearing account.
  const Transfer hold = open_hold(region[0], id);
  EXPECT_EQ(
      region.run(1, Command::make_deliver(TransferId{make_id({1, 1}, 1)}, payee, 10, kUsd, 0)).code,
      ResultCode::invalid_command);
  EXPECT_EQ(
      region.run(2, Command::make_deliver(hold.id, region.clearing(0, 1).id, 10, kUsd, 0)).code,
      ResultCode::credit_account_not_found);
  region.expect_invariants();
}

TEST(LedgerBetweenGroups, ATwoPhaseHoldIsLocalUntilPostedThenSettlesWhatWasPosted) {
  Region region(2);
  const AccountId payer = region.funded(0, 1000);
  const AccountId payee = region.open(1);
  const AccountId local = region.open(0);
  const auto none_unsettled = [&] {
    region[0].for_each_unsettled([](const Transfer&, u32) { ADD_FAILURE() << "unsettled"; });
  };

  // Held here, against the clearing account, with its timeout and no channel number.
  const CommandResult made = region.run(0, Region::hold_between(payer, payee, 400, 5));
  ASSERT_EQ(made.code, ResultCode::ok);
  const TransferId id{made.id};
  Transfer hold = open_hold(region[0], id);
  EXPECT_TRUE(hold.two_phase() && hold.between_groups() && !hold.on_channel());
  EXPECT_NE(hold.expires_at_ns, 0u);
  EXPECT_EQ(region[0].find_account(payer)->available(), 600);
  EXPECT_EQ(region.clearing(0, 1).credits_pending, 400u);
  none_unsettled();
  region.expect_invariants();

  // Posted only by the caller that carries it on, and never in an atomic batch; a
  // local hold is not posted as one between groups.
  EXPECT_EQ(region.run(0, Command::make_post(id)).code, ResultCode::cross_group_transfer);
  std::vector<Command> batch{Command::make_post_between_groups(id)};
  EXPECT_EQ(region.atomic(0, batch), ResultCode::cross_group_transfer);
  const CommandResult local_hold =
      region.run(0, Command::make_hold(payer, local, 1, kUsd, /*timeout_s=*/0));
  ASSERT_TRUE(local_hold.ok());
  EXPECT_EQ(region.run(0, Command::make_post_between_groups(TransferId{local_hold.id})).code,
            ResultCode::cross_group_transfer);
  EXPECT_EQ(region.run(0, Command::make_post_between_groups(id, 401)).code,
            ResultCode::exceeds_pending_amount);

  // Posting 250 of it numbers it on the channel; from then on it neither expires nor
  // can be voided or posted again.
  const CommandResult posted = region.run(0, Command::make_post_between_groups(id, 250));
  ASSERT_EQ(posted.code, ResultCode::ok);
  EXPECT_EQ(posted.id, id.value);
  hold = open_hold(region[0], id);
  EXPECT_TRUE(hold.on_channel());
  EXPECT_EQ(hold.status, TransferStatus::pending);
  EXPECT_EQ(hold.delivery_amount(), 250u);
  EXPECT_EQ(hold.expires_at_ns, 0u);
  EXPECT_EQ(region.run(0, Command::make_void(id)).code, ResultCode::transfer_settling);
  EXPECT_EQ(region.run(0, Command::make_post_between_groups(id)).code,
            ResultCode::transfer_settling);
  region.pass(10 * kNanosPerSecond);
  EXPECT_EQ(region.run(0, Command::make_tick()).code, ResultCode::ok);
  EXPECT_EQ(open_hold(region[0], id).status, TransferStatus::pending);
  u32 unsettled = 0;
  region[0].for_each_unsettled([&](const Transfer& t, u32 number) {
    ++unsettled;
    EXPECT_EQ(t.id, id);
    EXPECT_EQ(number, posted.channel_number);
  });
  EXPECT_EQ(unsettled, 1u);
  region.restart(0);  // a hold on its way survives a snapshot
  region.expect_invariants();

  ASSERT_EQ(region.deliver(1, hold, posted.channel_number), ResultCode::ok);
  EXPECT_EQ(region.balance(payee), 250);
  ASSERT_EQ(region.settle(0, id, posted.channel_number, ResultCode::ok), ResultCode::ok);
  EXPECT_EQ(region.settle(0, id, posted.channel_number, ResultCode::ok), ResultCode::ok);
  const Transfer closed = open_hold(region[0], id);
  EXPECT_EQ(closed.status, TransferStatus::posted);
  EXPECT_EQ(closed.posted_amount, 250u);
  EXPECT_EQ(region.balance(payer), 1000 - 250);                    // the other 150 was released
  EXPECT_EQ(region[0].find_account(payer)->available(), 750 - 1);  // (the local hold of 1)
  EXPECT_EQ(region.clearing(0, 1).balance() + region.clearing(1, 0).balance(), 0);
  none_unsettled();
  region.expect_invariants();
  region.expect_replay_equal(0);
  region.expect_replay_equal(1);
}

// A two-phase hold to another group counts against its debit side's holds quota
// until it settles; an immediate transfer between groups is no hold of the merchant's.
TEST(LedgerBetweenGroups, ATwoPhaseHoldCountsAgainstTheHoldsQuotaUntilItSettles) {
  Region region(2);
  const AccountId payer = region.funded(0, 1000);
  const AccountId payee = region.open(1);
  const auto holds = [&] {
    return region[0].find_quota(MerchantId{7})->used[static_cast<u32>(Quota::holds)];
  };
  ASSERT_TRUE(
      region.run(0, Command::make_set_quota(MerchantId{7}, kQuotaUnchanged, 1, kQuotaUnchanged))
          .ok());
  const CommandResult held = region.run(0, Region::hold_between(payer, payee, 10));
  ASSERT_TRUE(held.ok());
  EXPECT_EQ(region.run(0, Region::hold_between(payer, payee, 10)).code, ResultCode::quota_holds);
  const CommandResult sent = region.run(0, Region::between(payer, payee, 5));
  ASSERT_TRUE(sent.ok());
  EXPECT_EQ(holds(), 1u);
  // Posted, it is on its way and still open: still counted until it settles.
  const CommandResult posted =
      region.run(0, Command::make_post_between_groups(TransferId{held.id}));
  ASSERT_TRUE(posted.ok());
  EXPECT_EQ(holds(), 1u);
  const Transfer hold = open_hold(region[0], TransferId{held.id});
  ASSERT_EQ(region.deliver(1, hold, posted.channel_number), ResultCode::ok);
  ASSERT_EQ(region.settle(0, hold.id, posted.channel_number, ResultCode::ok), ResultCode::ok);
  EXPECT_EQ(holds(), 0u);
  EXPECT_TRUE(region.run(0, Region::hold_between(payer, payee, 10)).ok());
  region.restart(0);
  EXPECT_EQ(holds(), 1u);
  region.expect_invariants();
  region.expect_replay_equal(0);
}

TEST(LedgerBetweenGroups, ATwoPhaseHoldIsVoidedOrExpiresHereOrIsRefusedThere) {
  Region region(2);
  const AccountId payer = region.funded(0, 1000);
  const AccountId payee = region.open(1);
  const AccountId euros = region.open(1, kEur);

  const CommandResult voided = region.run(0, Region::hold_between(payer, payee, 100));
  ASSERT_TRUE(voided.ok());
  EXPECT_EQ(region.run(0, Command::make_void(TransferId{voided.id})).code, ResultCode::ok);
  EXPECT_EQ(open_hold(region[0], TransferId{voided.id}).status, TransferStatus::voided);

  const CommandResult expiring = region.run(0, Region::hold_between(payer, payee, 100, 1));
  ASSERT_TRUE(expiring.ok());
  region.pass(2 * kNanosPerSecond);
  EXPECT_EQ(region.run(0, Command::make_post_between_groups(TransferId{expiring.id})).code,
            ResultCode::transfer_expired);

  // A settle for a hold that never went out changes nothing.
  EXPECT_EQ(region.settle(0, TransferId{voided.id}, 0, ResultCode::ok),
            ResultCode::invalid_command);

  const CommandResult refused = region.run(0, Region::hold_between(payer, euros, 100));
  ASSERT_TRUE(refused.ok());
  const CommandResult posted =
      region.run(0, Command::make_post_between_groups(TransferId{refused.id}));
  ASSERT_TRUE(posted.ok());
  const Transfer hold = open_hold(region[0], TransferId{refused.id});
  EXPECT_EQ(region.deliver(1, hold, posted.channel_number), ResultCode::currency_mismatch);
  EXPECT_EQ(region.settle(0, hold.id, posted.channel_number, ResultCode::currency_mismatch),
            ResultCode::currency_mismatch);
  const Transfer closed = open_hold(region[0], hold.id);
  EXPECT_EQ(closed.status, TransferStatus::voided);
  EXPECT_EQ(closed.refused, ResultCode::currency_mismatch);

  EXPECT_EQ(region.balance(payer), 1000);
  EXPECT_EQ(region[0].find_account(payer)->available(), 1000);
  EXPECT_EQ(region.clearing(0, 1).credits_pending, 0u);
  EXPECT_EQ(region.clearing(0, 1).balance(), 0);
  region.expect_invariants();
  region.expect_replay_equal(0);
}

TEST(LedgerBetweenGroups, AFullChannelRefusesUntilTheOldestSettles) {
  Region region(2, /*pending_max=*/kChannelWindow + 8);
  const AccountId payer = region.funded(0, 1u << 20);
  const AccountId payee = region.open(1);
  // A two-phase hold takes no number until posted, so it does not fill the channel.
  const CommandResult waiting = region.run(0, Region::hold_between(payer, payee, 5));
  ASSERT_TRUE(waiting.ok());
  std::vector<CommandResult> sent;
  for (u32 i = 0; i < kChannelWindow; ++i) {
    sent.push_back(region.run(0, Region::between(payer, payee, 1)));
    ASSERT_EQ(sent.back().code, ResultCode::ok);
  }
  EXPECT_EQ(region.run(0, Region::between(payer, payee, 1)).code,
            ResultCode::pending_transfers_full);
  // Nor can it be posted now: refused, and it stays an ordinary hold that may be voided.
  EXPECT_EQ(region.run(0, Command::make_post_between_groups(TransferId{waiting.id})).code,
            ResultCode::pending_transfers_full);
  EXPECT_FALSE(open_hold(region[0], TransferId{waiting.id}).on_channel());
  region.expect_invariants();
  const u64 held = region[0].find_account(payer)->debits_pending;
  EXPECT_EQ(region.run(0, Command::make_void(TransferId{waiting.id})).code, ResultCode::ok);
  EXPECT_EQ(region[0].find_account(payer)->debits_pending, held - 5);
  // Settling a later one does not make room; settling the oldest does.
  const auto complete = [&](const CommandResult& r) {
    const Transfer hold = open_hold(region[0], TransferId{r.id});
    ASSERT_EQ(region.deliver(1, hold, r.channel_number), ResultCode::ok);
    ASSERT_EQ(region.settle(0, hold.id, r.channel_number, ResultCode::ok), ResultCode::ok);
  };
  complete(sent[1]);
  EXPECT_EQ(region.run(0, Region::between(payer, payee, 1)).code,
            ResultCode::pending_transfers_full);
  complete(sent[0]);
  const CommandResult next = region.run(0, Region::between(payer, payee, 1));
  ASSERT_EQ(next.code, ResultCode::ok);
  EXPECT_EQ(next.channel_number, kChannelWindow);
  // The slot of number 0 now serves number kChannelWindow: a late copy of number 0's
  // delivery is stale and changes nothing.
  complete(next);
  const Transfer first{.id = TransferId{sent[0].id},
                       .debit_account_id = payer,
                       .credit_account_id = payee,
                       .amount = 1,
                       .currency = kUsd};
  const i64 before = region.balance(payee);
  EXPECT_EQ(region.deliver(1, first, 0), ResultCode::stale_delivery);
  EXPECT_EQ(region.balance(payee), before);
  region.expect_invariants();
}

TEST(LedgerBetweenGroups, UnsettledTransfersSurviveASnapshotAndFinishAfter) {
  Region region(2);
  const AccountId payer = region.funded(0, 1000);
  const AccountId payee = region.open(1);
  const CommandResult a = region.run(0, Region::between(payer, payee, 100));
  const CommandResult b = region.run(0, Region::between(payer, payee, 200));
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(region.deliver(1, open_hold(region[0], TransferId{a.id}), a.channel_number),
            ResultCode::ok);
  region.restart(0);
  region.restart(1);

  // What a restart does: deliver and settle every unsettled transfer again.
  std::vector<std::pair<Transfer, u32>> unsettled;
  region[0].for_each_unsettled([&](const Transfer& t, u32 n) { unsettled.push_back({t, n}); });
  ASSERT_EQ(unsettled.size(), 2u);
  for (const auto& [hold, number] : unsettled) {
    const ResultCode delivered = region.deliver(1, hold, number);
    EXPECT_EQ(delivered, ResultCode::ok);
    EXPECT_EQ(region.settle(0, hold.id, number, delivered), ResultCode::ok);
  }
  EXPECT_EQ(region.balance(payee), 300);  // a's delivery was not made twice
  EXPECT_EQ(region.balance(payer), 700);
  region.expect_invariants();

  // A state with channels to two groups does not load where only one is configured.
  const std::vector<unsigned char> state = saved_state(region[0]);
  Ledger alone(LedgerConfig{.prefix = {1, 0},
                            .accounts_max = 64,
                            .pending_max = 64,
                            .recent_transfers_max = 64,
                            .idempotency_keys_max = 16,
                            .idempotency_window_ns = 100 * kNanosPerSecond});
  BytesSource source(state);
  const Status loaded = alone.load(source);
  EXPECT_EQ(loaded.code(), StatusCode::invalid_config);
  EXPECT_NE(loaded.message().find("configured"), std::string::npos) << loaded.to_string();
}

// Randomized: transfers inside and between three groups, with the steps between
// groups delivered late, out of order, twice, or lost (a crash) and redone from what
// the ledgers hold, and snapshots taken and reloaded at random. A plain map of
// balances is the reference. After every run: each ledger's invariants, every
// balance, the clearing accounts mirroring each other, and replay giving the same.
TEST(LedgerBetweenGroups, RandomizedAgainstAPlainMap) {
  for (u64 seed : {11u, 12u, 13u}) {
    SCOPED_TRACE(seed);
    std::mt19937_64 random(seed);
    const auto below = [&](u64 n) { return random() % n; };
    constexpr u32 kGroups = 3;
    Region region(kGroups, /*pending_max=*/4096);

    std::vector<AccountId> accounts;  // USD user accounts, funded
    std::map<u64, i64> balance;       // the reference: posted balances
    std::map<u64, i64> held;          // ... and what is held on the debit side
    for (u32 g = 0; g < kGroups; ++g) {
      for (int i = 0; i < 4; ++i) {
        accounts.push_back(region.funded(g, 1000));
        balance[accounts.back().value] = 1000;
      }
    }
    // Credits that every delivery refuses: an unknown account, another currency.
    std::vector<AccountId> refusing{AccountId{make_id({1, 1}, 63)}, region.open(2, kEur)};

    struct Message {
      u32 from, to;
      TransferId id;
      AccountId debit, credit;
      u64 amount;  // what is delivered
      u64 held;    // what the hold holds (more than amount for a part posted)
      u32 number;
      ResultCode delivery = ResultCode::ok;  // back wire: what the delivery said
    };
    // Two-phase holds between groups not yet posted: they may be voided or expire.
    struct OpenHold {
      AccountId debit, credit;
      u64 amount;
      u64 expires_at_ns;  // 0: never
      bool refusing;
    };
    std::map<u64, OpenHold> two_phase;
    // Runs a command in group g, first expiring in the reference what the ledger will
    // expire before it (a group expires its holds when it next runs a command).
    const auto run = [&](u32 g, const Command& command) {
      const u64 at = region.next_command_ns();
      for (auto it = two_phase.begin(); it != two_phase.end();) {
        const OpenHold& h = it->second;
        if (id_prefix(h.debit.value).group == g && h.expires_at_ns != 0 && h.expires_at_ns <= at) {
          held[h.debit.value] -= static_cast<i64>(h.amount);
          it = two_phase.erase(it);
        } else {
          ++it;
        }
      }
      return region.run(g, command);
    };
    std::vector<Message> wire, back;           // deliveries and settlements in flight
    std::map<u64, ResultCode> first_delivery;  // transfer id → what it first answered
    std::map<u64, bool> settled;
    u64 expected_refusals = 0, refusals = 0;

    // Sometimes a copy is left behind: it will come again.
    const auto take = [&](std::vector<Message>& from) {
      return take_one(from, random, /*leave_copy=*/below(4) == 0);
    };
    const auto redo_unsettled = [&] {
      for (u32 g = 0; g < kGroups; ++g) {
        region[g].for_each_unsettled([&](const Transfer& t, u32 number) {
          wire.push_back(Message{g, id_prefix(t.credit_account_id.value).group, t.id,
                                 t.debit_account_id, t.credit_account_id, t.delivery_amount(),
                                 t.amount, number});
        });
      }
    };
    const auto deliver = [&](const Message& m) {
      const ResultCode code =
          run(m.to, Command::make_deliver(m.id, m.credit, m.amount, kUsd, m.number)).code;
      if (code == ResultCode::stale_delivery) {
        // Only a late copy of one settled long ago (a window of numbers since).
        ASSERT_TRUE(settled[m.id.value]);
        return;
      }
      const auto [first, inserted] = first_delivery.try_emplace(m.id.value, code);
      if (!inserted) {
        ASSERT_EQ(code, first->second) << "a repeated delivery answered differently";
      } else if (code == ResultCode::ok) {
        balance[m.credit.value] += static_cast<i64>(m.amount);
      } else {
        ++refusals;
      }
      Message answer = m;
      answer.delivery = code;
      back.push_back(answer);
    };
    const auto settle = [&](const Message& m) {
      const ResultCode code = run(m.from, Command::make_settle(m.id, m.number, m.delivery)).code;
      if (code == ResultCode::outcome_expired) {
        // Settled before, and its record has left the recent ring since.
        ASSERT_TRUE(settled[m.id.value]);
        return;
      }
      ASSERT_EQ(code, m.delivery);
      if (!settled[m.id.value]) {
        settled[m.id.value] = true;
        held[m.debit.value] -= static_cast<i64>(m.held);
        if (code == ResultCode::ok) balance[m.debit.value] -= static_cast<i64>(m.amount);
      }
    };

    for (int step = 0; step < 20000 && !::testing::Test::HasFatalFailure(); ++step) {
      const u64 roll = below(1000);
      if (roll < 300) {
        // Between groups.
        const AccountId debit = accounts[below(accounts.size())];
        const u32 from = id_prefix(debit.value).group;
        const bool refuse = below(10) == 0;
        AccountId credit =
            refuse ? refusing[below(refusing.size())] : accounts[below(accounts.size())];
        if (id_prefix(credit.value).group == from) continue;
        const u64 amount = 1 + below(300);
        const bool hold = below(3) == 0;
        const u32 timeout_s = hold ? static_cast<u32>(below(4)) : 0;
        const u64 expires_at_ns =
            timeout_s == 0 ? 0 : region.next_command_ns() + u64{timeout_s} * kNanosPerSecond;
        const CommandResult sent =
            run(from, hold ? Region::hold_between(debit, credit, amount, timeout_s)
                           : Region::between(debit, credit, amount));
        const i64 available = balance[debit.value] - held[debit.value];
        if (static_cast<i64>(amount) > available) {
          ASSERT_EQ(sent.code, ResultCode::insufficient_funds);
          continue;
        }
        if (sent.code == ResultCode::pending_transfers_full) continue;  // a full channel
        ASSERT_EQ(sent.code, ResultCode::ok);
        held[debit.value] += static_cast<i64>(amount);
        if (hold) {
          two_phase[sent.id] = OpenHold{debit, credit, amount, expires_at_ns, refuse};
          continue;
        }
        if (refuse) ++expected_refusals;
        wire.push_back(Message{from, id_prefix(credit.value).group, TransferId{sent.id}, debit,
                               credit, amount, amount, sent.channel_number});
      } else if (roll < 380) {
        // A two-phase hold between groups: post all or part of it, or void it.
        if (two_phase.empty()) continue;
        auto it = two_phase.begin();
        std::advance(it, below(two_phase.size()));
        const u64 id = it->first;
        const OpenHold h = it->second;
        const u32 from = id_prefix(h.debit.value).group;
        const bool post = below(4) != 0;
        const u64 amount = below(2) == 0 ? h.amount : 1 + below(h.amount);
        const CommandResult r =
            run(from, post ? Command::make_post_between_groups(TransferId{id},
                                                               amount == h.amount ? 0 : amount)
                           : Command::make_void(TransferId{id}));
        if (!two_phase.contains(id)) {  // it expired just before
          ASSERT_EQ(r.code, ResultCode::transfer_expired);
          continue;
        }
        if (r.code == ResultCode::pending_transfers_full) continue;  // a full channel
        ASSERT_EQ(r.code, ResultCode::ok);
        two_phase.erase(id);
        if (!post) {
          held[h.debit.value] -= static_cast<i64>(h.amount);
          continue;
        }
        // On its way now: neither void nor post again, nor expiry, can touch it.
        ASSERT_EQ(run(from, Command::make_void(TransferId{id})).code,
                  ResultCode::transfer_settling);
        if (h.refusing) ++expected_refusals;
        wire.push_back(Message{from, id_prefix(h.credit.value).group, TransferId{id}, h.debit,
                               h.credit, amount, h.amount, r.channel_number});
      } else if (roll < 450) {
        // Inside one group.
        const AccountId debit = accounts[below(accounts.size())];
        const u32 g = id_prefix(debit.value).group;
        const AccountId credit = accounts[g * 4 + below(4)];
        if (credit == debit) continue;
        const u64 amount = 1 + below(300);
        const CommandResult r = run(g, Command::make_transfer(debit, credit, amount, kUsd));
        if (static_cast<i64>(amount) > balance[debit.value] - held[debit.value]) {
          ASSERT_EQ(r.code, ResultCode::insufficient_funds);
          continue;
        }
        ASSERT_EQ(r.code, ResultCode::ok);
        balance[debit.value] -= static_cast<i64>(amount);
        balance[credit.value] += static_cast<i64>(amount);
      } else if (roll < 700) {
        if (!wire.empty()) deliver(take(wire));
      } else if (roll < 980) {
        if (!back.empty()) settle(take(back));
      } else if (roll < 995) {
        // A crash: whatever was in flight is lost, and restarts redo it from the ledgers.
        wire.clear();
        back.clear();
        redo_unsettled();
      } else {
        region.restart(static_cast<u32>(below(kGroups)));
      }
    }
    if (::testing::Test::HasFatalFailure()) return;

    // Void the holds never posted, then finish everything, the way a restart does.
    while (!two_phase.empty() && !::testing::Test::HasFatalFailure()) {
      const auto [id, h] = *two_phase.begin();
      const ResultCode code =
          run(id_prefix(h.debit.value).group, Command::make_void(TransferId{id})).code;
      if (two_phase.contains(id)) {
        ASSERT_EQ(code, ResultCode::ok);
        held[h.debit.value] -= static_cast<i64>(h.amount);
        two_phase.erase(id);
      } else {
        ASSERT_EQ(code, ResultCode::transfer_expired);
      }
    }
    wire.clear();
    back.clear();
    redo_unsettled();
    while (!wire.empty() || !back.empty()) {
      if (!wire.empty()) {
        const Message m = wire.back();
        wire.pop_back();
        deliver(m);
      }
      if (!back.empty()) {
        const Message m = back.back();
        back.pop_back();
        settle(m);
      }
      if (::testing::Test::HasFatalFailure()) return;
    }
    for (u32 g = 0; g < kGroups; ++g) {
      region[g].for_each_unsettled([](const Transfer&, u32) { ADD_FAILURE() << "unsettled"; });
    }
    EXPECT_EQ(refusals, expected_refusals);
    EXPECT_GT(first_delivery.size(), 1000u);
    for (const AccountId account : accounts) {
      EXPECT_EQ(region.balance(account), balance[account.value]) << account.value;
      EXPECT_EQ(held[account.value], 0);
    }
    for (u32 g = 0; g < kGroups; ++g) {
      for (u32 h = g + 1; h < kGroups; ++h) {
        EXPECT_EQ(region.clearing(g, h).balance() + region.clearing(h, g).balance(), 0);
      }
    }
    region.expect_invariants();
    for (u32 g = 0; g < kGroups; ++g)
      region.expect_replay_equal(g);
  }
}

// ---------------------------------------------------------------------------
// Orders paid and refunded between groups (docs/ORDERS.md, "Between groups")

u64 create_order(Region& region, u32 g, AccountId account, u64 amount, u32 expires_in_s = 60) {
  static u64 ref = 0;
  const CommandResult made =
      region.run(g, Command::make_order_create(account, amount, kUsd, expires_in_s, ++ref * 2 + 1));
  EXPECT_EQ(made.code, ResultCode::ok);
  return made.id;
}
Command pay(u64 order, AccountId payer, u64 amount) {
  return Command::make_order(CommandKind::order_pay, order, payer, amount,
                             static_cast<u8>(OrderMethod::wallet));
}

TEST(LedgerBetweenGroups, AWalletPaysAnOrderOfAnotherGroupOnceWithItsTransition) {
  Region region(2);
  const AccountId payer = region.funded(0, 1000);
  const AccountId shop = region.open(1);
  const u64 order = create_order(region, 1, shop, 300);

  // Step 1, in the payer's group: held toward the order's group, naming the order.
  const CommandResult sent = region.run(0, pay(order, payer, 300));
  ASSERT_EQ(sent.code, ResultCode::ok);
  const Transfer hold = open_hold(region[0], TransferId{sent.id});
  EXPECT_TRUE(hold.pays_order());
  EXPECT_EQ(hold.paid_order(), order);
  EXPECT_EQ(hold.debit_account_id, payer);
  EXPECT_EQ(region[0].find_account(payer)->available(), 700);
  EXPECT_EQ(region[1].find_order(order)->status, OrderStatus::created);
  region.expect_invariants();
  // Only settle ends it: not the payer's void or post.
  EXPECT_EQ(region.run(0, Command::make_void(hold.id)).code, ResultCode::awaits_provider);
  EXPECT_EQ(region.run(0, Command::make_post(hold.id)).code, ResultCode::awaits_provider);
  // A snapshot between the steps keeps everything the next ones need.
  region.restart(0);
  region.restart(1);

  // Step 2, twice: the order is paid and its merchant credited in one command, once.
  ASSERT_EQ(region.deliver(1, hold, sent.channel_number), ResultCode::ok);
  const Order paid = *region[1].find_order(order);
  EXPECT_EQ(paid.status, OrderStatus::success);
  EXPECT_EQ(paid.method, OrderMethod::wallet);
  EXPECT_EQ(paid.payer_account, payer);
  EXPECT_NE(paid.transfer_id.value, 0u);
  EXPECT_EQ(region.balance(shop), 300);
  EXPECT_EQ(region.deliver(1, hold, sent.channel_number), ResultCode::ok);
  EXPECT_EQ(region.balance(shop), 300);
  EXPECT_EQ(region[1].find_order(order)->transfer_id, paid.transfer_id);

  // Step 3, twice.
  ASSERT_EQ(region.settle(0, hold.id, sent.channel_number, ResultCode::ok), ResultCode::ok);
  EXPECT_EQ(region.settle(0, hold.id, sent.channel_number, ResultCode::ok), ResultCode::ok);
  EXPECT_EQ(region.balance(payer), 700);
  EXPECT_EQ(open_hold(region[0], hold.id).status, TransferStatus::posted);
  EXPECT_EQ(region.clearing(0, 1).balance() + region.clearing(1, 0).balance(), 0);
  // A second payment of the paid order is refused there, and its money comes back.
  const CommandResult again = region.run(0, pay(order, payer, 300));
  ASSERT_EQ(again.code, ResultCode::ok);
  const Transfer second = open_hold(region[0], TransferId{again.id});
  EXPECT_EQ(region.deliver(1, second, again.channel_number), ResultCode::invalid_order_state);
  EXPECT_EQ(region.settle(0, second.id, again.channel_number, ResultCode::invalid_order_state),
            ResultCode::invalid_order_state);
  EXPECT_EQ(region.balance(payer), 700);
  EXPECT_EQ(region.balance(shop), 300);
  EXPECT_EQ(open_hold(region[0], second.id).refused, ResultCode::invalid_order_state);
  region.expect_invariants();
  region.expect_replay_equal(0);
  region.expect_replay_equal(1);
}

TEST(LedgerBetweenGroups, AnOrderThatCannotTakeThePaymentRefusesItAndThePayerIsRepaid) {
  Region region(3);
  const AccountId payer = region.funded(0, 1000);
  const AccountId euros = region.funded(0, 1000, kEur);
  const AccountId shop = region.open(1);
  const u64 cancelled = create_order(region, 1, shop, 100);
  ASSERT_EQ(region.run(1, Command::make_order(CommandKind::order_cancel, cancelled)).code,
            ResultCode::ok);
  const u64 expiring = create_order(region, 1, shop, 100, /*expires_in_s=*/1);
  const u64 open = create_order(region, 1, shop, 100);
  const u64 unknown = make_id({1, 1}, 999);

  struct Case {
    u64 order;
    AccountId from;
    u64 amount;
    ResultCode why;
  };
  const Case cases[] = {
      {cancelled, payer, 100, ResultCode::invalid_order_state},
      {expiring, payer, 100, ResultCode::invalid_order_state},  // timed out first
      {unknown, payer, 100, ResultCode::order_not_found},
      {open, payer, 99, ResultCode::invalid_amount},  // not what the order asks
      {open, euros, 100, ResultCode::currency_mismatch},
  };
  for (const Case& c : cases) {
    const CommandResult sent = region.run(0, pay(c.order, c.from, c.amount));
    ASSERT_EQ(sent.code, ResultCode::ok);
    if (c.order == expiring) region.pass(2 * kNanosPerSecond);
    const Transfer hold = open_hold(region[0], TransferId{sent.id});
    EXPECT_EQ(region.deliver(1, hold, sent.channel_number), c.why);
    EXPECT_EQ(region.settle(0, hold.id, sent.channel_number, c.why), c.why);
  }
  EXPECT_EQ(region.balance(payer), 1000);
  EXPECT_EQ(region.balance(euros), 1000);
  EXPECT_EQ(region.balance(shop), 0);
  EXPECT_EQ(region[1].find_order(open)->status, OrderStatus::created);
  EXPECT_EQ(region[1].find_order(expiring)->status, OrderStatus::timeout);

  // Refused in the payer's group: nothing held.
  EXPECT_EQ(region.run(0, pay(open, payer, 1001)).code, ResultCode::insufficient_funds);
  EXPECT_EQ(region.run(0, pay(open, AccountId{make_id({1, 0}, 60)}, 100)).code,
            ResultCode::debit_account_not_found);
  EXPECT_EQ(region.run(0, pay(make_id({1, 5}, 1), payer, 100)).code,
            ResultCode::order_not_found);  // no such group
  Command by_balance = pay(open, payer, 100);
  by_balance.order.action = static_cast<u8>(OrderMethod::balance);
  EXPECT_EQ(region.run(0, by_balance).code, ResultCode::invalid_command);
  EXPECT_EQ(region[0].find_account(payer)->available(), 1000);
  // A delivery whose payer is not in the sending group is malformed: refused.
  const CommandResult sent = region.run(0, pay(open, payer, 100));
  ASSERT_EQ(sent.code, ResultCode::ok);
  const Transfer hold = open_hold(region[0], TransferId{sent.id});
  EXPECT_EQ(region
                .run(1, Command::make_order_deliver(hold.id, open, AccountId{make_id({1, 2}, 1)},
                                                    100, kUsd, sent.channel_number))
                .code,
            ResultCode::invalid_command);
  EXPECT_EQ(region[1].find_order(open)->status, OrderStatus::created);
  region.expect_invariants();
  for (u32 g = 0; g < 2; ++g)
    region.expect_replay_equal(g);
}

TEST(LedgerBetweenGroups, ARefundToAWalletElsewhereIsCarriedAndARefusedOneIsUncounted) {
  Region region(2);
  const AccountId payer = region.funded(0, 1000);
  const AccountId shop = region.open(1);
  const u64 order = create_order(region, 1, shop, 300);
  const CommandResult sent = region.run(0, pay(order, payer, 300));
  ASSERT_EQ(region.deliver(1, open_hold(region[0], TransferId{sent.id}), sent.channel_number),
            ResultCode::ok);
  ASSERT_EQ(region.settle(0, TransferId{sent.id}, sent.channel_number, ResultCode::ok),
            ResultCode::ok);

  // A part refunded: held on the merchant's account toward the payer's group, counted
  // on the order at once (so no second refund can exceed what is left).
  const Command refund = Command::make_order(CommandKind::order_refund, order, {}, 100);
  const CommandResult back = region.run(1, refund);
  ASSERT_EQ(back.code, ResultCode::ok);
  const Transfer hold = open_hold(region[1], TransferId{back.id});
  EXPECT_TRUE(hold.order_refund());
  EXPECT_EQ(hold.refunded_order(), order);
  EXPECT_EQ(hold.credit_account_id, payer);
  EXPECT_EQ(region[1].find_order(order)->amount_refunded, 100u);
  EXPECT_EQ(region[1].find_account(shop)->available(), 200);
  EXPECT_EQ(region.run(1, Command::make_order(CommandKind::order_refund, order, {}, 201)).code,
            ResultCode::refund_exceeds_order);
  region.expect_invariants();
  region.restart(1);
  ASSERT_EQ(region.deliver(0, hold, back.channel_number), ResultCode::ok);
  ASSERT_EQ(region.settle(1, hold.id, back.channel_number, ResultCode::ok), ResultCode::ok);
  EXPECT_EQ(region.balance(payer), 800);
  EXPECT_EQ(region.balance(shop), 200);
  EXPECT_EQ(open_hold(region[1], hold.id).status, TransferStatus::posted);

  // The rest, refused by the payer's group (as only a broken or overflowing account
  // would): the money comes back to the merchant and the order no longer counts it.
  const CommandResult rest = region.run(1, Command::make_order(CommandKind::order_refund, order));
  ASSERT_EQ(rest.code, ResultCode::ok);
  EXPECT_EQ(region[1].find_order(order)->amount_refunded, 300u);
  region.expect_invariants();
  ASSERT_EQ(region.settle(1, TransferId{rest.id}, rest.channel_number, ResultCode::overflow),
            ResultCode::overflow);
  EXPECT_EQ(region[1].find_order(order)->amount_refunded, 100u);
  EXPECT_EQ(region.balance(shop), 200);
  EXPECT_EQ(region.balance(payer), 800);
  EXPECT_EQ(region.clearing(0, 1).balance() + region.clearing(1, 0).balance(), 0);
  region.expect_invariants();
  region.expect_replay_equal(0);
  region.expect_replay_equal(1);
}

// Randomized: wallets pay orders of other groups and are refunded, every step
// between groups delivered late, twice, out of order or lost (redone from what the
// ledgers hold), orders cancelled or expiring meanwhile, refunds refused now and then,
// groups reloaded from snapshots. The reference is a plain model of balances, holds
// and orders; after the run every balance, hold and order agrees with it, the clearing
// accounts mirror each other, the invariants hold and replay gives the same states.
TEST(LedgerBetweenGroups, RandomOrderPaymentsAndRefundsBetweenGroupsAgainstAModel) {
  for (u64 seed : {21u, 22u, 23u}) {
    SCOPED_TRACE(seed);
    std::mt19937_64 random(seed);
    const auto below = [&](u64 n) { return random() % n; };
    constexpr u32 kGroups = 3;
    Region region(kGroups, /*pending_max=*/1024);
    std::map<u64, i64> balance, held;  // the reference, by account
    std::vector<AccountId> wallets, shops;
    for (u32 g = 0; g < kGroups; ++g) {
      for (int i = 0; i < 3; ++i) {
        wallets.push_back(region.funded(g, 20000));
        balance[wallets.back().value] = 20000;
      }
      shops.push_back(region.open(g));
    }
    struct ModelOrder {
      AccountId shop;
      u64 amount = 0;
      u64 expires_at_ns = 0;
      OrderStatus status = OrderStatus::created;
      AccountId payer;
      u64 refunded = 0;
    };
    std::map<u64, ModelOrder> orders;
    std::vector<u64> order_ids;
    // A step between groups in flight: a payment (wallet → order) or a refund (order's
    // shop → wallet), as the hold's group numbered it.
    struct Message {
      u32 from, to;
      TransferId id;
      u32 number;
      u64 order;
      u64 amount;
      bool refund;
      AccountId debit;  // the wallet (payment) or the shop (refund)
      ResultCode delivery = ResultCode::ok;
    };
    std::vector<Message> wire, back;
    std::map<u64, ResultCode> first_delivery;
    std::map<u64, bool> settled;
    const auto group_of = [](u64 id) { return id_prefix(id).group; };
    // Orders of group g past their expiry before its next command time out (as the
    // ledger does before applying it).
    const auto run = [&](u32 g, const Command& command) {
      const u64 at = region.next_command_ns();
      for (auto& [id, o] : orders) {
        if (group_of(id) == g && o.status == OrderStatus::created && o.expires_at_ns <= at) {
          o.status = OrderStatus::timeout;
        }
      }
      return region.run(g, command);
    };
    const auto take = [&](std::vector<Message>& from, bool leave_copy) {
      return take_one(from, random, leave_copy);
    };
    const auto deliver = [&](const Message& m) {
      ResultCode code;
      if (m.refund) {
        code =
            run(m.to, Command::make_deliver(m.id, orders[m.order].payer, m.amount, kUsd, m.number))
                .code;
      } else {
        code =
            run(m.to, Command::make_order_deliver(m.id, m.order, m.debit, m.amount, kUsd, m.number))
                .code;
      }
      if (code == ResultCode::stale_delivery) {
        ASSERT_TRUE(settled[m.id.value]);
        return;
      }
      const auto [first, fresh] = first_delivery.try_emplace(m.id.value, code);
      if (!fresh) {
        ASSERT_EQ(code, first->second) << "a repeated delivery answered differently";
      } else if (m.refund) {
        ASSERT_EQ(code, ResultCode::ok);
        balance[orders[m.order].payer.value] += static_cast<i64>(m.amount);
      } else {
        ModelOrder& o = orders[m.order];
        const ResultCode expected = o.status != OrderStatus::created
                                        ? ResultCode::invalid_order_state
                                    : o.amount != m.amount ? ResultCode::invalid_amount
                                                           : ResultCode::ok;
        ASSERT_EQ(code, expected);
        if (code == ResultCode::ok) {
          o.status = OrderStatus::success;
          o.payer = m.debit;
          balance[o.shop.value] += static_cast<i64>(m.amount);
        }
      }
      Message answer = m;
      answer.delivery = code;
      back.push_back(answer);
    };
    const auto settle = [&](const Message& m) {
      const ResultCode code = run(m.from, Command::make_settle(m.id, m.number, m.delivery)).code;
      if (code == ResultCode::outcome_expired) {
        ASSERT_TRUE(settled[m.id.value]);
        return;
      }
      ASSERT_EQ(code, m.delivery);
      if (settled[m.id.value]) return;
      settled[m.id.value] = true;
      held[m.debit.value] -= static_cast<i64>(m.amount);
      if (code == ResultCode::ok) {
        balance[m.debit.value] -= static_cast<i64>(m.amount);
      } else if (m.refund) {
        orders[m.order].refunded -= m.amount;  // came back: no longer counted
      }
    };

    // What the ledgers hold unsettled, carried again (a refund refused before the crash
    // is answered so again: the refusal is the one answer its number ever has).
    const auto redo_unsettled = [&] {
      for (u32 g = 0; g < kGroups; ++g) {
        region[g].for_each_unsettled([&](const Transfer& t, u32 number) {
          const bool refund = t.order_refund();
          const u64 order = refund ? t.refunded_order() : t.paid_order();
          const auto refused = first_delivery.find(t.id.value);
          if (refused != first_delivery.end() && refused->second == ResultCode::overflow) {
            back.push_back(Message{g, 0, t.id, number, order, t.amount, refund, t.debit_account_id,
                                   ResultCode::overflow});
            return;
          }
          wire.push_back(Message{g, refund ? group_of(t.credit_account_id.value) : group_of(order),
                                 t.id, number, order, t.amount, refund, t.debit_account_id});
        });
      }
    };

    for (int step = 0; step < 4000 && !::testing::Test::HasFatalFailure(); ++step) {
      const u64 roll = below(1000);
      if (roll < 120 || order_ids.empty()) {
        const u32 g = static_cast<u32>(below(kGroups));
        const u64 amount = 1 + below(300);
        const u32 expires_in_s = static_cast<u32>(1 + below(6));
        const u64 at = region.next_command_ns();
        const CommandResult made =
            run(g, Command::make_order_create(shops[g], amount, kUsd, expires_in_s, 0));
        ASSERT_EQ(made.code, ResultCode::ok);
        ModelOrder& o = orders[made.id];
        o.shop = shops[g];
        o.amount = amount;
        o.expires_at_ns = at + expires_in_s * kNanosPerSecond;
        order_ids.push_back(made.id);
      } else if (roll < 400 && wire.size() + back.size() < 200) {
        // A wallet of another group pays an order (mostly a recent one), mostly its amount.
        const u64 order =
            order_ids[order_ids.size() - 1 - below(std::min<std::size_t>(order_ids.size(), 8))];
        AccountId wallet = wallets[below(wallets.size())];
        while (group_of(wallet.value) == group_of(order))
          wallet = wallets[below(wallets.size())];
        const u64 amount = below(10) != 0 ? orders[order].amount : 1 + below(300);
        const u32 g = group_of(wallet.value);
        const CommandResult sent = run(g, pay(order, wallet, amount));
        const i64 available = balance[wallet.value] - held[wallet.value];
        if (available < static_cast<i64>(amount)) {
          ASSERT_EQ(sent.code, ResultCode::insufficient_funds);
          continue;
        }
        ASSERT_EQ(sent.code, ResultCode::ok);
        held[wallet.value] += static_cast<i64>(amount);
        wire.push_back(Message{g, group_of(order), TransferId{sent.id}, sent.channel_number, order,
                               amount, false, wallet});
      } else if (roll < 460) {
        const u64 order = order_ids[below(order_ids.size())];
        const CommandResult cancelled =
            run(group_of(order), Command::make_order(CommandKind::order_cancel, order));
        ModelOrder& o = orders[order];
        ASSERT_EQ(cancelled.ok(), !is_final(o.status));
        if (cancelled.ok()) o.status = OrderStatus::cancelled;
      } else if (roll < 560 && wire.size() + back.size() < 200) {
        // A refund of a paid order, in part or the rest.
        const u64 order = order_ids[below(order_ids.size())];
        ModelOrder& o = orders[order];
        const u64 left = o.amount - o.refunded;
        const u64 amount = below(2) == 0 || left == 0 ? 0 : 1 + below(left);
        const u32 g = group_of(order);
        const CommandResult sent =
            run(g, Command::make_order(CommandKind::order_refund, order, {}, amount));
        const u64 wanted = amount == 0 ? left : amount;
        const i64 available = balance[o.shop.value] - held[o.shop.value];
        const ResultCode expected =
            o.status != OrderStatus::success       ? ResultCode::invalid_order_state
            : wanted == 0                          ? ResultCode::refund_exceeds_order
            : available < static_cast<i64>(wanted) ? ResultCode::insufficient_funds
                                                   : ResultCode::ok;
        ASSERT_EQ(sent.code, expected);
        if (!sent.ok()) continue;
        o.refunded += wanted;
        held[o.shop.value] += static_cast<i64>(wanted);
        wire.push_back(Message{g, group_of(o.payer.value), TransferId{sent.id}, sent.channel_number,
                               order, wanted, true, o.shop});
      } else if (roll < 760 && !wire.empty()) {
        Message m = take(wire, below(4) == 0);
        if (m.refund && below(10) == 0 && !first_delivery.contains(m.id.value)) {
          // The payer's group refuses it (only an account at its limit could): every
          // copy is dropped, the answer goes back.
          std::erase_if(wire, [&](const Message& w) { return w.id == m.id; });
          first_delivery[m.id.value] = ResultCode::overflow;
          m.delivery = ResultCode::overflow;
          back.push_back(m);
        } else {
          deliver(m);
        }
      } else if (roll < 940 && !back.empty()) {
        settle(take(back, below(4) == 0));
      } else if (roll < 980) {
        region.pass(below(1500) * kNanosPerSecond / 1000);
      } else {
        // A crash: whatever was in flight is lost, and redone from the ledgers; a group
        // is reloaded from its snapshot.
        wire.clear();
        back.clear();
        region.restart(static_cast<u32>(below(kGroups)));
        redo_unsettled();
      }
      if (step % 500 == 0) region.expect_invariants();
    }
    // Finish everything in flight, the way a restart does.
    for (int round = 0; round < 3 && !::testing::Test::HasFatalFailure(); ++round) {
      while (!wire.empty())
        deliver(take(wire, false));
      while (!back.empty())
        settle(take(back, false));
      redo_unsettled();
    }
    ASSERT_TRUE(wire.empty() && back.empty());
    u64 paid = 0, refunded = 0;
    for (const auto& [id, o] : orders) {
      const Order* order = region[group_of(id)].find_order(id);
      ASSERT_NE(order, nullptr);
      EXPECT_EQ(order->status, o.status) << id;
      EXPECT_EQ(order->amount_refunded, o.refunded) << id;
      if (o.status == OrderStatus::success) {
        EXPECT_EQ(order->payer_account, o.payer);
        ++paid;
        refunded += o.refunded != 0;
      }
    }
    for (const auto& [account, expected] : balance) {
      const AccountId id{account};
      EXPECT_EQ(region.balance(id), expected) << account;
      const Account* found = region[group_of(account)].find_account(id);
      EXPECT_EQ(found->balance() - found->available(), held[account]) << account;
      EXPECT_EQ(held[account], 0) << account;
    }
    for (u32 a = 0; a < kGroups; ++a) {
      for (u32 b = a + 1; b < kGroups; ++b) {
        const Account* ab = region[a].find_clearing_account(b, kUsd);
        const Account* ba = region[b].find_clearing_account(a, kUsd);
        EXPECT_EQ((ab ? ab->balance() : 0) + (ba ? ba->balance() : 0), 0);
      }
    }
    EXPECT_GT(paid, 20u) << "the run paid too few orders to say much";
    EXPECT_GT(refunded, 5u);
    region.expect_invariants();
    for (u32 g = 0; g < kGroups; ++g)
      region.expect_replay_equal(g);
  }
}

}  // namespace
}  // namespace paygate
