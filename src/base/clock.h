// The monotonic clock in nanoseconds, for measuring how long things take (metrics,
// deadlines). Never part of any ledger state: commands carry the group's own time.
#pragma once

#include <chrono>

#include "base/types.h"

namespace paygate {

inline u64 steady_ns() noexcept {
  return static_cast<u64>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                              std::chrono::steady_clock::now().time_since_epoch())
                              .count());
}

}  // namespace paygate
