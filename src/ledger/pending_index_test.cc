#include "ledger/pending_index.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <vector>

namespace paygate {
namespace {

constexpr IdPrefix kHere{0, 3};

u64 id_of(u64 serial) {
  return make_id(kHere, serial);
}

std::map<u64, u32> contents(const PendingIndex& index) {
  std::map<u64, u32> seen;
  index.for_each([&](u64 id, u32 slot) { EXPECT_TRUE(seen.emplace(id, slot).second) << id; });
  return seen;
}

TEST(PendingIndex, FindsWhatWasInsertedAndForgetsWhatWasErased) {
  PendingIndex index(8);
  EXPECT_EQ(index.find(id_of(1)), nullptr);
  index.insert(id_of(1), 10);
  index.insert(id_of(2), 20);
  ASSERT_NE(index.find(id_of(1)), nullptr);
  EXPECT_EQ(*index.find(id_of(1)), 10u);
  EXPECT_EQ(*index.find(id_of(2)), 20u);
  EXPECT_EQ(index.size(), 2u);
  EXPECT_TRUE(index.erase(id_of(1)));
  EXPECT_FALSE(index.erase(id_of(1)));
  EXPECT_EQ(index.find(id_of(1)), nullptr);
  EXPECT_EQ(index.size(), 1u);
  EXPECT_EQ(index.spilled(), 0u);
}

TEST(PendingIndex, AHoldThatOutlivesItsRingEntryIsStillFound) {
  PendingIndex index(8);  // a ring of 8 entries
  index.insert(id_of(1), 1);
  // Serial 9 needs serial 1's entry: the newer takes it, the older spills.
  index.insert(id_of(9), 9);
  EXPECT_EQ(index.spilled(), 1u);
  EXPECT_EQ(*index.find(id_of(1)), 1u);
  EXPECT_EQ(*index.find(id_of(9)), 9u);
  EXPECT_EQ(index.size(), 2u);
  EXPECT_TRUE(index.erase(id_of(1)));
  EXPECT_EQ(index.spilled(), 0u);
  EXPECT_EQ(*index.find(id_of(9)), 9u);
}

TEST(PendingIndex, AnOlderHoldReopenedOverANewerOneGoesBehindIt) {
  // A rolled-back atomic batch reopens a hold whose ring entry a newer hold has.
  PendingIndex index(8);
  index.insert(id_of(17), 17);
  index.insert(id_of(9), 9);
  EXPECT_EQ(index.spilled(), 1u);
  EXPECT_EQ(*index.find(id_of(17)), 17u);
  EXPECT_EQ(*index.find(id_of(9)), 9u);
  EXPECT_TRUE(index.erase(id_of(17)));
  EXPECT_EQ(*index.find(id_of(9)), 9u);  // the free entry does not hide the spilled one
  EXPECT_TRUE(index.erase(id_of(9)));
  EXPECT_EQ(index.size(), 0u);
}

TEST(PendingIndex, AnIdFromAnotherGroupIsNotMistakenForOneOfOurs) {
  PendingIndex index(8);
  index.insert(id_of(5), 5);
  EXPECT_EQ(index.find(make_id({0, 4}, 5)), nullptr);
  EXPECT_FALSE(index.erase(make_id({0, 4}, 5)));
  EXPECT_EQ(*index.find(id_of(5)), 5u);
}

TEST(PendingIndex, HoldsEveryOpenHoldAtOnceWhateverTheirSerials) {
  // max_size holds open, each from a different lap of the ring: all but one spill.
  const u32 max_size = 64;
  PendingIndex index(max_size);
  for (u32 i = 0; i < max_size; ++i)
    index.insert(id_of(1 + u64{i} * 64), i);
  EXPECT_EQ(index.size(), max_size);
  EXPECT_EQ(index.spilled(), max_size - 1);
  for (u32 i = 0; i < max_size; ++i)
    EXPECT_EQ(*index.find(id_of(1 + u64{i} * 64)), i);
  EXPECT_EQ(contents(index).size(), max_size);
}

// Against std::map: holds open with rising serials and close in random order (some
// soon, some after many laps of the ring), and rolled-back holds reopen.
void agrees_with_a_map(u64 seed, u32 max_size) {
  PendingIndex index(max_size);
  std::map<u64, u32> reference;
  std::vector<u64> open;
  std::mt19937_64 random(seed);
  u64 next_serial = 1;
  for (int step = 0; step < 200'000; ++step) {
    const u32 action = static_cast<u32>(random() % 100);
    if (action < 50 && reference.size() < max_size) {
      const u64 id = id_of(next_serial++);
      const u32 slot = static_cast<u32>(random());
      index.insert(id, slot);
      reference[id] = slot;
      open.push_back(id);
    } else if (action < 90 && !open.empty()) {
      // Mostly the newest, sometimes any: long-lived holds spill.
      const std::size_t at =
          random() % 4 != 0 ? open.size() - 1 - random() % std::min<std::size_t>(open.size(), 8)
                            : random() % open.size();
      const u64 id = open[at];
      open[at] = open.back();
      open.pop_back();
      ASSERT_TRUE(index.erase(id));
      reference.erase(id);
      if (action >= 85 && reference.size() < max_size) {
        // Rolled back: the hold is open again under its old serial.
        const u32 slot = static_cast<u32>(random());
        index.insert(id, slot);
        reference[id] = slot;
        open.push_back(id);
      }
    } else {
      const u64 id = id_of(1 + random() % next_serial);
      const auto it = reference.find(id);
      const u32* found = index.find(id);
      ASSERT_EQ(found != nullptr, it != reference.end()) << id;
      if (found != nullptr) {
        ASSERT_EQ(*found, it->second);
      }
    }
    ASSERT_EQ(index.size(), reference.size());
  }
  EXPECT_EQ(contents(index), reference);
  for (const auto& [id, slot] : reference) {
    ASSERT_NE(index.find(id), nullptr);
    EXPECT_EQ(*index.find(id), slot);
  }
}

TEST(PendingIndex, AgreesWithAMapWhenTheRingIsSmall) {
  agrees_with_a_map(1, 16);
  agrees_with_a_map(2, 100);
}

TEST(PendingIndex, AgreesWithAMapWhenTheRingIsLarge) {
  agrees_with_a_map(3, 4096);
}

}  // namespace
}  // namespace paygate
