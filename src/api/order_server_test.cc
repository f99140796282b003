// Orders against the real server (docs/API.md, "Orders"), as the three principals
// drive them: the merchant creates, the payer checks out, the provider reports; the
// money of each step, who may take it, and every way a step can arrive twice.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "api/crypto.h"
#include "api/id_text.h"
#include "api/server_fixture.h"
#include "cache/redis_test_support.h"

namespace paygate::api {
namespace {

using namespace std::chrono_literals;

class OrderServerTest : public ServerTest {
 protected:
  void SetUp() override {
    ServerTest::SetUp();
    shop_ = merchant("Shop");
    shop_account_ = account(shop_);
    payer_ = principal("/v1/users", "{}");
    wallet_ = account(payer_);
    fund(system_account(), wallet_, 1000);
    bank_ = principal("/v1/providers", R"({"name":"Bank"})", &clearing_);
  }
  MerchantKeys principal(const std::string& route, const std::string& body,
                         std::string* clearing = nullptr) {
    const HttpResponse r = admin_post(route, body);
    EXPECT_EQ(r.status, 201u) << r.body;
    if (clearing != nullptr) *clearing = text_field(r.body, "/clearing_account");
    return {text_field(r.body, "/id"), text_field(r.body, "/key_id"),
            text_field(r.body, "/secret")};
  }
  HttpResponse create(const std::string& ref, i64 amount, const std::string& extra = {},
                      std::vector<std::string> more = {}) {
    return merchant_request(shop_, "POST", "/v1/orders",
                            R"({"merchant_ref":")" + ref + R"(","amount":)" +
                                std::to_string(amount) + R"(,"currency":"USD")" + extra + "}",
                            std::move(more));
  }
  HttpResponse checkout_wallet(const MerchantKeys& who, const std::string& order,
                               const std::string& signature, const std::string& wallet,
                               std::vector<std::string> more = {}) {
    return merchant_request(who, "POST", "/v1/orders/" + order + "/checkout",
                            R"({"signature":")" + signature +
                                R"(","method":"wallet","payer_account":")" + wallet + R"("})",
                            std::move(more));
  }
  HttpResponse checkout_external(const std::string& order, const std::string& signature) {
    return merchant_request(payer_, "POST", "/v1/orders/" + order + "/checkout",
                            R"({"signature":")" + signature +
                                R"(","method":"external","provider":")" + bank_.id + R"("})");
  }
  HttpResponse result(const MerchantKeys& who, const std::string& order, const std::string& what,
                      std::vector<std::string> more = {}) {
    return merchant_request(who, "POST", "/v1/orders/" + order + "/result",
                            R"({"result":")" + what + R"(","provider_ref":"psp-1"})",
                            std::move(more));
  }
  std::string status_of(const std::string& order) {
    return text_field(admin_get("/v1/orders/" + order).body, "/status");
  }
  // Polls (bounded) until the order leaves `from`, as the group's ticks move time on.
  std::string wait_past(const std::string& order, const std::string& from) {
    std::string status = from;
    for (auto deadline = std::chrono::steady_clock::now() + 120s;
         status == from && std::chrono::steady_clock::now() < deadline;) {
      std::this_thread::sleep_for(100ms);
      status = status_of(order);
    }
    return status;
  }

  MerchantKeys shop_, payer_, bank_;
  std::string shop_account_, wallet_, clearing_;
};

TEST_F(OrderServerTest, APayerPaysAnOrderFromItsWalletOnceAndTheMerchantRefunds) {
  const HttpResponse made =
      create("cart-1", 300, R"(,"description":"two mugs","metadata":{"sku":"m2"})");
  ASSERT_EQ(made.status, 201u) << made.body;
  const std::string id = text_field(made.body, "/id");
  const std::string signature = text_field(made.body, "/signature");
  ASSERT_EQ(id.substr(0, 4), "ord_");
  EXPECT_EQ(text_field(made.body, "/status"), "created");
  EXPECT_EQ(text_field(made.body, "/account"), shop_account_);  // its first USD account
  EXPECT_EQ(text_field(made.body, "/merchant"), shop_.id);
  EXPECT_EQ(text_field(made.body, "/merchant_ref"), "cart-1");
  EXPECT_EQ(number_field(made.body, "/expires_at") - number_field(made.body, "/created_at"), 900);
  EXPECT_EQ(signature.size(), 64u);

  // merchant_ref is unique per merchant: the answer names the order that has it.
  const HttpResponse twice = create("cart-1", 5);
  EXPECT_EQ(twice.status, 409u);
  EXPECT_EQ(error_code(twice), "duplicate_order");
  EXPECT_NE(twice.body.find(id), std::string::npos) << twice.body;

  // A signature for other fields is refused, and nothing changes.
  std::string tampered = signature;
  tampered[0] = tampered[0] == 'a' ? 'b' : 'a';
  const HttpResponse refused = checkout_wallet(payer_, id, tampered, wallet_);
  EXPECT_EQ(refused.status, 400u);
  EXPECT_EQ(error_code(refused), "invalid_order_signature");
  EXPECT_EQ(balance(wallet_), 1000);
  // Nor can anyone pay from a wallet it does not own.
  const HttpResponse stranger = checkout_wallet(shop_, id, signature, wallet_);
  EXPECT_EQ(stranger.status, 404u) << stranger.body;

  const HttpResponse paid =
      checkout_wallet(payer_, id, signature, wallet_, {"Idempotency-Key: c-1"});
  ASSERT_EQ(paid.status, 200u) << paid.body;
  EXPECT_EQ(text_field(paid.body, "/status"), "success");
  EXPECT_EQ(text_field(paid.body, "/method"), "wallet");
  EXPECT_EQ(balance(wallet_), 700);
  EXPECT_EQ(balance(shop_account_), 300);
  const HttpResponse retried =
      checkout_wallet(payer_, id, signature, wallet_, {"Idempotency-Key: c-1"});
  EXPECT_EQ(retried.status, 200u);
  EXPECT_EQ(text_field(retried.body, "/transfer"), text_field(paid.body, "/transfer"));
  const HttpResponse again = checkout_wallet(payer_, id, signature, wallet_);
  EXPECT_EQ(again.status, 409u);
  EXPECT_EQ(error_code(again), "invalid_order_state");
  EXPECT_NE(again.body.find("success"), std::string::npos) << again.body;
  EXPECT_EQ(balance(wallet_), 700);

  // Who sees it: the merchant, the payer, operators; not another user.
  EXPECT_EQ(merchant_request(shop_, "GET", "/v1/orders/" + id).status, 200u);
  EXPECT_EQ(merchant_request(payer_, "GET", "/v1/orders/" + id).status, 200u);
  const MerchantKeys other = principal("/v1/users", "{}");
  EXPECT_EQ(merchant_request(other, "GET", "/v1/orders/" + id).status, 404u);

  // Refunds: in parts, up to the amount, back to the wallet; only the merchant's.
  EXPECT_EQ(merchant_request(payer_, "POST", "/v1/orders/" + id + "/refunds", "{}").status, 404u);
  const HttpResponse part = merchant_request(shop_, "POST", "/v1/orders/" + id + "/refunds",
                                             R"({"amount":100,"reason":"one mug broke"})");
  ASSERT_EQ(part.status, 201u) << part.body;
  EXPECT_EQ(number_field(part.body, "/amount_refunded"), 100);
  EXPECT_EQ(balance(wallet_), 800);
  const HttpResponse too_much =
      merchant_request(shop_, "POST", "/v1/orders/" + id + "/refunds", R"({"amount":201})");
  EXPECT_EQ(too_much.status, 422u);
  EXPECT_EQ(error_code(too_much), "refund_exceeds_order");
  ASSERT_EQ(merchant_request(shop_, "POST", "/v1/orders/" + id + "/refunds", "").status, 201u);
  EXPECT_EQ(balance(wallet_), 1000);
  EXPECT_EQ(balance(shop_account_), 0);
  EXPECT_EQ(number_field(admin_get("/v1/orders/" + id).body, "/amount_refunded"), 300);
}

