// Open holds by transfer id → their slot in the ledger's pool.
//
// Why not one hash map: a hold's id is the group's next transfer serial, so a hash
// scatters consecutive holds over the whole table. With millions open that table is
// hundreds of MiB, and on a virtual machine each scattered write is a TLB miss with a
// two-level page walk: it was most of a hold's cost (docs/BENCHMARKS.md).
//
// So the index has two parts:
// - a ring addressed by serial (serial & mask), where consecutive holds land in
//   consecutive entries: 256 of them share a 4 KiB page. Every new hold goes here.
// - a hash map behind it for the holds that outlive their ring entry: when a newer
//   serial needs the entry, the older hold moves to the map (a spill).
// The ring has at least as many entries as there can be open holds, so a hold spills
// only when more transfers than that were made while it stayed open. A lookup tries
// the ring entry first, then the map (only when something has spilled).
//
// Placement is never visible: for_each visits in memory order, and callers sort.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>

#include "base/assert.h"
#include "base/fixed_array.h"
#include "base/hash.h"
#include "base/ids.h"
#include "base/open_address_map.h"
#include "base/prefetch.h"
#include "base/types.h"

namespace paygate {

class PendingIndex {
 public:
  PendingIndex() = default;
  explicit PendingIndex(u32 max_size)
      : ring_(std::bit_ceil(std::max<std::size_t>(max_size, 8))),
        ring_mask_(ring_.size() - 1),
        spilled_(max_size),
        max_size_(max_size) {}

  std::size_t size() const noexcept { return in_ring_ + spilled_.size(); }
  std::size_t spilled() const noexcept { return spilled_.size(); }

  const u32* find(u64 id) const noexcept {
    PG_ASSERT(id != 0);
    const Entry& entry = ring_[position(id)];
    if (entry.id == id) return &entry.slot;
    return spilled_.size() == 0 ? nullptr : spilled_.find(id);
  }

  // REQUIRES: id not present, size() < max_size.
  void insert(u64 id, u32 slot) noexcept {
    PG_ASSERT(id != 0 && size() < max_size_);
    Entry& entry = ring_[position(id)];
    if (entry.id == 0) {
      entry = Entry{id, slot};
      ++in_ring_;
      return;
    }
    PG_ASSERT(entry.id != id);
    // The newer serial keeps the entry: new holds are the ones looked up soonest.
    // (An older one arrives here only when a rolled-back batch reopens a hold.)
    if (id_serial(entry.id) < id_serial(id)) {
      spilled_.insert(entry.id, entry.slot);
      entry = Entry{id, slot};
    } else {
      spilled_.insert(id, slot);
    }
  }

  // Returns false if the id was not present.
  bool erase(u64 id) noexcept {
    PG_ASSERT(id != 0);
    Entry& entry = ring_[position(id)];
    if (entry.id == id) {
      entry = Entry{};
      --in_ring_;
      return true;
    }
    return spilled_.size() != 0 && spilled_.erase(id);
  }

  // Hints the cache about what a later find(id) or insert(id) reads first.
  void prefetch(u64 id, bool for_write = false) const noexcept {
    if (for_write) {
      prefetch_for_write(&ring_[position(id)]);
    } else {
      prefetch_for_read(&ring_[position(id)]);
      if (spilled_.size() != 0) spilled_.prefetch(id);
    }
  }

  // Every open hold, in memory order (not an order anything may depend on).
  template <typename Visit>
  void for_each(Visit&& visit) const {
    for (std::size_t i = 0; i < ring_.size(); ++i) {
      if (ring_[i].id != 0) visit(ring_[i].id, ring_[i].slot);
    }
    spilled_.for_each(visit);
  }

 private:
  struct Entry {
    u64 id;  // 0: empty
    u32 slot;
  };
  std::size_t position(u64 id) const noexcept { return id_serial(id) & ring_mask_; }

  FixedArray<Entry> ring_;
  std::size_t ring_mask_ = 0;
  std::size_t in_ring_ = 0;
  OpenAddressMap<u64, u32, Mix64Hash> spilled_;
  std::size_t max_size_ = 0;
};

}  // namespace paygate
