// The webhook store (docs/WEBHOOKS.md): merchants' webhook endpoints, and every
// delivery of an event to an endpoint or an order's ipn_url with its attempts, in
// SQLite (DATA_DIR/webhooks.sqlite, WAL, synchronous=FULL). The deliveries are made
// from the history store's outbox of order events (history/store.h,
// order_events) by the delivery worker (webhooks/deliverer.h), whose cursor into the
// outbox is written in the same transaction as the deliveries it made: each event
// becomes its deliveries exactly once, whatever crash comes between.
//
// Threads: one connection for writes and one for reads, each behind a mutex (the
// worker writes; IO threads change endpoints, read deliveries and ask for resends).
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "base/types.h"

struct sqlite3;

namespace paygate::webhooks {

enum class DeliveryStatus : u8 { pending = 0, delivered = 1, failed = 2 };
std::string_view name(DeliveryStatus status) noexcept;
std::optional<DeliveryStatus> delivery_status_named(std::string_view text) noexcept;

// A merchant's endpoint: where its events go (unless an order names its ipn_url).
struct Endpoint {
  u64 id = 0;
  u64 merchant = 0;
  std::string url;
  std::vector<std::string> events;  // event types, or "*" for all
  std::string secret;
  // The secret before the last rotation, still signing until previous_until_s.
  std::string previous_secret;
  u64 previous_until_s = 0;
  bool disabled = false;
  u64 created_s = 0;
  // Times of the owner's group's commands (the wall clock, steered to gradually after a
  // step of it: pipeline/clock.h), as the events' are.
  u64 created_ns = 0;
  // When `disabled` last changed (0: never), and `events` (what it was before then).
  u64 disabled_changed_ns = 0;
  std::vector<std::string> previous_events;
  u64 events_changed_ns = 0;

  // Whether it lists `type` now.
  bool wants(std::string_view type) const noexcept;
  // Whether an event of `type` that happened at `event_ns` (its command's time) is the
  // endpoint's: it existed then, was enabled then and listed the type then. The worker
  // may read an event well after it happened (a backlog), and an endpoint made,
  // disabled or changed meanwhile is judged as it was. Only the last change of each is
  // remembered: toggled twice since the event, it is judged by the state before the
  // last toggle.
  bool receives(std::string_view type, u64 event_ns) const noexcept;
};

// A delivery as the worker makes it.
struct NewDelivery {
  std::string event;  // the event's id (history::order_event_id)
  std::string type;
  u64 order_id = 0;
  u64 merchant = 0;
  u64 endpoint = 0;  // 0: the order's ipn_url
  std::string url;
  std::string body;  // the event, as sent (every attempt sends the same bytes)
  u64 created_ns = 0;
  u64 give_up_ns = 0;  // after this, no more attempts: failed
};

struct Delivery {
  u64 id = 0;
  std::string event;
  std::string type;
  u64 order_id = 0;
  u64 merchant = 0;
  u64 endpoint = 0;
  std::string url;
  std::string body;  // only where asked (due())
  DeliveryStatus status = DeliveryStatus::pending;
  u32 attempts = 0;
  u32 last_status = 0;  // the last attempt's HTTP status (0: none, or no answer)
  std::string last_error;
  u64 created_ns = 0;
  u64 next_attempt_ns = 0;
  u64 finished_ns = 0;  // delivered or failed
  u64 give_up_ns = 0;
  // What deliveries are ordered and limited by (delivery_target()).
  std::string target;
};
// "endpoint:<id>" for an endpoint's, the ipn_url's origin ("https://host:443") for an
// order's: an order's deliveries to one target go one after another, and attempts in
// flight are limited per target.
std::string delivery_target(u64 endpoint, std::string_view url);

// Where the worker has read the history store's outbox to, per group.
struct Cursor {
  u32 group = 0;
  u64 sequence = 0;
  u32 n = 0;
};

// What one attempt came to.
struct Outcome {
  u64 id = 0;
  bool delivered = false;  // a 2xx
  u32 http_status = 0;
  std::string error = {};  // empty on a 2xx
  u64 at_ns = 0;
  // Not delivered: when to try again (0: never, failed). The store fails it at its
  // give-up time, and brings the last retry forward to just before it.
  u64 next_attempt_ns = 0;
  std::string url = {};  // where the attempt went (an endpoint's URL as it is); empty: as kept
};

struct DeliveryQuery {
  u64 merchant = 0;  // 0: every merchant's
  u64 endpoint = 0;  // 0: any
  std::optional<DeliveryStatus> status = std::nullopt;
  std::optional<u64> order = std::nullopt;      // an order's events, or a withdrawal's:
  bool order_is_withdrawal = false;             // (their ids can be the same number)
  std::optional<u64> before_id = std::nullopt;  // the cursor: newest first, before this one
  u32 limit = 100;
};

// The reply a change keeps under its request's key (none when the key is zero), so
// that a retry gets the first answer (without the secret: shown once) and changes
// nothing.
struct KeptReply {
  u64 key_lo = 0, key_hi = 0;
  u64 content_hash = 0;
  int status = 0;
  std::function<std::string(const Endpoint&)> render = {};  // (endpoint replies)
};

class WebhookStore {
 public:
  static Result<std::unique_ptr<WebhookStore>> open(const std::filesystem::path& file);
  ~WebhookStore();
  WebhookStore(const WebhookStore&) = delete;
  WebhookStore& operator=(const WebhookStore&) = delete;

