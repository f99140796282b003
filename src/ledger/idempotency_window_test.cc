#include "ledger/idempotency_window.h"

#include <gtest/gtest.h>

namespace paygate {
namespace {

IdempotencyRecord record(u64 n, u64 at_ns) {
  return IdempotencyRecord{
      .key = {n, n + 100}, .content_hash = n * 3, .created_at_ns = at_ns, .result_id = n};
}

TEST(IdempotencyWindow, FindsRecordsInsideTheWindowOnly) {
  IdempotencyWindow window(4, 100);
  window.insert(record(1, 1000));
  ASSERT_NE(window.find({1, 101}, 1099), nullptr);
  EXPECT_EQ(window.find({1, 101}, 1099)->result_id, 1u);
  EXPECT_EQ(window.find({1, 101}, 1100), nullptr);  // the window is half-open
  EXPECT_EQ(window.find({1, 999}, 1000), nullptr);  // both halves of the key count
  EXPECT_TRUE(window.consistent());
}

TEST(IdempotencyWindow, FullWindowHasNoRoomUntilItsOldestExpires) {
  IdempotencyWindow window(3, 1000);
  for (u64 n = 1; n <= 3; ++n) {
    ASSERT_TRUE(window.has_room(n * 10));
    window.insert(record(n, n * 10));
  }
  EXPECT_EQ(window.room_at_ns(40), 1010u);
  EXPECT_FALSE(window.has_room(40));
  EXPECT_FALSE(window.has_room(1009));
  EXPECT_NE(window.find({1, 101}, 1009), nullptr);  // nothing was dropped to make room
  EXPECT_EQ(window.size(), 3u);
  EXPECT_TRUE(window.has_room(1010));  // the oldest left the window
  EXPECT_EQ(window.room_at_ns(1010), 1010u);
  window.insert(record(4, 1010));
  EXPECT_EQ(window.find({1, 101}, 1010), nullptr);
  EXPECT_NE(window.find({2, 102}, 1010), nullptr);
  EXPECT_TRUE(window.consistent());
}

TEST(IdempotencyWindow, ExpiredRecordsMakeRoomAndAreSkippedByVisits) {
  IdempotencyWindow window(3, 100);
  window.insert(record(1, 0));
  window.insert(record(2, 50));
  int live = 0;
  window.for_each_live(120, [&](const IdempotencyRecord& r) {
    ++live;
    EXPECT_EQ(r.result_id, 2u);
  });
  EXPECT_EQ(live, 1);
  window.insert(record(1, 120));  // the expired record under the same key is dropped first
  EXPECT_EQ(window.size(), 2u);
  EXPECT_EQ(window.find({1, 101}, 120)->created_at_ns, 120u);
  window.drop_expired(1000);
  EXPECT_EQ(window.size(), 0u);
  EXPECT_EQ(window.room_at_ns(1000), 1000u);
  EXPECT_TRUE(window.consistent());
}

}  // namespace
}  // namespace paygate