// What an order was created with, beyond its money (merchant_ref, description,
// metadata, its URLs), is journaled with the command that made it.
TEST_F(OrderServerTest, WhatAnOrderIsCreatedWithIsJournaledWithIt) {
  const HttpResponse made =
      create("ref-journaled", 250,
             R"(,"description":"Two mugs","metadata":{"sku":"MUG-2"},)"
             R"("ipn_url":"https://shop.example/ipn","callback_url":"https://shop.example/back")");
  ASSERT_EQ(made.status, 201u) << made.body;
  const std::string id = text_field(made.body, "/id");
  ASSERT_EQ(checkout_external(id, text_field(made.body, "/signature")).status, 200u);
  ASSERT_EQ(result(bank_, id, "success").status, 200u);  // provider_ref psp-1
  const HttpResponse refunded = merchant_request(shop_, "POST", "/v1/orders/" + id + "/refunds",
                                                 R"({"amount":50,"reason":"one mug broke"})");
  ASSERT_EQ(refunded.status, 201u) << refunded.body;
  server_.stop(SIGKILL);
  std::vector<std::string> said = journaled_annotations();
  for (std::string& line : said)
    line = line.substr(0, line.find(" | "));
  const std::vector<std::string> expected{"6 ref-journaled",
                                          "3 Two mugs",
                                          R"(2 {"sku":"MUG-2"})",
                                          "4 https://shop.example/ipn",
                                          "5 https://shop.example/back",
                                          "8 psp-1",
                                          "9 one mug broke"};
  EXPECT_EQ(said, expected);
  start();
  EXPECT_EQ(merchant_request(shop_, "GET", "/v1/orders/" + id).status, 200u);
}

TEST_F(OrderServerTest, ShortOfFundsOrCancelledNothingMoves) {
  const HttpResponse made = create("big", 5000);
  ASSERT_EQ(made.status, 201u) << made.body;
  const std::string id = text_field(made.body, "/id");
  const std::string signature = text_field(made.body, "/signature");
  const HttpResponse short_of = checkout_wallet(payer_, id, signature, wallet_);
  EXPECT_EQ(short_of.status, 422u);
  EXPECT_EQ(error_code(short_of), "insufficient_funds");
  EXPECT_EQ(status_of(id), "created");
  // Only its merchant cancels it.
  EXPECT_EQ(merchant_request(payer_, "POST", "/v1/orders/" + id + "/cancel").status, 404u);
  const HttpResponse cancelled = merchant_request(shop_, "POST", "/v1/orders/" + id + "/cancel");
  ASSERT_EQ(cancelled.status, 200u) << cancelled.body;
  EXPECT_EQ(text_field(cancelled.body, "/status"), "cancelled");
  EXPECT_EQ(error_code(checkout_wallet(payer_, id, signature, wallet_)), "invalid_order_state");
  EXPECT_EQ(balance(wallet_), 1000);
  EXPECT_EQ(balance(shop_account_), 0);
  // Checks at the door.
  EXPECT_EQ(error_code(create("", 5)), "invalid_field");
  EXPECT_EQ(error_code(create("x", 0)), "invalid_amount");
  EXPECT_EQ(error_code(create("x", 5, R"(,"ipn_url":"ftp://x")")), "invalid_field");
  EXPECT_EQ(error_code(merchant_request(payer_, "POST", "/v1/orders",
                                        R"({"merchant_ref":"x","amount":5,"currency":"USD"})")),
            "operator_only");
  EXPECT_EQ(admin_get("/v1/orders/ord_0000000000000999").status, 404u);
  EXPECT_EQ(error_code(client_->request("GET", "/v1/orders?status=paid", admin())),
            "invalid_field");
  // Another order's signature is no signature for this one; a balance checkout of an
  // unfunded account moves nothing.
  const HttpResponse other = create("y", 5);
  const std::string other_id = text_field(other.body, "/id");
  const HttpResponse mixed =
      merchant_request(shop_, "POST", "/v1/orders/" + other_id + "/checkout",
                       R"({"signature":")" + signature + R"(","method":"balance"})");
  EXPECT_EQ(error_code(mixed), "invalid_order_signature") << mixed.body;
  const HttpResponse balance_method = merchant_request(
      shop_, "POST", "/v1/orders/" + other_id + "/checkout",
      R"({"signature":")" + text_field(other.body, "/signature") + R"(","method":"balance"})");
  EXPECT_EQ(error_code(balance_method), "insufficient_funds") << balance_method.body;
  EXPECT_EQ(status_of(other_id), "created");
  EXPECT_EQ(balance(shop_account_, "/held"), 0);
}

TEST_F(OrderServerTest, AnExternalCheckoutIsSettledByItsProviderOnly) {
  const HttpResponse made = create("card-1", 250);
  const std::string id = text_field(made.body, "/id");
  const HttpResponse routed = checkout_external(id, text_field(made.body, "/signature"));
  ASSERT_EQ(routed.status, 200u) << routed.body;
  EXPECT_EQ(text_field(routed.body, "/status"), "processing");
  EXPECT_EQ(text_field(routed.body, "/provider"), bank_.id);
  EXPECT_EQ(balance(shop_account_), 0);

  std::string other_clearing;
  const MerchantKeys other_bank =
      principal("/v1/providers", R"({"name":"Other"})", &other_clearing);
  EXPECT_EQ(result(other_bank, id, "success").status, 404u);
  const HttpResponse by_shop = result(shop_, id, "success");
  EXPECT_EQ(by_shop.status, 403u);
  EXPECT_EQ(error_code(by_shop), "awaits_provider");
  EXPECT_EQ(merchant_request(bank_, "GET", "/v1/orders/" + id).status, 200u);

  const HttpResponse done = result(bank_, id, "success", {"Idempotency-Key: r-1"});
  ASSERT_EQ(done.status, 200u) << done.body;
  EXPECT_EQ(text_field(done.body, "/status"), "success");
  EXPECT_EQ(result(bank_, id, "success", {"Idempotency-Key: r-1"}).body, done.body);
  EXPECT_EQ(error_code(result(bank_, id, "failed")), "invalid_order_state");
  EXPECT_EQ(balance(shop_account_), 250);
  EXPECT_EQ(balance(clearing_), -250);
  EXPECT_EQ(error_code(merchant_request(shop_, "POST", "/v1/orders/" + id + "/cancel")),
            "invalid_order_state");

  const HttpResponse declined = create("card-2", 40);
  const std::string id2 = text_field(declined.body, "/id");
  ASSERT_EQ(checkout_external(id2, text_field(declined.body, "/signature")).status, 200u);
  ASSERT_EQ(result(bank_, id2, "failed").status, 200u);
  EXPECT_EQ(status_of(id2), "failed");
  EXPECT_EQ(balance(shop_account_), 250);
}

// An order pays a merchant: an operator naming a user's wallet or a provider's clearing
// account (found by an attacker's probe: the owner became the order's "merchant", able
// to cancel it, or to route its money between providers) is refused and nothing is made.
TEST_F(OrderServerTest, AnOrderPaysOnlyAMerchantsAccount) {
  for (const std::string& account : {wallet_, clearing_}) {
    const HttpResponse r = admin_post("/v1/orders", R"({"merchant_ref":"not-a-shop","amount":5,)"
                                                    R"("currency":"USD","account":")" +
                                                        account + R"("})");
    EXPECT_EQ(r.status, 400u) << account << " → " << r.body;
    EXPECT_EQ(error_code(r), "invalid_account_kind") << account;
  }
  // Nothing was made: the merchant_ref is free, and the shop's own account still works.
  const HttpResponse made = admin_post(
      "/v1/orders", R"({"merchant_ref":"not-a-shop","amount":5,"currency":"USD","account":")" +
                        shop_account_ + R"("})");
  ASSERT_EQ(made.status, 201u) << made.body;
  EXPECT_EQ(text_field(made.body, "/merchant"), shop_.id);
  EXPECT_EQ(balance(wallet_), 1000);
  EXPECT_EQ(balance(clearing_), 0);
}

