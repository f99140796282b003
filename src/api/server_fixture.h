// The fixture of the gateway's end-to-end tests: the real `paygate serve` on
// 127.0.0.1, started (and restarted) per test, and helpers to drive it over HTTP as
// operators and merchants do.
#pragma once

#include <gtest/gtest.h>
#include <simdjson.h>

#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "api/http_client.h"
#include "api/server_test_support.h"
#include "base/temp_dir.h"
#include "history/mariadb_test_support.h"
#include "journal/reader.h"

// Built with a sanitizer (ASan, with UBSan in this project's build, or TSan): so is the
// server beside the test. Some checks measure or starve the process in ways the
// sanitizer's runtime changes, and say so when they skip.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define PAYGATE_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define PAYGATE_SANITIZED 1
#endif
#endif
#ifndef PAYGATE_SANITIZED
#define PAYGATE_SANITIZED 0
#endif

namespace paygate::api {

inline constexpr bool kSanitized = PAYGATE_SANITIZED != 0;

// Fields of a JSON answer.
inline std::string text_field(const std::string& body, std::string_view path) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (parser.parse(body).get(root)) return "<not json>";
  std::string_view value;
  if (root.at_pointer(path).get_string().get(value)) return "<missing>";
  return std::string(value);
}
inline int64_t number_field(const std::string& body, std::string_view path) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  int64_t value = -999'999;
  if (parser.parse(body).get(root) == simdjson::SUCCESS) {
    if (root.at_pointer(path).get_int64().get(value)) value = -999'999;
  }
  return value;
}
inline std::string error_code(const HttpResponse& r) {
  return text_field(r.body, "/error/code");
}

struct MerchantKeys {
  std::string id, key_id, secret;
};

// The capacities a test server runs with (docs/OPERATING.md: every capacity is
// allocated and touched at start, so production sizes would take seconds per group
// under a sanitizer), overlaid with a test's own settings.
inline std::string test_config(const std::string& overrides) {
  std::map<std::string, std::map<std::string, std::string>> sections = {
      {"ledger",
       {{"accounts_max", "65536"},
        {"pending_max", "65536"},
        {"recent_transfers_max", "65536"},
        {"idempotency_keys_max", "65536"},
        {"signature_keys_max", "65536"}}},
      {"group", {{"events_max", "65536"}}},
      {"orders", {{"orders_max", "4096"}}},
      // Reads that wait for the history store wait long: under a sanitizer on a busy
      // machine its worker (nice 19) can be seconds behind.
      {"history",
       {{"read_wait_ms", "60000"}, {"redirect_wait_ms", "60000"}, {"texts_wait_ms", "60000"}}},
      // A test's client can be slow between requests under a sanitizer (it parses large
      // answers): its keep-alive connection is not closed as idle under it.
      {"http", {{"request_timeout_ms", "600000"}}},
  };
  std::string section;
  std::istringstream lines(overrides);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) continue;
    if (line.front() == '[') {
      section = line.substr(1, line.find(']') - 1);
      sections[section];
      continue;
    }
    const std::size_t equals = line.find('=');
    if (equals == std::string::npos) continue;
    std::string key = line.substr(0, equals);
    while (!key.empty() && key.back() == ' ')
      key.pop_back();
    sections[section][key] = line.substr(line.find_first_not_of(' ', equals + 1));
  }
  std::string out;
  for (const auto& [name, keys] : sections) {
    out += "[" + name + "]\n";
    for (const auto& [key, value] : keys)
      out += key + " = " + value + "\n";
  }
  return out;
}

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override { start(); }

  // `config`: TOML settings over test_config()'s, kept for restarts (empty: the last
  // ones given).
  void start(const std::string& config = {}) {
    if (!config.empty()) config_ = config;
    ASSERT_TRUE(server_.start(dir_.path() / "data", test_config(config_), extra_args_))
        << server_.log();
    client_ = std::make_unique<HttpClient>("127.0.0.1", server_.port());
  }
  // What the server's journals say about their commands (journal annotations), each
  // as "<kind> <text> | <its command, described>", group by group in journal order.
  // Read with the server stopped (or between its writes).
  std::vector<std::string> journaled_annotations() {
    std::vector<std::filesystem::path> groups;
    for (const auto& entry : std::filesystem::directory_iterator(dir_.path() / "data")) {
      if (entry.path().filename().string().starts_with("group-")) groups.push_back(entry.path());
    }
    std::sort(groups.begin(), groups.end());
    std::vector<std::string> said;
    for (const std::filesystem::path& group : groups) {
      const journal::ScanReport report = journal::scan(group, 0, [&](const journal::Record& r) {
        for (const journal::AnnotationView& a : r.annotations) {
          said.push_back(std::to_string(static_cast<int>(a.kind)) + " " + std::string(a.text) +
                         " | " + describe(r.commands[a.sequence - r.header->sequence]));
        }
        return true;
      });
      EXPECT_NE(report.end, journal::LogEnd::corrupt) << report.message;
    }
    return said;
  }
  void restart(int signal = SIGTERM) {
    const int status = server_.stop(signal);
    if (signal == SIGTERM) {
      EXPECT_EQ(status, 0) << server_.log();
    }
    start();
  }

  std::vector<std::string> admin(std::vector<std::string> more = {}) {
    more.push_back("Authorization: Bearer " + server_.admin_token());
    more.push_back("Content-Type: application/json");
    return more;
  }
  HttpResponse admin_post(const std::string& target, const std::string& body,
                          std::vector<std::string> more = {}) {
    return client_->request("POST", target, admin(std::move(more)), body);
  }
  HttpResponse admin_get(const std::string& target) {
    return client_->request("GET", target, admin());
  }
  // A request signed by a merchant.
  HttpResponse merchant_request(const MerchantKeys& m, std::string_view method,
                                const std::string& target, const std::string& body = {},
                                std::vector<std::string> more = {}) {
    auto headers = testing::signed_headers(m.key_id, m.secret, method, target, body);
    headers.insert(headers.end(), more.begin(), more.end());
    return client_->request(method, target, headers, body);
  }

  MerchantKeys merchant(const std::string& name, const std::string& parent = {}) {
    const std::string body = parent.empty()
                                 ? R"({"name":")" + name + R"("})"
                                 : R"({"name":")" + name + R"(","parent_id":")" + parent + R"("})";
    const HttpResponse r = admin_post("/v1/merchants", body);
    EXPECT_EQ(r.status, 201u) << r.body;
    return {text_field(r.body, "/id"), text_field(r.body, "/key_id"),
            text_field(r.body, "/secret")};
  }
  std::string system_account(const std::string& currency = "USD") {
    const HttpResponse r =
        admin_post("/v1/accounts", R"({"currency":")" + currency + R"(","kind":"system"})");
    EXPECT_EQ(r.status, 201u) << r.body;
    return text_field(r.body, "/id");
  }
  std::string account(const MerchantKeys& owner, const std::string& currency = "USD") {
    const HttpResponse r =
        merchant_request(owner, "POST", "/v1/accounts", R"({"currency":")" + currency + R"("})");
    EXPECT_EQ(r.status, 201u) << r.body;
    return text_field(r.body, "/id");
  }
  static std::string transfer_body(const std::string& from, const std::string& to, i64 amount,
                                   const std::string& extra = {}) {
    return R"({"debit_account":")" + from + R"(","credit_account":")" + to + R"(","amount":)" +
           std::to_string(amount) + R"(,"currency":"USD")" + extra + "}";
  }
  void fund(const std::string& system, const std::string& to, i64 amount) {
    const HttpResponse r = admin_post("/v1/transfers", transfer_body(system, to, amount));
    ASSERT_EQ(r.status, 201u) << r.body;
  }
  int64_t balance(const std::string& account_id, std::string_view field = "/balance") {
    const HttpResponse r = admin_get("/v1/accounts/" + account_id);
    EXPECT_EQ(r.status, 200u) << r.body;
    return number_field(r.body, field);
  }
  // The value of a line of /metrics (its name and labels, as printed), read on
  // client_'s connection; all ones if there is no such line.
  u64 metric(const std::string& line) {
    const std::string page = client_->request("GET", "/metrics").body;
    const std::size_t at = page.find("\n" + line + " ");  // not its # HELP or # TYPE
    if (at == std::string::npos) return ~u64{0};
    return std::stoull(page.substr(at + line.size() + 2));
  }

  TempDir dir_;
  testing::ServerProcess server_;
  std::unique_ptr<HttpClient> client_;
  std::vector<std::string> extra_args_;  // for every start
  std::string config_;                   // likewise
};

