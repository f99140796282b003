// Users (payers), providers and withdrawals against the real server (docs/API.md,
// "Users, providers and withdrawals"): who may do what, the money of a withdrawal in
// each of its outcomes, and every way its requests can arrive twice.
#include <gtest/gtest.h>

#include <chrono>
#include <ctime>
#include <string>
#include <thread>

#include "api/server_fixture.h"

namespace paygate::api {
namespace {

using namespace std::chrono_literals;

struct ProviderKeys {
  MerchantKeys keys;
  std::string clearing_account;
};

template <typename Base>
class WalletTestBase : public Base {
 protected:
  MerchantKeys user(const std::string& name = "Payer") {
    const HttpResponse r = this->admin_post("/v1/users", R"({"name":")" + name + R"("})");
    EXPECT_EQ(r.status, 201u) << r.body;
    return {text_field(r.body, "/id"), text_field(r.body, "/key_id"),
            text_field(r.body, "/secret")};
  }
  ProviderKeys provider(const std::string& name = "Bank", const std::string& currency = "USD") {
    const HttpResponse r = this->admin_post(
        "/v1/providers", R"({"name":")" + name + R"(","currency":")" + currency + R"("})");
    EXPECT_EQ(r.status, 201u) << r.body;
    return {
        {text_field(r.body, "/id"), text_field(r.body, "/key_id"), text_field(r.body, "/secret")},
        text_field(r.body, "/clearing_account")};
  }
  // A wallet of `payer` with `amount` deposited by `bank` from its clearing account.
  std::string funded_wallet(const MerchantKeys& payer, const ProviderKeys& bank, i64 amount) {
    const std::string wallet = this->account(payer);
    const HttpResponse deposit =
        this->merchant_request(bank.keys, "POST", "/v1/transfers",
                               this->transfer_body(bank.clearing_account, wallet, amount));
    EXPECT_EQ(deposit.status, 201u) << deposit.body;
    return wallet;
  }
  HttpResponse withdraw(const MerchantKeys& payer, const std::string& wallet, i64 amount,
                        const std::string& extra = {}, std::vector<std::string> more = {}) {
    return this->merchant_request(
        payer, "POST", "/v1/withdrawals",
        R"({"account":")" + wallet + R"(","amount":)" + std::to_string(amount) +
            R"(,"currency":"USD","destination":"DE89370400440532013000")" + extra + "}",
        std::move(more));
  }
  HttpResponse result(const MerchantKeys& who, const std::string& withdrawal,
                      const std::string& outcome, std::vector<std::string> more = {}) {
    return this->merchant_request(who, "POST", "/v1/withdrawals/" + withdrawal + "/result",
                                  R"({"result":")" + outcome + R"(","provider_ref":"bank-77"})",
                                  std::move(more));
  }
};

using WalletServerTest = WalletTestBase<ServerTest>;
using WalletTwoGroupServerTest = WalletTestBase<TwoGroupServerTest>;

TEST_F(WalletServerTest, UsersSignRequestsAndOpenOnlyTheirOwnWallets) {
  const MerchantKeys payer = user("Ann");
  ASSERT_EQ(payer.id.substr(0, 4), "usr_");
  EXPECT_FALSE(payer.secret.empty());
  const MerchantKeys shop = merchant("Shop");
  const std::string shop_account = account(shop);

  // A wallet: kind user, owned by the user.
  const HttpResponse opened =
      merchant_request(payer, "POST", "/v1/accounts", R"({"currency":"USD"})");
  ASSERT_EQ(opened.status, 201u) << opened.body;
  EXPECT_EQ(text_field(opened.body, "/owner"), payer.id);
  EXPECT_EQ(text_field(opened.body, "/kind"), "user");
  const std::string wallet = text_field(opened.body, "/id");
  const HttpResponse as_merchant =
      merchant_request(payer, "POST", "/v1/accounts", R"({"currency":"USD","kind":"merchant"})");
  EXPECT_EQ(as_merchant.status, 400u);
  EXPECT_EQ(error_code(as_merchant), "invalid_account_kind");
  const HttpResponse for_shop = merchant_request(
      payer, "POST", "/v1/accounts", R"({"currency":"USD","owner":")" + shop.id + R"("})");
  EXPECT_EQ(for_shop.status, 404u) << for_shop.body;

  // Each sees its own only; ids do not leak (404, not 403).
  EXPECT_EQ(merchant_request(payer, "GET", "/v1/accounts/" + wallet).status, 200u);
  EXPECT_EQ(merchant_request(payer, "GET", "/v1/accounts/" + shop_account).status, 404u);
  EXPECT_EQ(merchant_request(shop, "GET", "/v1/accounts/" + wallet).status, 404u);
  const HttpResponse pay_shop =
      merchant_request(payer, "POST", "/v1/transfers", transfer_body(wallet, shop_account, 1));
  EXPECT_EQ(pay_shop.status, 404u) << pay_shop.body;

  // A user reads itself (signed, or with a JWT of its own secret), not another.
  const HttpResponse self = merchant_request(payer, "GET", "/v1/users/" + payer.id);
  ASSERT_EQ(self.status, 200u) << self.body;
  EXPECT_EQ(text_field(self.body, "/secret"), "<missing>");
  const std::string jwt =
      testing::make_jwt(payer.id, payer.secret, static_cast<long>(std::time(nullptr)) + 600);
  EXPECT_EQ(
      client_->request("GET", "/v1/accounts/" + wallet, {"Authorization: Bearer " + jwt}).status,
      200u);
  const MerchantKeys other = user("Bob");
  const HttpResponse not_yours = merchant_request(payer, "GET", "/v1/users/" + other.id);
  EXPECT_EQ(not_yours.status, 404u);
  EXPECT_EQ(error_code(not_yours), "user_not_found");
  // A user's number under a merchant's prefix names no one.
  EXPECT_EQ(admin_get("/v1/merchants/mer_" + payer.id.substr(4)).status, 404u);
  EXPECT_EQ(admin_get("/v1/users/" + payer.id).status, 200u);

  // Only operators onboard users and providers.
  EXPECT_EQ(merchant_request(shop, "POST", "/v1/users", "{}").status, 403u);
  EXPECT_EQ(merchant_request(payer, "POST", "/v1/providers", R"({"name":"x"})").status, 403u);
  // Users have no sub-merchants.
  EXPECT_EQ(
      admin_post("/v1/merchants", R"({"name":"x","parent_id":"mer_)" + payer.id.substr(4) + R"("})")
          .status,
      400u);
}

TEST_F(WalletServerTest, AWithdrawalHoldsThePayersMoneyUntilItsProviderDecides) {
  const ProviderKeys bank = provider("Bank");
  ASSERT_EQ(bank.keys.id.substr(0, 4), "prv_");
  ASSERT_EQ(bank.clearing_account.substr(0, 4), "acc_");
  const ProviderKeys other_bank = provider("Other bank");
  const MerchantKeys payer = user();
  const std::string wallet = funded_wallet(payer, bank, 1000);
  EXPECT_EQ(balance(wallet), 1000);
  EXPECT_EQ(balance(bank.clearing_account), -1000);  // what the provider owes paygate

  // The first provider in USD takes it (none named).
  const HttpResponse made = withdraw(payer, wallet, 300);
  ASSERT_EQ(made.status, 201u) << made.body;
  const std::string id = text_field(made.body, "/id");
  ASSERT_EQ(id.substr(0, 4), "wdr_");
  EXPECT_EQ(text_field(made.body, "/status"), "processing");
  EXPECT_EQ(text_field(made.body, "/provider"), bank.keys.id);
  EXPECT_EQ(text_field(made.body, "/destination"), "DE89370400440532013000");
  EXPECT_EQ(balance(wallet, "/available"), 700);
  EXPECT_EQ(balance(wallet, "/held"), 300);
  // Nor can the payer take it back, with the transfer routes or a result of its own.
  const std::string transfer = "trf_" + id.substr(4);
  EXPECT_EQ(text_field(made.body, "/transfer"), transfer);
  for (const std::string route : {"/void", "/post"}) {
    const HttpResponse taken = merchant_request(payer, "POST", "/v1/transfers/" + transfer + route);
    EXPECT_EQ(taken.status, 403u) << route << " " << taken.body;
    EXPECT_EQ(error_code(taken), "awaits_provider");
  }
  const HttpResponse by_payer = result(payer, id, "failed");
  EXPECT_EQ(by_payer.status, 403u);
  EXPECT_EQ(error_code(by_payer), "awaits_provider");
  // Another provider does not even see it.
  const HttpResponse by_other = result(other_bank.keys, id, "success");
  EXPECT_EQ(by_other.status, 404u);
  EXPECT_EQ(error_code(by_other), "withdrawal_not_found");
  EXPECT_EQ(merchant_request(other_bank.keys, "GET", "/v1/withdrawals/" + id).status, 404u);
  EXPECT_EQ(balance(wallet, "/held"), 300);

  // The provider paid out: the money reaches its clearing account, once.
  const HttpResponse done = result(bank.keys, id, "success", {"Idempotency-Key: result-1"});
  ASSERT_EQ(done.status, 200u) << done.body;
  EXPECT_EQ(text_field(done.body, "/status"), "success");
  EXPECT_EQ(text_field(done.body, "/provider_ref"), "bank-77");
  const HttpResponse again = result(bank.keys, id, "success", {"Idempotency-Key: result-1"});
  EXPECT_EQ(again.status, 200u);
  EXPECT_EQ(again.body, done.body);
  const HttpResponse late = result(bank.keys, id, "failed");
  EXPECT_EQ(late.status, 409u);
  EXPECT_EQ(error_code(late), "invalid_withdrawal_state");
  EXPECT_EQ(balance(wallet), 700);
  EXPECT_EQ(balance(wallet, "/held"), 0);
  EXPECT_EQ(balance(bank.clearing_account), -700);

  const HttpResponse seen = merchant_request(payer, "GET", "/v1/withdrawals/" + id);
  ASSERT_EQ(seen.status, 200u) << seen.body;
  EXPECT_EQ(text_field(seen.body, "/status"), "success");
  EXPECT_EQ(merchant_request(bank.keys, "GET", "/v1/withdrawals/" + id).status, 200u);
  // A provider deposits into merchants' and users' accounts, at once; not into a system
  // account or another provider's, and it places no holds toward others.
  const std::string treasury = system_account();
  for (const std::string& to : {treasury, other_bank.clearing_account}) {
    const HttpResponse refused = merchant_request(bank.keys, "POST", "/v1/transfers",
                                                  transfer_body(bank.clearing_account, to, 1));
    EXPECT_EQ(refused.status, 404u) << refused.body;
  }
  const HttpResponse held =
      merchant_request(bank.keys, "POST", "/v1/transfers",
                       transfer_body(bank.clearing_account, wallet, 1, R"(,"pending":true)"));
  EXPECT_EQ(held.status, 404u) << held.body;
  // An ordinary hold is no withdrawal.
  const MerchantKeys shop = merchant("Shop");
  const std::string a = account(shop), b = account(shop);
  fund(system_account(), a, 10);
  const HttpResponse hold =
      merchant_request(shop, "POST", "/v1/transfers", transfer_body(a, b, 5, R"(,"pending":true)"));
  ASSERT_EQ(hold.status, 201u);
  EXPECT_EQ(admin_get("/v1/withdrawals/wdr_" + text_field(hold.body, "/id").substr(4)).status,
            404u);
}

// A withdrawal's destination and its provider's reference are journaled with the
// commands that hold and post it (docs/JOURNAL.md, "Annotations").
TEST_F(WalletServerTest, AWithdrawalsDestinationAndProviderRefAreJournaled) {
  const ProviderKeys bank = provider("Bank");
  const MerchantKeys payer = user();
  const std::string wallet = funded_wallet(payer, bank, 1000);
  const HttpResponse made = withdraw(payer, wallet, 300);
  ASSERT_EQ(made.status, 201u) << made.body;
  ASSERT_EQ(result(bank.keys, text_field(made.body, "/id"), "success").status, 200u);
  server_.stop(SIGKILL);
  const std::vector<std::string> said = journaled_annotations();
  ASSERT_EQ(said.size(), 2u);
  EXPECT_TRUE(said[0].starts_with("7 DE89370400440532013000 | hold ")) << said[0];
  EXPECT_TRUE(said[0].find(" amount=300 ") != std::string::npos) << said[0];
  EXPECT_TRUE(said[1].starts_with("8 bank-77 | post ")) << said[1];
  start();
  EXPECT_EQ(balance(wallet), 700);
}

TEST_F(WalletServerTest, AFailedOrExpiredWithdrawalGivesTheMoneyBack) {
  const ProviderKeys bank = provider();
  const MerchantKeys payer = user();
  const std::string wallet = funded_wallet(payer, bank, 500);

  const HttpResponse made = withdraw(payer, wallet, 200);
  ASSERT_EQ(made.status, 201u) << made.body;
  const HttpResponse failed = result(bank.keys, text_field(made.body, "/id"), "failed");
  ASSERT_EQ(failed.status, 200u) << failed.body;
  EXPECT_EQ(text_field(failed.body, "/status"), "failed");
  EXPECT_EQ(balance(wallet, "/available"), 500);
  EXPECT_EQ(balance(bank.clearing_account), -500);

  // Its timeout passes: the group's ticks release it, and a late result changes nothing.
  // Only an operator chooses a timeout (a payer's short one could outrun the payout).
  const HttpResponse chosen = withdraw(payer, wallet, 100, R"(,"timeout_s":1)");
  EXPECT_EQ(chosen.status, 403u) << chosen.body;
  EXPECT_EQ(error_code(chosen), "operator_only");
  const HttpResponse brief = admin_post(
      "/v1/withdrawals", R"({"account":")" + wallet +
                             R"(","amount":100,"currency":"USD","destination":"x","timeout_s":1})");
  ASSERT_EQ(brief.status, 201u) << brief.body;
  const std::string id = text_field(brief.body, "/id");
  std::string status;
  for (auto deadline = std::chrono::steady_clock::now() + 60s;
       std::chrono::steady_clock::now() < deadline; std::this_thread::sleep_for(100ms)) {
    status = text_field(merchant_request(payer, "GET", "/v1/withdrawals/" + id).body, "/status");
    if (status != "processing") break;
  }
  EXPECT_EQ(status, "timeout");
  const HttpResponse late = result(bank.keys, id, "success");
  EXPECT_EQ(late.status, 409u) << late.body;
  EXPECT_EQ(error_code(late), "invalid_withdrawal_state");
  EXPECT_EQ(balance(wallet, "/available"), 500);
  EXPECT_EQ(balance(wallet, "/held"), 0);
}

