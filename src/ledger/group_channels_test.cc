#include "ledger/group_channels.h"

#include <gtest/gtest.h>

#include <vector>

namespace paygate {
namespace {

using Arrival = GroupChannels::Arrival;

TEST(GroupChannels, SendsAtMostAWindowUnsettledAndSettlesOutOfOrder) {
  GroupChannels channels(3);
  for (u32 i = 0; i < kChannelWindow; ++i) {
    ASSERT_TRUE(channels.can_send(2));
    EXPECT_EQ(channels.send(2, 1000 + i), i);
  }
  EXPECT_FALSE(channels.can_send(2));
  EXPECT_TRUE(channels.can_send(1));  // each peer has its own window
  EXPECT_EQ(channels.unsettled(2), kChannelWindow);

  // Settling a later one frees nothing: the oldest still holds the window.
  EXPECT_TRUE(channels.is_open(2, 5, 1005));
  EXPECT_FALSE(channels.is_open(2, 5, 1006));
  channels.settle(2, 5);
  EXPECT_FALSE(channels.is_open(2, 5, 1005));
  EXPECT_FALSE(channels.can_send(2));
  // Settling the oldest moves past every settled one behind it.
  for (u32 i = 0; i < 5; ++i)
    channels.settle(2, i);
  EXPECT_EQ(channels.unsettled(2), kChannelWindow - 6);
  EXPECT_TRUE(channels.consistent());
  EXPECT_EQ(channels.send(2, 5000), kChannelWindow);
  EXPECT_TRUE(channels.is_open(2, kChannelWindow, 5000));
  EXPECT_FALSE(channels.is_open(2, 0, 5000));  // the same slot, an older number

  std::vector<u32> numbers;
  channels.for_each_unsettled([&](u32 peer, u32 number, u64) {
    EXPECT_EQ(peer, 2u);
    numbers.push_back(number);
  });
  ASSERT_EQ(numbers.size(), kChannelWindow - 5);
  EXPECT_EQ(numbers.front(), 6u);
  EXPECT_EQ(numbers.back(), kChannelWindow);
  EXPECT_TRUE(channels.consistent());
}

TEST(GroupChannels, ArrivalsAreFreshRepeatedOrStaleAcrossTheWrap) {
  GroupChannels channels(2);
  ResultCode recorded = ResultCode::ok;
  // Numbers just below the wrap and past it share slots with older ones.
  const u32 before_wrap = 0xFFFFFFFFu - 2;
  EXPECT_EQ(channels.arrival(1, before_wrap, &recorded), Arrival::fresh);
  channels.record(1, before_wrap, ResultCode::credit_account_not_found);
  EXPECT_EQ(channels.arrival(1, before_wrap, &recorded), Arrival::repeat);
  EXPECT_EQ(recorded, ResultCode::credit_account_not_found);

  const u32 after_wrap = before_wrap + kChannelWindow;  // wraps past zero, same slot
  EXPECT_LT(after_wrap, before_wrap);
  EXPECT_EQ(channels.arrival(1, after_wrap, &recorded), Arrival::fresh);
  channels.record(1, after_wrap, ResultCode::ok);
  EXPECT_EQ(channels.arrival(1, after_wrap, &recorded), Arrival::repeat);
  EXPECT_EQ(recorded, ResultCode::ok);
  // The older number in that slot is now stale: settled by its sender long ago.
  EXPECT_EQ(channels.arrival(1, before_wrap, &recorded), Arrival::stale);
  // Another peer's slots are its own.
  EXPECT_EQ(channels.arrival(0, before_wrap, &recorded), Arrival::fresh);
}

TEST(GroupChannels, SendingWrapsAroundTheNumbers) {
  GroupChannels channels(2);
  channels.outbound()[1] = GroupChannels::Outbound{.next = 0xFFFFFFFEu, .oldest = 0xFFFFFFFEu};
  EXPECT_EQ(channels.send(1, 7), 0xFFFFFFFEu);
  EXPECT_EQ(channels.send(1, 8), 0xFFFFFFFFu);
  EXPECT_EQ(channels.send(1, 9), 0u);
  EXPECT_EQ(channels.unsettled(1), 3u);
  EXPECT_TRUE(channels.is_open(1, 0, 9));
  channels.settle(1, 0xFFFFFFFEu);
  channels.settle(1, 0xFFFFFFFFu);
  EXPECT_EQ(channels.unsettled(1), 1u);
  EXPECT_TRUE(channels.consistent());
}

}  // namespace
}  // namespace paygate
