#include "pipeline/ring.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace paygate {
namespace {

TEST(MpscRing, FillsDrainsAndRefusesWhenFull) {
  MpscRing<u64> ring(4);
  EXPECT_EQ(ring.capacity(), 4u);
  u64 s = 0;
  for (u64 i = 0; i < 4; ++i) {
    ASSERT_TRUE(ring.try_claim(&s));
    EXPECT_EQ(s, i);
    ring.slot(s) = 100 + i;
  }
  EXPECT_FALSE(ring.try_claim(&s));
  EXPECT_EQ(ring.available(0, 8), 0u);  // claimed, not yet published
  ring.publish(1);
  EXPECT_EQ(ring.available(0, 8), 0u);  // slot 0 first: published out of order
  ring.publish(0);
  EXPECT_EQ(ring.available(0, 8), 2u);
  ring.publish(2);
  ring.publish(3);
  EXPECT_EQ(ring.available(0, 3), 3u);
  EXPECT_EQ(ring.read(2), 102u);
  ring.release(2);
  EXPECT_EQ(ring.occupancy(), 2u);
  ASSERT_TRUE(ring.try_claim(&s));
  EXPECT_EQ(s, 4u);  // reuses slot 0
  ring.slot(s) = 104;
  ring.publish(s);
  EXPECT_EQ(ring.available(2, 8), 3u);
  EXPECT_EQ(ring.read(4), 104u);
}

// Every item of every producer arrives once, and each producer's items in order.
TEST(MpscRing, ManyProducersOneConsumer) {
  constexpr u64 kProducers = 4, kItems = 200000;
  MpscRing<u64> ring(256);
  std::vector<std::thread> producers;
  for (u64 p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (u64 i = 0; i < kItems; ++i) {
        u64 s = 0;
        while (!ring.try_claim(&s))
          std::this_thread::yield();
        ring.slot(s) = (p << 32) | i;
        ring.publish(s);
      }
    });
  }
  std::vector<u64> next_expected(kProducers, 0);
  u64 next = 0, received = 0;
  while (received < kProducers * kItems) {
    const u32 n = ring.available(next, 64);
    if (n == 0) {
      std::this_thread::yield();
      continue;
    }
    for (u32 i = 0; i < n; ++i) {
      const u64 value = ring.read(next + i);
      const u64 producer = value >> 32;
      ASSERT_LT(producer, kProducers);
      ASSERT_EQ(value & 0xFFFFFFFF, next_expected[producer]);
      ++next_expected[producer];
    }
    next += n;
    received += n;
    ring.release(next);
  }
  for (auto& t : producers)
    t.join();
  for (u64 p = 0; p < kProducers; ++p)
    EXPECT_EQ(next_expected[p], kItems);
}

}  // namespace
}  // namespace paygate
