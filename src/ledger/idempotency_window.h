// Remembered results of commands that carried an idempotency key.
//
// Records sit in a FIFO in the order they were made, which is also command-time
// order, and a map finds them by key. A record is answered while it is younger than
// the configured window, and is never dropped before that: when the FIFO is full of
// records still inside the window there is no room (has_room() is false) and the
// ledger refuses the new keyed command (idempotency_capacity) rather than forget a
// key a client may still retry. Memory is bounded by the capacity; docs/OPERATING.md
// says how to size it.
//
// Lookups honour expiry themselves, so when expired records are physically removed
// (when room is needed, or on tick) never changes an answer.
#pragma once

#include "base/assert.h"
#include "base/fixed_array.h"
#include "base/hash.h"
#include "base/open_address_map.h"
#include "base/prefetch.h"
#include "base/result_code.h"
#include "ledger/command.h"
#include "ledger/owner_quotas.h"

namespace paygate {

struct IdempotencyRecord {
  IdempotencyKey key;
  u64 content_hash = 0;
  u64 created_at_ns = 0;
  u64 result_id = 0;         // a single command's result id; a batch's first transfer id
  u64 first_account_id = 0;  // an atomic batch's first account created
  ResultCode code = ResultCode::ok;
  u16 failed_index = 0;    // an atomic batch that failed: the command that failed
  u32 channel_number = 0;  // a transfer between groups: CommandResult::channel_number
  // The merchant whose idempotency_keys quota the record counts against (Ledger::
  // key_owner); 0: none. States saved before quotas load with 0.
  u64 owner = 0;
};
static_assert(sizeof(IdempotencyRecord) == 64);

class IdempotencyWindow {
 public:
  IdempotencyWindow() = default;
  IdempotencyWindow(u32 capacity, u64 window_ns)
      : records_(capacity), index_(capacity), capacity_(capacity), window_ns_(window_ns) {
    PG_ASSERT(capacity > 0);
    PG_ASSERT(window_ns > 0);
  }

  // The record for key, if one was made less than window_ns before now_ns.
  const IdempotencyRecord* find(const IdempotencyKey& key, u64 now_ns) const noexcept {
    PG_ASSERT(!key.empty());
    const u32* slot = index_.find(key);
    if (slot == nullptr) return nullptr;
    const IdempotencyRecord& record = records_[*slot];
    PG_ASSERT(record.key == key);
    return expired(record, now_ns) ? nullptr : &record;
  }

  // Whether a record made at now_ns fits: drops the records past the window, then
  // says whether one is free. Never drops a record still inside the window.
  bool has_room(u64 now_ns) noexcept {
    drop_expired(now_ns);
    return size_ < capacity_;
  }

  // REQUIRES: find(record.key, record.created_at_ns) == nullptr,
  // has_room(record.created_at_ns), and created_at_ns is not earlier than that of any
  // record inserted before.
  void insert(const IdempotencyRecord& record) noexcept {
    PG_ASSERT(!record.key.empty());
    drop_expired(record.created_at_ns);
    // A lookup said "absent", and expired records are gone now: the key is free.
    PG_ASSERT(index_.find(record.key) == nullptr);
    PG_ASSERT(size_ < capacity_);
    if (size_ > 0) PG_ASSERT(newest().created_at_ns <= record.created_at_ns);
    const u32 slot = static_cast<u32>((head_ + size_) % capacity_);
    records_[slot] = record;
    index_.insert(record.key, slot);
    ++size_;
  }

  // Asks the cache for the index slot a lookup of `key` starts at (and the record a
  // new one would fill): each is a scattered access in a table of many megabytes.
  void prefetch(const IdempotencyKey& key) const noexcept {
    index_.prefetch(key, /*for_write=*/true);
    if (capacity_ > 0) prefetch_for_write(&records_[(head_ + size_) % capacity_]);
  }

  // Removes records that can no longer be answered; bounded by capacity().
  void drop_expired(u64 now_ns) noexcept {
    while (size_ > 0 && expired(records_[head_], now_ns))
      drop_oldest();
  }

  // When a record made now would next find room: now_ns while there is room (or a
  // record past the window to drop), else when the oldest record leaves the window.
  u64 room_at_ns(u64 now_ns) const noexcept {
    if (size_ < capacity_ || expired(records_[head_], now_ns)) return now_ns;
    return records_[head_].created_at_ns + window_ns_;
  }

  u32 size() const noexcept { return size_; }
  u32 capacity() const noexcept { return capacity_; }
  u64 window_ns() const noexcept { return window_ns_; }

  // Records still answered at now_ns, oldest first: the order they were made, which
  // is deterministic. Expired records not yet dropped are skipped, so what is visited
  // does not depend on when the cleanup ran.
  template <typename Visit>
  void for_each_live(u64 now_ns, Visit&& visit) const {
    for (u32 i = 0; i < size_; ++i) {
      const IdempotencyRecord& record = records_[(head_ + i) % capacity_];
      if (!expired(record, now_ns)) visit(record);
    }
  }

  // Every record held, live or past the window but not yet dropped, oldest first.
  template <typename Visit>
  void for_each_held(Visit&& visit) const {
    for (u32 i = 0; i < size_; ++i)
      visit(records_[(head_ + i) % capacity_]);
  }

  // From now on a record that leaves the table is uncounted from its owner's usage
  // there (the caller counts the records it inserts). nullptr: nothing is counted.
  void count_owners_in(OwnerQuotas* quotas) noexcept { counted_in_ = quotas; }

  bool consistent() const noexcept {
    if (index_.size() != size_) return false;
    for (u32 i = 0; i < size_; ++i) {
      const u32 slot = static_cast<u32>((head_ + i) % capacity_);
      const u32* found = index_.find(records_[slot].key);
      if (found == nullptr || *found != slot) return false;
      if (i > 0 &&
          records_[(head_ + i - 1) % capacity_].created_at_ns > records_[slot].created_at_ns) {
        return false;
      }
    }
    return true;
  }

 private:
  struct KeyHash {
    u64 operator()(const IdempotencyKey& key) const noexcept {
      return mix64(key.lo ^ mix64(key.hi));
    }
  };

  bool expired(const IdempotencyRecord& record, u64 now_ns) const noexcept {
    PG_ASSERT(now_ns >= record.created_at_ns);
    return now_ns - record.created_at_ns >= window_ns_;
  }
  const IdempotencyRecord& newest() const noexcept {
    return records_[(head_ + size_ - 1) % capacity_];
  }
  void drop_oldest() noexcept {
    PG_ASSERT(size_ > 0);
    if (counted_in_ != nullptr) counted_in_->remove(records_[head_].owner, Quota::idempotency_keys);
    const bool erased = index_.erase(records_[head_].key);
    PG_ASSERT(erased);
    records_[head_] = IdempotencyRecord{};
    head_ = (head_ + 1) % capacity_;
    --size_;
  }

  FixedArray<IdempotencyRecord> records_;
  OpenAddressMap<IdempotencyKey, u32, KeyHash> index_;
  u32 capacity_ = 0;
  u32 head_ = 0;
  u32 size_ = 0;
  u64 window_ns_ = 0;
  OwnerQuotas* counted_in_ = nullptr;
};

}  // namespace paygate
