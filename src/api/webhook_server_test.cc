// Webhooks against the real server and a real receiver (src/webhooks/webhook_receiver.cc)
// on 127.0.0.1 (docs/WEBHOOKS.md): every final status reaches the receiver signed,
// after refusals, in each order's sequence, across a kill -9; endpoints, rotation with
// two signatures, resends, and the SSRF refusals. Every wait is bounded and waits on a
// condition, never on time.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <thread>

#include <gtest/gtest.h>
#include <simdjson.h>

#include "api/server_fixture.h"

namespace paygate::api {
namespace {

using namespace std::chrono_literals;

// The receiver as a child process; its log is one JSON line per request.
class Receiver {
 public:
  bool start(const std::filesystem::path& log, std::vector<std::string> args) {
    log_ = log;
    int out[2];
    if (::pipe(out) != 0) return false;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], STDOUT_FILENO);
      ::close(out[0]);
      ::close(out[1]);
      std::vector<std::string> all = {WEBHOOK_RECEIVER_PATH, "--log", log.string()};
      all.insert(all.end(), args.begin(), args.end());
      std::vector<char*> argv;
      for (std::string& a : all)
        argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(out[1]);
    std::string line;
    char c = 0;
    while (::read(out[0], &c, 1) == 1 && c != '\n')
      line += c;
    ::close(out[0]);
    if (!line.starts_with("listening ")) return false;
    port_ = std::stoi(line.substr(10));
    return true;
  }
  ~Receiver() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  std::string url(const std::string& path = "/hook") const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  struct Seen {
    std::string id, type, object;
    u64 sequence = 0;
    u32 attempt = 0;
    u32 answered = 0;
    bool sig_ok = false;
    u32 signatures = 0;
    u64 t = 0;  // the signature's time
  };
  std::vector<Seen> seen() const {
    std::vector<Seen> out;
    std::ifstream in(log_);
    simdjson::dom::parser parser;
    for (std::string line; std::getline(in, line);) {
      simdjson::dom::element e;
      if (parser.parse(line).get(e) != simdjson::SUCCESS) continue;  // a line being written
      Seen s;
      s.id = std::string(e["id"].get_string().value_unsafe());
      s.type = std::string(e["type"].get_string().value_unsafe());
      s.object = std::string(e["object"].get_string().value_unsafe());
      s.sequence = e["sequence"].get_uint64().value_unsafe();
      s.attempt = static_cast<u32>(e["attempt"].get_uint64().value_unsafe());
      s.answered = static_cast<u32>(e["answered"].get_uint64().value_unsafe());
      s.sig_ok = e["sig_ok"].get_bool().value_unsafe();
      s.signatures = static_cast<u32>(e["signatures"].get_uint64().value_unsafe());
      s.t = e["t"].get_uint64().value_unsafe();
      out.push_back(std::move(s));
    }
    return out;
  }
  // The (order, type) pairs answered 200 with a valid signature.
  std::multimap<std::string, std::string> delivered() const {
    std::multimap<std::string, std::string> out;
    for (const Seen& s : seen()) {
      if (s.answered == 200 && s.sig_ok) out.emplace(s.object, s.type);
    }
    return out;
  }

 private:
  std::filesystem::path log_;
  pid_t pid_ = -1;
  int port_ = 0;
};

class WebhookServerTest : public ServerTest {
 protected:
  // Loopback allowed (the receiver), retries fast.
  virtual std::string config() {
    return "[webhooks]\nallow_private = true\nretry_base_ms = 50\nretry_max_ms = 200\n"
           "poll_interval_ms = 10\ntimeout_ms = 5000\n";
  }
  void SetUp() override {
    start(config());
    shop_ = merchant("Shop");
    shop_account_ = account(shop_);
    const HttpResponse user = admin_post("/v1/users", "{}");
    ASSERT_EQ(user.status, 201u) << user.body;
    payer_ = {text_field(user.body, "/id"), text_field(user.body, "/key_id"),
              text_field(user.body, "/secret")};
    wallet_ = account(payer_);
    fund(system_account(), wallet_, 100000);
  }
  // An order of the shop (or `merchant`) with `extra` fields, paid from the wallet: its id.
  std::string paid_order(const std::string& ref, const std::string& extra) {
    return paid_order_of(shop_, ref, extra);
  }
  std::string paid_order_of(const MerchantKeys& merchant, const std::string& ref,
                            const std::string& extra) {
    const HttpResponse made = merchant_request(
        merchant, "POST", "/v1/orders",
        R"({"merchant_ref":")" + ref + R"(","amount":300,"currency":"USD")" + extra + "}");
    EXPECT_EQ(made.status, 201u) << made.body;
    const std::string id = text_field(made.body, "/id");
    const HttpResponse paid =
        merchant_request(payer_, "POST", "/v1/orders/" + id + "/checkout",
                         R"({"signature":")" + text_field(made.body, "/signature") +
                             R"(","method":"wallet","payer_account":")" + wallet_ + R"("})");
    EXPECT_EQ(paid.status, 200u) << paid.body;
    return id;
  }
  // Waits (bounded) until `done` holds of the receiver's log.
  template <typename Done>
  bool wait_for(const Receiver& receiver, Done done) {
    for (auto deadline = std::chrono::steady_clock::now() + 180s;
         std::chrono::steady_clock::now() < deadline;) {
      if (done(receiver.delivered())) return true;
      std::this_thread::sleep_for(50ms);
    }
    return false;
  }
  static bool has(const std::multimap<std::string, std::string>& d, const std::string& order,
                  const std::string& type) {
    for (auto [it, end] = d.equal_range(order); it != end; ++it) {
      if (it->second == type) return true;
    }
    return false;
  }

  MerchantKeys shop_, payer_;
  std::string shop_account_, wallet_;
};

