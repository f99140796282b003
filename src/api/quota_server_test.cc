// Per-merchant quotas against the real server (docs/API.md, "Quotas"): one merchant of
// a group can no longer fill the group's tables for the others (issue: with
// accounts_max = 64 one merchant opened 63 accounts and every other merchant of the
// group was then refused).
#include <gtest/gtest.h>

#include <string>

#include "api/server_fixture.h"

namespace paygate::api {
namespace {

class QuotaServerTest : public ServerTest {
 protected:
  // Small tables, so that a quarter of each (the default share) is a few.
  void SetUp() override {
    start("[ledger]\naccounts_max = 64\npending_max = 32\nidempotency_keys_max = 64\n");
  }
  HttpResponse quotas(const MerchantKeys& m) {
    return admin_get("/v1/merchants/" + m.id + "/quotas");
  }
  HttpResponse open_account(const MerchantKeys& m, const std::string& key = {}) {
    std::vector<std::string> more;
    if (!key.empty()) more.push_back("Idempotency-Key: " + key);
    return merchant_request(m, "POST", "/v1/accounts", R"({"currency":"USD"})", more);
  }
};

TEST_F(QuotaServerTest, OneMerchantCannotTakeTheGroupsAccountsFromAnother) {
  const MerchantKeys greedy = merchant("Greedy");
  const MerchantKeys other = merchant("Other");
  // The default share: a quarter of accounts_max.
  for (int i = 0; i < 16; ++i)
    ASSERT_EQ(open_account(greedy).status, 201u) << i;
  const HttpResponse refused = open_account(greedy);
  EXPECT_EQ(refused.status, 422u) << refused.body;
  EXPECT_EQ(error_code(refused), "quota_accounts");
  EXPECT_EQ(open_account(other).status, 201u);

  const HttpResponse seen = quotas(greedy);
  ASSERT_EQ(seen.status, 200u) << seen.body;
  EXPECT_EQ(text_field(seen.body, "/merchant"), greedy.id);
  EXPECT_EQ(number_field(seen.body, "/accounts/used"), 16);
  EXPECT_EQ(number_field(seen.body, "/accounts/limit"), 16);
  EXPECT_EQ(text_field(seen.body, "/accounts/source"), "group");
  EXPECT_EQ(number_field(seen.body, "/holds/limit"), 8);
  EXPECT_EQ(number_field(seen.body, "/idempotency_keys/limit"), 16);
  // A merchant reads its own quotas, not another's.
  EXPECT_EQ(merchant_request(greedy, "GET", "/v1/merchants/" + greedy.id + "/quotas").status, 200u);
  EXPECT_EQ(merchant_request(greedy, "GET", "/v1/merchants/" + other.id + "/quotas").status, 404u);
  EXPECT_EQ(metric("paygate_quota_refusals_total{quota=\"accounts\"}"), 1u);
}

TEST_F(QuotaServerTest, OperatorsSetAMerchantsLimitsAndTheyOutliveARestart) {
  const MerchantKeys shop = merchant("Shop");
  const std::string target = "/v1/merchants/" + shop.id + "/quotas";
  // Only operators set limits; bad bodies change nothing.
  EXPECT_EQ(merchant_request(shop, "POST", target, R"({"accounts":100})").status, 403u);
  EXPECT_EQ(admin_post(target, R"({"accounts":-1})").status, 400u);
  EXPECT_EQ(admin_post(target, R"({"acounts":3})").status, 400u);
  EXPECT_EQ(admin_post(target, R"({})").status, 400u);
  EXPECT_EQ(admin_post("/v1/merchants/mer_nope/quotas", R"({"accounts":1})").status, 404u);

  const HttpResponse set = admin_post(target, R"({"accounts":2,"holds":1})");
  ASSERT_EQ(set.status, 200u) << set.body;
  EXPECT_EQ(number_field(set.body, "/accounts/limit"), 2);
  EXPECT_EQ(text_field(set.body, "/accounts/source"), "merchant");
  EXPECT_EQ(text_field(set.body, "/idempotency_keys/source"), "group");  // absent: kept
  const std::string first = account(shop);
  const std::string other = account(shop);
  EXPECT_EQ(error_code(open_account(shop)), "quota_accounts");

  // One open hold at most; closing it gives the room back.
  fund(system_account(), first, 100);
  const auto hold = [&] {
    return merchant_request(shop, "POST", "/v1/transfers",
                            transfer_body(first, other, 5, R"(,"pending":true)"));
  };
  const HttpResponse held = hold();
  ASSERT_EQ(held.status, 201u) << held.body;
  const HttpResponse second = hold();
  EXPECT_EQ(second.status, 422u) << second.body;
  EXPECT_EQ(error_code(second), "quota_holds");

  // The limits are the group's journaled state: a restart keeps them and the use.
  restart();
  EXPECT_EQ(error_code(open_account(shop)), "quota_accounts");
  EXPECT_EQ(error_code(hold()), "quota_holds");
  ASSERT_EQ(merchant_request(shop, "POST",
                             "/v1/transfers/" + text_field(held.body, "/id") + "/void", "{}")
                .status,
            200u);
  EXPECT_EQ(hold().status, 201u);
  // null returns a limit to the group's default.
  const HttpResponse reset = admin_post(target, R"({"accounts":null})");
  ASSERT_EQ(reset.status, 200u) << reset.body;
  EXPECT_EQ(number_field(reset.body, "/accounts/limit"), 16);
  EXPECT_EQ(open_account(shop).status, 201u);
}

TEST_F(QuotaServerTest, KeysCountAgainstTheMerchantAndARetryStillAnswers) {
  const MerchantKeys shop = merchant("Keys");
  ASSERT_EQ(admin_post("/v1/merchants/" + shop.id + "/quotas", R"({"idempotency_keys":2})").status,
            200u);
  const HttpResponse made = open_account(shop, "k1");
  ASSERT_EQ(made.status, 201u);
  ASSERT_EQ(open_account(shop, "k2").status, 201u);
  const HttpResponse refused = open_account(shop, "k3");
  EXPECT_EQ(refused.status, 422u);
  EXPECT_EQ(error_code(refused), "quota_idempotency_keys");
  // A retry of a remembered key is answered as the first time, and nothing more is made.
  const HttpResponse again = open_account(shop, "k1");
  EXPECT_EQ(again.status, 201u);
  EXPECT_EQ(again.body, made.body);
  EXPECT_EQ(number_field(quotas(shop).body, "/accounts/used"), 2);
  EXPECT_EQ(number_field(quotas(shop).body, "/idempotency_keys/used"), 2);
  // A keyed batch takes its key with a claim, counted against the same merchant:
  // refused whole, with the quota's name (not as a failure to retry).
  const std::string a = text_field(made.body, "/id");
  const std::string b = text_field(open_account(shop, "k2").body, "/id");
  const HttpResponse claimed =
      merchant_request(shop, "POST", "/v1/batch",
                       R"({"operations":[{"op":"transfer","debit_account":")" + a +
                           R"(","credit_account":")" + b + R"(","amount":1,"currency":"USD"}]})",
                       {"Idempotency-Key: k5"});
  EXPECT_EQ(claimed.status, 422u) << claimed.body;
  EXPECT_EQ(error_code(claimed), "quota_idempotency_keys");
  // An empty batch is refused before it takes a key.
  const HttpResponse batch =
      merchant_request(shop, "POST", "/v1/batch", R"({"operations":[]})", {"Idempotency-Key: k4"});
  EXPECT_EQ(batch.status, 400u);  // refused before it takes a key
  EXPECT_EQ(number_field(quotas(shop).body, "/idempotency_keys/used"), 2);
}

