// The HTTP API's behaviour, apart from the sockets: routing, authentication, rate
// limits, validation, turning requests into ledger commands, and rendering answers.
// http_server.cc feeds it parsed requests and writes out its replies; tests and the
// fuzzer can drive it directly.
//
// A request that needs a group is answered asynchronously: begin() submits it and
// returns false; the group thread calls the Exchange's completion once the result
// is durable, which wakes the connection; the connection's IO thread then calls
// resume(), which either answers or takes the next step (a lookup, then a command).
// One Exchange per connection, reused for each of its requests in turn, so the hot
// routes allocate nothing once the connection is warm.
#pragma once

#include <atomic>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "api/auth.h"
#include "api/auth_limits.h"
#include "api/merchants.h"
#include "api/metrics.h"
#include "api/owner_index.h"
#include "api/page_query.h"
#include "api/render.h"
#include "api/request_decoder.h"
#include "api/risk.h"
#include "cache/order_cache.h"
#include "cache/order_feed.h"
#include "history/worker.h"
#include "pipeline/carry.h"
#include "pipeline/engine.h"
#include "webhooks/deliverer.h"

namespace paygate::api {

struct HttpRequestView {
  std::string_view method;  // "GET", "POST", ...
  std::string_view target;  // path and query
  std::string_view body;
  std::string_view content_type;
  std::string_view idempotency_key;
  bool idempotency_key_sent = false;  // the header was there (empty, it is refused)
  std::string_view authorization;
  std::string_view key_id;
  std::string_view timestamp;
  std::string_view signature;
  std::string_view prefer;  // RFC 7240: "return=minimal" asks for a compact batch answer
  std::string_view client;  // the peer's address, for limits on failed authentication
};

struct HttpReply {
  unsigned status = 200;
  std::string body;   // reused from request to request
  bool text = false;  // text/plain (metrics) rather than JSON
  u32 retry_after_s = 0;
  bool minimal = false;  // answered in the compact form asked for (Preference-Applied)
};

class Waker {
 public:
  // Runs on a group thread: hand the exchange back to its IO thread and return.
  virtual void wake() noexcept = 0;

 protected:
  ~Waker() = default;
};

// One request in progress, with everything it needs between steps.
class Exchange final : public Completion {
 public:
  explicit Exchange(Waker* waker) noexcept : waker_(waker) {}
  void complete(const Outcome& outcome) noexcept override {
    outcome_ = outcome;
    waker_->wake();
  }

  HttpReply reply;

  // Frees the buffers a large request or answer grew past `bytes` (an answer of
  // /metrics, a batch of thousands, a page of events): kept, they would hold that much
  // per pipeline slot of every connection for as long as it lives.
  void release_large_buffers(std::size_t bytes) noexcept;

  // False while the group has a step that another will follow (a lookup before the
  // command): a connection holds its later requests back until then, so that they
  // reach the group in the order they were sent.
  bool in_last_step() const noexcept { return last_step_; }

 private:
  friend class Service;

  Waker* waker_;
  HttpRequestView view_;
  Route route_ = Route::unknown;
  u32 step_ = 0;  // a provider's onboarding takes one per group
  bool last_step_ = true;
  u64 started_ns_ = 0;
  // Stage timings (HttpMetrics::Stage): when the step in flight was submitted, and
  // whether the edge's time was counted.
  u64 submitted_ns_ = 0;
  bool edge_timed_ = false;
  Principal principal_;
  // The request's key: its Idempotency-Key (KeyLane::client), or for a signed request
  // without one, its signature (KeyLane::signature). Empty for neither.
  IdempotencyKey key_;
  KeyLane key_lane_ = KeyLane::client;
  // A signed request with an Idempotency-Key: its signature too (as KeyLane::signature
  // keys it), which the request's claim takes before the key (Service::submit).
  IdempotencyKey signature_key_;
  // The key is taken: the request's first command carried it, or a claim took it
  // (Service::submit). A key names one request, whatever endpoint or group it reaches.
  bool key_taken_ = false;
  enum class ClaimStep : u8 { none, prepended, separate };
  ClaimStep claim_step_ = ClaimStep::none;
  Command claim_;
  CommandResult claim_result_;
  // A separate claim (in the key's group, before a request that runs in another): the
  // request that waits for it.
  Request stashed_{};
  Group* stashed_group_ = nullptr;
  bool stashed_last_step_ = true;
  u64 path_id_ = 0;
  Group* group_ = nullptr;
  Outcome outcome_;

