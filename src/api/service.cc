// The request plumbing of Service: begin, routing and authentication (dispatch), the
// step machine (resume, step), submitting to groups, answering, visibility. Each
// resource's routes are in a file of its own: service_merchants.cc, service_accounts.cc,
// service_transfers.cc, service_batch.cc, service_events.cc, service_system.cc; keys and
// claims in service_keys.cc.
#include "api/service.h"

#include <fmt/format.h>
#include <boost/beast/core/string.hpp>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <utility>

#include "api/crypto.h"
#include "api/http_status.h"
#include "api/id_text.h"
#include "api/render.h"
#include "api/service_internal.h"
#include "base/clock.h"
#include "base/log.h"

namespace paygate::api {

using detail::wall_seconds;

namespace {

// Splits "/v1/accounts/acc_…/entries?x=y" into path segments after "/v1".
struct Path {
  std::string_view parts[4];
  std::size_t count = 0;
  bool v1 = false;
};

Path split_path(std::string_view target) {
  Path path;
  target = target.substr(0, target.find('?'));
  if (target.substr(0, 4) != "/v1/") return path;
  path.v1 = true;
  target.remove_prefix(4);
  while (!target.empty() && path.count < std::size(path.parts)) {
    const std::size_t slash = target.find('/');
    path.parts[path.count++] = target.substr(0, slash);
    if (slash == std::string_view::npos) return path;
    target.remove_prefix(slash + 1);
  }
  if (!target.empty()) path.count = std::size(path.parts) + 1;  // too deep: no route
  return path;
}

// Whether a Content-Type names JSON: the media type application/json, its type and
// subtype in any case (RFC 9110, 8.3.1), parameters such as charset allowed. A prefix
// match took "application/jsonp"; an exact one refused "APPLICATION/JSON".
bool is_json_media_type(std::string_view content_type) {
  std::string_view type = content_type.substr(0, content_type.find(';'));
  while (!type.empty() && (type.front() == ' ' || type.front() == '\t'))
    type.remove_prefix(1);
  while (!type.empty() && (type.back() == ' ' || type.back() == '\t'))
    type.remove_suffix(1);
  return boost::beast::iequals(boost::beast::string_view(type.data(), type.size()),
                               "application/json");
}

bool valid_idempotency_key(std::string_view key) {
  if (key.empty() || key.size() > 255) return false;
  for (const char c : key) {
    if (c < 0x21 || c > 0x7E) return false;  // visible ASCII only
  }
  return true;
}

}  // namespace

Service::Service(MerchantRegistry& merchants, Authenticator& auth, OwnerIndex& owners,
                 ServiceConfig config)
    : merchants_(merchants),
      auth_(auth),
      owners_(owners),
      config_(std::move(config)),
      metrics_(std::make_unique<HttpMetrics>()),
      auth_failures_(config_.auth_failure_rate_per_s, config_.auth_failure_burst,
                     config_.auth_failure_addresses_max),
      order_key_(to_hex(hmac_sha256(config_.idempotency_secret, {"paygate order signature"}))) {}

namespace {
template <typename T>
void release_if_larger(T& buffer, std::size_t bytes) noexcept {
  if (buffer.capacity() * sizeof(typename T::value_type) > bytes) T().swap(buffer);
}
}  // namespace

void Exchange::release_large_buffers(std::size_t bytes) noexcept {
  release_if_larger(reply.body, bytes);
  release_if_larger(commands_, bytes);
  release_if_larger(results_, bytes);
  release_if_larger(lookup_ids_, bytes);
  release_if_larger(transfers_, bytes);
  release_if_larger(op_refused_, bytes);
  release_if_larger(op_group_, bytes);
  release_if_larger(op_crosses_, bytes);
  release_if_larger(op_hold_, bytes);
  release_if_larger(op_results_, bytes);
  release_if_larger(events_, bytes);
}

u64 Service::now_ns() const noexcept {
  return steady_ns();
}

bool Service::finish(Exchange& ex, unsigned status) {
  ex.reply.status = status;
  metrics_->record(ex.route_, status, now_ns() - ex.started_ns_);
  return true;
}

bool Service::fail(Exchange& ex, ResultCode code, std::string_view message) {
  ex.reply.body.clear();
  ex.reply.text = false;
  ex.reply.minimal = false;
  if (code == ResultCode::idempotency_capacity && ex.group_ != nullptr) {
    ex.reply.retry_after_s = key_room_in_s(*ex.group_);
  }
  metrics_->count_refusal(code);
  render_error(ex.reply.body, code, message);
  return finish(ex, http_status(code));
}

// Until a full key table of `group` has room again: when its oldest key leaves the
// window (whole seconds, at least 1).
u32 Service::key_room_in_s(const Group& group) const {
  const u64 room_at = std::max(group.stats().idempotency_room_at_ns.load(std::memory_order_relaxed),
                               group.stats().signature_room_at_ns.load(std::memory_order_relaxed));
  const u64 now = detail::wall_ns();
  if (room_at <= now) return 1;
  return static_cast<u32>(
      std::min<u64>((room_at - now + kNanosPerSecond - 1) / kNanosPerSecond, ~u32{0}));
}

bool Service::fail_problem(Exchange& ex, const Problem& problem) {
  return fail(ex, problem.code, problem.message);
}

// A step goes to its group: the first one ends the edge's stage.
void Service::mark_submitted(Exchange& ex) noexcept {
  ex.submitted_ns_ = now_ns();
  if (!ex.edge_timed_) {
    ex.edge_timed_ = true;
    metrics_->record_stage(HttpMetrics::Stage::edge,
                           ex.submitted_ns_ - std::min(ex.submitted_ns_, ex.started_ns_));
  }
}

// A step came back: its wait in the ring, its time in the group, the wait for us.
void Service::time_stages(Exchange& ex) noexcept {
  const u64 taken = ex.outcome_.taken_ns;
  if (taken == 0 || ex.submitted_ns_ == 0) return;  // refused at the door, not taken
  const u64 now = now_ns();
  const u64 completed = std::max(ex.outcome_.released_ns, taken);
  metrics_->record_stage(HttpMetrics::Stage::queued, taken - std::min(taken, ex.submitted_ns_));
  metrics_->record_stage(HttpMetrics::Stage::durable, completed - taken);
  metrics_->record_stage(HttpMetrics::Stage::wake, now - std::min(now, completed));
  ex.submitted_ns_ = 0;
}

bool Service::submit_to_group(Exchange& ex, const Request& request, bool last_step) {
  ex.last_step_ = last_step;
  mark_submitted(ex);
  const ResultCode code = ex.group_->submit(request);
  if (code == ResultCode::ok) return false;
  return fail(ex, code,
              code == ResultCode::overloaded ? "the group is overloaded; retry shortly"
                                             : "the request could not be taken");
}

// Submits ex.commands_[0], whose result lands in ex.results_[0].
bool Service::submit_one(Exchange& ex, bool last_step, bool annotated) {
  const Request request{.kind = RequestKind::commands,
                        .count = 1,
                        .commands = ex.commands_.data(),
                        .results = ex.results_.data(),
                        .completion = &ex};
  return submit(ex, annotated ? with_annotations(ex, request) : request, last_step);
}

void Service::annotate_transfer(Exchange& ex, u32 command, const TransferCreate& t) {
  if (!t.reference.empty())
    ex.annotations_.push_back({command, journal::AnnotationKind::reference, t.reference});
  if (!t.metadata.empty())
    ex.annotations_.push_back({command, journal::AnnotationKind::metadata, t.metadata});
}

void Service::annotate(Exchange& ex, journal::AnnotationKind kind, const std::string& text) {
  if (!text.empty()) ex.annotations_.push_back({0, kind, text});
}

Request Service::with_annotations(const Exchange& ex, Request request) {
  request.annotations = ex.annotations_.data();
  request.annotation_count = static_cast<u32>(ex.annotations_.size());
  return request;
}

bool Service::begin(const HttpRequestView& request, Exchange& ex) {
  ex.view_ = request;
  ex.step_ = 0;
  ex.last_step_ = true;
  ex.started_ns_ = now_ns();
  ex.submitted_ns_ = 0;
  ex.edge_timed_ = false;
  ex.route_ = Route::unknown;
  ex.reply.body.clear();
  ex.reply.text = false;
  ex.reply.retry_after_s = 0;
  ex.reply.minimal = false;
  ex.principal_ = Principal{};
  ex.key_ = IdempotencyKey{};
  ex.key_lane_ = KeyLane::client;
  ex.signature_key_ = IdempotencyKey{};
  ex.key_taken_ = false;
  ex.annotations_.clear();
  ex.claim_step_ = Exchange::ClaimStep::none;
  ex.carrying_ = false;
  ex.between_groups_ = false;  // (the exchange is reused, request after request)
  ex.redirect_waited_ = false;
  ex.rerun_step_ = false;
  ex.history_wait_until_ns_ = 0;
  ex.group_ = nullptr;
  ex.batch_running_ = false;
  return dispatch(ex);
}

bool Service::dispatch(Exchange& ex) {
  const std::string_view method = ex.view_.method;
  const std::string_view target = ex.view_.target;
  const std::string_view path = target.substr(0, target.find('?'));
  const bool get = method == "GET";
  const bool post = method == "POST";
  const bool del = method == "DELETE";

  if (path == "/healthz" || path == "/readyz" || path == "/metrics") {
    ex.route_ = path == "/healthz"  ? Route::healthz
                : path == "/readyz" ? Route::readyz
                                    : Route::metrics;
    if (!get) return fail(ex, ResultCode::method_not_allowed, "use GET");
    if (ex.route_ == Route::readyz && !ready()) {
      return fail(ex, ResultCode::not_ready, "recovery has not finished");
    }
    if (ex.route_ == Route::metrics) {
      ex.reply.text = true;
      render_metrics_page(ex.reply.body);
    } else {
      ex.reply.body = ex.route_ == Route::healthz ? R"({"status":"ok"})" : R"({"status":"ready"})";
    }
    return finish(ex, 200);
  }

  // Routing: which resource, and is the method one it has.
  const Path p = split_path(target);
  bool method_ok = false;
  if (p.v1 && p.count >= 1) {
    const std::string_view r = p.parts[0];
    const std::size_t n = p.count;
    if (r == "merchants" && n == 1) {
      ex.route_ = Route::merchants_create, method_ok = post;
    } else if (r == "merchants" && n == 2) {
      ex.route_ = Route::merchants_get, method_ok = get;
    } else if (r == "merchants" && n == 3 && p.parts[2] == "keys") {
      ex.route_ = Route::merchants_keys, method_ok = post;
    } else if (r == "merchants" && n == 3 && p.parts[2] == "quotas") {
      ex.route_ = post ? Route::merchants_quotas_set : Route::merchants_quotas_get;
      method_ok = post || get;
    } else if (r == "merchants" && n == 3 && p.parts[2] == "risk") {
      ex.route_ = post ? Route::merchants_risk_set : Route::merchants_risk_get;
      method_ok = post || get;
    } else if (r == "accounts" && n == 1) {
      ex.route_ = Route::accounts_create, method_ok = post;
    } else if (r == "accounts" && n == 2) {
      ex.route_ = Route::accounts_get, method_ok = get;
    } else if (r == "accounts" && n == 3 && p.parts[2] == "entries") {
      ex.route_ = Route::accounts_entries, method_ok = get;
    } else if (r == "transfers" && n == 1) {
      ex.route_ = Route::transfers_create, method_ok = post;
    } else if (r == "transfers" && n == 2) {
      ex.route_ = Route::transfers_get, method_ok = get;
    } else if (r == "transfers" && n == 3 && (p.parts[2] == "post" || p.parts[2] == "void")) {
      ex.route_ = p.parts[2] == "post" ? Route::transfers_post : Route::transfers_void;
      method_ok = post;
    } else if (r == "batch" && n == 1) {
      ex.route_ = Route::batch, method_ok = post;
    } else if (r == "events" && n == 1) {
      ex.route_ = Route::events, method_ok = get;
    } else if ((r == "users" || r == "providers") && n <= 3) {
      const bool user = r == "users";
      if (n == 1) {
        ex.route_ = user ? Route::users_create : Route::providers_create, method_ok = post;
      } else if (n == 2) {
        ex.route_ = user ? Route::users_get : Route::providers_get, method_ok = get;
      } else if (p.parts[2] == "keys") {
        ex.route_ = user ? Route::users_keys : Route::providers_keys, method_ok = post;
      }
    } else if (r == "orders" && n == 1) {
      ex.route_ = post ? Route::orders_create : Route::orders_list, method_ok = post || get;
    } else if (r == "orders" && n == 2) {
      ex.route_ = Route::orders_get, method_ok = get;
    } else if (r == "orders" && n == 3) {
      const std::string_view action = p.parts[2];
      ex.route_ = action == "checkout"  ? Route::orders_checkout
                  : action == "result"  ? Route::orders_result
                  : action == "resolve" ? Route::orders_resolve
                  : action == "cancel"  ? Route::orders_cancel
                  : action == "refunds" ? Route::orders_refunds
                                        : Route::unknown;
      method_ok = post;
    } else if (r == "withdrawals" && n == 1) {
      ex.route_ = Route::withdrawals_create, method_ok = post;
    } else if (r == "withdrawals" && n == 2) {
      ex.route_ = Route::withdrawals_get, method_ok = get;
    } else if (r == "withdrawals" && n == 3 && p.parts[2] == "result") {
      ex.route_ = Route::withdrawals_result, method_ok = post;
    } else if (r == "webhook_endpoints" && n == 1) {
      ex.route_ = post ? Route::webhook_endpoints_create : Route::webhook_endpoints_list;
      method_ok = post || get;
    } else if (r == "webhook_endpoints" && n == 2) {
      ex.route_ = post  ? Route::webhook_endpoints_update
                  : del ? Route::webhook_endpoints_delete
                        : Route::webhook_endpoints_get;
      method_ok = post || get || del;
    } else if (r == "webhook_endpoints" && n == 3 && p.parts[2] == "rotate") {
      ex.route_ = Route::webhook_endpoints_rotate, method_ok = post;
    } else if (r == "webhook_deliveries" && n == 1) {
      ex.route_ = Route::webhook_deliveries_list, method_ok = get;
    } else if (r == "webhook_deliveries" && n == 2) {
      ex.route_ = Route::webhook_deliveries_get, method_ok = get;
    } else if (r == "webhook_deliveries" && n == 3 && p.parts[2] == "resend") {
      ex.route_ = Route::webhook_deliveries_resend, method_ok = post;
    }
  }
  if (ex.route_ == Route::unknown) return fail(ex, ResultCode::not_found, "no such route");
  if (!method_ok) return fail(ex, ResultCode::method_not_allowed, "method not allowed here");
  if (draining_.load(std::memory_order_acquire)) {
    return fail(ex, ResultCode::shutting_down, "the server is stopping; retry elsewhere or later");
  }
  if (!ready()) return fail(ex, ResultCode::not_ready, "recovery has not finished");

  // Who is calling.
  // An address that keeps failing is turned away before its credentials are checked.
  if (!ex.view_.client.empty() &&
      !auth_failures_.may_try(ex.view_.client, now_ns(), &ex.reply.retry_after_s)) {
    metrics_->rate_limited.fetch_add(1, std::memory_order_relaxed);
    return fail(ex, ResultCode::rate_limited,
                "too many failed authentications from this address; see Retry-After");
  }
  // Reads are not replay-checked (a poll may repeat a signature); POSTs are.
  const Problem auth = auth_.authenticate(Credentials{.method = ex.view_.method,
                                                      .target = ex.view_.target,
                                                      .body = ex.view_.body,
                                                      .authorization = ex.view_.authorization,
                                                      .key_id = ex.view_.key_id,
                                                      .timestamp = ex.view_.timestamp,
                                                      .signature = ex.view_.signature,
                                                      .check_replay = !get},
                                          wall_seconds(), &ex.principal_);
  if (!auth.ok()) {
    metrics_->auth_failures.fetch_add(1, std::memory_order_relaxed);
    u64 failures = 0;
    if (!ex.view_.client.empty() && auth_failures_.failed(ex.view_.client, now_ns(), &failures)) {
      PG_LOG_WARN("event=auth_failures_limited client={} failures={} last_code={}", ex.view_.client,
                  failures, name(auth.code));
    }
    if (auth.code == ResultCode::replay_cache_full) {
      ex.reply.retry_after_s = std::max<u32>(1, auth_.replay_cache_room_in_s(wall_seconds()));
    }
    return fail_problem(ex, auth);
  }
  const bool limited =
      ex.principal_.merchant != nullptr
          ? !ex.principal_.merchant->bucket->take(now_ns(), config_.rate_per_s, config_.rate_burst,
                                                  &ex.reply.retry_after_s)
          : !operator_bucket_.take(now_ns(), config_.operator_rate_per_s,
                                   config_.operator_rate_burst, &ex.reply.retry_after_s);
  if (limited) {
    metrics_->rate_limited.fetch_add(1, std::memory_order_relaxed);
    return fail(ex, ResultCode::rate_limited, "rate limit reached; see Retry-After");
  }

  if (post) {
    if (!ex.view_.body.empty() && !is_json_media_type(ex.view_.content_type)) {
      return fail(ex, ResultCode::unsupported_media_type, "send Content-Type: application/json");
    }
    if (!ex.view_.idempotency_key.empty() || ex.view_.idempotency_key_sent) {
      // An empty header is refused rather than taken for none: a client that meant to
      // send a key must not get a request that a retry could repeat.
      if (!valid_idempotency_key(ex.view_.idempotency_key)) {
        return fail(ex, ResultCode::invalid_idempotency_key,
                    "Idempotency-Key must be 1 to 255 visible ASCII characters");
      }
      ex.key_ = derive_key(ex);
      // Kept by the ledger with the key, so that a replay with the key dropped or
      // changed moves nothing after a restart either.
      if (ex.principal_.signed_request) ex.signature_key_ = derive_signature_key(ex);
    } else if (ex.principal_.signed_request) {
      // No key: the signature itself is kept by the ledger, so that a captured request
      // replayed after a restart (when the replay cache is empty) moves nothing.
      ex.key_ = derive_signature_key(ex);
      ex.key_lane_ = KeyLane::signature;
    }
  }

  if (p.count >= 2) {
    // A malformed id names nothing: the same answer as an unknown one. A withdrawal's
    // id is its hold's.
    const std::string_view r = p.parts[0];
    std::optional<u64> id;
    ResultCode unknown = ResultCode::transfer_not_found;
    bool principal = true;
    if (r == "merchants") {
      id = parse_principal_id(PrincipalKind::merchant, p.parts[1]);
      unknown = ResultCode::merchant_not_found;
    } else if (r == "webhook_endpoints" || r == "webhook_deliveries") {  // no group's
      const bool endpoint = r == "webhook_endpoints";
      id = parse_id(endpoint ? IdKind::webhook_endpoint : IdKind::webhook_delivery, p.parts[1]);
      unknown = endpoint ? ResultCode::webhook_endpoint_not_found
                         : ResultCode::webhook_delivery_not_found;
    } else if (r == "users") {
      id = parse_principal_id(PrincipalKind::user, p.parts[1]);
      unknown = ResultCode::user_not_found;
    } else if (r == "providers") {
      id = parse_principal_id(PrincipalKind::provider, p.parts[1]);
      unknown = ResultCode::provider_not_found;
    } else {
      principal = false;
      const IdKind kind = r == "accounts"      ? IdKind::account
                          : r == "withdrawals" ? IdKind::withdrawal
                          : r == "orders"      ? IdKind::order
                                               : IdKind::transfer;
      id = parse_id(kind, p.parts[1]);
      unknown = kind == IdKind::account      ? ResultCode::account_not_found
                : kind == IdKind::withdrawal ? ResultCode::withdrawal_not_found
                : kind == IdKind::order      ? ResultCode::order_not_found
                                             : ResultCode::transfer_not_found;
    }
    if (!id) return fail(ex, unknown, "no such id");
    ex.path_id_ = *id;
    if (!principal) {
      ex.group_ = engine().route(*id);
      if (ex.group_ == nullptr) return fail(ex, unknown, "no such id");
    }
  }
  return step(ex);
}

bool Service::resume(Exchange& ex) {
  time_stages(ex);
  if (ex.outcome_.status != ResultCode::ok &&
      !(ex.carrying_ && ex.claim_step_ == Exchange::ClaimStep::none)) {
    // A provider's onboarding that stops half-way leaves it inert; a retry with the
    // same key onboards a new one (service_merchants.cc).
    if (ex.route_ == Route::providers_create && ex.provider_id_ != 0) {
      merchants_.abandon_onboarding(ex.key_);
    }
    return fail(ex, ex.outcome_.status,
                ex.outcome_.status == ResultCode::not_durable
                    ? "the journal could not make this durable; its outcome is unknown, retry "
                      "with the same Idempotency-Key"
                    : "the server is stopping; retry with the same Idempotency-Key");
  }
  if (ex.claim_step_ != Exchange::ClaimStep::none) {
    const bool separate = ex.claim_step_ == Exchange::ClaimStep::separate;
    ex.claim_step_ = Exchange::ClaimStep::none;
    if (!ex.claim_result_.ok()) return fail_claim(ex, ex.claim_result_.code);
    if (separate) {  // the key is taken: now the request itself, where it runs
      move_key(ex);
      ex.group_ = ex.stashed_group_;
      return submit_to_group(ex, ex.stashed_, ex.stashed_last_step_);
    }
  }
  if (ex.carrying_) {
    // A step between groups: the machine reads its outcome (a step not made durable
    // included) and takes the next; the route answers once it is done.
    ex.carry_.on_done(ex.outcome_);
    if (const std::optional<bool> answered = carry_step(ex)) return *answered;
  }
  if (!std::exchange(ex.rerun_step_, false)) ++ex.step_;
  return step(ex);
}

bool Service::step(Exchange& ex) {
  switch (ex.route_) {
    case Route::merchants_create:
      return create_merchant(ex);
    case Route::merchants_get:
      return get_merchant(ex);
    case Route::merchants_keys:
      return rotate_key(ex);
    case Route::merchants_quotas_get:
      return get_quotas(ex);
    case Route::merchants_quotas_set:
      return set_quotas(ex);
    case Route::merchants_risk_get:
    case Route::merchants_risk_set:
      return merchant_risk(ex);
    case Route::accounts_create:
      return create_account(ex);
    case Route::accounts_get:
      return get_account(ex);
    case Route::transfers_create:
      return create_transfer(ex);
    case Route::transfers_get:
      return get_transfer(ex);
    case Route::transfers_post:
    case Route::transfers_void:
      return pending_action(ex);
    case Route::batch:
      return batch(ex);
    case Route::accounts_entries:
      return read_entries(ex);
    case Route::events:
      return read_events(ex);
    case Route::users_create:
      return create_merchant(ex);
    case Route::providers_create:
      return create_provider(ex);
    case Route::users_get:
    case Route::providers_get:
      return get_merchant(ex);
    case Route::users_keys:
    case Route::providers_keys:
      return rotate_key(ex);
    case Route::withdrawals_create:
      return create_withdrawal(ex);
    case Route::withdrawals_get:
      return get_withdrawal(ex);
    case Route::withdrawals_result:
      return pending_action(ex);
    case Route::orders_create:
      return create_order(ex);
    case Route::orders_list:
      return list_orders(ex);
    case Route::orders_get:
      return get_order(ex);
    case Route::orders_checkout:
    case Route::orders_result:
    case Route::orders_resolve:
    case Route::orders_cancel:
    case Route::orders_refunds:
      return order_step(ex);
    case Route::webhook_endpoints_create:
    case Route::webhook_endpoints_list:
    case Route::webhook_endpoints_get:
    case Route::webhook_endpoints_update:
    case Route::webhook_endpoints_delete:
    case Route::webhook_endpoints_rotate:
      return webhook_endpoints(ex);
    case Route::webhook_deliveries_list:
    case Route::webhook_deliveries_get:
    case Route::webhook_deliveries_resend:
      return webhook_deliveries(ex);
    default:
      return fail(ex, ResultCode::not_found, "no such route");
  }
}

bool Service::visible_account(const Exchange& ex, u64 account_id) const {
  // Operators see every account, the ledger's clearing accounts too (which the owner
  // index does not list); the group's lookup then says whether it exists.
  if (ex.principal_.is_operator) return true;
  const auto owner = owners_.owner(account_id);
  return owner && visible_owner(ex, *owner);
}

// Operators see every account; a merchant its own and its sub-merchants' (an
// account without an owner is an operator's).
bool Service::visible_owner(const Exchange& ex, u64 owner) const {
  if (ex.principal_.is_operator) return true;
  return owner != 0 && merchants_.can_see(ex.principal_.merchant->id, owner);
}

}  // namespace paygate::api