TEST_F(WalletServerTest, AWithdrawalRetriedOrReplayedHoldsOnceAcrossARestart) {
  const ProviderKeys bank = provider();
  const MerchantKeys payer = user();
  const std::string wallet = funded_wallet(payer, bank, 1000);
  const HttpResponse first = withdraw(payer, wallet, 400, {}, {"Idempotency-Key: w-1"});
  ASSERT_EQ(first.status, 201u) << first.body;
  const HttpResponse retry = withdraw(payer, wallet, 400, {}, {"Idempotency-Key: w-1"});
  EXPECT_EQ(retry.status, 201u);
  EXPECT_EQ(text_field(retry.body, "/id"), text_field(first.body, "/id"));
  // The same key for another destination is another request.
  const HttpResponse elsewhere = merchant_request(
      payer, "POST", "/v1/withdrawals",
      R"({"account":")" + wallet +
          R"(","amount":400,"currency":"USD","destination":"FR7630006000011234567890189"})",
      {"Idempotency-Key: w-1"});
  EXPECT_EQ(elsewhere.status, 409u);
  EXPECT_EQ(error_code(elsewhere), "idempotency_key_reused");
  // A captured signed request sent again, without a key.
  const std::string body =
      R"({"account":")" + wallet +
      R"(","amount":50,"currency":"USD","destination":"DE89370400440532013000"})";
  const auto headers =
      testing::signed_headers(payer.key_id, payer.secret, "POST", "/v1/withdrawals", body);
  EXPECT_EQ(client_->request("POST", "/v1/withdrawals", headers, body).status, 201u);
  EXPECT_EQ(balance(wallet, "/held"), 450);

  restart(SIGKILL);
  const HttpResponse replayed = client_->request("POST", "/v1/withdrawals", headers, body);
  EXPECT_EQ(replayed.status, 401u) << replayed.body;
  EXPECT_EQ(error_code(replayed), "signature_replayed");
  const HttpResponse after = withdraw(payer, wallet, 400, {}, {"Idempotency-Key: w-1"});
  EXPECT_EQ(after.status, 201u) << after.body;
  EXPECT_EQ(text_field(after.body, "/id"), text_field(first.body, "/id"));
  EXPECT_EQ(balance(wallet, "/held"), 450);
  EXPECT_EQ(balance(wallet), 1000);

  // The registry kept both principals, their kinds and keys.
  EXPECT_EQ(merchant_request(payer, "GET", "/v1/users/" + payer.id).status, 200u);
  const HttpResponse bank_seen =
      merchant_request(bank.keys, "GET", "/v1/providers/" + bank.keys.id);
  ASSERT_EQ(bank_seen.status, 200u) << bank_seen.body;
  EXPECT_EQ(text_field(bank_seen.body, "/clearing_account"), bank.clearing_account);
  const HttpResponse done =
      result(bank.keys, text_field(first.body, "/id"), "success", {"Idempotency-Key: r-1"});
  EXPECT_EQ(done.status, 200u) << done.body;
  restart(SIGKILL);
  const HttpResponse done_again =
      result(bank.keys, text_field(first.body, "/id"), "success", {"Idempotency-Key: r-1"});
  EXPECT_EQ(done_again.status, 200u) << done_again.body;
  EXPECT_EQ(done_again.body, done.body);
  EXPECT_EQ(balance(wallet), 600);
  EXPECT_EQ(balance(bank.clearing_account), -600);
}