TEST_F(WebhookServerTest, EveryFinalStatusReachesTheIpnUrlSignedInOrderAcrossAKill) {
  // The receiver refuses each event twice, then takes it; it checks the signature with
  // the merchant's API secret (an ipn_url's deliveries are signed with it).
  Receiver receiver;
  ASSERT_TRUE(
      receiver.start(dir_.path() / "ipn.log", {"--fail-first", "2", "--secret", shop_.secret}));
  const std::string ipn = R"(,"ipn_url":")" + receiver.url("/ipn") + R"(")";
  const std::string a = paid_order("a", ipn);
  ASSERT_EQ(
      merchant_request(shop_, "POST", "/v1/orders/" + a + "/refunds", R"({"amount":100})").status,
      201u);
  const HttpResponse b =
      merchant_request(shop_, "POST", "/v1/orders",
                       R"({"merchant_ref":"b","amount":5,"currency":"USD")" + ipn + "}");
  ASSERT_EQ(b.status, 201u) << b.body;
  const std::string b_id = text_field(b.body, "/id");
  ASSERT_EQ(merchant_request(shop_, "POST", "/v1/orders/" + b_id + "/cancel", "").status, 200u);

  ASSERT_TRUE(wait_for(receiver, [&](const auto& d) {
    return has(d, a, "order.success") && has(d, a, "order.refunded") &&
           has(d, b_id, "order.cancelled");
  }));
  // Each after two refusals; nothing signed wrongly; an order's events in sequence order.
  std::map<std::string, u64> last_sequence;
  for (const Receiver::Seen& s : receiver.seen()) {
    EXPECT_TRUE(s.sig_ok) << s.id;
    EXPECT_EQ(s.signatures, 1u);
    if (s.answered == 200) {
      EXPECT_EQ(s.attempt, 3u) << s.id;
      EXPECT_GT(s.sequence, last_sequence[s.object]) << s.id << " overtook an earlier event";
      last_sequence[s.object] = s.sequence;
    }
  }
  // The order says its notification was delivered (after the worker recorded it).
  std::string status;
  for (auto deadline = std::chrono::steady_clock::now() + 60s;
       status != "delivered" && std::chrono::steady_clock::now() < deadline;
       std::this_thread::sleep_for(20ms)) {
    status = text_field(merchant_request(shop_, "GET", "/v1/orders/" + b_id).body, "/ipn/status");
  }
  EXPECT_EQ(status, "delivered");
  // Its payer is not told of the merchant's notifications.
  const HttpResponse as_payer = merchant_request(payer_, "GET", "/v1/orders/" + a);
  ASSERT_EQ(as_payer.status, 200u);
  EXPECT_EQ(as_payer.body.find("\"ipn\""), std::string::npos) << as_payer.body;

  // The deliveries are listed for the merchant, each delivered after 3 attempts; a
  // resend sends one again (same event id, a fourth attempt).
  HttpResponse list;
  for (auto deadline = std::chrono::steady_clock::now() + 60s;
       std::chrono::steady_clock::now() < deadline; std::this_thread::sleep_for(20ms)) {
    list = merchant_request(shop_, "GET", "/v1/webhook_deliveries?status=delivered");
    if (list.body.find("order.refunded") != std::string::npos) break;
  }
  ASSERT_EQ(list.status, 200u) << list.body;
  EXPECT_EQ(text_field(list.body, "/data/0/status"), "delivered");
  EXPECT_EQ(number_field(list.body, "/data/0/attempts"), 3);
  const std::string delivery = text_field(list.body, "/data/0/id");
  const std::string event = text_field(list.body, "/data/0/event");
  const MerchantKeys other = merchant("Other");
  EXPECT_EQ(merchant_request(other, "GET", "/v1/webhook_deliveries/" + delivery).status, 404u);
  EXPECT_EQ(
      merchant_request(other, "POST", "/v1/webhook_deliveries/" + delivery + "/resend", "").status,
      404u);
  const HttpResponse resent =
      merchant_request(shop_, "POST", "/v1/webhook_deliveries/" + delivery + "/resend", "",
                       {"Idempotency-Key: rs-1"});
  ASSERT_EQ(resent.status, 200u) << resent.body;
  EXPECT_EQ(text_field(resent.body, "/status"), "pending");
  ASSERT_TRUE(wait_for(receiver, [&](const auto&) {
    u32 n = 0;
    for (const Receiver::Seen& s : receiver.seen())
      n += s.id == event && s.answered == 200;
    return n == 2;
  }));
  // Once that is recorded, the same request again (a retry) answers as the first did and
  // sends nothing more: the delivery stays delivered, its attempts as they were.
  HttpResponse seen;
  for (auto deadline = std::chrono::steady_clock::now() + 60s;
       std::chrono::steady_clock::now() < deadline; std::this_thread::sleep_for(20ms)) {
    seen = merchant_request(shop_, "GET", "/v1/webhook_deliveries/" + delivery);
    if (text_field(seen.body, "/status") == "delivered") break;
  }
  ASSERT_EQ(text_field(seen.body, "/status"), "delivered") << seen.body;
  EXPECT_EQ(number_field(seen.body, "/attempts"), 4);
  const HttpResponse retried =
      merchant_request(shop_, "POST", "/v1/webhook_deliveries/" + delivery + "/resend", "",
                       {"Idempotency-Key: rs-1"});
  EXPECT_EQ(retried.status, 200u);
  EXPECT_EQ(retried.body, resent.body);
  const HttpResponse after = merchant_request(shop_, "GET", "/v1/webhook_deliveries/" + delivery);
  EXPECT_EQ(text_field(after.body, "/status"), "delivered");
  EXPECT_EQ(number_field(after.body, "/attempts"), 4);

  // kill -9 right after an order is paid: its event is delivered after the restart.
  const std::string c = paid_order("c", ipn);
  restart(SIGKILL);
  ASSERT_TRUE(wait_for(receiver, [&](const auto& d) { return has(d, c, "order.success"); }));
  // (At least once: a delivery the kill caught between the receiver's 2xx and its
  // record is sent again; the event id is the same, for the receiver to drop it.)
}

