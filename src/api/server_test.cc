// The gateway end to end: the real `paygate serve` on 127.0.0.1, driven over HTTP.
#include <gtest/gtest.h>
#include <simdjson.h>

#include <sys/resource.h>

#include <atomic>
#include <filesystem>
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

TEST_F(ServerTest, HealthReadinessAndMetrics) {
  EXPECT_EQ(client_->request("GET", "/healthz").status, 200u);
  EXPECT_EQ(client_->request("GET", "/readyz").status, 200u);
  const HttpResponse metrics = client_->request("GET", "/metrics");
  EXPECT_EQ(metrics.status, 200u);
  for (const char* series :
       {"paygate_group_commands_total{group=\"0\"}", "paygate_group_ring_occupancy",
        "paygate_journal_fdatasync_seconds_bucket", "paygate_group_batch_requests_bucket",
        "paygate_journal_written_bytes_total{group=\"0\"}",
        "paygate_journal_segments_total{group=\"0\",how=\"prepared\"}",
        "paygate_journal_segment_prepare_failures_total{group=\"0\"} 0",
        "paygate_idempotency_window_held_seconds", "paygate_rate_limited_total",
        "paygate_between_groups_finished_total 0",
        "paygate_http_request_duration_seconds_bucket{route=\"/readyz\",status=\"200\""}) {
    EXPECT_NE(metrics.body.find(series), std::string::npos) << series;
  }
}

// Where requests wait, by stage: each request that reached a group counts its edge
// time once, and each step its ring, group and wake-up times.
TEST_F(ServerTest, StageTimingsCountEveryStep) {
  const auto count = [&](const char* stage) {
    return metric(std::string("paygate_http_stage_seconds_count{stage=\"") + stage + "\"}");
  };
  const u64 edge = count("edge"), queued = count("queued");
  ASSERT_NE(edge, ~u64{0});
  ASSERT_EQ(count("durable"), queued);
  ASSERT_EQ(count("wake"), queued);
  // Onboarding a merchant is the registry's (no group step); two accounts, a transfer
  // and a read are one step each.
  const std::string bank = system_account();
  const std::string till = account(merchant("Till"));
  fund(bank, till, 5);
  EXPECT_EQ(balance(till), 5);
  EXPECT_EQ(count("edge") - edge, 4u);
  EXPECT_EQ(count("queued") - queued, 4u);
  EXPECT_EQ(count("durable") - queued, 4u);
  EXPECT_EQ(count("wake") - queued, 4u);
}

