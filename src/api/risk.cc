#include "api/risk.h"

namespace paygate::api {

namespace {
constexpr u64 kMinuteNs = 60'000'000'000ull;
}

bool CheckoutVelocity::admit(u64 merchant, u64 payer, u32 limit, u64 now_ns) {
  const u64 minute = now_ns / kMinuteNs;
  std::lock_guard lock(mutex_);
  auto it = windows_.find({merchant, payer});
  if (it == windows_.end()) {
    if (windows_.size() >= pairs_max_) {
      // Swept at most once a minute: what one sweep left recent stays so until then.
      if (swept_minute_ != minute) {
        swept_minute_ = minute;
        std::erase_if(windows_,
                      [&](const auto& entry) { return entry.second.minute + 1 < minute; });
      }
      if (windows_.size() >= pairs_max_) return true;  // no room to count: the rule admits
    }
    it = windows_.emplace(std::pair{merchant, payer}, Window{.minute = minute}).first;
  }
  Window& w = it->second;
  if (w.minute != minute) {
    w.previous = w.minute + 1 == minute ? w.current : 0;
    w.current = 0;
    w.minute = minute;
  }
  // The share of the last minute that the window [now - 1 min, now] still covers.
  const double covered = 1.0 - static_cast<double>(now_ns % kMinuteNs) / kMinuteNs;
  const double recent = w.current + w.previous * covered;
  if (recent + 1 > limit) return false;
  ++w.current;
  return true;
}

std::size_t CheckoutVelocity::size() const {
  std::lock_guard lock(mutex_);
  return windows_.size();
}

}  // namespace paygate::api