TEST_F(WebhookServerTest, EndpointsTakeTheEventsTheyAskForAndRotationSignsTwice) {
  // Registered first with a placeholder receiver secret: the receiver is started with
  // the endpoint's secrets once they are known.
  Receiver probe;
  ASSERT_TRUE(probe.start(dir_.path() / "probe.log", {}));
  const HttpResponse made = merchant_request(
      shop_, "POST", "/v1/webhook_endpoints",
      R"({"url":")" + probe.url() + R"(","events":["order.success"]})", {"Idempotency-Key: e-1"});
  ASSERT_EQ(made.status, 201u) << made.body;
  const std::string endpoint = text_field(made.body, "/id");
  const std::string secret = text_field(made.body, "/secret");
  EXPECT_EQ(endpoint.substr(0, 4), "whe_");
  EXPECT_EQ(secret.substr(0, 6), "whsec_");
  // A retry answers the same endpoint (its secret is shown once only: a lost answer
  // means a rotation); the same key with another body is refused.
  const HttpResponse retried = merchant_request(
      shop_, "POST", "/v1/webhook_endpoints",
      R"({"url":")" + probe.url() + R"(","events":["order.success"]})", {"Idempotency-Key: e-1"});
  EXPECT_EQ(retried.status, 201u);
  EXPECT_EQ(text_field(retried.body, "/id"), endpoint);
  EXPECT_EQ(retried.body.find("whsec_"), std::string::npos);
  const HttpResponse reused = merchant_request(shop_, "POST", "/v1/webhook_endpoints",
                                               R"({"url":")" + probe.url() + R"(","events":["*"]})",
                                               {"Idempotency-Key: e-1"});
  EXPECT_EQ(reused.status, 409u);
  // Listed without its secret; another merchant does not see it.
  const HttpResponse listed = merchant_request(shop_, "GET", "/v1/webhook_endpoints");
  EXPECT_EQ(text_field(listed.body, "/data/0/id"), endpoint);
  EXPECT_EQ(listed.body.find(secret), std::string::npos);
  EXPECT_EQ(listed.body.find("whsec_"), std::string::npos);
  const MerchantKeys other = merchant("Other");
  EXPECT_EQ(merchant_request(other, "GET", "/v1/webhook_endpoints/" + endpoint).status, 404u);
  EXPECT_EQ(merchant_request(other, "DELETE", "/v1/webhook_endpoints/" + endpoint).status, 404u);
  // Bad input changes nothing.
  EXPECT_EQ(error_code(merchant_request(shop_, "POST", "/v1/webhook_endpoints",
                                        R"({"url":"ftp://x/","events":["*"]})")),
            "invalid_field");
  EXPECT_EQ(error_code(merchant_request(shop_, "POST", "/v1/webhook_endpoints",
                                        R"({"url":")" + probe.url() + R"(","events":["nope"]})")),
            "invalid_field");

  // The endpoint gets what it asked for: a success, not a cancellation.
  const std::string paid = paid_order("e1", "");
  const HttpResponse cancelled_order = merchant_request(
      shop_, "POST", "/v1/orders", R"({"merchant_ref":"e2","amount":5,"currency":"USD"})");
  const std::string cancelled = text_field(cancelled_order.body, "/id");
  ASSERT_EQ(merchant_request(shop_, "POST", "/v1/orders/" + cancelled + "/cancel", "").status,
            200u);
  ASSERT_TRUE(wait_for(probe, [&](const auto& d) { return has(d, paid, "order.success"); }));

  // Rotation: the new secret signs, and the old one too while its grace lasts.
  const HttpResponse rotated = merchant_request(
      shop_, "POST", "/v1/webhook_endpoints/" + endpoint + "/rotate", R"({"grace_period_s":3600})");
  ASSERT_EQ(rotated.status, 200u) << rotated.body;
  const std::string new_secret = text_field(rotated.body, "/secret");
  EXPECT_NE(new_secret, secret);
  Receiver old_only, new_only;
  ASSERT_TRUE(old_only.start(dir_.path() / "old.log", {"--secret", secret}));
  ASSERT_TRUE(new_only.start(dir_.path() / "new.log", {"--secret", new_secret}));
  for (const auto& [receiver, n] : {std::pair{&old_only, 3}, std::pair{&new_only, 4}}) {
    ASSERT_EQ(merchant_request(shop_, "POST", "/v1/webhook_endpoints/" + endpoint,
                               R"({"url":")" + receiver->url() + R"("})")
                  .status,
              200u);
    const std::string order = paid_order("r" + std::to_string(n), "");
    ASSERT_TRUE(wait_for(*receiver, [&](const auto& d) { return has(d, order, "order.success"); }));
    for (const Receiver::Seen& s : receiver->seen())
      EXPECT_EQ(s.signatures, 2u);
  }
  for (const Receiver::Seen& s : probe.seen())
    EXPECT_NE(s.type, "order.cancelled");

  // Disabled, it gets nothing; deleted, it is gone.
  ASSERT_EQ(
      merchant_request(shop_, "POST", "/v1/webhook_endpoints/" + endpoint, R"({"disabled":true})")
          .status,
      200u);
  EXPECT_EQ(text_field(merchant_request(shop_, "GET", "/v1/webhook_endpoints/" + endpoint).body,
                       "/status"),
            "disabled");
  ASSERT_EQ(merchant_request(shop_, "DELETE", "/v1/webhook_endpoints/" + endpoint).status, 200u);
  EXPECT_EQ(merchant_request(shop_, "GET", "/v1/webhook_endpoints/" + endpoint).status, 404u);
  EXPECT_EQ(merchant_request(shop_, "DELETE", "/v1/webhook_endpoints/" + endpoint).status, 404u);

  // At most 16 endpoints a merchant (each event goes to every one).
  for (int i = 0; i < 16; ++i) {
    ASSERT_EQ(merchant_request(shop_, "POST", "/v1/webhook_endpoints",
                               R"({"url":")" + probe.url() + R"(","events":["*"]})")
                  .status,
              201u);
  }
  const HttpResponse full = merchant_request(shop_, "POST", "/v1/webhook_endpoints",
                                             R"({"url":")" + probe.url() + R"(","events":["*"]})");
  EXPECT_EQ(full.status, 422u);
  EXPECT_EQ(error_code(full), "webhook_endpoints_full");
}

// A receiver that answers slowly and resets every other connection still gets every
// event, each order's in sequence order.
TEST_F(WebhookServerTest, ResetsAndSlowAnswersAreRetriedUntilDelivered) {
  Receiver flaky;
  ASSERT_TRUE(flaky.start(dir_.path() / "flaky.log",
                          {"--reset-every", "2", "--delay-ms", "30", "--secret", shop_.secret}));
  const std::string ipn = R"(,"ipn_url":")" + flaky.url() + R"(")";
  std::vector<std::string> orders;
  for (int i = 0; i < 6; ++i) {
    orders.push_back(paid_order("f" + std::to_string(i), ipn));
    ASSERT_EQ(merchant_request(shop_, "POST", "/v1/orders/" + orders.back() + "/refunds",
                               R"({"amount":10})")
                  .status,
              201u);
  }
  ASSERT_TRUE(wait_for(flaky, [&](const auto& d) {
    for (const std::string& o : orders) {
      if (!has(d, o, "order.success") || !has(d, o, "order.refunded")) return false;
    }
    return true;
  }));
  std::map<std::string, u64> last_sequence;
  u32 resets = 0;
  for (const Receiver::Seen& s : flaky.seen()) {
    resets += s.answered == 0;
    if (s.answered != 200) continue;
    // (A reset may hide a 2xx the receiver meant: the same event again, never an
    // older one after a newer.)
    EXPECT_GE(s.sequence, last_sequence[s.object]) << s.id;
    last_sequence[s.object] = s.sequence;
  }
  EXPECT_GT(resets, 0u);
}

// A slow endpoint holds only its own slots: another merchant's event goes out while
// the slow one's backlog waits (docs/WEBHOOKS.md, "The ledger first").
class WebhookSlowTargetServerTest : public WebhookServerTest {
 protected:
  std::string config() override {
    return WebhookServerTest::config() + "concurrency = 4\nper_target = 2\nper_merchant = 2\n";
  }
};

class WebhookPruningServerTest : public WebhookServerTest {
 protected:
  std::string config() override { return WebhookServerTest::config() + "retain_s = 1\n"; }
};

// Delivered (and failed) deliveries leave the store retain_s after they ended; one still
// being retried stays, however old.
TEST_F(WebhookPruningServerTest, FinalDeliveriesArePrunedAndPendingOnesKept) {
  // Nothing listens on port 1 here: retried, pending for the whole retry period.
  const std::string stuck = paid_order("stuck", R"(,"ipn_url":"http://127.0.0.1:1/ipn")");
  Receiver receiver;
  ASSERT_TRUE(receiver.start(dir_.path() / "ipn.log", {"--secret", shop_.secret}));
  const std::string done = paid_order("done", R"(,"ipn_url":")" + receiver.url("/ipn") + R"(")");
  ASSERT_TRUE(wait_for(receiver, [&](const auto& d) { return has(d, done, "order.success"); }));
  const auto listed = [&](const std::string& order) {
    return merchant_request(shop_, "GET", "/v1/webhook_deliveries?order=" + order);
  };
  const std::string stuck_delivery = text_field(listed(stuck).body, "/data/0/id");
  ASSERT_EQ(text_field(listed(stuck).body, "/data/0/status"), "pending");
  // The delivered one goes (bounded wait: it is pruned within a second or so of its
  // end); the pending one, older, stays.
  HttpResponse list;
  for (auto deadline = std::chrono::steady_clock::now() + 120s;
       std::chrono::steady_clock::now() < deadline; std::this_thread::sleep_for(50ms)) {
    list = listed(done);
    if (list.status == 200 && list.body.find("whd_") == std::string::npos) break;
  }
  EXPECT_EQ(list.status, 200u);
  EXPECT_EQ(list.body.find("whd_"), std::string::npos) << list.body;
  EXPECT_GE(metric("paygate_webhook_pruned_total"), 1u);
  const HttpResponse kept =
      merchant_request(shop_, "GET", "/v1/webhook_deliveries/" + stuck_delivery);
  ASSERT_EQ(kept.status, 200u) << kept.body;
  EXPECT_EQ(text_field(kept.body, "/status"), "pending");
  EXPECT_GE(number_field(kept.body, "/attempts"), 1);
  // The order itself is as it was; only its delivery record is gone.
  const HttpResponse order = merchant_request(shop_, "GET", "/v1/orders/" + done);
  ASSERT_EQ(order.status, 200u);
  EXPECT_EQ(text_field(order.body, "/status"), "success");
}

// A resend retried under its Idempotency-Key answers its first answer even after its
// delivery was pruned; another resend of it is 404.
TEST_F(WebhookPruningServerTest, AKeyedResendIsAnsweredAfterItsDeliveryWasPruned) {
  // An endpoint nothing listens at: its delivery stays pending until the endpoint is
  // deleted, which fails it (and then it is pruned).
  const HttpResponse endpoint =
      merchant_request(shop_, "POST", "/v1/webhook_endpoints",
                       R"({"url":"http://127.0.0.1:1/hook","events":["order.success"]})");
  ASSERT_EQ(endpoint.status, 201u) << endpoint.body;
  const std::string order = paid_order("resend", "");
  HttpResponse list;
  for (auto deadline = std::chrono::steady_clock::now() + 60s;
       std::chrono::steady_clock::now() < deadline; std::this_thread::sleep_for(20ms)) {
    list = merchant_request(shop_, "GET", "/v1/webhook_deliveries?order=" + order);
    if (list.body.find("whd_") != std::string::npos) break;
  }
  const std::string delivery = text_field(list.body, "/data/0/id");
  ASSERT_EQ(delivery.substr(0, 4), "whd_") << list.body;
  const std::string resend = "/v1/webhook_deliveries/" + delivery + "/resend";
  const HttpResponse first = merchant_request(shop_, "POST", resend, "", {"Idempotency-Key: rs-p"});
  ASSERT_EQ(first.status, 200u) << first.body;
  ASSERT_EQ(
      merchant_request(shop_, "DELETE", "/v1/webhook_endpoints/" + text_field(endpoint.body, "/id"))
          .status,
      200u);
  HttpResponse gone;
  for (auto deadline = std::chrono::steady_clock::now() + 120s;
       std::chrono::steady_clock::now() < deadline; std::this_thread::sleep_for(50ms)) {
    gone = merchant_request(shop_, "GET", "/v1/webhook_deliveries/" + delivery);
    if (gone.status == 404) break;
  }
  ASSERT_EQ(gone.status, 404u) << gone.body;
  const HttpResponse again = merchant_request(shop_, "POST", resend, "", {"Idempotency-Key: rs-p"});
  EXPECT_EQ(again.status, 200u) << again.body;
  EXPECT_EQ(again.body, first.body);
  const HttpResponse other = merchant_request(shop_, "POST", resend, "", {"Idempotency-Key: rs-q"});
  EXPECT_EQ(other.status, 404u) << other.body;
  EXPECT_EQ(error_code(other), "webhook_delivery_not_found");
  // Another merchant's retry under the same key text is its own key: 404.
  const MerchantKeys stranger = merchant("Stranger");
  EXPECT_EQ(merchant_request(stranger, "POST", resend, "", {"Idempotency-Key: rs-p"}).status, 404u);
}

TEST_F(WebhookSlowTargetServerTest, ASlowEndpointHoldsNoOtherMerchantBack) {
  Receiver slow, fast;
  ASSERT_TRUE(
      slow.start(dir_.path() / "slow.log", {"--delay-ms", "4000", "--secret", shop_.secret}));
  const MerchantKeys other = merchant("Other");
  account(other);
  ASSERT_TRUE(fast.start(dir_.path() / "fast.log", {"--secret", other.secret}));
  // 48 answers of 4 s (inside timeout_ms), two at a time: 96 s for the whole backlog.
  constexpr std::size_t kSlowOrders = 48;
  std::string last;
  for (std::size_t i = 0; i < kSlowOrders; ++i)
    last = paid_order("s" + std::to_string(i), R"(,"ipn_url":")" + slow.url() + R"(")");
  // The worker has read them all (made into deliveries) before the other's comes.
  bool made_all = false;
  for (auto deadline = std::chrono::steady_clock::now() + 60s;
       !made_all && std::chrono::steady_clock::now() < deadline;
       std::this_thread::sleep_for(20ms)) {
    made_all =
        text_field(merchant_request(shop_, "GET", "/v1/webhook_deliveries?order=" + last).body,
                   "/data/0/status") == "pending";
  }
  ASSERT_TRUE(made_all);
  const std::string id = paid_order_of(other, "o1", R"(,"ipn_url":")" + fast.url() + R"(")");
  ASSERT_TRUE(wait_for(fast, [&](const auto& d) { return has(d, id, "order.success"); }));
  // It did not wait for the slow endpoint's backlog (it takes well under a second; half
  // the backlog is 48 s, a margin no busy machine eats).
  EXPECT_LT(slow.delivered().size(), kSlowOrders / 2);
}

// A parent merchant sees its sub-merchants' deliveries by order too, not only with
// merchant= (found by an attacker's probe); a stranger sees none.
TEST_F(WebhookServerTest, AParentListsItsSubMerchantsDeliveriesByOrder) {
  const MerchantKeys sub = merchant("Sub", shop_.id);
  account(sub);
  const std::string order = paid_order_of(sub, "sub-1", R"(,"ipn_url":"http://127.0.0.1:1/ipn")");
  // An order's first delivery as its own merchant lists it (made as the worker reads
  // the event: a bounded wait).
  const auto first_delivery = [&](const MerchantKeys& owner, const std::string& of) {
    std::string id;
    for (auto deadline = std::chrono::steady_clock::now() + 120s;
         id.rfind("whd_", 0) != 0 && std::chrono::steady_clock::now() < deadline;
         std::this_thread::sleep_for(50ms)) {
      id = text_field(merchant_request(owner, "GET", "/v1/webhook_deliveries?order=" + of).body,
                      "/data/0/id");
    }
    return id;
  };
  const std::string by_order = "/v1/webhook_deliveries?order=" + order;
  const std::string delivery = first_delivery(sub, order);
  ASSERT_EQ(delivery.substr(0, 4), "whd_");
  const HttpResponse parent = merchant_request(shop_, "GET", by_order);
  ASSERT_EQ(parent.status, 200u) << parent.body;
  EXPECT_EQ(text_field(parent.body, "/data/0/id"), delivery);
  const MerchantKeys stranger = merchant("Stranger");
  const HttpResponse theirs = merchant_request(stranger, "GET", by_order);
  ASSERT_EQ(theirs.status, 200u) << theirs.body;
  EXPECT_NE(theirs.body.find(R"("data":[])"), std::string::npos) << theirs.body;
  // Nor upwards: the sub-merchant does not see its parent's.
  const std::string own = paid_order("parent-1", R"(,"ipn_url":"http://127.0.0.1:1/ipn")");
  std::string parents;
  for (auto deadline = std::chrono::steady_clock::now() + 120s;
       parents.empty() && std::chrono::steady_clock::now() < deadline;
       std::this_thread::sleep_for(50ms)) {
    parents = text_field(merchant_request(shop_, "GET", "/v1/webhook_deliveries?order=" + own).body,
                         "/data/0/id");
  }
  ASSERT_FALSE(parents.empty());
  EXPECT_NE(
      merchant_request(sub, "GET", "/v1/webhook_deliveries?order=" + own).body.find(R"("data":[])"),
      std::string::npos);
}

// Rotating the merchant's API key: its ipn_url deliveries carry both signatures, and
// both keys authenticate, while the grace lasts; then only the new one.
TEST_F(WebhookServerTest, AnApiKeyRotationSignsWithBothKeysUntilItsGraceEnds) {
  const std::string old_secret = shop_.secret;
  const HttpResponse rotated =
      admin_post("/v1/merchants/" + shop_.id + "/keys", R"({"grace_period_s":10})");
  ASSERT_EQ(rotated.status, 201u) << rotated.body;
  const MerchantKeys fresh{shop_.id, text_field(rotated.body, "/key_id"),
                           text_field(rotated.body, "/secret")};
  const u64 grace_ends = static_cast<u64>(number_field(rotated.body, "/previous_key_expires_at"));
  // The receiver verifies with either secret; what each delivery carries is checked
  // against its own time (t), so a slow machine changes which case it shows, never
  // the verdict.
  Receiver both;
  ASSERT_TRUE(
      both.start(dir_.path() / "both.log", {"--secret", old_secret, "--secret", fresh.secret}));
  const std::string ipn = R"(,"ipn_url":")" + both.url() + R"(")";
  // Made with the old key at once (one request, well inside the grace).
  const std::string during = paid_order("k1", ipn);
  ASSERT_TRUE(wait_for(both, [&](const auto& d) { return has(d, during, "order.success"); }));
  for (const Receiver::Seen& s : both.seen()) {
    EXPECT_TRUE(s.sig_ok);
    EXPECT_EQ(s.signatures, s.t < grace_ends ? 2u : 1u) << s.t << " vs " << grace_ends;
  }
  // After the grace the old key is refused (polled: the grace is wall-clock seconds).
  HttpResponse refused;
  for (auto deadline = std::chrono::steady_clock::now() + 60s;
       std::chrono::steady_clock::now() < deadline; std::this_thread::sleep_for(100ms)) {
    refused = merchant_request(shop_, "GET", "/v1/webhook_endpoints");
    if (refused.status == 401u) break;
  }
  EXPECT_EQ(error_code(refused), "invalid_signature");
  EXPECT_EQ(merchant_request(fresh, "GET", "/v1/webhook_endpoints").status, 200u);
  // After it, only the new secret signs: a receiver that knows only that one verifies.
  Receiver new_key;
  ASSERT_TRUE(new_key.start(dir_.path() / "new-key.log", {"--secret", fresh.secret}));
  shop_ = fresh;
  const std::string after = paid_order("k2", R"(,"ipn_url":")" + new_key.url() + R"(")");
  ASSERT_TRUE(wait_for(new_key, [&](const auto& d) { return has(d, after, "order.success"); }));
  for (const Receiver::Seen& s : new_key.seen())
    EXPECT_EQ(s.signatures, 1u);
}

// A withdrawal's outcome (success, failed, timeout) reaches the endpoints of the
// account's owner, here a user, signed, with the destination and the provider's
// reference; a merchant's endpoint that takes every event gets none of it.
TEST_F(WebhookServerTest, WithdrawalOutcomesReachTheirOwnersEndpoints) {
  const HttpResponse bank = admin_post("/v1/providers", R"({"name":"Bank","currency":"USD"})");
  ASSERT_EQ(bank.status, 201u) << bank.body;
  const MerchantKeys provider{text_field(bank.body, "/id"), text_field(bank.body, "/key_id"),
                              text_field(bank.body, "/secret")};
  // Registered at a placeholder, then pointed at a receiver that knows the secret.
  const auto endpoint_of = [&](const MerchantKeys& owner, const std::string& events,
                               Receiver& receiver, const std::string& log) {
    const HttpResponse made =
        merchant_request(owner, "POST", "/v1/webhook_endpoints",
                         R"({"url":"http://127.0.0.1:9/x","events":)" + events + "}");
    EXPECT_EQ(made.status, 201u) << made.body;
    EXPECT_TRUE(receiver.start(dir_.path() / log, {"--secret", text_field(made.body, "/secret")}));
    const std::string id = text_field(made.body, "/id");
    EXPECT_EQ(merchant_request(owner, "POST", "/v1/webhook_endpoints/" + id,
                               R"({"url":")" + receiver.url() + R"("})")
                  .status,
              200u);
    return id;
  };
  Receiver user_receiver, shop_receiver;
  const std::string user_endpoint =
      endpoint_of(payer_, R"(["withdrawal.success","withdrawal.failed","withdrawal.timeout"])",
                  user_receiver, "user.log");
  endpoint_of(shop_, R"(["*"])", shop_receiver, "shop.log");
  // A user's endpoint cannot ask for what no event is.
  EXPECT_EQ(error_code(merchant_request(payer_, "POST", "/v1/webhook_endpoints",
                                        R"({"url":"http://127.0.0.1:9/x","events":["payout.x"]})")),
            "invalid_field");

  const auto withdraw = [&](const std::string& extra) {
    const std::string body = R"({"account":")" + wallet_ +
                             R"(","amount":100,"currency":"USD","destination":"DE89 3704")" +
                             extra + "}";
    const HttpResponse made = extra.empty()
                                  ? merchant_request(payer_, "POST", "/v1/withdrawals", body)
                                  : admin_post("/v1/withdrawals", body);
    EXPECT_EQ(made.status, 201u) << made.body;
    return text_field(made.body, "/id");
  };
  const auto result = [&](const std::string& id, const std::string& outcome) {
    const HttpResponse r =
        merchant_request(provider, "POST", "/v1/withdrawals/" + id + "/result",
                         R"({"result":")" + outcome + R"(","provider_ref":"bank-77"})");
    EXPECT_EQ(r.status, 200u) << r.body;
  };
  const std::string paid = withdraw("");
  const std::string refused = withdraw("");
  const std::string lapsed = withdraw(R"(,"timeout_s":1)");  // (operators choose a timeout)
  result(paid, "success");
  result(refused, "failed");
  ASSERT_TRUE(wait_for(user_receiver, [&](const auto& d) {
    return has(d, paid, "withdrawal.success") && has(d, refused, "withdrawal.failed") &&
           has(d, lapsed, "withdrawal.timeout");
  }));
  for (const Receiver::Seen& s : user_receiver.seen()) {
    EXPECT_TRUE(s.sig_ok);
    EXPECT_TRUE(s.type.starts_with("withdrawal.")) << s.type;
  }

  // The delivery, as its owner lists it: the withdrawal's, with what the request and
  // the provider said. Only the user's endpoint was given it.
  const HttpResponse listed =
      merchant_request(payer_, "GET", "/v1/webhook_deliveries?withdrawal=" + paid);
  ASSERT_EQ(listed.status, 200u) << listed.body;
  EXPECT_EQ(text_field(listed.body, "/data/0/withdrawal"), paid);
  EXPECT_EQ(text_field(listed.body, "/data/0/endpoint"), user_endpoint);
  EXPECT_EQ(text_field(listed.body, "/data/0/status"), "delivered");
  EXPECT_EQ(text_field(listed.body, "/data/1/id"), "<missing>");
  const HttpResponse all = admin_get("/v1/webhook_deliveries?withdrawal=" + paid);
  ASSERT_EQ(all.status, 200u) << all.body;
  EXPECT_EQ(number_field(all.body, "/data/0/attempts"), 1);
  EXPECT_EQ(text_field(all.body, "/data/1/id"), "<missing>");
  const HttpResponse one = merchant_request(
      payer_, "GET", "/v1/webhook_deliveries/" + text_field(listed.body, "/data/0/id"));
  ASSERT_EQ(one.status, 200u) << one.body;
  EXPECT_EQ(text_field(one.body, "/payload/type"), "withdrawal.success");
  EXPECT_EQ(text_field(one.body, "/payload/data/object/id"), paid);
  EXPECT_EQ(text_field(one.body, "/payload/data/object/status"), "success");
  EXPECT_EQ(text_field(one.body, "/payload/data/object/destination"), "DE89 3704");
  EXPECT_EQ(text_field(one.body, "/payload/data/object/provider_ref"), "bank-77");
  EXPECT_EQ(text_field(one.body, "/payload/data/object/provider"), provider.id);
  // An order filter does not match a withdrawal's deliveries (their ids are numbers of
  // different kinds), and the shop saw no withdrawal.
  EXPECT_EQ(text_field(merchant_request(payer_, "GET",
                                        "/v1/webhook_deliveries?order=ord_" + paid.substr(4))
                           .body,
                       "/data/0/id"),
            "<missing>");
  for (const Receiver::Seen& s : shop_receiver.seen())
    EXPECT_FALSE(s.type.starts_with("withdrawal.")) << s.type;
}

// https: the receiver's certificate is checked against the trusted roots ([webhooks]
// ca_file adds the test's own) and the URL's host.
class WebhookTlsServerTest : public WebhookServerTest {
 protected:
  void SetUp() override {
    trusted_ = make_certificate("trusted");
    untrusted_ = make_certificate("untrusted");
    ASSERT_FALSE(trusted_.empty() || untrusted_.empty()) << "openssl could not make a certificate";
    WebhookServerTest::SetUp();
  }
  std::string config() override {
    return WebhookServerTest::config() + "ca_file = \"" + (dir_.path() / "trusted.crt").string() +
           "\"\n";
  }
  // A self-signed certificate for localhost and 127.0.0.1 (its key beside it): the name.
  std::string make_certificate(const std::string& name) {
    const std::filesystem::path base = dir_.path() / name;
    const std::string command = "openssl req -x509 -newkey rsa:2048 -nodes -keyout '" +
                                base.string() + ".key' -out '" + base.string() +
                                ".crt' -days 2 -subj /CN=localhost "
                                "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 >/dev/null 2>&1";
    return std::system(command.c_str()) == 0 ? name : std::string();
  }
  std::vector<std::string> tls_args(const std::string& name) {
    const std::filesystem::path base = dir_.path() / name;
    return {"--tls-cert", base.string() + ".crt", "--tls-key", base.string() + ".key", "--secret",
            shop_.secret};
  }
  std::string trusted_, untrusted_;
};

TEST_F(WebhookTlsServerTest, HttpsDeliversOnlyToAServerWhoseCertificateChecks) {
  Receiver good, bad;
  ASSERT_TRUE(good.start(dir_.path() / "good.log", tls_args(trusted_)));
  ASSERT_TRUE(bad.start(dir_.path() / "bad.log", tls_args(untrusted_)));
  const auto https = [](const Receiver& r, const std::string& host) {
    std::string url = r.url("/ipn");
    return R"(,"ipn_url":"https://)" + host + url.substr(url.find(':', 7)) + R"(")";
  };
  const std::string by_name = paid_order("t1", https(good, "localhost"));
  const std::string by_address = paid_order("t2", https(good, "127.0.0.1"));
  const std::string refused = paid_order("t3", https(bad, "localhost"));
  ASSERT_TRUE(wait_for(good, [&](const auto& d) {
    return has(d, by_name, "order.success") && has(d, by_address, "order.success");
  }));
  // The untrusted server is never sent the event: the handshake fails, and says so.
  std::string error;
  for (auto deadline = std::chrono::steady_clock::now() + 60s;
       error.empty() && std::chrono::steady_clock::now() < deadline;
       std::this_thread::sleep_for(20ms)) {
    const HttpResponse r =
        merchant_request(shop_, "GET", "/v1/webhook_deliveries?order=" + refused);
    error = text_field(r.body, "/data/0/last_error");
    if (error == "<missing>") error.clear();
  }
  EXPECT_NE(error.find("TLS"), std::string::npos) << error;
  EXPECT_TRUE(bad.seen().empty());
}

// Without [webhooks] allow_private, a URL that reaches this machine or a private
// network is refused at registration, and nothing is made.
class WebhookSsrfServerTest : public ServerTest {};

TEST_F(WebhookSsrfServerTest, PrivateAndLoopbackAddressesAreRefused) {
  const MerchantKeys shop = merchant("Shop");
  for (const char* url :
       {"http://127.0.0.1:8080/hook", "http://localhost/hook", "http://169.254.169.254/latest",
        "http://10.1.2.3/x", "http://192.168.0.1/x", "http://[::1]/x", "http://0.0.0.0/x",
        "http://[::ffff:127.0.0.1]/x"}) {
    const HttpResponse r =
        merchant_request(shop, "POST", "/v1/webhook_endpoints",
                         std::string(R"({"url":")") + url + R"(","events":["*"]})");
    EXPECT_EQ(r.status, 400u) << url << " " << r.body;
    EXPECT_EQ(error_code(r), "url_not_allowed") << url;
  }
  const HttpResponse none = merchant_request(shop, "GET", "/v1/webhook_endpoints");
  EXPECT_NE(none.body.find(R"("data":[])"), std::string::npos) << none.body;
  // An order's ipn_url that is such an address is refused when the order is made.
  const std::string account_id = account(shop);
  (void)account_id;
  const HttpResponse order = merchant_request(
      shop, "POST", "/v1/orders",
      R"({"merchant_ref":"x","amount":5,"currency":"USD","ipn_url":"http://169.254.169.254/"})");
  EXPECT_EQ(order.status, 400u) << order.body;
  EXPECT_EQ(error_code(order), "url_not_allowed");
  // Also in the other spellings of an IPv4 address that a lookup reads without a name
  // server (found by an attacker's probe: only the send refused them).
  for (const char* host : {"2130706433", "0x7f000001", "127.1", "0177.0.0.1", "[2002:7f00:1::]"}) {
    const HttpResponse spelled = merchant_request(
        shop, "POST", "/v1/orders",
        std::string(R"({"merchant_ref":"y","amount":5,"currency":"USD","ipn_url":"http://)") +
            host + R"(:8080/"})");
    EXPECT_EQ(spelled.status, 400u) << host << " " << spelled.body;
    EXPECT_EQ(error_code(spelled), "url_not_allowed") << host;
  }
}

}  // namespace
}  // namespace paygate::api
