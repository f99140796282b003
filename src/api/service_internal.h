// What the files of Service (service*.cc) share and nothing else needs.
#pragma once

#include <chrono>

#include "api/request_decoder.h"
#include "base/types.h"

namespace paygate::api::detail {

// One decoder per IO thread, reused for every request it parses.
inline RequestDecoder& decoder() {
  thread_local RequestDecoder instance;
  return instance;
}

inline u64 wall_seconds() {
  return static_cast<u64>(std::chrono::duration_cast<std::chrono::seconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count());
}

// The wall clock in ns, for Retry-After against the ledger's command time.
inline u64 wall_ns() {
  return static_cast<u64>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count());
}

}  // namespace paygate::api::detail
