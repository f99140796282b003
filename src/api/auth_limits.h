// Failed authentication, counted per client address (docs/API.md, security model): a
// client that keeps presenting bad credentials is refused for a while before they are
// even checked, which slows a guess at a key or token to a crawl and spares the HMAC
// and JWT work. Bounded: at most addresses_max addresses are followed at once.
#pragma once

#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "base/types.h"

namespace paygate::api {

class AuthFailureLimiter {
 public:
  // Each address may fail `burst` times at once, then `rate_per_s` times a second.
  AuthFailureLimiter(double rate_per_s, double burst, std::size_t addresses_max)
      : rate_per_s_(rate_per_s), burst_(burst), addresses_max_(addresses_max) {}

  // Whether `address` may present credentials now; if not, *retry_after_s says when.
  bool may_try(std::string_view address, u64 now_ns, u32* retry_after_s);
  // A failure from `address`. True when it used up the address's allowance and no
  // line has been logged for that address in the last minute: the caller logs one.
  bool failed(std::string_view address, u64 now_ns, u64* failures);

  u64 refused() const;
  std::size_t addresses() const;

 private:
  struct Allowance {
    double tokens = 0;
    u64 refilled_ns = 0;
    u64 failures = 0;   // since the last line logged
    u64 logged_ns = 0;  // when that line was
  };
  void refill(Allowance& a, u64 now_ns) const noexcept;
  void make_room(u64 now_ns);  // REQUIRES: mutex_ held

  const double rate_per_s_;
  const double burst_;
  const std::size_t addresses_max_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, Allowance> by_address_;
  u64 refused_ = 0;
};

}  // namespace paygate::api