// The same, with two groups.
class TwoGroupServerTest : public ServerTest {
 protected:
  void SetUp() override {
    extra_args_ = {"--groups", "2"};
    start();
  }
};

// A test run with the history store in SQLite (the default) and again in MariaDB.
class StoreParam : public ::testing::WithParamInterface<sql::Dialect> {
 public:
  static std::string name(const ::testing::TestParamInfo<sql::Dialect>& param) {
    return param.param == sql::Dialect::sqlite ? "Sqlite" : "MariaDb";
  }

 protected:
  // The TOML settings that put a server's history store where the test's parameter
  // says (none for SQLite, whose file is in `data_dir`), and that store in store_; for
  // MariaDB, a database of the test's own on the test process's server (running:
  // PAYGATE_REQUIRE_MARIADB).
  std::string history_settings(const std::filesystem::path& data_dir) {
    if (GetParam() == sql::Dialect::sqlite) {
      store_ = history::StoreConfig{.file = data_dir / "history.sqlite"};
      return {};
    }
    store_ = history::testing::MariaDbServer::shared()->store(
        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    return "[history]\nstore = \"mariadb\"\nmariadb_port = " + std::to_string(store_.mariadb.port) +
           "\nmariadb_database = \"" + store_.mariadb.database + "\"\n";
  }

  history::StoreConfig store_;  // the server's
};
// In a StoreParam fixture's SetUp, before the server starts.
#define PAYGATE_USE_STORE_PARAM(data_dir)                               \
  do {                                                                  \
    if (GetParam() == sql::Dialect::mariadb) PAYGATE_REQUIRE_MARIADB(); \
    config_ += history_settings(data_dir);                              \
  } while (false)
#define PAYGATE_INSTANTIATE_STORE_PARAM(fixture)                                           \
  INSTANTIATE_TEST_SUITE_P(Stores, fixture,                                                \
                           ::testing::Values(sql::Dialect::sqlite, sql::Dialect::mariadb), \
                           StoreParam::name)

}  // namespace paygate::api
