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

#include <string>
#include <vector>

#include "ledger/types.h"

namespace paygate {

class Engine;

struct UnsettledTransfer {
  u32 group = 0;  // the group holding the debit account (and the hold)
  Transfer hold;
  u32 channel_number = 0;
};

struct BetweenGroupsReport {
  u64 unsettled = 0;  // found at start
  u64 posted = 0;     // the other group credited: the money moved
  u64 voided = 0;     // the other group refused: the money went back
  std::string
      problem;  // empty, or why some are still unsettled (they are retried at the next start)
};

// Every group's unsettled transfers. REQUIRES: the groups are not running.
std::vector<UnsettledTransfer> unsettled_transfers(Engine& engine);

// Delivers and settles them. REQUIRES: the groups are running.
BetweenGroupsReport finish_unsettled(Engine& engine, const std::vector<UnsettledTransfer>& found);

}  // namespace paygate
