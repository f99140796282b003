// Helpers shared by the ledger's tests: a small ledger, a clock, and shorthands.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <ostream>

#include "ledger/ledger.h"

namespace paygate {

// Failure messages name codes instead of dumping bytes.
inline void PrintTo(ResultCode code, std::ostream* out) {
  *out << name(code);
}
inline void PrintTo(const CommandResult& result, std::ostream* out) {
  *out << "{" << name(result.code) << ", id " << result.id << "}";
}

// Reaches states that would take too many commands to reach honestly.
struct LedgerTestAccess {
  static void set_next_transfer_serial(Ledger& ledger, u64 serial) {
    ledger.next_transfer_serial_ = serial;
  }
};

inline constexpr Currency kUsd = Currency::from("USD");
inline constexpr Currency kEur = Currency::from("EUR");
inline constexpr u64 kStartNs = 1'800'000'000ull * kNanosPerSecond;

class LedgerFixture : public ::testing::Test {
 protected:
  LedgerConfig config_{
      .prefix = {1, 2},
      .accounts_max = 16,
      .pending_max = 8,
      .recent_transfers_max = 8,
      .idempotency_keys_max = 4,
      .idempotency_window_ns = 100 * kNanosPerSecond,
  };
  std::unique_ptr<Ledger> ledger_;
  u64 sequence_ = 0;
  u64 now_ns_ = kStartNs;

  void SetUp() override { ledger_ = std::make_unique<Ledger>(config_); }
  void reconfigure(const LedgerConfig& config) {
    config_ = config;
    ledger_ = std::make_unique<Ledger>(config_);
  }

  Stamp next_stamp(u64 advance_s = 0) {
    now_ns_ += advance_s * kNanosPerSecond;
    return Stamp{++sequence_, now_ns_};
  }
  CommandResult run(const Command& command, u64 advance_s = 0) {
    return ledger_->apply(next_stamp(advance_s), command);
  }
  ResultCode code(const Command& command, u64 advance_s = 0) {
    return run(command, advance_s).code;
  }

  AccountId open(AccountKind kind = AccountKind::user, u8 flags = 0, Currency currency = kUsd,
                 MerchantId owner = MerchantId{7}) {
    const CommandResult result = run(Command::make_create_account(owner, currency, kind, flags));
    EXPECT_EQ(result.code, ResultCode::ok);
    return AccountId{result.id};
  }
  // A system account that funds others (system accounts may go below zero).
  AccountId treasury(Currency currency = kUsd) {
    return open(AccountKind::system, 0, currency, MerchantId{});
  }
  AccountId funded(u64 amount, AccountKind kind = AccountKind::user, Currency currency = kUsd) {
    const AccountId source = treasury(currency);
    const AccountId account = open(kind, 0, currency);
    EXPECT_EQ(code(Command::make_transfer(source, account, amount, currency)), ResultCode::ok);
    return account;
  }
  TransferId hold(AccountId debit, AccountId credit, u64 amount, u32 timeout_s = 0) {
    const CommandResult result = run(Command::make_hold(debit, credit, amount, kUsd, timeout_s));
    EXPECT_EQ(result.code, ResultCode::ok);
    return TransferId{result.id};
  }
  const Account& account(AccountId id) {
    const Account* found = ledger_->find_account(id);
    EXPECT_NE(found, nullptr);
    return *found;
  }
  void expect_invariants() {
    const InvariantReport report = ledger_->check_invariants();
    EXPECT_TRUE(report.ok) << report.failure;
  }
};

}  // namespace paygate
