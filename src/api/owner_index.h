// Which merchant owns each account, readable from any IO thread without asking the
// group: an account's owner never changes, so the gateway can decide "is this yours?"
// at the edge. Filled from each ledger at start (before the groups run) and as
// accounts are created (before the creation is answered, so before anyone can
// know the new id).
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "base/assert.h"
#include "base/ids.h"
#include "base/types.h"

namespace paygate::api {

class OwnerIndex {
 public:
  OwnerIndex(IdPrefix first_group, u32 groups, u32 accounts_max)
      : region_(first_group.region), groups_(groups), accounts_max_(accounts_max) {
    for (u32 g = 0; g < groups; ++g) {
      owners_.push_back(std::make_unique<std::atomic<u64>[]>(accounts_max));
      for (u32 i = 0; i < accounts_max; ++i)
        owners_.back()[i].store(kUnknown, std::memory_order_relaxed);
    }
  }

  void set(u64 account_id, u64 owner) noexcept {
    std::atomic<u64>* slot = find(account_id);
    PG_ASSERT(slot != nullptr && owner != kUnknown);
    slot->store(owner, std::memory_order_release);
  }

  // Also remembers the owner's first account in its currency (the lowest id): where an
  // order is paid when it names no account.
  void set(u64 account_id, u64 owner, u32 currency) {
    set(account_id, owner);
    if (owner == 0) return;
    std::lock_guard lock(first_mutex_);
    auto [it, added] = first_.try_emplace({owner, currency}, account_id);
    if (!added && account_id < it->second) it->second = account_id;
  }
  std::optional<u64> first_account(u64 owner, u32 currency) const {
    std::lock_guard lock(first_mutex_);
    const auto it = first_.find({owner, currency});
    if (it == first_.end()) return std::nullopt;
    return it->second;
  }

  // The owner (0: none), or nothing for an account not known to exist.
  std::optional<u64> owner(u64 account_id) const noexcept {
    const std::atomic<u64>* slot = const_cast<OwnerIndex*>(this)->find(account_id);
    if (slot == nullptr) return std::nullopt;
    const u64 owner = slot->load(std::memory_order_acquire);
    if (owner == kUnknown) return std::nullopt;
    return owner;
  }

 private:
  static constexpr u64 kUnknown = ~u64{0};

  std::atomic<u64>* find(u64 account_id) noexcept {
    const IdPrefix prefix = id_prefix(account_id);
    const u64 serial = id_serial(account_id);
    if (prefix.region != region_ || prefix.group >= groups_ || serial == 0 ||
        serial > accounts_max_) {
      return nullptr;
    }
    return &owners_[prefix.group][serial - 1];
  }

  const u32 region_;
  const u32 groups_;
  const u64 accounts_max_;
  std::vector<std::unique_ptr<std::atomic<u64>[]>> owners_;
  mutable std::mutex first_mutex_;
  std::map<std::pair<u64, u32>, u64> first_;  // (owner, currency) → its first account
};

}  // namespace paygate::api