TEST_F(WalletServerTest, ProvidersAreOnboardedOnceAndWithdrawalsFindOne) {
  // No provider in USD yet.
  const MerchantKeys payer = user();
  const std::string wallet = account(payer);
  const HttpResponse none = withdraw(payer, wallet, 1);
  EXPECT_EQ(none.status, 422u) << none.body;
  EXPECT_EQ(error_code(none), "no_provider");

  const HttpResponse made = admin_post("/v1/providers", R"({"name":"Euro bank","currency":"EUR"})",
                                       {"Idempotency-Key: p-1"});
  ASSERT_EQ(made.status, 201u) << made.body;
  EXPECT_FALSE(text_field(made.body, "/secret").empty());
  EXPECT_EQ(text_field(made.body, "/currency"), "EUR");
  const HttpResponse again = admin_post("/v1/providers", R"({"name":"Euro bank","currency":"EUR"})",
                                        {"Idempotency-Key: p-1"});
  EXPECT_EQ(again.status, 201u);
  EXPECT_EQ(text_field(again.body, "/id"), text_field(made.body, "/id"));
  EXPECT_EQ(text_field(again.body, "/secret"), "<missing>");  // shown once
  EXPECT_EQ(text_field(again.body, "/clearing_account"),
            text_field(made.body, "/clearing_account"));
  const HttpResponse clearing =
      admin_get("/v1/accounts/" + text_field(made.body, "/clearing_account"));
  EXPECT_EQ(text_field(clearing.body, "/kind"), "system");
  EXPECT_EQ(text_field(clearing.body, "/owner"), text_field(made.body, "/id"));

  // A named provider must pay out in the withdrawal's currency.
  const HttpResponse wrong =
      withdraw(payer, wallet, 1, R"(,"provider":")" + text_field(made.body, "/id") + R"(")");
  EXPECT_EQ(wrong.status, 400u) << wrong.body;
  EXPECT_EQ(error_code(wrong), "currency_mismatch");
  const HttpResponse unknown = withdraw(payer, wallet, 1, R"(,"provider":"prv_0000800000000099")");
  EXPECT_EQ(unknown.status, 404u) << unknown.body;
  EXPECT_EQ(error_code(unknown), "provider_not_found");
  // Still none in USD: the EUR one is not taken for it.
  EXPECT_EQ(error_code(withdraw(payer, wallet, 1)), "no_provider");
  const HttpResponse missing =
      merchant_request(payer, "POST", "/v1/withdrawals",
                       R"({"account":")" + wallet + R"(","amount":1,"currency":"USD"})");
  EXPECT_EQ(missing.status, 400u);
  EXPECT_EQ(error_code(missing), "missing_field");
}

