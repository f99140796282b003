#include "ledger/expiry_queue.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>
#include <tuple>
#include <vector>

namespace paygate {
namespace {

TEST(ExpiryQueue, PopsByTimeThenIdAcrossLanes) {
  ExpiryQueue queue(8);
  queue.push(0, 50, 3, 40);  // lane "timeout 40"
  queue.push(1, 10, 9, 5);   // lane "timeout 5"
  queue.push(2, 10, 11, 5);
  queue.push(3, 10, 4, 7);  // another lane, same time, smaller id
  queue.push(4, 70, 12, 40);
  EXPECT_EQ(queue.lanes(), 3u);
  EXPECT_EQ(queue.top().slot, 3u);
  queue.remove(3);
  EXPECT_EQ(queue.lanes(), 2u);
  EXPECT_EQ(queue.top().slot, 1u);
  queue.remove(2);  // from the middle of nothing: the tail of lane 5
  EXPECT_EQ(queue.top().slot, 1u);
  queue.remove(1);
  EXPECT_EQ(queue.top().slot, 0u);
  EXPECT_TRUE(queue.consistent());
  EXPECT_FALSE(queue.contains(1));
  EXPECT_TRUE(queue.contains(4));
  EXPECT_EQ(queue.size(), 2u);
}

TEST(ExpiryQueue, RemoveThenRestoreInReverseGivesBackTheSameQueue) {
  ExpiryQueue queue(16);
  for (u32 i = 0; i < 12; ++i)
    queue.push(i, 100 + (i / 3) * 10 + (i % 3), i + 1, 1 + i % 3);
  ASSERT_TRUE(queue.consistent());
  struct Removed {
    u32 slot;
    ExpiryQueue::Position position;
  };
  std::vector<Removed> removed;
  for (u32 slot : {4u, 0u, 11u, 3u, 6u, 9u})
    removed.push_back({slot, queue.remove(slot)});
  ASSERT_TRUE(queue.consistent());
  while (!removed.empty()) {
    const Removed r = removed.back();
    removed.pop_back();
    queue.restore(r.slot, 100 + (r.slot / 3) * 10 + (r.slot % 3), r.slot + 1, r.position);
    ASSERT_TRUE(queue.consistent());
  }
  // Drain: the order is the full (time, id) order.
  u64 last_time = 0, last_id = 0;
  for (u32 n = 0; n < 12; ++n) {
    const ExpiryQueue::Entry top = queue.top();
    EXPECT_TRUE(top.expires_at_ns > last_time ||
                (top.expires_at_ns == last_time && top.transfer_id > last_id));
    last_time = top.expires_at_ns;
    last_id = top.transfer_id;
    queue.remove(top.slot);
  }
  EXPECT_TRUE(queue.empty());
  EXPECT_EQ(queue.lanes(), 0u);
}

// Random pushes (in lane order, as the ledger makes them), removals anywhere,
// expiry from the top, and undo runs of remove/restore, against an ordered set.
TEST(ExpiryQueue, AgreesWithOrderedSet) {
  constexpr u32 kSlots = 300;
  ExpiryQueue queue(kSlots);
  std::set<std::tuple<u64, u64, u32>> reference;
  std::vector<u32> lane_of(kSlots);
  std::mt19937_64 random(11);
  u64 now = 1000, next_id = 1;
  const auto entry_of = [&](u32 slot) {
    return *std::find_if(reference.begin(), reference.end(),
                         [&](const auto& e) { return std::get<2>(e) == slot; });
  };
  for (int step = 0; step < 100000; ++step) {
    now += random() % 3;
    const u32 slot = static_cast<u32>(random() % kSlots);
    const int action = static_cast<int>(random() % 10);
    if (action < 5 && !queue.contains(slot)) {
      const u32 lane = 1 + static_cast<u32>(random() % 6);  // a few distinct timeouts
      queue.push(slot, now + lane * 7, next_id, lane);
      reference.insert({now + lane * 7, next_id, slot});
      lane_of[slot] = lane;
      ++next_id;
    } else if (action < 7 && queue.contains(slot)) {
      reference.erase(entry_of(slot));
      queue.remove(slot);
    } else if (action < 8 && !queue.empty()) {
      ASSERT_EQ(queue.top().slot, std::get<2>(*reference.begin()));
      reference.erase(reference.begin());
      queue.remove(queue.top().slot);
    } else if (action < 10 && queue.size() > 4) {
      // An atomic batch that fails: some removals, undone newest first.
      std::vector<std::pair<std::tuple<u64, u64, u32>, ExpiryQueue::Position>> undo;
      for (int k = 0; k < 4; ++k) {
        const auto victim =
            *std::next(reference.begin(), static_cast<long>(random() % reference.size()));
        if (!queue.contains(std::get<2>(victim))) continue;
        undo.push_back({victim, queue.remove(std::get<2>(victim))});
        reference.erase(victim);
      }
      for (auto it = undo.rbegin(); it != undo.rend(); ++it) {
        const auto& [e, position] = *it;
        queue.restore(std::get<2>(e), std::get<0>(e), std::get<1>(e), position);
        reference.insert(e);
      }
    }
    ASSERT_EQ(queue.size(), reference.size());
    if (!reference.empty()) {
      ASSERT_EQ(queue.top().slot, std::get<2>(*reference.begin())) << "step " << step;
    }
    if (step % 499 == 0) {
      ASSERT_TRUE(queue.consistent()) << "step " << step;
    }
  }
}

}  // namespace
}  // namespace paygate
