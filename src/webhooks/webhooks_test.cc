// The webhook store's rules (which delivery goes next, to whom, and what an attempt
// leaves), the URL and address policy, and the signature format. Deliveries against
// the real server and receiver: src/api/webhook_server_test.cc.
#include <algorithm>

#include <gtest/gtest.h>

#include "api/crypto.h"
#include "base/temp_dir.h"
#include "webhooks/deliverer.h"
#include "webhooks/target_url.h"
#include "webhooks/webhook_store.h"

namespace paygate::webhooks {
namespace {

namespace ip = boost::asio::ip;

TEST(TargetUrl, OnlyAbsoluteHttpUrlsWithAHost) {
  std::string why;
  const auto url = parse_target_url("https://shop.example:8443/hooks?x=1", &why);
  ASSERT_TRUE(url.has_value()) << why;
  EXPECT_TRUE(url->https);
  EXPECT_EQ(url->host, "shop.example");
  EXPECT_EQ(url->port, 8443);
  EXPECT_EQ(url->target, "/hooks?x=1");
  const auto plain = parse_target_url("http://[2001:db8::1]", &why);
  ASSERT_TRUE(plain.has_value()) << why;
  EXPECT_EQ(plain->host, "2001:db8::1");
  EXPECT_EQ(plain->port, 80);
  EXPECT_EQ(plain->target, "/");
  for (const char* bad :
       {"ftp://shop.example/", "shop.example/hook", "http://", "http://user:pw@shop.example/",
        "http://shop.example/#frag", "http://shop.example:0/", "http://shop.example:99999/",
        "http://shop.example/a b", "http://[::1/"}) {
    EXPECT_FALSE(parse_target_url(bad, &why).has_value()) << bad;
    EXPECT_FALSE(why.empty());
  }
  EXPECT_FALSE(parse_target_url("http://x/" + std::string(3000, 'a'), &why).has_value());
}

TEST(TargetUrl, PrivateLoopbackAndMetadataAddressesAreRefused) {
  for (const char* refused : {"127.0.0.1",
                              "127.1.2.3",
                              "10.0.0.1",
                              "172.16.5.4",
                              "172.31.255.255",
                              "192.168.1.1",
                              "169.254.169.254",
                              "100.64.0.1",
                              "0.0.0.0",
                              "224.0.0.1",
                              "255.255.255.255",
                              "::1",
                              "::",
                              "fe80::1",
                              "fc00::1",
                              "fd12:3456::1",
                              "::ffff:127.0.0.1",
                              "::ffff:10.0.0.1",
                              "::ffff:169.254.169.254",
                              "ff02::1",
                              "64:ff9b::7f00:1",
                              "192.0.2.1",
                              "198.51.100.7",
                              "203.0.113.9",
                              "2002:7f00:1::",
                              "2002:a00:1::1"}) {
    EXPECT_FALSE(address_allowed(ip::make_address(refused), false)) << refused;
    EXPECT_TRUE(address_allowed(ip::make_address(refused), true)) << refused;
  }
  for (const char* allowed : {"93.184.216.34", "8.8.8.8", "172.32.0.1", "2606:4700::1111",
                              "::ffff:93.184.216.34", "2002:5db8:d822::1"}) {
    EXPECT_TRUE(address_allowed(ip::make_address(allowed), false)) << allowed;
  }
  // The host an order's ipn_url names is judged without a name server, in every
  // spelling getaddrinfo would read as an address.
  for (const char* loopback : {"127.0.0.1", "2130706433", "0x7f000001", "127.1", "0177.0.0.1"}) {
    const std::optional<ip::address> literal = literal_address(loopback);
    ASSERT_TRUE(literal.has_value()) << loopback;
    EXPECT_EQ(literal->to_string(), "127.0.0.1") << loopback;
  }
  EXPECT_EQ(literal_address("::1")->to_string(), "::1");
  EXPECT_FALSE(literal_address("example.com").has_value());
  EXPECT_FALSE(literal_address("localhost").has_value());
}

TEST(Signature, OneV1PerSecretOverTheStampAndTheBody) {
  const std::string body = R"({"id":"evt_0_5_0"})";
  const std::string header = Deliverer::signature({"whsec_a", "whsec_b"}, 1700000000, body);
  EXPECT_EQ(
      header,
      "t=1700000000,v1=" + api::to_hex(api::hmac_sha256("whsec_a", {"1700000000", ".", body})) +
          ",v1=" + api::to_hex(api::hmac_sha256("whsec_b", {"1700000000", ".", body})));
}

class WebhookStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto opened = WebhookStore::open(dir_.path() / "webhooks.sqlite");
    ASSERT_TRUE(opened.ok()) << opened.status().to_string();
    store_ = std::move(opened.value());
  }
  NewDelivery delivery(const std::string& event, u64 order, u64 endpoint, const std::string& url,
                       u64 at = 1000) {
    return NewDelivery{.event = event,
                       .type = "order.success",
                       .order_id = order,
                       .merchant = 7,
                       .endpoint = endpoint,
                       .url = url,
                       .body = "{}",
                       .created_ns = at,
                       .give_up_ns = at + 1'000'000};
  }
  std::vector<std::string> due_events(u64 now, const std::vector<std::string>& busy = {}) {
    std::vector<std::string> out;
    const Result<std::vector<Delivery>> due = store_->due(now, {}, busy, {}, 100);
    EXPECT_TRUE(due.ok());
    for (const Delivery& d : due.value())
      out.push_back(d.event);
    return out;
  }
  Endpoint endpoint(u64 merchant, const std::string& url) {
    Endpoint e;
    e.merchant = merchant;
    e.url = url;
    e.events = {"*"};
    e.secret = "whsec_x";
    return *store_->create_endpoint(e, KeptReply{}).value();
  }