TEST_F(WalletTwoGroupServerTest, AnOrderPaidFromAWalletInAnotherGroupIsPaidAndRefundedOnce) {
  // Principals are spread round-robin: the user in group 0, the provider in group 1, a
  // filler in group 0, the shop in group 1 (an order lives in its account's group).
  const MerchantKeys payer = user();
  const ProviderKeys bank = provider();
  (void)merchant("Filler");
  const MerchantKeys shop = merchant("Shop");
  const std::string wallet = funded_wallet(payer, bank, 800);
  const std::string shop_account = account(shop);
  ASSERT_NE(wallet.substr(4, 4), shop_account.substr(4, 4)) << wallet << " " << shop_account;
  const auto order = [&](const std::string& ref, i64 amount) {
    const HttpResponse made =
        merchant_request(shop, "POST", "/v1/orders",
                         R"({"merchant_ref":")" + ref + R"(","amount":)" + std::to_string(amount) +
                             R"(,"currency":"USD","account":")" + shop_account + "\"}");
    EXPECT_EQ(made.status, 201u) << made.body;
    return std::pair{text_field(made.body, "/id"), text_field(made.body, "/signature")};
  };
  const auto checkout = [&](const std::pair<std::string, std::string>& o,
                            std::vector<std::string> more = {}) {
    return merchant_request(payer, "POST", "/v1/orders/" + o.first + "/checkout",
                            R"({"signature":")" + o.second +
                                R"(","method":"wallet","payer_account":")" + wallet + R"("})",
                            std::move(more));
  };
  const auto refund = [&](const std::string& id, const std::string& body,
                          std::vector<std::string> more = {}) {
    return merchant_request(shop, "POST", "/v1/orders/" + id + "/refunds", body, std::move(more));
  };

  // Paid: the answer comes when the order's group has marked it paid, durably.
  const auto far = order("far", 100);
  const HttpResponse paid = checkout(far, {"Idempotency-Key: far-1"});
  ASSERT_EQ(paid.status, 200u) << paid.body;
  EXPECT_EQ(text_field(paid.body, "/status"), "success");
  EXPECT_EQ(text_field(paid.body, "/method"), "wallet");
  EXPECT_EQ(text_field(paid.body, "/payer_account"), wallet);
  EXPECT_EQ(balance(wallet), 700);
  EXPECT_EQ(balance(shop_account), 100);
  // A retry, and a retry after a restart, answer the same and move nothing.
  for (int round = 0; round < 2; ++round) {
    const HttpResponse again = checkout(far, {"Idempotency-Key: far-1"});
    EXPECT_EQ(again.status, 200u) << again.body;
    EXPECT_EQ(text_field(again.body, "/status"), "success");
    EXPECT_EQ(balance(wallet), 700);
    EXPECT_EQ(balance(shop_account), 100);
    if (round == 0) restart(SIGKILL);
  }
  // The payer sees the order it paid; another checkout of it is refused, with or
  // without a key, and the payer keeps its money.
  const HttpResponse seen = merchant_request(payer, "GET", "/v1/orders/" + far.first);
  EXPECT_EQ(seen.status, 200u) << seen.body;
  for (const std::vector<std::string>& more :
       {std::vector<std::string>{"Idempotency-Key: far-2"}, std::vector<std::string>{}}) {
    const HttpResponse twice = checkout(far, more);
    EXPECT_EQ(twice.status, 409u) << twice.body;
    EXPECT_EQ(error_code(twice), "invalid_order_state");
    EXPECT_NE(twice.body.find("success"), std::string::npos) << twice.body;
  }
  EXPECT_EQ(balance(wallet), 700);
  EXPECT_EQ(balance(wallet, "/available"), 700);

  // Refunds reach the wallet in the other group: a part (retried), then the rest.
  const HttpResponse part =
      refund(far.first, R"({"amount":40,"reason":"broken"})", {"Idempotency-Key: back-1"});
  ASSERT_EQ(part.status, 201u) << part.body;
  EXPECT_EQ(number_field(part.body, "/amount"), 40);
  const HttpResponse part_again =
      refund(far.first, R"({"amount":40,"reason":"broken"})", {"Idempotency-Key: back-1"});
  EXPECT_EQ(part_again.status, 201u) << part_again.body;
  EXPECT_EQ(text_field(part_again.body, "/id"), text_field(part.body, "/id"));
  EXPECT_EQ(balance(wallet), 740);
  EXPECT_EQ(balance(shop_account), 60);
  EXPECT_EQ(number_field(part_again.body, "/amount"), 40);
  EXPECT_EQ(number_field(part_again.body, "/amount_refunded"), 40);
  // "The rest", retried: the same refund, of what the rest was the first time.
  for (int round = 0; round < 2; ++round) {
    const HttpResponse rest = refund(far.first, "{}", {"Idempotency-Key: back-2"});
    ASSERT_EQ(rest.status, 201u) << rest.body;
    EXPECT_EQ(number_field(rest.body, "/amount"), 60);
    EXPECT_EQ(number_field(rest.body, "/amount_refunded"), 100);
  }
  EXPECT_EQ(balance(wallet), 800);
  EXPECT_EQ(balance(shop_account), 0);
  EXPECT_EQ(number_field(admin_get("/v1/orders/" + far.first).body, "/amount_refunded"), 100);
  const HttpResponse more = refund(far.first, R"({"amount":1})");
  EXPECT_EQ(more.status, 422u) << more.body;
  EXPECT_EQ(error_code(more), "refund_exceeds_order");

  // Short of funds: refused where the wallet is, the order still open.
  const auto big = order("big", 5000);
  const HttpResponse poor = checkout(big, {"Idempotency-Key: big-1"});
  EXPECT_EQ(poor.status, 422u) << poor.body;
  EXPECT_EQ(error_code(poor), "insufficient_funds");
  EXPECT_EQ(text_field(admin_get("/v1/orders/" + big.first).body, "/status"), "created");
  // Cancelled before the checkout: the wallet's group holds the money all the same
  // (it cannot see the order), the order's group refuses the credit, and the hold is
  // released.
  const auto gone = order("gone", 50);
  ASSERT_EQ(merchant_request(shop, "POST", "/v1/orders/" + gone.first + "/cancel", "{}").status,
            200u);
  const HttpResponse late = checkout(gone, {"Idempotency-Key: gone-1"});
  EXPECT_EQ(late.status, 409u) << late.body;
  EXPECT_EQ(error_code(late), "invalid_order_state");
  EXPECT_NE(late.body.find("cancelled"), std::string::npos) << late.body;
  EXPECT_EQ(balance(wallet), 800);
  EXPECT_EQ(balance(wallet, "/available"), 800);

  // The connection that carried all of this serves ordinary steps as ordinary ones
  // (its pipeline's slots are reused, [http] pipeline_max = 64 of them in turn: three
  // dozen rounds of three requests pass every one): a cancel of an order of the
  // shop's own group is answered as such, a second one refused, a refund of it too.
  for (int round = 0; round < 36 && !HasFailure(); ++round) {
    const auto near = order("near-" + std::to_string(round), 30);
    const std::string path = "/v1/orders/" + near.first;
    const HttpResponse first = merchant_request(shop, "POST", path + "/cancel", "{}");
    EXPECT_EQ(first.status, 200u) << first.body;
    const HttpResponse again = merchant_request(shop, "POST", path + "/cancel", "{}");
    EXPECT_EQ(again.status, 409u) << again.body;
    EXPECT_EQ(error_code(again), "invalid_order_state");
  }
}

