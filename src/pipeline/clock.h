// Where a group's time comes from, and the sequencer that stamps commands.
#pragma once

#include <time.h>

#include <algorithm>
#include <atomic>

#include "base/assert.h"
#include "base/types.h"

namespace paygate {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual u64 now_ns() noexcept = 0;  // wall time, ns since the Unix epoch
  // Time that passes, in ns from an arbitrary start: never steps, counts suspension.
  virtual u64 monotonic_ns() noexcept = 0;
};

class SystemClock final : public Clock {
 public:
  u64 now_ns() noexcept override { return read(CLOCK_REALTIME); }
  // CLOCK_BOOTTIME: like CLOCK_MONOTONIC, but a suspended machine's time still passes.
  u64 monotonic_ns() noexcept override { return read(CLOCK_BOOTTIME); }
  static SystemClock& instance() {
    static SystemClock clock;
    return clock;
  }

 private:
  static u64 read(clockid_t id) noexcept {
    timespec ts{};
    ::clock_gettime(id, &ts);
    return static_cast<u64>(ts.tv_sec) * kNanosPerSecond + static_cast<u64>(ts.tv_nsec);
  }
};

// A clock tests move by hand: advance() lets time pass (both readings move), step()
// and set() move the wall clock alone, as NTP or an operator does.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(u64 start_ns) : wall_(start_ns) {}
  u64 now_ns() noexcept override { return wall_.load(std::memory_order_acquire); }
  u64 monotonic_ns() noexcept override { return monotonic_.load(std::memory_order_acquire); }
  void advance(u64 ns) noexcept {
    monotonic_.fetch_add(ns, std::memory_order_acq_rel);
    wall_.fetch_add(ns, std::memory_order_acq_rel);
  }
  void set(u64 ns) noexcept { wall_.store(ns, std::memory_order_release); }

 private:
  std::atomic<u64> wall_;
  std::atomic<u64> monotonic_{1'000'000'000};
};

// Gives each command the group's next sequence number, and its time.
//
// Command time follows the time that passes (the clock's monotonic reading) and is
// steered toward the wall clock by at most 1/kSlewDivisor of what passes (5 %): a
// step of the wall clock, forward or back, is taken gradually, never at once. Taken
// at once, a step forward of an hour would expire every hold and idempotency key due
// within it; a step back would make command time stand still. At start, command time
// is the wall clock (what passed while the process was down is real), unless that is
// before the last stamp in the log: time never goes backwards. offset_ns() says how far
// command time is from the wall clock; jumps() counts the times it grew past 1 s.
class Sequencer {
 public:
  static constexpr u64 kSlewDivisor = 20;
  static constexpr u64 kJumpNs = kNanosPerSecond;
  static constexpr u64 kSlewCarryMaxNs = 20'000'000;  // 1 ms of steering

  Sequencer(Clock& clock, u64 next_sequence, u64 last_timestamp_ns)
      : clock_(clock),
        next_sequence_(next_sequence),
        last_timestamp_ns_(std::max(last_timestamp_ns, clock.now_ns())),
        last_monotonic_ns_(clock.monotonic_ns()) {}

  // The stamp of the first of `count` commands; they take the next `count` sequences.
  Stamp stamp(u64 count) noexcept {
    const Stamp first{next_sequence_, now()};
    next_sequence_ += count;
    return first;
  }
  // The current time (never earlier than any stamp given), without taking a sequence.
  u64 now() noexcept {
    const u64 wall = clock_.now_ns();
    const u64 monotonic = clock_.monotonic_ns();
    const u64 passed = monotonic > last_monotonic_ns_ ? monotonic - last_monotonic_ns_ : 0;
    last_monotonic_ns_ = monotonic;
    u64 next = last_timestamp_ns_ + passed;
    if (next != wall) {
      // What passes earns steering; a little is kept across calls so that the many
      // small steps of frequent calls add up, but not more, or a quiet hour would
      // earn the right to take a later jump at once.
      slew_earned_ns_ = std::min(slew_earned_ns_, kSlewCarryMaxNs) + passed;
      const u64 steer = slew_earned_ns_ / kSlewDivisor;
      if (wall > next) {
        const u64 ahead = std::min(wall - next, steer);
        next += ahead;
        slew_earned_ns_ -= ahead * kSlewDivisor;
      } else {
        const u64 behind = std::min({next - wall, steer, passed});  // never backwards
        next -= behind;
        slew_earned_ns_ -= behind * kSlewDivisor;
      }
    } else {
      slew_earned_ns_ = 0;
    }
    PG_ASSERT(next >= last_timestamp_ns_);
    last_timestamp_ns_ = next;
    offset_ns_ = static_cast<i64>(next - wall);  // two's complement: negative when behind
    const bool off = (next > wall ? next - wall : wall - next) > kJumpNs;
    if (off && !off_) ++jumps_;
    off_ = off;
    return next;
  }

  u64 next_sequence() const noexcept { return next_sequence_; }
  u64 last_timestamp_ns() const noexcept { return last_timestamp_ns_; }
  // Command time minus the wall clock at the last reading.
  i64 offset_ns() const noexcept { return offset_ns_; }
  u64 jumps() const noexcept { return jumps_; }

 private:
  Clock& clock_;
  u64 next_sequence_;
  u64 last_timestamp_ns_;
  u64 last_monotonic_ns_;
  u64 slew_earned_ns_ = 0;
  i64 offset_ns_ = 0;
  bool off_ = false;
  u64 jumps_ = 0;
};

}  // namespace paygate
