// What a group's start costs, per million of each capacity (docs/OPERATING.md, "What
// start costs"): every capacity is allocated and touched when a group opens, before a
// command is replayed. For each capacity in turn, opens an empty group with that one
// at --million million (of 1,048,576, the defaults' size) and every other at its least, and
// measures Group::open's time and the resident memory it added, against a group with all of them at
// their least (the baseline, measured in the same run). Each figure is the median of --runs opens.
//
//   ./build/bench/start_cost                 1 million, 3 runs each
//   ./build/bench/start_cost --million 4
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "base/log.h"
#include "base/temp_dir.h"
#include "pipeline/group.h"

namespace {

using namespace paygate;

u64 resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  u64 pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * 4096;
}

struct Cost {
  double seconds = 0;
  double bytes = 0;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

Cost measure(const std::function<void(GroupConfig&)>& set, u32 runs) {
  std::vector<double> seconds, bytes;
  for (u32 r = 0; r < runs; ++r) {
    TempDir dir("paygate-start-cost");
    GroupConfig config;
    config.dir = dir.path();
    config.ledger.accounts_max = 1024;
    config.ledger.pending_max = 1024;
    config.ledger.recent_transfers_max = 1024;
    config.ledger.idempotency_keys_max = 1024;
    config.ledger.signature_keys_max = 1024;
    config.events_max = kBatchMax;
    config.ring_capacity = 1024;
    config.release_queue_max = 1024;
    config.journal_segment_bytes = 4u << 20;
    config.group_commit_bytes_max = 1u << 20;
    set(config);
    const u64 before = resident_bytes();
    const auto started = std::chrono::steady_clock::now();
    auto group = Group::open(config);
    const double took =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    if (!group.ok()) {
      std::fprintf(stderr, "start_cost: open failed: %s\n", group.status().to_string().c_str());
      std::exit(1);
    }
    seconds.push_back(took);
    bytes.push_back(static_cast<double>(resident_bytes() - before));
  }
  return Cost{median(seconds), median(bytes)};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"What a group's start costs per million of each capacity"};
  u32 million = 1;
  u32 runs = 3;
  app.add_option("--million", million, "each capacity measured at this many million")
      ->capture_default_str();
  app.add_option("--runs", runs, "opens per figure (the median is shown)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  set_log_level(spdlog::level::warn);
  const u32 n = million << 20;  // a million here is 1,048,576: the defaults' size

  struct Capacity {
    const char* name;
    std::function<void(GroupConfig&)> set;
  };
  const std::vector<Capacity> capacities = {
      {"ledger.accounts_max", [n](GroupConfig& c) { c.ledger.accounts_max = n; }},
      {"ledger.pending_max", [n](GroupConfig& c) { c.ledger.pending_max = n; }},
      {"ledger.recent_transfers_max", [n](GroupConfig& c) { c.ledger.recent_transfers_max = n; }},
      {"ledger.idempotency_keys_max", [n](GroupConfig& c) { c.ledger.idempotency_keys_max = n; }},
      {"ledger.signature_keys_max", [n](GroupConfig& c) { c.ledger.signature_keys_max = n; }},
      {"group.events_max", [n](GroupConfig& c) { c.events_max = n; }},
      {"group.ring_capacity", [n](GroupConfig& c) { c.ring_capacity = n; }},
  };
  const Cost base = measure([](GroupConfig&) {}, runs);
  std::printf("baseline (every capacity at its least): open %.1f ms, %.1f MiB resident\n",
              base.seconds * 1e3, base.bytes / (1 << 20));
  std::printf("%-30s %14s %16s\n", "capacity", "ms per million", "MiB per million");
  for (const Capacity& capacity : capacities) {
    const Cost cost = measure(capacity.set, runs);
    std::printf("%-30s %14.1f %16.1f\n", capacity.name,
                (cost.seconds - base.seconds) * 1e3 / million,
                (cost.bytes - base.bytes) / (1 << 20) / million);
    std::fflush(stdout);
  }
  std::printf("start_cost ok\n");
  return 0;
}