  // ---- Endpoints, and the replies of their creations (Idempotency-Key)
  struct Reply {
    u64 content_hash = 0;
    int status = 0;
    std::string body;
  };
  // A creation's stored reply under (key_lo, key_hi), if any.
  Result<std::optional<Reply>> reply(u64 key_lo, u64 key_hi);
  // Makes the endpoint (its id assigned), and keeps the reply, in one transaction;
  // nullopt (nothing made) when its merchant has endpoints_max already.
  Result<std::optional<Endpoint>> create_endpoint(Endpoint endpoint, const KeptReply& reply,
                                                  u64 endpoints_max = ~u64{0});
  Result<std::optional<Endpoint>> endpoint(u64 id);
  Result<std::vector<Endpoint>> endpoints(u64 merchant);  // 0: every merchant's
  // Sets what is given; nullopt when there is no such endpoint.
  Result<std::optional<Endpoint>> update_endpoint(u64 id, std::optional<std::string> url,
                                                  std::optional<std::vector<std::string>> events,
                                                  std::optional<bool> disabled, u64 now_ns);
  // A new secret, the old one signing too until grace_until_s, and the reply kept, in one
  // transaction.
  Result<std::optional<Endpoint>> rotate_secret(u64 id, std::string secret, u64 grace_until_s,
                                                const KeptReply& reply);
  // Removes it; its pending deliveries fail ("endpoint deleted"). False: no such one.
  Result<bool> delete_endpoint(u64 id, u64 now_ns);

  // A new store's cursors, and its mark as begun, in one transaction; false (nothing
  // changed) when it was begun before. The worker starts a new store where the
  // journals stood: the events before were the past's, not news to send now.
  Result<bool> initialize(const std::vector<Cursor>& start);
  Result<u64> endpoint_count(u64 merchant);

  // ---- The worker's cursors into the outbox, and the deliveries it makes
  Result<std::vector<Cursor>> cursors();
  // The deliveries and the group's new cursor, in one transaction.
  Status enqueue(const std::vector<NewDelivery>& deliveries, const Cursor& cursor);
  // Deliveries to attempt now: pending, due, each the oldest pending one of its order
  // to its target (an order's events reach a target in order), not to a disabled
  // endpoint, and not to the targets in `busy` nor of the merchants in
  // `busy_merchants` (each at its limit of attempts in flight), nor in `in_flight` (nor
  // after one of its order that is); the earliest due first.
  Result<std::vector<Delivery>> due(u64 now_ns, const std::vector<u64>& in_flight,
                                    const std::vector<std::string>& busy,
                                    const std::vector<u64>& busy_merchants, u32 limit);
  // The attempts' outcomes, in one transaction; a delivery no longer pending (failed
  // meanwhile: its endpoint deleted) stays as it is.
  Status record(const std::vector<Outcome>& outcomes);
  // Pending deliveries past their give-up time fail ("expired"), but for those in
  // flight (their attempt's outcome decides); how many.
  Result<u64> expire(u64 now_ns, const std::vector<u64>& in_flight);
  // Removes up to `limit` final deliveries (delivered or failed) that ended before
  // `finished_before_ns`, the oldest first; how many. Pending ones are never removed.
  Result<u64> prune(u64 finished_before_ns, u32 limit);

  // ---- Reads and control
  Result<std::optional<Delivery>> delivery(u64 id);
  Result<std::vector<Delivery>> deliveries(const DeliveryQuery& query);
  // The newest delivery of the order (to any target), for GET /v1/orders/{id}.
  Result<std::optional<Delivery>> latest_for_order(u64 order_id);
  // Sends it again: pending, due now, until give_up_ns; with the reply `render` makes
  // of it kept under the request's key (reply.render unused), in one transaction, so
  // that a retry replays the answer and sends nothing more. nullopt: no such delivery.
  Result<std::optional<Delivery>> resend(u64 id, u64 now_ns, u64 give_up_ns, const KeptReply& reply,
                                         const std::function<std::string(const Delivery&)>& render);
  // Pending deliveries by target: how many, and the oldest's creation time.
  struct Backlog {
    u64 endpoint = 0;  // 0: ipn_urls, together
    u64 pending = 0;
    u64 oldest_created_ns = 0;
  };
  Result<std::vector<Backlog>> backlog();

 private:
  WebhookStore() = default;
  Status failed(std::string_view what, sqlite3* db) const;
  Result<std::optional<Endpoint>> read_endpoint(sqlite3* db, u64 id);  // REQUIRES: its mutex
  // (Nothing without a key; `body` is made only with one.)  REQUIRES: mutex_
  Status keep(const KeptReply& reply, const std::function<std::string()>& body);

  std::filesystem::path file_;
  std::string label_;
  std::mutex mutex_;  // the writer's
  sqlite3* db_ = nullptr;
  std::mutex read_mutex_;
  sqlite3* reader_ = nullptr;  // IO threads' reads
  std::mutex worker_read_mutex_;
  sqlite3* worker_reader_ = nullptr;  // the worker's (its scans never hold up a request)
};

}  // namespace paygate::webhooks
