// The per-payer velocity rule of a merchant's risk rules (docs/ORDERS.md, "Risk
// rules"): how many checkouts one payer started with one merchant in the last minute.
//
// The gateway decides and the order's group records the decision (a checkout refused
// by a rule is a journaled command that makes the order rejected_risk), so replay never
// asks this again. It is the gateway's memory, per process: a restart forgets it.
//
// Estimated as sliding-window rate limiters commonly do, from this minute's count and
// the last minute's, weighted by how much of the last minute the window still covers
// (as if the last minute's checkouts were spread evenly through it): exact while every
// checkout counted falls in the current clock minute.
// Memory: one 32-byte entry per (merchant, payer) seen in the last two minutes, at most
// pairs_max (past it, older entries are swept, at most once a minute; with no room the
// rule admits).
// Thread-safe.
#pragma once

#include <mutex>
#include <unordered_map>

#include "base/types.h"

namespace paygate::api {

class CheckoutVelocity {
 public:
  explicit CheckoutVelocity(std::size_t pairs_max = std::size_t{1} << 20) : pairs_max_(pairs_max) {}

  // Counts one checkout at now_ns, unless `limit` were already counted in the minute
  // before it: then false, and it is not counted.
  bool admit(u64 merchant, u64 payer, u32 limit, u64 now_ns);
  std::size_t size() const;

 private:
  struct Window {
    u64 minute = 0;  // now / 60 s, of `current`
    u32 current = 0;
    u32 previous = 0;  // in minute - 1
  };
  struct PairHash {
    std::size_t operator()(const std::pair<u64, u64>& p) const noexcept {
      return std::hash<u64>{}(p.first * 0x9E3779B97F4A7C15ull ^ p.second);
    }
  };

  const std::size_t pairs_max_;
  mutable std::mutex mutex_;
  std::unordered_map<std::pair<u64, u64>, Window, PairHash> windows_;
  u64 swept_minute_ = ~u64{0};
};

}  // namespace paygate::api
