// A fixed-size array of trivially copyable elements, allocated once and zero-filled.
//
// Large arrays (accounts, pending transfers, hash tables) are mapped anonymously and
// advised to use transparent huge pages: the ledger touches them at random, and with
// 4 KiB pages almost every access would also miss the TLB. The memory is committed
// (touched) at construction so that no page fault lands on the hot path later.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstring>
#include <new>
#include <span>
#include <type_traits>
#include <utility>

#include "base/assert.h"

namespace paygate {

template <typename T>
class FixedArray {
  static_assert(std::is_trivially_copyable_v<T>, "FixedArray holds plain data only");
  static_assert(std::is_trivially_destructible_v<T>);

 public:
  FixedArray() noexcept = default;
  explicit FixedArray(std::size_t size) : size_(size) {
    if (size_ == 0) return;
    bytes_ = size_ * sizeof(T);
    void* memory =
        ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) throw std::bad_alloc();
    if (bytes_ >= kHugePageBytes) ::madvise(memory, bytes_, MADV_HUGEPAGE);
    // Anonymous memory reads as zero; writing commits every page now rather than later.
    std::memset(memory, 0, bytes_);
    data_ = static_cast<T*>(memory);
  }
  ~FixedArray() { release(); }

  FixedArray(const FixedArray&) = delete;
  FixedArray& operator=(const FixedArray&) = delete;
  FixedArray(FixedArray&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)),
        bytes_(std::exchange(other.bytes_, 0)) {}
  FixedArray& operator=(FixedArray&& other) noexcept {
    if (this != &other) {
      release();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
      bytes_ = std::exchange(other.bytes_, 0);
    }
    return *this;
  }

  std::size_t size() const noexcept { return size_; }
  T* data() noexcept { return data_; }
  const T* data() const noexcept { return data_; }
  T& operator[](std::size_t i) noexcept { return data_[i]; }
  const T& operator[](std::size_t i) const noexcept { return data_[i]; }
  std::span<T> span() noexcept { return {data_, size_}; }
  std::span<const T> span() const noexcept { return {data_, size_}; }

 private:
  static constexpr std::size_t kHugePageBytes = 2u << 20;

  void release() noexcept {
    if (data_ != nullptr) ::munmap(data_, bytes_);
    data_ = nullptr;
  }

  T* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t bytes_ = 0;
};

}  // namespace paygate