// The README's curl sequence, in code: a merchant, an account, a transfer.
TEST_F(ServerTest, OnboardingAccountsAndTransfers) {
  const MerchantKeys shop = merchant("Shop");
  EXPECT_EQ(shop.id.substr(0, 4), "mer_");
  EXPECT_EQ(shop.secret.substr(0, 3), "sk_");
  const std::string bank = system_account();
  const std::string wallet = account(shop);
  const std::string till = account(shop);
  fund(bank, wallet, 10'000);
  const HttpResponse paid =
      merchant_request(shop, "POST", "/v1/transfers",
                       transfer_body(wallet, till, 2'500, R"(,"reference":"order-1")"));
  ASSERT_EQ(paid.status, 201u) << paid.body;
  EXPECT_EQ(text_field(paid.body, "/status"), "posted");
  EXPECT_EQ(text_field(paid.body, "/reference"), "order-1");
  const HttpResponse got =
      merchant_request(shop, "GET", "/v1/transfers/" + text_field(paid.body, "/id"));
  EXPECT_EQ(got.status, 200u) << got.body;
  EXPECT_EQ(number_field(got.body, "/amount"), 2'500);
  EXPECT_EQ(balance(wallet), 7'500);
  EXPECT_EQ(balance(till), 2'500);
  EXPECT_EQ(balance(bank), -10'000);

  const HttpResponse short_funds =
      merchant_request(shop, "POST", "/v1/transfers", transfer_body(wallet, till, 7'501));
  EXPECT_EQ(short_funds.status, 422u);
  EXPECT_EQ(error_code(short_funds), "insufficient_funds");

  // Merchants see themselves, not others; only operators onboard.
  EXPECT_EQ(merchant_request(shop, "GET", "/v1/merchants/" + shop.id).status, 200u);
  const HttpResponse onboard = merchant_request(shop, "POST", "/v1/merchants", R"({"name":"x"})");
  EXPECT_EQ(onboard.status, 403u);
  EXPECT_EQ(error_code(onboard), "operator_only");
  const HttpResponse system =
      merchant_request(shop, "POST", "/v1/accounts", R"({"currency":"USD","kind":"system"})");
  EXPECT_EQ(error_code(system), "operator_only");
}

// A transfer's reference and metadata are journaled with its command (journal
// annotations), alone, in a batch, or as a hold: acknowledged means kept, across a
// kill -9.
TEST_F(ServerTest, WhatATransferCarriesIsJournaledWithIt) {
  const MerchantKeys shop = merchant("Shop");
  const std::string bank = system_account();
  const std::string a = account(shop), b = account(shop);
  fund(bank, a, 1'000);
  const HttpResponse single = merchant_request(
      shop, "POST", "/v1/transfers",
      transfer_body(a, b, 101, R"(,"reference":"ref-single","metadata":{ "cart" : [1, 2] })"));
  ASSERT_EQ(single.status, 201u) << single.body;
  const HttpResponse hold = merchant_request(
      shop, "POST", "/v1/transfers",
      transfer_body(a, b, 102, R"(,"pending":true,"timeout_s":600,"reference":"ref-hold")"));
  ASSERT_EQ(hold.status, 201u) << hold.body;
  const auto op = [&](i64 amount, const std::string& extra) {
    return R"({"op":"transfer","debit_account":")" + a + R"(","credit_account":")" + b +
           R"(","amount":)" + std::to_string(amount) + R"(,"currency":"USD")" + extra + "}";
  };
  const HttpResponse batch =
      merchant_request(shop, "POST", "/v1/batch",
                       R"({"operations":[)" + op(103, R"(,"metadata":{"line":1})") + "," +
                           op(104, "") + "," + op(105, R"(,"reference":"ref-batch-3")") + "]}");
  ASSERT_EQ(batch.status, 200u) << batch.body;
  ASSERT_EQ(number_field(batch.body, "/results/2/status"), 201) << batch.body;
  server_.stop(SIGKILL);
  const std::vector<std::string> said = journaled_annotations();
  const auto has = [&](const std::string& what, const std::string& amount) {
    return std::any_of(said.begin(), said.end(), [&](const std::string& line) {
      return line.starts_with(what + " | transfer ") &&
             line.find(" amount=" + amount + " currency=USD") != std::string::npos;
    });
  };
  std::string all;
  for (const std::string& line : said)
    all += line + "\n";
  EXPECT_TRUE(has("1 ref-single", "101")) << all;
  EXPECT_TRUE(has(R"(2 {"cart":[1,2]})", "101")) << all;  // minified
  EXPECT_TRUE(std::any_of(said.begin(), said.end(), [](const std::string& line) {
    return line.starts_with("1 ref-hold | hold ") && line.find(" amount=102 ") != std::string::npos;
  })) << all;
  EXPECT_TRUE(has(R"(2 {"line":1})", "103")) << all;
  EXPECT_TRUE(has("1 ref-batch-3", "105")) << all;
  EXPECT_EQ(said.size(), 5u) << all;  // nothing said of 104, or of the funding
  start();
  EXPECT_EQ(balance(b), 101 + 103 + 104 + 105);
}

TEST_F(ServerTest, TwoPhaseTransfers) {
  const MerchantKeys shop = merchant("Shop");
  const std::string bank = system_account();
  const std::string wallet = account(shop);
  const std::string till = account(shop);
  fund(bank, wallet, 1'000);
  const auto hold = [&](i64 amount, const std::string& extra = {}) {
    const HttpResponse r =
        merchant_request(shop, "POST", "/v1/transfers",
                         transfer_body(wallet, till, amount, R"(,"pending":true)" + extra));
    EXPECT_EQ(r.status, 201u) << r.body;
    EXPECT_EQ(text_field(r.body, "/status"), "pending");
    return text_field(r.body, "/id");
  };
  const std::string first = hold(600);
  EXPECT_EQ(balance(wallet, "/available"), 400);
  EXPECT_EQ(balance(wallet, "/held"), 600);
  const HttpResponse over = merchant_request(
      shop, "POST", "/v1/transfers", transfer_body(wallet, till, 401, R"(,"pending":true)"));
  EXPECT_EQ(error_code(over), "insufficient_funds");

  const HttpResponse posted =
      merchant_request(shop, "POST", "/v1/transfers/" + first + "/post", R"({"amount":450})");
  ASSERT_EQ(posted.status, 200u) << posted.body;
  EXPECT_EQ(text_field(posted.body, "/status"), "posted");
  EXPECT_EQ(number_field(posted.body, "/posted_amount"), 450);
  EXPECT_EQ(balance(wallet), 550);
  EXPECT_EQ(balance(wallet, "/held"), 0);
  const HttpResponse again = merchant_request(shop, "POST", "/v1/transfers/" + first + "/void");
  EXPECT_EQ(again.status, 409u);
  EXPECT_EQ(error_code(again), "pending_transfer_already_posted");

  const std::string second = hold(100);
  const HttpResponse voided = merchant_request(shop, "POST", "/v1/transfers/" + second + "/void");
  EXPECT_EQ(voided.status, 200u) << voided.body;
  EXPECT_EQ(text_field(voided.body, "/status"), "voided");
  EXPECT_EQ(balance(wallet, "/available"), 550);

  const std::string third = hold(100, R"(,"timeout_s":1)");
  std::this_thread::sleep_for(std::chrono::milliseconds(1'500));  // the group ticks it out
  const HttpResponse late = merchant_request(shop, "POST", "/v1/transfers/" + third + "/post");
  EXPECT_EQ(late.status, 409u) << late.body;
  EXPECT_EQ(error_code(late), "transfer_expired");
  EXPECT_EQ(balance(wallet, "/held"), 0);

  const HttpResponse too_much =
      merchant_request(shop, "POST", "/v1/transfers/" + hold(50) + "/post", R"({"amount":51})");
  EXPECT_EQ(too_much.status, 422u);
  EXPECT_EQ(error_code(too_much), "exceeds_pending_amount");
}

TEST_F(ServerTest, BadInputIsRefusedWithStableCodes) {
  const MerchantKeys shop = merchant("Shop");
  const std::string a = account(shop), b = account(shop);
  const std::string other_currency = account(shop, "EUR");
  struct Case {
    std::string body;
    unsigned status;
    const char* code;
  };
  const std::string ids = R"("debit_account":")" + a + R"(","credit_account":")" + b + "\"";
  const Case cases[] = {
      {"{", 400, "invalid_json"},
      {"[1,2]", 400, "invalid_json"},
      {"{" + ids + R"(,"amount":"100","currency":"USD"})", 400, "invalid_amount"},
      {"{" + ids + R"(,"amount":1.5,"currency":"USD"})", 400, "invalid_amount"},
      {"{" + ids + R"(,"amount":1e3,"currency":"USD"})", 400, "invalid_amount"},
      {"{" + ids + R"(,"amount":-5,"currency":"USD"})", 400, "invalid_amount"},
      {"{" + ids + R"(,"amount":0,"currency":"USD"})", 400, "invalid_amount"},
      {"{" + ids + R"(,"amount":9223372036854775808,"currency":"USD"})", 400, "invalid_amount"},
      {"{" + ids + R"(,"amount":100000000000000000000000000,"currency":"USD"})", 400,
       "invalid_amount"},
      {"{" + ids + R"(,"amount":5,"currency":"usd"})", 400, "invalid_currency"},
      {"{" + ids + R"(,"amount":5,"currency":"USD","ammount":5})", 400, "unknown_field"},
      {"{" + ids + R"(,"amount":5})", 400, "missing_field"},
      {"{" + ids + R"(,"amount":5,"currency":"USD","pending":"yes"})", 400, "invalid_field"},
      {"{" + ids + R"(,"amount":5,"currency":"USD","amount":6})", 400, "invalid_field"},
      {R"({"debit_account":"acc_zz","credit_account":")" + b + R"(","amount":5,"currency":"USD"})",
       400, "invalid_field"},
      {R"({"debit_account":")" + a + R"(","credit_account":")" + a +
           R"(","amount":5,"currency":"USD"})",
       400, "same_account"},
      {R"({"debit_account":")" + a + R"(","credit_account":")" + other_currency +
           R"(","amount":5,"currency":"USD"})",
       400, "currency_mismatch"},
      {R"({"debit_account":"acc_0000000000ffffff","credit_account":")" + b +
           R"(","amount":5,"currency":"USD"})",
       404, "debit_account_not_found"},
  };
  const std::string before = balance(a) == 0 ? "ok" : "moved";
  for (const Case& c : cases) {
    const HttpResponse r = merchant_request(shop, "POST", "/v1/transfers", c.body);
    EXPECT_EQ(r.status, c.status) << c.body << " → " << r.body;
    EXPECT_EQ(error_code(r), c.code) << c.body;
    EXPECT_FALSE(text_field(r.body, "/error/message").empty());
  }
  EXPECT_EQ(balance(a), 0);  // nothing changed
  EXPECT_EQ(before, "ok");

  // Transport-level refusals.
  const HttpResponse media = client_->request(
      "POST", "/v1/accounts",
      {"Authorization: Bearer " + server_.admin_token(), "Content-Type: text/plain"},
      R"({"currency":"USD"})");
  EXPECT_EQ(media.status, 415u);
  EXPECT_EQ(client_->request("GET", "/v1/nothing", admin()).status, 404u);
  const HttpResponse method = client_->request("DELETE", "/v1/accounts", admin());
  EXPECT_EQ(method.status, 405u);
  EXPECT_EQ(error_code(method), "method_not_allowed");
  const HttpResponse bad_key =
      admin_post("/v1/accounts", R"({"currency":"USD","kind":"system"})", {"Idempotency-Key: a b"});
  EXPECT_EQ(error_code(bad_key), "invalid_idempotency_key");
  // An empty key is no key a retry could match: refused, not taken for none, and the
  // transfer it came with is not made.
  const HttpResponse empty_key =
      merchant_request(shop, "POST", "/v1/transfers",
                       R"({"debit_account":")" + a + R"(","credit_account":")" + b +
                           R"(","amount":1,"currency":"USD"})",
                       {"Idempotency-Key:"});
  EXPECT_EQ(empty_key.status, 400u) << empty_key.body;
  EXPECT_EQ(error_code(empty_key), "invalid_idempotency_key");
  EXPECT_EQ(balance(a), 0);
  const HttpResponse huge = admin_post("/v1/batch", std::string(5u << 20, ' '));
  EXPECT_EQ(huge.status, 413u);
  EXPECT_EQ(error_code(huge), "body_too_large");
}