TEST_F(WalletTwoGroupServerTest, AWithdrawalBetweenGroupsReachesTheClearingAccountOnce) {
  // Principals are spread round-robin: the user in group 0, the provider in group 1.
  const MerchantKeys payer = user();
  const ProviderKeys bank = provider();
  ASSERT_NE(payer.id.substr(4, 4), bank.keys.id.substr(4, 4)) << payer.id << " " << bank.keys.id;
  const std::string wallet = funded_wallet(payer, bank, 800);
  EXPECT_EQ(balance(wallet), 800);

  const HttpResponse made = withdraw(payer, wallet, 300);
  ASSERT_EQ(made.status, 201u) << made.body;
  const std::string id = text_field(made.body, "/id");
  const HttpResponse done = result(bank.keys, id, "success", {"Idempotency-Key: between-1"});
  ASSERT_EQ(done.status, 200u) << done.body;
  EXPECT_EQ(text_field(done.body, "/status"), "success");
  const HttpResponse again = result(bank.keys, id, "success", {"Idempotency-Key: between-1"});
  EXPECT_EQ(again.status, 200u) << again.body;
  EXPECT_EQ(balance(wallet), 500);
  EXPECT_EQ(balance(bank.clearing_account), -500);
  const HttpResponse late = result(bank.keys, id, "failed");
  EXPECT_EQ(late.status, 409u) << late.body;
  EXPECT_EQ(error_code(late), "invalid_withdrawal_state");

  // A failed one between groups is released where it was held.
  const HttpResponse second = withdraw(payer, wallet, 100);
  ASSERT_EQ(second.status, 201u) << second.body;
  ASSERT_EQ(result(bank.keys, text_field(second.body, "/id"), "failed").status, 200u);
  EXPECT_EQ(balance(wallet, "/available"), 500);
}

