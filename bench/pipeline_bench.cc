// pipeline_bench: the whole durable path, in one process.
//
//   producer threads → ring → journal (write + fdatasync on the real disk) → ledger →
//   completions once durable
//
// For each workload of ledger_bench, and order_cycle (an order's whole life: create,
// external checkout, the provider's success: three commands, the third moving the
// money; its line also says order_cycles_per_sec), it runs twice: at the most the pipeline takes
// (producers keep a window of requests in flight), then paced at --paced-ops
// (default 1,000,000 commands/s: half the 2,000,000/s target); each
// line ends in durable_ops_per_sec=<N> p99_us=<N> (latency from submit to the
// completion, which runs only once the request is durable). It also measures, in the
// same run and on the same disk: raw fdatasync p50/p99, recovery speed (a journal of
// --recovery-commands replayed by Group::open), and the pause a snapshot's fork() takes.
//
//   ./build/bench/pipeline_bench [--dir /var/tmp/paygate-pipeline-bench] [--seconds 4]
//        [--producers 2] [--batch 1024] [--window 16] [--accounts 1000000]
//        [--paced-ops 1000000] [--modes max,paced] [--only hot_merchant] [--quick]
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "base/event.h"
#include "base/histogram.h"
#include "base/log.h"
#include "base/temp_dir.h"
#include "pipeline/group.h"

namespace paygate {
namespace {

constexpr Currency kUsd = Currency::from("USD");
using Clock = std::chrono::steady_clock;

u64 now_ns() {
  return static_cast<u64>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
          .count());
}

struct Options {
  std::string dir;
  double seconds = 4;
  u32 producers = 2;
  u32 batch = 1024;  // commands per request
  u32 window = 16;   // requests in flight per producer
  u32 accounts = 1'000'000;
  u64 recovery_commands = 10'000'000;
  double paced_ops_per_sec = 1'000'000;  // half the 2M/s target
  std::string modes = "max,paced";
  std::string only;
};

double resident_bytes() {
  long pages = 0, resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return static_cast<double>(resident) * static_cast<double>(::sysconf(_SC_PAGESIZE));
}

double process_cpu_seconds() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

// ---------------------------------------------------------------------------
// Raw fdatasync of the same disk, measured the way the journal uses it.

void measure_fdatasync(const std::string& dir, u64* p50_us, u64* p99_us) {
  const std::string path = dir + "/fdatasync-probe";
  const int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0644);
  ::fallocate(fd, 0, 0, 64u << 20);
  ::fsync(fd);
  std::vector<unsigned char> block(4096, 0xAB);
  Histogram latency;
  for (u64 i = 0; i < 1000; ++i) {
    const u64 start = now_ns();
    if (::pwrite(fd, block.data(), block.size(), static_cast<off_t>(i * block.size())) < 0 ||
        ::fdatasync(fd) != 0) {
      std::perror("fdatasync probe");
      break;
    }
    latency.record(now_ns() - start);
  }
  ::close(fd);
  ::unlink(path.c_str());
  *p50_us = latency.percentile(0.50) / 1000;
  *p99_us = latency.percentile(0.99) / 1000;
}

// ---------------------------------------------------------------------------
// Producers

// Shared by a run's producers and the completions the group thread runs for them.
struct RunShared {
  Histogram latency;
  std::atomic<u64> done_commands{0};
  std::atomic<u64> failed_commands{0};
  // Completions inside complete(): the run waits for 0 before its state goes away.
  std::atomic<u64> completing{0};
};

// One request a producer keeps going: its commands, results and completion.
struct Slot final : Completion {
  std::vector<Command> commands;
  std::vector<CommandResult> results;
  std::atomic<bool> busy{false};
  u64 submitted_ns = 0;
  RunShared* shared = nullptr;
  Event* freed = nullptr;      // the producer sleeps on it when every slot is busy
  bool holds_pending = false;  // hold_post: the results are holds to post next
  u32 order_phase = 0;  // order_cycle: 0 create, 1 checkout, 2 result (of the results' orders)