TEST_F(ServerTest, SignedRequestsAndTokens) {
  const MerchantKeys shop = merchant("Shop");
  const std::string target = "/v1/merchants/" + shop.id;
  // No credentials; a wrong admin token.
  EXPECT_EQ(error_code(client_->request("GET", target)), "missing_credentials");
  EXPECT_EQ(client_->request("GET", target).status, 401u);
  EXPECT_EQ(error_code(client_->request("GET", target, {"Authorization: Bearer nope"})),
            "invalid_token");
  EXPECT_EQ(error_code(client_->request("GET", target, {"Authorization: Basic abc"})),
            "invalid_credentials");

  // Signed: good, then the same signature again (a read: answered again; replays of
  // requests that change state are key_server_test's), then a tampered one.
  const auto headers = signed_headers(shop.key_id, shop.secret, "GET", target, "");
  EXPECT_EQ(client_->request("GET", target, headers).status, 200u);
  EXPECT_EQ(client_->request("GET", target, headers).status, 200u);
  auto tampered = signed_headers(shop.key_id, shop.secret, "GET", target, "");
  tampered[2].back() = tampered[2].back() == '0' ? '1' : '0';
  EXPECT_EQ(error_code(client_->request("GET", target, tampered)), "invalid_signature");
  const auto wrong_secret = signed_headers(shop.key_id, shop.secret + "x", "GET", target, "");
  EXPECT_EQ(error_code(client_->request("GET", target, wrong_secret)), "invalid_signature");
  // A minute past the 300 s window either way: the server's clock may tick a second between
  // the test's reading and its own, which must not bring a timestamp back into the window.
  const auto old = signed_headers(shop.key_id, shop.secret, "GET", target, "",
                                  std::to_string(std::time(nullptr) - 360));
  EXPECT_EQ(error_code(client_->request("GET", target, old)), "timestamp_out_of_window");
  const auto future = signed_headers(shop.key_id, shop.secret, "GET", target, "",
                                     std::to_string(std::time(nullptr) + 360));
  EXPECT_EQ(error_code(client_->request("GET", target, future)), "timestamp_out_of_window");
  // A request that changes state must be younger than 288 s (300 less a margin, so that
  // its signature cannot outlive the ledger's record of it: docs/API.md, "Replays"); a
  // read may be as old as the window. 290 s: the server's clock reads at least the
  // test's, so the POST is past 288 s for certain, and the GET has 10 s to be answered.
  const std::string aged = std::to_string(std::time(nullptr) - 290);
  EXPECT_EQ(client_
                ->request("GET", target,
                          signed_headers(shop.key_id, shop.secret, "GET", target, "", aged))
                .status,
            200u);
  const std::string open_body = R"({"currency":"USD"})";
  const HttpResponse aged_post = client_->request(
      "POST", "/v1/accounts",
      signed_headers(shop.key_id, shop.secret, "POST", "/v1/accounts", open_body, aged), open_body);
  EXPECT_EQ(aged_post.status, 401u) << aged_post.body;
  EXPECT_EQ(error_code(aged_post), "timestamp_out_of_window");
  EXPECT_NE(text_field(aged_post.body, "/error/message").find("288 s"), std::string::npos)
      << aged_post.body;
  // The body is signed: the same headers with another body fail.
  const auto for_body =
      signed_headers(shop.key_id, shop.secret, "POST", "/v1/accounts", R"({"currency":"USD"})");
  EXPECT_EQ(error_code(client_->request("POST", "/v1/accounts", for_body, R"({"currency":"EUR"})")),
            "invalid_signature");

  // JWT: good, expired, signed with another secret, unsigned.
  const long now = static_cast<long>(std::time(nullptr));
  const auto bearer = [](const std::string& token) {
    return std::vector<std::string>{"Authorization: Bearer " + token};
  };
  EXPECT_EQ(
      client_->request("GET", target, bearer(make_jwt(shop.id, shop.secret, now + 60))).status,
      200u);
  EXPECT_EQ(
      error_code(client_->request("GET", target, bearer(make_jwt(shop.id, shop.secret, now - 1)))),
      "token_expired");
  EXPECT_EQ(error_code(client_->request("GET", target,
                                        bearer(make_jwt(shop.id, shop.secret + "x", now + 60)))),
            "invalid_token");
  EXPECT_EQ(error_code(client_->request("GET", target,
                                        bearer(make_jwt(shop.id, "", now + 60, JWT_ALG_NONE)))),
            "invalid_token");

  // Rotation: the new key works, and the old one too during its grace (24 h by
  // default), signed requests and tokens alike.
  const HttpResponse rotated = admin_post("/v1/merchants/" + shop.id + "/keys", "");
  ASSERT_EQ(rotated.status, 201u) << rotated.body;
  const MerchantKeys fresh{shop.id, text_field(rotated.body, "/key_id"),
                           text_field(rotated.body, "/secret")};
  EXPECT_NE(fresh.secret, shop.secret);
  EXPECT_EQ(text_field(rotated.body, "/previous_key_id"), shop.key_id);
  EXPECT_NEAR(number_field(rotated.body, "/previous_key_expires_at"),
              static_cast<int64_t>(now) + 86400, 600);
  EXPECT_EQ(merchant_request(shop, "GET", target).status, 200u);
  EXPECT_EQ(merchant_request(fresh, "GET", target).status, 200u);
  EXPECT_EQ(
      client_->request("GET", target, bearer(make_jwt(shop.id, shop.secret, now + 60))).status,
      200u);
  EXPECT_EQ(
      client_->request("GET", target, bearer(make_jwt(shop.id, fresh.secret, now + 60))).status,
      200u);
  // A rotation without grace ends the old key at once (and the one before it).
  const HttpResponse at_once =
      admin_post("/v1/merchants/" + shop.id + "/keys", R"({"grace_period_s":0})");
  ASSERT_EQ(at_once.status, 201u) << at_once.body;
  const MerchantKeys newest{shop.id, text_field(at_once.body, "/key_id"),
                            text_field(at_once.body, "/secret")};
  EXPECT_EQ(error_code(merchant_request(shop, "GET", target)), "invalid_signature");
  EXPECT_EQ(error_code(merchant_request(fresh, "GET", target)), "invalid_signature");
  EXPECT_EQ(error_code(
                client_->request("GET", target, bearer(make_jwt(shop.id, fresh.secret, now + 60)))),
            "invalid_token");
  EXPECT_EQ(merchant_request(newest, "GET", target).status, 200u);
  EXPECT_EQ(
      error_code(admin_post("/v1/merchants/" + shop.id + "/keys", R"({"grace_period_s":"soon"})")),
      "invalid_field");
}