TEST_F(OrderServerTest, ABalanceCheckoutHoldsThePrefundedAccountUntilTheProviderReports) {
  fund(system_account(), shop_account_, 500);
  const auto checkout_balance = [&](const MerchantKeys& who, const std::string& order,
                                    const std::string& signature,
                                    std::vector<std::string> more = {}) {
    return merchant_request(who, "POST", "/v1/orders/" + order + "/checkout",
                            R"({"signature":")" + signature + R"(","method":"balance"})",
                            std::move(more));
  };
  const HttpResponse made = create("bill-1", 200);
  const std::string id = text_field(made.body, "/id");
  const std::string signature = text_field(made.body, "/signature");
  // The merchant pays from its own account: a payer holding the signature may not.
  const HttpResponse by_payer = checkout_balance(payer_, id, signature);
  EXPECT_EQ(by_payer.status, 404u) << by_payer.body;
  EXPECT_EQ(status_of(id), "created");

  // No provider named: the oldest that clears USD, the only one here.
  const HttpResponse held = checkout_balance(shop_, id, signature, {"Idempotency-Key: b-1"});
  ASSERT_EQ(held.status, 200u) << held.body;
  EXPECT_EQ(text_field(held.body, "/status"), "processing");
  EXPECT_EQ(text_field(held.body, "/method"), "balance");
  EXPECT_EQ(text_field(held.body, "/provider"), bank_.id);
  const std::string hold = text_field(held.body, "/hold");
  ASSERT_EQ(hold.substr(0, 4), "trf_") << held.body;
  EXPECT_EQ(checkout_balance(shop_, id, signature, {"Idempotency-Key: b-1"}).body, held.body);
  EXPECT_EQ(balance(shop_account_, "/available"), 300);
  EXPECT_EQ(balance(shop_account_, "/held"), 200);
  // The hold is the order's: neither the merchant nor an operator posts or voids it as
  // a transfer.
  for (const std::string action : {"/void", "/post"}) {
    const HttpResponse by_shop =
        merchant_request(shop_, "POST", "/v1/transfers/" + hold + action, "{}");
    EXPECT_EQ(error_code(by_shop), "awaits_provider") << by_shop.body;
    EXPECT_EQ(error_code(admin_post("/v1/transfers/" + hold + action, "{}")), "awaits_provider");
  }
  EXPECT_EQ(balance(shop_account_, "/held"), 200);

  const HttpResponse done = result(bank_, id, "success");
  ASSERT_EQ(done.status, 200u) << done.body;
  EXPECT_EQ(text_field(done.body, "/status"), "success");
  EXPECT_EQ(text_field(done.body, "/transfer"), hold);  // the hold, posted
  EXPECT_EQ(balance(shop_account_), 300);
  EXPECT_EQ(balance(shop_account_, "/held"), 0);
  EXPECT_EQ(balance(clearing_), 200);
  // Its refund takes money back from the provider: an operator's to make.
  const HttpResponse refund_by_shop =
      merchant_request(shop_, "POST", "/v1/orders/" + id + "/refunds", R"({"amount":50})");
  EXPECT_EQ(error_code(refund_by_shop), "operator_only") << refund_by_shop.body;
  ASSERT_EQ(admin_post("/v1/orders/" + id + "/refunds", R"({"amount":50})").status, 201u);
  EXPECT_EQ(balance(shop_account_), 350);
  EXPECT_EQ(balance(clearing_), 150);

  // More than the account has: refused, the order still open. A cancel releases a hold.
  const HttpResponse big = create("bill-2", 351);
  const HttpResponse short_of_funds =
      checkout_balance(shop_, text_field(big.body, "/id"), text_field(big.body, "/signature"));
  EXPECT_EQ(error_code(short_of_funds), "insufficient_funds") << short_of_funds.body;
  const HttpResponse second = create("bill-3", 100);
  const std::string id3 = text_field(second.body, "/id");
  ASSERT_EQ(checkout_balance(shop_, id3, text_field(second.body, "/signature")).status, 200u);
  EXPECT_EQ(balance(shop_account_, "/available"), 250);
  ASSERT_EQ(merchant_request(shop_, "POST", "/v1/orders/" + id3 + "/cancel").status, 200u);
  EXPECT_EQ(balance(shop_account_, "/available"), 350);
  EXPECT_EQ(balance(shop_account_, "/held"), 0);
  EXPECT_EQ(error_code(result(bank_, id3, "failed")), "invalid_order_state");
}

TEST_F(OrderServerTest, RiskRulesRefuseACheckoutRecordItAndMoveNothing) {
  const std::string rules_path = "/v1/merchants/" + shop_.id + "/risk";
  // Refused for want of funds before any rule: a keyed retry after the rules came
  // answers the same (the rules are not the request).
  const HttpResponse poor = create("risk-0", 5000);
  const std::string poor_id = text_field(poor.body, "/id");
  const std::string poor_signature = text_field(poor.body, "/signature");
  EXPECT_EQ(error_code(checkout_wallet(payer_, poor_id, poor_signature, wallet_,
                                       {"Idempotency-Key: k-poor"})),
            "insufficient_funds");
  const MerchantKeys blocked = principal("/v1/users", "{}");
  const std::string blocked_wallet = account(blocked);
  fund(system_account(), blocked_wallet, 100);
  // A blocked merchant is blocked with its sub-merchants.
  const MerchantKeys parent = merchant("Parent");
  const MerchantKeys child = merchant("Child", parent.id);
  const std::string child_account = account(child);
  fund(system_account(), child_account, 100);
  const std::string rules = R"({"max_amount":500,"max_checkouts_per_payer_per_minute":2,)"
                            R"("blocked_payers":[")" +
                            blocked.id + R"(",")" + parent.id + R"("]})";
  EXPECT_EQ(error_code(merchant_request(shop_, "POST", rules_path, rules)), "operator_only");
  const HttpResponse set = admin_post(rules_path, rules, {"Idempotency-Key: rules-1"});
  ASSERT_EQ(set.status, 200u) << set.body;
  // A retry answers the same; the key with other rules is refused, and changes nothing.
  EXPECT_EQ(admin_post(rules_path, rules, {"Idempotency-Key: rules-1"}).body, set.body);
  const HttpResponse reused =
      admin_post(rules_path, R"({"max_amount":null})", {"Idempotency-Key: rules-1"});
  EXPECT_EQ(error_code(reused), "idempotency_key_reused") << reused.body;
  const HttpResponse retried_poor =
      checkout_wallet(payer_, poor_id, poor_signature, wallet_, {"Idempotency-Key: k-poor"});
  EXPECT_EQ(error_code(retried_poor), "insufficient_funds") << retried_poor.body;
  EXPECT_EQ(status_of(poor_id), "created");
  const HttpResponse read = merchant_request(shop_, "GET", rules_path);
  ASSERT_EQ(read.status, 200u) << read.body;
  EXPECT_EQ(number_field(read.body, "/max_amount"), 500);
  EXPECT_EQ(number_field(read.body, "/max_checkouts_per_payer_per_minute"), 2);
  EXPECT_EQ(text_field(read.body, "/blocked_payers/0"), parent.id);  // by id
  EXPECT_EQ(text_field(read.body, "/blocked_payers/1"), blocked.id);
  EXPECT_EQ(merchant_request(payer_, "GET", rules_path).status, 404u);

  // Above max_amount: refused, recorded on the order, nothing moved; a keyed retry
  // answers the same, another checkout finds the order final.
  const HttpResponse big = create("risk-1", 600);
  const std::string big_id = text_field(big.body, "/id");
  const std::string big_signature = text_field(big.body, "/signature");
  const HttpResponse refused =
      checkout_wallet(payer_, big_id, big_signature, wallet_, {"Idempotency-Key: k-risk"});
  EXPECT_EQ(refused.status, 422u) << refused.body;
  EXPECT_EQ(error_code(refused), "rejected_risk");
  EXPECT_EQ(
      checkout_wallet(payer_, big_id, big_signature, wallet_, {"Idempotency-Key: k-risk"}).body,
      refused.body);
  EXPECT_EQ(error_code(checkout_wallet(payer_, big_id, big_signature, wallet_)),
            "invalid_order_state");
  const HttpResponse recorded = admin_get("/v1/orders/" + big_id);
  EXPECT_EQ(text_field(recorded.body, "/status"), "rejected_risk");
  EXPECT_EQ(text_field(recorded.body, "/risk_rule"), "max_amount");
  EXPECT_EQ(balance(wallet_), 1000);

  // A blocked payer, whatever the amount.
  const HttpResponse small = create("risk-2", 10);
  const HttpResponse by_blocked = checkout_wallet(
      blocked, text_field(small.body, "/id"), text_field(small.body, "/signature"), blocked_wallet);
  EXPECT_EQ(error_code(by_blocked), "rejected_risk") << by_blocked.body;
  EXPECT_EQ(text_field(admin_get("/v1/orders/" + text_field(small.body, "/id")).body, "/risk_rule"),
            "blocked_payers");
  EXPECT_EQ(balance(blocked_wallet), 100);
  const HttpResponse for_child = create("risk-2c", 10);
  const HttpResponse by_child =
      checkout_wallet(child, text_field(for_child.body, "/id"),
                      text_field(for_child.body, "/signature"), child_account);
  EXPECT_EQ(error_code(by_child), "rejected_risk") << by_child.body;
  EXPECT_EQ(balance(child_account), 100);

  // Two checkouts a minute per payer: the third is refused.
  std::vector<std::pair<std::string, std::string>> orders;
  for (int i = 0; i < 3; ++i) {
    const HttpResponse made = create("risk-v" + std::to_string(i), 10);
    orders.emplace_back(text_field(made.body, "/id"), text_field(made.body, "/signature"));
  }
  EXPECT_EQ(checkout_wallet(payer_, orders[0].first, orders[0].second, wallet_).status, 200u);
  EXPECT_EQ(checkout_wallet(payer_, orders[1].first, orders[1].second, wallet_).status, 200u);
  const HttpResponse third = checkout_wallet(payer_, orders[2].first, orders[2].second, wallet_);
  EXPECT_EQ(error_code(third), "rejected_risk") << third.body;
  EXPECT_EQ(text_field(admin_get("/v1/orders/" + orders[2].first).body, "/risk_rule"),
            "max_checkouts_per_payer_per_minute");
  EXPECT_EQ(balance(wallet_), 980);

  // The rules and what they refused survive a restart; cleared, they refuse nothing.
  restart();
  EXPECT_EQ(admin_get(rules_path).body, read.body);
  EXPECT_EQ(status_of(big_id), "rejected_risk");
  ASSERT_EQ(admin_post(rules_path, R"({"max_amount":null,"max_checkouts_per_payer_per_minute":)"
                                   R"(null,"blocked_payers":[]})")
                .status,
            200u);
  const HttpResponse again = create("risk-3", 600);
  EXPECT_EQ(checkout_wallet(payer_, text_field(again.body, "/id"),
                            text_field(again.body, "/signature"), wallet_)
                .status,
            200u);
  EXPECT_EQ(balance(wallet_), 380);
}

