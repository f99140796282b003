#include "api/request_arena.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

namespace paygate::api {
namespace {

bool aligned(const void* p, std::size_t alignment) {
  return reinterpret_cast<std::uintptr_t>(p) % alignment == 0;
}

TEST(RequestArena, HandsOutAlignedDisjointMemoryFromOneBlock) {
  RequestArena arena;
  char* a = static_cast<char*>(arena.allocate(3, 1));
  void* b = arena.allocate(8, 8);
  void* c = arena.allocate(16, 16);
  EXPECT_TRUE(aligned(b, 8));
  EXPECT_TRUE(aligned(c, 16));
  EXPECT_GE(static_cast<char*>(b), a + 3);
  EXPECT_GE(static_cast<char*>(c), static_cast<char*>(b) + 8);
  EXPECT_EQ(arena.kept_bytes(), RequestArena::kFirstBytes);
  EXPECT_EQ(arena.overflow_blocks(), 0u);
}

TEST(RequestArena, ResetReusesTheBlock) {
  RequestArena arena;
  void* first = arena.allocate(100, 8);
  arena.reset();
  EXPECT_EQ(arena.allocate(100, 8), first);
}

// What does not fit comes from the heap; after the reset the kept block grows to what
// the request needed, within kKeptBytesMax, so the next such request fits in it.
TEST(RequestArena, OverflowGrowsTheKeptBlockWithinItsBound) {
  RequestArena arena;
  arena.allocate(1000, 8);
  void* big = arena.allocate(RequestArena::kFirstBytes, 8);
  ASSERT_NE(big, nullptr);
  EXPECT_EQ(arena.overflow_blocks(), 1u);
  arena.reset();
  EXPECT_EQ(arena.overflow_blocks(), 0u);
  arena.allocate(1000, 8);
  arena.allocate(RequestArena::kFirstBytes, 8);
  EXPECT_EQ(arena.overflow_blocks(), 0u);
  EXPECT_EQ(arena.kept_bytes(), 2 * RequestArena::kFirstBytes);

  // A body larger than the bound: served from the heap each time, never kept.
  arena.reset();
  arena.allocate(4 * RequestArena::kKeptBytesMax, 8);
  arena.reset();
  arena.allocate(8, 8);
  EXPECT_EQ(arena.kept_bytes(), RequestArena::kKeptBytesMax);
  arena.allocate(4 * RequestArena::kKeptBytesMax, 8);
  EXPECT_EQ(arena.overflow_blocks(), 1u);
  arena.reset();
  EXPECT_EQ(arena.kept_bytes(), RequestArena::kKeptBytesMax);
}

TEST(RequestArena, ServesStandardContainers) {
  RequestArena arena;
  using ArenaString = std::basic_string<char, std::char_traits<char>, ArenaAllocator<char>>;
  ArenaString text{ArenaAllocator<char>(&arena)};
  for (int i = 0; i < 2000; ++i)
    text += static_cast<char>('a' + i % 26);
  std::vector<std::uint64_t, ArenaAllocator<std::uint64_t>> numbers{
      ArenaAllocator<std::uint64_t>(&arena)};
  for (std::uint64_t i = 0; i < 1000; ++i)
    numbers.push_back(i * i);
  EXPECT_EQ(text.size(), 2000u);
  EXPECT_EQ(text[1999], static_cast<char>('a' + 1999 % 26));
  EXPECT_EQ(numbers[999], 999u * 999u);
  EXPECT_TRUE(aligned(numbers.data(), alignof(std::uint64_t)));
  EXPECT_EQ(ArenaAllocator<char>(&arena), ArenaAllocator<std::uint64_t>(&arena));
}

}  // namespace
}  // namespace paygate::api
