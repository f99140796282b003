#include "base/hash.h"

#include <gtest/gtest.h>

#include <set>

namespace paygate {
namespace {

// Content fingerprints made with Hasher are stored in snapshots and compared after a
// restart; a change to the function would make every stored idempotency record look
// "different". These golden values pin it.
TEST(Hasher, OutputIsPinned) {
  EXPECT_EQ(mix64(0), 0u);
  EXPECT_EQ(mix64(1), 0x5692161D100B05E5ull);
  EXPECT_EQ(Hasher{}.value(), 0x492B8D6066C09227ull);
  EXPECT_EQ(Hasher{}.add(1).add(2).value(), 0x9609F211F17402E1ull);
  EXPECT_EQ(Hasher{}.add_bytes("paygate").value(), 0x866380FB2F54A907ull);
}

TEST(Hasher, DependsOnOrderAndEveryValue) {
  EXPECT_NE(Hasher{}.add(1).add(2).value(), Hasher{}.add(2).add(1).value());
  EXPECT_NE(Hasher{}.add(0).value(), Hasher{}.value());
  EXPECT_NE(Hasher{}.add_bytes("ab").value(),
            Hasher{}.add_bytes(std::string_view("ab\0", 3)).value());
  std::set<u64> seen;
  for (u64 i = 0; i < 100000; ++i)
    EXPECT_TRUE(seen.insert(Hasher{}.add(i).value()).second);
}

}  // namespace
}  // namespace paygate