TEST_F(ServerTest, MerchantsSeeOnlyTheirOwnAndTheirChildren) {
  const MerchantKeys parent = merchant("Parent");
  const MerchantKeys child = merchant("Child", parent.id);
  const MerchantKeys stranger = merchant("Stranger");
  const std::string bank = system_account();
  const std::string child_wallet = account(child);
  const std::string parent_wallet = account(parent);
  fund(bank, child_wallet, 100);

  EXPECT_EQ(merchant_request(parent, "GET", "/v1/accounts/" + child_wallet).status, 200u);
  EXPECT_EQ(merchant_request(child, "GET", "/v1/accounts/" + parent_wallet).status, 404u);
  const HttpResponse peek = merchant_request(stranger, "GET", "/v1/accounts/" + child_wallet);
  EXPECT_EQ(peek.status, 404u);
  EXPECT_EQ(error_code(peek), "account_not_found");
  EXPECT_EQ(merchant_request(stranger, "GET", "/v1/merchants/" + parent.id).status, 404u);
  // The stranger cannot move the child's money, and is told nothing about it.
  const std::string stranger_wallet = account(stranger);
  const HttpResponse steal = merchant_request(stranger, "POST", "/v1/transfers",
                                              transfer_body(child_wallet, stranger_wallet, 50));
  EXPECT_EQ(steal.status, 404u);
  EXPECT_EQ(error_code(steal), "debit_account_not_found");
  // The parent can move its child's money (same group: a family shares one).
  const HttpResponse sweep = merchant_request(parent, "POST", "/v1/transfers",
                                              transfer_body(child_wallet, parent_wallet, 60));
  EXPECT_EQ(sweep.status, 201u) << sweep.body;
  const HttpResponse hold =
      merchant_request(child, "POST", "/v1/transfers",
                       transfer_body(child_wallet, account(child), 10, R"(,"pending":true)"));
  ASSERT_EQ(hold.status, 201u);
  const std::string hold_id = text_field(hold.body, "/id");
  EXPECT_EQ(merchant_request(stranger, "GET", "/v1/transfers/" + hold_id).status, 404u);
  EXPECT_EQ(error_code(merchant_request(stranger, "POST", "/v1/transfers/" + hold_id + "/void")),
            "transfer_not_found");
  EXPECT_EQ(balance(child_wallet, "/held"), 10);  // untouched
  // A merchant cannot open accounts for a stranger.
  const HttpResponse foreign = merchant_request(
      stranger, "POST", "/v1/accounts", R"({"currency":"USD","owner":")" + parent.id + "\"}");
  EXPECT_EQ(error_code(foreign), "merchant_not_found");
}

// GET /v1/events and GET /v1/accounts/{id}/entries: order, paging, who sees what, bad
// queries, and the same stream again after a restart (replay makes the same events).
TEST_F(ServerTest, EventsAndStatements) {
  const MerchantKeys parent = merchant("Parent");
  const MerchantKeys child = merchant("Child", parent.id);
  const MerchantKeys stranger = merchant("Stranger");
  const std::string bank = system_account();
  const std::string wallet = account(child);
  const std::string shop = account(parent);
  const std::string elsewhere = account(stranger);
  fund(bank, wallet, 100);
  ASSERT_EQ(admin_post("/v1/transfers", transfer_body(wallet, shop, 30)).status, 201u);
  const HttpResponse hold =
      admin_post("/v1/transfers", transfer_body(wallet, shop, 50, R"(,"pending":true)"));
  ASSERT_EQ(hold.status, 201u);
  const std::string hold_id = text_field(hold.body, "/id");
  ASSERT_EQ(admin_post("/v1/transfers/" + hold_id + "/post", R"({"amount":20})").status, 200u);
  // A refused transfer makes no event.
  ASSERT_EQ(admin_post("/v1/transfers", transfer_body(wallet, shop, 1000)).status, 422u);

  // The operator reads the whole stream, two at a time.
  std::vector<std::string> types;
  std::string after;
  for (int page = 0; page < 20; ++page) {
    const HttpResponse r =
        admin_get("/v1/events?limit=2" + (after.empty() ? "" : "&after=" + after));
    ASSERT_EQ(r.status, 200u) << r.body;
    simdjson::dom::parser parser;
    const simdjson::dom::element root = parser.parse(r.body);
    for (simdjson::dom::element e : root["events"].get_array()) {
      types.emplace_back(std::string_view(e["type"]));
    }
    after = std::string(std::string_view(root["next_cursor"]));
    if (!bool(root["has_more"])) break;
  }
  EXPECT_EQ(types,
            (std::vector<std::string>{"account_created", "account_created", "account_created",
                                      "account_created", "transfer_posted", "transfer_posted",
                                      "transfer_pending", "pending_posted"}));
  // Caught up: the same cursor comes back with nothing, until something happens.
  HttpResponse tail = admin_get("/v1/events?after=" + after);
  EXPECT_EQ(text_field(tail.body, "/next_cursor"), after);
  EXPECT_EQ(tail.body.find("\"type\""), std::string::npos) << tail.body;
  fund(bank, wallet, 5);
  tail = admin_get("/v1/events?after=" + after);
  EXPECT_EQ(text_field(tail.body, "/events/0/type"), "transfer_posted");
  EXPECT_EQ(number_field(tail.body, "/events/0/amount"), 5);
  EXPECT_EQ(text_field(tail.body, "/events/0/credit_account"), wallet);

  // The stranger sees only its own account's creation; the parent sees its child's.
  const HttpResponse theirs = merchant_request(stranger, "GET", "/v1/events");
  ASSERT_EQ(theirs.status, 200u) << theirs.body;
  EXPECT_EQ(text_field(theirs.body, "/events/0/account_id"), elsewhere);
  EXPECT_EQ(text_field(theirs.body, "/events/1/type"), "<missing>") << theirs.body;
  const HttpResponse family = merchant_request(parent, "GET", "/v1/events?limit=3");
  EXPECT_EQ(text_field(family.body, "/events/0/account_id"), wallet) << family.body;
  EXPECT_EQ(text_field(family.body, "/events/1/account_id"), shop);
  EXPECT_EQ(text_field(family.body, "/events/2/type"), "transfer_posted");
  EXPECT_EQ(text_field(family.body, "/events/3/type"), "<missing>");  // the limit
  EXPECT_EQ(error_code(merchant_request(stranger, "GET", "/v1/events?group=1")), "operator_only");

  // The wallet's statement, newest first, paged by cursor, down to its opening.
  HttpResponse lines =
      merchant_request(child, "GET", "/v1/accounts/" + wallet + "/entries?limit=3");
  ASSERT_EQ(lines.status, 200u) << lines.body;
  EXPECT_EQ(text_field(lines.body, "/entries/0/direction"), "credit");
  EXPECT_EQ(number_field(lines.body, "/entries/0/amount"), 5);
  EXPECT_EQ(text_field(lines.body, "/entries/1/type"), "pending_posted");
  EXPECT_EQ(number_field(lines.body, "/entries/1/amount"), 20);
  EXPECT_EQ(number_field(lines.body, "/entries/1/released"), 30);
  EXPECT_EQ(text_field(lines.body, "/entries/1/counterparty"), shop);
  EXPECT_EQ(text_field(lines.body, "/entries/2/type"), "transfer_pending");
  // The running balance after each line: 100 in, 30 out, 50 held (no change), 20 of
  // it taken, 5 in.
  EXPECT_EQ(number_field(lines.body, "/entries/0/balance_after"), 55);
  EXPECT_EQ(number_field(lines.body, "/entries/1/balance_after"), 50);
  EXPECT_EQ(number_field(lines.body, "/entries/2/balance_after"), 70);
  EXPECT_NE(lines.body.find("\"has_more\":true"), std::string::npos) << lines.body;
  const std::string cursor = text_field(lines.body, "/next_cursor");
  lines = merchant_request(parent, "GET", "/v1/accounts/" + wallet + "/entries?cursor=" + cursor);
  ASSERT_EQ(lines.status, 200u) << lines.body;
  EXPECT_EQ(text_field(lines.body, "/entries/0/direction"), "debit");
  EXPECT_EQ(number_field(lines.body, "/entries/0/amount"), 30);
  EXPECT_EQ(number_field(lines.body, "/entries/0/balance_after"), 70);
  EXPECT_EQ(number_field(lines.body, "/entries/1/amount"), 100);
  EXPECT_EQ(number_field(lines.body, "/entries/1/balance_after"), 100);
  EXPECT_EQ(text_field(lines.body, "/entries/2/type"), "<missing>");
  EXPECT_NE(lines.body.find("\"history_complete\":true"), std::string::npos) << lines.body;
  EXPECT_NE(lines.body.find("\"next_cursor\":null"), std::string::npos) << lines.body;
  // The credit side's: 30 in, 50 held toward it (no change), 20 of it taken.
  const HttpResponse received =
      merchant_request(parent, "GET", "/v1/accounts/" + shop + "/entries");
  EXPECT_EQ(number_field(received.body, "/entries/0/balance_after"), 50) << received.body;
  EXPECT_EQ(number_field(received.body, "/entries/1/balance_after"), 30);
  EXPECT_EQ(number_field(received.body, "/entries/2/balance_after"), 30);

  // Not yours, unknown, or malformed.
  const HttpResponse peek =
      merchant_request(stranger, "GET", "/v1/accounts/" + wallet + "/entries");
  EXPECT_EQ(peek.status, 404u);
  EXPECT_EQ(error_code(peek), "account_not_found");
  EXPECT_EQ(error_code(admin_get("/v1/accounts/acc_0000000000000999/entries")),
            "account_not_found");
  const HttpResponse bad_limit = admin_get("/v1/events?limit=0");
  EXPECT_EQ(bad_limit.status, 400u);
  EXPECT_EQ(error_code(bad_limit), "invalid_field");
  EXPECT_EQ(error_code(admin_get("/v1/events?after=zz")), "invalid_cursor");
  EXPECT_EQ(error_code(admin_get("/v1/events?after=0.99999999.0")), "invalid_cursor");
  EXPECT_EQ(error_code(admin_get("/v1/events?since=1")), "invalid_field");
  EXPECT_EQ(error_code(admin_get("/v1/events?group=7")), "invalid_field");  // one group here
  EXPECT_EQ(error_code(admin_get("/v1/events?group=0&after=1.1.0")), "invalid_cursor");
  EXPECT_EQ(error_code(admin_get("/v1/accounts/" + wallet + "/entries?cursor=0.1.0")),
            "invalid_cursor");  // an event, but not one of this account's
  EXPECT_EQ(client_->request("POST", "/v1/events", admin(), "{}").status, 405u);

  // After a restart the stream is made again by replay: the same bytes.
  const HttpResponse everything = admin_get("/v1/events?limit=1000");
  const HttpResponse statement = admin_get("/v1/accounts/" + wallet + "/entries");
  restart();
  EXPECT_EQ(admin_get("/v1/events?limit=1000").body, everything.body);
  EXPECT_EQ(admin_get("/v1/accounts/" + wallet + "/entries").body, statement.body);
}

