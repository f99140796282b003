// The history store against the real server (docs/HISTORY.md): a transfer the group
// no longer holds is answered from the store, with what its request said, across a
// kill -9, each row once. Each test with the store in SQLite, and again in MariaDB (a
// real server, scripts/mariadb-for-tests.sh).
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <thread>
#include <utility>

#include "api/server_fixture.h"
#include "history/store.h"

namespace paygate::api {
namespace {

class HistoryServerTest : public ServerTest, public StoreParam {
 protected:
  void SetUp() override {
    // A small ring of recent transfers, so that the first ones leave the group's memory.
    config_ = "[ledger]\nrecent_transfers_max = 64\n[group]\nevents_max = 8192\n" + more_config_;
    PAYGATE_USE_STORE_PARAM(dir_.path() / "data");
    ServerTest::SetUp();
  }
  std::string more_config_;  // a subclass's settings
  // Waits (bounded) until the store holds everything each group has made durable.
  bool caught_up(u32 groups = 1) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      bool all = true;
      for (u32 g = 0; g < groups; ++g) {
        const std::string label = R"({group=")" + std::to_string(g) + R"("})";
        all = all && metric("paygate_history_lag_commands" + label) == 0 &&
              metric("paygate_group_durable_sequence" + label) ==
                  metric("paygate_history_watermark" + label);
      }
      if (all) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }
};

TEST_P(HistoryServerTest, ATransferTheGroupNoLongerHoldsIsAnsweredFromTheStore) {
  const MerchantKeys shop = merchant("Shop");
  const MerchantKeys other = merchant("Other");
  const std::string bank = system_account();
  const std::string a = account(shop), b = account(shop);
  fund(bank, a, 100'000);
  std::vector<std::string> ids;
  for (int i = 0; i < 150; ++i) {
    const HttpResponse sent =
        merchant_request(shop, "POST", "/v1/transfers",
                         transfer_body(a, b, 100 + i,
                                       R"(,"reference":"old-)" + std::to_string(i) +
                                           R"(","metadata":{"n":)" + std::to_string(i) + "}"));
    ASSERT_EQ(sent.status, 201u) << sent.body;
    ids.push_back(text_field(sent.body, "/id"));
  }
  ASSERT_TRUE(caught_up());
  const auto check_first = [&] {
    const HttpResponse first = merchant_request(shop, "GET", "/v1/transfers/" + ids[0]);
    ASSERT_EQ(first.status, 200u) << first.body;
    EXPECT_EQ(text_field(first.body, "/status"), "posted");
    EXPECT_EQ(number_field(first.body, "/amount"), 100);
    EXPECT_EQ(text_field(first.body, "/debit_account"), a);
    EXPECT_EQ(text_field(first.body, "/credit_account"), b);
    EXPECT_EQ(text_field(first.body, "/reference"), "old-0");
    EXPECT_EQ(number_field(first.body, "/metadata/n"), 0);
    EXPECT_GT(number_field(first.body, "/as_of_sequence"), 0);  // answered from the store
    // Only its owner sees it, from the store as from memory.
    EXPECT_EQ(merchant_request(other, "GET", "/v1/transfers/" + ids[0]).status, 404u);
  };
  check_first();
  // A transfer still held is answered from memory, with what its request said.
  const HttpResponse last = merchant_request(shop, "GET", "/v1/transfers/" + ids.back());
  ASSERT_EQ(last.status, 200u) << last.body;
  EXPECT_EQ(text_field(last.body, "/reference"), "old-149");
  EXPECT_EQ(number_field(last.body, "/as_of_sequence"), -999'999);  // not from the store

  // kill -9, more work, and the store again: every row once.
  restart(SIGKILL);
  const HttpResponse more = merchant_request(shop, "POST", "/v1/transfers",
                                             transfer_body(a, b, 7, R"(,"reference":"after")"));
  ASSERT_EQ(more.status, 201u) << more.body;
  ASSERT_TRUE(caught_up());
  check_first();
  EXPECT_EQ(
      text_field(merchant_request(shop, "GET", "/v1/transfers/" + ids[10]).body, "/reference"),
      "old-10");
  server_.stop(SIGTERM);
  auto store = history::Store::open(store_);
  ASSERT_TRUE(store.ok()) << store.status().to_string();
  // The funding transfer, 150, and one after the restart.
  EXPECT_EQ(store.value()->rows("transfers").value(), 152u);
  EXPECT_EQ(store.value()->rows("annotations").value(), 2u * 150u + 1u);
  start();
}

// Statements and the event feed reach back past what the group holds in memory
// (events_max), from the store: every line once, in order, to the account's first.
TEST_P(HistoryServerTest, StatementsAndEventsReachBackPastMemory) {
  const MerchantKeys shop = merchant("Shop");
  const std::string bank = system_account();
  const std::string a = account(shop), b = account(shop);
  fund(bank, a, 10'000'000);
  // 10,000 transfers: more events than the group holds (events_max: at least 8,192).
  for (int round = 0; round < 2; ++round) {
    std::string body = R"({"operations":[)";
    for (int i = 0; i < 5000; ++i) {
      if (i > 0) body += ",";
      body += R"({"op":"transfer","debit_account":")" + a + R"(","credit_account":")" + b +
              R"(","amount":)" + std::to_string(1 + i % 7) + R"(,"currency":"USD"})";
    }
    const HttpResponse batch = admin_post("/v1/batch", body + "]}");
    ASSERT_EQ(batch.status, 200u) << batch.body.substr(0, 300);
  }
  ASSERT_TRUE(caught_up());

