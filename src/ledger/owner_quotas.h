// Per-merchant quotas inside a group: how much of the group's fixed tables (accounts,
// the pool of open holds, the client key table, the orders held) each owner uses, and
// may use.
//
// Merchants share a group; without a share each, one of them could fill a table and
// every other merchant of the group would be refused. The limits are ledger state,
// set by journaled commands (CommandKind::set_quota), so a replay refuses exactly
// what the live run refused. The usage counts are derived from the rest of the state
// (accounts by owner, open two-phase holds by the debit account's owner, live client
// keys by IdempotencyRecord::owner, orders held by their merchant): the ledger keeps
// them up to date as it goes,
// load() rebuilds them, and check_invariants() recounts them from scratch.
//
// Owner 0 (accounts of no merchant: system and clearing accounts, operators' keys) is
// never counted nor limited.
#pragma once

#include <algorithm>

#include "base/assert.h"
#include "base/fixed_array.h"
#include "base/hash.h"
#include "base/open_address_map.h"
#include "base/result_code.h"
#include "base/types.h"

namespace paygate {

enum class Quota : u8 { accounts = 0, holds = 1, idempotency_keys = 2, orders = 3 };
inline constexpr u32 kQuotaKinds = 4;

// A limit as a set_quota command carries it: a number of things, or one of these.
inline constexpr u32 kQuotaGroupDefault = ~u32{0};   // an owner: follow the group's default
inline constexpr u32 kQuotaUnchanged = ~u32{0} - 1;  // keep what is set now
// The most a limit may be set to (beyond any table's capacity); a value between it
// and the two above is malformed.
inline constexpr u32 kQuotaMax = u32{1} << 31;

struct QuotaLimits {
  // By Quota. For an owner, kQuotaGroupDefault follows the group's default; for the
  // group's default, kQuotaGroupDefault means no limit.
  // (orders, the fourth, was a reserved zero before snapshot version 6: load() reads
  // it as kQuotaGroupDefault there.)
  u32 limit[kQuotaKinds] = {kQuotaGroupDefault, kQuotaGroupDefault, kQuotaGroupDefault,
                            kQuotaGroupDefault};

  bool operator==(const QuotaLimits&) const noexcept = default;
  bool all_default() const noexcept { return *this == QuotaLimits{}; }
  // What state may hold: numbers up to kQuotaMax, or kQuotaGroupDefault.
  bool valid() const noexcept {
    for (const u32 value : limit) {
      if (value > kQuotaMax && value != kQuotaGroupDefault) return false;
    }
    return true;
  }
};
static_assert(sizeof(QuotaLimits) == 16);

struct OwnerQuota {
  u64 owner = 0;
  u32 used[kQuotaKinds] = {};
  QuotaLimits limits;  // this owner's own; kQuotaGroupDefault where it follows the group
};
static_assert(sizeof(OwnerQuota) == 40);

constexpr ResultCode quota_refusal(Quota quota) noexcept {
  switch (quota) {
    case Quota::accounts:
      return ResultCode::quota_accounts;
    case Quota::holds:
      return ResultCode::quota_holds;
    case Quota::idempotency_keys:
      return ResultCode::quota_idempotency_keys;
    case Quota::orders:
      return ResultCode::quota_orders;
  }
  return ResultCode::invalid_command;
}

class OwnerQuotas {
 public:
  OwnerQuotas() = default;
  explicit OwnerQuotas(u32 capacity) : owners_(capacity), index_(capacity), capacity_(capacity) {
    PG_ASSERT(capacity > 0);
  }

