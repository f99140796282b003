// Every way a request can arrive twice, against the real server: a retry, the same key
// on another endpoint or in another group, a replayed signature, a restart between the
// two; and the bounded tables that remember keys and signatures refusing rather than
// forgetting (docs/API.md, "Idempotency" and "Security model").
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "api/server_fixture.h"

namespace paygate::api {
namespace {

using testing::signed_headers;

// A merchant with two funded accounts of its own.
struct Shop {
  MerchantKeys keys;
  std::string a, b;
};

class KeyTest : public ServerTest {
 protected:
  Shop shop(i64 funds = 1000) {
    Shop s{merchant("Shop"), {}, {}};
    s.a = account(s.keys);
    s.b = account(s.keys);
    fund(system_account(), s.a, funds);
    return s;
  }
  // The metric's value (the first series of that name and labels), or -1.
  i64 metric(const std::string& series) {
    const std::string page = client_->request("GET", "/metrics").body;
    const std::size_t at = page.find("\n" + series + " ");
    if (at == std::string::npos) return -1;
    return std::stoll(page.substr(at + series.size() + 2));
  }
  // Sends exactly these bytes (headers signed once) and answers what came back.
  HttpResponse send(const std::vector<std::string>& headers, const std::string& target,
                    const std::string& body) {
    return client_->request("POST", target, headers, body);
  }
};

// ---------------------------------------------------------------------------
// One key, one request (issue: one Idempotency-Key moved money twice across endpoints)

TEST_F(KeyTest, OneKeyNamesOneRequestOnEveryEndpoint) {
  const Shop s = shop();
  const std::string pay = transfer_body(s.a, s.b, 10);
  const std::string as_batch = R"({"operations":[{"op":"transfer",)" + pay.substr(1) + "]}";

  // A transfer under K, then the same transfer as a batch under K: refused, not moved.
  const HttpResponse paid =
      merchant_request(s.keys, "POST", "/v1/transfers", pay, {"Idempotency-Key: K"});
  ASSERT_EQ(paid.status, 201u) << paid.body;
  const std::vector<std::pair<std::string, std::string>> others = {
      {"/v1/batch", as_batch},
      {"/v1/batch", R"({"atomic":true,)" + as_batch.substr(1)},
      {"/v1/accounts", R"({"currency":"USD"})"}};
  for (const auto& [target, body] : others) {
    const HttpResponse again =
        merchant_request(s.keys, "POST", target, body, {"Idempotency-Key: K"});
    EXPECT_EQ(again.status, 409u) << target << " " << again.body;
    EXPECT_EQ(error_code(again), "idempotency_key_reused");
  }
  EXPECT_EQ(balance(s.a), 990);
  // The transfer's own retry still answers it.
  const HttpResponse retry =
      merchant_request(s.keys, "POST", "/v1/transfers", pay, {"Idempotency-Key: K"});
  EXPECT_EQ(retry.status, 201u);
  EXPECT_EQ(retry.body, paid.body);

  // An atomic batch under K2, then a non-atomic one under K2 (and the other way round
  // under K3): the second is refused whole.
  const std::string atomic = R"({"atomic":true,)" + as_batch.substr(1);
  ASSERT_EQ(merchant_request(s.keys, "POST", "/v1/batch", atomic, {"Idempotency-Key: K2"}).status,
            200u);
  const HttpResponse loose =
      merchant_request(s.keys, "POST", "/v1/batch", as_batch, {"Idempotency-Key: K2"});
  EXPECT_EQ(loose.status, 409u) << loose.body;
  ASSERT_EQ(merchant_request(s.keys, "POST", "/v1/batch", as_batch, {"Idempotency-Key: K3"}).status,
            200u);
  const HttpResponse tight =
      merchant_request(s.keys, "POST", "/v1/batch", atomic, {"Idempotency-Key: K3"});
  EXPECT_EQ(tight.status, 409u) << tight.body;
  // A batch's key on a transfer, on a hold's post, on an account.
  EXPECT_EQ(
      error_code(merchant_request(s.keys, "POST", "/v1/transfers", pay, {"Idempotency-Key: K3"})),
      "idempotency_key_reused");
  const HttpResponse hold = merchant_request(s.keys, "POST", "/v1/transfers",
                                             transfer_body(s.a, s.b, 5, R"(,"pending":true)"));
  ASSERT_EQ(hold.status, 201u);
  EXPECT_EQ(error_code(merchant_request(s.keys, "POST",
                                        "/v1/transfers/" + text_field(hold.body, "/id") + "/post",
                                        "{}", {"Idempotency-Key: K3"})),
            "idempotency_key_reused");
  EXPECT_EQ(balance(s.a), 1000 - 10 - 10 - 10);  // K, K2, K3: each once
  EXPECT_EQ(balance(s.a, "/held"), 5);

  // Across a restart, the same.
  restart(SIGKILL);
  EXPECT_EQ(merchant_request(s.keys, "POST", "/v1/batch", as_batch, {"Idempotency-Key: K"}).status,
            409u);
  EXPECT_EQ(merchant_request(s.keys, "POST", "/v1/batch", as_batch, {"Idempotency-Key: K3"}).status,
            200u);
  EXPECT_EQ(balance(s.a), 970);
}

// An operator's key is one key in every group (issue: the same key opened accounts in
// two groups, and moved money in both).
class TwoGroupKeyTest : public KeyTest {
 protected:
  void SetUp() override {
    extra_args_ = {"--groups", "2"};
    start();
  }
};

TEST_F(TwoGroupKeyTest, OperatorKeyIsOneKeyInEveryGroup) {
  const std::string in0 = R"({"currency":"USD","kind":"system","group":0})";
  const std::string in1 = R"({"currency":"USD","kind":"system","group":1})";
  const HttpResponse first = admin_post("/v1/accounts", in0, {"Idempotency-Key: open"});
  ASSERT_EQ(first.status, 201u) << first.body;
  EXPECT_EQ(admin_post("/v1/accounts", in0, {"Idempotency-Key: open"}).body, first.body);
  const HttpResponse other = admin_post("/v1/accounts", in1, {"Idempotency-Key: open"});
  EXPECT_EQ(other.status, 409u) << other.body;
  EXPECT_EQ(error_code(other), "idempotency_key_reused");

  // Transfers in each group under one key: the second is refused and moves nothing.
  const std::string s0 = text_field(first.body, "/id");
  const std::string s1 = text_field(admin_post("/v1/accounts", in1).body, "/id");
  const std::string u0 =
      text_field(admin_post("/v1/accounts", R"({"currency":"USD","group":0})").body, "/id");
  const std::string u1 =
      text_field(admin_post("/v1/accounts", R"({"currency":"USD","group":1})").body, "/id");
  for (int round = 0; round < 2; ++round) {
    const HttpResponse move =
        admin_post("/v1/transfers", transfer_body(s1, u1, 7), {"Idempotency-Key: move"});
    EXPECT_EQ(move.status, 201u) << move.body;
    EXPECT_EQ(error_code(
                  admin_post("/v1/transfers", transfer_body(s0, u0, 7), {"Idempotency-Key: move"})),
              "idempotency_key_reused");
    // And between the groups.
    EXPECT_EQ(error_code(
                  admin_post("/v1/transfers", transfer_body(s0, u1, 7), {"Idempotency-Key: move"})),
              "idempotency_key_reused");
    if (round == 0) restart(SIGKILL);
  }
  EXPECT_EQ(balance(u1), 7);
  EXPECT_EQ(balance(u0), 0);

  // The merchant registry's routes too (issue: one key onboarded a merchant and
  // opened an account).
  const std::string shop = R"({"name":"Shop"})";
  const HttpResponse onboarded = admin_post("/v1/merchants", shop, {"Idempotency-Key: merchant"});
  ASSERT_EQ(onboarded.status, 201u) << onboarded.body;
  EXPECT_EQ(
      text_field(admin_post("/v1/merchants", shop, {"Idempotency-Key: merchant"}).body, "/id"),
      text_field(onboarded.body, "/id"));
  EXPECT_EQ(error_code(admin_post("/v1/accounts", in1, {"Idempotency-Key: merchant"})),
            "idempotency_key_reused");
  EXPECT_EQ(
      error_code(admin_post("/v1/merchants", R"({"name":"Other"})", {"Idempotency-Key: merchant"})),
      "idempotency_key_reused");
  EXPECT_EQ(error_code(admin_post("/v1/merchants", shop, {"Idempotency-Key: open"})),
            "idempotency_key_reused");
  const std::string rotate = "/v1/merchants/" + text_field(onboarded.body, "/id") + "/keys";
  ASSERT_EQ(admin_post(rotate, "{}", {"Idempotency-Key: rotate"}).status, 201u);
  EXPECT_EQ(admin_post(rotate, "{}", {"Idempotency-Key: rotate"}).status, 201u);  // a retry
  EXPECT_EQ(error_code(
                admin_post("/v1/transfers", transfer_body(s0, u0, 1), {"Idempotency-Key: rotate"})),
            "idempotency_key_reused");
}

// ---------------------------------------------------------------------------
// Keys inside their window are never forgotten (issue: the table dropped its oldest
// key when full, and that key's retry moved the money again)

class SmallKeyTableTest : public KeyTest {
 protected:
  void SetUp() override { start("[ledger]\nidempotency_keys_max = 16\n"); }
};

TEST_F(SmallKeyTableTest, FullTableRefusesNewKeysAndAnswersOldOnes) {
  const std::string system = system_account();
  const std::string user =
      text_field(admin_post("/v1/accounts", R"({"currency":"USD"})").body, "/id");
  const HttpResponse k1 =
      admin_post("/v1/transfers", transfer_body(system, user, 3), {"Idempotency-Key: K1"});
  ASSERT_EQ(k1.status, 201u) << k1.body;
  int taken = 1, refused = 0;
  for (int n = 2; n <= 60; ++n) {
    const HttpResponse r = admin_post("/v1/transfers", transfer_body(system, user, 1),
                                      {"Idempotency-Key: other-" + std::to_string(n)});
    if (r.status == 201u) {
      ++taken;
      continue;
    }
    ASSERT_EQ(r.status, 503u) << r.body;
    EXPECT_EQ(error_code(r), "idempotency_capacity");
    // Room comes back when the oldest key leaves its window (a day by default).
    const std::string after = r.header("retry-after");
    ASSERT_FALSE(after.empty());
    EXPECT_GT(std::stoll(after), 86'000);
    EXPECT_LE(std::stoll(after), 86'400);
    ++refused;
  }
  EXPECT_EQ(taken, 16);
  EXPECT_EQ(refused, 44);
  // K1 is still answered, with its own answer, and nothing moved twice.
  const HttpResponse again =
      admin_post("/v1/transfers", transfer_body(system, user, 3), {"Idempotency-Key: K1"});
  EXPECT_EQ(again.status, 201u);
  EXPECT_EQ(again.body, k1.body);
  EXPECT_EQ(balance(user), 3 + 15);
  // Requests without a key go on.
  fund(system, user, 1);
  EXPECT_EQ(balance(user), 19);
  EXPECT_EQ(metric("paygate_idempotency_capacity_refusals_total{group=\"0\"}"), 44);
  EXPECT_EQ(metric("paygate_idempotency_keys{group=\"0\",lane=\"client\"}"), 16);
  // One log line for the burst, not one per refusal.
  const std::string log = server_.log();
  std::size_t lines = 0;
  for (std::size_t at = log.find("event=idempotency_capacity"); at != std::string::npos;
       at = log.find("event=idempotency_capacity", at + 1)) {
    ++lines;
  }
  EXPECT_GE(lines, 1u);
  EXPECT_LE(lines, 3u);  // at most one per 10 s
}

// ---------------------------------------------------------------------------
// Signatures: a signed request that changes state is accepted once, across restarts
// (issue: a captured request replayed after a restart debited the account again)

TEST_F(KeyTest, SignedRequestReplayedAfterRestartMovesNothing) {
  const Shop s = shop();
  // Three captured requests without Idempotency-Key: a transfer, a batch, an atomic
  // batch (each takes the signature its own way: on the command, by a claim opening the
  // batch, by a claim before it).
  const std::string pay = transfer_body(s.a, s.b, 10);
  const std::string batch = R"({"operations":[{"op":"transfer",)" + pay.substr(1) + "]}";
  const std::string atomic = R"({"atomic":true,)" + batch.substr(1);
  struct Captured {
    std::string target, body;
    std::vector<std::string> headers;
  };
  std::vector<Captured> captured = {
      {"/v1/transfers", pay,
       signed_headers(s.keys.key_id, s.keys.secret, "POST", "/v1/transfers", pay)},
      {"/v1/batch", batch,
       signed_headers(s.keys.key_id, s.keys.secret, "POST", "/v1/batch", batch)},
      {"/v1/batch", atomic,
       signed_headers(s.keys.key_id, s.keys.secret, "POST", "/v1/batch", atomic)},
  };
  for (const Captured& c : captured) {
    const HttpResponse first = send(c.headers, c.target, c.body);
    ASSERT_TRUE(first.status == 200u || first.status == 201u) << first.body;
  }
  EXPECT_EQ(balance(s.a), 970);
  for (const int signal : {0, SIGTERM, SIGKILL}) {
    if (signal != 0) restart(signal);
    for (const Captured& c : captured) {
      const HttpResponse replay = send(c.headers, c.target, c.body);
      EXPECT_EQ(replay.status, 401u)
          << c.target << " after signal " << signal << ": " << replay.body;
      EXPECT_EQ(error_code(replay), "signature_replayed");
      // The refusal says how to send a request twice on purpose.
      EXPECT_NE(text_field(replay.body, "/error/message").find("Idempotency-Key"),
                std::string::npos);
    }
    EXPECT_EQ(balance(s.a), 970) << "after signal " << signal;
  }
  // Signed anew, the same transfer is a new request.
  EXPECT_EQ(merchant_request(s.keys, "POST", "/v1/transfers", pay).status, 201u);
  EXPECT_EQ(balance(s.a), 960);
}

// Issue (an attacker's probe): a captured request WITH an Idempotency-Key, replayed after
// a restart without its key, or with another, moved the money again (its signature
// was in the replay cache only, which the restart emptied). A POST signed before the
// server's start is now refused; signed anew under the same key it answers its first
// result, and nothing moves twice.
TEST_F(KeyTest, AKeyedRequestReplayedAfterRestartWithoutOrWithAnotherKeyMovesNothing) {
  const Shop s = shop();
  const std::string pay = transfer_body(s.a, s.b, 10);
  const std::vector<std::string> captured =
      signed_headers(s.keys.key_id, s.keys.secret, "POST", "/v1/transfers", pay);
  const auto with = [&](const std::string& key) {
    std::vector<std::string> headers = captured;
    if (!key.empty()) headers.push_back("Idempotency-Key: " + key);
    return headers;
  };
  const HttpResponse first = send(with("pay-1"), "/v1/transfers", pay);
  ASSERT_EQ(first.status, 201u) << first.body;
  EXPECT_EQ(balance(s.a), 990);
  for (const int signal : {0, SIGTERM, SIGKILL}) {
    if (signal != 0) restart(signal);
    for (const std::string& key : {std::string(), std::string("pay-1"), std::string("other")}) {
      const HttpResponse replay = send(with(key), "/v1/transfers", pay);
      EXPECT_EQ(replay.status, 401u)
          << "key '" << key << "' after signal " << signal << ": " << replay.body;
      EXPECT_EQ(error_code(replay), "signature_replayed");
    }
    EXPECT_EQ(balance(s.a), 990) << "after signal " << signal;
  }
  // Signed anew with its key: its first result, and nothing more moved.
  const HttpResponse retry =
      merchant_request(s.keys, "POST", "/v1/transfers", pay, {"Idempotency-Key: pay-1"});
  EXPECT_EQ(retry.status, 201u) << retry.body;
  EXPECT_EQ(text_field(retry.body, "/id"), text_field(first.body, "/id"));
  EXPECT_EQ(balance(s.a), 990);
  // A request signed after the start is taken as ever.
  EXPECT_EQ(merchant_request(s.keys, "POST", "/v1/transfers", pay).status, 201u);
  EXPECT_EQ(balance(s.a), 980);
}

// The ledger's own record of unkeyed signatures still answers across a restart: a
// request stamped after the start (here: signed 200 s ahead, inside the window) passes
// the start rule, and the ledger's signature lane refuses its replay.
TEST_F(KeyTest, AnUnkeyedReplayStampedAfterTheRestartIsRefusedByTheLedger) {
  const Shop s = shop();
  const std::string pay = transfer_body(s.a, s.b, 10);
  const std::string ahead = std::to_string(std::time(nullptr) + 200) + ".5";
  const auto headers =
      signed_headers(s.keys.key_id, s.keys.secret, "POST", "/v1/transfers", pay, ahead);
  ASSERT_EQ(send(headers, "/v1/transfers", pay).status, 201u);
  restart(SIGKILL);
  const HttpResponse replay = send(headers, "/v1/transfers", pay);
  EXPECT_EQ(replay.status, 401u) << replay.body;
  EXPECT_EQ(error_code(replay), "signature_replayed");
  EXPECT_EQ(text_field(replay.body, "/error/message").find("last start"), std::string::npos)
      << "refused by the start rule, not by the ledger: " << replay.body;
  EXPECT_EQ(balance(s.a), 990);
}

// The same for keyed requests (the gap docs/API.md named as a limit before): signed by a
// client whose clock runs ahead of the server's, stamped after the restart, a keyed
// request passes the start rule, and its replay with the key kept, dropped or changed
// is refused by the ledger, which took the signature with the key. Each shape takes it
// its own way: a transfer by a claim of the signature before it (it carries its key),
// a batch in the claim of its key, an atomic batch by a claim of the signature alone
// before it.
TEST_F(KeyTest, AKeyedReplayStampedAfterTheRestartIsRefusedByTheLedger) {
  const Shop s = shop();
  const std::string pay = transfer_body(s.a, s.b, 10);
  const std::string batch = R"({"operations":[{"op":"transfer",)" + pay.substr(1) + "]}";
  const std::string atomic = R"({"atomic":true,)" + batch.substr(1);
  const std::string ahead = std::to_string(std::time(nullptr) + 200);
  struct Captured {
    std::string target, body, key;
    std::vector<std::string> headers;
    std::string first_body;
  };
  std::vector<Captured> captured = {
      {"/v1/transfers", pay, "pay-1",
       signed_headers(s.keys.key_id, s.keys.secret, "POST", "/v1/transfers", pay, ahead + ".1"),
       ""},
      {"/v1/batch", batch, "batch-1",
       signed_headers(s.keys.key_id, s.keys.secret, "POST", "/v1/batch", batch, ahead + ".2"), ""},
      {"/v1/batch", atomic, "atomic-1",
       signed_headers(s.keys.key_id, s.keys.secret, "POST", "/v1/batch", atomic, ahead + ".3"), ""},
  };
  const auto with = [](std::vector<std::string> headers, const std::string& key) {
    if (!key.empty()) headers.push_back("Idempotency-Key: " + key);
    return headers;
  };
  for (Captured& c : captured) {
    const HttpResponse first = send(with(c.headers, c.key), c.target, c.body);
    ASSERT_TRUE(first.status == 200u || first.status == 201u) << first.body;
    c.first_body = first.body;
  }
  EXPECT_EQ(balance(s.a), 970);
  restart(SIGKILL);
  for (const Captured& c : captured) {
    for (const std::string& key : {std::string(), c.key, std::string("other")}) {
      const HttpResponse replay = send(with(c.headers, key), c.target, c.body);
      EXPECT_EQ(replay.status, 401u) << c.target << " key '" << key << "': " << replay.body;
      EXPECT_EQ(error_code(replay), "signature_replayed");
      EXPECT_EQ(text_field(replay.body, "/error/message").find("last start"), std::string::npos)
          << "refused by the start rule, not by the ledger: " << replay.body;
    }
  }
  EXPECT_EQ(balance(s.a), 970);
  // Signed anew under its key, each answers its first result, and nothing moves again.
  for (const Captured& c : captured) {
    const HttpResponse retry =
        merchant_request(s.keys, "POST", c.target, c.body, {"Idempotency-Key: " + c.key});
    EXPECT_TRUE(retry.status == 200u || retry.status == 201u) << retry.body;
    EXPECT_EQ(retry.body, c.first_body);
  }
  EXPECT_EQ(balance(s.a), 970);
}

TEST_F(KeyTest, SignedReadsMayRepeatInOneSecond) {
  const Shop s = shop();
  // Whole-second timestamps, as the contract's example signs: two polls in one second
  // carry one signature. Reads are safe to repeat.
  const std::string target = "/v1/accounts/" + s.a;
  const std::string second = std::to_string(std::time(nullptr));
  const auto headers = signed_headers(s.keys.key_id, s.keys.secret, "GET", target, "", second);
  for (int i = 0; i < 3; ++i) {
    const HttpResponse r = client_->request("GET", target, headers);
    EXPECT_EQ(r.status, 200u) << r.body;
  }
  // A POST signed so is still accepted once.
  const std::string pay = transfer_body(s.a, s.b, 1);
  const auto post =
      signed_headers(s.keys.key_id, s.keys.secret, "POST", "/v1/transfers", pay, second);
  EXPECT_EQ(send(post, "/v1/transfers", pay).status, 201u);
  EXPECT_EQ(error_code(send(post, "/v1/transfers", pay)), "signature_replayed");
}

// The replay cache is bounded: full of signatures that could still be replayed, it
// refuses new signed requests (issue: with replay_cache_max = 5 the oldest were
// forgotten and became replayable).
class SmallReplayCacheTest : public KeyTest {
 protected:
  void SetUp() override { start("[auth]\nreplay_cache_max = 4\n"); }
};

TEST_F(SmallReplayCacheTest, FullReplayCacheRefusesRatherThanForgets) {
  const MerchantKeys m = merchant("Shop");
  std::vector<std::vector<std::string>> sent;
  const std::string body = R"({"currency":"USD"})";
  for (int i = 0; i < 4; ++i) {
    sent.push_back(signed_headers(m.key_id, m.secret, "POST", "/v1/accounts", body));
    ASSERT_EQ(send(sent.back(), "/v1/accounts", body).status, 201u);
  }
  const HttpResponse full = merchant_request(m, "POST", "/v1/accounts", body);
  EXPECT_EQ(full.status, 503u) << full.body;
  EXPECT_EQ(error_code(full), "replay_cache_full");
  const std::string after = full.header("retry-after");
  ASSERT_FALSE(after.empty());
  EXPECT_GE(std::stoll(after), 1);
  EXPECT_LE(std::stoll(after), 601);
  // Nothing was forgotten: the first signature is still a replay.
  EXPECT_EQ(error_code(send(sent[0], "/v1/accounts", body)), "signature_replayed");
  // Reads and tokens are not held back.
  EXPECT_EQ(merchant_request(m, "GET", "/v1/merchants/" + m.id).status, 200u);
  const std::string token = testing::make_jwt(m.id, m.secret, std::time(nullptr) + 600);
  EXPECT_EQ(
      client_
          ->request("POST", "/v1/accounts",
                    {"Authorization: Bearer " + token, "Content-Type: application/json"}, body)
          .status,
      201u);
  EXPECT_EQ(metric("paygate_signature_replay_cache_refusals_total"), 1);
  EXPECT_EQ(metric("paygate_signature_replay_cache_entries"), 4);
}

// The ledger's table of signatures is bounded the same way.
class SmallSignatureTableTest : public KeyTest {
 protected:
  void SetUp() override { start("[ledger]\nsignature_keys_max = 2\n"); }
};

TEST_F(SmallSignatureTableTest, FullSignatureTableRefusesSignedRequests) {
  const MerchantKeys m = merchant("Shop");
  const std::string body = R"({"currency":"USD"})";
  EXPECT_EQ(merchant_request(m, "POST", "/v1/accounts", body).status, 201u);
  EXPECT_EQ(merchant_request(m, "POST", "/v1/accounts", body).status, 201u);
  const HttpResponse full = merchant_request(m, "POST", "/v1/accounts", body);
  EXPECT_EQ(full.status, 503u) << full.body;
  EXPECT_EQ(error_code(full), "idempotency_capacity");
  const std::string after = full.header("retry-after");
  ASSERT_FALSE(after.empty());
  EXPECT_LE(std::stoll(after), 600);
  // With a key too: its signature is kept with its key (else its replay, with the key
  // dropped, would pass after a restart). Nothing of it was done: the key is still free.
  const HttpResponse keyed =
      merchant_request(m, "POST", "/v1/accounts", body, {"Idempotency-Key: mine"});
  EXPECT_EQ(keyed.status, 503u) << keyed.body;
  EXPECT_EQ(error_code(keyed), "idempotency_capacity");
  // A token's request has no signature to keep, and goes on, under that very key.
  const std::string token = testing::make_jwt(m.id, m.secret, std::time(nullptr) + 600);
  EXPECT_EQ(client_
                ->request("POST", "/v1/accounts",
                          {"Authorization: Bearer " + token, "Content-Type: application/json",
                           "Idempotency-Key: mine"},
                          body)
                .status,
            201u);
}

}  // namespace
}  // namespace paygate::api