// The defaults come from [quotas]; changing them takes effect at the next start.
TEST_F(QuotaServerTest, TheConfiguredDefaultsApplyFromTheNextStart) {
  const MerchantKeys shop = merchant("Configured");
  for (int i = 0; i < 16; ++i)
    ASSERT_EQ(open_account(shop).status, 201u) << i;
  EXPECT_EQ(error_code(open_account(shop)), "quota_accounts");
  ASSERT_EQ(server_.stop(SIGTERM), 0) << server_.log();
  start(
      "[ledger]\naccounts_max = 64\npending_max = 32\nidempotency_keys_max = 64\n"
      "[quotas]\naccounts = 20\n");
  EXPECT_EQ(number_field(quotas(shop).body, "/accounts/limit"), 20);
  for (int i = 0; i < 4; ++i)
    EXPECT_EQ(open_account(shop).status, 201u) << i;
  EXPECT_EQ(error_code(open_account(shop)), "quota_accounts");
}

// orders_max = 16: the default share is 4 orders held (open, or final and in memory).
class QuotaOrdersServerTest : public QuotaServerTest {
 protected:
  void SetUp() override { start("[orders]\norders_max = 16\n"); }
};

TEST_F(QuotaOrdersServerTest, AMerchantsOrdersStopAtItsShareOfTheOrderTable) {
  const MerchantKeys greedy = merchant("Greedy");
  const MerchantKeys other = merchant("Other");
  (void)account(greedy);
  (void)account(other);
  int next = 0;
  const auto order = [&](const MerchantKeys& m) {
    return merchant_request(
        m, "POST", "/v1/orders",
        R"({"merchant_ref":"q-)" + std::to_string(++next) + R"(","amount":5,"currency":"USD"})");
  };
  std::string first;
  for (int i = 0; i < 4; ++i) {
    const HttpResponse made = order(greedy);
    ASSERT_EQ(made.status, 201u) << made.body;
    if (i == 0) first = text_field(made.body, "/id");
  }
  const HttpResponse refused = order(greedy);
  EXPECT_EQ(refused.status, 422u) << refused.body;
  EXPECT_EQ(error_code(refused), "quota_orders");
  EXPECT_EQ(order(other).status, 201u);  // the others keep their share
  const HttpResponse seen = quotas(greedy);
  EXPECT_EQ(number_field(seen.body, "/orders/used"), 4);
  EXPECT_EQ(number_field(seen.body, "/orders/limit"), 4);
  EXPECT_EQ(text_field(seen.body, "/orders/source"), "group");
  // A cancelled order is still held (final_retained_s): it keeps its place.
  ASSERT_EQ(merchant_request(greedy, "POST", "/v1/orders/" + first + "/cancel", "{}").status, 200u);
  EXPECT_EQ(error_code(order(greedy)), "quota_orders");
  // An operator raises it; the limit and the use outlive a restart.
  const HttpResponse raised =
      admin_post("/v1/merchants/" + greedy.id + "/quotas", R"({"orders":5})");
  ASSERT_EQ(raised.status, 200u) << raised.body;
  EXPECT_EQ(text_field(raised.body, "/orders/source"), "merchant");
  EXPECT_EQ(order(greedy).status, 201u);
  restart();
  EXPECT_EQ(error_code(order(greedy)), "quota_orders");
  EXPECT_EQ(number_field(quotas(greedy).body, "/orders/used"), 5);
}

}  // namespace
}  // namespace paygate::api
