// paygate: the one binary. Subcommands are wired here; each lives in its module.
#include <CLI/CLI.hpp>

#include <cstdio>

#include "app/journal_tool.h"
#include "app/projection_tool.h"
#include "app/serve.h"
#include "ledger/ledger.h"

namespace paygate {
namespace {

// A short walk through the ledger: accounts, a payment, a hold captured in part.
int run_demo() {
  constexpr Currency usd = Currency::from("USD");
  Ledger ledger(LedgerConfig{.prefix = {0, 1},
                             .accounts_max = 16,
                             .pending_max = 16,
                             .recent_transfers_max = 16,
                             .idempotency_keys_max = 16});
  u64 sequence = 0;
  const u64 now = 1'800'000'000ull * kNanosPerSecond;
  const auto apply = [&](const Command& command) {
    const CommandResult result = ledger.apply(Stamp{++sequence, now}, command);
    std::printf("  %-16s -> %s (id %llu)\n",
                command.kind == CommandKind::create_account ? "create_account"
                : command.kind == CommandKind::transfer     ? (command.flags ? "hold" : "transfer")
                : command.kind == CommandKind::post_pending ? "post"
                                                            : "other",
                std::string(name(result.code)).c_str(), static_cast<unsigned long long>(result.id));
    return result;
  };
  std::printf("paygate ledger demo\n");
  const AccountId bank{apply(Command::make_create_account({}, usd, AccountKind::system)).id};
  const AccountId wallet{apply(Command::make_create_account({1}, usd, AccountKind::user)).id};
  const AccountId shop{apply(Command::make_create_account({2}, usd, AccountKind::merchant)).id};
  apply(Command::make_transfer(bank, wallet, 10'000, usd));
  const TransferId hold{apply(Command::make_hold(wallet, shop, 2'500, usd, 900)).id};
  apply(Command::make_transfer(wallet, shop, 9'000, usd));  // refused: 2,500 is held
  apply(Command::make_post(hold, 2'000));                   // capture 2,000, release 500
  for (const AccountId id : {bank, wallet, shop}) {
    const Account* a = ledger.find_account(id);
    std::printf("  account %llu: balance %lld available %lld\n",
                static_cast<unsigned long long>(id.value), static_cast<long long>(a->balance()),
                static_cast<long long>(a->available()));
  }
  const Status report = ledger.check_invariants();
  std::printf("invariants: %s\n", report.ok() ? "hold" : report.message().c_str());
  return report.ok() ? 0 : 1;
}

}  // namespace
}  // namespace paygate

int main(int argc, char** argv) {
  CLI::App app{"paygate: a payment gateway around a durable, deterministic ledger"};
  app.require_subcommand(1);
  CLI::App* demo = app.add_subcommand("demo", "run a short ledger walk-through and exit");

  paygate::ServeOptions serve_options;
  CLI::App* serve = app.add_subcommand("serve", "run the gateway (HTTP and binary protocol)");
  serve->add_option("--data-dir", serve_options.data_dir, "journals, snapshots, merchants, secrets")
      ->envname("PAYGATE_DATA_DIR")
      ->capture_default_str();
  serve->add_option("--http", serve_options.http, "HTTP listen address HOST:PORT")
      ->envname("PAYGATE_HTTP")
      ->capture_default_str();
  serve
      ->add_option("--binary", serve_options.binary,
                   "binary-protocol listen address HOST:PORT (\"\" for none)")
      ->envname("PAYGATE_BINARY")
      ->capture_default_str();
  serve
      ->add_option("--admin-token", serve_options.admin_token,
                   "operators' bearer token (default: generated once, kept in the data dir)")
      ->envname("PAYGATE_ADMIN_TOKEN");
  serve->add_option("--groups", serve_options.groups, "ledger groups (one thread each)")
      ->envname("PAYGATE_GROUPS")
      ->capture_default_str();
  serve->add_option("--config", serve_options.config_file, "TOML file for everything else")
      ->envname("PAYGATE_CONFIG")
      ->check(CLI::ExistingFile);

  CLI::App* journal = app.add_subcommand("journal", "inspect a group's journal (read-only)");
  journal->require_subcommand(1);
  std::string journal_dir;
  CLI::App* verify = journal->add_subcommand(
      "verify", "check every record and replay it; exit 0 clean, 1 torn tail, 2 corrupt");
  verify->add_option("dir", journal_dir, "the group directory (data-dir/group-NNNN)")
      ->required()
      ->check(CLI::ExistingDirectory);
  CLI::App* dump = journal->add_subcommand("dump", "print records and their commands");
  dump->add_option("dir", journal_dir, "the group directory (data-dir/group-NNNN)")
      ->required()
      ->check(CLI::ExistingDirectory);
  paygate::u64 dump_from = 0, dump_limit = 100;
  dump->add_option("--from", dump_from, "first sequence to print");
  dump->add_option("--limit", dump_limit, "most records to print");

  CLI::App* projection =
      app.add_subcommand("projection", "the history store, made again from the journals");
  projection->require_subcommand(1);
  paygate::ServeOptions rebuild_options;
  std::filesystem::path store_file;
  CLI::App* rebuild = projection->add_subcommand(
      "rebuild", "replay every group's journal into a new store (server stopped)");
  rebuild->add_option("--data-dir", rebuild_options.data_dir, "the server's data directory")
      ->envname("PAYGATE_DATA_DIR")
      ->capture_default_str();
  rebuild->add_option("--groups", rebuild_options.groups, "the server's --groups")
      ->envname("PAYGATE_GROUPS")
      ->capture_default_str();
  rebuild->add_option("--config", rebuild_options.config_file, "the server's TOML file")
      ->envname("PAYGATE_CONFIG")
      ->check(CLI::ExistingFile);
  std::string mariadb_database;
  CLI::Option* rebuild_file =
      rebuild->add_option("--store", store_file, "the new store's file (must not exist)");
  CLI::Option* rebuild_database = rebuild->add_option(
      "--mariadb-database", mariadb_database,
      "or a new database on the MariaDB server of --config's [history] (must hold no rows)");
  rebuild_file->excludes(rebuild_database);
  rebuild->callback([&] {
    if (rebuild_file->count() + rebuild_database->count() != 1) {
      throw CLI::ValidationError("rebuild", "give --store or --mariadb-database");
    }
  });
  paygate::ServeOptions digest_options;
  CLI::App* digest =
      projection->add_subcommand("digest", "each table's rows and hash, to compare stores");
  CLI::Option* digest_file = digest->add_option("--store", store_file, "the store's file");
  CLI::Option* digest_database =
      digest->add_option("--mariadb-database", mariadb_database,
                         "or a database on the MariaDB server of --config's [history]");
  digest->add_option("--config", digest_options.config_file, "the server's TOML file")
      ->check(CLI::ExistingFile);
  digest_file->excludes(digest_database);
  digest->callback([&] {
    if (digest_file->count() + digest_database->count() != 1) {
      throw CLI::ValidationError("digest", "give --store or --mariadb-database");
    }
  });

  CLI11_PARSE(app, argc, argv);
  if (rebuild->parsed()) {
    return paygate::projection_rebuild(rebuild_options, store_file, mariadb_database);
  }
  if (digest->parsed()) {
    return paygate::projection_digest(digest_options, store_file, mariadb_database);
  }
  if (demo->parsed()) return paygate::run_demo();
  if (serve->parsed()) return paygate::run_serve(serve_options);
  if (verify->parsed()) return paygate::journal_verify(journal_dir);
  if (dump->parsed()) return paygate::journal_dump(journal_dir, dump_from, dump_limit);
  return 0;
}