  MerchantCreate merchant_create_;
  u64 provider_id_ = 0;  // POST /v1/providers: the provider made, its account to come
  WithdrawalCreate withdrawal_;
  WithdrawalResult withdrawal_result_;  // also an order's result
  OrderCreate order_create_;
  OrderStep order_step_;
  OrderListQuery order_list_;
  WebhookEndpointChange webhook_change_;
  // A read of the history store waits for these sequences (by group) until then.
  std::vector<u64> history_wanted_;
  u64 history_wait_until_ns_ = 0;
  // ?min_sequence= of a read of one object (GET /v1/transfers/{id}, /v1/orders/{id}).
  std::optional<u64> min_sequence_;
  // The next resumption runs the same step again (it waited for the history store
  // before the step's work; Service::await_min_sequence).
  bool rerun_step_ = false;
  Order order_;
  Order order_seen_;              // as it was before the step in flight
  bool order_stale_ = false;      // the answer's order is order_seen_ moved on by the step
  bool redirect_waited_ = false;  // waited once for the store to have a callback_url
  QuotaSet quota_set_;
  RiskSet risk_set_;
  OwnerQuota quota_;
  QuotaLimits quota_defaults_;
  AccountCreate account_create_;
  TransferCreate transfer_;
  PendingAction pending_;
  BatchRequest batch_;
  // A transfer between groups (create_transfer), or the post of a hold between
  // groups (pending_action).
  bool between_groups_ = false;
  // Its steps, driven by the one machine of the protocol (pipeline/carry.h).
  CarryBetweenGroups carry_;
  bool carrying_ = false;   // a step of carry_ is on its way
  bool carry_last_ = true;  // the request has nothing to do after the carry

  std::vector<Command> commands_;
  std::vector<CommandResult> results_;
  // What the request says about commands_ that the ledger does not keep (a reference,
  // metadata, an order's URLs), journaled with them (Request::annotations); views of
  // this exchange's own strings. Filled just before the request it belongs to.
  std::vector<journal::Annotation> annotations_;
  std::vector<u64> lookup_ids_;
  std::vector<Transfer> transfers_;
  std::vector<ResultCode> op_refused_;  // batch: why an op was refused at the edge
  std::vector<Group*> op_group_;        // batch: the group an op runs in
  std::vector<u8> op_crosses_;          // batch: the op is a transfer between groups
  // A batch in progress (Service::run_batch): where it is.
  enum class SegmentStage : u8 { lookup, commands, between_groups };
  bool batch_running_ = false;
  SegmentStage segment_stage_ = SegmentStage::lookup;
  u32 segment_begin_ = 0, segment_end_ = 0;  // the ops of the segment in flight
  std::vector<u32> op_hold_;                 // a post/void op → its hold in transfers_
  std::vector<CommandResult> op_results_;    // each op's result
  Account account_;
  PageQuery page_;
  std::vector<LedgerEvent> events_;  // reads: what the group filled
};

struct ServiceConfig {
  double rate_per_s = 2000;            // per merchant, sustained
  double rate_burst = 4000;            // per merchant, at once
  double operator_rate_per_s = 50000;  // all operator requests together
  double operator_rate_burst = 100000;
  // Failed authentication per client address: this many at once, then this many a
  // second; past them the address is refused (429) before its credentials are checked.
  double auth_failure_burst = 20;
  double auth_failure_rate_per_s = 1;
  std::size_t auth_failure_addresses_max = 65536;
  // Keys the hash of Idempotency-Key headers (kept in the data dir, never shown).
  std::string idempotency_secret;
  // A rotated API key keeps working this long unless the rotation says otherwise.
  u32 key_grace_period_s = 86400;
};

class Service {
 public:
  // Serves /healthz and answers not_ready until attach() and set_ready(true), so the
  // server can listen while the groups recover.
  Service(MerchantRegistry& merchants, Authenticator& auth, OwnerIndex& owners,
          ServiceConfig config);
  void attach(Engine* engine) noexcept { engine_.store(engine, std::memory_order_release); }
  // The history store (docs/HISTORY.md): reads reach past what the groups hold.
  void attach_history(history::HistoryWorker* history) noexcept {
    history_.store(history, std::memory_order_release);
  }
  // The webhook worker (docs/WEBHOOKS.md): its store serves the webhook routes.
  void attach_webhooks(webhooks::Deliverer* webhooks) noexcept {
    webhooks_.store(webhooks, std::memory_order_release);
  }
  // The Kafka publisher (docs/KAFKA.md): its counters in /metrics.
  void attach_kafka(const publish::KafkaPublisher* kafka) noexcept {
    kafka_.store(kafka, std::memory_order_release);
  }
  // Redis (docs/REDIS.md): reads of orders that left memory go through it; its
  // counters and the feed's in /metrics.
  void attach_order_cache(cache::OrderCache* cache, const cache::OrderFeed* feed) noexcept {
    order_feed_.store(feed, std::memory_order_release);
    order_cache_.store(cache, std::memory_order_release);
  }
  // A webhook event's body (webhooks::Deliverer::RenderEvent): the order rendered as
  // GET /v1/orders/{id} renders it, as the change left it. Any thread.
  std::string webhook_event_body(const history::OrderEventRow& event,
                                 const history::OrderRow* texts) const;
  Engine* attached_engine() const noexcept { return engine_.load(std::memory_order_acquire); }

