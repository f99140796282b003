// ledger_bench: the ledger state machine alone, one thread, no IO.
//
// Workloads (batches of kBatchMax commands through Ledger::apply_batch):
//   uniform      transfers between uniformly random pairs of N accounts
//   hot_merchant every transfer debits one account; credits spread over N accounts
//   hold_post    a hold, then its post (one cycle = both commands)
//   hold_expire  a hold with a 1 s timeout, then its expiry when time passes
//   hold_open    holds on one merchant that stay open (bench/compare's hot merchant),
//                up to pending_max (1 M) of them; voided, untimed, after each run
//   keyed        hot_merchant transfers each under a new Idempotency-Key: the table of
//                remembered keys (1 M) fills up to its capacity, from empty each run
// Each workload runs several times; the line reports the median rate and ends in
// ops_per_sec=<N> (cycles per second for hold_post and hold_expire).
//
// Baseline: the same workloads, in the same process, through the model test's
// ReferenceLedger (std::map, written for clarity, not speed), so the ratio stands
// even on a noisy machine. Its lines start with "baseline".
//
//   ./build/bench/ledger_bench [--accounts 1000000] [--ops 8000000] [--runs 5]
//                              [--baseline-ops 500000] [--only uniform] [--quick]
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "ledger/ledger.h"
#include "ledger/reference_ledger.h"

namespace paygate {
namespace {

constexpr Currency kUsd = Currency::from("USD");
constexpr u64 kStartNs = 1'800'000'000ull * kNanosPerSecond;

struct Options {
  u32 accounts = 1'000'000;
  u64 ops = 8'000'000;
  u64 baseline_ops = 500'000;  // 0: no baseline
  u32 runs = 5;
  std::string only;  // run just this workload (for profiling)
};

using Clock = std::chrono::steady_clock;

constexpr u32 kPendingMax = 1u << 20;
constexpr u32 kKeysMax = 1u << 20;
constexpr u64 kKeyWindowNs = 24 * 3600 * kNanosPerSecond;

LedgerConfig bench_config(const Options& options) {
  return LedgerConfig{.prefix = {0, 1},
                      .accounts_max = options.accounts + 16,
                      .pending_max = kPendingMax,
                      .recent_transfers_max = 1u << 20,
                      .idempotency_keys_max = kKeysMax,
                      .idempotency_window_ns = kKeyWindowNs,
                      .signature_keys_max = 1u << 10};
}

// The few things the benchmark asks of either ledger.
u64 open_holds(const Ledger& ledger) {
  return ledger.pending_count();
}
u64 open_holds(const ReferenceLedger& ledger) {
  return ledger.open_hold_count();
}
bool invariants_hold(const Ledger& ledger) {
  return ledger.check_invariants().ok();
}
bool invariants_hold(const ReferenceLedger& ledger) {
  return ledger.broken_invariant().empty();
}

template <typename LedgerType>
class Bench {
 public:
  explicit Bench(const Options& options)
      : options_(options), ledger_(bench_config(options)), batch_(kBatchMax), results_(kBatchMax) {
    open_accounts();
  }

  // Immediate transfers to uniformly random accounts; the debit side is chosen by
  // pick_debit (an AccountId).
  template <typename PickDebit>
  double transfers(u64 count, PickDebit pick_debit) {
    std::mt19937_64 random(42);
    std::vector<Command> pool(std::min<u64>(count, 1u << 20));
    for (Command& c : pool) {
      const AccountId debit = pick_debit(random);
      AccountId credit = random_user(random);
      if (credit == debit) credit = user(id_serial(credit.value) % options_.accounts + 1);
      c = Command::make_transfer(debit, credit, 1 + random() % 100, kUsd);
    }
    Clock::duration busy{};
    for (u64 done = 0; done < count;) {
      const std::size_t offset = done % pool.size();
      const std::size_t take = std::min<u64>({kBatchMax, count - done, pool.size() - offset});
      const auto start = Clock::now();
      ledger_.apply_batch(next(take), std::span(pool.data() + offset, take), results_);
      busy += Clock::now() - start;
      count_failures(take);
      done += take;
    }
    return static_cast<double>(count) / std::chrono::duration<double>(busy).count();
  }

