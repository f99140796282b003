// The ledger's keys (docs/LEDGER.md, "Idempotency"): retries answered, keys never
// forgotten inside their window, claims, and the signatures of signed requests.
#include "ledger/ledger.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "ledger/ledger_test_support.h"

namespace paygate {
namespace {

using Ledger_ = LedgerFixture;

// ---------------------------------------------------------------------------
// Idempotency

TEST_F(Ledger_, SameKeySameContentReturnsTheOriginalResult) {
  const AccountId user = funded(100);
  const AccountId merchant = open();
  const Command pay = Command::make_transfer(user, merchant, 30, kUsd).with_key(key(1));
  const CommandResult first = run(pay);
  ASSERT_EQ(first.code, ResultCode::ok);
  const CommandResult again = run(pay, 1);
  EXPECT_EQ(again, first);
  EXPECT_EQ(account(user).balance(), 70);  // moved once
  EXPECT_EQ(ledger_->transfers_made(), 2u);
}

TEST_F(Ledger_, SameKeyDifferentContentIsRejected) {
  const AccountId user = funded(100);
  const AccountId merchant = open();
  ASSERT_EQ(code(Command::make_transfer(user, merchant, 30, kUsd).with_key(key(1))),
            ResultCode::ok);
  EXPECT_EQ(code(Command::make_transfer(user, merchant, 31, kUsd).with_key(key(1))),
            ResultCode::idempotency_key_reused);
  // Fields the ledger does not keep (reference, metadata) count, through extra_hash.
  EXPECT_EQ(
      code(Command::make_transfer(user, merchant, 30, kUsd).with_key(key(1)).with_extra_hash(99)),
      ResultCode::idempotency_key_reused);
  EXPECT_EQ(account(user).balance(), 70);
}

TEST_F(Ledger_, FailedResultsAreRememberedToo) {
  const AccountId user = funded(10);
  const AccountId merchant = open();
  const Command pay = Command::make_transfer(user, merchant, 30, kUsd).with_key(key(2));
  EXPECT_EQ(code(pay), ResultCode::insufficient_funds);
  ASSERT_EQ(code(Command::make_transfer(treasury(), user, 100, kUsd)), ResultCode::ok);
  // The retry answers as the first attempt did; a new attempt needs a new key.
  EXPECT_EQ(code(pay), ResultCode::insufficient_funds);
  EXPECT_EQ(code(Command::make_transfer(user, merchant, 30, kUsd).with_key(key(3))),
            ResultCode::ok);
}

TEST_F(Ledger_, KeysExpireAfterTheWindow) {
  const AccountId user = funded(100);
  const AccountId merchant = open();
  const Command pay = Command::make_transfer(user, merchant, 30, kUsd).with_key(key(4));
  ASSERT_EQ(code(pay), ResultCode::ok);
  EXPECT_EQ(code(pay, 99), ResultCode::ok);
  EXPECT_EQ(account(user).balance(), 70);
  EXPECT_EQ(code(pay, 1), ResultCode::ok);  // 100 s later: the key is forgotten
  EXPECT_EQ(account(user).balance(), 40);
}

// A key inside its window is never forgotten to make room (issue: a key was dropped
// after 3,000 others and its retry moved the money again). A full table refuses new
// keys instead, until its oldest key leaves the window.
TEST_F(Ledger_, FullKeyTableRefusesNewKeysAndForgetsNone) {
  const AccountId user = funded(100);
  const AccountId merchant = open();
  const Command first = Command::make_transfer(user, merchant, 1, kUsd).with_key(key(1));
  const CommandResult paid = run(first, 10);
  ASSERT_EQ(paid.code, ResultCode::ok);
  for (u64 n = 2; n <= config_.idempotency_keys_max; ++n) {
    ASSERT_EQ(code(Command::make_transfer(user, merchant, 1, kUsd).with_key(key(n)), 10),
              ResultCode::ok);
  }
  EXPECT_EQ(ledger_->key_room_at_ns(KeyLane::client),
            now_ns_ - 30 * kNanosPerSecond + 100 * kNanosPerSecond);
  // Full of keys still inside the window: a new key is refused and moves nothing.
  EXPECT_EQ(code(Command::make_transfer(user, merchant, 1, kUsd).with_key(key(9)), 5),
            ResultCode::idempotency_capacity);
  EXPECT_EQ(ledger_->key_capacity_refusals(), 1u);
  EXPECT_EQ(account(user).balance(), 100 - 4);
  // A retry of the oldest key is still answered, not run again.
  EXPECT_EQ(run(first), paid);
  EXPECT_EQ(account(user).balance(), 100 - 4);
  // Commands without a key are not affected.
  EXPECT_EQ(code(Command::make_transfer(user, merchant, 1, kUsd)), ResultCode::ok);
  // Once the oldest key leaves its window, there is room again.
  EXPECT_EQ(code(Command::make_transfer(user, merchant, 1, kUsd).with_key(key(9)), 65),
            ResultCode::ok);
  EXPECT_EQ(account(user).balance(), 100 - 6);
  EXPECT_EQ(ledger_->idempotency_records(), config_.idempotency_keys_max);
  expect_invariants();
}

// The issue's own case, at its size: a table of 1,024 keys, K1, 3,000 other keyed
// transfers, K1 again with the same body.
TEST_F(Ledger_, KeyIsAnsweredAfterThousandsOfOthersWhenTheTableIsFull) {
  LedgerConfig config = config_;
  config.idempotency_keys_max = 1024;
  config.accounts_max = 8;
  reconfigure(config);
  const AccountId user = funded(1'000'000);
  const AccountId merchant = open();
  const Command k1 = Command::make_transfer(user, merchant, 7, kUsd).with_key(key(1));
  const CommandResult first = run(k1);
  ASSERT_EQ(first.code, ResultCode::ok);
  u32 refused = 0;
  for (u64 n = 2; n <= 3001; ++n) {
    const ResultCode c = code(Command::make_transfer(user, merchant, 1, kUsd).with_key(key(n)));
    ASSERT_TRUE(c == ResultCode::ok || c == ResultCode::idempotency_capacity) << name(c);
    refused += c == ResultCode::idempotency_capacity;
  }
  EXPECT_EQ(refused, 3000u - 1023u);
  EXPECT_EQ(run(k1), first);  // the same transfer id, nothing moved again
  EXPECT_EQ(account(user).balance(), 1'000'000 - 7 - 1023);
  expect_invariants();
}

TEST_F(Ledger_, KeyedAtomicBatchIsRefusedWhenTheTableIsFull) {
  const AccountId user = funded(100);
  const AccountId merchant = open();
  for (u64 n = 1; n <= config_.idempotency_keys_max; ++n) {
    ASSERT_EQ(code(Command::make_transfer(user, merchant, 1, kUsd).with_key(key(n))),
              ResultCode::ok);
  }
  const std::vector<Command> batch = {Command::make_transfer(user, merchant, 5, kUsd)};
  std::vector<CommandResult> results(1);
  EXPECT_EQ(ledger_->apply_atomic(next_stamp(), batch, key(50), results),
            ResultCode::idempotency_capacity);
  EXPECT_EQ(results[0].code, ResultCode::idempotency_capacity);
  EXPECT_EQ(account(user).balance(), 100 - 4);
  // Unkeyed, it runs.
  EXPECT_EQ(ledger_->apply_atomic(next_stamp(), batch, IdempotencyKey{}, results), ResultCode::ok);
  expect_invariants();
}

// ---------------------------------------------------------------------------
// Claims: one key, one request, whatever endpoint or group

TEST_F(Ledger_, ClaimTakesAKeyThatNoOtherRequestMayUse) {
  const AccountId user = funded(100);
  const AccountId merchant = open();
  ASSERT_EQ(code(Command::make_claim(key(1), /*fingerprint=*/77, 0)), ResultCode::ok);
  // The same request again: the claim holds (a retry carries on).
  EXPECT_EQ(code(Command::make_claim(key(1), 77, 0)), ResultCode::ok);
  // Another request under the key: refused, whatever its kind.
  EXPECT_EQ(code(Command::make_claim(key(1), 78, 0)), ResultCode::idempotency_key_reused);
  EXPECT_EQ(code(Command::make_transfer(user, merchant, 5, kUsd).with_key(key(1))),
            ResultCode::idempotency_key_reused);
  // And a key a transfer took cannot be claimed.
  ASSERT_EQ(code(Command::make_transfer(user, merchant, 5, kUsd).with_key(key(2))), ResultCode::ok);
  EXPECT_EQ(code(Command::make_claim(key(2), 77, 0)), ResultCode::idempotency_key_reused);
  EXPECT_EQ(account(user).balance(), 95);
  // A claim names a key, and has no place in an atomic batch.
  EXPECT_EQ(code(Command::make_claim(IdempotencyKey{}, 77, 0)), ResultCode::invalid_command);
  Command unkeyed = Command::make_claim(key(3), 77, 0);
  unkeyed.key = IdempotencyKey{};
  const std::vector<Command> atomic = {unkeyed};
  std::vector<CommandResult> results(1);
  EXPECT_EQ(ledger_->apply_atomic(next_stamp(), atomic, IdempotencyKey{}, results),
            ResultCode::invalid_command);
  expect_invariants();
}

TEST_F(Ledger_, RefusedClaimTakesTheCommandsItCoversDownWithIt) {
  const AccountId user = funded(100);
  const AccountId merchant = open();
  ASSERT_EQ(code(Command::make_transfer(user, merchant, 5, kUsd).with_key(key(1))), ResultCode::ok);
  // A batch under the key of that transfer: its claim is refused, so its operations
  // (whose own keys are new) must not run — the "one key moved money twice".
  const std::vector<Command> batch = {
      Command::make_claim(key(1), 99, 2),
      Command::make_transfer(user, merchant, 5, kUsd).with_key(key(11)),
      Command::make_transfer(user, merchant, 5, kUsd).with_key(key(12)),
      Command::make_transfer(user, merchant, 1, kUsd),  // not covered: another request
  };
  std::vector<CommandResult> results(batch.size());
  ledger_->apply_batch(batch_stamp(batch.size()), batch, results);
  EXPECT_EQ(results[0].code, ResultCode::idempotency_key_reused);
  EXPECT_EQ(results[1].code, ResultCode::idempotency_key_reused);
  EXPECT_EQ(results[2].code, ResultCode::idempotency_key_reused);
  EXPECT_EQ(results[3].code, ResultCode::ok);
  EXPECT_EQ(account(user).balance(), 100 - 5 - 1);
  EXPECT_EQ(ledger_->idempotency_records(), 1u);  // the covered keys were not taken
  // A claim that holds lets its commands run; retried, they answer as before.
  const std::vector<Command> fresh = {
      Command::make_claim(key(2), 99, 1),
      Command::make_transfer(user, merchant, 5, kUsd).with_key(key(21)),
  };
  std::vector<CommandResult> first(2), again(2);
  ledger_->apply_batch(batch_stamp(2), fresh, first);
  ledger_->apply_batch(batch_stamp(2), fresh, again);
  EXPECT_EQ(first[1].code, ResultCode::ok);
  EXPECT_EQ(again, first);
  EXPECT_EQ(account(user).balance(), 100 - 5 - 1 - 5);
  // covers past the end of the request stops at its end.
  const std::vector<Command> over = {Command::make_claim(key(1), 5, 40)};
  std::vector<CommandResult> one(1);
  ledger_->apply_batch(batch_stamp(1), over, one);
  EXPECT_EQ(one[0].code, ResultCode::idempotency_key_reused);
  expect_invariants();
}

// ---------------------------------------------------------------------------
// Signatures (KeyLane::signature): a signed request is accepted once, durably

TEST_F(Ledger_, SignatureSeenAgainInsideItsWindowIsRefused) {
  const AccountId user = funded(100);
  const AccountId merchant = open();
  const Command signed_pay =
      Command::make_transfer(user, merchant, 5, kUsd).with_key(key(1), KeyLane::signature);
  ASSERT_EQ(code(signed_pay), ResultCode::ok);
  EXPECT_EQ(code(signed_pay), ResultCode::signature_replayed);
  EXPECT_EQ(account(user).balance(), 95);
  // The lanes are apart: the same 128 bits as a client key are another key.
  EXPECT_EQ(code(Command::make_transfer(user, merchant, 5, kUsd).with_key(key(1))), ResultCode::ok);
  // Past the signature window (600 s by default) a signature could no longer pass the
  // API's timestamp check, so it is let go.
  EXPECT_EQ(code(signed_pay, 601), ResultCode::ok);
  EXPECT_EQ(account(user).balance(), 85);
  expect_invariants();
}

TEST_F(Ledger_, SignatureTableFullRefusesRatherThanForgets) {
  LedgerConfig config = config_;
  config.signature_keys_max = 2;
  reconfigure(config);
  const AccountId user = funded(100);
  const AccountId merchant = open();
  const auto pay = [&](u64 n) {
    return Command::make_transfer(user, merchant, 1, kUsd).with_key(key(n), KeyLane::signature);
  };
  ASSERT_EQ(code(pay(1)), ResultCode::ok);
  ASSERT_EQ(code(pay(2)), ResultCode::ok);
  EXPECT_EQ(code(pay(3)), ResultCode::idempotency_capacity);
  EXPECT_EQ(code(pay(1)), ResultCode::signature_replayed);
  EXPECT_EQ(code(pay(3), 600), ResultCode::ok);  // the first two left their window
  EXPECT_EQ(account(user).balance(), 97);
  EXPECT_EQ(ledger_->signature_records(), 1u);
  expect_invariants();
}

// A signed request with an Idempotency-Key: its claim takes the signature too, so a
// replay is refused by the ledger (after a restart, when the gateway's replay cache is
// empty) whether its key is kept, dropped or changed; a retry signed again is answered.
TEST_F(Ledger_, ClaimOfAKeyTakesTheRequestsSignatureToo) {
  const AccountId user = funded(100);
  const AccountId merchant = open();
  const auto claimed_pay = [&](IdempotencyKey k, IdempotencyKey signature) {
    return std::vector<Command>{
        Command::make_claim(k, /*fingerprint=*/77, 1, KeyLane::client, {}, signature),
        Command::make_transfer(user, merchant, 5, kUsd).with_key(key(k.lo + 100)),
    };
  };
  const auto apply = [&](const std::vector<Command>& batch) {
    std::vector<CommandResult> results(batch.size());
    ledger_->apply_batch(batch_stamp(batch.size()), batch, results);
    return results;
  };
  const std::vector<CommandResult> first = apply(claimed_pay(key(1), key(50)));
  ASSERT_EQ(first[0].code, ResultCode::ok);
  ASSERT_EQ(first[1].code, ResultCode::ok);
  EXPECT_EQ(ledger_->signature_records(), 1u);
  // Replayed as sent, with another key, or without one (the signature lane): refused,
  // and nothing runs.
  EXPECT_EQ(apply(claimed_pay(key(1), key(50)))[1].code, ResultCode::signature_replayed);
  EXPECT_EQ(apply(claimed_pay(key(2), key(50)))[1].code, ResultCode::signature_replayed);
  EXPECT_EQ(
      code(Command::make_transfer(user, merchant, 5, kUsd).with_key(key(50), KeyLane::signature)),
      ResultCode::signature_replayed);
  EXPECT_EQ(account(user).balance(), 95);
  EXPECT_EQ(ledger_->idempotency_records(), 2u);  // key(1) and its transfer's: key(2) untaken
  // A retry signed again (or not signed: a bearer token) is the same request: answered
  // as before, nothing moves again.
  EXPECT_EQ(apply(claimed_pay(key(1), key(51))), first);
  EXPECT_EQ(apply(claimed_pay(key(1), IdempotencyKey{})), first);
  EXPECT_EQ(account(user).balance(), 95);
  // A signature an unkeyed request used cannot open a keyed one either.
  ASSERT_EQ(
      code(Command::make_transfer(user, merchant, 1, kUsd).with_key(key(60), KeyLane::signature)),
      ResultCode::ok);
  EXPECT_EQ(apply(claimed_pay(key(3), key(60)))[0].code, ResultCode::signature_replayed);
  EXPECT_EQ(account(user).balance(), 94);
  // The content of a claim is not its signature.
  EXPECT_EQ(content_hash(Command::make_claim(key(1), 77, 1, KeyLane::client, {}, key(50))),
            content_hash(Command::make_claim(key(1), 77, 1)));
  // Malformed: the flag without a signature, or on a claim of the signature lane.
  Command bare = Command::make_claim(key(4), 77, 0);
  bare.flags = kClaimSignature;
  EXPECT_EQ(code(bare), ResultCode::invalid_command);
  Command lane = Command::make_claim(key(5), 77, 0, KeyLane::signature);
  lane.flags = kClaimSignature;
  lane.claim.signature = key(52);
  EXPECT_EQ(code(lane), ResultCode::invalid_command);
  // Past the signature window (600 s) it could no longer pass the API's timestamp
  // check, and is let go.
  EXPECT_EQ(code(Command::make_claim(key(6), 77, 0, KeyLane::client, {}, key(50)), 601),
            ResultCode::ok);
  expect_invariants();
}

TEST_F(Ledger_, ClaimWithASignatureIsRefusedWhenTheSignatureTableIsFull) {
  LedgerConfig config = config_;
  config.signature_keys_max = 1;
  reconfigure(config);
  ASSERT_EQ(code(Command::make_claim(key(1), 77, 0, KeyLane::client, {}, key(50))), ResultCode::ok);
  EXPECT_EQ(code(Command::make_claim(key(2), 77, 0, KeyLane::client, {}, key(51))),
            ResultCode::idempotency_capacity);
  EXPECT_EQ(ledger_->idempotency_records(), 1u);  // key(2) was not taken
  EXPECT_EQ(code(Command::make_claim(key(2), 77, 0, KeyLane::client, {}, key(51)), 600),
            ResultCode::ok);
}

TEST_F(Ledger_, TickDropsExpiredKeys) {
  const AccountId user = funded(100);
  ASSERT_EQ(code(Command::make_transfer(user, open(), 1, kUsd).with_key(key(1))), ResultCode::ok);
  EXPECT_EQ(ledger_->idempotency_records(), 1u);
  ASSERT_EQ(code(Command::make_tick(), 100), ResultCode::ok);
  EXPECT_EQ(ledger_->idempotency_records(), 0u);
}

TEST_F(Ledger_, KeyedCreateAccountAndPostReplay) {
  const Command create =
      Command::make_create_account(MerchantId{3}, kUsd, AccountKind::user).with_key(key(5));
  const CommandResult opened = run(create);
  ASSERT_EQ(opened.code, ResultCode::ok);
  EXPECT_EQ(run(create), opened);
  EXPECT_EQ(ledger_->account_count(), 1u);

  const AccountId user = funded(100);
  const TransferId id = hold(user, AccountId{opened.id}, 40);
  const Command capture = Command::make_post(id, 10).with_key(key(6));
  EXPECT_EQ(code(capture), ResultCode::ok);
  EXPECT_EQ(code(capture), ResultCode::ok);  // the replay, not a second post
  EXPECT_EQ(account(AccountId{opened.id}).balance(), 10);
}

}  // namespace
}  // namespace paygate
