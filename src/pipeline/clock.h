// Where a group's time comes from, and the sequencer that stamps commands.
#pragma once

#include <time.h>

#include <atomic>

#include "base/types.h"

namespace paygate {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual u64 now_ns() noexcept = 0;  // wall time, ns since the Unix epoch
};

class SystemClock final : public Clock {
 public:
  u64 now_ns() noexcept override {
    timespec ts{};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<u64>(ts.tv_sec) * kNanosPerSecond + static_cast<u64>(ts.tv_nsec);
  }
  static SystemClock& instance() {
    static SystemClock clock;
    return clock;
  }
};

// A clock tests move by hand, forwards or backwards.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(u64 start_ns) : now_(start_ns) {}
  u64 now_ns() noexcept override { return now_.load(std::memory_order_acquire); }
  void set(u64 ns) noexcept { now_.store(ns, std::memory_order_release); }
  void advance(u64 ns) noexcept { now_.fetch_add(ns, std::memory_order_acq_rel); }

 private:
  std::atomic<u64> now_;
};

// Gives each command the group's next sequence number, and a time that never goes
// backwards: when the wall clock steps back, time stands still until it catches up.
class Sequencer {
 public:
  Sequencer(Clock& clock, u64 next_sequence, u64 last_timestamp_ns)
      : clock_(clock), next_sequence_(next_sequence), last_timestamp_ns_(last_timestamp_ns) {}

  // The stamp of the first of `count` commands; they take the next `count` sequences.
  Stamp stamp(u64 count) noexcept {
    const Stamp first{next_sequence_, now()};
    next_sequence_ += count;
    return first;
  }
  // The current time (never earlier than any stamp given), without taking a sequence.
  u64 now() noexcept {
    const u64 wall = clock_.now_ns();
    if (wall > last_timestamp_ns_) {
      last_timestamp_ns_ = wall;
    } else if (wall < last_timestamp_ns_) {
      ++clock_regressions_;
    }
    return last_timestamp_ns_;
  }

  u64 next_sequence() const noexcept { return next_sequence_; }
  u64 last_timestamp_ns() const noexcept { return last_timestamp_ns_; }
  u64 clock_regressions() const noexcept { return clock_regressions_; }

 private:
  Clock& clock_;
  u64 next_sequence_;
  u64 last_timestamp_ns_;
  u64 clock_regressions_ = 0;
};

}  // namespace paygate