  // Cycles of hold then post: each batch holds half and posts those holds.
  double hold_post(u64 cycles) {
    std::mt19937_64 random(7);
    Clock::duration busy{};
    const u32 half = kBatchMax / 2;
    for (u64 done = 0; done < cycles; done += half) {
      const u64 first_serial = ledger_.transfers_made() + 1;
      for (u32 i = 0; i < half; ++i) {
        batch_[i] =
            Command::make_hold(random_user(random), merchant_, 1 + random() % 100, kUsd, 60);
        batch_[half + i] = Command::make_post(TransferId{make_id({0, 1}, first_serial + i)});
      }
      const auto start = Clock::now();
      ledger_.apply_batch(next(2 * half), std::span(batch_.data(), 2 * half), results_);
      busy += Clock::now() - start;
      count_failures(2 * half);
    }
    return static_cast<double>(cycles) / std::chrono::duration<double>(busy).count();
  }

  // Holds that stay open, every one debiting the merchant: the pending index grows to
  // count entries (a million by default), so where each new hold's entry lands in
  // memory is what this measures. Voided after the clock stops.
  double hold_open(u64 count) {
    std::mt19937_64 random(11);
    count = std::min<u64>(count, kPendingMax - open_holds(ledger_));
    const u64 first_serial = ledger_.transfers_made() + 1;
    Clock::duration busy{};
    for (u64 done = 0; done < count;) {
      const u32 take = static_cast<u32>(std::min<u64>(kBatchMax, count - done));
      for (u32 i = 0; i < take; ++i)
        batch_[i] = Command::make_hold(merchant_, random_user(random), 1 + random() % 100, kUsd, 0);
      const auto start = Clock::now();
      ledger_.apply_batch(next(take), std::span(batch_.data(), take), results_);
      busy += Clock::now() - start;
      count_failures(take);
      done += take;
    }
    for (u64 done = 0; done < count;) {
      const u32 take = static_cast<u32>(std::min<u64>(kBatchMax, count - done));
      for (u32 i = 0; i < take; ++i)
        batch_[i] = Command::make_void(TransferId{make_id({0, 1}, first_serial + done + i)});
      ledger_.apply_batch(next(take), std::span(batch_.data(), take), results_);
      count_failures(take);
      done += take;
    }
    if (open_holds(ledger_) != 0) ++failures_;
    return static_cast<double>(count) / std::chrono::duration<double>(busy).count();
  }

  // Cycles of hold then expiry: each batch holds for 1 s; the next batch's stamp is
  // 1 s later, so the previous holds expire before it runs.
  double hold_expire(u64 cycles) {
    std::mt19937_64 random(9);
    Clock::duration busy{};
    for (u64 done = 0; done < cycles; done += kBatchMax) {
      for (u32 i = 0; i < kBatchMax; ++i) {
        batch_[i] = Command::make_hold(random_user(random), merchant_, 1 + random() % 100, kUsd, 1);
      }
      now_ns_ += kNanosPerSecond;
      const auto start = Clock::now();
      ledger_.apply_batch(next(kBatchMax), std::span(batch_.data(), kBatchMax), results_);
      busy += Clock::now() - start;
      count_failures(kBatchMax);
    }
    now_ns_ += kNanosPerSecond;
    const auto start = Clock::now();
    (void)ledger_.apply(next(), Command::make_tick());  // the last holds expire
    busy += Clock::now() - start;
    if (open_holds(ledger_) != 0) ++failures_;
    return static_cast<double>(cycles) / std::chrono::duration<double>(busy).count();
  }

