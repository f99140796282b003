// crash_harness: a process hosting groups, for the crash test (crash_test.cc).
//
//   crash_harness run    --data DIR --acks FILE [--seed N] [--seconds S] [--threads T]
//   crash_harness verify --data DIR --acks FILE
//
// Every start recovers the groups and checks them before anything else:
//   - invariants hold;
//   - replaying the whole journal from sequence 1 gives the digest recovery reached
//     (recovery used the newest snapshot plus the tail);
//   - every request acknowledged by an earlier run, as logged in the ack file, is in
//     the journal at the acknowledged sequences, with the same commands and results;
//   - orders (every step, on orders the load made) recover like the rest: their
//     results are among the acknowledged, their holds in the invariants;
//   - starting the groups finishes every transfer between groups that a kill left
//     between its steps, and (verify mode) then nothing is unsettled and the two
//     groups' clearing accounts add up to zero.
// It prints "verified …" and, in run mode, "ready", then drives load from several
// threads until --seconds pass or it is killed. Acknowledgements are appended to the
// ack file only after the group answered ok. Exit codes: 0 fine, 3 recovery failed,
// 4 verification failed.
#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "base/hash.h"
#include "base/log.h"
#include "journal/reader.h"
#include "pipeline/engine.h"

namespace paygate {
namespace {

constexpr u32 kGroups = 2;
constexpr u32 kUsers = 30;
constexpr u32 kMerchants = 2;
constexpr u32 kSetupAccounts = 1 + kUsers + kMerchants;  // serial 1 is the treasury
constexpr Currency kUsd = Currency::from("USD");

EngineConfig engine_config(const std::string& data) {
  EngineConfig config{.data_dir = data, .region = 1, .groups = kGroups};
  config.group.ledger = LedgerConfig{.accounts_max = 64,
                                     .pending_max = 512,
                                     .recent_transfers_max = 4096,
                                     .idempotency_keys_max = 4096,
                                     .idempotency_window_ns = 3600 * kNanosPerSecond,
                                     .orders_max = 2048,
                                     // Final orders leave memory within the run, so that
                                     // recovery meets archived ones too.
                                     .order_final_retained_ns = 3 * kNanosPerSecond};
  // Small segments, so that a long run rolls over: packed, the commands take only
  // a few bytes each, and 150 cycles (PAYGATE_CRASH_CYCLES) reach a third segment.
  config.group.journal_segment_bytes = 2u << 20;
  config.group.group_commit_bytes_max = 1u << 20;
  config.group.ring_capacity = 1024;
  config.group.release_queue_max = 8192;
  config.group.snapshot_every_commands = 5000;  // recovery goes through snapshots
  config.group.snapshots_kept = 3;
  config.group.keep_journal = true;  // so the whole journal can be replayed
  config.group.tick_interval_ns = 20'000'000;
  return config;
}

u64 fingerprint(const Command* commands, u32 count) {
  Hasher hasher;
  for (u32 i = 0; i < count; ++i) {
    u64 words[8];
    std::memcpy(words, &commands[i], sizeof words);
    for (u64 w : words)
      hasher.add(w);
  }
  return hasher.value();
}

AccountId account(u32 group, u32 serial) {
  return AccountId{make_id({1, group}, serial)};
}

// What replaying a group's whole journal gives, sequence by sequence.
struct Replay {
  std::vector<CommandResult> results;  // index: sequence
  std::vector<u64> command_hash;       // index: sequence
  u64 digest = 0;
  std::string error;
};

Replay replay_group(Group& group) {
  Replay replay;
  Ledger ledger(group.config().ledger);
  replay.results.resize(1);
  replay.command_hash.resize(1);
  std::vector<CommandResult> results(kBatchMax);
  const journal::ScanReport report =
      journal::scan(group.config().dir, 1, [&](const journal::Record& record) {
        const u32 n = static_cast<u32>(record.commands.size());
        if (record.header->type == journal::RecordType::atomic) {
          (void)ledger.apply_atomic(record.first_stamp(), record.commands, record.batch_key,
                                    results);
        } else {
          ledger.apply_batch(record.first_stamp(), record.commands, results);
        }
        for (u32 i = 0; i < n; ++i) {
          replay.results.push_back(results[i]);
          replay.command_hash.push_back(fingerprint(&record.commands[i], 1));
        }
        return true;
      });
  if (report.end == journal::LogEnd::corrupt) replay.error = report.message;
  if (report.first_sequence > 1) replay.error = "journal no longer starts at sequence 1";
  replay.digest = ledger.state_digest();
  return replay;
}

// Checks everything; returns a failure or "".
std::string verify(Engine& engine, const std::string& acks_path, u64* checked) {
  std::vector<Replay> replays;
  for (u32 g = 0; g < engine.groups(); ++g) {
    Group& group = engine.group(g);
    const Status invariants = group.ledger().check_invariants();
    if (!invariants.ok())
      return fmt::format("group {}: invariant broken: {}", g, invariants.message());
    replays.push_back(replay_group(group));
    if (!replays.back().error.empty()) return fmt::format("group {}: {}", g, replays.back().error);
    if (replays.back().digest != group.ledger().state_digest()) {
      return fmt::format(
          "group {}: recovered digest {:016x} differs from a full replay {:016x} "
          "(snapshot {} at {})",
          g, group.ledger().state_digest(), replays.back().digest,
          group.recovery().snapshot_file.string(), group.recovery().snapshot_sequence);
    }
  }
  std::ifstream acks(acks_path);
  std::string line;
  while (std::getline(acks, line)) {
    if (acks.eof()) break;  // a last line without its newline: cut by the kill
    u32 group = 0, count = 0;
    u64 first = 0, hash = 0;
    char kind = 0;
    std::istringstream in(line);
    std::string tag;
    in >> tag >> group >> first >> count >> kind >> std::hex >> hash >> std::dec;
    if (tag != "ack" || group >= replays.size() || count == 0)
      return "unreadable ack line: " + line;
    const Replay& replay = replays[group];
    if (first + count > replay.results.size()) {
      return fmt::format(
          "acknowledged sequences {}..{} of group {} are not in the journal (it ends at {})", first,
          first + count - 1, group, replay.results.size() - 1);
    }
    for (u32 i = 0; i < count; ++i) {
      u32 code = 0;
      u64 id = 0;
      char colon = 0;
      in >> code >> colon >> id;
      const CommandResult& replayed = replay.results[first + i];
      if (static_cast<u32>(replayed.code) != code || replayed.id != id) {
        return fmt::format("group {} sequence {}: acknowledged {}:{} but the journal gives {}:{}",
                           group, first + i, code, id, static_cast<u32>(replayed.code),
                           replayed.id);
      }
    }
    // The commands at those sequences are the ones that were submitted.
    u64 combined = 0;
    for (u32 i = 0; i < count; ++i)
      combined = mix64(combined ^ replay.command_hash[first + i]);
    if (combined != hash)
      return fmt::format("group {} sequence {}: different commands than acknowledged", group,
                         first);
    ++*checked;
  }
  return {};
}

class Load {
 public:
  Load(Engine& engine, const std::string& acks_path, u64 seed) : engine_(engine), seed_(seed) {
    acks_fd_ = ::open(acks_path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  }
  ~Load() {
    if (acks_fd_ >= 0) ::close(acks_fd_);
  }

  // The first run creates and funds the accounts, all at once, in each group that
  // does not have them yet (`missing`, read before the groups started).
  bool setup(const std::vector<bool>& missing) {
    for (u32 g = 0; g < kGroups; ++g) {
      if (!missing[g]) continue;
      Group& group = engine_.group(g);
      std::vector<Command> commands;
      commands.push_back(Command::make_create_account({}, kUsd, AccountKind::system));
      for (u32 u = 0; u < kUsers; ++u)
        commands.push_back(Command::make_create_account({1}, kUsd, AccountKind::user));
      for (u32 m = 0; m < kMerchants; ++m)
        commands.push_back(Command::make_create_account({2}, kUsd, AccountKind::merchant));
      for (u32 u = 0; u < kUsers; ++u) {
        commands.push_back(
            Command::make_transfer(account(g, 1), account(g, 2 + u), 1'000'000, kUsd));
      }
      std::vector<CommandResult> results(commands.size());
      WaitableCompletion done;
      // Under a fixed key: a run killed during setup is answered the same way next time.
      const Request request{.kind = RequestKind::atomic,
                            .count = static_cast<u32>(commands.size()),
                            .commands = commands.data(),
                            .results = results.data(),
                            .batch_key = IdempotencyKey{0x5E7u + g, 1},
                            .completion = &done};
      if (group.submit(request) != ResultCode::ok) return false;
      const Outcome& outcome = done.wait();
      if (outcome.status != ResultCode::ok) return false;
      // ok, or accounts_full: an earlier run's setup went through and this one found
      // no room; both leave the same 33 accounts.
      if (outcome.atomic != ResultCode::ok && outcome.atomic != ResultCode::accounts_full)
        return false;
    }
    return true;
  }

  void run(u32 threads, double seconds) {
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                              std::chrono::duration<double>(seconds));
    std::vector<std::thread> workers;
    for (u32 t = 0; t < threads; ++t) {
      workers.emplace_back([this, t, deadline] { client(seed_ * 131 + t, deadline); });
    }
    for (auto& w : workers)
      w.join();
  }

