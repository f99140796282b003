// The velocity rule's memory: what it admits within a minute and across minutes, per
// (merchant, payer), and its bound.
#include "api/risk.h"

#include <gtest/gtest.h>

namespace paygate::api {
namespace {

constexpr u64 kSecond = 1'000'000'000ull;
constexpr u64 kMinute = 60 * kSecond;
constexpr u64 kT0 = 1000 * kMinute;  // the start of a clock minute

TEST(CheckoutVelocityTest, AdmitsTheLimitWithinAMinuteAndNoMore) {
  CheckoutVelocity velocity;
  for (u32 i = 0; i < 3; ++i)
    EXPECT_TRUE(velocity.admit(1, 7, 3, kT0 + i * kSecond)) << i;
  EXPECT_FALSE(velocity.admit(1, 7, 3, kT0 + 5 * kSecond));
  EXPECT_FALSE(velocity.admit(1, 7, 3, kT0 + 59 * kSecond));  // refusals are not counted
  // Another payer, or the same payer with another merchant, has its own count.
  EXPECT_TRUE(velocity.admit(1, 8, 3, kT0 + 5 * kSecond));
  EXPECT_TRUE(velocity.admit(2, 7, 3, kT0 + 5 * kSecond));
  EXPECT_EQ(velocity.size(), 3u);
}

TEST(CheckoutVelocityTest, TheLastMinuteWeighsInAsTheWindowLeavesIt) {
  CheckoutVelocity velocity;
  for (u32 i = 0; i < 4; ++i)
    EXPECT_TRUE(velocity.admit(1, 7, 4, kT0 + 30 * kSecond));
  // A quarter into the next minute, three quarters of the last one still count: 3 of 4.
  EXPECT_TRUE(velocity.admit(1, 7, 4, kT0 + kMinute + 15 * kSecond));
  EXPECT_FALSE(velocity.admit(1, 7, 4, kT0 + kMinute + 16 * kSecond));
  // A second into the minute after, only that one checkout still weighs (59/60 of it).
  for (u32 i = 0; i < 3; ++i)
    EXPECT_TRUE(velocity.admit(1, 7, 4, kT0 + 2 * kMinute + kSecond));
  EXPECT_FALSE(velocity.admit(1, 7, 4, kT0 + 2 * kMinute + kSecond));
  // After a minute with none, nothing of it is left.
  for (u32 i = 0; i < 4; ++i)
    EXPECT_TRUE(velocity.admit(1, 7, 4, kT0 + 4 * kMinute + kSecond));
  EXPECT_FALSE(velocity.admit(1, 7, 4, kT0 + 4 * kMinute + 2 * kSecond));
}

TEST(CheckoutVelocityTest, ItsMemoryIsBoundedAndOldPairsMakeRoom) {
  CheckoutVelocity velocity(/*pairs_max=*/2);
  EXPECT_TRUE(velocity.admit(1, 1, 1, kT0));
  EXPECT_TRUE(velocity.admit(1, 2, 1, kT0));
  // Full of recent pairs: a new one is admitted uncounted.
  EXPECT_TRUE(velocity.admit(1, 3, 1, kT0));
  EXPECT_TRUE(velocity.admit(1, 3, 1, kT0));
  EXPECT_EQ(velocity.size(), 2u);
  // Later the old ones are swept and the new pair is counted again.
  EXPECT_TRUE(velocity.admit(1, 3, 1, kT0 + 3 * kMinute));
  EXPECT_FALSE(velocity.admit(1, 3, 1, kT0 + 3 * kMinute));
  EXPECT_EQ(velocity.size(), 1u);
}

}  // namespace
}  // namespace paygate::api
