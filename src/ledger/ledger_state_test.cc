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

// A state saved before the table of signatures (version 2: no signature configuration
// or records) still loads, with that table empty.
TEST_F(Ledger_, LoadReadsAVersion2State) {
  const AccountId user = funded(100);
  hold(user, open(), 10, 5);
  run(Command::make_transfer(user, open(), 1, kUsd).with_key({3, 4}));
  const std::vector<unsigned char> v3 = saved_state(*ledger_);
  // Cut what version 3 added: the 16-byte signature configuration after the 32-byte
  // configuration, and the signature record count (0 here) after the client records.
  const std::size_t config_end = 8 + 32;
  const std::size_t signatures_at = config_end + 16 + 16 + 8 + sizeof(Account) * 4 + 8 + 8 +
                                    sizeof(Transfer) * 1 + 8 + sizeof(Transfer) * 3 + 8 +
                                    sizeof(IdempotencyRecord) * 1;
  u64 signature_count = ~u64{0};
  std::memcpy(&signature_count, v3.data() + signatures_at, 8);
  ASSERT_EQ(signature_count, 0u) << "the layout this test assumes has changed";
  std::vector<unsigned char> v2(v3.begin(), v3.begin() + config_end);
  v2.insert(v2.end(), v3.begin() + config_end + 16, v3.begin() + signatures_at);
  v2.insert(v2.end(), v3.begin() + signatures_at + 8, v3.end());
  std::memcpy(v2.data(), "PGLEDGR2", 8);
  Ledger restored(config_);
  BytesSource source(v2);
  ASSERT_TRUE(restored.load(source).ok());
  EXPECT_EQ(restored.state_digest(), ledger_->state_digest());
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