 private:
  struct Keyed {
    std::vector<Command> commands;
    bool atomic;
    IdempotencyKey key;
  };

  void client(u64 seed, std::chrono::steady_clock::time_point deadline) {
    std::mt19937_64 random(seed);
    std::vector<TransferId> holds[kGroups];
    std::vector<u64> orders[kGroups];
    std::vector<Keyed> keyed;
    const auto below = [&](u64 n) { return random() % n; };
    // Bounded in time and in count.
    for (u64 round = 0; round < 10'000'000 && std::chrono::steady_clock::now() < deadline;
         ++round) {
      const u32 g = static_cast<u32>(below(kGroups));
      std::vector<Command> commands;
      bool atomic = false;
      IdempotencyKey batch_key{};
      const u64 roll = below(100);
      if (roll < 8 && !keyed.empty()) {
        const Keyed& again = keyed[below(keyed.size())];  // a faithful retry
        commands = again.commands;
        atomic = again.atomic;
        batch_key = again.key;
      } else {
        atomic = roll < 25;
        const u32 n = static_cast<u32>(1 + below(atomic ? 4 : 8));
        for (u32 i = 0; i < n; ++i) {
          // Orders now and then, outside atomic batches (which refuse them).
          commands.push_back(!atomic && below(4) == 0 ? random_order_command(g, random, orders[g])
                                                      : random_command(g, random, holds[g]));
        }
        if (atomic) {
          if (below(2) == 0) batch_key = IdempotencyKey{random() | 1, random()};
        } else {
          for (Command& c : commands) {
            if (below(4) == 0) c.with_key(IdempotencyKey{random() | 1, random()});
          }
        }
        if (!batch_key.empty() || (!atomic && !commands[0].key.empty())) {
          if (keyed.size() < 200) keyed.push_back({commands, atomic, batch_key});
        }
      }
      std::vector<CommandResult> results(commands.size());
      if (roll >= 8 && roll < 14) {
        between_groups(g, random);
        continue;
      }
      if (!run_acked(g, commands, results, atomic, batch_key)) continue;  // overloaded: again
      for (std::size_t i = 0; i < commands.size(); ++i) {
        if (results[i].ok() && commands[i].kind == CommandKind::transfer &&
            (commands[i].flags & kTransferPending)) {
          if (holds[g].size() < 64)
            holds[g].push_back(TransferId{results[i].id});
          else
            holds[g][below(64)] = TransferId{results[i].id};
        }
        if (results[i].ok() && commands[i].kind == CommandKind::order_create) {
          if (orders[g].size() < 64)
            orders[g].push_back(results[i].id);
          else
            orders[g][below(64)] = results[i].id;
        }
      }
    }
  }

