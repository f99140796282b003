#include "api/auth_limits.h"

#include <algorithm>

namespace paygate::api {

void AuthFailureLimiter::refill(Allowance& a, u64 now_ns) const noexcept {
  if (now_ns > a.refilled_ns) {
    a.tokens = std::min(burst_,
                        a.tokens + rate_per_s_ * static_cast<double>(now_ns - a.refilled_ns) / 1e9);
    a.refilled_ns = now_ns;
  }
}

bool AuthFailureLimiter::may_try(std::string_view address, u64 now_ns, u32* retry_after_s) {
  std::lock_guard lock(mutex_);
  const auto it = by_address_.find(std::string(address));
  if (it == by_address_.end()) return true;  // never failed, or long forgiven
  Allowance& a = it->second;
  refill(a, now_ns);
  if (a.tokens >= 1.0) return true;
  ++refused_;
  *retry_after_s = static_cast<u32>((1.0 - a.tokens) / rate_per_s_) + 1;
  return false;
}

bool AuthFailureLimiter::failed(std::string_view address, u64 now_ns, u64* failures) {
  std::lock_guard lock(mutex_);
  auto it = by_address_.find(std::string(address));
  if (it == by_address_.end()) {
    make_room(now_ns);
    it = by_address_
             .emplace(std::string(address), Allowance{.tokens = burst_, .refilled_ns = now_ns})
             .first;
  }
  Allowance& a = it->second;
  refill(a, now_ns);
  a.tokens = std::max(0.0, a.tokens - 1.0);
  ++a.failures;
  const bool exhausted = a.tokens < 1.0;
  constexpr u64 kLogEveryNs = 60ull * 1'000'000'000;
  if (!exhausted || (a.logged_ns != 0 && now_ns - a.logged_ns < kLogEveryNs)) return false;
  *failures = a.failures;
  a.failures = 0;
  a.logged_ns = now_ns;
  return true;
}

// Forgets the addresses whose allowance has refilled (they are as if new); if none
// has, the one that failed longest ago.
void AuthFailureLimiter::make_room(u64 now_ns) {
  if (by_address_.size() < addresses_max_) return;
  for (auto it = by_address_.begin(); it != by_address_.end();) {
    refill(it->second, now_ns);
    it = it->second.tokens >= burst_ ? by_address_.erase(it) : std::next(it);
  }
  if (by_address_.size() < addresses_max_) return;
  const auto oldest = std::min_element(
      by_address_.begin(), by_address_.end(),
      [](const auto& a, const auto& b) { return a.second.refilled_ns < b.second.refilled_ns; });
  by_address_.erase(oldest);
}

u64 AuthFailureLimiter::refused() const {
  std::lock_guard lock(mutex_);
  return refused_;
}

std::size_t AuthFailureLimiter::addresses() const {
  std::lock_guard lock(mutex_);
  return by_address_.size();
}

}  // namespace paygate::api