// A provider's deposit into a wallet of another group, signed by a clock 200 s ahead (so
// stamped after the restart below) and keyed: its replay after a crash, with the key
// kept, dropped or changed, is refused by the ledger (which took the signature with the
// key), and a retry signed again under the key answers the deposit it made.
TEST_F(WalletTwoGroupServerTest, AKeyedDepositBetweenGroupsReplayedAfterACrashMovesNothing) {
  const MerchantKeys payer = user();
  const ProviderKeys bank = provider();
  ASSERT_NE(payer.id.substr(4, 4), bank.keys.id.substr(4, 4)) << payer.id << " " << bank.keys.id;
  const std::string wallet = account(payer);
  const std::string body = transfer_body(bank.clearing_account, wallet, 250);
  const std::vector<std::string> captured =
      testing::signed_headers(bank.keys.key_id, bank.keys.secret, "POST", "/v1/transfers", body,
                              std::to_string(std::time(nullptr) + 200) + ".5");
  const auto send = [&](const std::string& key) {
    std::vector<std::string> headers = captured;
    if (!key.empty()) headers.push_back("Idempotency-Key: " + key);
    return client_->request("POST", "/v1/transfers", headers, body);
  };
  const HttpResponse first = send("deposit-1");
  ASSERT_EQ(first.status, 201u) << first.body;
  EXPECT_NE(first.body.find(R"("between_groups":true)"), std::string::npos) << first.body;
  EXPECT_EQ(balance(wallet), 250);
  restart(SIGKILL);
  for (const char* key : {"", "deposit-1", "deposit-2"}) {
    const HttpResponse replay = send(key);
    EXPECT_EQ(replay.status, 401u) << "key '" << key << "': " << replay.body;
    EXPECT_EQ(error_code(replay), "signature_replayed");
  }
  EXPECT_EQ(balance(wallet), 250);
  EXPECT_EQ(balance(bank.clearing_account), -250);
  const HttpResponse retry =
      merchant_request(bank.keys, "POST", "/v1/transfers", body, {"Idempotency-Key: deposit-1"});
  EXPECT_EQ(retry.status, 201u) << retry.body;
  EXPECT_EQ(text_field(retry.body, "/id"), text_field(first.body, "/id"));
  EXPECT_EQ(balance(wallet), 250);
}

}  // namespace
}  // namespace paygate::api
