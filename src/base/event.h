// A futex-backed event count: how the pipeline's threads sleep without burning a core
// and wake without losing a signal.
//
//   waiter:   const u32 epoch = event.prepare_wait();
//             if (condition()) { event.cancel_wait(); ... } else event.wait(epoch, timeout);
//   notifier: make condition() true; event.notify_all();
//
// Either the notifier sees the waiter (and wakes it), or the waiter sees the condition:
// both sides use sequentially consistent operations on the waiter count. Notifying
// when nobody waits costs one fence and one load; notifying again before the
// waiters have run costs one exchange more.
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>

#include "base/types.h"

namespace paygate {

class Event {
 public:
  // The epoch is read before the waiter arms: a notify that lands between the two
  // either finds the arming of an earlier wait (and moves the epoch, so the wait below
  // returns at once) or finds none and leaves the arming below for the next notify.
  // Arming first let a stale notify in between take the arming and move the epoch to
  // what was then read: the next notify saw no arming and woke nobody, and the waiter
  // slept to its timeout (event_test.cc).
  [[nodiscard]] u32 prepare_wait() noexcept {
    waiters_.fetch_add(1, std::memory_order_seq_cst);
    const u32 epoch = epoch_.load(std::memory_order_seq_cst);
    armed_.store(true, std::memory_order_seq_cst);
    return epoch;
  }
  void cancel_wait() noexcept { waiters_.fetch_sub(1, std::memory_order_seq_cst); }

  // Sleeps until notify_all() moves the epoch past `epoch`, or timeout_ns passes
  // (0: no limit). Spurious returns are possible; callers re-check their condition.
  // Returns false only when the timeout passed.
  bool wait(u32 epoch, u64 timeout_ns) noexcept {
    bool woken = true;
    if (epoch_.load(std::memory_order_seq_cst) == epoch) {
      timespec timeout{static_cast<time_t>(timeout_ns / 1'000'000'000),
                       static_cast<long>(timeout_ns % 1'000'000'000)};
      const long rc = ::syscall(SYS_futex, reinterpret_cast<u32*>(&epoch_), FUTEX_WAIT_PRIVATE,
                                epoch, timeout_ns == 0 ? nullptr : &timeout, nullptr, 0);
      woken = !(rc != 0 && errno == ETIMEDOUT);
    }
    waiters_.fetch_sub(1, std::memory_order_seq_cst);
    return woken;
  }

  void notify_all() noexcept {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (waiters_.load(std::memory_order_seq_cst) == 0) return;
    // Only the first notify after a prepare_wait() needs the system call: the ones
    // after it, before the woken thread has even run (a burst of submits), would
    // wake nobody new. A waiter that prepares later re-arms, and either this
    // exchange sees that or the waiter sees the condition made true before it.
    if (!armed_.exchange(false, std::memory_order_seq_cst)) return;
    epoch_.fetch_add(1, std::memory_order_seq_cst);
    ::syscall(SYS_futex, reinterpret_cast<u32*>(&epoch_), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr,
              nullptr, 0);
  }

 private:
  static_assert(sizeof(std::atomic<u32>) == sizeof(u32));
  alignas(64) std::atomic<u32> epoch_{0};
  std::atomic<u32> waiters_{0};
  std::atomic<bool> armed_{false};  // a waiter prepared since the last wake-up
};

}  // namespace paygate