TEST_F(ServerTest, Batches) {
  const MerchantKeys shop = merchant("Shop");
  const std::string bank = system_account();
  const std::string a = account(shop), b = account(shop);
  fund(bank, a, 100);
  const auto op = [](const std::string& from, const std::string& to, i64 amount) {
    return R"({"op":"transfer","debit_account":")" + from + R"(","credit_account":")" + to +
           R"(","amount":)" + std::to_string(amount) + R"(,"currency":"USD"})";
  };
  // Atomic: the second fails, so neither applies.
  const HttpResponse atomic = merchant_request(
      shop, "POST", "/v1/batch",
      R"({"atomic":true,"operations":[)" + op(a, b, 60) + "," + op(a, b, 60) + "]}");
  EXPECT_EQ(atomic.status, 422u) << atomic.body;
  EXPECT_EQ(error_code(atomic), "atomic_batch_failed");
  EXPECT_EQ(text_field(atomic.body, "/results/1/body/error/code"), "insufficient_funds");
  EXPECT_EQ(balance(a), 100);
  // Refused at the edge (an account of another merchant's): the same shape, every
  // operation answered, nothing applied.
  const MerchantKeys stranger = merchant("Stranger");
  const std::string theirs = account(stranger);
  // (Just before it on this connection: an atomic batch whose key names another request,
  // a verdict that must not stick to the next batch.)
  // (Each there and back: nothing moves.)
  const std::string one =
      R"({"atomic":true,"operations":[)" + op(a, b, 1) + "," + op(b, a, 1) + "]}";
  const std::string two =
      R"({"atomic":true,"operations":[)" + op(a, b, 2) + "," + op(b, a, 2) + "]}";
  ASSERT_EQ(merchant_request(shop, "POST", "/v1/batch", one, {"Idempotency-Key: at-1"}).status,
            200u);
  EXPECT_EQ(error_code(merchant_request(shop, "POST", "/v1/batch", two, {"Idempotency-Key: at-1"})),
            "idempotency_key_reused");
  const HttpResponse foreign = merchant_request(
      shop, "POST", "/v1/batch",
      R"({"atomic":true,"operations":[)" + op(a, b, 10) + "," + op(a, theirs, 10) + "]}");
  EXPECT_EQ(foreign.status, 422u) << foreign.body;
  EXPECT_EQ(error_code(foreign), "atomic_batch_failed");
  EXPECT_EQ(number_field(foreign.body, "/results/0/status"), 422);
  EXPECT_EQ(text_field(foreign.body, "/results/0/body/error/code"), "atomic_batch_failed");
  EXPECT_EQ(number_field(foreign.body, "/results/1/status"), 404);
  EXPECT_EQ(text_field(foreign.body, "/results/1/body/error/code"), "credit_account_not_found");
  EXPECT_EQ(balance(a), 100);
  EXPECT_EQ(balance(theirs), 0);
  // Not atomic: each on its own.
  const HttpResponse each = merchant_request(
      shop, "POST", "/v1/batch", R"({"operations":[)" + op(a, b, 60) + "," + op(a, b, 60) + "]}");
  EXPECT_EQ(each.status, 200u) << each.body;
  EXPECT_EQ(number_field(each.body, "/results/0/status"), 201);
  EXPECT_EQ(number_field(each.body, "/results/1/status"), 422);
  EXPECT_EQ(balance(a), 40);
  // Holds posted and voided in a batch.
  const HttpResponse holds =
      merchant_request(shop, "POST", "/v1/batch",
                       R"({"operations":[{"op":"transfer","pending":true,"debit_account":")" + a +
                           R"(","credit_account":")" + b + R"(","amount":10,"currency":"USD"},)" +
                           R"({"op":"transfer","pending":true,"debit_account":")" + a +
                           R"(","credit_account":")" + b + R"(","amount":20,"currency":"USD"}]})");
  ASSERT_EQ(holds.status, 200u);
  const std::string h1 = text_field(holds.body, "/results/0/body/id");
  const std::string h2 = text_field(holds.body, "/results/1/body/id");
  const HttpResponse close = merchant_request(
      shop, "POST", "/v1/batch",
      R"({"atomic":true,"operations":[{"op":"post","transfer_id":")" + h1 + R"(","amount":5},)" +
          R"({"op":"void","transfer_id":")" + h2 + R"("}]})");
  EXPECT_EQ(close.status, 200u) << close.body;
  EXPECT_EQ(balance(a), 35);
  EXPECT_EQ(balance(a, "/held"), 0);
  EXPECT_EQ(error_code(merchant_request(shop, "POST", "/v1/batch", R"({"operations":[]})")),
            "batch_empty");

  // Idempotent batches: a retry answers the same and moves nothing again; another
  // body under the same key is refused. Atomic and not.
  for (const bool is_atomic : {false, true}) {
    const std::string key = is_atomic ? "Idempotency-Key: batch-atomic" : "Idempotency-Key: batch";
    const std::string flag = is_atomic ? R"("atomic":true,)" : "";
    const std::string body =
        "{" + flag + R"("operations":[)" + op(a, b, 1) + "," + op(a, b, 2) + "]}";
    const int64_t before = balance(a);
    const HttpResponse once = merchant_request(shop, "POST", "/v1/batch", body, {key});
    ASSERT_EQ(once.status, 200u) << once.body;
    const HttpResponse twice = merchant_request(shop, "POST", "/v1/batch", body, {key});
    EXPECT_EQ(twice.status, 200u);
    EXPECT_EQ(twice.body, once.body);
    EXPECT_EQ(balance(a), before - 3);
    const std::string other =
        "{" + flag + R"("operations":[)" + op(a, b, 1) + "," + op(a, b, 5) + "]}";
    // The key names the whole request, atomic or not.
    const HttpResponse changed = merchant_request(shop, "POST", "/v1/batch", other, {key});
    EXPECT_EQ(changed.status, 409u) << changed.body;
    EXPECT_EQ(error_code(changed), "idempotency_key_reused");
    EXPECT_EQ(balance(a), before - 3);
  }
  // Prefer: return=minimal answers each operation with its status and id, or its code;
  // a retry with the same key and preference answers the same.
  const std::string minimal_body = R"({"operations":[)" + op(a, b, 1) + "," + op(a, b, 1000) +
                                   R"(,{"op":"void","transfer_id":")" + h2 + R"("}]})";
  const HttpResponse compact =
      merchant_request(shop, "POST", "/v1/batch", minimal_body,
                       {"Prefer: return=minimal", "Idempotency-Key: batch-minimal"});
  ASSERT_EQ(compact.status, 200u) << compact.body;
  EXPECT_EQ(compact.header("preference-applied"), "return=minimal");
  EXPECT_EQ(number_field(compact.body, "/results/0/status"), 201);
  EXPECT_EQ(text_field(compact.body, "/results/0/id").substr(0, 4), "trf_");
  EXPECT_EQ(number_field(compact.body, "/results/1/status"), 422);
  EXPECT_EQ(text_field(compact.body, "/results/1/code"), "insufficient_funds");
  EXPECT_EQ(number_field(compact.body, "/results/2/status"), 409);
  EXPECT_EQ(text_field(compact.body, "/results/2/code"), "pending_transfer_already_voided");
  EXPECT_EQ(compact.body.find("body"), std::string::npos) << compact.body;
  const HttpResponse compact_again =
      merchant_request(shop, "POST", "/v1/batch", minimal_body,
                       {"prefer: return=minimal", "idempotency-key: batch-minimal"});
  EXPECT_EQ(compact_again.body, compact.body);
  const HttpResponse full_again =
      merchant_request(shop, "POST", "/v1/batch", minimal_body, {"Idempotency-Key: batch-minimal"});
  EXPECT_EQ(full_again.header("preference-applied"), "");
  EXPECT_EQ(text_field(full_again.body, "/results/0/body/id"),
            text_field(compact.body, "/results/0/id"));
  // The preference among others, any case, spaces around '=', a parameter, quoted;
  // a longer value is another preference.
  for (const std::string prefer :
       {"respond-async, Return = minimal", "RETURN=MINIMAL; x=1", "wait=5,return=\"minimal\""}) {
    EXPECT_EQ(merchant_request(shop, "POST", "/v1/batch", minimal_body,
                               {"Prefer: " + prefer, "Idempotency-Key: batch-minimal"})
                  .body,
              compact.body)
        << prefer;
  }
  for (const std::string prefer : {"return=minimalist", "return=representation", "minimal"}) {
    EXPECT_EQ(merchant_request(shop, "POST", "/v1/batch", minimal_body,
                               {"Prefer: " + prefer, "Idempotency-Key: batch-minimal"})
                  .header("preference-applied"),
              "")
        << prefer;
  }

  std::string many = R"({"operations":[)";
  for (int i = 0; i < 8191; ++i)
    many += (i ? "," : "") + op(a, b, 1);
  EXPECT_EQ(error_code(merchant_request(shop, "POST", "/v1/batch", many + "]}")),
            "batch_too_large");
}

