// A log-linear histogram of u64 values (latencies in ns, batch sizes): 16 buckets per
// power of two, so any percentile it reports is within ~6% of the true value.
// Recording is a relaxed atomic add: any thread may record, any thread may read.
#pragma once

#include <array>
#include <atomic>
#include <bit>

#include "base/types.h"

namespace paygate {

class Histogram {
 public:
  static constexpr int kSubBits = 4;
  static constexpr int kSub = 1 << kSubBits;
  static constexpr int kBuckets = (64 - kSubBits + 1) * kSub;

  void record(u64 value) noexcept {
    buckets_[index(value)].fetch_add(1, std::memory_order_relaxed);
    sum_.fetch_add(value, std::memory_order_relaxed);
  }

  u64 count() const noexcept {
    u64 total = 0;
    for (const auto& b : buckets_)
      total += b.load(std::memory_order_relaxed);
    return total;
  }
  u64 sum() const noexcept { return sum_.load(std::memory_order_relaxed); }

  // The smallest bucket bound below which at least `quantile` of the values fall
  // (quantile in [0, 1]); 0 when empty.
  u64 percentile(double quantile) const noexcept {
    const u64 total = count();
    if (total == 0) return 0;
    const u64 rank = static_cast<u64>(quantile * static_cast<double>(total - 1)) + 1;
    u64 seen = 0;
    for (int i = 0; i < kBuckets; ++i) {
      seen += buckets_[i].load(std::memory_order_relaxed);
      if (seen >= rank) return upper_bound(i);
    }
    return upper_bound(kBuckets - 1);
  }

  // How many recorded values are at or below `bound` (for Prometheus' cumulative
  // buckets): counts whole buckets, so it is exact when bound is a bucket edge.
  u64 count_at_most(u64 bound) const noexcept {
    u64 seen = 0;
    for (int i = 0; i < kBuckets && upper_bound(i) <= bound; ++i) {
      seen += buckets_[i].load(std::memory_order_relaxed);
    }
    return seen;
  }

  void merge_into(Histogram& other) const noexcept {
    for (int i = 0; i < kBuckets; ++i) {
      other.buckets_[i].fetch_add(buckets_[i].load(std::memory_order_relaxed),
                                  std::memory_order_relaxed);
    }
    other.sum_.fetch_add(sum(), std::memory_order_relaxed);
  }

  void reset() noexcept {
    for (auto& b : buckets_)
      b.store(0, std::memory_order_relaxed);
    sum_.store(0, std::memory_order_relaxed);
  }

  // Bucket i holds values in [lower_bound(i), upper_bound(i)].
  static constexpr int index(u64 value) noexcept {
    if (value < kSub) return static_cast<int>(value);
    const int magnitude = 63 - std::countl_zero(value);  // >= kSubBits
    const int shift = magnitude - kSubBits;
    return (shift + 1) * kSub + static_cast<int>((value >> shift) & (kSub - 1));
  }
  static constexpr u64 upper_bound(int i) noexcept {
    if (i < kSub) return static_cast<u64>(i);
    const int shift = i / kSub - 1;
    const u64 base = (u64{kSub} + static_cast<u64>(i % kSub)) << shift;
    return base + ((u64{1} << shift) - 1);
  }

 private:
  std::array<std::atomic<u64>, kBuckets> buckets_{};
  std::atomic<u64> sum_{0};
};

static_assert(Histogram::index(0) == 0 && Histogram::index(15) == 15);
static_assert(Histogram::index(16) == 16 && Histogram::upper_bound(16) == 16);
static_assert(Histogram::index(33) == 32 && Histogram::upper_bound(32) == 33);
static_assert(Histogram::upper_bound(Histogram::index(1000)) >= 1000);

}  // namespace paygate
