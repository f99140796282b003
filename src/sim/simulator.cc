// The deterministic simulator (docs/SIMULATION.md): runs seeds, one after another, each
// a whole engine on a simulated disk and clock (simulation.h), and prints one line per
// seed. The first seed that breaks a check stops it, with the command that replays it.
//
//   simulator                     seeds 1..200 (or PAYGATE_SIM_SEEDS of them)
//   simulator --seeds 5000        seeds 1..5000
//   simulator --seed 1234 -v      one seed, telling each crash and restart
//   simulator --long              seeds from --first-seed on, until stopped
//   simulator --twice             each seed twice: the two reports must be identical
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

#include "base/log.h"
#include "base/temp_dir.h"
#include "sim/simulation.h"

int main(int argc, char** argv) {
  using namespace paygate;
  CLI::App app{"paygate's deterministic simulator: whole groups on a simulated disk and clock"};
  // PAYGATE_SIM_SEEDS: the default, for builds where each seed costs more (ASan).
  const char* seeds_env = std::getenv("PAYGATE_SIM_SEEDS");
  u64 seeds = seeds_env != nullptr ? std::strtoull(seeds_env, nullptr, 10) : 200;
  u64 first_seed = 1;
  std::optional<u64> only_seed;
  u32 steps = 300;
  bool long_run = false;
  bool twice = false;
  bool verbose = false;
  app.add_option("--seeds", seeds, "how many seeds to run")->capture_default_str();
  app.add_option("--first-seed", first_seed, "the first seed")->capture_default_str();
  app.add_option("--seed", only_seed, "run this one seed only");
  app.add_option("--steps", steps, "workload actions per seed")->capture_default_str();
  app.add_flag("--long", long_run, "run seeds until stopped");
  app.add_flag("--twice", twice, "run every seed twice and compare the reports");
  app.add_flag("-v,--verbose", verbose, "say what each seed does, and log");
  CLI11_PARSE(app, argc, argv);
  set_log_level(verbose ? spdlog::level::info : spdlog::level::off);
  if (only_seed) {
    first_seed = *only_seed;
    seeds = 1;
  }

  const auto started = std::chrono::steady_clock::now();
  u64 crashes = 0, orders = 0;
  u64 ran = 0;
  for (u64 seed = first_seed; long_run || seed < first_seed + seeds; ++seed) {
    TempDir dir("paygate-sim");
    sim::SimulationOptions options{
        .seed = seed, .steps = steps, .dir = dir.path(), .verbose = verbose};
    std::string line;
    try {
      line = sim::simulate(options).line();
      if (twice) {
        TempDir again("paygate-sim");
        options.dir = again.path();
        const std::string second = sim::simulate(options).line();
        if (second != line) {
          std::printf("simulator FAILED seed=%llu: not deterministic\n  first:  %s\n  second: %s\n",
                      static_cast<unsigned long long>(seed), line.c_str(), second.c_str());
          return 1;
        }
      }
    } catch (const sim::SimulationFailure& failure) {
      std::printf(
          "simulator FAILED seed=%llu steps=%u: %s\n  replay: simulator --seed %llu "
          "--steps %u --verbose\n",
          static_cast<unsigned long long>(seed), steps, failure.what(),
          static_cast<unsigned long long>(seed), steps);
      return 1;
    }
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
    const auto at = line.find("crashes=");
    crashes += std::stoull(line.substr(at + 8));
    orders += std::stoull(line.substr(line.find("orders=") + 7));
    ++ran;
  }
  // A long run that made no order would check orders not at all.
  if (ran * steps >= 3000 && orders == 0) {
    std::printf("simulator FAILED: %llu seeds made no order\n",
                static_cast<unsigned long long>(ran));
    return 1;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::printf("simulator ok seeds=%llu steps=%u crashes=%llu orders=%llu\n",
              static_cast<unsigned long long>(ran), steps, static_cast<unsigned long long>(crashes),
              static_cast<unsigned long long>(orders));
  std::fprintf(stderr, "simulator: %.1f s\n", seconds);
  return 0;
}