  // True: exchange.reply is the answer. False: a group has it; see the header.
  bool begin(const HttpRequestView& request, Exchange& exchange);
  bool resume(Exchange& exchange);

  // REQUIRES: attach()ed before ready.
  void set_ready(bool ready) noexcept { ready_.store(ready, std::memory_order_release); }
  bool ready() const noexcept { return ready_.load(std::memory_order_acquire); }
  // SIGTERM: new API requests are refused with shutting_down while the taken ones
  // are answered.
  void set_draining() noexcept { draining_.store(true, std::memory_order_release); }
  // Ready and not stopping: new work may be taken.
  bool accepting() const noexcept { return ready() && !draining_.load(std::memory_order_acquire); }
  HttpMetrics& metrics() noexcept { return *metrics_; }
  void count_binary_frame() noexcept { binary_frames_.fetch_add(1, std::memory_order_relaxed); }
  void render_metrics_page(std::string& out) const;

  // Fills the owner index from every group's ledger. REQUIRES: groups not running.
  static void index_owners(Engine& engine, OwnerIndex& owners);

 private:
  bool dispatch(Exchange& ex);
  bool step(Exchange& ex);
  bool finish(Exchange& ex, unsigned status);
  bool fail(Exchange& ex, ResultCode code, std::string_view message);
  bool fail_problem(Exchange& ex, const Problem& problem);
  bool submit(Exchange& ex, const Request& request, bool last_step = true);
  bool submit_to_group(Exchange& ex, const Request& request, bool last_step);
  // commands_[0] on its own; `annotated`: with ex.annotations_.
  bool submit_one(Exchange& ex, bool last_step = true, bool annotated = false);
  // ex.annotations_ ← what transfer `t` carried, for the command at `command`.
  static void annotate_transfer(Exchange& ex, u32 command, const TransferCreate& t);
  // ex.annotations_ ← `text` (when there is one) of kind `kind`, for commands_[0].
  static void annotate(Exchange& ex, journal::AnnotationKind kind, const std::string& text);
  static Request with_annotations(const Exchange& ex, Request request);
  static Transfer transfer_of(const history::TransferRow& row);
  std::optional<bool> from_history(Exchange& ex, u32 group, std::optional<EventKey> before,
                                   u32 held, EventPage* page);
  // ?min_sequence= of a read (docs/API.md, "Freshness"): nothing when the read goes on
  // (none asked, or group g's history store reflects it); false when the exchange waits
  // for the store (the same step runs again when it has it or the bound passes); true
  // when it was answered (503: the store did not reach it within the bound).
  std::optional<bool> await_min_sequence(Exchange& ex, u32 group, std::optional<u64> min_sequence);
  // For a read of an object the group holds whose rows (a request's texts: reference,
  // merchant_ref, callback_url, …) the store does not have yet: waits, up to
  // `timeout_ns`, for the store to reach what group g has made durable, which holds the
  // object's creation. True when the exchange waits (it resumes at the next step, no
  // group step after it); false: read on (nothing to wait for, or no store).
  bool wait_for_store(Exchange& ex, u32 group, u64 timeout_ns);
  Group& key_home(const Exchange& ex) const;
  static bool carries_key(const Exchange& ex, const Request& request);
  u64 request_fingerprint(const Exchange& ex) const;
  static void move_key(Exchange& ex);
  bool fail_claim(Exchange& ex, ResultCode code);