  // Applies and waits; acknowledges what was made durable. False if it was not taken.
  bool run_acked(u32 g, const std::vector<Command>& commands, std::vector<CommandResult>& results,
                 bool atomic = false, IdempotencyKey batch_key = {}) {
    WaitableCompletion done;
    const Request request{.kind = atomic ? RequestKind::atomic : RequestKind::commands,
                          .count = static_cast<u32>(commands.size()),
                          .commands = commands.data(),
                          .results = results.data(),
                          .batch_key = batch_key,
                          .completion = &done};
    if (engine_.group(g).submit(request) != ResultCode::ok) return false;
    const Outcome& outcome = done.wait();
    if (outcome.status != ResultCode::ok) return false;
    acknowledge(g, outcome.first_sequence, commands, results, atomic);
    return true;
  }

  // The gateway's three steps for a transfer to the other group (one in ten to an
  // account that does not exist, which that group refuses); half of them two-phase,
  // posted in part before the credit is carried. A kill between the steps leaves the
  // hold for the next start to finish (a two-phase one, once posted).
  void between_groups(u32 g, std::mt19937_64& random) {
    const u32 other = 1 - g;
    const u32 payee = random() % 10 == 0 ? 60 : 2 + static_cast<u32>(random() % kUsers);
    const u64 amount = 1 + random() % 500;
    const bool two_phase = random() % 2 == 0;
    Command hold = two_phase
                       ? Command::make_hold(account(g, 2 + static_cast<u32>(random() % kUsers)),
                                            account(other, payee), amount, kUsd, /*timeout_s=*/0)
                       : Command::make_transfer(account(g, 2 + static_cast<u32>(random() % kUsers)),
                                                account(other, payee), amount, kUsd);
    hold.flags |= kTransferBetweenGroups;
    std::vector<Command> step{hold};
    std::vector<CommandResult> held(1), delivered(1), settled(1);
    if (!run_acked(g, step, held) || !held[0].ok()) return;
    const TransferId id{held[0].id};
    u64 delivered_amount = amount;
    if (two_phase) {
      delivered_amount = 1 + random() % amount;
      step[0] = Command::make_post_between_groups(id, delivered_amount);
      if (!run_acked(g, step, held) || !held[0].ok()) return;
    }
    const u32 number = held[0].channel_number;
    step[0] =
        Command::make_deliver(id, hold.transfer.credit_account_id, delivered_amount, kUsd, number);
    if (!run_acked(other, step, delivered)) return;
    step[0] = Command::make_settle(id, number, delivered[0].code);
    if (!run_acked(g, step, settled)) return;
    if (settled[0].code != delivered[0].code) {
      std::fprintf(stderr, "settle answered %s, the delivery %s\n",
                   std::string(name(settled[0].code)).c_str(),
                   std::string(name(delivered[0].code)).c_str());
      std::abort();
    }
  }

