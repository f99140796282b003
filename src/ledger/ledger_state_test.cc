// The ledger's state as a whole: saved and loaded (docs/SNAPSHOT.md), and its digest.
#include "ledger/ledger.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "ledger/ledger_test_support.h"

namespace paygate {
namespace {

using Ledger_ = LedgerFixture;

// ---------------------------------------------------------------------------
// Save and load

TEST_F(Ledger_, SaveAndLoadGiveTheSameStateAndTheSameFuture) {
  const AccountId user = funded(1000);
  const AccountId merchant = open(AccountKind::merchant);
  const TransferId short_hold = hold(user, merchant, 10, 5);
  const TransferId long_hold = hold(user, merchant, 20, 50);
  hold(user, merchant, 30, 5);
  hold(user, merchant, 40, 0);
  ASSERT_EQ(code(Command::make_post(hold(user, merchant, 5, 9), 2)), ResultCode::ok);
  ASSERT_EQ(code(Command::make_transfer(user, merchant, 7, kUsd).with_key({1, 2})), ResultCode::ok);
  for (int i = 0; i < 12; ++i)
    run(Command::make_transfer(user, merchant, 1, kUsd), 1);

  const std::vector<unsigned char> state = saved_state(*ledger_);
  Ledger restored(config_);
  BytesSource source(state);
  ASSERT_TRUE(restored.load(source).ok());
  EXPECT_EQ(restored.state_digest(), ledger_->state_digest());
  EXPECT_EQ(saved_state(restored), state);  // canonical bytes

  // Both go on the same way: expiry in the same order, keys remembered, ids continued.
  const auto both = [&](const Command& command, u64 advance_s) {
    const Stamp stamp = next_stamp(advance_s);
    const CommandResult a = ledger_->apply(stamp, command);
    const CommandResult b = restored.apply(stamp, command);
    EXPECT_EQ(a, b);
    EXPECT_EQ(ledger_->state_digest(), restored.state_digest());
  };
  both(Command::make_transfer(user, merchant, 7, kUsd).with_key({1, 2}), 0);
  both(Command::make_post(short_hold), 1);
  both(Command::make_void(long_hold), 0);
  both(Command::make_hold(user, merchant, 3, kUsd, 5), 0);
  both(Command::make_tick(), 60);
  both(Command::make_transfer(user, merchant, 1, kUsd), 0);
  EXPECT_TRUE(restored.check_invariants().ok());
}

TEST_F(Ledger_, LoadRefusesAnotherConfiguration) {
  funded(100);
  const std::vector<unsigned char> state = saved_state(*ledger_);
  LedgerConfig other = config_;
  other.accounts_max += 1;
  Ledger restored(other);
  BytesSource source(state);
  const Status loaded = restored.load(source);
  EXPECT_EQ(loaded.code(), StatusCode::invalid_config);
  EXPECT_NE(loaded.message().find("different configuration"), std::string::npos)
      << loaded.to_string();
}

// States saved by earlier versions still load: version 4 (no orders), version 3 (key
// records of 56 bytes, without their owner; no quota limits) and version 2 (no
// signature table either).
TEST_F(Ledger_, LoadReadsVersion2To4States) {
  const AccountId user = funded(100);
  hold(user, open(), 10, 5);
  run(Command::make_transfer(user, open(), 1, kUsd));
  // A key of no merchant (owner 0), so that its record is the same in every version.
  run(Command::make_create_account(MerchantId{}, kUsd, AccountKind::system).with_key({3, 4}));
  const std::vector<unsigned char> v5 = saved_state(*ledger_);
  // Version 4: no orders section (configuration, next serial, next retention serial,
  // count: none held).
  constexpr std::size_t kNoOrders = 16 + 8 + 8 + 8;
  std::vector<unsigned char> v4(v5.begin(), v5.end() - 8 - kNoOrders);
  v4.insert(v4.end(), v5.end() - 8, v5.end());
  std::memcpy(v4.data(), "PGLEDGR4", 8);
  const std::size_t config_end = 8 + 32;
  const std::size_t records_at = config_end + 16 + 16 + 8 + sizeof(Account) * 5 + 8 + 8 +
                                 sizeof(Transfer) * 1 + 8 + sizeof(Transfer) * 3 + 8;
  const std::size_t signatures_at = records_at + sizeof(IdempotencyRecord) * 1;
  const std::size_t quotas_at = v4.size() - 8 - 8 - sizeof(QuotaLimits);
  u64 client_count = 0, signature_count = ~u64{0};
  std::memcpy(&client_count, v4.data() + records_at - 8, 8);
  std::memcpy(&signature_count, v4.data() + signatures_at, 8);
  ASSERT_EQ(client_count, 1u) << "the layout this test assumes has changed";
  ASSERT_EQ(signature_count, 0u) << "the layout this test assumes has changed";

  // Version 3: the record without its owner (the last 8 bytes), no quota section.
  std::vector<unsigned char> v3(v4.begin(), v4.begin() + records_at + 56);
  v3.insert(v3.end(), v4.begin() + signatures_at, v4.begin() + quotas_at);
  v3.insert(v3.end(), v4.end() - 8, v4.end());
  std::memcpy(v3.data(), "PGLEDGR3", 8);
  // Version 2: no signature configuration after the configuration, no signature count.
  const std::size_t v3_signatures_at = records_at + 56;
  std::vector<unsigned char> v2(v3.begin(), v3.begin() + config_end);
  v2.insert(v2.end(), v3.begin() + config_end + 16, v3.begin() + v3_signatures_at);
  v2.insert(v2.end(), v3.begin() + v3_signatures_at + 8, v3.end());
  std::memcpy(v2.data(), "PGLEDGR2", 8);

  for (const std::vector<unsigned char>* old : {&v4, &v3, &v2}) {
    Ledger restored(config_);
    BytesSource source(*old);
    const Status loaded = restored.load(source);
    ASSERT_TRUE(loaded.ok()) << loaded.to_string();
    EXPECT_EQ(restored.state_digest(), ledger_->state_digest());
    // The owner's usage is recounted from the state: its accounts and its open hold.
    const OwnerQuota* usage = restored.find_quota(MerchantId{7});
    ASSERT_NE(usage, nullptr);
    EXPECT_EQ(usage->used[static_cast<u32>(Quota::holds)], 1u);
  }
}

// Every truncation, and a flipped byte in every count and magic, is refused without a
// crash.
TEST_F(Ledger_, LoadRefusesDamagedInput) {
  const AccountId user = funded(100);
  hold(user, open(), 10, 5);
  run(Command::make_transfer(user, open(), 1, kUsd).with_key({3, 4}));
  const std::vector<unsigned char> state = saved_state(*ledger_);
  for (std::size_t length = 0; length < state.size(); ++length) {
    Ledger restored(config_);
    BytesSource source(std::span(state.data(), length));
    ASSERT_FALSE(restored.load(source).ok()) << "accepted " << length << " bytes";
  }
  // Flip a byte of the magic, of the signature table's configuration, and of the
  // account count (after magic 8, configuration 32 + 16, stamp 16).
  for (std::size_t at : {0u, 7u, 40u, 48u, 72u, 76u}) {
    std::vector<unsigned char> damaged = state;
    damaged[at] ^= 0x40;
    Ledger restored(config_);
    BytesSource source(damaged);
    EXPECT_FALSE(restored.load(source).ok()) << "byte " << at;
  }
}

// ---------------------------------------------------------------------------
// Digest

TEST_F(Ledger_, DigestFollowsStateAndIgnoresLookups) {
  const AccountId user = funded(100);
  const u64 d1 = ledger_->state_digest();
  EXPECT_EQ(ledger_->state_digest(), d1);
  (void)ledger_->find_account(user);
  (void)ledger_->find_transfer(TransferId{make_id({1, 2}, 1)});
  EXPECT_EQ(ledger_->state_digest(), d1);
  ASSERT_EQ(code(Command::make_transfer(user, open(), 1, kUsd)), ResultCode::ok);
  EXPECT_NE(ledger_->state_digest(), d1);
}

}  // namespace
}  // namespace paygate
