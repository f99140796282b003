#include "app/projection_tool.h"

#include <chrono>
#include <cstdio>

#include <fmt/format.h>

#include "history/projector.h"
#include "history/store.h"
#include "journal/reader.h"

namespace paygate {
namespace {

int print_digest(history::Store& store) {
  Result<std::vector<history::Store::TableDigest>> digest = store.digest();
  if (!digest.ok()) {
    std::fprintf(stderr, "paygate: %s\n", digest.status().message().c_str());
    return 1;
  }
  for (const history::Store::TableDigest& d : digest.value()) {
    std::printf("table=%s rows=%llu hash=%016llx\n", d.table.c_str(),
                static_cast<unsigned long long>(d.rows), static_cast<unsigned long long>(d.hash));
  }
  Result<std::vector<history::Store::Watermark>> marks = store.watermarks();
  if (!marks.ok()) {
    std::fprintf(stderr, "paygate: %s\n", marks.status().message().c_str());
    return 1;
  }
  for (const history::Store::Watermark& w : marks.value()) {
    std::printf("group=%u first_sequence=%llu watermark=%llu\n", w.group,
                static_cast<unsigned long long>(w.first_sequence),
                static_cast<unsigned long long>(w.sequence));
  }
  return 0;
}

// The store a tool names: a file, or a database on the MariaDB server of the settings'
// [history] (kind mariadb whatever [history] store says).
history::StoreConfig named_store(const history::HistoryConfig& history,
                                 const std::filesystem::path& store_file,
                                 const std::string& mariadb_database) {
  history::StoreConfig store{.file = store_file};
  if (!mariadb_database.empty()) {
    store.kind = sql::Dialect::mariadb;
    store.mariadb = history.store.mariadb;
    store.mariadb.database = mariadb_database;
  }
  return store;
}

// The settings `paygate serve` would run with; false, said on stderr, when they are bad.
bool settings(const ServeOptions& options, EngineConfig* engine, history::HistoryConfig* history) {
  if (Status s = served_settings(options, engine, history); !s.ok()) {
    std::fprintf(stderr, "paygate: %s\n", s.message().c_str());
    return false;
  }
  return true;
}

}  // namespace

int projection_rebuild(const ServeOptions& options, const std::filesystem::path& store_file,
                       const std::string& mariadb_database) {
  EngineConfig engine;
  history::HistoryConfig history;
  if (!settings(options, &engine, &history)) return 1;
  std::error_code ec;
  // The group count is not in the journals: a directory of a group past --groups says
  // the server runs more (their transfers between groups would replay as refused).
  if (std::filesystem::exists(Engine::group_dir(engine.data_dir, engine.groups), ec)) {
    std::fprintf(stderr,
                 "paygate: %s has more groups than --groups %u: give the server's --groups\n",
                 engine.data_dir.c_str(), engine.groups);
    return 1;
  }
  if (!std::filesystem::exists(Engine::group_dir(engine.data_dir, 0), ec)) {
    std::fprintf(stderr, "paygate: %s has no journal (no group-0000): is it the data dir?\n",
                 engine.data_dir.c_str());
    return 1;
  }
  if (mariadb_database.empty() && std::filesystem::exists(store_file, ec)) {
    std::fprintf(stderr, "paygate: %s exists: a rebuild makes a new store (move it away)\n",
                 store_file.c_str());
    return 1;
  }
  const history::StoreConfig target = named_store(history, store_file, mariadb_database);
  Result<std::unique_ptr<history::Store>> opened = history::Store::open(target);
  if (!opened.ok()) {
    std::fprintf(stderr, "paygate: %s\n", opened.status().message().c_str());
    return 1;
  }
  history::Store& store = *opened.value();
  const Result<std::vector<history::Store::Watermark>> held = store.watermarks();
  if (!held.ok() || !held.value().empty()) {
    std::fprintf(stderr, "paygate: %s %s: a rebuild makes a new store (drop it, or name another)\n",
                 target.describe().c_str(), held.ok() ? "holds rows" : "cannot be read");
    return 1;
  }
  for (u32 g = 0; g < engine.groups; ++g) {
    const GroupConfig group = Engine::group_config(engine, g);
    const LedgerConfig& ledger = group.ledger;
    const std::filesystem::path& dir = group.dir;
    // The journal must have been written by a ledger configured so (results depend on
    // it): the settings given here are the server's.
    journal::SegmentHeader identity{};
    if (!journal::read_identity(dir, &identity)) {
      std::printf("group=%u journal=empty\n", g);
      continue;
    }
    if (!journal::SegmentHeader::describe(ledger, identity.segment_bytes).same_ledger(identity)) {
      std::fprintf(stderr,
                   "paygate: group %u's journal was written with other ledger settings than "
                   "these (give the server's --config and --groups)\n",
                   g);
      return 1;
    }
    Result<std::unique_ptr<history::Projector>> projector = history::Projector::open(
        history::ProjectorConfig{
            .dir = dir, .ledger = ledger, .group = g, .batch_events = history.batch_events},
        store);
    if (!projector.ok()) {
      std::fprintf(stderr, "paygate: group %u: %s\n", g, projector.status().message().c_str());
      return 1;
    }
    history::Projector& p = *projector.value();
    const auto started = std::chrono::steady_clock::now();
    auto reported = started;
    u64 commands = 0;
    for (;;) {
      const Result<u64> some = p.catch_up(~u64{0} >> 1);  // to the journal's end
      if (!some.ok()) {
        std::fprintf(stderr, "paygate: group %u at sequence %llu: %s\n", g,
                     static_cast<unsigned long long>(p.watermark()),
                     some.status().message().c_str());
        return 1;
      }
      commands += some.value();
      const auto now = std::chrono::steady_clock::now();
      if (some.value() == 0 || now - reported >= std::chrono::seconds(1)) {
        const double seconds = std::chrono::duration<double>(now - started).count();
        std::printf("group=%u watermark=%llu commands=%llu rows=%llu seconds=%.1f%s\n", g,
                    static_cast<unsigned long long>(p.watermark()),
                    static_cast<unsigned long long>(commands),
                    static_cast<unsigned long long>(store.rows_written()), seconds,
                    some.value() == 0 ? " done" : "");
        std::fflush(stdout);
        reported = now;
      }
      if (some.value() == 0) break;
    }
  }
  return print_digest(store);
}

int projection_digest(const ServeOptions& options, const std::filesystem::path& store_file,
                      const std::string& mariadb_database) {
  EngineConfig engine;
  history::HistoryConfig history;
  if (!settings(options, &engine, &history)) return 1;
  if (mariadb_database.empty() && !std::filesystem::exists(store_file)) {
    std::fprintf(stderr, "paygate: no store at %s\n", store_file.c_str());
    return 1;
  }
  Result<std::unique_ptr<history::Store>> opened =
      history::Store::open_reader(named_store(history, store_file, mariadb_database));
  if (!opened.ok()) {
    std::fprintf(stderr, "paygate: %s\n", opened.status().message().c_str());
    return 1;
  }
  return print_digest(*opened.value());
}

}  // namespace paygate
