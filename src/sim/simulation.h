// One seed of the deterministic simulator (docs/SIMULATION.md): whole groups — their
// ledgers, journals, snapshots, recovery and the protocol between groups — driven
// from one thread on a simulated clock (ManualClock) and a simulated disk
// (SimStorage), by a seeded random workload, with crashes, torn writes, failed writes
// and syncs, bit flips and clock jumps. After every restart it checks what a crash
// must never break; the first check that fails throws SimulationFailure.
#pragma once

#include <filesystem>
#include <stdexcept>
#include <string>

#include "base/types.h"

namespace paygate::sim {

struct SimulationOptions {
  u64 seed = 1;
  u32 steps = 300;            // workload actions (each a submit, a turn, a flush, ...)
  std::filesystem::path dir;  // an empty directory of its own
  bool verbose = false;       // a line per crash and restart, on stderr
};

// What one seed did. Everything in it follows from the seed alone: the same seed
// gives the same report, byte for byte (trace is a hash of every action and answer).
struct SeedReport {
  u64 seed = 0;
  u32 groups = 0;
  u64 steps = 0;
  u64 requests = 0;      // submitted and taken
  u64 acknowledged = 0;  // answered ok: durable
  u64 crashes = 0;       // power cuts (the disk keeps only what the crash model keeps)
  u64 restarts = 0;      // engine opens that succeeded
  u64 torn_writes = 0;
  u64 lost_writes = 0;  // unsynced writes a crash dropped
  u64 injected_errors = 0;
  u64 corruptions_detected = 0;  // flips in acknowledged records, each refused at start
  u64 flips_unsynced = 0;        // bits flipped in never-synced bytes a crash kept
  u64 repairs = 0;               // journals cut where such a flip made a record corrupt
  u64 snapshots = 0;
  u64 clock_jumps = 0;
  u64 orders = 0;  // orders made and acknowledged (their steps follow)
  u64 trace = 0;

  std::string line() const;
};

class SimulationFailure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

SeedReport simulate(const SimulationOptions& options);

}  // namespace paygate::sim