TEST_F(OrderServerTest, ALateSuccessIsAnExceptionThatAnOperatorResolves) {
  // An order that expires soon, checked out before it does: on a busy machine the
  // checkout may come too late, so the expiry doubles until it does not.
  std::string id;
  for (u32 expires_in_s = 1; id.empty() && expires_in_s <= 64; expires_in_s *= 2) {
    const HttpResponse made = create("late-" + std::to_string(expires_in_s), 60,
                                     ",\"expires_in_s\":" + std::to_string(expires_in_s));
    ASSERT_EQ(made.status, 201u) << made.body;
    const HttpResponse routed =
        checkout_external(text_field(made.body, "/id"), text_field(made.body, "/signature"));
    if (routed.status == 200u) id = text_field(made.body, "/id");
  }
  ASSERT_FALSE(id.empty());
  ASSERT_EQ(wait_past(id, "processing"), "timeout");
  const HttpResponse late = result(bank_, id, "success");
  ASSERT_EQ(late.status, 200u) << late.body;
  EXPECT_EQ(text_field(late.body, "/status"), "exception_checkout");
  EXPECT_EQ(balance(shop_account_), 0);  // nothing moves until it is resolved
  // Unresolved, it needs an operator's attention: listed for operators, and counted.
  const HttpResponse attention = admin_get("/v1/orders?attention=true");
  ASSERT_EQ(attention.status, 200u) << attention.body;
  EXPECT_EQ(text_field(attention.body, "/data/0/id"), id);
  EXPECT_EQ(text_field(attention.body, "/data/1/id"), "<missing>");
  EXPECT_EQ(metric("paygate_orders_attention{reason=\"exception_checkout\"}"), 1u);
  EXPECT_EQ(error_code(merchant_request(shop_, "GET", "/v1/orders?attention=true")),
            "operator_only");
  const HttpResponse by_shop =
      merchant_request(shop_, "POST", "/v1/orders/" + id + "/resolve", R"({"action":"accept"})");
  EXPECT_EQ(by_shop.status, 403u);
  const HttpResponse accepted =
      admin_post("/v1/orders/" + id + "/resolve", R"({"action":"accept"})");
  ASSERT_EQ(accepted.status, 200u) << accepted.body;
  EXPECT_EQ(text_field(accepted.body, "/status"), "success");
  EXPECT_EQ(text_field(accepted.body, "/resolution"), "accepted");
  EXPECT_EQ(balance(shop_account_), 60);
  EXPECT_EQ(balance(clearing_), -60);
  EXPECT_EQ(error_code(admin_post("/v1/orders/" + id + "/resolve", R"({"action":"reject"})")),
            "invalid_order_state");
  // Resolved, it needs no one (the list reads its group's store as of the request).
  EXPECT_EQ(text_field(admin_get("/v1/orders?attention=true").body, "/data/0/id"), "<missing>");
}

// Orders processing longer than [history] attention_after_s (0 here: at once) need
// attention too; one settled does not.
class AttentionServerTest : public OrderServerTest, public StoreParam {
 protected:
  void SetUp() override {
    config_ = "[history]\nattention_after_s = 0\n";
    PAYGATE_USE_STORE_PARAM(dir_.path() / "data");
    OrderServerTest::SetUp();
  }
};
PAYGATE_INSTANTIATE_STORE_PARAM(AttentionServerTest);

TEST_P(AttentionServerTest, OrdersProcessingTooLongAreListed) {
  const HttpResponse card = create("stuck", 70);
  ASSERT_EQ(card.status, 201u) << card.body;
  const std::string id = text_field(card.body, "/id");
  ASSERT_EQ(checkout_external(id, text_field(card.body, "/signature")).status, 200u);
  const HttpResponse waiting = create("waiting", 5);  // created, not processing: not listed
  ASSERT_EQ(waiting.status, 201u);
  std::string listed;
  for (auto deadline = std::chrono::steady_clock::now() + 60s;
       listed != id && std::chrono::steady_clock::now() < deadline;
       std::this_thread::sleep_for(20ms)) {
    listed = text_field(admin_get("/v1/orders?attention=true").body, "/data/0/id");
  }
  EXPECT_EQ(listed, id);
  EXPECT_EQ(text_field(admin_get("/v1/orders?attention=true").body, "/data/1/id"), "<missing>");
  EXPECT_EQ(metric("paygate_orders_attention{reason=\"processing\"}"), 1u);
  ASSERT_EQ(result(bank_, id, "success").status, 200u);
  EXPECT_EQ(text_field(admin_get("/v1/orders?attention=true").body, "/data/0/id"), "<missing>");
  EXPECT_EQ(metric("paygate_orders_attention{reason=\"processing\"}"), 0u);
}

// Orders held for a second once final.
class OrderTwoGroupServerTest : public OrderServerTest {
 protected:
  void SetUp() override {
    extra_args_ = {"--groups", "2"};
    OrderServerTest::SetUp();
  }
};

