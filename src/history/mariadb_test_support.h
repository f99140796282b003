// A real MariaDB server for the tests of the history store, started on 127.0.0.1 by
// scripts/mariadb-for-tests.sh, one per test process (it takes seconds to start) unless
// PAYGATE_TEST_MARIADB_PORT names one already running there (scripts/test.sh starts
// one for all its tests), and a fresh database of it for each test.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "history/store.h"

namespace paygate::history::testing {

class MariaDbServer {
 public:
  static bool installed() {
    return std::system("command -v mariadbd >/dev/null 2>&1 || test -x /usr/sbin/mariadbd") == 0;
  }
  // The process's server, started on first use (nullptr, with the script's words on
  // stderr, when it cannot start); stopped when the process ends.
  static MariaDbServer* shared() {
    static MariaDbServer server(/*may_share=*/true);
    return server.running_ ? &server : nullptr;
  }
  // A server of the caller's alone (for a test that changes the server's settings),
  // stopped when it goes; nullptr when it cannot start. `options`: mariadbd's, more
  // (MARIADB_OPTIONS of the script: no quotes, words split at spaces).
  static std::unique_ptr<MariaDbServer> own(const std::string& options = {}) {
    std::unique_ptr<MariaDbServer> server(new MariaDbServer(/*may_share=*/false, options));
    return server->running_ ? std::move(server) : nullptr;
  }
  ~MariaDbServer() {
    if (!started_here_) return;
    const std::string command = script() + " stop '" + dir_.string() + "'";
    (void)std::system(command.c_str());
    std::filesystem::remove_all(dir_);
  }
  MariaDbServer(const MariaDbServer&) = delete;
  MariaDbServer& operator=(const MariaDbServer&) = delete;

  // A store's configuration in a database of its own, new (dropped if a test of
  // another run or stage left one of that name; made by the store when it opens).
  StoreConfig store(const std::string& tag) {
    static std::atomic<int> made{0};
    std::string database = "t" + std::to_string(::getpid()) + "_" + std::to_string(++made) + "_";
    for (const char c : tag)
      database += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
    database.resize(std::min<std::size_t>(database.size(), 60));
    run_sql("DROP DATABASE IF EXISTS " + database);
    return StoreConfig{.kind = sql::Dialect::mariadb,
                       .file = {},
                       .mariadb = {.host = "127.0.0.1",
                                   .port = static_cast<u16>(port_),
                                   .socket = {},
                                   .user = "paygate",
                                   .password = {},
                                   .database = database,
                                   .connect_timeout_s = 10,
                                   .io_timeout_s = 60}};
  }
  int port() const noexcept { return port_; }
  // Runs `sql` as the tests' user; false when it failed.
  bool run_sql(const std::string& sql) const {
    auto admin = connect();
    return admin != nullptr && admin->exec(sql);
  }
  // Has the server drop every connection to `database` (as a restart or an operator's
  // KILL would); how many it dropped, or -1 on a failure.
  int kill_connections(const std::string& database) const {
    auto admin = connect();
    if (admin == nullptr) return -1;
    std::vector<i64> ids;
    {
      sql::Statement list(*admin,
                          "SELECT id FROM information_schema.processlist WHERE db = ? AND "
                          "id <> CONNECTION_ID()");
      list.bind_text(1, database);
      for (int rc = list.step(); rc == sql::kRow; rc = list.step())
        ids.push_back(list.integer(0));
    }
    for (const i64 id : ids) {
      if (!admin->exec("KILL " + std::to_string(id))) return -1;
    }
    return static_cast<int>(ids.size());
  }

 private:
  explicit MariaDbServer(bool may_share, const std::string& options = {}) {
    const char* given = may_share ? std::getenv("PAYGATE_TEST_MARIADB_PORT") : nullptr;
    if (given != nullptr) {
      port_ = std::atoi(given);
      running_ = port_ > 0;
      return;
    }
    started_here_ = true;
    static std::atomic<int> started{0};
    dir_ = std::filesystem::temp_directory_path() /
           ("paygate-mariadb-test." + std::to_string(::getpid()) + "." + std::to_string(++started));
    std::filesystem::create_directories(dir_);
    const std::string command = "MARIADB_OPTIONS='" + options + "' " + script() + " start '" +
                                dir_.string() + "' >/dev/null";
    if (std::system(command.c_str()) != 0) return;
    std::ifstream port_file(dir_ / "port");
    port_file >> port_;
    running_ = port_ > 0;
  }
  std::unique_ptr<sql::Connection> connect() const {
    auto admin = sql::open_mariadb(
        sql::MariaDbConfig{
            .host = "127.0.0.1", .port = static_cast<u16>(port_), .database = "paygate"},
        /*writing=*/false);
    return admin.ok() ? std::move(admin).value() : nullptr;
  }
  static std::string script() {
    return std::string("bash ") + PAYGATE_SOURCE_DIR + "/scripts/mariadb-for-tests.sh";
  }

  std::filesystem::path dir_;
  int port_ = 0;
  bool running_ = false;
  bool started_here_ = false;
};

}  // namespace paygate::history::testing

// Skips the test when mariadbd is not installed (scripts/install-deps.sh installs it,
// CI runs it), fails it when it is and does not start.
#define PAYGATE_REQUIRE_MARIADB()                                                        \
  do {                                                                                   \
    if (!::paygate::history::testing::MariaDbServer::installed()) {                      \
      GTEST_SKIP() << "mariadbd is not installed (scripts/install-deps.sh installs it)"; \
    }                                                                                    \
    ASSERT_NE(::paygate::history::testing::MariaDbServer::shared(), nullptr)             \
        << "MariaDB did not start";                                                      \
  } while (false)