  // a's statement, newest first, page by page: 10,000 debits, then the funding credit.
  // Pages of 512 end exactly where memory does (it holds 8,192 of a's lines): the
  // next page starts from the store.
  // Each line's running balance is the newer line's less what that one moved, from
  // the account's balance now down to the funding's: across the seam between memory
  // and the store too.
  const i64 now = number_field(admin_get("/v1/accounts/" + a).body, "/balance");
  i64 last_sequence = 0;
  std::string oldest;  // the cursor of the oldest line (the funding)
  for (const int limit : {1000, 512}) {
    std::string cursor;
    u64 lines = 0;
    bool complete = false;
    last_sequence = std::numeric_limits<i64>::max();
    i64 balance = now;
    for (int page = 0; page < 100 && !complete; ++page) {
      const HttpResponse r =
          merchant_request(shop, "GET",
                           "/v1/accounts/" + a + "/entries?limit=" + std::to_string(limit) +
                               (cursor.empty() ? "" : "&cursor=" + cursor));
      ASSERT_EQ(r.status, 200u) << r.body.substr(0, 300);
      // Each page parsed once (under a sanitizer, a parse per field of a 200 KB page
      // takes the client minutes).
      simdjson::dom::parser parser;
      simdjson::dom::array entries;
      ASSERT_FALSE(parser.parse(r.body)["entries"].get(entries));
      for (simdjson::dom::element line : entries) {
        i64 sequence = 0, amount = 0, balance_after = 0;
        std::string_view at, direction;
        ASSERT_FALSE(line["sequence"].get(sequence));
        ASSERT_FALSE(line["cursor"].get(at));
        ASSERT_FALSE(line["amount"].get(amount));
        ASSERT_FALSE(line["direction"].get(direction));
        ASSERT_FALSE(line["balance_after"].get(balance_after));
        ASSERT_EQ(balance_after, balance) << "the line at " << at;
        balance -= direction == "debit" ? -amount : amount;
        EXPECT_LT(sequence, last_sequence) << "lines newest first, each once";
        last_sequence = sequence;
        oldest = std::string(at);
        ++lines;
      }
      complete = r.body.find(R"("history_complete":true)") != std::string::npos;
      if (r.body.find(R"("has_more":true)") == std::string::npos) break;
      cursor = text_field(r.body, "/next_cursor");
    }
    EXPECT_EQ(lines, 10'001u) << "limit " << limit;
    EXPECT_EQ(balance, 0) << "before the funding, limit " << limit;
    EXPECT_TRUE(complete) << "the statement reached the account's first line, limit " << limit;
  }

  // The feed after the funding (an operator's): past memory, from the store, in order.
  const HttpResponse older = admin_get("/v1/events?group=0&limit=10&after=" + oldest);
  ASSERT_EQ(older.status, 200u) << older.body.substr(0, 300);
  const i64 first = number_field(older.body, "/events/0/sequence");
  EXPECT_GT(first, last_sequence);
  EXPECT_EQ(number_field(older.body, "/events/9/sequence") >= first, true);
  EXPECT_NE(older.body.find(R"("has_more":true)"), std::string::npos);
}

// A transfer between groups, answered from the store of the debit account's group,
// names its own credit account (not the group's clearing account) and is visible to
// the merchant it paid.
class HistoryTwoGroupServerTest : public HistoryServerTest {
 protected:
  void SetUp() override {
    extra_args_ = {"--groups", "2"};
    // Final orders leave memory (into the store's archive) a second after they end.
    more_config_ = "[orders]\nfinal_retained_s = 1\n";
    HistoryServerTest::SetUp();
  }
};

TEST_P(HistoryTwoGroupServerTest, ATransferBetweenGroupsKeepsItsCreditAccountInTheStore) {
  const MerchantKeys first = merchant("First"), second = merchant("Second");
  ASSERT_EQ(number_field(admin_get("/v1/merchants/" + second.id).body, "/group"), 1);
  const std::string bank = system_account();
  const std::string payer = account(first), payee = account(second);
  fund(bank, payer, 100'000);
  const HttpResponse sent =
      admin_post("/v1/transfers", transfer_body(payer, payee, 300, R"(,"reference":"across")"));
  ASSERT_EQ(sent.status, 201u) << sent.body;
  const std::string id = text_field(sent.body, "/id");
  // Push it out of its group's memory (64 recent transfers).
  for (int i = 0; i < 100; ++i) {
    ASSERT_EQ(admin_post("/v1/transfers", transfer_body(payer, bank, 1)).status, 201u);
  }
  ASSERT_TRUE(caught_up());
  for (const MerchantKeys* who : {&first, &second}) {
    const HttpResponse got = merchant_request(*who, "GET", "/v1/transfers/" + id);
    ASSERT_EQ(got.status, 200u) << got.body;
    EXPECT_EQ(text_field(got.body, "/credit_account"), payee);
    EXPECT_EQ(text_field(got.body, "/reference"), "across");
    EXPECT_GT(number_field(got.body, "/as_of_sequence"), 0);
  }
}

// Runs a command; its exit status and what it printed.
std::pair<int, std::string> run_command(const std::string& command) {
  std::string output;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return {-1, ""};
  char buffer[4096];
  while (std::fgets(buffer, sizeof buffer, pipe) != nullptr)
    output += buffer;
  const int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

// `paygate projection rebuild` replays the journals into a new store with the very
// same rows as the store the server kept (transfers with their texts, holds, a
// transfer between groups, orders and their changes), as their digests show.
TEST_P(HistoryTwoGroupServerTest, ARebuildFromTheJournalsMakesTheSameRows) {
  const MerchantKeys first = merchant("First"), second = merchant("Second");
  const std::string bank = system_account();
  const std::string payer = account(first), payee = account(second), till = account(first);
  fund(bank, payer, 100'000);
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(merchant_request(first, "POST", "/v1/transfers",
                               transfer_body(payer, till, 10 + i,
                                             R"(,"reference":"r-)" + std::to_string(i) +
                                                 R"(","metadata":{"i":)" + std::to_string(i) + "}"))
                  .status,
              201u);
  }
  ASSERT_EQ(
      admin_post("/v1/transfers", transfer_body(payer, payee, 300, R"(,"reference":"x")")).status,
      201u);
  const HttpResponse held = merchant_request(first, "POST", "/v1/transfers",
                                             transfer_body(payer, till, 50, R"(,"pending":true)"));
  ASSERT_EQ(held.status, 201u) << held.body;
  ASSERT_EQ(
      merchant_request(first, "POST", "/v1/transfers/" + text_field(held.body, "/id") + "/post",
                       R"({"amount":20})")
          .status,
      200u);
  std::string cancelled;
  for (int i = 0; i < 3; ++i) {
    const HttpResponse order = merchant_request(
        first, "POST", "/v1/orders",
        R"({"merchant_ref":"o-)" + std::to_string(i) +
            R"(","amount":7,"currency":"USD","description":"d","callback_url":"https://s.test/c"})");
    ASSERT_EQ(order.status, 201u) << order.body;
    if (i == 1) {
      cancelled = text_field(order.body, "/id");
      ASSERT_EQ(merchant_request(first, "POST", "/v1/orders/" + cancelled + "/cancel", "{}").status,
                200u);
    }
  }
  // The cancelled order leaves memory (the group's ticks move time on): the store
  // archives it, and answers it from there (as_of_sequence).
  for (auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
       std::chrono::steady_clock::now() < deadline &&
       number_field(merchant_request(first, "GET", "/v1/orders/" + cancelled).body,
                    "/as_of_sequence") <= 0;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(caught_up(2));
  ASSERT_EQ(server_.stop(SIGTERM), 0);

  const std::filesystem::path data = dir_.path() / "data";
  const std::filesystem::path rebuilt = dir_.path() / "rebuilt.sqlite";
  const auto [code, printed] =
      run_command(std::string(PAYGATE_PATH) + " projection rebuild --data-dir " + data.string() +
                  " --groups 2 --config " + data.string() + ".toml --store " + rebuilt.string());
  ASSERT_EQ(code, 0) << printed;
  EXPECT_NE(printed.find("group=1 watermark="), std::string::npos) << printed;
  EXPECT_NE(printed.find(" done"), std::string::npos) << printed;

  // (MariaDB's kept store against SQLite's rebuilt one: the same rows.)
  auto kept = history::Store::open(store_);
  auto made = history::Store::open(rebuilt);
  ASSERT_TRUE(kept.ok() && made.ok());
  const auto kept_digest = kept.value()->digest().value();
  const auto made_digest = made.value()->digest().value();
  ASSERT_EQ(kept_digest.size(), made_digest.size());
  for (std::size_t i = 0; i < kept_digest.size(); ++i) {
    EXPECT_EQ(kept_digest[i].rows, made_digest[i].rows) << kept_digest[i].table << printed;
    EXPECT_EQ(kept_digest[i].hash, made_digest[i].hash) << kept_digest[i].table;
  }
  for (const auto& table : kept_digest) {
    EXPECT_GT(table.rows, 0u) << table.table;
  }
  // `projection digest` prints the same as the rebuild did.
  const auto [digest_code, digest_printed] =
      run_command(std::string(PAYGATE_PATH) + " projection digest --store " + rebuilt.string());
  ASSERT_EQ(digest_code, 0) << digest_printed;
  EXPECT_NE(printed.find(digest_printed.substr(0, digest_printed.find("group="))),
            std::string::npos);
  // Fewer groups than the data directory has, or no data directory: refused.
  const std::filesystem::path other = dir_.path() / "other.sqlite";
  EXPECT_EQ(run_command(std::string(PAYGATE_PATH) + " projection rebuild --data-dir " +
                        data.string() + " --groups 1 --store " + other.string())
                .first,
            1);
  EXPECT_EQ(run_command(std::string(PAYGATE_PATH) + " projection rebuild --data-dir " +
                        (dir_.path() / "nowhere").string() + " --store " + other.string())
                .first,
            1);
  EXPECT_FALSE(std::filesystem::exists(other));
  // A rebuild never writes into a store that exists.
  EXPECT_EQ(run_command(std::string(PAYGATE_PATH) + " projection rebuild --data-dir " +
                        data.string() + " --groups 2 --store " + rebuilt.string())
                .first,
            1);
  if (GetParam() == sql::Dialect::mariadb) {
    // Into a new database of the server the configuration names, and its digest read
    // back by `projection digest`: the same rows again. Not into one that holds rows.
    const std::string into = " --data-dir " + data.string() + " --groups 2 --config " +
                             data.string() + ".toml --mariadb-database ";
    const std::string database = store_.mariadb.database.substr(0, 50) + "_re";
    const auto [made_code, made_printed] =
        run_command(std::string(PAYGATE_PATH) + " projection rebuild" + into + database);
    ASSERT_EQ(made_code, 0) << made_printed;
    const auto [read_code, read_printed] =
        run_command(std::string(PAYGATE_PATH) + " projection digest --config " + data.string() +
                    ".toml --mariadb-database " + database);
    ASSERT_EQ(read_code, 0) << read_printed;
    const std::string tables = digest_printed.substr(0, digest_printed.find("group="));
    EXPECT_EQ(read_printed.substr(0, read_printed.find("group=")), tables);
    EXPECT_NE(made_printed.find(tables), std::string::npos) << made_printed;
    const auto [again_code, again_printed] =
        run_command(std::string(PAYGATE_PATH) + " projection rebuild" + into + database);
    EXPECT_EQ(again_code, 1) << again_printed;
    EXPECT_NE(again_printed.find("holds rows"), std::string::npos) << again_printed;
    EXPECT_EQ(
        run_command(std::string(PAYGATE_PATH) + " projection rebuild" + into + "bad-name").first,
        1);
  }
  start();
}

// The store's settings are checked at start: an unknown kind, a database name that
// would need quoting or TLS settings that do not hang together stop the server with
// words that say which.
TEST(HistorySettings, ABadStoreOrDatabaseNameStopsTheServerAtStart) {
  for (const char* settings : {"[history]\nstore = \"postgres\"\n",
                               "[history]\nstore = \"mariadb\"\nmariadb_database = \"pay`gate\"\n",
                               "[history]\nmariadb_database = \"\"\n",
                               // TLS without a CA to verify the server with.
                               "[history]\nstore = \"mariadb\"\nmariadb_ssl = true\n"}) {
    TempDir dir;
    testing::ServerProcess server;
    EXPECT_FALSE(server.start(dir.path() / "data", test_config(settings))) << settings;
    EXPECT_NE(server.log().find("history."), std::string::npos) << server.log();
  }
  TempDir dir;
  testing::ServerProcess server;
  EXPECT_FALSE(
      server.start(dir.path() / "data", test_config("[history]\nmariadb_ssl = \"yes\"\n")));
  EXPECT_NE(server.log().find("history.mariadb_ssl must be true or false"), std::string::npos)
      << server.log();
}

// A MariaDB server that cannot be reached at start: the start tries again for
// open_retry_s (3 s: far longer than a refused connect takes, so a retry is certain),
// then serves without history (the ledger never waits for it), and says
// so in its log.
TEST(HistorySettings, AMariaDbStoreThatCannotBeReachedLeavesTheLedgerServing) {
  TempDir dir;
  testing::ServerProcess server;
  // Port 9 of the loopback: nothing listens there (a refused connect, at once).
  ASSERT_TRUE(server.start(dir.path() / "data",
                           test_config("[history]\nstore = \"mariadb\"\nmariadb_port = 9\n"
                                       "open_retry_s = 3\n")))
      << server.log();
  EXPECT_NE(server.log().find("event=history_failed"), std::string::npos) << server.log();
  EXPECT_NE(server.log().find("event=history_open_retry"), std::string::npos) << server.log();
}

// A store that cannot be opened at start (here: its directory is not there yet) is
// opened in the background once it can be, with the webhooks that read it, and
// catches up with what was done meanwhile: no restart (docs/HISTORY.md).
class HistoryReopenServerTest : public ServerTest {
 protected:
  void SetUp() override {
    config_ = "[ledger]\nrecent_transfers_max = 64\n[history]\nfile = \"" +
              (dir_.path() / "later" / "history.sqlite").string() +
              "\"\nopen_retry_s = 0\nreopen_interval_s = 1\n";
    ServerTest::SetUp();
  }
};

TEST_F(HistoryReopenServerTest, AStoreThatCouldNotOpenIsOpenedInTheBackground) {
  EXPECT_EQ(metric("paygate_history_store_open"), 0u);
  const MerchantKeys shop = merchant("Shop");
  const std::string bank = system_account();
  const std::string a = account(shop), b = account(shop);
  fund(bank, a, 100'000);
  std::string first;
  for (int i = 0; i < 100; ++i) {  // more than the group holds (64): the first leaves memory
    const HttpResponse sent = merchant_request(
        shop, "POST", "/v1/transfers",
        transfer_body(a, b, 10, R"(,"reference":"while-closed-)" + std::to_string(i) + "\""));
    ASSERT_EQ(sent.status, 201u) << sent.body;
    if (i == 0) first = text_field(sent.body, "/id");
  }
  EXPECT_EQ(merchant_request(shop, "GET", "/v1/webhook_endpoints").status, 501u);
  // Tries, 1 s, then 2 s, 4 s … apart, fail until the directory is there.
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_EQ(metric("paygate_history_store_open"), 0u);
  std::filesystem::create_directories(dir_.path() / "later");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (metric("paygate_history_store_open") != 1 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_EQ(metric("paygate_history_store_open"), 1u) << server_.log();
  // It caught up from where the group's journal was held for it: the first transfer,
  // which the group no longer holds, is answered from the store with its reference.
  const u64 durable = metric("paygate_group_durable_sequence{group=\"0\"}");
  const HttpResponse old = merchant_request(
      shop, "GET", "/v1/transfers/" + first + "?min_sequence=" + std::to_string(durable));
  ASSERT_EQ(old.status, 200u) << old.body;
  EXPECT_EQ(text_field(old.body, "/reference"), "while-closed-0");
  EXPECT_GT(number_field(old.body, "/as_of_sequence"), 0);  // from the store
  EXPECT_EQ(merchant_request(shop, "GET", "/v1/webhook_endpoints").status, 200u);
  EXPECT_NE(server_.log().find("event=history_reopened"), std::string::npos);
}

PAYGATE_INSTANTIATE_STORE_PARAM(HistoryServerTest);
PAYGATE_INSTANTIATE_STORE_PARAM(HistoryTwoGroupServerTest);

}  // namespace
}  // namespace paygate::api