// A provider has a clearing account in every group, so an order of a merchant in
// another group than the provider's clears in the order's own group: the external and
// balance methods, their results, refunds and cancels never cross groups.
TEST_F(OrderTwoGroupServerTest, AProvidersOrdersClearInTheOrdersOwnGroup) {
  const HttpResponse bank = admin_get("/v1/providers/" + bank_.id);
  ASSERT_EQ(bank.status, 200u) << bank.body;
  const i64 home_group = number_field(bank.body, "/group");
  const i64 other_group = 1 - home_group;
  // The clearing_accounts entry of `group`.
  const auto clearing_in = [](const std::string& body, i64 group) {
    for (const char* at : {"/clearing_accounts/0", "/clearing_accounts/1"}) {
      if (number_field(body, std::string(at) + "/group") == group) {
        return text_field(body, std::string(at) + "/account");
      }
    }
    return std::string("<none>");
  };
  ASSERT_EQ(clearing_in(bank.body, home_group), clearing_) << bank.body;
  const std::string far_clearing = clearing_in(bank.body, other_group);
  ASSERT_EQ(far_clearing.substr(0, 4), "acc_") << bank.body;
  ASSERT_NE(far_clearing, clearing_);

  // A merchant in the other group (top-level principals are spread round-robin).
  MerchantKeys far_shop;
  for (int i = 0; i < 4 && far_shop.id.empty(); ++i) {
    const MerchantKeys m = merchant("Far " + std::to_string(i));
    if (number_field(admin_get("/v1/merchants/" + m.id).body, "/group") == other_group) {
      far_shop = m;
    }
  }
  ASSERT_FALSE(far_shop.id.empty());
  const std::string far_account = account(far_shop);
  fund(system_account(), far_account, 500);
  const auto order = [&](const std::string& ref, i64 amount) {
    const HttpResponse made =
        merchant_request(far_shop, "POST", "/v1/orders",
                         R"({"merchant_ref":")" + ref + R"(","amount":)" + std::to_string(amount) +
                             R"(,"currency":"USD"})");
    EXPECT_EQ(made.status, 201u) << made.body;
    return std::pair{text_field(made.body, "/id"), text_field(made.body, "/signature")};
  };

  // external: processing, then the provider's success credits the merchant from the
  // provider's clearing account in the order's group.
  const auto [card, card_signature] = order("far-card", 250);
  const HttpResponse routed = checkout_external(card, card_signature);
  ASSERT_EQ(routed.status, 200u) << routed.body;
  EXPECT_EQ(text_field(routed.body, "/status"), "processing");
  ASSERT_EQ(result(bank_, card, "success", {"Idempotency-Key: far-r1"}).status, 200u);
  EXPECT_EQ(status_of(card), "success");
  EXPECT_EQ(balance(far_account), 750);
  EXPECT_EQ(balance(far_clearing), -250);
  EXPECT_EQ(balance(clearing_), 0);
  ASSERT_EQ(
      merchant_request(far_shop, "POST", "/v1/orders/" + card + "/refunds", R"({"amount":50})")
          .status,
      201u);
  EXPECT_EQ(balance(far_account), 700);
  EXPECT_EQ(balance(far_clearing), -200);

  // balance: a hold on the merchant's account toward the same account, posted by the
  // provider's success; a cancelled one releases its hold.
  const auto checkout_balance = [&](const std::string& id, const std::string& signature) {
    return merchant_request(far_shop, "POST", "/v1/orders/" + id + "/checkout",
                            R"({"signature":")" + signature + R"(","method":"balance"})");
  };
  const auto [bill, bill_signature] = order("far-bill", 200);
  const HttpResponse held = checkout_balance(bill, bill_signature);
  ASSERT_EQ(held.status, 200u) << held.body;
  EXPECT_EQ(balance(far_account, "/held"), 200);
  const auto [bill2, bill2_signature] = order("far-bill-2", 100);
  ASSERT_EQ(checkout_balance(bill2, bill2_signature).status, 200u);
  ASSERT_EQ(merchant_request(far_shop, "POST", "/v1/orders/" + bill2 + "/cancel").status, 200u);
  EXPECT_EQ(balance(far_account, "/held"), 200);
  ASSERT_EQ(result(bank_, bill, "success").status, 200u);
  EXPECT_EQ(balance(far_account), 500);
  EXPECT_EQ(balance(far_account, "/held"), 0);
  EXPECT_EQ(balance(far_clearing), 0);
  EXPECT_EQ(balance(clearing_), 0);

  // The registry keeps the accounts through a restart; the provider still reports.
  restart(SIGKILL);
  const HttpResponse seen = merchant_request(bank_, "GET", "/v1/providers/" + bank_.id);
  ASSERT_EQ(seen.status, 200u) << seen.body;
  EXPECT_EQ(clearing_in(seen.body, other_group), far_clearing) << seen.body;
  const auto [late, late_signature] = order("far-card-2", 30);
  ASSERT_EQ(checkout_external(late, late_signature).status, 200u);
  ASSERT_EQ(result(bank_, late, "success").status, 200u);
  EXPECT_EQ(balance(far_clearing), -30);
  EXPECT_EQ(balance(far_account), 530);
}

// Without the history store (with it, an order that left memory is read from there:
// OrderServerTest.AnOrderThatLeftMemoryIsReadFromTheStore).
class ShortRetentionServerTest : public OrderServerTest {
 protected:
  void SetUp() override {
    config_ = "[orders]\nfinal_retained_s = 1\n[history]\nenabled = false\n";
    OrderServerTest::SetUp();
  }
};

TEST_F(ShortRetentionServerTest, OrdersSurviveARestartAndLeaveMemoryAfterTheirRetention) {
  const HttpResponse made = create("keep-1", 10, {}, {"Idempotency-Key: o-1"});
  ASSERT_EQ(made.status, 201u) << made.body;
  const std::string id = text_field(made.body, "/id");
  restart(SIGKILL);
  EXPECT_EQ(status_of(id), "created");
  const HttpResponse retried = create("keep-1", 10, {}, {"Idempotency-Key: o-1"});
  EXPECT_EQ(retried.status, 201u);
  EXPECT_EQ(retried.body, made.body);
  ASSERT_EQ(checkout_wallet(payer_, id, text_field(made.body, "/signature"), wallet_).status, 200u);
  restart(SIGKILL);
  // Paid, durably; the order itself may already have left memory (its second of
  // retention can pass while the server restarts), so either answer is right.
  EXPECT_EQ(balance(wallet_), 990);
  const HttpResponse after = admin_get("/v1/orders/" + id);
  EXPECT_TRUE(text_field(after.body, "/status") == "success" ||
              error_code(after) == "order_archived")
      << after.body;
  // Final, then past its retention: 410, never a false 404.
  std::string answer;
  for (auto deadline = std::chrono::steady_clock::now() + 60s;
       std::chrono::steady_clock::now() < deadline; std::this_thread::sleep_for(100ms)) {
    answer = error_code(admin_get("/v1/orders/" + id));
    if (answer == "order_archived") break;
  }
  EXPECT_EQ(answer, "order_archived");
  EXPECT_EQ(admin_get("/v1/orders/" + id).status, 410u);
  // Its merchant_ref is free again.
  EXPECT_EQ(create("keep-1", 10).status, 201u);
}

// A setting that is a switch takes true or false, nothing else; true starts.
TEST_F(OrderServerTest, PreparedSegmentsAreASwitch) {
  ASSERT_EQ(server_.stop(SIGTERM), 0);
  EXPECT_FALSE(server_.start(dir_.path() / "data",
                             test_config("[group]\njournal_prepare_segments = 1\n"), extra_args_));
  EXPECT_NE(server_.log().find("group.journal_prepare_segments must be true or false"),
            std::string::npos)
      << server_.log();
  ASSERT_TRUE(server_.start(dir_.path() / "data",
                            test_config("[group]\njournal_prepare_segments = true\n"), extra_args_))
      << server_.log();
}

}  // namespace
}  // namespace paygate::api

namespace paygate::api {
namespace {

// The order settings shape results (orders_full, when an order leaves memory), so a
// group's journal keeps them: another value at a restart is refused, not replayed.
TEST_F(OrderServerTest, AJournalKeepsItsOrderSettings) {
  ASSERT_EQ(server_.stop(SIGTERM), 0);
  EXPECT_FALSE(server_.start(dir_.path() / "data", test_config("[orders]\nfinal_retained_s = 5\n"),
                             extra_args_));
  EXPECT_NE(server_.log().find("final_retained_s 3600"), std::string::npos) << server_.log();
}

}  // namespace
}  // namespace paygate::api

