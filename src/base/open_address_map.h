// A fixed-capacity hash map with open addressing and linear probing.
//
// - Capacity is fixed at construction (at least twice the most keys it will hold,
//   rounded to a power of two), so a probe sequence stays short and nothing is
//   allocated afterwards. Inserting beyond max_size() is a caller bug (asserted):
//   callers check full() and answer with a result code.
// - The all-zero Key means "empty slot"; callers never insert it.
// - Erase shifts later entries of the cluster back instead of leaving tombstones,
//   so lookups never slow down as keys come and go.
// - Iteration order is the slot order, which depends on the hash: nothing that
//   iterates this map may let the order reach an output.
#pragma once

#include <bit>
#include <cstddef>

#include "base/assert.h"
#include "base/fixed_array.h"
#include "base/prefetch.h"
#include "base/types.h"

namespace paygate {

template <typename Key, typename Value, typename Hash>
class OpenAddressMap {
 public:
  struct Slot {
    Key key;
    Value value;
  };

  OpenAddressMap() = default;
  explicit OpenAddressMap(std::size_t max_size)
      : slots_(std::bit_ceil(max_size * 2 < 8 ? std::size_t{8} : max_size * 2)),
        mask_(slots_.size() - 1),
        max_size_(max_size) {}

  std::size_t size() const noexcept { return size_; }
  std::size_t max_size() const noexcept { return max_size_; }
  bool full() const noexcept { return size_ >= max_size_; }

  Value* find(const Key& key) noexcept {
    return const_cast<Value*>(static_cast<const OpenAddressMap*>(this)->find(key));
  }
  const Value* find(const Key& key) const noexcept {
    PG_ASSERT(!(key == Key{}));
    for (std::size_t i = home(key), probes = 0; probes <= mask_; i = (i + 1) & mask_, ++probes) {
      const Slot& slot = slots_[i];
      if (slot.key == key) return &slot.value;
      if (slot.key == Key{}) return nullptr;
    }
    return nullptr;
  }

  // REQUIRES: key not present and !full().
  void insert(const Key& key, const Value& value) noexcept {
    PG_ASSERT(!(key == Key{}));
    PG_ASSERT(size_ < max_size_);
    std::size_t i = home(key);
    while (!(slots_[i].key == Key{})) {
      PG_ASSERT(!(slots_[i].key == key));
      i = (i + 1) & mask_;
    }
    slots_[i] = Slot{key, value};
    ++size_;
  }

  // Returns false if the key was not present.
  bool erase(const Key& key) noexcept {
    PG_ASSERT(!(key == Key{}));
    std::size_t hole = home(key);
    while (!(slots_[hole].key == key)) {
      if (slots_[hole].key == Key{}) return false;
      hole = (hole + 1) & mask_;
    }
    // Backward shift: pull each later member of the cluster into the hole when the
    // hole lies on its probe path (between its home slot and where it sits now).
    for (std::size_t next = (hole + 1) & mask_; !(slots_[next].key == Key{});
         next = (next + 1) & mask_) {
      const std::size_t next_home = home(slots_[next].key);
      if (((hole - next_home) & mask_) < ((next - next_home) & mask_)) {
        slots_[hole] = slots_[next];
        hole = next;
      }
    }
    slots_[hole] = Slot{};
    --size_;
    return true;
  }

  void clear() noexcept {
    for (std::size_t i = 0; i < slots_.size(); ++i)
      slots_[i] = Slot{};
    size_ = 0;
  }

  // Hints the cache about the slot a later find(key) or insert(key) will start at.
  void prefetch(const Key& key, bool for_write = false) const noexcept {
    if (for_write) {
      prefetch_for_write(&slots_[home(key)]);
    } else {
      prefetch_for_read(&slots_[home(key)]);
    }
  }

  // For invariant checks and snapshots: every occupied slot, in slot order.
  template <typename Visit>
  void for_each(Visit&& visit) const {
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      if (!(slots_[i].key == Key{})) visit(slots_[i].key, slots_[i].value);
    }
  }

 private:
  std::size_t home(const Key& key) const noexcept {
    return static_cast<std::size_t>(Hash{}(key)) & mask_;
  }

  FixedArray<Slot> slots_;
  std::size_t mask_ = 0;
  std::size_t max_size_ = 0;
  std::size_t size_ = 0;
};

}  // namespace paygate
