#include "pipeline/clock.h"

#include <gtest/gtest.h>

namespace paygate {
namespace {

constexpr u64 kStart = 1'800'000'000ull * kNanosPerSecond;
constexpr u64 kSecond = kNanosPerSecond;

TEST(Sequencer, FollowsTheWallClockWhileItRunsEvenly) {
  ManualClock clock(kStart);
  Sequencer sequencer(clock, 1, 0);
  EXPECT_EQ(sequencer.now(), kStart);
  for (int i = 0; i < 1000; ++i) {
    clock.advance(1'234'567);
    ASSERT_EQ(sequencer.now(), clock.now_ns());
  }
  EXPECT_EQ(sequencer.jumps(), 0u);
  EXPECT_EQ(sequencer.offset_ns(), 0);
  const Stamp stamp = sequencer.stamp(3);
  EXPECT_EQ(stamp.sequence, 1u);
  EXPECT_EQ(sequencer.next_sequence(), 4u);
}

// Issue: a step of the wall clock forward was taken at once, expiring every hold and
// key due within it. It is now taken at 5 % of the time that passes.
TEST(Sequencer, StepForwardIsTakenGradually) {
  ManualClock clock(kStart);
  Sequencer sequencer(clock, 1, 0);
  (void)sequencer.now();
  clock.set(kStart + 3600 * kSecond);  // NTP steps the clock an hour forward
  clock.advance(kSecond);
  const u64 after = sequencer.now();
  EXPECT_EQ(after, kStart + kSecond + kSecond / 20);  // one second, and 50 ms of catching up
  EXPECT_EQ(sequencer.jumps(), 1u);
  EXPECT_LT(sequencer.offset_ns(), -3598 * static_cast<i64>(kSecond));
  // Catching up takes 20 times the step: 72,000 s for an hour, never past the wall.
  u64 last = after;
  u64 passed_s = 1;
  while (sequencer.now() < clock.now_ns() && passed_s < 100'000) {
    clock.advance(100 * kSecond);
    passed_s += 100;
    const u64 now = sequencer.now();
    ASSERT_GT(now, last);
    ASSERT_LE(now, clock.now_ns());
    last = now;
  }
  EXPECT_EQ(sequencer.now(), clock.now_ns());
  EXPECT_GE(passed_s, 72'000u);
  EXPECT_LE(passed_s, 72'101u);
  EXPECT_EQ(sequencer.jumps(), 1u);  // one step, one jump counted
}

TEST(Sequencer, StepBackSlowsTimeDownButNeverTurnsItBack) {
  ManualClock clock(kStart);
  Sequencer sequencer(clock, 1, 0);
  (void)sequencer.now();
  clock.set(kStart - 10 * kSecond);  // ten seconds back
  clock.advance(kSecond);
  EXPECT_EQ(sequencer.now(), kStart + kSecond - kSecond / 20);
  EXPECT_EQ(sequencer.jumps(), 1u);
  EXPECT_GT(sequencer.offset_ns(), 0);
  u64 last = 0;
  for (int i = 0; i < 300; ++i) {
    clock.advance(kSecond);
    const u64 now = sequencer.now();
    ASSERT_GT(now, last);
    last = now;
  }
  EXPECT_EQ(sequencer.now(), clock.now_ns());  // met after 200 s of 0.95 s each
  // A stamp never goes backwards, even when the wall clock jumps back and no time passes.
  clock.set(clock.now_ns() - 3600 * kSecond);
  EXPECT_EQ(sequencer.now(), last);
}

// Time that passes earns steering, but a quiet hour does not earn the right to take a
// later step at once.
TEST(Sequencer, SteeringIsNotSavedUp) {
  ManualClock clock(kStart);
  Sequencer sequencer(clock, 1, 0);
  for (int i = 0; i < 3600; ++i) {
    clock.advance(kSecond);
    (void)sequencer.now();
  }
  clock.set(clock.now_ns() + 60 * kSecond);
  clock.advance(1000);  // a microsecond passes
  EXPECT_LT(sequencer.now() + 59 * kSecond, clock.now_ns());
}

TEST(Sequencer, StartsFromTheWallClockButNeverBeforeTheLog) {
  ManualClock clock(kStart);
  EXPECT_EQ(Sequencer(clock, 10, kStart - 3600 * kSecond).now(), kStart);  // down an hour
  EXPECT_EQ(Sequencer(clock, 10, kStart + 5 * kSecond).now(), kStart + 5 * kSecond);
}

}  // namespace
}  // namespace paygate