  // The owner's entry, if it has one.
  const OwnerQuota* find(u64 owner) const noexcept {
    const u32* slot = owner == 0 ? nullptr : index_.find(owner);
    return slot == nullptr ? nullptr : &owners_[*slot];
  }
  OwnerQuota* find(u64 owner) noexcept {
    return const_cast<OwnerQuota*>(static_cast<const OwnerQuotas*>(this)->find(owner));
  }
  // The owner's entry, made if it has none; nullptr when every entry is in use. An
  // idle entry (nothing counted, no limit of its own) is logically absent: it is
  // reused when room is needed, so whether there is room depends only on the state,
  // not on which idle entries a run happened to leave behind (a rolled-back batch, a
  // recovery that rebuilt only what counts). REQUIRES: owner != 0.
  OwnerQuota* find_or_add(u64 owner) noexcept {
    PG_ASSERT(owner != 0);
    if (OwnerQuota* found = find(owner)) return found;
    u32 slot = count_;
    if (count_ == capacity_) {
      // Rare (every entry taken): a scan for an idle one to reuse.
      slot = capacity_;
      for (u32 i = 0; i < count_ && slot == capacity_; ++i) {
        if (idle(owners_[i])) slot = i;
      }
      if (slot == capacity_) return nullptr;
      const bool erased = index_.erase(owners_[slot].owner);
      PG_ASSERT(erased);
    } else {
      ++count_;
    }
    owners_[slot] = OwnerQuota{};
    owners_[slot].owner = owner;
    index_.insert(owner, slot);
    return &owners_[slot];
  }
  static bool idle(const OwnerQuota& entry) noexcept {
    return entry.limits.all_default() &&
           std::all_of(std::begin(entry.used), std::end(entry.used), [](u32 n) { return n == 0; });
  }
  // Whether one more of `quota` fits the entry's limit in force.
  bool has_room(const OwnerQuota& entry, Quota quota) const noexcept {
    const u32 q = static_cast<u32>(quota);
    const u32 limit = effective_limit(entry, quota);
    return limit == kQuotaGroupDefault || entry.used[q] < limit;
  }
  // The limit in force: the owner's own, else the group's (kQuotaGroupDefault: none).
  u32 effective_limit(const OwnerQuota& entry, Quota quota) const noexcept {
    const u32 q = static_cast<u32>(quota);
    return entry.limits.limit[q] != kQuotaGroupDefault ? entry.limits.limit[q] : defaults_.limit[q];
  }

  // Counting. REQUIRES for remove: the owner has an entry with a count above zero.
  void add(OwnerQuota& entry, Quota quota) noexcept { ++entry.used[static_cast<u32>(quota)]; }
  void add(u64 owner, Quota quota) noexcept {
    if (owner == 0) return;
    OwnerQuota* entry = find(owner);
    PG_ASSERT(entry != nullptr);
    ++entry->used[static_cast<u32>(quota)];
  }
  void remove(u64 owner, Quota quota) noexcept {
    if (owner == 0) return;
    OwnerQuota* entry = find(owner);
    PG_ASSERT(entry != nullptr && entry->used[static_cast<u32>(quota)] > 0);
    --entry->used[static_cast<u32>(quota)];
  }

  // Applies limits as set_quota carries them (kQuotaUnchanged keeps a limit).
  static void merge(QuotaLimits& into, const QuotaLimits& from) noexcept {
    for (u32 q = 0; q < kQuotaKinds; ++q) {
      if (from.limit[q] != kQuotaUnchanged) into.limit[q] = from.limit[q];
    }
  }
  QuotaLimits& defaults() noexcept { return defaults_; }
  const QuotaLimits& defaults() const noexcept { return defaults_; }

  u32 size() const noexcept { return count_; }
  u32 capacity() const noexcept { return capacity_; }
  // Every entry, idle ones included, in slot order (callers sort what they keep).
  template <typename Visit>
  void for_each(Visit&& visit) const {
    for (u32 i = 0; i < count_; ++i)
      visit(owners_[i]);
  }
  void clear_usage() noexcept {
    for (u32 i = 0; i < count_; ++i)
      std::fill(std::begin(owners_[i].used), std::end(owners_[i].used), 0u);
  }

 private:
  FixedArray<OwnerQuota> owners_;  // by slot, in the order they were made
  OpenAddressMap<u64, u32, Mix64Hash> index_;
  u32 capacity_ = 0;
  u32 count_ = 0;
  QuotaLimits defaults_;
};

}  // namespace paygate
