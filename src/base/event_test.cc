#include "base/event.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace paygate {
namespace {

// Many notifiers, one waiter, in lock step: each notifier hands over one item, notifies,
// and waits for it to be taken before making the next, so no later notify can cover for
// a lost one. A wait that runs out its timeout while an item waits is a lost wake-up:
// every notify after the item's moved the epoch past what the waiter read, unless one
// was swallowed (issue: the waiter armed before reading the epoch, so a stale notify in
// between took the arming, and the next notify woke nobody; the group then slept to its
// 100 ms timeout). Bounded: a fixed number of items, and the first lost wake-up ends it.
// The 10 s timeout is far beyond any scheduling delay, so the outcome is not about time.
TEST(Event, NoWakeUpIsLostUnderManyNotifiers) {
  constexpr int kNotifiers = 2;
  constexpr u64 kItemsEach = 50'000;
  constexpr u64 kTimeoutNs = 10'000'000'000;
  Event event;
  std::atomic<u64> produced{0};
  std::atomic<u64> consumed{0};
  std::atomic<u64> lost{0};
  std::atomic<bool> stop{false};

  std::thread waiter([&] {
    while (!stop.load(std::memory_order_acquire)) {
      if (consumed.load(std::memory_order_acquire) < produced.load(std::memory_order_acquire)) {
        consumed.fetch_add(1, std::memory_order_acq_rel);
        continue;
      }
      const u32 epoch = event.prepare_wait();
      if (consumed.load(std::memory_order_seq_cst) < produced.load(std::memory_order_seq_cst) ||
          stop.load(std::memory_order_seq_cst)) {
        event.cancel_wait();
        continue;
      }
      if (!event.wait(epoch, kTimeoutNs) &&
          consumed.load(std::memory_order_seq_cst) < produced.load(std::memory_order_seq_cst)) {
        lost.fetch_add(1);
        stop.store(true);
      }
    }
  });
  std::vector<std::thread> notifiers;
  for (int n = 0; n < kNotifiers; ++n) {
    notifiers.emplace_back([&] {
      for (u64 i = 0; i < kItemsEach && !stop.load(std::memory_order_acquire); ++i) {
        const u64 mine = produced.fetch_add(1, std::memory_order_seq_cst) + 1;
        // A notifier delayed between its change and its notify (preempted, on a busy
        // machine) sends a stale notify: the waiter may have taken the item already and
        // be arming for its next wait. Spread the delays so that some land there.
        for (u64 spin = (mine * 0x9E3779B97F4A7C15ull) >> 56; spin > 0; --spin)
          __builtin_ia32_pause();
        event.notify_all();
        while (consumed.load(std::memory_order_acquire) < mine &&
               !stop.load(std::memory_order_acquire)) {
          std::this_thread::yield();
        }
      }
    });
  }
  for (std::thread& t : notifiers)
    t.join();
  stop.store(true, std::memory_order_seq_cst);
  event.notify_all();
  waiter.join();
  EXPECT_EQ(lost.load(), 0u) << "the waiter slept through a notify";
  EXPECT_EQ(consumed.load(), kNotifiers * kItemsEach);
}

}  // namespace
}  // namespace paygate