namespace paygate::api {
namespace {

// The ids of a page of GET /v1/orders, in order.
std::vector<std::string> listed_ids(const HttpResponse& r) {
  std::vector<std::string> ids;
  for (int i = 0;; ++i) {
    const std::string id = text_field(r.body, "/data/" + std::to_string(i) + "/id");
    if (id == "<missing>" || id == "<not json>") return ids;
    ids.push_back(id);
  }
}

class OrderListServerTest : public OrderServerTest, public StoreParam {
 protected:
  void SetUp() override {
    PAYGATE_USE_STORE_PARAM(dir_.path() / "data");
    OrderServerTest::SetUp();
  }
};
PAYGATE_INSTANTIATE_STORE_PARAM(OrderListServerTest);

// GET /v1/orders from the history store: newest first, filtered, paged, each merchant
// its own, waiting (bounded) for a sequence the caller saw; across a kill -9.
TEST_P(OrderListServerTest, OrdersAreListedFromTheHistoryStore) {
  std::vector<std::string> ids, signatures;
  for (int i = 0; i < 5; ++i) {
    const HttpResponse made = create("list-" + std::to_string(i), 10 + i,
                                     R"(,"description":"n)" + std::to_string(i) + R"(")");
    ASSERT_EQ(made.status, 201u) << made.body;
    ids.push_back(text_field(made.body, "/id"));
    signatures.push_back(text_field(made.body, "/signature"));
  }
  for (const int i : {1, 3}) {
    ASSERT_EQ(merchant_request(shop_, "POST", "/v1/orders/" + ids[i] + "/cancel", "{}").status,
              200u);
  }
  // A sequence the client has seen (here the group's durable one, from /metrics): the
  // list waits until the store reflects it.
  const std::string group =
      std::to_string(number_field(admin_get("/v1/merchants/" + shop_.id).body, "/group"));
  const u64 seen = metric(R"(paygate_group_durable_sequence{group=")" + group + R"("})");
  const HttpResponse all =
      merchant_request(shop_, "GET", "/v1/orders?min_sequence=" + std::to_string(seen));
  ASSERT_EQ(all.status, 200u) << all.body;
  EXPECT_GE(number_field(all.body, "/as_of_sequence"), static_cast<i64>(seen));
  EXPECT_EQ(listed_ids(all), (std::vector<std::string>{ids[4], ids[3], ids[2], ids[1], ids[0]}));
  EXPECT_EQ(text_field(all.body, "/object"), "list");
  EXPECT_EQ(text_field(all.body, "/data/0/merchant_ref"), "list-4");
  EXPECT_EQ(text_field(all.body, "/data/0/description"), "n4");
  EXPECT_EQ(text_field(all.body, "/data/0/signature"), signatures[4]);
  EXPECT_EQ(text_field(all.body, "/data/0/status"), "created");
  EXPECT_EQ(text_field(all.body, "/data/1/status"), "cancelled");
  EXPECT_EQ(text_field(all.body, "/has_more"), "<missing>");  // a boolean
  EXPECT_NE(all.body.find(R"("has_more":false)"), std::string::npos);

  const auto list = [&](const MerchantKeys& who, const std::string& query) {
    return merchant_request(who, "GET", "/v1/orders?" + query);
  };
  EXPECT_EQ(listed_ids(list(shop_, "status=cancelled")),
            (std::vector<std::string>{ids[3], ids[1]}));
  EXPECT_EQ(listed_ids(list(shop_, "merchant_ref=list-2")), (std::vector<std::string>{ids[2]}));
  const i64 created = number_field(all.body, "/data/0/created_at");
  EXPECT_EQ(listed_ids(list(shop_, "created_from=" + std::to_string(created + 3600))).size(), 0u);
  EXPECT_EQ(listed_ids(list(shop_, "created_to=" + std::to_string(created + 3600))).size(), 5u);
  // Pages of two, each continuing after the last of the one before.
  std::vector<std::string> walked;
  std::string cursor;
  for (int page = 0; page < 5; ++page) {
    const HttpResponse r = list(shop_, "limit=2" + (cursor.empty() ? "" : "&cursor=" + cursor));
    ASSERT_EQ(r.status, 200u) << r.body;
    for (const std::string& id : listed_ids(r))
      walked.push_back(id);
    if (r.body.find(R"("has_more":true)") == std::string::npos) break;
    cursor = text_field(r.body, "/next_cursor");
  }
  EXPECT_EQ(walked, (std::vector<std::string>{ids[4], ids[3], ids[2], ids[1], ids[0]}));

  // Each merchant its own; an operator anyone's.
  const MerchantKeys other = merchant("Other");
  EXPECT_EQ(listed_ids(list(other, "")).size(), 0u);
  EXPECT_EQ(error_code(list(other, "merchant=" + shop_.id)), "merchant_not_found");
  EXPECT_EQ(error_code(list(other, "cursor=" + ids[2])), "invalid_cursor");
  EXPECT_EQ(error_code(list(shop_, "cursor=ord_0000000000000999")), "invalid_cursor");
  const HttpResponse by_operator = client_->request(
      "GET", "/v1/orders?merchant=" + shop_.id + "&min_sequence=" + std::to_string(seen), admin());
  EXPECT_EQ(listed_ids(by_operator).size(), 5u) << by_operator.body;
  EXPECT_EQ(error_code(client_->request("GET", "/v1/orders?min_sequence=1", admin())),
            "invalid_field");  // a sequence is one group's: name the merchant

  // kill -9: the store is the same, each order once; new orders join it, and a list
  // asked for after an order was acknowledged has it (read your writes).
  restart(SIGKILL);
  const HttpResponse newest = create("list-5", 15);
  ASSERT_EQ(newest.status, 201u);
  const std::vector<std::string> after = listed_ids(list(shop_, ""));
  ASSERT_EQ(after.size(), 6u);
  EXPECT_EQ(after[0], text_field(newest.body, "/id"));
  const HttpResponse everyone = client_->request("GET", "/v1/orders?limit=100", admin());
  EXPECT_EQ(listed_ids(everyone).size(), 6u) << everyone.body;
  EXPECT_EQ(number_field(everyone.body, "/as_of_sequence"), -999'999);  // several groups
  EXPECT_EQ(std::vector<std::string>(after.begin() + 1, after.end()),
            (std::vector<std::string>{ids[4], ids[3], ids[2], ids[1], ids[0]}));
}

// An order and a transfer the group holds are read with what their requests said, at
// once (the read waits, bounded, for the store to have the texts: read your writes),
// and ?min_sequence= makes any read wait for a sequence the client saw.
TEST_P(OrderListServerTest, ReadsShowWhatTheRequestSaidAtOnce) {
  const HttpResponse made =
      create("said-1", 40,
             R"(,"description":"A lamp","metadata":{"sku":"LAMP"},)"
             R"("ipn_url":"https://shop.example/ipn","callback_url":"https://shop.example/back")");
  ASSERT_EQ(made.status, 201u) << made.body;
  const std::string id = text_field(made.body, "/id");
  // What a caller reads of the order's texts: merchant_ref, description, metadata's
  // sku, ipn_url, callback_url.
  const auto texts = [&](const MerchantKeys& who) {
    const HttpResponse read = merchant_request(who, "GET", "/v1/orders/" + id);
    EXPECT_EQ(read.status, 200u) << read.body;
    EXPECT_EQ(text_field(read.body, "/signature"), text_field(made.body, "/signature"));
    std::vector<std::string> out;
    for (const char* field :
         {"/merchant_ref", "/description", "/metadata/sku", "/ipn_url", "/callback_url"})
      out.push_back(text_field(read.body, field));
    return out;
  };
  EXPECT_EQ(texts(shop_),
            (std::vector<std::string>{"said-1", "A lamp", "LAMP", "https://shop.example/ipn",
                                      "https://shop.example/back"}));
  // The payer who pays it sees what the order is, not the merchant's metadata nor its
  // URLs.
  ASSERT_EQ(checkout_wallet(payer_, id, text_field(made.body, "/signature"), wallet_).status, 200u);
  EXPECT_EQ(texts(payer_),
            (std::vector<std::string>{"said-1", "A lamp", "<missing>", "<missing>", "<missing>"}));
  const HttpResponse funded =
      admin_post("/v1/transfers", R"({"debit_account":")" + system_account() +
                                      R"(","credit_account":")" + wallet_ +
                                      R"(","amount":3,"currency":"USD","reference":"r-9",)"
                                      R"("metadata":{"k":"v"}})");
  ASSERT_EQ(funded.status, 201u) << funded.body;
  const std::string transfer = text_field(funded.body, "/id");
  const HttpResponse seen = admin_get("/v1/transfers/" + transfer);
  ASSERT_EQ(seen.status, 200u) << seen.body;
  EXPECT_EQ(text_field(seen.body, "/reference"), "r-9");
  EXPECT_EQ(text_field(seen.body, "/metadata/k"), "v");

  // ?min_sequence=: a sequence seen before is reached; the read answers as without it.
  const std::string group =
      std::to_string(number_field(admin_get("/v1/merchants/" + shop_.id).body, "/group"));
  const std::string durable = std::to_string(
      static_cast<u64>(metric(R"(paygate_group_durable_sequence{group=")" + group + R"("})")));
  for (const std::string& target :
       {"/v1/orders/" + id, "/v1/accounts/" + shop_account_ + "/entries",
        std::string("/v1/events")}) {
    const HttpResponse r = merchant_request(shop_, "GET", target + "?min_sequence=" + durable);
    EXPECT_EQ(r.status, 200u) << target << ": " << r.body;
  }
  EXPECT_EQ(admin_get("/v1/transfers/" + transfer + "?min_sequence=" + durable).status, 200u);
  // Malformed, repeated or unknown parameters are refused.
  for (const char* query :
       {"min_sequence=x", "min_sequence=1&min_sequence=2", "other=1", "min_sequence=-1"}) {
    EXPECT_EQ(error_code(merchant_request(shop_, "GET", "/v1/orders/" + id + "?" + query)),
              "invalid_field")
        << query;
    EXPECT_EQ(error_code(admin_get("/v1/transfers/" + transfer + "?" + query)), "invalid_field")
        << query;
  }
  // After a kill -9, the texts are the store's as before.
  restart(SIGKILL);
  EXPECT_EQ(text_field(merchant_request(shop_, "GET", "/v1/orders/" + id).body, "/merchant_ref"),
            "said-1");
  EXPECT_EQ(text_field(admin_get("/v1/transfers/" + transfer).body, "/reference"), "r-9");
}

// A checkout that makes the order final answers where the merchant asked the payer be
// sent: its callback_url with order_id, status and t, signed with the merchant's secret.
TEST_F(OrderServerTest, AFinalCheckoutAnswersTheRedirectToTheMerchant) {
  const HttpResponse made =
      create("back-1", 25, R"(,"callback_url":"https://shop.test/back?cart=9#done")");
  ASSERT_EQ(made.status, 201u) << made.body;
  const std::string id = text_field(made.body, "/id");
  const std::string signature = text_field(made.body, "/signature");
  const HttpResponse paid =
      checkout_wallet(payer_, id, signature, wallet_, {"Idempotency-Key: back-1-pay"});
  ASSERT_EQ(paid.status, 200u) << paid.body;
  const std::string redirect = text_field(paid.body, "/redirect_url");
  const std::string t = std::to_string(number_field(paid.body, "/finished_at"));
  const std::string signed_part = "order_id=" + id + "&status=success&t=" + t;
  EXPECT_EQ(redirect, "https://shop.test/back?cart=9&" + signed_part + "&signature=" +
                          to_hex(hmac_sha256(shop_.secret, {"redirect:", signed_part})) + "#done");
  // A retry answers the same.
  const HttpResponse again =
      checkout_wallet(payer_, id, signature, wallet_, {"Idempotency-Key: back-1-pay"});
  EXPECT_EQ(text_field(again.body, "/redirect_url"), redirect);
  EXPECT_EQ(balance(wallet_), 975);
  // No callback_url, or not final yet: no redirect.
  const HttpResponse plain = create("back-2", 5);
  const HttpResponse paid_plain = checkout_wallet(payer_, text_field(plain.body, "/id"),
                                                  text_field(plain.body, "/signature"), wallet_);
  ASSERT_EQ(paid_plain.status, 200u) << paid_plain.body;
  EXPECT_EQ(text_field(paid_plain.body, "/redirect_url"), "<missing>");
  const HttpResponse card = create("back-3", 5, R"(,"callback_url":"https://shop.test/b")");
  const HttpResponse processing =
      checkout_external(text_field(card.body, "/id"), text_field(card.body, "/signature"));
  ASSERT_EQ(processing.status, 200u) << processing.body;
  EXPECT_EQ(text_field(processing.body, "/status"), "processing");
  EXPECT_EQ(text_field(processing.body, "/redirect_url"), "<missing>");
}

class ShortReadWaitServerTest : public OrderServerTest {
 protected:
  void SetUp() override {
    config_ = "[history]\nread_wait_ms = 300\n";
    OrderServerTest::SetUp();
  }
};

// A sequence the store does not reach within [history] read_wait_ms: 503, retry.
TEST_F(ShortReadWaitServerTest, ASequenceTheStoreDoesNotReachIsHistoryBehind) {
  ASSERT_EQ(create("late-1", 5).status, 201u);
  const HttpResponse behind = merchant_request(shop_, "GET", "/v1/orders?min_sequence=1000000000");
  EXPECT_EQ(behind.status, 503u) << behind.body;
  EXPECT_EQ(error_code(behind), "history_behind");
  // Without it, the list answers.
  EXPECT_EQ(merchant_request(shop_, "GET", "/v1/orders").status, 200u);
  // So does every other read that asks for one.
  const std::string id = text_field(create("late-2", 5).body, "/id");
  const std::string funding =
      text_field(admin_post("/v1/transfers", R"({"debit_account":")" + system_account() +
                                                 R"(","credit_account":")" + wallet_ +
                                                 R"(","amount":3,"currency":"USD"})")
                     .body,
                 "/id");
  for (const std::string& target :
       {"/v1/orders/" + id, "/v1/transfers/" + funding, "/v1/accounts/" + wallet_ + "/entries",
        std::string("/v1/events")}) {
    const HttpResponse r = admin_get(target + "?min_sequence=1000000000");
    EXPECT_EQ(r.status, 503u) << target << ": " << r.body;
    EXPECT_EQ(error_code(r), "history_behind") << target;
    EXPECT_EQ(admin_get(target).status, 200u) << target;
  }
}

class NoHistoryServerTest : public OrderServerTest {
 protected:
  void SetUp() override {
    config_ = "[history]\nenabled = false\n";
    OrderServerTest::SetUp();
  }
};

// Without the store, a read is the group's memory: a sequence it made durable is
// reached at once, one it has not is 503; an order is answered without its texts.
TEST_F(NoHistoryServerTest, MinSequenceIsTheGroupsOwn) {
  const HttpResponse made = create("memory-1", 5, R"(,"description":"kept nowhere")");
  ASSERT_EQ(made.status, 201u) << made.body;
  const std::string id = text_field(made.body, "/id");
  const HttpResponse read = merchant_request(shop_, "GET", "/v1/orders/" + id + "?min_sequence=1");
  ASSERT_EQ(read.status, 200u) << read.body;
  EXPECT_EQ(text_field(read.body, "/merchant_ref"), "<missing>");
  const HttpResponse ahead =
      merchant_request(shop_, "GET", "/v1/orders/" + id + "?min_sequence=1000000000");
  EXPECT_EQ(ahead.status, 503u) << ahead.body;
  EXPECT_EQ(error_code(ahead), "history_behind");
}

class ArchivingServerTest : public OrderServerTest, public StoreParam {
 protected:
  void SetUp() override {
    config_ = "[orders]\nfinal_retained_s = 1\n";
    PAYGATE_USE_STORE_PARAM(dir_.path() / "data");
    OrderServerTest::SetUp();
  }
};
PAYGATE_INSTANTIATE_STORE_PARAM(ArchivingServerTest);

// A final order that has left the engine's memory is read from the history store (not
// 410), with what its request said and every step it took; steps on it stay refused.
TEST_P(ArchivingServerTest, AnOrderThatLeftMemoryIsReadFromTheStore) {
  const HttpResponse made =
      create("gone-1", 40, R"(,"description":"a lamp","metadata":{"sku":"l1"})");
  ASSERT_EQ(made.status, 201u) << made.body;
  const std::string id = text_field(made.body, "/id");
  ASSERT_EQ(checkout_wallet(payer_, id, text_field(made.body, "/signature"), wallet_).status, 200u);
  // Past its retention (the group's ticks move time on), it is answered from the store.
  HttpResponse read;
  for (auto deadline = std::chrono::steady_clock::now() + 60s;
       std::chrono::steady_clock::now() < deadline; std::this_thread::sleep_for(100ms)) {
    read = merchant_request(shop_, "GET", "/v1/orders/" + id);
    if (number_field(read.body, "/as_of_sequence") > 0) break;
  }
  ASSERT_EQ(read.status, 200u) << read.body;
  EXPECT_GT(number_field(read.body, "/as_of_sequence"), 0) << read.body;
  EXPECT_EQ(text_field(read.body, "/status"), "success");
  EXPECT_EQ(text_field(read.body, "/merchant_ref"), "gone-1");
  EXPECT_EQ(text_field(read.body, "/description"), "a lamp");
  EXPECT_EQ(text_field(read.body, "/metadata/sku"), "l1");
  EXPECT_EQ(text_field(read.body, "/payer_account"), wallet_);
  EXPECT_EQ(text_field(read.body, "/signature"), text_field(made.body, "/signature"));
  // Its payer sees it too; another merchant does not.
  EXPECT_EQ(merchant_request(payer_, "GET", "/v1/orders/" + id).status, 200u);
  EXPECT_EQ(merchant_request(merchant("Other"), "GET", "/v1/orders/" + id).status, 404u);
  // A step needs the order in memory: refunds of an archived order stay refused.
  EXPECT_EQ(error_code(merchant_request(shop_, "POST", "/v1/orders/" + id + "/refunds", "{}")),
            "order_archived");
  EXPECT_EQ(balance(wallet_), 960);
  // The list has it too (held orders and archived ones, newest first).
  const HttpResponse listed = merchant_request(shop_, "GET", "/v1/orders?merchant_ref=gone-1");
  ASSERT_EQ(listed.status, 200u) << listed.body;
  EXPECT_EQ(text_field(listed.body, "/data/0/id"), id);
  EXPECT_EQ(text_field(listed.body, "/data/0/status"), "success");
  restart(SIGKILL);
  const HttpResponse again = merchant_request(shop_, "GET", "/v1/orders/" + id);
  EXPECT_EQ(again.status, 200u) << again.body;
  EXPECT_EQ(text_field(again.body, "/merchant_ref"), "gone-1");
  // In the store, its row moved to the archive (docs/HISTORY.md), once.
  server_.stop(SIGTERM);
  {
    auto store = history::Store::open(store_);
    ASSERT_TRUE(store.ok()) << store.status().to_string();
    EXPECT_EQ(store.value()->rows("order_archive").value(), 1u);
    const std::optional<history::OrderRow> row =
        store.value()->order(parse_id(IdKind::order, id).value_or(0)).value();
    ASSERT_TRUE(row.has_value());
    EXPECT_EQ(row->merchant_ref, "gone-1");
  }
  start();
}

// Orders read through Redis (docs/REDIS.md), against a real redis-server (and the
// store in SQLite, then MariaDB).
class RedisOrderServerTest : public ArchivingServerTest {
 protected:
  void SetUp() override {
    if (!cache::testing::RedisServer::installed()) {
      GTEST_SKIP() << "redis-server is not installed (scripts/install-deps.sh installs it)";
    }
    ASSERT_TRUE(redis_.start());
    // Waiting readers and loaders' locks far past anything a busy machine takes: the
    // outcome below is certain, not a race.
    config_ = "[orders]\nfinal_retained_s = 1\n[redis]\naddress = \"" + redis_.address() +
              "\"\nwait_ms = 60000\nlock_ms = 120000\ncommand_timeout_ms = 30000\n"
              "feed_poll_interval_ms = 5\n";
    PAYGATE_USE_STORE_PARAM(dir_.path() / "data");
    OrderServerTest::SetUp();
  }
  // Reads the order (as an operator) until it is served from the store.
  HttpResponse read_archived(const std::string& id) {
    HttpResponse read;
    for (auto deadline = std::chrono::steady_clock::now() + 60s;
         std::chrono::steady_clock::now() < deadline; std::this_thread::sleep_for(100ms)) {
      read = admin_get("/v1/orders/" + id);
      if (read.status == 200 && number_field(read.body, "/as_of_sequence") > 0) break;
    }
    return read;
  }
  std::string entry(const std::string& id, const std::string& field) {
    return redis_.cli("HGET paygate:order:" + id + " " + field);
  }

