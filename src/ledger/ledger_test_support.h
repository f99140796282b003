// Helpers shared by the ledger's tests: a small ledger, a clock, and shorthands.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <ostream>
#include <span>
#include <utility>
#include <vector>

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

// A ledger's saved state in memory.
class BytesSink final : public StateSink {
 public:
  void write(const void* data, std::size_t size) noexcept override {
    const auto* bytes = static_cast<const unsigned char*>(data);
    buffer.insert(buffer.end(), bytes, bytes + size);
  }
  std::vector<unsigned char> buffer;
};
class BytesSource final : public StateSource {
 public:
  explicit BytesSource(std::span<const unsigned char> bytes) : bytes_(bytes) {}
  bool read(void* data, std::size_t size) noexcept override {
    if (size > bytes_.size() - at_) return false;
    std::memcpy(data, bytes_.data() + at_, size);
    at_ += size;
    return true;
  }

 private:
  std::span<const unsigned char> bytes_;
  std::size_t at_ = 0;
};
inline std::vector<unsigned char> saved_state(const Ledger& ledger) {
  BytesSink sink;
  ledger.save(sink);
  return sink.buffer;
}

inline constexpr Currency kUsd = Currency::from("USD");
inline constexpr Currency kEur = Currency::from("EUR");
inline constexpr u64 kStartNs = 1'800'000'000ull * kNanosPerSecond;

// A client key for tests: distinct for each n.
inline IdempotencyKey key(u64 n) {
  return IdempotencyKey{n, n * 31 + 7};
}

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
  std::vector<std::pair<Stamp, Command>> history_;  // what run() applied
  u64 sequence_ = 0;
  u64 now_ns_ = kStartNs;

  void SetUp() override { ledger_ = std::make_unique<Ledger>(config_); }
  void reconfigure(const LedgerConfig& config) {
    config_ = config;
    ledger_ = std::make_unique<Ledger>(config_);
    history_.clear();
  }

  Stamp next_stamp(u64 advance_s = 0) { return batch_stamp(1, advance_s); }
  // The stamp of the first of `count` commands applied together.
  Stamp batch_stamp(u64 count, u64 advance_s = 0) {
    now_ns_ += advance_s * kNanosPerSecond;
    const Stamp first{sequence_ + 1, now_ns_};
    sequence_ += count;
    return first;
  }
  CommandResult run(const Command& command, u64 advance_s = 0) {
    const Stamp stamp = next_stamp(advance_s);
    history_.push_back({stamp, command});
    return ledger_->apply(stamp, command);
  }
  // A ledger given every command run() applied, then `count` ticks from `first`:
  // the state a batch that changes nothing must leave behind.
  std::unique_ptr<Ledger> twin_after_noop(Stamp first, u64 count) {
    auto twin = std::make_unique<Ledger>(config_);
    for (const auto& [stamp, command] : history_)
      (void)twin->apply(stamp, command);
    std::vector<Command> ticks(count, Command::make_tick());
    std::vector<CommandResult> results(count);
    twin->apply_batch(first, ticks, results);
    return twin;
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
    const Status report = ledger_->check_invariants();
    EXPECT_TRUE(report.ok()) << report.message();
  }
};

}  // namespace paygate