  bool create_merchant(Exchange& ex);
  bool create_provider(Exchange& ex);
  // GET /v1/merchants|users|providers/{id}: the principal of the path's kind.
  bool get_merchant(Exchange& ex);
  bool rotate_key(Exchange& ex);
  bool get_quotas(Exchange& ex);
  bool set_quotas(Exchange& ex);
  bool merchant_risk(Exchange& ex);
  // The merchant's risk rules for a checkout of order `o` by the caller (RiskRule::none:
  // admitted, and counted for the velocity rule).
  RiskRule checkout_risk(const Exchange& ex, const Order& o);
  // Reads the quotas of the merchant in path_id_ (step 1 of get, 2 of set), then renders.
  bool read_quotas(Exchange& ex, u32 read_step);
  MerchantRef path_merchant(Exchange& ex);
  bool fail_registry(Exchange& ex, ResultCode code, const Status& failure);
  bool claim_for_registry(Exchange& ex, u64 content);
  bool create_account(Exchange& ex);
  bool get_account(Exchange& ex);
  bool create_transfer(Exchange& ex);
  bool submit_transfer(Exchange& ex, bool last_step);
  bool transfer_between_groups(Exchange& ex);
  bool start_carry(Exchange& ex, const Command& number, bool last);
  std::optional<bool> carry_step(Exchange& ex);
  std::optional<bool> fail_carried(Exchange& ex);
  bool get_transfer(Exchange& ex);
  bool pending_action(Exchange& ex);
  bool create_order(Exchange& ex);
  bool get_order(Exchange& ex);
  // From the history store (service_order_list.cc).
  bool list_orders(Exchange& ex);
  // An order that has left memory, as the store keeps it; nullopt: the store has none.
  std::optional<bool> order_from_history(Exchange& ex);
  // An order the group holds (ex.order_), with its request's texts from the store.
  bool answer_held_order(Exchange& ex);
  // The store's row of an order that left memory, through Redis when it is attached
  // (one loader per key); `pending`: another reader is loading it past [redis] wait_ms.
  Result<std::optional<history::OrderRow>> archived_order_row(history::HistoryWorker& history,
                                                              u64 id, bool& pending);
  // Answers a step with ex.order_ as it is after it; a checkout that made it final with
  // its redirect_url (false: waiting for the store to have the callback_url).
  bool answer_order(Exchange& ex);
  std::string redirect_url(const Order& order, std::string_view callback_url) const;
  // checkout, result, resolve, cancel, refunds: look the order up, check who may, then
  // one command of its group.
  bool order_step(Exchange& ex);
  bool lookup_order(Exchange& ex, bool last_step);
  // The order as looked up, or the answer when it is not (404, or 410 archived).
  bool fail_order_lookup(Exchange& ex);
  bool fail_order_command(Exchange& ex, const CommandResult& result);
  bool carry_order_step(Exchange& ex, const Command& command);
  bool order_step_between_groups(Exchange& ex);
  static void advance_order(Order& order, const Command& command, const CommandResult& result);
  bool visible_order(const Exchange& ex, const Order& order) const;
  std::string order_signature(const Order& order) const;
  // Webhooks (service_webhooks.cc).
  bool webhook_endpoints(Exchange& ex);   // every webhook_endpoints route
  bool webhook_deliveries(Exchange& ex);  // every webhook_deliveries route
  std::optional<bool> webhook_replay(Exchange& ex, webhooks::WebhookStore& store, u64 content);
  bool webhook_url_allowed(Exchange& ex, const std::string& url);  // false: answered
  std::optional<IpnState> order_ipn(u64 order_id) const;
  // Whether the caller is told of the order's notifications (its merchant's side and
  // operators; not its payer or provider).
  bool sees_ipn(const Exchange& ex, const Order& order) const;
  // An order's ipn_url, checked where no lookup is needed: an address literal must be
  // public (unless [webhooks] allow_private); false: answered.
  bool ipn_url_allowed(Exchange& ex, const std::string& url);
  bool create_withdrawal(Exchange& ex);
  bool get_withdrawal(Exchange& ex);
  // The provider a hold is routed to, when it is a withdrawal (a hold whose credit
  // account a provider owns); 0 otherwise.
  u64 withdrawal_provider(const Transfer& hold) const;
  MerchantRef route_provider(Exchange& ex, u64 provider_id, Currency currency);
  // Whether the caller may report a withdrawal's result (its provider, or an operator):
  // ok, withdrawal_not_found (not one, or not the caller's to see) or awaits_provider
  // (the payer's own).
  ResultCode may_decide_withdrawal(const Exchange& ex, const Transfer& hold) const;
  // A withdrawal's result the ledger refused: a hold already closed is the
  // withdrawal's final state (invalid_withdrawal_state, naming it).
  bool fail_withdrawal_result(Exchange& ex, ResultCode code);
  bool batch(Exchange& ex);
  bool batch_reply(Exchange& ex);
  static Command batch_command(const Exchange& ex, u32 i);
  bool run_batch(Exchange& ex);
  std::optional<bool> fail_atomic_refused(Exchange& ex);
  bool next_segment(Exchange& ex);
  bool submit_segment(Exchange& ex);
  static bool more_after(const Exchange& ex, u32 from);
  bool read_events(Exchange& ex);
  bool read_entries(Exchange& ex);