  // Transfers from the merchant, each under a key never used before. The clock first
  // moves past the window, so the last run's keys have left it (and are dropped as
  // room is needed, within the timed part, as in a server that runs on).
  double keyed(u64 count) {
    std::mt19937_64 random(13);
    count = std::min<u64>(count, kKeysMax);
    now_ns_ += kKeyWindowNs + kNanosPerSecond;
    Clock::duration busy{};
    for (u64 done = 0; done < count;) {
      const u32 take = static_cast<u32>(std::min<u64>(kBatchMax, count - done));
      for (u32 i = 0; i < take; ++i) {
        ++keys_made_;
        batch_[i] = Command::make_transfer(merchant_, random_user(random), 1 + random() % 100, kUsd)
                        .with_key(IdempotencyKey{keys_made_, 0x6B6579});
      }
      const auto start = Clock::now();
      ledger_.apply_batch(next(take), std::span(batch_.data(), take), results_);
      busy += Clock::now() - start;
      count_failures(take);
      done += take;
    }
    return static_cast<double>(count) / std::chrono::duration<double>(busy).count();
  }

  AccountId merchant() const { return merchant_; }
  AccountId random_user(std::mt19937_64& random) const {
    return user(1 + static_cast<u32>(random() % options_.accounts));
  }
  u64 failures() const { return failures_; }
  bool invariants_hold() const { return paygate::invariants_hold(ledger_); }

 private:
  AccountId user(u32 serial) const { return AccountId{make_id({0, 1}, serial)}; }
  // The stamp of the first of `count` commands: each command has its own sequence.
  Stamp next(u64 count = 1) {
    const Stamp first{sequence_ + 1, now_ns_};
    sequence_ += count;
    return first;
  }