  Command random_command(u32 g, std::mt19937_64& random, const std::vector<TransferId>& holds) {
    const auto below = [&](u64 n) { return random() % n; };
    const auto any = [&] { return account(g, 2 + static_cast<u32>(below(kUsers + kMerchants))); };
    const u64 roll = below(100);
    if (roll < 45) return Command::make_transfer(any(), any(), 1 + below(500), kUsd);
    if (roll < 70)
      return Command::make_hold(any(), any(), 1 + below(500), kUsd, static_cast<u32>(1 + below(3)));
    if (roll < 85 && !holds.empty())
      return Command::make_post(holds[below(holds.size())], below(3) == 0 ? 1 : 0);
    if (roll < 95 && !holds.empty()) return Command::make_void(holds[below(holds.size())]);
    return Command::make_transfer(account(g, 1), any(), 1 + below(1000), kUsd);  // top-ups
  }

  // Every order step, on orders this client made: checkouts by each method (now and
  // then refused by a risk rule), results, cancels, refunds, resolutions. The
  // treasury stands in for a provider's clearing account.
  Command random_order_command(u32 g, std::mt19937_64& random, const std::vector<u64>& orders) {
    const auto below = [&](u64 n) { return random() % n; };
    const u64 roll = below(9);
    if (roll == 0 || orders.empty()) {
      const AccountId shop = account(g, 2 + kUsers + static_cast<u32>(below(kMerchants)));
      return Command::make_order_create(shop, 1 + below(500), kUsd, static_cast<u32>(1 + below(5)),
                                        below(4) == 0 ? 1 + below(50) : 0);
    }
    const u64 id = orders[below(orders.size())];
    const AccountId provider = account(g, 1);
    switch (roll) {
      case 1:
        return Command::make_order(
            CommandKind::order_checkout, id, account(g, 2 + static_cast<u32>(below(kUsers))), 0,
            checkout_action(OrderMethod::wallet,
                            below(6) == 0 ? RiskRule::payer_velocity : RiskRule::none));
      case 2:
        return Command::make_order(CommandKind::order_checkout, id, provider, 0,
                                   checkout_action(OrderMethod::external));
      case 3:
        return Command::make_order(CommandKind::order_checkout, id, provider, 0,
                                   checkout_action(OrderMethod::balance));
      case 4:
      case 5:
        return Command::make_order(CommandKind::order_result, id, {}, 0,
                                   static_cast<u8>(1 + below(2)));
      case 6:
        return Command::make_order(CommandKind::order_cancel, id);
      case 7:
        return Command::make_order(CommandKind::order_refund, id, {},
                                   below(2) ? 0 : 1 + below(100));
      default:
        return Command::make_order(CommandKind::order_resolve, id, {}, 0,
                                   static_cast<u8>(1 + below(2)));
    }
  }

  void acknowledge(u32 g, u64 first, const std::vector<Command>& commands,
                   const std::vector<CommandResult>& results, bool atomic) {
    u64 combined = 0;
    for (const Command& c : commands)
      combined = mix64(combined ^ fingerprint(&c, 1));
    std::string line = fmt::format("ack {} {} {} {} {:x}", g, first, commands.size(),
                                   atomic ? 'a' : 'c', combined);
    for (const CommandResult& r : results)
      line += fmt::format(" {}:{}", static_cast<u32>(r.code), r.id);
    line += '\n';
    std::lock_guard lock(mutex_);
    if (::write(acks_fd_, line.data(), line.size()) != static_cast<ssize_t>(line.size()))
      std::abort();
  }

