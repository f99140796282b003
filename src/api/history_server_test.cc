// The history store against the real server (docs/HISTORY.md): a transfer the group
// no longer holds is answered from the store, with what its request said, across a
// kill -9, each row once.
#include <gtest/gtest.h>

#include <chrono>
#include <limits>
#include <thread>

#include "api/server_fixture.h"
#include "history/sqlite_store.h"

namespace paygate::api {
namespace {

class HistoryServerTest : public ServerTest {
 protected:
  void SetUp() override {
    // A small ring of recent transfers, so that the first ones leave the group's memory.
    config_ = "[ledger]\nrecent_transfers_max = 64\n[group]\nevents_max = 8192\n";
    ServerTest::SetUp();
  }
  // Waits (bounded) until the store holds everything the group has made durable.
  bool caught_up() {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      if (metric(R"(paygate_history_lag_commands{group="0"})") == 0 &&
          metric(R"(paygate_group_durable_sequence{group="0"})") ==
              metric(R"(paygate_history_watermark{group="0"})")) {
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }
};

TEST_F(HistoryServerTest, ATransferTheGroupNoLongerHoldsIsAnsweredFromTheStore) {
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
  auto store = history::SqliteStore::open(dir_.path() / "data" / "history.sqlite");
  ASSERT_TRUE(store.ok()) << store.status().to_string();
  // The funding transfer, 150, and one after the restart.
  EXPECT_EQ(store.value()->rows("transfers").value(), 152u);
  EXPECT_EQ(store.value()->rows("annotations").value(), 2u * 150u + 1u);
  start();
}

// Statements and the event feed reach back past what the group holds in memory
// (events_max), from the store: every line once, in order, to the account's first.
TEST_F(HistoryServerTest, StatementsAndEventsReachBackPastMemory) {
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
  i64 last_sequence = 0;
  std::string oldest;  // the cursor of the oldest line (the funding)
  for (const int limit : {1000, 512}) {
    std::string cursor;
    u64 lines = 0;
    bool complete = false;
    last_sequence = std::numeric_limits<i64>::max();
    for (int page = 0; page < 100 && !complete; ++page) {
      const HttpResponse r =
          merchant_request(shop, "GET",
                           "/v1/accounts/" + a + "/entries?limit=" + std::to_string(limit) +
                               (cursor.empty() ? "" : "&cursor=" + cursor));
      ASSERT_EQ(r.status, 200u) << r.body.substr(0, 300);
      for (int i = 0;; ++i) {
        const std::string at = "/entries/" + std::to_string(i);
        if (text_field(r.body, at + "/transfer_id") == "<missing>") break;
        const i64 sequence = number_field(r.body, at + "/sequence");
        EXPECT_LT(sequence, last_sequence) << "lines newest first, each once";
        last_sequence = sequence;
        oldest = text_field(r.body, at + "/cursor");
        ++lines;
      }
      complete = r.body.find(R"("history_complete":true)") != std::string::npos;
      if (r.body.find(R"("has_more":true)") == std::string::npos) break;
      cursor = text_field(r.body, "/next_cursor");
    }
    EXPECT_EQ(lines, 10'001u) << "limit " << limit;
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
    HistoryServerTest::SetUp();
  }
};

TEST_F(HistoryTwoGroupServerTest, ATransferBetweenGroupsKeepsItsCreditAccountInTheStore) {
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

}  // namespace
}  // namespace paygate::api
