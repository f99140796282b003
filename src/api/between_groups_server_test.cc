// Transfers between groups end to end: the real `paygate serve` with two groups.
#include <gtest/gtest.h>
#include <simdjson.h>

#include <atomic>
#include <set>
#include <thread>

#include "api/binary_client.h"
#include "api/id_text.h"
#include "api/server_fixture.h"

namespace paygate::api {
namespace {

using testing::make_jwt;
using testing::ServerProcess;
using testing::signed_headers;

TEST_F(TwoGroupServerTest, TransfersBetweenGroups) {
  // Top-level merchants take the groups in turn.
  const MerchantKeys first = merchant("First"), second = merchant("Second");
  ASSERT_EQ(number_field(admin_get("/v1/merchants/" + first.id).body, "/group"), 0);
  ASSERT_EQ(number_field(admin_get("/v1/merchants/" + second.id).body, "/group"), 1);
  const std::string bank = system_account();
  const std::string payer = account(first), payee = account(second);
  const std::string euros = account(second, "EUR");
  fund(bank, payer, 1'000);

  // Posted once the other group has credited it; the answer says it crossed.
  const std::string body = transfer_body(payer, payee, 300);
  const HttpResponse sent = admin_post("/v1/transfers", body, {"Idempotency-Key: cross-1"});
  ASSERT_EQ(sent.status, 201u) << sent.body;
  EXPECT_EQ(text_field(sent.body, "/status"), "posted");
  EXPECT_EQ(text_field(sent.body, "/credit_account"), payee);
  EXPECT_NE(sent.body.find(R"("between_groups":true)"), std::string::npos) << sent.body;
  EXPECT_EQ(balance(payer), 700);
  EXPECT_EQ(balance(payee), 300);
  const std::string id = text_field(sent.body, "/id");
  const HttpResponse looked = admin_get("/v1/transfers/" + id);
  EXPECT_EQ(text_field(looked.body, "/status"), "posted");
  EXPECT_EQ(text_field(looked.body, "/credit_account"), payee);
  // Only settlement closes it.
  EXPECT_EQ(error_code(admin_post("/v1/transfers/" + id + "/void", "{}")), "transfer_not_pending");

  // Refused by the other group: voided, the money back, the reason in the answer and
  // on the transfer.
  const HttpResponse wrong_currency = admin_post("/v1/transfers", transfer_body(payer, euros, 50));
  EXPECT_EQ(wrong_currency.status, 400u) << wrong_currency.body;
  EXPECT_EQ(error_code(wrong_currency), "currency_mismatch");
  const HttpResponse nobody =
      admin_post("/v1/transfers", transfer_body(payer, "acc_0001000000000fff", 50));
  EXPECT_EQ(nobody.status, 404u) << nobody.body;
  EXPECT_EQ(error_code(nobody), "credit_account_not_found");
  const std::string message = text_field(nobody.body, "/error/message");
  const std::size_t at = message.find("trf_");
  ASSERT_NE(at, std::string::npos) << message;
  const HttpResponse voided = admin_get("/v1/transfers/" + message.substr(at, 20));
  EXPECT_EQ(text_field(voided.body, "/status"), "voided") << voided.body;
  EXPECT_EQ(text_field(voided.body, "/refused"), "credit_account_not_found");
  EXPECT_EQ(balance(payer), 700);
  EXPECT_EQ(balance(payer, "/available"), 700);

  // Refused here, before anything moves: short funds, a merchant that cannot see the
  // other account.
  EXPECT_EQ(error_code(admin_post("/v1/transfers", transfer_body(payer, payee, 701))),
            "insufficient_funds");
  EXPECT_EQ(
      error_code(merchant_request(first, "POST", "/v1/transfers", transfer_body(payer, payee, 1))),
      "credit_account_not_found");
  // Ids of another region or of a group beyond the two name nothing, for operators too.
  EXPECT_EQ(
      error_code(admin_post("/v1/transfers", transfer_body("acc_f000000000000001", payee, 1))),
      "debit_account_not_found");
  EXPECT_EQ(
      error_code(admin_post("/v1/transfers", transfer_body(payer, "acc_0002000000000001", 1))),
      "credit_account_not_found");
  EXPECT_EQ(admin_get("/v1/accounts/acc_0002000000000001").status, 404u);
  // Operators read clearing accounts too (the ledger made them; no owner lists them).
  const HttpResponse clearing = admin_get("/v1/accounts/acc_0000000000000003");
  EXPECT_EQ(clearing.status, 200u) << clearing.body;
  EXPECT_EQ(text_field(clearing.body, "/kind"), "system");
  EXPECT_EQ(number_field(clearing.body, "/balance"), 300);

  // The same key and body answer the same, across a crash too; another body is refused.
  for (const int signal : {SIGTERM, SIGKILL}) {
    restart(signal);
    const HttpResponse again = admin_post("/v1/transfers", body, {"Idempotency-Key: cross-1"});
    EXPECT_EQ(again.status, 201u);
    EXPECT_EQ(again.body, sent.body);
    EXPECT_EQ(error_code(admin_post("/v1/transfers", transfer_body(payer, payee, 301),
                                    {"Idempotency-Key: cross-1"})),
              "idempotency_key_reused");
    EXPECT_EQ(balance(payer), 700);
    EXPECT_EQ(balance(payee), 300);
  }

  // Many at once, both ways: every cent arrives once.
  const std::string back = account(first);
  std::vector<std::thread> clients;
  std::atomic<int> posted{0};
  for (int c = 0; c < 8; ++c) {
    clients.emplace_back([&, c] {
      HttpClient client("127.0.0.1", server_.port());
      for (int i = 0; i < 25; ++i) {
        const std::string& from = c % 2 == 0 ? payer : payee;
        const std::string& to = c % 2 == 0 ? payee : back;
        const HttpResponse r =
            client.request("POST", "/v1/transfers", admin(), transfer_body(from, to, 1));
        if (r.status == 201u) posted.fetch_add(1);
      }
    });
  }
  for (auto& t : clients)
    t.join();
  EXPECT_EQ(posted.load(), 200);
  EXPECT_EQ(balance(payer), 600);
  EXPECT_EQ(balance(payee), 300);
  EXPECT_EQ(balance(back), 100);
}

// Carried between groups, a transfer's reference is journaled with the command that
// numbers it in the debit account's group, alone or in a batch.
TEST_F(TwoGroupServerTest, WhatATransferBetweenGroupsCarriesIsJournaledWhereItIsNumbered) {
  const MerchantKeys first = merchant("First"), second = merchant("Second");
  const std::string bank = system_account();
  const std::string payer = account(first), payee = account(second);
  fund(bank, payer, 1'000);
  const HttpResponse sent =
      admin_post("/v1/transfers", transfer_body(payer, payee, 301, R"(,"reference":"ref-cross")"));
  ASSERT_EQ(sent.status, 201u) << sent.body;
  const HttpResponse batch = admin_post(
      "/v1/batch", R"({"operations":[{"op":"transfer","debit_account":")" + payer +
                       R"(","credit_account":")" + payee +
                       R"(","amount":302,"currency":"USD","reference":"ref-cross-batch"}]})");
  ASSERT_EQ(batch.status, 200u) << batch.body;
  ASSERT_EQ(number_field(batch.body, "/results/0/status"), 201) << batch.body;
  server_.stop(SIGKILL);
  const std::vector<std::string> said = journaled_annotations();
  ASSERT_EQ(said.size(), 2u);
  EXPECT_TRUE(said[0].starts_with("1 ref-cross | transfer ")) << said[0];
  EXPECT_TRUE(said[0].find(" amount=301 currency=USD") != std::string::npos) << said[0];
  EXPECT_TRUE(said[1].starts_with("1 ref-cross-batch | transfer ")) << said[1];
  EXPECT_TRUE(said[1].find(" amount=302 currency=USD") != std::string::npos) << said[1];
  start();
  EXPECT_EQ(balance(payee), 301 + 302);
}