  void complete(const Outcome& outcome) noexcept override {
    shared->completing.fetch_add(1, std::memory_order_acq_rel);
    shared->latency.record(now_ns() - submitted_ns);
    u64 failed = outcome.status == ResultCode::ok ? 0 : commands.size();
    if (failed == 0) {
      for (const CommandResult& r : results)
        failed += r.ok() ? 0 : 1;
    }
    shared->done_commands.fetch_add(commands.size(), std::memory_order_relaxed);
    if (failed > 0) shared->failed_commands.fetch_add(failed, std::memory_order_relaxed);
    Event* event = freed;
    RunShared* run = shared;
    busy.store(false, std::memory_order_release);  // the slot may be reused from here on
    event->notify_all();
    run->completing.fetch_sub(1, std::memory_order_acq_rel);  // the last touch
  }
};

enum class Workload { uniform, hot_merchant, hold_post, hold_expire, order_cycle };
const char* name(Workload w) {
  switch (w) {
    case Workload::uniform:
      return "uniform";
    case Workload::hot_merchant:
      return "hot_merchant";
    case Workload::hold_post:
      return "hold_post";
    case Workload::hold_expire:
      return "hold_expire";
    case Workload::order_cycle:
      return "order_cycle";
  }
  return "?";
}

struct Accounts {
  AccountId merchant;
  u32 users = 0;
  AccountId provider;  // a provider's clearing account (order_cycle)
  AccountId user(u32 i) const {
    return AccountId{make_id({0, 0}, 3 + i)};
  }  // after treasury, merchant
};

struct RunResult {
  double cpu_cores = 0;  // CPU time of the whole process / wall time (2 cores: at most 2)
  double ops_per_sec = 0;
  u64 p50_us = 0, p99_us = 0;
  u64 commands = 0, failed = 0;
};

