// The webhook delivery worker (docs/WEBHOOKS.md): one thread, not a group's, that
//  1. reads the history store's outbox of order events (history/store.h) from
//     its durable cursors — one per group, at (sequence, n), the same in a store
//     rebuilt from the journal — and turns each event into deliveries — to the order's
//     ipn_url, else to each of its merchant's endpoints that wants the event's type —
//     written with the cursor in one transaction (webhooks/webhook_store.h);
//  2. posts due deliveries, at most `concurrency` in flight, `per_target` per endpoint
//     (or ipn_url origin) and `per_merchant` per merchant, each signed
//     (X-Paygate-Signature), over kept-alive
//     connections, with a timeout; a 2xx delivers, anything else is retried after an
//     exponential back-off with full jitter until the retry period ends (then failed);
//  3. keeps an order's events to one target in order: an event waits until the one
//     before it to the same target is delivered or failed.
// What is delivered is a function of the journal (through the outbox), and nothing is
// marked delivered without a 2xx, so a crash at any instant loses nothing: a delivery
// in flight then is sent again after the restart (at least once; the event id is
// stable for receivers to drop the second).
// A slow, dead or refusing target only ever holds its own per_target slots; it never
// holds the ledger, other targets, or the journal (the outbox is in the history
// store, which keeps everything: the worker's cursor holds no journal segment).
#pragma once

#include <atomic>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "base/status.h"
#include "base/types.h"
#include "history/store.h"
#include "webhooks/webhook_store.h"

namespace paygate::webhooks {

struct WebhookConfig {
  bool enabled = true;
  std::filesystem::path file;         // default: <data dir>/webhooks.sqlite
  u64 poll_interval_ns = 20'000'000;  // how often it looks for events and due deliveries
  u32 concurrency = 64;               // attempts in flight, in all
  u32 per_target = 8;                 // attempts in flight to one endpoint, or one ipn_url origin
  u32 per_merchant = 16;              // attempts in flight for one merchant's orders
  u64 timeout_ns = 10 * kNanosPerSecond;              // connect, send and answer, together
  u64 retry_base_ns = 30 * kNanosPerSecond;           // the first retry waits up to this
  u64 retry_max_ns = 6 * 3600 * kNanosPerSecond;      // no wait longer than this
  u64 retry_period_ns = 3 * 86400 * kNanosPerSecond;  // then the delivery fails
  u64 grace_period_s = 86400;      // a rotated secret keeps signing this long (default)
  bool allow_private = false;      // loopback and private addresses (tests, local setups)
  u32 response_limit = 64 * 1024;  // bytes of an answer read (then discarded)
  u32 nice = 0;                    // the worker thread's niceness (0 … 19; 0: the groups' own)
  // https: certificates trusted besides the system's (PEM; tests, private CAs).
  std::filesystem::path ca_file;
  // Delivered and failed deliveries are removed this long after they ended (0: kept for
  // ever); pending ones never are.
  u64 retain_ns = 30 * 86400 * kNanosPerSecond;
};

// What the worker has done, for /metrics.
struct WebhookCounters {
  std::atomic<u64> events{0};             // outbox events read
  std::atomic<u64> made{0};               // deliveries made of them
  std::atomic<u64> attempts{0};           // posts sent
  std::atomic<u64> delivered{0};          // 2xx
  std::atomic<u64> attempt_failures{0};   // anything else
  std::atomic<u64> failed{0};             // gave up (retry period over, or expired)
  std::atomic<u64> refused_addresses{0};  // a host that resolved to a forbidden address
  std::atomic<u64> store_failures{0};
  std::atomic<u64> in_flight{0};
  std::atomic<u64> pruned{0};  // final deliveries removed past retain_s
};

class Deliverer {
 public:
  // The event's body as sent: {id, object: "event", type, created, sequence, group,
  // data: {object}} (the API's renderer of orders: the api module's).
  using RenderEvent =
      std::function<std::string(const history::OrderEventRow&, const history::OrderRow*)>;
  // The secrets that sign a delivery to an order's ipn_url: its merchant's API secret,
  // and the one before a rotation while in its grace period (now: unix seconds).
  using MerchantSecrets = std::function<std::vector<std::string>(u64 merchant, u64 now_s)>;

  // `start_sequences` (by group): where each group's journal stands, where a new
  // webhook store starts reading (an existing one goes on from its cursors).
  static Result<std::unique_ptr<Deliverer>> open(const WebhookConfig& config,
                                                 history::Store& history,
                                                 const std::vector<u64>& start_sequences,
                                                 RenderEvent render, MerchantSecrets secrets);
  ~Deliverer();
  Deliverer(const Deliverer&) = delete;
  Deliverer& operator=(const Deliverer&) = delete;

  void start();
  void stop();  // attempts in flight are abandoned (sent again after a restart)

  WebhookStore& store() noexcept { return *store_; }
  const WebhookConfig& config() const noexcept { return config_; }
  const WebhookCounters& counters() const noexcept { return counters_; }
  // An endpoint being made, changed or deleted, from before its time is taken until
  // it is written: while one is, the worker turns no events into deliveries, and a
  // stretch of events read while one began or ended is read again after it (with the
  // endpoints reloaded). So an event is judged against every endpoint as it was when
  // the event happened (Endpoint::receives), never against a list that lacks one made
  // before it.
  class EndpointChange {
   public:
    explicit EndpointChange(Deliverer& deliverer) noexcept : deliverer_(deliverer) {
      deliverer_.endpoint_changes_.fetch_add(1, std::memory_order_acq_rel);
    }
    ~EndpointChange() {
      deliverer_.endpoints_version_.fetch_add(1, std::memory_order_acq_rel);
      deliverer_.endpoint_changes_.fetch_sub(1, std::memory_order_acq_rel);
    }
    EndpointChange(const EndpointChange&) = delete;
    EndpointChange& operator=(const EndpointChange&) = delete;

   private:
    Deliverer& deliverer_;
  };

  // The X-Paygate-Signature value for `body` at `t`: "t=<t>,v1=<hex>" with one v1 per
  // secret (docs/WEBHOOKS.md).
  static std::string signature(const std::vector<std::string>& secrets, u64 t,
                               std::string_view body);

  struct Engine;  // the worker thread's state (deliverer.cc)

 private:
  Deliverer(const WebhookConfig& config, history::Store& history, RenderEvent render,
            MerchantSecrets secrets);

  WebhookConfig config_;
  history::Store& history_;
  RenderEvent render_;
  MerchantSecrets secrets_;
  std::unique_ptr<WebhookStore> store_;
  WebhookCounters counters_;
  std::atomic<u64> endpoints_version_{1};
  std::atomic<u32> endpoint_changes_{0};  // under way (EndpointChange)
  std::unique_ptr<Engine> engine_;
  std::thread thread_;
};

}  // namespace paygate::webhooks
