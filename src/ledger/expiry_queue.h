// Open holds ordered by when they expire: by (expires_at_ns, transfer id).
//
// Holds are kept in lanes, one per timeout value. Within a lane, holds arrive in
// expiry order (time never goes back and ids only grow), so a lane is a FIFO: a
// doubly linked list through the holds' slots, appended at the tail. A small binary
// heap orders the lanes by their head. So:
//   push    O(1)  (plus O(log lanes) when a lane opens)
//   remove  O(1)  (plus O(log lanes) when it was a lane's head) - a hold posted or
//                 voided anywhere, including the oldest, which is the usual case
//   top     O(1); expiring the top is a remove.
// A binary heap over all holds made every capture of the oldest hold a full-depth
// sift (docs/BENCHMARKS.md); lanes make it a few pointer writes.
//
// The order is total (ties on time are broken by id), so which hold expires first
// never depends on history. remove() returns where the hold sat, so an atomic batch
// that fails can restore() it exactly (undo runs newest first).
#pragma once

#include "base/assert.h"
#include "base/fixed_array.h"
#include "base/hash.h"
#include "base/open_address_map.h"
#include "base/types.h"

namespace paygate {

class ExpiryQueue {
 public:
  static constexpr u32 kNone = ~u32{0};

  struct Entry {
    u64 expires_at_ns;
    u64 transfer_id;
    u32 slot;
  };
  // Where a removed hold sat: its lane and its neighbours there.
  struct Position {
    u32 lane_key = 0;
    u32 prev = kNone;
    u32 next = kNone;
  };

  ExpiryQueue() = default;
  explicit ExpiryQueue(u32 slots_max)
      : nodes_(slots_max),
        lanes_(slots_max),
        free_lanes_(slots_max),
        lane_heap_(slots_max),
        lane_index_(slots_max) {
    for (u32 i = 0; i < slots_max; ++i) {
      nodes_[i].lane = kNone;
      free_lanes_[i] = slots_max - 1 - i;
    }
    free_lane_top_ = slots_max;
  }

  u32 size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  u32 lanes() const noexcept { return lane_count_; }
  bool contains(u32 slot) const noexcept { return nodes_[slot].lane != kNone; }

  Entry top() const noexcept {
    PG_ASSERT(size_ > 0);
    const u32 slot = lanes_[lane_heap_[0]].head;
    return Entry{nodes_[slot].expires_at_ns, nodes_[slot].transfer_id, slot};
  }

  // lane_key: the hold's timeout (non-zero). REQUIRES: the hold sorts after every
  // hold already in its lane.
  void push(u32 slot, u64 expires_at_ns, u64 transfer_id, u32 lane_key) noexcept {
    PG_ASSERT(slot < nodes_.size() && !contains(slot) && lane_key != 0);
    Node& node = nodes_[slot];
    node.expires_at_ns = expires_at_ns;
    node.transfer_id = transfer_id;
    node.next = kNone;
    if (const u32* found = lane_index_.find(lane_key)) {
      Lane& lane = lanes_[*found];
      PG_ASSERT(before(nodes_[lane.tail], node));
      node.prev = lane.tail;
      node.lane = *found;
      nodes_[lane.tail].next = slot;
      lane.tail = slot;
    } else {
      node.prev = kNone;
      open_lane(slot, lane_key);
    }
    ++size_;
  }

  Position remove(u32 slot) noexcept {
    PG_ASSERT(slot < nodes_.size() && contains(slot));
    Node& node = nodes_[slot];
    const u32 lane_at = node.lane;
    Lane& lane = lanes_[lane_at];
    const Position position{lane.key, node.prev, node.next};
    if (node.prev != kNone) {
      nodes_[node.prev].next = node.next;
    } else {
      lane.head = node.next;
    }
    if (node.next != kNone) {
      nodes_[node.next].prev = node.prev;
    } else {
      lane.tail = node.prev;
    }
    node.lane = kNone;
    --size_;
    if (lane.head == kNone) {
      close_lane(lane_at);
    } else if (position.prev == kNone) {
      sift_down(lane.heap_pos);  // a later head: the lane sorts later now
    }
    return position;
  }

  // Puts back a hold that remove() took out, where it was. REQUIRES: every change
  // since that remove() has been undone.
  void restore(u32 slot, u64 expires_at_ns, u64 transfer_id, const Position& position) noexcept {
    PG_ASSERT(slot < nodes_.size() && !contains(slot));
    Node& node = nodes_[slot];
    node.expires_at_ns = expires_at_ns;
    node.transfer_id = transfer_id;
    node.prev = position.prev;
    node.next = position.next;
    ++size_;
    if (position.prev == kNone && position.next == kNone) {
      PG_ASSERT(lane_index_.find(position.lane_key) == nullptr);
      open_lane(slot, position.lane_key);
      return;
    }
    const u32 lane_at = nodes_[position.prev != kNone ? position.prev : position.next].lane;
    PG_ASSERT(lane_at != kNone && lanes_[lane_at].key == position.lane_key);
    node.lane = lane_at;
    Lane& lane = lanes_[lane_at];
    if (position.next != kNone) {
      PG_ASSERT(nodes_[position.next].prev == position.prev);
      nodes_[position.next].prev = slot;
    } else {
      PG_ASSERT(lane.tail == position.prev);
      lane.tail = slot;
    }
    if (position.prev != kNone) {
      PG_ASSERT(nodes_[position.prev].next == position.next);
      nodes_[position.prev].next = slot;
    } else {
      PG_ASSERT(lane.head == position.next);
      lane.head = slot;
      sift_up(lane.heap_pos);  // an earlier head: the lane sorts earlier now
    }
  }