// Runs producers for `seconds`. target_ops_per_sec 0: as fast as the windows allow
// (closed loop); otherwise each producer paces its requests (open loop).
RunResult run_load(Group& group, const Options& options, Workload workload,
                   const Accounts& accounts, double target_ops_per_sec) {
  RunShared shared;
  std::atomic<bool> stop{false};
  const double cpu_before = process_cpu_seconds();
  std::vector<std::thread> producers;
  std::vector<std::unique_ptr<Event>> events;
  for (u32 p = 0; p < options.producers; ++p)
    events.push_back(std::make_unique<Event>());
  const u64 started = now_ns();
  for (u32 p = 0; p < options.producers; ++p) {
    producers.emplace_back([&, p] {
      std::mt19937_64 random(1000 + p);
      Event& freed = *events[p];
      std::vector<Slot> slots(options.window);
      for (Slot& s : slots) {
        s.commands.resize(options.batch);
        s.results.resize(options.batch);
        s.shared = &shared;
        s.freed = &freed;
      }
      const double interval_ns =
          target_ops_per_sec > 0 ? 1e9 * options.producers * options.batch / target_ops_per_sec : 0;
      double next_due = static_cast<double>(now_ns());
      const auto random_user = [&] {
        return accounts.user(static_cast<u32>(random() % accounts.users));
      };
      const auto any_free = [&] {
        for (const Slot& s : slots) {
          if (!s.busy.load(std::memory_order_acquire)) return true;
        }
        return false;
      };
      for (u64 submitted = 0; !stop.load(std::memory_order_relaxed) && submitted < 100'000'000;) {
        for (Slot& s : slots) {
          if (s.busy.load(std::memory_order_acquire)) continue;
          if (interval_ns > 0 && static_cast<double>(now_ns()) < next_due) break;
          next_due += interval_ns;
          for (u32 i = 0; i < options.batch; ++i) {
            switch (workload) {
              case Workload::uniform: {
                const AccountId a = random_user();
                AccountId b = random_user();
                if (b == a) b = accounts.merchant;
                s.commands[i] = Command::make_transfer(a, b, 1 + random() % 100, kUsd);
                break;
              }
              case Workload::hot_merchant:
                s.commands[i] = Command::make_transfer(accounts.merchant, random_user(),
                                                       1 + random() % 100, kUsd);
                break;
              case Workload::hold_post:
                s.commands[i] = s.holds_pending
                                    ? Command::make_post(TransferId{s.results[i].id})
                                    : Command::make_hold(random_user(), accounts.merchant,
                                                         1 + random() % 100, kUsd, 60);
                break;
              case Workload::hold_expire:
                s.commands[i] = Command::make_hold(random_user(), accounts.merchant,
                                                   1 + random() % 100, kUsd, 1);
                break;
              case Workload::order_cycle:
                // The results are the orders the last phase made or moved on.
                s.commands[i] =
                    s.order_phase == 0 ? Command::make_order_create(
                                             accounts.merchant, 1 + random() % 100, kUsd, 900, 0)
                    : s.order_phase == 1
                        ? Command::make_order(CommandKind::order_checkout, s.results[i].id,
                                              accounts.provider, 0,
                                              static_cast<u8>(OrderMethod::external))
                        : Command::make_order(CommandKind::order_result, s.results[i].id, {}, 0,
                                              /*success=*/1);
                break;
            }
          }
          s.busy.store(true, std::memory_order_relaxed);
          s.submitted_ns = now_ns();
          const Request request{.kind = RequestKind::commands,
                                .count = options.batch,
                                .commands = s.commands.data(),
                                .results = s.results.data(),
                                .completion = &s};
          if (group.submit(request) == ResultCode::ok) {
            if (workload == Workload::hold_post) s.holds_pending = !s.holds_pending;
            if (workload == Workload::order_cycle) s.order_phase = (s.order_phase + 1) % 3;
          } else {
            s.busy.store(false, std::memory_order_relaxed);
          }
          ++submitted;
        }
        // Sleep until a request is due, or a slot comes free: never spin, so the group
        // thread keeps a core (this machine has two).
        if (interval_ns > 0) {
          const double wait_ns = next_due - static_cast<double>(now_ns());
          if (wait_ns > 30'000 && any_free()) {
            std::this_thread::sleep_for(
                std::chrono::nanoseconds(static_cast<u64>(wait_ns) - 20'000));
            continue;
          }
        }
        const u32 epoch = freed.prepare_wait();
        if (any_free() && (interval_ns == 0 || static_cast<double>(now_ns()) >= next_due)) {
          freed.cancel_wait();
          continue;
        }
        freed.wait(epoch, 1'000'000);
      }
      for (Slot& s : slots) {
        while (s.busy.load(std::memory_order_acquire))
          std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(options.seconds));
  const u64 measured_done = shared.done_commands.load();
  const double elapsed = static_cast<double>(now_ns() - started) / 1e9;
  const double cpu_used = process_cpu_seconds() - cpu_before;
  stop = true;
  for (auto& t : producers)
    t.join();
  while (shared.completing.load(std::memory_order_acquire) != 0)
    std::this_thread::yield();
  RunResult result;
  result.commands = measured_done;
  result.failed = shared.failed_commands.load();
  result.ops_per_sec = static_cast<double>(measured_done) / elapsed;
  result.cpu_cores = cpu_used / elapsed;
  result.p50_us = shared.latency.percentile(0.50) / 1000;
  result.p99_us = shared.latency.percentile(0.99) / 1000;
  return result;
}

// ---------------------------------------------------------------------------
// Setup and the measurements

GroupConfig group_config(const std::string& dir, u32 accounts, u32 open_orders_max = 0) {
  GroupConfig c;
  c.dir = dir;
  c.ledger = LedgerConfig{.prefix = {0, 0},
                          .accounts_max = accounts + 16,
                          .pending_max = 1u << 23,
                          .recent_transfers_max = 1u << 20,
                          .idempotency_keys_max = 1u << 16};
  // order_cycle: every order its producers can have open, twice over; a final one
  // leaves memory at once (retention is not what is measured).
  c.ledger.orders_max = std::max(1024u, 2 * open_orders_max);
  c.ledger.order_final_retained_ns = 1;
  c.ring_capacity = 1u << 14;
  c.snapshot_every_commands = 0;  // measured on their own below
  return c;
}

// Group::open, with the reason in *error when it fails.
std::unique_ptr<Group> open_group(const GroupConfig& config, std::string* error) {
  Result<std::unique_ptr<Group>> opened = Group::open(config);
  if (!opened.ok()) {
    *error = opened.status().to_string();
    return nullptr;
  }
  return std::move(opened).value();
}

// Submits commands in big batches and waits: setup, not measured.
void apply_all(Group& group, std::vector<Command>& commands) {
  std::vector<CommandResult> results(kBatchMax);
  for (std::size_t at = 0; at < commands.size(); at += kBatchMax) {
    const u32 n = static_cast<u32>(std::min<std::size_t>(kBatchMax, commands.size() - at));
    WaitableCompletion done;
    const Request request{.count = n,
                          .commands = commands.data() + at,
                          .results = results.data(),
                          .completion = &done};
    while (group.submit(request) != ResultCode::ok)
      std::this_thread::yield();
    done.wait();
  }
}

Accounts open_accounts(Group& group, u32 users) {
  std::vector<Command> commands;
  commands.push_back(Command::make_create_account({}, kUsd, AccountKind::system));
  commands.push_back(Command::make_create_account({1}, kUsd, AccountKind::merchant));
  for (u32 i = 0; i < users; ++i)
    commands.push_back(Command::make_create_account({2}, kUsd, AccountKind::user));
  commands.push_back(Command::make_create_account({3}, kUsd, AccountKind::system));
  const AccountId treasury{make_id({0, 0}, 1)};
  Accounts accounts{AccountId{make_id({0, 0}, 2)}, users,
                    AccountId{make_id({0, 0}, 3 + u64{users})}};
  commands.push_back(Command::make_transfer(treasury, accounts.merchant, u64{1} << 60, kUsd));
  for (u32 i = 0; i < users; ++i)
    commands.push_back(Command::make_transfer(treasury, accounts.user(i), 1'000'000'000, kUsd));
  apply_all(group, commands);
  return accounts;
}

int run(const Options& options) {
  set_log_level(spdlog::level::warn);
  std::filesystem::create_directories(options.dir);
  u64 sync_p50 = 0, sync_p99 = 0;
  measure_fdatasync(options.dir, &sync_p50, &sync_p99);
  std::printf("fdatasync dir=%s block=4096 samples=1000 p50_us=%llu p99_us=%llu\n",
              options.dir.c_str(), static_cast<unsigned long long>(sync_p50),
              static_cast<unsigned long long>(sync_p99));
  std::fflush(stdout);

  const std::string group_dir = options.dir + "/group-0000";
  std::filesystem::remove_all(group_dir);
  std::string error;
  bool ok = true;
  {
    auto group = open_group(group_config(group_dir, options.accounts,
                                         options.producers * options.window * options.batch),
                            &error);
    if (!group) {
      std::printf("pipeline_bench FAILED: %s\n", error.c_str());
      return 1;
    }
    group->start();
    std::fprintf(stderr, "pipeline_bench: opening and funding %u accounts through the pipeline\n",
                 options.accounts);
    const Accounts accounts = open_accounts(*group, options.accounts);
    for (Workload w : {Workload::uniform, Workload::hot_merchant, Workload::hold_post,
                       Workload::hold_expire, Workload::order_cycle}) {
      if (!options.only.empty() && options.only != name(w)) continue;
      const bool run_max = options.modes.find("max") != std::string::npos;
      const bool run_paced = options.modes.find("paced") != std::string::npos;
      const RunResult max = run_max ? run_load(*group, options, w, accounts, 0) : RunResult{};
      const auto reset = [&] {
        const journal::Writer& j = group->journal();
        for (const Histogram* h :
             {&j.pickup_ns(), &j.write_ns(), &j.fdatasync_ns(), &group->stats().release_delay_ns}) {
          const_cast<Histogram*>(h)->reset();
        }
      };
      const auto breakdown = [&](const char* mode) {
        const journal::Writer& j = group->journal();
        const auto us = [](const Histogram& h, double q) {
          return static_cast<unsigned long long>(h.percentile(q) / 1000);
        };
        std::printf(
            "  breakdown workload=%s mode=%s pickup_p99_us=%llu pickup_p999_us=%llu "
            "write_p99_us=%llu "
            "write_p999_us=%llu fdatasync_p99_us=%llu fdatasync_p999_us=%llu "
            "release_delay_p99_us=%llu "
            "release_delay_p999_us=%llu\n",
            name(w), mode, us(j.pickup_ns(), 0.99), us(j.pickup_ns(), 0.999),
            us(j.write_ns(), 0.99), us(j.write_ns(), 0.999), us(j.fdatasync_ns(), 0.99),
            us(j.fdatasync_ns(), 0.999), us(group->stats().release_delay_ns, 0.99),
            us(group->stats().release_delay_ns, 0.999));
      };
      breakdown("max");
      reset();
      const RunResult half = run_paced
                                 ? run_load(*group, options, w, accounts, options.paced_ops_per_sec)
                                 : RunResult{};
      breakdown("paced");
      for (const auto& [mode, r] : {std::pair{"max", max}, std::pair{"paced", half}}) {
        if ((mode == std::string("max") && !run_max) ||
            (mode == std::string("paced") && !run_paced))
          continue;
        std::printf(
            "workload=%s mode=%s producers=%u batch=%u window=%u cpu_cores=%.2f commands=%llu "
            "failed=%llu "
            "p50_us=%llu p99_vs_fdatasync_p99=%.2fx durable_ops_per_sec=%.0f p99_us=%llu\n",
            name(w), mode, options.producers, options.batch, options.window, r.cpu_cores,
            static_cast<unsigned long long>(r.commands), static_cast<unsigned long long>(r.failed),
            static_cast<unsigned long long>(r.p50_us),
            sync_p99 > 0 ? static_cast<double>(r.p99_us) / static_cast<double>(sync_p99) : 0.0,
            r.ops_per_sec, static_cast<unsigned long long>(r.p99_us));
        if (w == Workload::order_cycle) {
          std::printf(
              "workload=order_cycle mode=%s commands_per_cycle=3 order_cycles_per_sec=%.0f\n", mode,
              r.ops_per_sec / 3);
        }
        std::fflush(stdout);
        // hold workloads expect refusals only if capacity runs out; none may fail otherwise
        if (r.failed > 0 && w != Workload::hold_expire) ok = false;
      }
    }
    std::printf(
        "group sync_p50_us=%llu sync_p99_us=%llu requests_per_ring_batch_p50=%llu commands=%llu\n",
        static_cast<unsigned long long>(group->sync_ns().percentile(0.5) / 1000),
        static_cast<unsigned long long>(group->sync_ns().percentile(0.99) / 1000),
        static_cast<unsigned long long>(group->stats().batch_requests.percentile(0.5)),
        static_cast<unsigned long long>(group->stats().commands.load()));

    // Snapshot pause: fork() of this process with the whole ledger in memory.
    group->stop();
    snapshot::Snapshotter snapshotter(group_dir);
    const u64 start = now_ns();
    snapshotter.start(group->ledger());
    std::string message;
    while (snapshotter.poll(~u64{0}, &message) == snapshot::Snapshotter::Progress::running) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    const double written_s = static_cast<double>(now_ns() - start) / 1e9;
    const auto snapshots = snapshot::list(group_dir);
    const double bytes = snapshots.empty()
                             ? 0
                             : static_cast<double>(std::filesystem::file_size(snapshots[0].second));
    const double rss_gb = resident_bytes() / 1e9;
    const double pause_ms = static_cast<double>(snapshotter.last_pause_ns()) / 1e6;
    std::printf(
        "snapshot accounts=%u file_mb=%.1f write_seconds=%.2f process_rss_gb=%.2f "
        "fork_pause_ms=%.3f "
        "pause_ms_per_gb=%.2f\n",
        options.accounts, bytes / 1e6, written_s, rss_gb, pause_ms, pause_ms / rss_gb);
  }

  // Recovery: a journal of recovery_commands commands, replayed by Group::open.
  const std::string recovery_dir = options.dir + "/group-recovery";
  std::filesystem::remove_all(recovery_dir);
  {
    auto group = open_group(group_config(recovery_dir, 1000), &error);
    group->start();
    const Accounts accounts = open_accounts(*group, 1000);
    std::vector<Command> commands(kBatchMax);
    std::mt19937_64 random(5);
    u64 written = 0;
    std::vector<CommandResult> results(kBatchMax);
    while (written < options.recovery_commands) {
      const u32 n = static_cast<u32>(std::min<u64>(kBatchMax, options.recovery_commands - written));
      for (u32 i = 0; i < n; ++i) {
        commands[i] = Command::make_transfer(
            accounts.merchant, accounts.user(static_cast<u32>(random() % 1000)), 1, kUsd);
      }
      WaitableCompletion done;
      const Request request{
          .count = n, .commands = commands.data(), .results = results.data(), .completion = &done};
      while (group->submit(request) != ResultCode::ok)
        std::this_thread::yield();
      done.wait();
      written += n;
      if (written % 2'000'000 < n)
        std::fprintf(stderr, "pipeline_bench: wrote %llu commands for the recovery test\n",
                     static_cast<unsigned long long>(written));
    }
    group->stop();
  }
  {
    const u64 start = now_ns();
    auto group = open_group(group_config(recovery_dir, 1000), &error);
    const double seconds = static_cast<double>(now_ns() - start) / 1e9;
    if (!group) {
      std::printf("pipeline_bench FAILED: recovery: %s\n", error.c_str());
      return 1;
    }
    const RecoveryReport& r = group->recovery();
    std::printf("recovery commands=%llu records=%llu seconds=%.2f commands_per_sec=%.0f\n",
                static_cast<unsigned long long>(r.commands_replayed),
                static_cast<unsigned long long>(r.records_replayed), seconds,
                static_cast<double>(r.commands_replayed) / seconds);
  }
  std::filesystem::remove_all(options.dir + "/group-0000");
  std::filesystem::remove_all(recovery_dir);
  if (!ok) {
    std::printf("pipeline_bench FAILED: some commands failed\n");
    return 1;
  }
  std::printf("pipeline_bench ok\n");
  return 0;
}

}  // namespace
}  // namespace paygate

int main(int argc, char** argv) {
  paygate::Options options;
  options.dir = "/var/tmp/paygate-pipeline-bench";
  bool quick = false;
  CLI::App app{"pipeline_bench: producers → ring → journal (fdatasync) → ledger → results"};
  app.add_option("--dir", options.dir, "where the journal goes (on the disk to measure)");
  app.add_option("--seconds", options.seconds, "seconds per measured run")
      ->check(CLI::Range(0.1, 600.0));
  app.add_option("--producers", options.producers, "producer threads")->check(CLI::Range(1, 64));
  app.add_option("--batch", options.batch, "commands per request")
      ->check(CLI::Range(1u, paygate::kBatchMax));
  app.add_option("--window", options.window, "requests in flight per producer")
      ->check(CLI::Range(1, 4096));
  app.add_option("--accounts", options.accounts, "accounts")->check(CLI::Range(16u, 1u << 24));
  app.add_option("--recovery-commands", options.recovery_commands,
                 "commands journaled then recovered");
  app.add_option("--paced-ops", options.paced_ops_per_sec,
                 "the paced run's rate, commands per second");
  app.add_option("--modes", options.modes, "which runs: max, paced or max,paced");
  app.add_option("--only", options.only, "one workload")
      ->check(
          CLI::IsMember({"uniform", "hot_merchant", "hold_post", "hold_expire", "order_cycle"}));
  app.add_flag("--quick", quick, "a few seconds in all: for the smoke test");
  CLI11_PARSE(app, argc, argv);
  if (quick) {
    options.seconds = 0.3;
    options.accounts = 10'000;
    options.recovery_commands = 100'000;
    options.paced_ops_per_sec = 200'000;
  }
  return paygate::run(options);
}
