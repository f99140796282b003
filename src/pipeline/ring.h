// A bounded multi-producer, single-consumer ring of pre-allocated slots, after the
// LMAX Disruptor:
//   producer: try_claim(&s) → fill slot(s) → publish(s)
//   consumer: available(next, max) → read slots → release(next + n)
// A producer claims the next sequence with one CAS if the ring has room; a slot is
// readable once its published marker equals sequence + 1, so producers finishing
// out of order never expose an unfilled slot. No locks, no allocation after
// construction, each slot on its own cache lines.
#pragma once

#include <atomic>
#include <bit>
#include <memory>
#include <new>

#include "base/assert.h"
#include "base/types.h"

namespace paygate {

template <typename T>
class MpscRing {
 public:
  explicit MpscRing(u32 capacity)
      : capacity_(std::bit_ceil(capacity)), mask_(capacity_ - 1), slots_(new Slot[capacity_]) {
    PG_ASSERT(capacity > 0);
  }

  u64 capacity() const noexcept { return capacity_; }

  // Producers. False when the ring is full.
  [[nodiscard]] bool try_claim(u64* sequence) noexcept {
    u64 claimed = claim_.load(std::memory_order_relaxed);
    for (;;) {
      if (claimed - released_.load(std::memory_order_acquire) >= capacity_) return false;
      if (claim_.compare_exchange_weak(claimed, claimed + 1, std::memory_order_acq_rel,
                                       std::memory_order_relaxed)) {
        *sequence = claimed;
        return true;
      }
    }
  }
  T& slot(u64 sequence) noexcept { return slots_[sequence & mask_].value; }
  void publish(u64 sequence) noexcept {
    slots_[sequence & mask_].published.store(sequence + 1, std::memory_order_release);
  }

  // Consumer. How many slots from `next` on are published, in a row, at most `max`.
  u32 available(u64 next, u32 max) const noexcept {
    u32 n = 0;
    while (n < max &&
           slots_[(next + n) & mask_].published.load(std::memory_order_acquire) == next + n + 1) {
      ++n;
    }
    return n;
  }
  const T& read(u64 sequence) const noexcept { return slots_[sequence & mask_].value; }
  // Every slot before `sequence` is done with and may be claimed again.
  void release(u64 sequence) noexcept { released_.store(sequence, std::memory_order_release); }

  // Slots claimed and not yet released (approximate while producers run).
  u64 occupancy() const noexcept {
    return claim_.load(std::memory_order_relaxed) - released_.load(std::memory_order_relaxed);
  }
  u64 claimed() const noexcept { return claim_.load(std::memory_order_acquire); }

 private:
  struct alignas(64) Slot {
    std::atomic<u64> published{0};
    T value{};
  };

  const u64 capacity_;
  const u64 mask_;
  std::unique_ptr<Slot[]> slots_;
  alignas(64) std::atomic<u64> claim_{0};
  alignas(64) std::atomic<u64> released_{0};
};

}  // namespace paygate