  // For invariant checks: lanes sorted and linked both ways, the heap ordered, every
  // index in agreement, and the sizes adding up.
  bool consistent() const noexcept {
    u32 counted = 0;
    for (u32 h = 0; h < lane_count_; ++h) {
      const u32 lane_at = lane_heap_[h];
      const Lane& lane = lanes_[lane_at];
      if (lane.heap_pos != h) return false;
      if (h > 0 && lane_before(lane_at, lane_heap_[(h - 1) / 2])) return false;
      const u32* indexed = lane_index_.find(lane.key);
      if (indexed == nullptr || *indexed != lane_at) return false;
      u32 prev = kNone;
      for (u32 slot = lane.head; slot != kNone; slot = nodes_[slot].next) {
        const Node& node = nodes_[slot];
        if (node.lane != lane_at || node.prev != prev) return false;
        if (prev != kNone && !before(nodes_[prev], node)) return false;
        prev = slot;
        if (++counted > size_) return false;
      }
      if (lane.tail != prev) return false;
    }
    return counted == size_ && lane_index_.size() == lane_count_;
  }

 private:
  struct Node {
    u64 expires_at_ns;
    u64 transfer_id;
    u32 prev;
    u32 next;
    u32 lane;  // kNone: not queued
    u32 reserved;
  };
  struct Lane {
    u32 key;
    u32 head;
    u32 tail;
    u32 heap_pos;
  };
  static bool before(const Node& a, const Node& b) noexcept {
    return a.expires_at_ns != b.expires_at_ns ? a.expires_at_ns < b.expires_at_ns
                                              : a.transfer_id < b.transfer_id;
  }
  bool lane_before(u32 a, u32 b) const noexcept {
    return before(nodes_[lanes_[a].head], nodes_[lanes_[b].head]);
  }

  void open_lane(u32 slot, u32 key) noexcept {
    PG_ASSERT(free_lane_top_ > 0);
    const u32 lane_at = free_lanes_[--free_lane_top_];
    lanes_[lane_at] = Lane{key, slot, slot, lane_count_};
    nodes_[slot].lane = lane_at;
    lane_index_.insert(key, lane_at);
    lane_heap_[lane_count_++] = lane_at;
    sift_up(lanes_[lane_at].heap_pos);
  }

  void close_lane(u32 lane_at) noexcept {
    const u32 at = lanes_[lane_at].heap_pos;
    const bool erased = lane_index_.erase(lanes_[lane_at].key);
    PG_ASSERT(erased);
    free_lanes_[free_lane_top_++] = lane_at;
    const u32 last = --lane_count_;
    if (at == last) return;
    place(at, lane_heap_[last]);
    if (at > 0 && lane_before(lane_heap_[at], lane_heap_[(at - 1) / 2])) {
      sift_up(at);
    } else {
      sift_down(at);
    }
  }

  void place(u32 at, u32 lane_at) noexcept {
    lane_heap_[at] = lane_at;
    lanes_[lane_at].heap_pos = at;
  }

  void sift_up(u32 at) noexcept {
    const u32 moving = lane_heap_[at];
    while (at > 0 && lane_before(moving, lane_heap_[(at - 1) / 2])) {
      place(at, lane_heap_[(at - 1) / 2]);
      at = (at - 1) / 2;
    }
    place(at, moving);
  }

  void sift_down(u32 at) noexcept {
    const u32 moving = lane_heap_[at];
    for (;;) {
      const u32 left = 2 * at + 1;
      if (left >= lane_count_) break;
      const u32 right = left + 1;
      const u32 child =
          right < lane_count_ && lane_before(lane_heap_[right], lane_heap_[left]) ? right : left;
      if (!lane_before(lane_heap_[child], moving)) break;
      place(at, lane_heap_[child]);
      at = child;
    }
    place(at, moving);
  }

  FixedArray<Node> nodes_;      // by pool slot
  FixedArray<Lane> lanes_;      // by lane number
  FixedArray<u32> free_lanes_;  // a stack of unused lane numbers
  u32 free_lane_top_ = 0;
  FixedArray<u32> lane_heap_;  // lane numbers, ordered by their heads
  u32 lane_count_ = 0;
  OpenAddressMap<u64, u32, Mix64Hash> lane_index_;  // timeout → lane number
  u32 size_ = 0;
};

}  // namespace paygate
