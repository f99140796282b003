#include "base/open_address_map.h"

#include <gtest/gtest.h>

#include <random>
#include <unordered_map>

#include "base/hash.h"

namespace paygate {
namespace {

struct GoodHash {
  u64 operator()(u64 key) const noexcept { return mix64(key); }
};
// Sends every key to a handful of home slots, so clusters form and wrap around.
struct AwfulHash {
  u64 operator()(u64 key) const noexcept { return (key % 3) * 5 + 13; }
};

TEST(OpenAddressMap, InsertFindErase) {
  OpenAddressMap<u64, u32, GoodHash> map(4);
  EXPECT_EQ(map.find(7), nullptr);
  map.insert(7, 70);
  map.insert(8, 80);
  ASSERT_NE(map.find(7), nullptr);
  EXPECT_EQ(*map.find(7), 70u);
  EXPECT_EQ(map.size(), 2u);
  EXPECT_TRUE(map.erase(7));
  EXPECT_FALSE(map.erase(7));
  EXPECT_EQ(map.find(7), nullptr);
  EXPECT_EQ(*map.find(8), 80u);
  EXPECT_EQ(map.size(), 1u);
}

TEST(OpenAddressMap, ReportsFullAtMaxSize) {
  OpenAddressMap<u64, u32, GoodHash> map(3);
  for (u64 k = 1; k <= 3; ++k) {
    EXPECT_FALSE(map.full());
    map.insert(k, 0);
  }
  EXPECT_TRUE(map.full());
  map.erase(2);
  EXPECT_FALSE(map.full());
}

template <typename Hash>
void agrees_with_unordered_map(u64 seed, std::size_t max_size, u64 key_range) {
  OpenAddressMap<u64, u32, Hash> map(max_size);
  std::unordered_map<u64, u32> reference;
  std::mt19937_64 random(seed);
  for (int step = 0; step < 200000; ++step) {
    const u64 key = 1 + random() % key_range;
    const int action = static_cast<int>(random() % 3);
    if (action == 0 && !map.full() && !reference.contains(key)) {
      const u32 value = static_cast<u32>(random());
      map.insert(key, value);
      reference[key] = value;
    } else if (action == 1) {
      EXPECT_EQ(map.erase(key), reference.erase(key) == 1);
    }
    const u32* found = map.find(key);
    const auto it = reference.find(key);
    ASSERT_EQ(found != nullptr, it != reference.end()) << "key " << key << " step " << step;
    if (found != nullptr) {
      ASSERT_EQ(*found, it->second);
    }
    ASSERT_EQ(map.size(), reference.size());
  }
  std::size_t visited = 0;
  map.for_each([&](u64 key, u32 value) {
    ++visited;
    EXPECT_EQ(reference.at(key), value);
  });
  EXPECT_EQ(visited, reference.size());
}

TEST(OpenAddressMap, AgreesWithUnorderedMapUnderChurn) {
  agrees_with_unordered_map<GoodHash>(1, 1000, 3000);
  agrees_with_unordered_map<GoodHash>(2, 64, 200);
}

// Backward-shift deletion must keep every key reachable even in long, wrapping clusters.
TEST(OpenAddressMap, EraseKeepsClustersReachableWithCollidingHash) {
  agrees_with_unordered_map<AwfulHash>(3, 12, 40);
  agrees_with_unordered_map<AwfulHash>(4, 15, 1000);
}

}  // namespace
}  // namespace paygate