  TempDir dir_;
  std::unique_ptr<WebhookStore> store_;
};

TEST_F(WebhookStoreTest, AnOrdersEventsGoToATargetOneAfterAnother) {
  const Endpoint a = endpoint(7, "http://a.example/");
  ASSERT_TRUE(store_
                  ->enqueue({delivery("e1", 1, a.id, a.url), delivery("e2", 1, a.id, a.url),
                             delivery("e3", 2, a.id, a.url), delivery("e4", 1, 0, "http://ipn/")},
                            Cursor{.group = 3, .sequence = 10, .n = 1})
                  .ok());
  const std::vector<Cursor> cursors = store_->cursors().value();
  ASSERT_EQ(cursors.size(), 1u);
  EXPECT_EQ(cursors[0].group, 3u);
  EXPECT_EQ(cursors[0].sequence, 10u);
  EXPECT_EQ(cursors[0].n, 1u);
  // An event made into deliveries again (a cursor that went back) makes none twice.
  ASSERT_TRUE(store_->enqueue({delivery("e1", 1, a.id, a.url)}, Cursor{.group = 3}).ok());
  EXPECT_EQ(store_->deliveries({}).value().size(), 4u);
  // e2 waits for e1 (same order, same target); other orders and targets do not.
  EXPECT_EQ(due_events(1000), (std::vector<std::string>{"e1", "e3", "e4"}));
  EXPECT_TRUE(due_events(999).empty());  // nothing is due before its time
  // A busy target is left out, and a busy merchant's every delivery.
  EXPECT_EQ(due_events(1000, {"endpoint:" + std::to_string(a.id)}),
            (std::vector<std::string>{"e4"}));
  EXPECT_TRUE(store_->due(1000, {}, {}, {7}, 100).value().empty());
  // One in flight is not due again, nor is e2 after it; the rest are.
  {
    const std::vector<Delivery> all = store_->due(1000, {}, {}, {}, 100).value();
    ASSERT_EQ(all.size(), 3u);
    std::vector<std::string> rest;
    const std::vector<Delivery> not_in_flight = store_->due(1000, {all[0].id}, {}, {}, 100).value();
    for (const Delivery& d : not_in_flight)
      rest.push_back(d.event);
    EXPECT_EQ(rest, (std::vector<std::string>{"e3", "e4"}));
  }
  // e1 fails once: it is still the one e2 waits for, and waits for its retry.
  const std::vector<Delivery> first = store_->due(1000, {}, {}, {}, 100).value();
  ASSERT_TRUE(store_
                  ->record({Outcome{.id = first[0].id,
                                    .delivered = false,
                                    .http_status = 500,
                                    .error = "answered 500",
                                    .at_ns = 1001,
                                    .next_attempt_ns = 5000}})
                  .ok());
  EXPECT_EQ(due_events(2000), (std::vector<std::string>{"e3", "e4"}));
  // (The earliest due first: e1's retry came last.)
  EXPECT_EQ(due_events(5000), (std::vector<std::string>{"e3", "e4", "e1"}));
  // Delivered: e2 is next.
  ASSERT_TRUE(store_
                  ->record({Outcome{
                      .id = first[0].id, .delivered = true, .http_status = 200, .at_ns = 5001}})
                  .ok());
  EXPECT_EQ(due_events(5001), (std::vector<std::string>{"e2", "e3", "e4"}));
  const Delivery e1 = *store_->delivery(first[0].id).value();
  EXPECT_EQ(e1.status, DeliveryStatus::delivered);
  EXPECT_EQ(e1.attempts, 2u);
  EXPECT_EQ(e1.last_status, 200u);
  EXPECT_EQ(e1.finished_ns, 5001u);
  // The order's newest delivery is what GET /v1/orders/{id} shows.
  EXPECT_EQ(store_->latest_for_order(1).value()->event, "e4");
}