TEST_F(TwoGroupServerTest, TwoPhaseTransfersBetweenGroups) {
  const MerchantKeys first = merchant("First"), second = merchant("Second");
  const std::string bank = system_account();
  const std::string payer = account(first), payee = account(second);
  const std::string euros = account(second, "EUR");
  fund(bank, payer, 1'000);
  const std::string pending = R"(,"pending":true,"timeout_s":600)";

  // Held in the payer's group; the payee's group hears of it only when it is posted.
  const HttpResponse held = admin_post("/v1/transfers", transfer_body(payer, payee, 400, pending));
  ASSERT_EQ(held.status, 201u) << held.body;
  EXPECT_EQ(text_field(held.body, "/status"), "pending");
  EXPECT_NE(held.body.find(R"("between_groups":true)"), std::string::npos) << held.body;
  const std::string id = text_field(held.body, "/id");
  EXPECT_EQ(balance(payer, "/available"), 600);
  EXPECT_EQ(balance(payee), 0);
  EXPECT_EQ(text_field(admin_get("/v1/transfers/" + id).body, "/status"), "pending");

  // The credit account is checked when the hold is made: nothing is held for an account
  // that could never take it.
  const HttpResponse nobody =
      admin_post("/v1/transfers", transfer_body(payer, "acc_0001000000000fff", 50, pending));
  EXPECT_EQ(nobody.status, 404u) << nobody.body;
  EXPECT_EQ(error_code(nobody), "credit_account_not_found");
  EXPECT_EQ(error_code(admin_post("/v1/transfers", transfer_body(payer, euros, 50, pending))),
            "currency_mismatch");
  EXPECT_EQ(balance(payer, "/available"), 600);

  // In a batch, a post would leave its credit to the finisher: refused, sent on its own.
  const HttpResponse batched =
      admin_post("/v1/batch", R"({"operations":[{"op":"post","transfer_id":")" + id + R"("}]})");
  ASSERT_EQ(batched.status, 200u) << batched.body;
  EXPECT_EQ(number_field(batched.body, "/results/0/status"), 422);
  EXPECT_EQ(text_field(batched.body, "/results/0/body/error/code"), "cross_group_transfer");

  // Posting part of it credits the other group and releases the rest.
  const std::string post_path = "/v1/transfers/" + id + "/post";
  const HttpResponse posted =
      admin_post(post_path, R"({"amount":250})", {"Idempotency-Key: capture-1"});
  ASSERT_EQ(posted.status, 200u) << posted.body;
  EXPECT_EQ(text_field(posted.body, "/status"), "posted");
  EXPECT_EQ(number_field(posted.body, "/posted_amount"), 250);
  EXPECT_EQ(balance(payer), 750);
  EXPECT_EQ(balance(payer, "/available"), 750);
  EXPECT_EQ(balance(payee), 250);
  const HttpResponse looked = admin_get("/v1/transfers/" + id);
  EXPECT_EQ(text_field(looked.body, "/status"), "posted");
  EXPECT_EQ(number_field(looked.body, "/posted_amount"), 250);
  EXPECT_EQ(error_code(admin_post(post_path, "{}")), "pending_transfer_already_posted");
  EXPECT_EQ(error_code(admin_post("/v1/transfers/" + id + "/void", "{}")),
            "pending_transfer_already_posted");
  // The same key answers the same, across a crash too, and moves nothing again.
  restart(SIGKILL);
  const HttpResponse again =
      admin_post(post_path, R"({"amount":250})", {"Idempotency-Key: capture-1"});
  EXPECT_EQ(again.status, 200u);
  EXPECT_EQ(again.body, posted.body);
  EXPECT_EQ(balance(payee), 250);

  // Voided, or expired, in the payer's group alone.
  const HttpResponse to_void =
      admin_post("/v1/transfers", transfer_body(payer, payee, 100, pending));
  ASSERT_EQ(to_void.status, 201u);
  const HttpResponse voided =
      admin_post("/v1/transfers/" + text_field(to_void.body, "/id") + "/void", "{}");
  EXPECT_EQ(voided.status, 200u) << voided.body;
  EXPECT_EQ(text_field(voided.body, "/status"), "voided");
  const HttpResponse short_lived = admin_post(
      "/v1/transfers", transfer_body(payer, payee, 100, R"(,"pending":true,"timeout_s":1)"));
  ASSERT_EQ(short_lived.status, 201u);
  std::this_thread::sleep_for(std::chrono::milliseconds(2'100));
  EXPECT_EQ(error_code(
                admin_post("/v1/transfers/" + text_field(short_lived.body, "/id") + "/post", "{}")),
            "transfer_expired");
  EXPECT_EQ(balance(payer, "/available"), 750);

  // The credit refused at post time (the payee's group has no room to take it): voided,
  // and the money released.
  const std::string big = account(second);
  const HttpResponse bank_there =
      admin_post("/v1/accounts", R"({"currency":"USD","kind":"system","group":1})");
  ASSERT_EQ(bank_there.status, 201u) << bank_there.body;
  fund(text_field(bank_there.body, "/id"), big, 0x7fff'ffff'ffff'ff00);
  const HttpResponse overflowing =
      admin_post("/v1/transfers", transfer_body(payer, big, 500, pending));
  ASSERT_EQ(overflowing.status, 201u) << overflowing.body;
  const std::string overflow_id = text_field(overflowing.body, "/id");
  const HttpResponse refused = admin_post("/v1/transfers/" + overflow_id + "/post", "{}");
  EXPECT_EQ(refused.status, 422u) << refused.body;
  EXPECT_EQ(error_code(refused), "overflow");
  const HttpResponse after = admin_get("/v1/transfers/" + overflow_id);
  EXPECT_EQ(text_field(after.body, "/status"), "voided");
  EXPECT_EQ(text_field(after.body, "/refused"), "overflow");
  EXPECT_EQ(balance(payer), 750);
  EXPECT_EQ(balance(payer, "/available"), 750);
}

TEST_F(TwoGroupServerTest, BatchesAcrossGroupsRunInOrder) {
  const MerchantKeys first = merchant("First"), second = merchant("Second");
  const std::string a0 = account(first), a1 = account(first);
  const std::string b0 = account(second), b1 = account(second);
  fund(system_account(), a0, 1'000);
  const HttpResponse bank_there =
      admin_post("/v1/accounts", R"({"currency":"USD","kind":"system","group":1})");
  ASSERT_EQ(bank_there.status, 201u) << bank_there.body;
  fund(text_field(bank_there.body, "/id"), b0, 1'000);
  const std::string pending = R"(,"pending":true)";
  const HttpResponse local_hold = admin_post("/v1/transfers", transfer_body(b0, b1, 50, pending));
  const HttpResponse cross_hold = admin_post("/v1/transfers", transfer_body(a0, b1, 30, pending));
  ASSERT_EQ(local_hold.status, 201u);
  ASSERT_EQ(cross_hold.status, 201u);
  const std::string h1 = text_field(local_hold.body, "/id");
  const std::string hx = text_field(cross_hold.body, "/id");
  const auto op = [](const std::string& from, const std::string& to, int amount) {
    return R"({"op":"transfer",)" + transfer_body(from, to, amount).substr(1);
  };
  // Operation 2 can be paid only once operation 1 has arrived: order is kept.
  const std::string body =
      R"({"operations":[)" + op(a0, a1, 100) + "," + op(a0, b0, 200) + "," + op(b0, b1, 1150) +
      R"(,{"op":"post","transfer_id":")" + h1 + R"(","amount":20},)" + op(a1, a0, 5) + "," +
      op(a0, "acc_0001000000000fff", 7) + R"(,{"op":"post","transfer_id":")" + hx +
      R"("},{"op":"void","transfer_id":")" + hx + R"("},)" + op(b1, a1, 10) + "]}";
  const HttpResponse done = admin_post("/v1/batch", body, {"Idempotency-Key: mixed-1"});
  ASSERT_EQ(done.status, 200u) << done.body;
  const std::vector<int> statuses = {201, 201, 201, 200, 201, 404, 422, 200, 201};
  for (std::size_t i = 0; i < statuses.size(); ++i) {
    EXPECT_EQ(number_field(done.body, "/results/" + std::to_string(i) + "/status"), statuses[i])
        << i << ": " << done.body;
  }
  EXPECT_NE(done.body.find(R"("between_groups":true)"), std::string::npos) << done.body;
  EXPECT_EQ(text_field(done.body, "/results/5/body/error/code"), "credit_account_not_found");
  EXPECT_EQ(text_field(done.body, "/results/6/body/error/code"), "cross_group_transfer");
  EXPECT_EQ(text_field(done.body, "/results/7/body/status"), "voided");
  // A two-phase transfer between groups is sent on its own: refused in the batch.
  const HttpResponse held_across =
      admin_post("/v1/batch", R"({"operations":[{"op":"transfer","pending":true,)" +
                                  transfer_body(a0, b1, 3).substr(1) + "]}");
  ASSERT_EQ(held_across.status, 200u) << held_across.body;
  EXPECT_EQ(number_field(held_across.body, "/results/0/status"), 422);
  EXPECT_EQ(text_field(held_across.body, "/results/0/body/error/code"), "cross_group_transfer");
  const auto expect_balances = [&] {
    EXPECT_EQ(balance(a0), 1'000 - 100 - 200 + 5);
    EXPECT_EQ(balance(a0, "/available"), 1'000 - 100 - 200 + 5);
    EXPECT_EQ(balance(a1), 100 - 5 + 10);
    EXPECT_EQ(balance(b0), 1'000 + 200 - 1'150 - 20);
    EXPECT_EQ(balance(b0, "/available"), 1'000 + 200 - 1'150 - 20);
    EXPECT_EQ(balance(b1), 1'150 + 20 - 10);
  };
  expect_balances();
  // The same key answers the same and moves nothing again, across a crash too.
  restart(SIGKILL);
  const HttpResponse again = admin_post("/v1/batch", body, {"Idempotency-Key: mixed-1"});
  EXPECT_EQ(again.status, 200u);
  EXPECT_EQ(again.body, done.body);
  expect_balances();

  // An atomic batch stays in one group.
  const HttpResponse atomic = admin_post(
      "/v1/batch", R"({"atomic":true,"operations":[)" + op(a0, a1, 1) + "," + op(b0, b1, 1) + "]}");
  EXPECT_EQ(atomic.status, 422u);
  EXPECT_EQ(error_code(atomic), "cross_group_transfer");
  const HttpResponse atomic_cross =
      admin_post("/v1/batch", R"({"atomic":true,"operations":[)" + op(a0, b0, 1) + "]}");
  EXPECT_EQ(atomic_cross.status, 422u) << atomic_cross.body;
  EXPECT_EQ(error_code(atomic_cross), "atomic_batch_failed");
  expect_balances();
}

}  // namespace
}  // namespace paygate::api