TEST_F(ServerTest, IdempotencyHoldsAcrossRestartsAndCrashes) {
  const MerchantKeys shop = merchant("Shop");
  const std::string bank = system_account();
  const std::string a = account(shop), b = account(shop);
  fund(bank, a, 1'000);
  const std::string body = transfer_body(a, b, 300);
  const HttpResponse first =
      merchant_request(shop, "POST", "/v1/transfers", body, {"Idempotency-Key: order-42"});
  ASSERT_EQ(first.status, 201u);
  // Header names are case-insensitive, and of a repeated header the first counts.
  EXPECT_EQ(
      merchant_request(shop, "POST", "/v1/transfers", body, {"idempotency-key: order-42"}).body,
      first.body);
  EXPECT_EQ(merchant_request(shop, "POST", "/v1/transfers", body,
                             {"IDEMPOTENCY-KEY: order-42", "Idempotency-Key: order-43"})
                .body,
            first.body);
  // Merchant creation is idempotent too.
  const HttpResponse onboard =
      admin_post("/v1/merchants", R"({"name":"Again"})", {"Idempotency-Key: m-1"});
  ASSERT_EQ(onboard.status, 201u);

  for (const int signal : {SIGTERM, SIGKILL}) {
    restart(signal);
    const HttpResponse retry =
        merchant_request(shop, "POST", "/v1/transfers", body, {"Idempotency-Key: order-42"});
    EXPECT_EQ(retry.status, 201u);
    EXPECT_EQ(retry.body, first.body);
    const HttpResponse changed = merchant_request(
        shop, "POST", "/v1/transfers", transfer_body(a, b, 301), {"Idempotency-Key: order-42"});
    EXPECT_EQ(changed.status, 409u);
    EXPECT_EQ(error_code(changed), "idempotency_key_reused");
    EXPECT_EQ(balance(a), 700);
    const HttpResponse onboard_again =
        admin_post("/v1/merchants", R"({"name":"Again"})", {"Idempotency-Key: m-1"});
    EXPECT_EQ(onboard_again.status, 201u);
    // The same merchant; its secret was shown once (security_server_test).
    EXPECT_EQ(text_field(onboard_again.body, "/id"), text_field(onboard.body, "/id"));
    EXPECT_EQ(text_field(onboard_again.body, "/key_id"), text_field(onboard.body, "/key_id"));
    EXPECT_EQ(text_field(onboard_again.body, "/secret"), "<missing>");
    EXPECT_EQ(
        error_code(admin_post("/v1/merchants", R"({"name":"Other"})", {"Idempotency-Key: m-1"})),
        "idempotency_key_reused");
  }
  // The same key from another merchant is another key.
  const MerchantKeys other = merchant("Other");
  const std::string c = account(other), d = account(other);
  const HttpResponse theirs = merchant_request(
      other, "POST", "/v1/transfers", transfer_body(c, d, 1), {"Idempotency-Key: order-42"});
  EXPECT_EQ(error_code(theirs), "insufficient_funds");
}

// Hundreds of clients debit one hot account at once: it ends exact, never below zero.
TEST_F(ServerTest, HotAccountUnderConcurrentClients) {
  server_.stop();
  // Three HTTP IO threads, whatever the machine: the clients' connections are spread
  // over them (each connection stays on one).
  start("[limits]\nrate_per_s = 1000000.0\nrate_burst = 1000000.0\n[http]\nio_threads = 3\n");
  const MerchantKeys shop = merchant("Hot");
  const std::string bank = system_account();
  const std::string hot = account(shop), sink = account(shop);
  constexpr int kClients = 200, kEach = 30, kFunds = 4'000;
  fund(bank, hot, kFunds);
  const std::string token = make_jwt(shop.id, shop.secret, std::time(nullptr) + 600);
  const std::string body = transfer_body(hot, sink, 1);
  std::atomic<int> created{0}, refused{0}, other{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&] {
      HttpClient client("127.0.0.1", server_.port());
      const std::vector<std::string> headers = {"Authorization: Bearer " + token,
                                                "Content-Type: application/json"};
      for (int i = 0; i < kEach; ++i) {
        const HttpResponse r = client.request("POST", "/v1/transfers", headers, body);
        (r.status == 201 ? created : r.status == 422 ? refused : other).fetch_add(1);
      }
    });
  }
  for (auto& t : clients)
    t.join();
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(created.load(), kFunds);
  EXPECT_EQ(refused.load(), kClients * kEach - kFunds);
  EXPECT_EQ(balance(hot), 0);
  EXPECT_EQ(balance(sink), kFunds);
}