// Final deliveries leave the store once old ([webhooks] retain_days), oldest first, a
// batch at a time; pending ones stay whatever their age.
TEST_F(WebhookStoreTest, PruningRemovesOnlyOldFinalDeliveries) {
  std::vector<NewDelivery> made;
  for (u64 order = 1; order <= 6; ++order) {
    made.push_back(delivery("e" + std::to_string(order), order, 0,
                            "http://ipn" + std::to_string(order) + "/"));
  }
  ASSERT_TRUE(store_->enqueue(made, Cursor{}).ok());
  // e1, e2 delivered at 2000 and 3000; e3 failed at 4000; e4 delivered at 9000; e5 and
  // e6 pending (e6 retried: its attempt ended at 1500, but it is not final).
  const auto id_of = [&](const std::string& event) {
    const std::vector<Delivery> all = store_->deliveries({}).value();
    for (const Delivery& d : all) {
      if (d.event == event) return d.id;
    }
    return u64{0};
  };
  const auto end = [&](const std::string& event, bool delivered, u64 at, u64 next = 0) {
    ASSERT_TRUE(store_
                    ->record({Outcome{.id = id_of(event),
                                      .delivered = delivered,
                                      .http_status = delivered ? 200u : 500u,
                                      .at_ns = at,
                                      .next_attempt_ns = next}})
                    .ok());
  };
  end("e1", true, 2000);
  end("e2", true, 3000);
  end("e3", false, 4000);
  end("e4", true, 9000);
  end("e6", false, 1500, /*next=*/500'000);
  const auto left = [&] {
    std::vector<std::string> events;
    const std::vector<Delivery> all = store_->deliveries({}).value();
    for (const Delivery& d : all)
      events.push_back(d.event);
    std::sort(events.begin(), events.end());
    return events;
  };
  // Before 5000, at most two: the oldest two finals.
  EXPECT_EQ(store_->prune(5000, 2).value(), 2u);
  EXPECT_EQ(left(), (std::vector<std::string>{"e3", "e4", "e5", "e6"}));
  EXPECT_FALSE(store_->delivery(id_of("e3")).value()->event.empty());
  EXPECT_EQ(store_->prune(5000, 2).value(), 1u);  // e3; e4 ended after
  EXPECT_EQ(store_->prune(5000, 2).value(), 0u);
  EXPECT_EQ(left(), (std::vector<std::string>{"e4", "e5", "e6"}));
  // However late, pending deliveries stay.
  EXPECT_EQ(store_->prune(~u64{0} >> 1, 100).value(), 1u);
  EXPECT_EQ(left(), (std::vector<std::string>{"e5", "e6"}));
  EXPECT_EQ(due_events(600'000), (std::vector<std::string>{"e5", "e6"}));
}

TEST_F(WebhookStoreTest, FailedGivesUpExpiresAndResendStartsAgain) {
  ASSERT_TRUE(store_
                  ->enqueue({delivery("e1", 1, 0, "http://ipn/"),
                             delivery("e2", 1, 0, "http://ipn/other?x")},
                            Cursor{})
                  .ok());
  // Both to one origin: one target, in order.
  EXPECT_EQ(store_->deliveries({}).value()[0].target, "http://ipn:80");
  const u64 id = store_->due(1000, {}, {}, {}, 1).value()[0].id;
  // A retry past the give-up time is brought forward to just before it; an attempt at
  // or after it fails the delivery.
  const Delivery first = *store_->delivery(id).value();
  ASSERT_TRUE(store_
                  ->record({Outcome{.id = id,
                                    .http_status = 500,
                                    .error = "x",
                                    .at_ns = 1050,
                                    .next_attempt_ns = 9'000'000}})
                  .ok());
  EXPECT_EQ(store_->delivery(id).value()->next_attempt_ns, first.give_up_ns - 1);
  EXPECT_EQ(store_->delivery(id).value()->status, DeliveryStatus::pending);
  EXPECT_TRUE(due_events(1100).empty());  // e2 waits for it
  // No next attempt: failed; the order's next event goes on.
  ASSERT_TRUE(store_
                  ->record({Outcome{.id = id,
                                    .http_status = 0,
                                    .error = "timed out",
                                    .at_ns = 1100,
                                    .next_attempt_ns = 0}})
                  .ok());
  EXPECT_EQ(store_->delivery(id).value()->status, DeliveryStatus::failed);
  EXPECT_EQ(due_events(1100), (std::vector<std::string>{"e2"}));
  // Pending past its give-up time: expired, unless in flight (its outcome decides).
  const u64 e2 = store_->due(1100, {}, {}, {}, 1).value()[0].id;
  EXPECT_EQ(store_->expire(2'000'000, {e2}).value(), 0u);
  EXPECT_EQ(store_->expire(2'000'000, {}).value(), 1u);
  // An outcome for a delivery no longer pending changes nothing.
  ASSERT_TRUE(store_->record({Outcome{.id = e2, .delivered = true, .http_status = 200}}).ok());
  EXPECT_EQ(store_->delivery(e2).value()->status, DeliveryStatus::failed);
  EXPECT_TRUE(due_events(3'000'000).empty());
  // A resend makes it pending and due again, its answer kept under its key.
  const auto render = [](const Delivery& d) { return "resent " + d.event; };
  ASSERT_TRUE(store_
                  ->resend(id, 4'000'000, 5'000'000,
                           KeptReply{.key_lo = 5, .key_hi = 6, .content_hash = 9, .status = 200},
                           render)
                  .value());
  EXPECT_EQ(due_events(4'000'000), (std::vector<std::string>{"e1"}));
  const auto kept = store_->reply(5, 6).value();
  ASSERT_TRUE(kept);
  EXPECT_EQ(kept->body, "resent e1");
  EXPECT_EQ(kept->content_hash, 9u);
  EXPECT_FALSE(store_->resend(id + 100, 0, 0, KeptReply{}, render).value());
  // Listing: newest first, by status, with a cursor.
  const auto listed = store_->deliveries({.merchant = 7}).value();
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed[0].event, "e2");
  EXPECT_EQ(store_->deliveries({.merchant = 7, .before_id = listed[0].id}).value().size(), 1u);
  EXPECT_EQ(store_->deliveries({.merchant = 8}).value().size(), 0u);
  EXPECT_EQ(store_->deliveries({.status = DeliveryStatus::failed}).value().size(), 1u);
}

TEST_F(WebhookStoreTest, EndpointsChangeRotateAndGo) {
  const Endpoint a = endpoint(7, "http://a.example/");
  ASSERT_TRUE(store_->enqueue({delivery("e1", 1, a.id, a.url)}, Cursor{}).ok());
  EXPECT_EQ(store_->endpoint_count(7).value(), 1u);
  EXPECT_EQ(store_->endpoint_count(8).value(), 0u);
  // Disabled: its deliveries wait.
  ASSERT_TRUE(
      store_->update_endpoint(a.id, std::nullopt, std::nullopt, true, 1).value().has_value());
  EXPECT_TRUE(due_events(1000).empty());
  const Endpoint enabled =
      *store_
           ->update_endpoint(a.id, "http://b.example/", std::vector<std::string>{"order.failed"},
                             false, 2)
           .value();
  EXPECT_EQ(enabled.url, "http://b.example/");
  EXPECT_TRUE(enabled.wants("order.failed"));
  EXPECT_FALSE(enabled.wants("order.success"));
  EXPECT_EQ(due_events(1000), (std::vector<std::string>{"e1"}));
  // An attempt goes to the endpoint's URL as it is now, and the delivery says so.
  const u64 e1 = store_->deliveries({}).value()[0].id;
  ASSERT_TRUE(store_
                  ->record({Outcome{.id = e1,
                                    .http_status = 500,
                                    .error = "answered 500",
                                    .at_ns = 1100,
                                    .next_attempt_ns = 1200,
                                    .url = enabled.url}})
                  .ok());
  EXPECT_EQ(store_->delivery(e1).value()->url, "http://b.example/");
  EXPECT_EQ(store_->delivery(e1).value()->attempts, 1u);
  // Rotation keeps the old secret, with its end, and the reply under the key.
  const Endpoint rotated =
      *store_
           ->rotate_secret(a.id, "whsec_new", 9999,
                           KeptReply{.key_lo = 1,
                                     .key_hi = 2,
                                     .content_hash = 3,
                                     .status = 200,
                                     .render = [](const Endpoint& e) { return e.secret; }})
           .value();
  EXPECT_EQ(rotated.secret, "whsec_new");
  EXPECT_EQ(rotated.previous_secret, "whsec_x");
  EXPECT_EQ(rotated.previous_until_s, 9999u);
  const auto reply = store_->reply(1, 2).value();
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->body, "whsec_new");
  EXPECT_EQ(reply->content_hash, 3u);
  EXPECT_FALSE(store_->reply(1, 3).value().has_value());
  // Deleted: gone, and its pending deliveries failed.
  EXPECT_TRUE(store_->delete_endpoint(a.id, 77).value());
  EXPECT_FALSE(store_->delete_endpoint(a.id, 78).value());
  EXPECT_FALSE(store_->endpoint(a.id).value().has_value());
  EXPECT_TRUE(due_events(1000).empty());
  EXPECT_EQ(store_->deliveries({}).value()[0].last_error, "endpoint deleted");
  EXPECT_EQ(store_->endpoints(7).value().size(), 0u);
}

// An event goes to the endpoints as they were when it happened, however late the
// worker reads it (found by an attacker's probe: an endpoint registered, disabled or
// re-filtered just after an event was judged as it was when the worker got to it — a
// new one got the event, a disabled one lost it for good).
TEST_F(WebhookStoreTest, AnEventGoesToTheEndpointsAsTheyWereWhenItHappened) {
  Endpoint e;
  e.merchant = 7;
  e.url = "http://a.example/";
  e.events = {"order.success"};
  e.secret = "whsec_x";
  e.created_ns = 1000;
  const u64 id = store_->create_endpoint(e, KeptReply{}).value()->id;
  const auto now = [&] { return *store_->endpoint(id).value(); };
  EXPECT_FALSE(now().receives("order.success", 999));  // before it was made
  EXPECT_TRUE(now().receives("order.success", 1000));
  EXPECT_FALSE(now().receives("order.failed", 1000));
  // Disabled at 2000: what happened before still goes to it (and waits while it is).
  ASSERT_TRUE(store_->update_endpoint(id, std::nullopt, std::nullopt, true, 2000).ok());
  EXPECT_TRUE(now().receives("order.success", 1500));
  EXPECT_FALSE(now().receives("order.success", 2500));
  // Disabled again (no change): the time of the change stays.
  ASSERT_TRUE(store_->update_endpoint(id, std::nullopt, std::nullopt, true, 2600).ok());
  EXPECT_FALSE(now().receives("order.success", 2500));
  // Enabled at 3000: what happened while it was disabled does not.
  ASSERT_TRUE(store_->update_endpoint(id, std::nullopt, std::nullopt, false, 3000).ok());
  EXPECT_FALSE(now().receives("order.success", 2500));
  EXPECT_TRUE(now().receives("order.success", 3500));
  // Its events changed at 4000: before, the old list counts; after, the new.
  ASSERT_TRUE(
      store_->update_endpoint(id, std::nullopt, std::vector<std::string>{"*"}, std::nullopt, 4000)
          .ok());
  EXPECT_FALSE(now().receives("order.refunded", 3500));
  EXPECT_TRUE(now().receives("order.success", 3500));
  EXPECT_TRUE(now().receives("order.refunded", 4500));
  // Kept across a reopen.
  store_.reset();
  store_ = std::move(WebhookStore::open(dir_.path() / "webhooks.sqlite").value());
  EXPECT_FALSE(now().receives("order.refunded", 3500));
  EXPECT_TRUE(now().receives("order.refunded", 4500));
  EXPECT_FALSE(now().receives("order.success", 999));
}

TEST_F(WebhookStoreTest, TheCursorAndItsDeliveriesSurviveAReopen) {
  // A new store begins where it is told, once.
  EXPECT_TRUE(store_->initialize({Cursor{.group = 0, .sequence = 40, .n = 7}}).value());
  EXPECT_FALSE(store_->initialize({Cursor{.group = 0, .sequence = 1}}).value());
  EXPECT_EQ(store_->cursors().value()[0].sequence, 40u);
  ASSERT_TRUE(store_->enqueue({delivery("e1", 1, 0, "http://ipn/")}, Cursor{.sequence = 42}).ok());
  store_.reset();
  auto again = WebhookStore::open(dir_.path() / "webhooks.sqlite");
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again.value()->initialize({Cursor{}}).value());
  EXPECT_EQ(again.value()->cursors().value()[0].sequence, 42u);
  EXPECT_EQ(again.value()->deliveries({}).value().size(), 1u);
  EXPECT_EQ(again.value()->backlog().value().size(), 1u);
}

}  // namespace
}  // namespace paygate::webhooks
