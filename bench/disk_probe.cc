// disk_probe: how long fdatasync takes on a disk, alone and while other threads keep
// the CPUs busy — the measurements behind the latency notes in docs/BENCHMARKS.md.
//
// A loop of pwrite(--bytes) + fdatasync every --gap-us, for --seconds, on a
// preallocated file in --dir; three times: alone, next to --threads threads that
// spin, and next to --threads threads that run in bursts (100 µs on, 100 µs off).
// Prints p50/p99/p999/max and when the syncs slower than 4 ms happened.
//
//   ./build/bench/disk_probe [--dir /var/tmp] [--seconds 4] [--threads 2]
#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string dir = "/var/tmp";
  double seconds = 4;
  unsigned threads = 2;
  unsigned bytes = 24576;
  unsigned gap_us = 300;
};

void probe(const Options& options, const char* load, unsigned threads) {
  std::atomic<bool> stop{false};
  std::vector<std::thread> others;
  for (unsigned i = 0; i < threads; ++i) {
    others.emplace_back([&, load] {
      while (!stop.load(std::memory_order_relaxed)) {
        const auto until = Clock::now() + std::chrono::microseconds(100);
        while (Clock::now() < until) {
        }
        if (std::string(load) == "bursts")
          std::this_thread::sleep_for(std::chrono::microseconds(100));
      }
    });
  }
  const std::string path = options.dir + "/disk-probe.tmp";
  const int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0644);
  ::fallocate(fd, 0, 0, 512u << 20);
  ::fsync(fd);
  std::vector<char> block(options.bytes, 'x');
  std::vector<double> ms;
  std::vector<double> slow_at;
  const auto start = Clock::now();
  off_t offset = 0;
  while (Clock::now() - start < std::chrono::duration<double>(options.seconds) &&
         offset < (500 << 20)) {
    const auto t = Clock::now();
    if (::pwrite(fd, block.data(), block.size(), offset) < 0 || ::fdatasync(fd) != 0) {
      std::perror("disk_probe");
      break;
    }
    offset += static_cast<off_t>(block.size());
    const double took = std::chrono::duration<double, std::milli>(Clock::now() - t).count();
    ms.push_back(took);
    if (took > 4) slow_at.push_back(std::chrono::duration<double, std::milli>(t - start).count());
    std::this_thread::sleep_for(std::chrono::microseconds(options.gap_us));
  }
  stop = true;
  for (auto& t : others)
    t.join();
  ::close(fd);
  ::unlink(path.c_str());
  std::sort(ms.begin(), ms.end());
  const auto at = [&](double q) {
    return ms[static_cast<std::size_t>(q * static_cast<double>(ms.size() - 1))];
  };
  std::printf(
      "load=%s threads=%u syncs=%zu p50_ms=%.2f p99_ms=%.2f p999_ms=%.2f max_ms=%.2f "
      "slow_over_4ms=%zu at_ms=",
      load, threads, ms.size(), at(0.5), at(0.99), at(0.999), ms.back(), slow_at.size());
  for (std::size_t i = 0; i < slow_at.size() && i < 12; ++i)
    std::printf("%s%.0f", i ? "," : "", slow_at[i]);
  std::printf("\n");
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  CLI::App app{"disk_probe: fdatasync latency alone and under CPU load"};
  app.add_option("--dir", options.dir, "a directory on the disk to probe");
  app.add_option("--seconds", options.seconds, "seconds per probe")->check(CLI::Range(0.1, 600.0));
  app.add_option("--threads", options.threads, "busy threads beside the probe")
      ->check(CLI::Range(0u, 64u));
  app.add_option("--bytes", options.bytes, "bytes per write")->check(CLI::Range(512u, 1u << 24));
  app.add_option("--gap-us", options.gap_us, "pause between syncs");
  CLI11_PARSE(app, argc, argv);
  probe(options, "none", 0);
  probe(options, "spin", options.threads);
  probe(options, "bursts", options.threads);
  std::printf("disk_probe ok\n");
  return 0;
}
