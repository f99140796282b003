// history_bench: how fast a group's journal is projected into the history store.
//
// A group journals --transfers transfers between random pairs of --accounts accounts
// (requests of --batch, keep_journal), one in --reference-every carrying a reference
// and metadata; then a projector (history/projector.h) reads the whole journal into a
// fresh store, timed: SQLite (a file in --dir), or MariaDB (--store mariadb: a database
// `history_bench` of the server at --mariadb-port on 127.0.0.1, dropped before each
// round; scripts/mariadb-for-tests.sh starts one). Prints events_per_sec (ledger events:
// the /v1/events stream) and rows_per_sec (events, statement lines and annotations), the
// median of --rounds projections of the same journal, each into a new store.
// --batch-events: the projector's transaction size ([history] batch_events).
//
//   ./build/bench/history_bench [--dir /var/tmp/paygate-history-bench] [--transfers 1000000]
//        [--accounts 10000] [--batch 8190] [--batch-events 200000] [--rounds 3] [--quick]
//        [--store sqlite|mariadb] [--mariadb-port 3306] [--mariadb-user paygate]
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "base/log.h"
#include "history/projector.h"
#include "pipeline/group.h"
#include "progress.h"

namespace paygate {
namespace {

constexpr Currency kUsd = Currency::from("USD");

struct Options {
  std::string dir = "/var/tmp/paygate-history-bench";
  u64 transfers = 1'000'000;
  u32 accounts = 10'000;
  u32 batch = 8190;
  u32 reference_every = 10;
  u32 rounds = 3;
  u64 batch_events = history::ProjectorConfig{}.batch_events;
  std::string store = "sqlite";
  sql::MariaDbConfig mariadb = {.database = "history_bench"};
};

GroupConfig group_config(const Options& o) {
  GroupConfig c;
  c.dir = std::filesystem::path(o.dir) / "group-0000";
  c.ledger.accounts_max = o.accounts + 16;
  c.ledger.pending_max = 1024;
  c.ledger.recent_transfers_max = 1u << 16;
  c.ledger.idempotency_keys_max = 1024;
  c.keep_journal = true;
  c.snapshot_every_commands = 0;
  return c;
}

// The journal: accounts, a funding transfer each, then the random transfers.
bool write_journal(const Options& o) {
  std::filesystem::remove_all(o.dir);
  std::filesystem::create_directories(o.dir);
  auto opened = Group::open(group_config(o));
  if (!opened.ok()) {
    std::fprintf(stderr, "history_bench: %s\n", opened.status().to_string().c_str());
    return false;
  }
  std::unique_ptr<Group> group = std::move(opened).value();
  group->start();
  std::vector<CommandResult> results;
  std::vector<Command> commands;
  commands.push_back(Command::make_create_account(MerchantId{1}, kUsd, AccountKind::system));
  for (u32 i = 0; i < o.accounts; ++i)
    commands.push_back(Command::make_create_account(MerchantId{1}, kUsd, AccountKind::user));
  if (apply_and_wait(*group, commands, results) != ResultCode::ok) return false;
  const AccountId bank{results[0].id};
  std::vector<AccountId> accounts;
  for (u32 i = 1; i <= o.accounts; ++i)
    accounts.push_back(AccountId{results[i].id});
  commands.clear();
  for (const AccountId a : accounts)
    commands.push_back(Command::make_transfer(bank, a, 1'000'000'000, kUsd));
  if (apply_and_wait(*group, commands, results) != ResultCode::ok) return false;

  std::mt19937_64 random(42);
  const std::string metadata = R"({"cart":"A-1","items":3})";
  std::vector<std::string> references;
  std::vector<journal::Annotation> said;
  u64 made = 0;
  Progress progress([&](int second) {
    std::fprintf(stderr, "history_bench: %ds journaled %llu transfers\n", second,
                 static_cast<unsigned long long>(made));
  });
  while (made < o.transfers) {
    const u32 count = static_cast<u32>(std::min<u64>(o.batch, o.transfers - made));
    commands.clear();
    references.clear();
    said.clear();
    for (u32 i = 0; i < count; ++i) {
      // Two different accounts: the second a non-zero step from the first.
      const std::size_t from = random() % accounts.size();
      const std::size_t to = (from + 1 + random() % (accounts.size() - 1)) % accounts.size();
      const AccountId a = accounts[from], b = accounts[to];
      commands.push_back(Command::make_transfer(a, b, 1 + random() % 1000, kUsd));
      if ((made + i) % o.reference_every == 0)
        references.push_back("ref-" + std::to_string(made + i));
    }
    u32 r = 0;
    for (u32 i = 0; i < count; ++i) {
      if ((made + i) % o.reference_every != 0) continue;
      said.push_back({i, journal::AnnotationKind::reference, references[r++]});
      said.push_back({i, journal::AnnotationKind::metadata, metadata});
    }
    results.assign(count, CommandResult{});
    WaitableCompletion done;
    Request request{.kind = RequestKind::commands,
                    .count = count,
                    .commands = commands.data(),
                    .results = results.data(),
                    .completion = &done};
    request.annotations = said.data();
    request.annotation_count = static_cast<u32>(said.size());
    if (group->submit(request) != ResultCode::ok ||
        wait_for(*group, done).status != ResultCode::ok) {
      return false;
    }
    made += count;
  }
  progress.stop();
  group->stop();
  return true;
}

struct Round {
  double seconds = 0;
  u64 events = 0, rows = 0;
};

bool project(const Options& o, Round* round) {
  history::StoreConfig config{.file = std::filesystem::path(o.dir) / "history.sqlite",
                              .mariadb = o.mariadb};
  if (o.store == "mariadb") {
    config.kind = sql::Dialect::mariadb;
    auto admin = sql::open_mariadb(o.mariadb, /*writing=*/true);
    if (!admin.ok() || !admin.value()->exec("DROP DATABASE IF EXISTS " + o.mariadb.database)) {
      std::fprintf(
          stderr, "history_bench: %s\n",
          admin.ok() ? admin.value()->error().c_str() : admin.status().to_string().c_str());
      return false;
    }
  } else {
    for (const char* suffix : {"", "-wal", "-shm"})
      std::filesystem::remove(config.file.string() + suffix);
  }
  auto store = history::Store::open(config);
  if (!store.ok()) {
    std::fprintf(stderr, "history_bench: %s\n", store.status().to_string().c_str());
    return false;
  }
  const GroupConfig c = group_config(o);
  auto projector = history::Projector::open(
      history::ProjectorConfig{
          .dir = c.dir, .ledger = c.ledger, .group = 0, .batch_events = o.batch_events},
      *store.value());
  if (!projector.ok()) {
    std::fprintf(stderr, "history_bench: %s\n", projector.status().to_string().c_str());
    return false;
  }
  const auto started = std::chrono::steady_clock::now();
  Progress progress([&](int second) {
    std::fprintf(stderr, "history_bench: %ds projected through sequence %llu\n", second,
                 static_cast<unsigned long long>(projector.value()->watermark()));
  });
  const Result<u64> projected = projector.value()->catch_up_all(~u64{0} >> 1);
  progress.stop();
  round->seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (!projected.ok()) {
    std::fprintf(stderr, "history_bench: %s\n", projected.status().to_string().c_str());
    return false;
  }
  round->events = store.value()->rows("events").value();
  round->rows = store.value()->rows_written();
  return true;
}

}  // namespace
}  // namespace paygate

int main(int argc, char** argv) {
  using namespace paygate;
  Options o;
  bool quick = false;
  CLI::App app{"history_bench: projecting a journal into the history store"};
  app.add_option("--dir", o.dir, "scratch directory (removed and refilled)");
  app.add_option("--transfers", o.transfers);
  app.add_option("--accounts", o.accounts);
  app.add_option("--batch", o.batch);
  app.add_option("--reference-every", o.reference_every)->check(CLI::PositiveNumber);
  app.add_option("--batch-events", o.batch_events, "rows per store transaction, about")
      ->check(CLI::PositiveNumber);
  app.add_option("--rounds", o.rounds)->check(CLI::PositiveNumber);
  app.add_flag("--quick", quick, "a small run that checks the program works");
  app.add_option("--store", o.store, "sqlite or mariadb")
      ->check(CLI::IsMember({"sqlite", "mariadb"}));
  app.add_option("--mariadb-port", o.mariadb.port);
  app.add_option("--mariadb-user", o.mariadb.user);
  app.add_option("--mariadb-password", o.mariadb.password);
  CLI11_PARSE(app, argc, argv);
  if (quick) {
    o.transfers = 20'000;
    o.accounts = 100;
    o.rounds = 1;
  }
  set_log_level(spdlog::level::warn);
  if (!write_journal(o)) return 1;
  std::vector<Round> rounds(o.rounds);
  for (Round& r : rounds) {
    if (!project(o, &r)) return 1;
    std::printf(
        "history_bench round seconds=%.3f events=%llu rows=%llu events_per_sec=%.0f "
        "rows_per_sec=%.0f\n",
        r.seconds, static_cast<unsigned long long>(r.events),
        static_cast<unsigned long long>(r.rows), r.events / r.seconds, r.rows / r.seconds);
  }
  std::sort(rounds.begin(), rounds.end(),
            [](const Round& a, const Round& b) { return a.seconds < b.seconds; });
  const Round& median = rounds[rounds.size() / 2];
  std::printf("history_bench store=%s transfers=%llu events_per_sec=%.0f rows_per_sec=%.0f\n",
              o.store.c_str(), static_cast<unsigned long long>(o.transfers),
              median.events / median.seconds, median.rows / median.seconds);
  std::filesystem::remove_all(o.dir);
  std::printf("history_bench ok\n");
  return 0;
}
