// Finishing transfers between groups after a restart.
//
// A transfer between groups is three commands in two journals (docs/LEDGER.md): the
// hold in the debit account's group, the credit in the other group, the settlement
// back in the first. The gateway carries each step to the next as soon as the last
// is durable; a crash (or a failed step) can leave the hold unsettled, and its
// ledger knows it (Ledger::for_each_unsettled). When the engine starts, before it
// serves anything, every such transfer is delivered and settled again. Repeating a
// step is harmless: a delivery is applied once per channel number, and settling
// again answers how it settled.
#pragma once

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "ledger/types.h"
#include "pipeline/carry.h"

namespace paygate {

class Engine;

struct BetweenGroupsReport {
  u64 unsettled = 0;  // found at start
  u64 posted = 0;     // the other group credited: the money moved
  u64 voided = 0;     // the other group refused: the money went back
  std::string
      problem;  // empty, or why some are still unsettled (they are retried at the next start)
};

// Every group's unsettled transfers. REQUIRES: the groups are not running.
std::vector<UnsettledTransfer> unsettled_transfers(Engine& engine);

// Delivers and settles them (CarryBetweenGroups, a channel at a time). REQUIRES: the
// groups are running.
BetweenGroupsReport finish_unsettled(Engine& engine, const std::vector<UnsettledTransfer>& found);

// While the groups run: a step the gateway could not take (a group overloaded or
// stopping, a client gone) leaves its transfer unsettled, holding the money and a
// place in its channel's window. Every `interval_ns` this thread reads each group's
// unsettled transfers (through the group, like any read) and finishes those that
// were already unsettled at its previous look; fresh ones are the gateway's to carry.
// Finishing a transfer the gateway is also carrying is harmless: repeated steps
// change nothing.
class BetweenGroupsFinisher {
 public:
  BetweenGroupsFinisher(Engine& engine, u64 interval_ns);  // 0: no thread (look())
  ~BetweenGroupsFinisher();                                // stops the thread
  BetweenGroupsFinisher(const BetweenGroupsFinisher&) = delete;
  BetweenGroupsFinisher& operator=(const BetweenGroupsFinisher&) = delete;

  u64 finished() const noexcept { return finished_.load(std::memory_order_relaxed); }
  // Looks whose finishing left a problem (logged, with the transfer): a rising count
  // means steps keep failing and money stays held.
  u64 problems() const noexcept { return problems_.load(std::memory_order_relaxed); }
  // At the last look: transfers between groups not yet settled, and when the oldest of
  // them was made (wall ns; 0 when none).
  u64 unsettled() const noexcept { return unsettled_.load(std::memory_order_relaxed); }
  u64 oldest_unsettled_at_ns() const noexcept {
    return oldest_unsettled_at_ns_.load(std::memory_order_relaxed);
  }

  // One look: reads each group's unsettled transfers and finishes those seen at the
  // previous look too. The thread's work; with interval_ns 0 there is no thread and
  // whoever owns the finisher calls it (the simulator, with groups driven inline).
  void look();

 private:
  void run();

  Engine& engine_;
  const u64 interval_ns_;
  std::set<std::pair<u64, u32>> seen_;  // (transfer id, channel number) at the last look
  std::atomic<u64> finished_{0};
  std::atomic<u64> problems_{0};
  std::atomic<u64> unsettled_{0};
  std::atomic<u64> oldest_unsettled_at_ns_{0};
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace paygate
