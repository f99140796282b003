#include "journal/command_layout.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

namespace paygate::journal {
namespace {

constexpr CommandKind kKinds[] = {
    CommandKind::create_account, CommandKind::transfer,       CommandKind::post_pending,
    CommandKind::void_pending,   CommandKind::tick,           CommandKind::deliver,
    CommandKind::settle,         CommandKind::claim,          CommandKind::set_quota,
    CommandKind::order_create,   CommandKind::order_checkout, CommandKind::order_result,
    CommandKind::order_cancel,   CommandKind::order_refund,   CommandKind::order_resolve,
    CommandKind::order_pay,      static_cast<CommandKind>(99)};

// 64 random bytes under the given kind: every field and every reserved byte set.
CommandLayout random_layout(std::mt19937_64& rng, CommandKind kind) {
  CommandLayout layout;
  for (u64& word : layout.words)
    word = rng();
  auto* bytes = reinterpret_cast<unsigned char*>(layout.words);
  bytes[0] = static_cast<unsigned char>(kind);
  return layout;
}

// Every byte of the layout reaches the command and comes back: nothing the ledger
// could read is lost on the way to the journal or over the wire.
TEST(CommandLayout, EveryByteOfEveryKindRoundTrips) {
  std::mt19937_64 rng(64);
  for (const CommandKind kind : kKinds) {
    for (int i = 0; i < 1000; ++i) {
      const CommandLayout layout = random_layout(rng, kind);
      const Command command = decode(layout);
      EXPECT_EQ(command.kind, kind);
      const CommandLayout again = encode(command);
      ASSERT_EQ(std::memcmp(again.words, layout.words, sizeof layout), 0)
          << "kind " << static_cast<int>(kind);
      EXPECT_EQ(decode(again), command);
    }
  }
}

// The layout is pinned, byte by byte: a change to the ledger's Command that moved a
// field here would be a format change, and fails this instead of passing silently.
TEST(CommandLayout, ATransferIsLaidOutAsDocumented) {
  Command c = Command::make_hold(AccountId{0x1111111111111111}, AccountId{0x2222222222222222},
                                 0x3333333333333333, Currency::from("USD"), 0x44444444);
  c.with_key(IdempotencyKey{0x5555555555555555, 0x6666666666666666}, KeyLane::signature);
  c.with_extra_hash(0x7777777777777777);
  const CommandLayout layout = encode(c);
  const auto* b = reinterpret_cast<const unsigned char*>(layout.words);
  EXPECT_EQ(b[0], 2);  // transfer
  EXPECT_EQ(b[1], kTransferPending);
  EXPECT_EQ(b[2], 1);  // the signature lane
  const u64 expected[8] = {
      0x0000000000010102ull, 0x7777777777777777,
      0x5555555555555555,    0x6666666666666666,
      0x1111111111111111,    0x2222222222222222,
      0x3333333333333333,    (u64{0x44444444} << 32) | Currency::from("USD").code};
  for (int w = 0; w < 8; ++w)
    EXPECT_EQ(layout.words[w], expected[w]) << "word " << w;
}

}  // namespace
}  // namespace paygate::journal