  bool visible_account(const Exchange& ex, u64 account_id) const;
  bool visible_owner(const Exchange& ex, u64 owner) const;
  static bool is_provider(const Exchange& ex) noexcept {
    return ex.principal_.merchant != nullptr &&
           ex.principal_.merchant->kind == PrincipalKind::provider;
  }
  bool visible_transfer(const Exchange& ex, const Transfer& transfer) const;
  // A provider's deposit: an immediate transfer to a merchant's or user's account.
  bool provider_may_credit(const Exchange& ex, const TransferCreate& transfer) const;
  ResultCode may_act_on_hold(const Exchange& ex, const Transfer& hold, bool post) const;
  ResultCode check_transfer_accounts(const Exchange& ex, const TransferCreate& transfer) const;
  static Command transfer_command(const TransferCreate& transfer);
  IdempotencyKey derive_key(const Exchange& ex) const;
  IdempotencyKey derive_signature_key(const Exchange& ex) const;
  u32 key_room_in_s(const Group& group) const;
  u64 now_ns() const noexcept;
  void mark_submitted(Exchange& ex) noexcept;
  void time_stages(Exchange& ex) noexcept;

  Engine& engine() const noexcept { return *engine_.load(std::memory_order_acquire); }

  std::atomic<Engine*> engine_{nullptr};
  std::atomic<history::HistoryWorker*> history_{nullptr};
  std::atomic<webhooks::Deliverer*> webhooks_{nullptr};
  std::atomic<const publish::KafkaPublisher*> kafka_{nullptr};
  std::atomic<cache::OrderCache*> order_cache_{nullptr};
  std::atomic<const cache::OrderFeed*> order_feed_{nullptr};
  MerchantRegistry& merchants_;
  Authenticator& auth_;
  OwnerIndex& owners_;
  const ServiceConfig config_;
  std::unique_ptr<HttpMetrics> metrics_;
  std::atomic<bool> ready_{false};
  std::atomic<bool> draining_{false};
  std::atomic<u64> binary_frames_{0};
  AuthFailureLimiter auth_failures_;
  TokenBucket operator_bucket_;
  CheckoutVelocity checkout_velocity_;  // risk rule max_checkouts_per_payer_per_minute
  std::string order_key_;               // signs orders (derived from the server's secret)
};

}  // namespace paygate::api
