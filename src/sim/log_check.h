// The simulator's check of a group's log after a restart (docs/SIMULATION.md, "What
// is checked"): the whole log, from its first command, replayed into a fresh ledger.
#pragma once

#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "ledger/command.h"
#include "pipeline/engine.h"
#include "pipeline/group.h"
#include "sim/simulation.h"

namespace paygate::sim {

// A request answered ok: durable, so every restart must find it in the log, at its
// sequence, with the results it was answered with.
struct Acknowledged {
  u32 group = 0;
  u64 first_sequence = 0;
  std::vector<Command> logged;  // in log order: the claim first, if any
  std::vector<CommandResult> results;
  // For retries.
  bool keyed_retry_candidate = false;
  std::vector<Command> commands;  // as submitted (without the claim)
  // Its annotations: which of `logged`, and the text (annotation_text).
  std::vector<std::pair<u32, std::string>> said;
  u64 acknowledged_at_ns = 0;  // monotonic
  u64 wall_jumps = 0;          // clock jumps when it was acknowledged
  u64 restarts = 0;            // ... and engine opens
};

// An annotation's text in the simulator: its request's tag (Command::extra_hash of
// each of its commands), then `padding` bytes.
std::string annotation_text(u64 tag, std::size_t padding);

[[noreturn]] inline void fail(const std::string& what) {
  throw SimulationFailure(what);
}

struct LogCheck {
  u32 group = 0;
  std::filesystem::path live;      // the group's directory
  std::filesystem::path archived;  // segments the group removed, as they were durable
  std::filesystem::path scratch;   // a directory this check may fill and remove
};

// Throws SimulationFailure unless: the log (archived segments older than the live
// ones, then the live ones) has no gap, ends clean where recovery continues, and
// replayed from its first command gives the state recovery built (`group`, opened
// and not started); every acknowledged request is in it at its sequence, the same
// commands, replaying to the answers it was given; and no request is in it in part
// (request_sizes: each request's tag, Command::extra_hash, to its length); every
// annotation in it names its own command's tag, and every acknowledged request's
// annotations are there (an orphan of a torn write left for a later command to
// take, or one lost, fails). Returns
// the replayed state's digest.
// Throws SimulationFailure unless nothing is unsettled between the engine's groups
// (opened, not started) and, for every pair and currency, the two clearing accounts
// sum to zero.
void check_settled(Engine& engine, std::span<const Currency> currencies);

u64 check_whole_log(const LogCheck& check, const Group& group,
                    std::span<const Acknowledged* const> acknowledged,
                    const std::map<u64, u32>& request_sizes);

}  // namespace paygate::sim