  void open_accounts() {
    for (u32 i = 0; i < options_.accounts; ++i) {
      (void)ledger_.apply(next(),
                          Command::make_create_account(MerchantId{1}, kUsd, AccountKind::user));
    }
    const AccountId treasury{
        ledger_.apply(next(), Command::make_create_account({}, kUsd, AccountKind::system)).id};
    merchant_ = AccountId{
        ledger_.apply(next(), Command::make_create_account({1}, kUsd, AccountKind::merchant)).id};
    // The merchant's balance is debited by every hot_merchant transfer; it is a
    // restricted account like any merchant's, so it is funded well.
    (void)ledger_.apply(next(), Command::make_transfer(treasury, merchant_, u64{1} << 60, kUsd));
    for (u32 i = 1; i <= options_.accounts; ++i) {
      (void)ledger_.apply(next(), Command::make_transfer(treasury, user(i), 1'000'000'000, kUsd));
    }
  }

  void count_failures(std::size_t n) {
    for (std::size_t i = 0; i < n; ++i)
      failures_ += results_[i].ok() ? 0 : 1;
  }

  Options options_;
  LedgerType ledger_;
  std::vector<Command> batch_;
  std::vector<CommandResult> results_;
  AccountId merchant_;
  u64 sequence_ = 0;
  u64 now_ns_ = kStartNs;
  u64 failures_ = 0;
  u64 keys_made_ = 0;
};

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// Runs a workload options.runs times and prints the median; returns it.
template <typename Run>
double report(const char* prefix, const char* workload, const Options& options, u64 ops,
              const char* unit, double baseline, Run run) {
  std::vector<double> rates;
  for (u32 r = 0; r < options.runs; ++r) {
    rates.push_back(run());
    std::fprintf(stderr, "  %s%s run %u/%u: %.0f %s/s\n", prefix, workload, r + 1, options.runs,
                 rates.back(), unit);
  }
  const double rate = median(rates);
  std::printf("%sworkload=%s accounts=%u batch=%u %s=%llu runs=%u min=%.0f max=%.0f ", prefix,
              workload, options.accounts, kBatchMax, unit, static_cast<unsigned long long>(ops),
              options.runs, *std::min_element(rates.begin(), rates.end()),
              *std::max_element(rates.begin(), rates.end()));
  if (baseline > 0) std::printf("vs_baseline=%.1fx ", rate / baseline);
  std::printf("ops_per_sec=%.0f\n", rate);
  std::fflush(stdout);
  return rate;
}

// Every workload on one kind of ledger. baselines: the reference's rates, or
// empty when this is the reference.
template <typename LedgerType>
bool run_workloads(const char* prefix, const Options& options, std::vector<double>* rates,
                   const std::vector<double>& baselines) {
  std::fprintf(stderr, "ledger_bench: %sopening and funding %u accounts\n", prefix,
               options.accounts);
  Bench<LedgerType> bench(options);
  const char* names[] = {"uniform",     "hot_merchant", "hold_post",
                         "hold_expire", "hold_open",    "keyed"};
  for (int w = 0; w < 6; ++w) {
    if (!options.only.empty() && options.only != names[w]) {
      rates->push_back(0);
      continue;
    }
    const double baseline = baselines.empty() ? 0 : baselines[w];
    const bool cycles = w == 2 || w == 3;
    const u64 ops = cycles   ? options.ops / 2
                    : w == 4 ? std::min<u64>(options.ops, kPendingMax)
                    : w == 5 ? std::min<u64>(options.ops, kKeysMax)
                             : options.ops;
    const char* unit = cycles ? "cycles" : "ops";
    rates->push_back(report(prefix, names[w], options, ops, unit, baseline, [&] {
      switch (w) {
        case 0:
          return bench.transfers(ops, [&](auto& random) { return bench.random_user(random); });
        case 1:
          return bench.transfers(ops, [&](auto&) { return bench.merchant(); });
        case 2:
          return bench.hold_post(ops);
        case 3:
          return bench.hold_expire(ops);
        case 4:
          return bench.hold_open(ops);
        default:
          return bench.keyed(ops);
      }
    }));
  }
  if (bench.failures() != 0 || !bench.invariants_hold()) {
    std::printf("ledger_bench FAILED: %s%llu commands failed or invariants broken\n", prefix,
                static_cast<unsigned long long>(bench.failures()));
    return false;
  }
  return true;
}

int run(const Options& options) {
  std::vector<double> baselines;
  if (options.baseline_ops > 0) {
    Options baseline_options = options;
    baseline_options.ops = options.baseline_ops;
    baseline_options.runs = std::min<u32>(options.runs, 3);
    if (!run_workloads<ReferenceLedger>("baseline ", baseline_options, &baselines, {})) return 1;
  }
  std::vector<double> rates;
  if (!run_workloads<Ledger>("", options, &rates, baselines)) return 1;
  std::printf("ledger_bench ok\n");
  return 0;
}

}  // namespace
}  // namespace paygate

int main(int argc, char** argv) {
  paygate::Options options;
  bool quick = false;
  CLI::App app{"ledger_bench: the ledger state machine alone, one thread, no IO"};
  app.add_option("--accounts", options.accounts, "accounts to spread transfers over")
      ->check(CLI::Range(16u, 1u << 26));
  app.add_option("--ops", options.ops, "operations per workload run")
      ->check(CLI::Range(1u, 1u << 30));
  app.add_option("--baseline-ops", options.baseline_ops,
                 "operations per baseline (std::map reference) run; 0 skips it")
      ->check(CLI::Range(0u, 1u << 30));
  app.add_option("--runs", options.runs, "runs per workload (the median is reported)")
      ->check(CLI::Range(1, 99));
  app.add_option("--only", options.only, "run one workload")
      ->check(CLI::IsMember(
          {"uniform", "hot_merchant", "hold_post", "hold_expire", "hold_open", "keyed"}));
  app.add_flag("--quick", quick, "a few seconds in all: for the smoke test");
  CLI11_PARSE(app, argc, argv);
  if (quick) {
    options.accounts = 10'000;
    options.ops = 200'000;
    options.baseline_ops = 20'000;
    options.runs = 1;
  }
  return paygate::run(options);
}
