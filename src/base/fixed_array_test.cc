#include "base/fixed_array.h"

#include <gtest/gtest.h>

#include <cstdint>

#include "base/types.h"

namespace paygate {
namespace {

constexpr std::uintptr_t kHugePage = 2u << 20;

TEST(FixedArray, StartsZeroFilled) {
  FixedArray<u64> small(100);
  FixedArray<u64> large((3u << 20) / sizeof(u64) + 5);
  for (std::size_t i = 0; i < small.size(); ++i)
    EXPECT_EQ(small[i], 0u);
  for (std::size_t i = 0; i < large.size(); i += 4099)
    EXPECT_EQ(large[i], 0u);
  EXPECT_EQ(large[large.size() - 1], 0u);
}

// An array of a huge page or more starts on a huge-page boundary whatever its size,
// so that all of it can be backed by huge pages (not only the aligned middle).
TEST(FixedArray, LargeArraysStartOnAHugePageBoundary) {
  for (std::size_t bytes : {std::size_t{2} << 20, (std::size_t{8} << 20) + 64,
                            (std::size_t{5} << 20) + 4096 + 8, std::size_t{3} << 20}) {
    FixedArray<u64> array(bytes / sizeof(u64));
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(array.data()) % kHugePage, 0u) << bytes;
    array[array.size() - 1] = 7;  // the whole length is mapped and writable
    EXPECT_EQ(array[array.size() - 1], 7u);
  }
}

TEST(FixedArray, MovesOwnership) {
  FixedArray<u32> a(kHugePage);
  a[5] = 9;
  FixedArray<u32> b = std::move(a);
  EXPECT_EQ(a.size(), 0u);
  EXPECT_EQ(a.data(), nullptr);
  EXPECT_EQ(b[5], 9u);
  a = std::move(b);
  EXPECT_EQ(a[5], 9u);
}

}  // namespace
}  // namespace paygate
