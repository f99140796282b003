// Memory for one HTTP request while it is parsed and served: its header fields and
// its body. Handed out by bumping a pointer and taken back all at once when the
// request is done, so a warm connection parses request after request without
// touching the heap (Beast allocates each header field on its own, and the body
// string once more; together they were a tenth of the HTTP thread's time).
//
// The first block is kept between requests, up to kKeptBytesMax: an idle connection
// holds at most that per pipelined slot. What does not fit comes from the heap in
// blocks of its own, freed at reset; the kept block then grows toward what the
// request needed, so a steady stream of same-sized requests settles into one block.
#pragma once

#include <algorithm>
#include <cstddef>
#include <memory>
#include <new>
#include <vector>

#include "base/assert.h"

namespace paygate::api {

class RequestArena {
 public:
  static constexpr std::size_t kFirstBytes = 4 * 1024;
  static constexpr std::size_t kKeptBytesMax = 64 * 1024;

  RequestArena() = default;
  RequestArena(const RequestArena&) = delete;
  RequestArena& operator=(const RequestArena&) = delete;

  void* allocate(std::size_t bytes, std::size_t alignment) {
    PG_ASSERT(alignment <= alignof(std::max_align_t) && (alignment & (alignment - 1)) == 0);
    const std::size_t start = (used_ + alignment - 1) & ~(alignment - 1);
    if (start + bytes <= capacity_) {
      used_ = start + bytes;
      return block_.get() + start;
    }
    if (capacity_ == 0 && bytes <= wanted_) {
      // The first allocation after a reset that dropped the block, or the very first.
      block_.reset(new std::byte[wanted_]);  // not zeroed
      capacity_ = wanted_;
      used_ = bytes;
      return block_.get();
    }
    overflow_bytes_ += bytes;
    overflow_.emplace_back(new std::byte[bytes]);
    return overflow_.back().get();
  }

  // REQUIRES: nothing allocated from here is still in use.
  void reset() noexcept {
    used_ = 0;
    if (overflow_.empty()) return;
    // Next time, one block for what this request needed, within the bound.
    wanted_ = std::min(kKeptBytesMax, std::max(wanted_, capacity_ + overflow_bytes_));
    if (wanted_ > capacity_) {
      block_.reset();
      capacity_ = 0;
    }
    overflow_.clear();
    overflow_bytes_ = 0;
  }

  std::size_t kept_bytes() const noexcept { return capacity_; }
  std::size_t overflow_blocks() const noexcept { return overflow_.size(); }

 private:
  std::unique_ptr<std::byte[]> block_;
  std::size_t capacity_ = 0;
  std::size_t used_ = 0;
  std::size_t wanted_ = kFirstBytes;
  std::vector<std::unique_ptr<std::byte[]>> overflow_;
  std::size_t overflow_bytes_ = 0;
};

// A standard allocator over a RequestArena; deallocation is deferred to the reset.
template <typename T>
struct ArenaAllocator {
  using value_type = T;

  explicit ArenaAllocator(RequestArena* a) noexcept : arena(a) {}
  template <typename U>
  ArenaAllocator(const ArenaAllocator<U>& other) noexcept : arena(other.arena) {}

  T* allocate(std::size_t n) {
    if (n > static_cast<std::size_t>(-1) / sizeof(T)) throw std::bad_array_new_length();
    return static_cast<T*>(arena->allocate(n * sizeof(T), alignof(T)));
  }
  void deallocate(T*, std::size_t) noexcept {}

  template <typename U>
  bool operator==(const ArenaAllocator<U>& other) const noexcept {
    return arena == other.arena;
  }

  RequestArena* arena;
};

}  // namespace paygate::api
