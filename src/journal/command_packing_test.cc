#include "journal/command_packing.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

namespace paygate::journal {
namespace {

Command from_words(const u64 (&words)[8]) {
  Command c;
  std::memcpy(static_cast<void*>(&c), words, sizeof words);
  return c;
}

std::vector<unsigned char> pack_all(const std::vector<Command>& commands) {
  std::vector<unsigned char> out(commands.size() * kPackedCommandBytesMax);
  CommandPacker packer;
  unsigned char* at = out.data();
  for (const Command& c : commands)
    at = packer.pack(c, at);
  out.resize(static_cast<std::size_t>(at - out.data()));
  return out;
}

std::vector<Command> unpack_all(const std::vector<unsigned char>& bytes, u32 count) {
  // Exactly as big as the bytes, so ASan sees any read past them.
  std::unique_ptr<unsigned char[]> exact(new unsigned char[bytes.size() + 1]);
  std::memcpy(exact.get(), bytes.data(), bytes.size());
  std::vector<Command> out(count);
  EXPECT_EQ(unpack_commands(exact.get(), bytes.size(), count, out.data()), bytes.size());
  return out;
}

TEST(CommandPacking, RepeatedCommandIsOneByte) {
  const Command hold =
      Command::make_hold(AccountId{0x0103000000000007}, AccountId{0x0103000000000009}, 2500,
                         Currency::from("EUR"), 600);
  const std::vector<Command> commands(100, hold);
  const std::vector<unsigned char> bytes = pack_all(commands);
  std::vector<unsigned char> first = pack_all({hold});
  EXPECT_LE(first.size(), 40u);
  EXPECT_EQ(bytes.size(), first.size() + 99);
  EXPECT_EQ(unpack_all(bytes, 100), commands);
}

TEST(CommandPacking, EachDeltaSizeRoundTrips) {
  // Deltas at the edges of each size, both signs, in every word.
  const u64 deltas[] = {1,           0xFF,    0x100,        0xFFFF, 0x10000, 0xFFFFFFFF,
                        0x100000000, ~u64{0}, u64{1} << 63, 0x7F,   0x80,    0x7FFFFFFF};
  std::vector<Command> commands;
  u64 words[8] = {};
  for (u32 w = 0; w < 8; ++w) {
    for (u64 d : deltas) {
      words[w] += d;
      commands.push_back(from_words(words));
      words[w] -= 2 * d;
      commands.push_back(from_words(words));
    }
  }
  EXPECT_EQ(unpack_all(pack_all(commands), static_cast<u32>(commands.size())), commands);
}

TEST(CommandPacking, WorstCaseStaysInItsBoundAndScratchDoesNotPassIt) {
  std::mt19937_64 rng(7);
  for (int round = 0; round < 1000; ++round) {
    u64 words[8];
    for (u64& w : words)
      w = rng() | (u64{1} << 63);  // every word differs, each delta needs 8 bytes
    std::vector<unsigned char> out(2 * kPackedCommandBytesMax, 0xAB);
    CommandPacker packer;
    unsigned char* end = packer.pack(from_words(words), out.data());
    EXPECT_LE(end - out.data(), static_cast<std::ptrdiff_t>(kPackedCommandBytesMax));
    for (std::size_t i = kPackedCommandBytesMax; i < out.size(); ++i)
      ASSERT_EQ(out[i], 0xAB) << "scratch written at " << i;
  }
}

// Commands shaped like a journal's: a few fields change, by small or large steps.
TEST(CommandPacking, RandomRunsRoundTrip) {
  std::mt19937_64 rng(20261123);
  for (int run = 0; run < 200; ++run) {
    std::vector<Command> commands;
    u64 words[8] = {};
    const u32 count = 1 + static_cast<u32>(rng() % 300);
    for (u32 i = 0; i < count; ++i) {
      const u32 changes = static_cast<u32>(rng() % 4);
      for (u32 c = 0; c < changes; ++c) {
        const u32 w = static_cast<u32>(rng() % 8);
        switch (rng() % 4) {
          case 0:
            words[w] += 1;
            break;
          case 1:
            words[w] -= rng() % 1000;
            break;
          case 2:
            words[w] = rng();
            break;
          default:
            words[w] = 0;
            break;
        }
      }
      commands.push_back(from_words(words));
    }
    const std::vector<unsigned char> bytes = pack_all(commands);
    EXPECT_LE(bytes.size(), count * kPackedCommandBytesMax);
    EXPECT_EQ(unpack_all(bytes, count), commands);
  }
}

TEST(CommandPacking, CutShortOrMissingCommandsDoNotUnpack) {
  std::vector<Command> commands;
  for (u64 i = 1; i <= 20; ++i)
    commands.push_back(Command::make_post(TransferId{i * 0x123456789}, i));
  const std::vector<unsigned char> bytes = pack_all(commands);
  std::vector<Command> out(21);
  for (std::size_t size = 0; size < bytes.size(); ++size) {
    std::vector<unsigned char> prefix(bytes.begin(), bytes.begin() + static_cast<long>(size));
    EXPECT_EQ(unpack_commands(prefix.data(), size, 20, out.data()), 0u) << size;
  }
  EXPECT_EQ(unpack_commands(bytes.data(), bytes.size(), 21, out.data()), 0u);
  EXPECT_EQ(unpack_commands(bytes.data(), bytes.size(), 20, out.data()), bytes.size());
}

}  // namespace
}  // namespace paygate::journal
