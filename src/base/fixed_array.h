// A fixed-size array of trivially copyable elements, allocated once and zero-filled.
//
// Large arrays (accounts, pending transfers, hash tables) are mapped anonymously and
// advised to use transparent huge pages: the ledger touches them at random, and with
// 4 KiB pages almost every access would also miss the TLB. The memory is committed
// (touched) at construction so that no page fault lands on the hot path later.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
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
    void* memory = bytes_ >= kHugePageBytes ? map_huge_aligned(bytes_) : map(bytes_);
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

  static void* map(std::size_t bytes) {
    void* memory =
        ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) throw std::bad_alloc();
    return memory;
  }
  // Maps `bytes` starting on a huge-page boundary. The kernel backs only the aligned
  // 2 MiB stretches of a mapping with huge pages, and places a mapping on such a
  // boundary only when its length is a multiple of 2 MiB; an array that starts
  // anywhere loses huge pages at its ends, and a small array all of them. So map a
  // huge page more and give back the unaligned ends (docs/BENCHMARKS.md: a hot
  // group's durable throughput went from 0.90x of 23e6ef9's to within noise).
  static void* map_huge_aligned(std::size_t bytes) {
    constexpr std::size_t kPage = 4096;
    const std::size_t kept = (bytes + kPage - 1) / kPage * kPage;  // munmap takes whole pages
    const std::size_t mapped = kept + kHugePageBytes;
    auto* memory = static_cast<unsigned char*>(map(mapped));
    const auto address = reinterpret_cast<std::uintptr_t>(memory);
    const std::size_t head = (kHugePageBytes - address % kHugePageBytes) % kHugePageBytes;
    const std::size_t tail = mapped - head - kept;
    if (head > 0) ::munmap(memory, head);
    if (tail > 0) ::munmap(memory + head + kept, tail);
    unsigned char* aligned = memory + head;
    ::madvise(aligned, bytes, MADV_HUGEPAGE);
    return aligned;
  }

  void release() noexcept {
    if (data_ != nullptr) ::munmap(data_, bytes_);
    data_ = nullptr;
  }

  T* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t bytes_ = 0;
};

}  // namespace paygate