  TempDir redis_dir_;
  cache::testing::RedisServer redis_{redis_dir_.path()};
};
PAYGATE_INSTANTIATE_STORE_PARAM(RedisOrderServerTest);

// The feed writes each order's status entry as it changes; a read of an order that
// left memory comes from Redis, and hundreds of readers missing it at once make one
// store read between them; with Redis gone, the store answers.
TEST_P(RedisOrderServerTest, OrdersThatLeftMemoryAreReadThroughRedisWithOneLoaderPerKey) {
  const HttpResponse made = create("redis-1", 40, R"(,"description":"a lamp")");
  ASSERT_EQ(made.status, 201u) << made.body;
  const std::string id = text_field(made.body, "/id");
  ASSERT_EQ(checkout_wallet(payer_, id, text_field(made.body, "/signature"), wallet_).status, 200u);
  // Another order, left processing: its entry says so.
  const HttpResponse other = create("redis-2", 25);
  ASSERT_EQ(other.status, 201u) << other.body;
  const std::string other_id = text_field(other.body, "/id");
  ASSERT_EQ(checkout_external(other_id, text_field(other.body, "/signature")).status, 200u);

  const HttpResponse read = read_archived(id);
  ASSERT_EQ(read.status, 200u) << read.body;
  EXPECT_EQ(text_field(read.body, "/status"), "success");
  EXPECT_EQ(text_field(read.body, "/description"), "a lamp");
  // The feed's entries (bounded wait: it follows the store).
  for (auto deadline = std::chrono::steady_clock::now() + 60s;
       entry(other_id, "status") != "processing" && std::chrono::steady_clock::now() < deadline;) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(entry(other_id, "status"), "processing");
  EXPECT_EQ(entry(id, "status"), "success");
  EXPECT_EQ(entry(id, "merchant"), shop_.id);
  EXPECT_GT(std::stoull(entry(id, "sequence")), 0u);
  EXPECT_GE(metric("paygate_redis_feed_changes_total"), 4u);
  // Read again: from the entry, with everything its request said.
  const u64 hits = metric("paygate_redis_order_reads_total{outcome=\"hit\"}");
  const HttpResponse hit = admin_get("/v1/orders/" + id);
  ASSERT_EQ(hit.status, 200u) << hit.body;
  EXPECT_EQ(text_field(hit.body, "/description"), "a lamp");
  EXPECT_EQ(text_field(hit.body, "/signature"), text_field(made.body, "/signature"));
  EXPECT_EQ(metric("paygate_redis_order_reads_total{outcome=\"hit\"}"), hits + 1);

  // The entry gone (evicted, expired): hundreds of readers at once, one store read.
  ASSERT_EQ(redis_.cli("DEL paygate:order:" + id), "1");
  const u64 store_reads = metric("paygate_redis_store_loads_total");
  ASSERT_EQ(metric("paygate_redis_fallbacks_total"), 0u);
  constexpr int kReaders = 200;
  std::atomic<int> ok{0};
  std::vector<std::unique_ptr<HttpClient>> clients;
  for (int i = 0; i < kReaders; ++i) {
    clients.push_back(std::make_unique<HttpClient>("127.0.0.1", server_.port()));
  }
  std::vector<std::thread> readers;
  std::atomic<bool> go{false};
  for (int i = 0; i < kReaders; ++i) {
    readers.emplace_back([&, i] {
      while (!go.load())
        std::this_thread::yield();
      const HttpResponse r = clients[i]->request("GET", "/v1/orders/" + id, admin());
      if (r.status == 200 && text_field(r.body, "/merchant_ref") == "redis-1") ok.fetch_add(1);
    });
  }
  go.store(true);
  for (std::thread& t : readers)
    t.join();
  EXPECT_EQ(ok.load(), kReaders);
  // One store read between them: the loader's (no reader read the store itself).
  EXPECT_EQ(metric("paygate_redis_store_loads_total"), store_reads + 1);
  EXPECT_EQ(metric("paygate_redis_fallbacks_total"), 0u);
  EXPECT_EQ(metric("paygate_redis_order_reads_total{outcome=\"pending\"}"), 0u);
  EXPECT_EQ(entry(id, "status"), "success");

  // Redis gone: the store answers, and says so in the metrics.
  redis_.stop();
  const HttpResponse without = admin_get("/v1/orders/" + id);
  ASSERT_EQ(without.status, 200u) << without.body;
  EXPECT_EQ(text_field(without.body, "/merchant_ref"), "redis-1");
  EXPECT_GE(metric("paygate_redis_fallbacks_total"), 1u);
  EXPECT_GE(metric("paygate_redis_errors_total"), 1u);
  // An order still in memory never needed Redis.
  EXPECT_EQ(status_of(other_id), "processing");
}

TEST(RedisSettings, ABadRedisAddressStopsTheServerAtStart) {
  TempDir dir;
  testing::ServerProcess server;
  EXPECT_FALSE(
      server.start(dir.path() / "data", test_config("[redis]\naddress = \"localhost\"\n")));
  EXPECT_NE(server.log().find("[redis]"), std::string::npos) << server.log();
}

}  // namespace
}  // namespace paygate::api