  Engine& engine_;
  u64 seed_;
  int acks_fd_ = -1;
  std::mutex mutex_;
};

}  // namespace
}  // namespace paygate

int main(int argc, char** argv) {
  using namespace paygate;
  CLI::App app{"crash_harness: groups under load, for kill -9 testing"};
  std::string data, acks;
  u64 seed = 1;
  double seconds = 30;
  u32 threads = 4;
  app.require_subcommand(1);
  for (const char* mode : {"run", "verify"}) {
    CLI::App* sub = app.add_subcommand(mode, mode);
    sub->add_option("--data", data)->required();
    sub->add_option("--acks", acks)->required();
    sub->add_option("--seed", seed);
    sub->add_option("--seconds", seconds);
    sub->add_option("--threads", threads);
  }
  CLI11_PARSE(app, argc, argv);
  const bool run_mode = app.got_subcommand("run");
  set_log_level(spdlog::level::warn);

  Result<std::unique_ptr<Engine>> opened = Engine::open(engine_config(data));
  if (!opened.ok()) {
    std::printf("recovery failed: %s\n", opened.status().to_string().c_str());
    return 3;
  }
  std::unique_ptr<Engine> engine = std::move(opened).value();
  u64 checked = 0;
  const std::string failure = verify(*engine, acks, &checked);
  if (!failure.empty()) {
    std::printf("verification failed: %s\n", failure.c_str());
    return 4;
  }
  std::string recovered;
  u64 orders_made = 0;
  for (u32 g = 0; g < engine->groups(); ++g) {
    orders_made += engine->group(g).ledger().orders().made();
    const RecoveryReport& r = engine->group(g).recovery();
    recovered += fmt::format(" group{}_snapshot={} group{}_replayed={}", g, r.snapshot_sequence, g,
                             r.commands_replayed);
    if (!r.torn_tail.empty()) recovered += " torn_tail_cleared_in_group=" + std::to_string(g);
  }
  std::printf("verified acks=%llu%s orders_made=%llu\n", static_cast<unsigned long long>(checked),
              recovered.c_str(), static_cast<unsigned long long>(orders_made));
  std::fflush(stdout);

  std::vector<bool> missing(engine->groups());
  for (u32 g = 0; g < engine->groups(); ++g)
    missing[g] = engine->group(g).ledger().account_count() < kSetupAccounts;
  engine->start();
  const BetweenGroupsReport& between = engine->between_groups_at_start();
  if (!between.problem.empty()) {
    std::printf("verification failed: transfers between groups unfinished: %s\n",
                between.problem.c_str());
    return 4;
  }
  std::printf("between_groups unsettled=%llu posted=%llu voided=%llu\n",
              static_cast<unsigned long long>(between.unsettled),
              static_cast<unsigned long long>(between.posted),
              static_cast<unsigned long long>(between.voided));
  if (!run_mode) {
    engine->stop();
    const Ledger& l0 = engine->group(0).ledger();
    const Ledger& l1 = engine->group(1).ledger();
    u64 unsettled = 0;
    for (const Ledger* ledger : {&l0, &l1})
      ledger->for_each_unsettled([&](const Transfer&, u32) { ++unsettled; });
    const Account* c01 = l0.find_clearing_account(1, kUsd);
    const Account* c10 = l1.find_clearing_account(0, kUsd);
    const i64 pair = (c01 ? c01->balance() : 0) + (c10 ? c10->balance() : 0);
    if (unsettled != 0 || pair != 0) {
      std::printf(
          "verification failed: after the start %llu transfers between groups are "
          "unsettled and the clearing accounts add up to %lld\n",
          static_cast<unsigned long long>(unsettled), static_cast<long long>(pair));
      return 4;
    }
    for (const Ledger* ledger : {&l0, &l1}) {
      const Status report = ledger->check_invariants();
      if (!report.ok()) {
        std::printf("verification failed: %s\n", report.message().c_str());
        return 4;
      }
    }
    std::printf("clearing accounts balance\n");
    return 0;
  }
  Load load(*engine, acks, seed);
  if (!load.setup(missing)) {
    std::printf("setup failed\n");
    return 3;
  }
  std::printf("ready\n");
  std::fflush(stdout);
  load.run(threads, seconds);
  engine->stop();
  return 0;
}
