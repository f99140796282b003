// What a load client (loadgen, compare_client) records of the requests answered:
// their latencies (a histogram and the exact maximum), how many took longer than a
// timeout (wrk's "timeouts": 2 s, so that the figures read alike), and how many each
// connection had answered, for fairness. Any thread records.
#pragma once

#include <algorithm>
#include <atomic>
#include <memory>

#include "base/histogram.h"
#include "base/types.h"

namespace paygate {

class LatencyRecord {
 public:
  static constexpr u64 kTimeoutNs = 2'000'000'000;

  explicit LatencyRecord(u32 connections)
      : connections_(connections),
        per_connection_(std::make_unique<std::atomic<u64>[]>(connections)) {}

  // A request answered on `connection` (0-based) after `ns`.
  void answered(u32 connection, u64 ns) noexcept {
    latency_ns_.record(ns);
    u64 max = max_ns_.load(std::memory_order_relaxed);
    while (ns > max && !max_ns_.compare_exchange_weak(max, ns, std::memory_order_relaxed)) {
    }
    if (ns > kTimeoutNs) over_timeout_.fetch_add(1, std::memory_order_relaxed);
    requests_.fetch_add(1, std::memory_order_relaxed);
    per_connection_[connection].fetch_add(1, std::memory_order_relaxed);
  }

  u64 requests() const noexcept { return requests_.load(std::memory_order_relaxed); }
  const Histogram& latency_ns() const noexcept { return latency_ns_; }
  // The histogram's bucket bound (within ~6% above the true value), never above the
  // exact maximum.
  double percentile_us(double quantile) const noexcept {
    return std::min(static_cast<double>(latency_ns_.percentile(quantile)) / 1e3, max_us());
  }
  double max_us() const noexcept {
    return static_cast<double>(max_ns_.load(std::memory_order_relaxed)) / 1e3;
  }
  u64 over_timeout() const noexcept { return over_timeout_.load(std::memory_order_relaxed); }

  // The slowest and the fastest connection's answered requests against the mean (1.00:
  // every connection was served alike; 0.10: one got a tenth of its share).
  double slowest_share() const noexcept { return share(/*fastest=*/false); }
  double fastest_share() const noexcept { return share(/*fastest=*/true); }

 private:
  double share(bool fastest) const noexcept {
    if (connections_ == 0 || requests() == 0) return 0;
    u64 pick = fastest ? 0 : ~u64{0};
    for (u32 c = 0; c < connections_; ++c) {
      const u64 n = per_connection_[c].load(std::memory_order_relaxed);
      pick = fastest ? std::max(pick, n) : std::min(pick, n);
    }
    return static_cast<double>(pick) * connections_ / static_cast<double>(requests());
  }

  u32 connections_;
  std::unique_ptr<std::atomic<u64>[]> per_connection_;
  Histogram latency_ns_;
  std::atomic<u64> max_ns_{0};
  std::atomic<u64> over_timeout_{0};
  std::atomic<u64> requests_{0};
};

}  // namespace paygate
