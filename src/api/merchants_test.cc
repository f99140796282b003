// The registry of principals: kinds, ids, a provider's clearing account, and the file
// that keeps them (read back, and older files without kinds).
#include "api/merchants.h"

#include <gtest/gtest.h>

#include <fmt/format.h>

#include <fstream>

#include "api/id_text.h"
#include "api/render.h"
#include "base/durable_file.h"
#include "base/ids.h"
#include "base/temp_dir.h"

namespace paygate::api {
namespace {

// Account `serial`'s id in `group` (region 0).
u64 in_group(u32 group, u64 serial) {
  return make_id(IdPrefix{0, group}, serial);
}

StoredReply reply_of(const Merchant& m, bool with_secret) {
  StoredReply r{.content_hash = 0, .status = 201, .body = {}};
  render_merchant(r.body, m, with_secret);
  return r;
}

class MerchantRegistryTest : public ::testing::Test {
 protected:
  std::unique_ptr<MerchantRegistry> open() {
    auto opened = MerchantRegistry::open(dir_.path() / "merchants.json", 0, 2);
    EXPECT_TRUE(opened.ok()) << opened.status().to_string();
    return opened.ok() ? std::move(opened.value()) : nullptr;
  }
  u64 make(MerchantRegistry& registry, PrincipalKind kind, const IdempotencyKey& key = {}) {
    MerchantCreate request;
    request.name = "x";
    StoredReply reply;
    Status failure;
    u64 id = 0;
    EXPECT_EQ(registry.create(request, kind, key, 1, reply_of, &reply, &failure, &id),
              ResultCode::ok);
    return id;
  }
  TempDir dir_;
};

TEST_F(MerchantRegistryTest, KindsShareOneSerialSpaceAndSurviveAReopen) {
  auto registry = open();
  const u64 merchant = make(*registry, PrincipalKind::merchant);
  const u64 user = make(*registry, PrincipalKind::user);
  const u64 provider = make(*registry, PrincipalKind::provider);
  EXPECT_EQ(principal_kind(merchant), PrincipalKind::merchant);
  EXPECT_EQ(principal_kind(user), PrincipalKind::user);
  EXPECT_EQ(principal_kind(provider), PrincipalKind::provider);
  EXPECT_EQ(id_serial(user) & ~(u64{3} << kPrincipalKindShift), id_serial(merchant) + 1);
  EXPECT_EQ(principal_id_text(user).substr(0, 4), "usr_");
  // Spread round-robin over the two groups, whatever the kind.
  EXPECT_EQ(id_prefix(merchant).group, 0u);
  EXPECT_EQ(id_prefix(user).group, 1u);
  EXPECT_EQ(id_prefix(provider).group, 0u);
  // Only merchants have sub-merchants.
  MerchantCreate child;
  child.name = "child";
  child.parent_id = user;
  StoredReply reply;
  Status failure;
  EXPECT_EQ(registry->create(child, PrincipalKind::merchant, {}, 1, reply_of, &reply, &failure),
            ResultCode::merchant_not_found);

  // A provider's onboarding: no reply is kept until its clearing account is recorded.
  const IdempotencyKey key{1, 2};
  const u64 keyed = make(*registry, PrincipalKind::provider, key);
  {  // Until its clearing account is recorded, the same key makes no second provider.
    MerchantCreate again;
    again.name = "x";
    StoredReply ignored;
    Status unused;
    EXPECT_EQ(registry->create(again, PrincipalKind::provider, key, 1, reply_of, &ignored, &unused),
              ResultCode::overloaded);
  }
  EXPECT_EQ(registry->default_provider(Currency::from("USD")), nullptr);
  ASSERT_EQ(
      registry->set_clearing_accounts(keyed, {in_group(0, 77), in_group(1, 77)},
                                      Currency::from("USD"), key, 1, reply_of, &reply, &failure),
      ResultCode::ok);
  EXPECT_NE(reply.body.find("\"secret\""), std::string::npos);  // shown this once
  u64 replayed = 1;
  MerchantCreate request;
  request.name = "x";
  EXPECT_EQ(registry->create(request, PrincipalKind::provider, key, 1, reply_of, &reply, &failure,
                             &replayed),
            ResultCode::ok);
  EXPECT_EQ(replayed, 0u);
  EXPECT_EQ(reply.body.find("\"secret\""), std::string::npos);
  EXPECT_EQ(
      registry->set_clearing_accounts(user, {in_group(0, 78), in_group(1, 78)},
                                      Currency::from("USD"), {}, 1, reply_of, &reply, &failure),
      ResultCode::merchant_not_found);
  ASSERT_EQ(
      registry->set_clearing_accounts(provider, {in_group(0, 79), in_group(1, 79)},
                                      Currency::from("USD"), {}, 1, reply_of, &reply, &failure),
      ResultCode::ok);
  // The oldest provider in the currency takes withdrawals.
  ASSERT_NE(registry->default_provider(Currency::from("USD")), nullptr);
  EXPECT_EQ(registry->default_provider(Currency::from("USD"))->id, provider);
  EXPECT_EQ(registry->default_provider(Currency::from("EUR")), nullptr);

  registry.reset();
  registry = open();
  ASSERT_NE(registry->find(user), nullptr);
  EXPECT_EQ(registry->find(user)->kind, PrincipalKind::user);
  {  // One clearing account per group; the provider's own group's is its clearing account.
    const MerchantRef bank = registry->find(keyed);
    EXPECT_EQ(bank->clearing_by_group, (std::vector<u64>{in_group(0, 77), in_group(1, 77)}));
    EXPECT_EQ(bank->clearing_account, in_group(bank->group, 77));
    EXPECT_EQ(bank->clearing_account_in(0), in_group(0, 77));
    EXPECT_EQ(bank->clearing_account_in(1), in_group(1, 77));
    EXPECT_EQ(bank->clearing_account_in(2), 0u);
  }
  EXPECT_EQ(registry->find(keyed)->clearing_currency, Currency::from("USD"));
  EXPECT_EQ(registry->find(merchant)->kind, PrincipalKind::merchant);
  EXPECT_EQ(registry->find_by_key(registry->find(user)->key_id)->id, user);

  // A file written before clearing accounts per group: the one account serves the
  // provider's own group, and no other.
  registry.reset();
  const std::filesystem::path file = dir_.path() / "merchants.json";
  std::string text = read_file(file).value();
  for (std::size_t at; (at = text.find(",\"clearing_accounts\":[")) != std::string::npos;) {
    text.erase(at, text.find(']', at) + 1 - at);
  }
  ASSERT_TRUE(write_file_durably(file, text, 0600).ok());
  registry = open();
  const MerchantRef bank = registry->find(keyed);
  EXPECT_TRUE(bank->clearing_by_group.empty());
  EXPECT_EQ(bank->clearing_account_in(bank->group), bank->clearing_account);
  EXPECT_EQ(bank->clearing_account_in(1 - bank->group), 0u);
  // Its answer lists that one account, in its group.
  EXPECT_NE(
      reply_of(*bank, false)
          .body.find(fmt::format(R"("clearing_accounts":[{{"group":{},"account":"{}"}}])",
                                 bank->group, id_text(IdKind::account, bank->clearing_account))),
      std::string::npos)
      << reply_of(*bank, false).body;

  // A list that leaves out the provider's clearing account, or names an account of
  // another group at a group's place, is a damaged file.
  registry.reset();
  const std::string home = fmt::format("\"clearing_account\":{},", bank->clearing_account);
  ASSERT_NE(text.find(home), std::string::npos);
  // The last: its own account in place, the other group's place holding an account of
  // the provider's own group.
  const u32 home_group = bank->group;
  const u64 stray = in_group(home_group, 99);
  const auto with_home = home_group == 0 ? std::pair{bank->clearing_account, stray}
                                         : std::pair{stray, bank->clearing_account};
  for (const auto& [first, second] : {std::pair{in_group(0, 5), in_group(1, 6)},
                                      std::pair{in_group(1, 77), in_group(0, 77)}, with_home}) {
    std::string damaged = text;
    damaged.insert(damaged.find(home) + home.size(),
                   fmt::format("\"clearing_accounts\":[{},{}],", first, second));
    ASSERT_TRUE(write_file_durably(file, damaged, 0600).ok());
    EXPECT_FALSE(MerchantRegistry::open(file, 0, 2).ok());
  }
}

TEST_F(MerchantRegistryTest, RiskRulesAreAMerchantsAndSurviveAReopen) {
  auto registry = open();
  const u64 merchant = make(*registry, PrincipalKind::merchant);
  const u64 user = make(*registry, PrincipalKind::user);
  RiskSet set;
  set.has_max_amount = true;
  set.max_amount = 900;
  set.has_blocked_payers = true;
  set.blocked_payers = {user};
  RiskRules now;
  Status failure;
  ASSERT_EQ(registry->set_risk(merchant, set, &now, &failure), ResultCode::ok);
  EXPECT_EQ(now.max_amount, 900u);
  EXPECT_TRUE(now.blocks(user));
  EXPECT_EQ(registry->set_risk(user, set, &now, &failure), ResultCode::merchant_not_found);
  // Only what is given changes.
  RiskSet velocity;
  velocity.has_payer_velocity = true;
  velocity.max_checkouts_per_payer_per_minute = 4;
  ASSERT_EQ(registry->set_risk(merchant, velocity, &now, &failure), ResultCode::ok);
  EXPECT_EQ(now.max_amount, 900u);
  EXPECT_EQ(now.max_checkouts_per_payer_per_minute, 4u);

  registry.reset();
  registry = open();
  const RiskRules& kept = registry->find(merchant)->risk;
  EXPECT_EQ(kept.max_amount, 900u);
  EXPECT_EQ(kept.max_checkouts_per_payer_per_minute, 4u);
  EXPECT_TRUE(kept.blocks(user));
  EXPECT_FALSE(kept.blocks(merchant));
  EXPECT_FALSE(registry->find(user)->risk.any());
}

TEST_F(MerchantRegistryTest, AFileWithoutKindsHoldsMerchantsAndAMismatchIsDamage) {
  const auto write = [&](const std::string& entry) {
    std::ofstream(dir_.path() / "merchants.json")
        << R"({"version":1,"next_serial":3,"top_level":2,"merchants":[)" << entry
        << R"(],"replies":[]})";
  };
  write(
      R"({"id":1,"name":"a","parent_id":0,"region":0,"group":0,"key_id":"k1","secret":"s1","created_at":5})");
  auto registry = open();
  ASSERT_NE(registry, nullptr);
  EXPECT_EQ(registry->find(1)->kind, PrincipalKind::merchant);
  registry.reset();
  // A user's kind on a merchant's id.
  write(
      R"({"id":1,"name":"a","parent_id":0,"region":0,"group":0,"key_id":"k1","secret":"s1","created_at":5,"kind":1})");
  EXPECT_FALSE(MerchantRegistry::open(dir_.path() / "merchants.json", 0, 2).ok());
}

}  // namespace
}  // namespace paygate::api