TEST_F(ServerTest, ProtectionsRateLimitsSlowClientsAndConnectionCap) {
  server_.stop();
  start(
      "[limits]\nrate_per_s = 2.0\nrate_burst = 3.0\n"
      "[http]\nrequest_timeout_ms = 500\nconnections_max = 8\n");
  const MerchantKeys shop = merchant("Limited");
  const std::string target = "/v1/merchants/" + shop.id;
  unsigned last = 0;
  HttpResponse limited;
  for (int i = 0; i < 5 && last != 429; ++i) {
    limited = merchant_request(shop, "GET", target);
    last = limited.status;
  }
  EXPECT_EQ(last, 429u);
  EXPECT_EQ(error_code(limited), "rate_limited");
  EXPECT_FALSE(limited.header("retry-after").empty());

  // Slowloris: half a request line, then silence, is cut off at the deadline.
  HttpClient slow("127.0.0.1", server_.port());
  ASSERT_TRUE(slow.send_raw("GET /healthz HTT"));
  const auto started = std::chrono::steady_clock::now();
  const HttpResponse none = slow.receive(5'000);
  EXPECT_EQ(none.status, 0u);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(3));
  // Trickling a header byte by byte does not extend the deadline.
  HttpClient trickle("127.0.0.1", server_.port());
  bool cut = false;
  for (int i = 0; i < 40 && !cut; ++i) {
    cut = !trickle.send_raw("X");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(trickle.receive(1'000).status, 0u);

  // Connection cap: beyond it, a connection is answered 503 and closed.
  std::vector<std::unique_ptr<HttpClient>> held;
  for (int i = 0; i < 8; ++i) {
    held.push_back(std::make_unique<HttpClient>("127.0.0.1", server_.port()));
    ASSERT_TRUE(held.back()->connect());
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  HttpClient extra("127.0.0.1", server_.port());
  const HttpResponse busy = extra.request("GET", "/healthz");
  EXPECT_EQ(busy.status, 503u);
  EXPECT_EQ(error_code(busy), "overloaded");
  held.clear();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  HttpClient after("127.0.0.1", server_.port());
  const HttpResponse metrics = after.request("GET", "/metrics");
  EXPECT_NE(metrics.body.find("paygate_http_connections_refused_total 1"), std::string::npos)
      << metrics.body;
  EXPECT_NE(metrics.body.find("paygate_rate_limited_total 1"), std::string::npos);
}

// Out of files, the listener pauses between tries instead of spinning on a socket that
// stays readable, and takes the connections that waited once files are there again.
TEST_F(ServerTest, OutOfFilesTheListenerPausesAndThenTakesWhatWaited) {
  if constexpr (kSanitized) {
    // UBSan's vptr check opens a pipe to probe memory: with no file free it reports a
    // false error and stops the server. The g++ and Release stages run this test.
    GTEST_SKIP() << "a sanitizer's runtime needs free files of its own";
  }
  const pid_t pid = server_.pid();
  ASSERT_GT(pid, 0);
  rlimit before{};
  ASSERT_EQ(::prlimit(pid, RLIMIT_NOFILE, nullptr, &before), 0);
  ASSERT_EQ(client_->request("GET", "/healthz").status, 200u);  // connected: metrics read on it
  // The limit bounds the next file's number, not how many are open: set it to the
  // lowest number free now (client_'s connection is open), so no new file opens.
  std::set<rlim_t> numbers;
  for (const auto& entry :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) {
    numbers.insert(std::stoul(entry.path().filename().string()));
  }
  rlim_t lowest_free = 0;
  while (numbers.contains(lowest_free))
    ++lowest_free;
  const rlimit tight{lowest_free, before.rlim_max};
  ASSERT_EQ(::prlimit(pid, RLIMIT_NOFILE, &tight, nullptr), 0);
  std::vector<std::unique_ptr<HttpClient>> waiting;
  for (int i = 0; i < 3; ++i) {
    waiting.push_back(std::make_unique<HttpClient>("127.0.0.1", server_.port()));
    ASSERT_TRUE(waiting.back()->send("GET", "/healthz", {}, {}));  // the kernel's backlog
  }
  u64 failures = 0;
  auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < 200 && (failures == 0 || failures == ~u64{0}); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    started = std::chrono::steady_clock::now();
    failures = metric("paygate_accept_failures_total");
  }
  ASSERT_NE(failures, ~u64{0}) << server_.log();
  ASSERT_GE(failures, 1u);
  // About one failure per pause (100 ms) however long it waits: spinning would be
  // thousands. The bound is loose (every 50 ms) so a busy machine cannot break it.
  std::this_thread::sleep_for(std::chrono::milliseconds(1'000));
  const u64 later = metric("paygate_accept_failures_total");
  const auto waited_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::steady_clock::now() - started)
                             .count();
  EXPECT_LE(later - failures, static_cast<u64>(waited_ms / 50 + 5));
  ASSERT_EQ(::prlimit(pid, RLIMIT_NOFILE, &before, nullptr), 0);
  for (auto& client : waiting) {
    EXPECT_EQ(client->receive(30'000).status, 200u);
  }
}

// Every connection is a file: a server started with a low soft limit on open files
// raises it for both listeners' connections_max (and files besides), up to the hard
// limit.
TEST_F(ServerTest, RaisesItsOpenFilesLimitForItsConnections) {
  server_.stop();
  rlimit mine{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &mine), 0);
  if (mine.rlim_max <= 256) GTEST_SKIP() << "the hard limit on open files leaves nothing to raise";
  const rlimit low{std::min<rlim_t>(256, mine.rlim_cur), mine.rlim_max};
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  start("[http]\nconnections_max = 3000\n[binary]\nconnections_max = 500\n");
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &mine), 0);
  rlimit theirs{};
  ASSERT_EQ(::prlimit(server_.pid(), RLIMIT_NOFILE, nullptr, &theirs), 0);
  const rlim_t wanted = 3000 + 500 + 1024;
  EXPECT_EQ(theirs.rlim_cur,
            mine.rlim_max == RLIM_INFINITY ? wanted : std::min(wanted, mine.rlim_max));
  EXPECT_NE(server_.log().find("event=file_limit_raised from=" + std::to_string(low.rlim_cur)),
            std::string::npos)
      << server_.log();
  EXPECT_EQ(client_->request("GET", "/healthz").status, 200u);
}

TEST_F(ServerTest, PipelinedRequestsAreAnsweredInOrder) {
  const MerchantKeys shop = merchant("Pipe");
  const std::string bank = system_account();
  const std::string a = account(shop), b = account(shop);
  fund(bank, a, 10);
  const std::string token = make_jwt(shop.id, shop.secret, std::time(nullptr) + 600);
  const std::vector<std::string> headers = {"Authorization: Bearer " + token,
                                            "Content-Type: application/json"};
  for (int i = 0; i < 12; ++i)
    ASSERT_TRUE(client_->send("POST", "/v1/transfers", headers, transfer_body(a, b, 1)));
  for (int i = 0; i < 12; ++i) {
    const HttpResponse r = client_->receive();
    EXPECT_EQ(r.status, i < 10 ? 201u : 422u) << i;
  }
}

// Pipelined requests run concurrently but in order: a request that needs two steps
// (a void looks its hold up first) holds back the requests after it, a small
// pipeline window still answers everything in order, and a connection closes
// cleanly after Connection: close or the client's end of stream.
TEST_F(ServerTest, PipelinesKeepOrderAcrossStepsAndCloseCleanly) {
  server_.stop();
  start("[http]\npipeline_max = 3\n");
  const MerchantKeys shop = merchant("Order");
  const std::string bank = system_account();
  const std::string wallet = account(shop), till = account(shop);
  fund(bank, wallet, 1'000);
  const std::string token = make_jwt(shop.id, shop.secret, std::time(nullptr) + 600);
  const std::vector<std::string> headers = {"Authorization: Bearer " + token,
                                            "Content-Type: application/json"};
  const HttpResponse hold = client_->request(
      "POST", "/v1/transfers", headers, transfer_body(wallet, till, 600, R"(,"pending":true)"));
  ASSERT_EQ(hold.status, 201u) << hold.body;
  const std::string hold_id = text_field(hold.body, "/id");
  // Sent in order, the void frees 600 before the transfer of 1,000 needs it.
  ASSERT_TRUE(client_->send("POST", "/v1/transfers/" + hold_id + "/void", headers, "{}"));
  ASSERT_TRUE(client_->send("POST", "/v1/transfers", headers, transfer_body(wallet, till, 1'000)));
  ASSERT_TRUE(client_->send("POST", "/v1/transfers", headers, transfer_body(wallet, till, 1)));
  EXPECT_EQ(client_->receive().status, 200u);
  EXPECT_EQ(client_->receive().status, 201u);
  EXPECT_EQ(error_code(client_->receive()), "insufficient_funds");

  // Forty pipelined through a window of three: thirty fit the balance, in order.
  fund(bank, wallet, 30);
  for (int i = 0; i < 40; ++i)
    ASSERT_TRUE(client_->send("POST", "/v1/transfers", headers, transfer_body(wallet, till, 1)));
  for (int i = 0; i < 40; ++i)
    EXPECT_EQ(client_->receive().status, i < 30 ? 201u : 422u) << i;
  EXPECT_EQ(balance(wallet), 0);
  EXPECT_EQ(balance(till), 1'030);

  // Connection: close in the middle: answered, and nothing after it is.
  HttpClient closing("127.0.0.1", server_.port());
  ASSERT_TRUE(closing.send("GET", "/healthz"));
  ASSERT_TRUE(closing.send("GET", "/healthz", {"Connection: close"}));
  ASSERT_TRUE(closing.send("GET", "/healthz"));
  EXPECT_EQ(closing.receive().status, 200u);
  const HttpResponse last = closing.receive();
  EXPECT_EQ(last.status, 200u);
  EXPECT_EQ(last.header("connection"), "close");
  EXPECT_EQ(closing.receive(2'000).status, 0u);

  // End of stream after three requests: all three answered, then closed.
  HttpClient done("127.0.0.1", server_.port());
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(done.send("POST", "/v1/transfers", headers, transfer_body(till, wallet, 1)));
  done.shutdown_send();
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(done.receive().status, 201u) << i;
  EXPECT_EQ(done.receive(2'000).status, 0u);
  EXPECT_EQ(balance(wallet), 3);
}

TEST_F(ServerTest, BinaryProtocolBatchesPipelinedFrames) {
  std::string error;
  binary::Client refused;
  EXPECT_FALSE(refused.connect("127.0.0.1", server_.binary_port(), "wrong", &error));
  binary::Client client;
  ASSERT_TRUE(client.connect("127.0.0.1", server_.binary_port(), server_.admin_token(), &error))
      << error;
  const MerchantKeys shop = merchant("Binary");
  const u64 owner = *parse_id(IdKind::merchant, shop.id);
  constexpr Currency usd = Currency::from("USD");
  const Command opens[] = {Command::make_create_account({}, usd, AccountKind::system),
                           Command::make_create_account(MerchantId{owner}, usd, AccountKind::user),
                           Command::make_create_account(MerchantId{owner}, usd, AccountKind::user)};
  binary::Answer answer;
  ASSERT_TRUE(client.send(1, 0, opens));
  ASSERT_TRUE(client.receive(&answer));
  ASSERT_EQ(answer.header.status, 0u);
  ASSERT_EQ(answer.results.size(), 3u);
  const AccountId bank{answer.results[0].id}, a{answer.results[1].id}, b{answer.results[2].id};
  // 20 frames in flight at once (more than the window): all answered, by request id.
  std::vector<Command> frame(100, Command::make_transfer(bank, a, 1, usd));
  for (u32 id = 100; id < 120; ++id)
    ASSERT_TRUE(client.send(id, 0, frame));
  std::set<u32> seen;
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(client.receive(&answer));
    EXPECT_EQ(answer.header.status, 0u);
    for (const CommandResult& r : answer.results)
      EXPECT_TRUE(r.ok()) << name(r.code);
    seen.insert(answer.header.request_id);
  }
  EXPECT_EQ(seen.size(), 20u);
  // Atomic: one short transfer fails the frame.
  const Command both[] = {Command::make_transfer(a, b, 1'500, usd),
                          Command::make_transfer(a, b, 600, usd)};
  ASSERT_TRUE(client.send(7, 0, both, true));
  ASSERT_TRUE(client.receive(&answer));
  EXPECT_EQ(answer.results[1].code, ResultCode::insufficient_funds);
  EXPECT_EQ(answer.results[0].code, ResultCode::atomic_batch_failed);
  // The accounts made over the binary protocol belong to their merchant over HTTP too.
  const std::string a_id = id_text(IdKind::account, a.value);
  EXPECT_EQ(number_field(merchant_request(shop, "GET", "/v1/accounts/" + a_id).body, "/balance"),
            2'000);
  // The steps of a transfer between groups are the gateway's own: a frame carrying one is
  // refused whole, and nothing in it is applied.
  Command flagged = Command::make_transfer(a, b, 1, usd);
  flagged.flags = kTransferBetweenGroups;
  for (const Command& internal : {flagged, Command::make_deliver(TransferId{1}, b, 1, usd, 0),
                                  Command::make_settle(TransferId{1}, 0, ResultCode::ok)}) {
    const Command mixed[] = {Command::make_transfer(a, b, 1, usd), internal};
    ASSERT_TRUE(client.send(8, 0, mixed));
    ASSERT_TRUE(client.receive(&answer));
    EXPECT_EQ(static_cast<ResultCode>(answer.header.status), ResultCode::invalid_command);
  }
  EXPECT_EQ(number_field(merchant_request(shop, "GET", "/v1/accounts/" + a_id).body, "/balance"),
            2'000);
  // A malformed frame is answered with an error and the connection is closed.
  ASSERT_TRUE(client.send(9, 4'000, both));  // no such group
  ASSERT_TRUE(client.receive(&answer));
  EXPECT_EQ(static_cast<ResultCode>(answer.header.status), ResultCode::invalid_command);
}

}  // namespace
}  // namespace paygate::api
