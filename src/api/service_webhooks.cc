// Routes of webhooks (docs/WEBHOOKS.md): a merchant's endpoints (register, list, read,
// change, disable, delete, rotate the secret) and the deliveries of its events (list,
// read, send again). They live in the webhook store (webhooks/webhook_store.h), not a
// ledger: registering an endpoint moves no money. A creation or rotation keeps its
// reply in that store with it, under the request's key, which is first claimed in its
// home group like every key (so that a key is one request, whatever route it reaches).
#include <fmt/format.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "api/crypto.h"
#include "api/http_status.h"
#include "api/id_text.h"
#include "api/json_writer.h"
#include "api/render.h"
#include "api/service.h"
#include "api/service_internal.h"
#include "base/hash.h"
#include "base/log.h"
#include "webhooks/target_url.h"

namespace paygate::api {

using detail::decoder;
using detail::wall_ns;
using detail::wall_seconds;

namespace {

constexpr u32 kLookupMs = 2000;
constexpr u32 kLookupsMax = 8;     // endpoint URL checks on their way at once
constexpr u64 kEndpointsMax = 16;  // per merchant (each event goes to every one)

void write_endpoint(JsonWriter& json, const webhooks::Endpoint& e, bool with_secret) {
  json.begin_object();
  json.key("id").id(IdKind::webhook_endpoint, e.id);
  json.key("object").string("webhook_endpoint");
  json.key("merchant").id(principal_id_kind(principal_kind(e.merchant)), e.merchant);
  json.key("url").string(e.url);
  json.key("events").begin_array();
  for (const std::string& type : e.events)
    json.string(type);
  json.end_array();
  json.key("status").string(e.disabled ? "disabled" : "enabled");
  json.key("created").unsigned_number(e.created_s);
  if (with_secret) json.key("secret").string(e.secret);
  if (!e.previous_secret.empty() && e.previous_until_s > wall_seconds()) {
    json.key("previous_secret_expires_at").unsigned_number(e.previous_until_s);
  }
  json.end_object();
}

std::string endpoint_json(const webhooks::Endpoint& e, bool with_secret) {
  std::string out;
  JsonWriter json(out);
  write_endpoint(json, e, with_secret);
  return out;
}

void write_delivery(JsonWriter& json, const webhooks::Delivery& d, bool with_payload) {
  json.begin_object();
  json.key("id").id(IdKind::webhook_delivery, d.id);
  json.key("object").string("webhook_delivery");
  json.key("event").string(d.event);
  json.key("type").string(d.type);
  // (An order's event names the order; a withdrawal's, the withdrawal.)
  const bool withdrawal = d.type.starts_with("withdrawal.");
  json.key("order");
  if (!withdrawal) {
    json.id(IdKind::order, d.order_id);
  } else {
    json.null();
  }
  json.key("withdrawal");
  if (withdrawal) {
    json.id(IdKind::withdrawal, d.order_id);
  } else {
    json.null();
  }
  json.key("endpoint");
  if (d.endpoint != 0) {
    json.id(IdKind::webhook_endpoint, d.endpoint);
  } else {
    json.null();
  }
  json.key("url").string(d.url);
  json.key("status").string(webhooks::name(d.status));
  json.key("attempts").unsigned_number(d.attempts);
  json.key("last_status");
  if (d.last_status != 0) {
    json.unsigned_number(d.last_status);
  } else {
    json.null();
  }
  json.key("last_error");
  if (!d.last_error.empty()) {
    json.string(d.last_error);
  } else {
    json.null();
  }
  json.key("created").unsigned_number(d.created_ns / kNanosPerSecond);
  json.key("next_attempt_at");
  if (d.status == webhooks::DeliveryStatus::pending) {
    json.unsigned_number(d.next_attempt_ns / kNanosPerSecond);
  } else {
    json.null();
  }
  json.key("finished_at");
  if (d.finished_ns != 0) {
    json.unsigned_number(d.finished_ns / kNanosPerSecond);
  } else {
    json.null();
  }
  if (with_payload) json.key("payload").raw(d.body);
  json.end_object();
}

}  // namespace

std::string Service::webhook_event_body(const history::OrderEventRow& e,
                                        const history::OrderRow* texts) const {
  std::string object;
  if (e.withdrawal) {
    // The withdrawal as GET /v1/withdrawals/{id} shows it, closed as the event says.
    const history::TransferRow& row = *e.withdrawal;
    Transfer hold;
    hold.id = TransferId{row.id};
    hold.debit_account_id = AccountId{row.debit};
    hold.credit_account_id = AccountId{row.credit};
    hold.amount = row.amount;
    hold.currency = Currency::from(row.currency);
    hold.status = e.type == "withdrawal.success"  ? TransferStatus::posted
                  : e.type == "withdrawal.failed" ? TransferStatus::voided
                                                  : TransferStatus::expired;
    hold.created_at_ns = row.created_ns;
    hold.expires_at_ns = row.expires_ns;
    render_withdrawal(object, hold, owners_.owner(row.credit).value_or(0), e.destination,
                      e.provider_ref);
  } else {
    OrderCreate said;
    if (texts != nullptr) {
      said.merchant_ref = texts->merchant_ref;
      said.description = texts->description;
      said.metadata = texts->metadata;
      said.ipn_url = texts->ipn_url;
      said.callback_url = texts->callback_url;
    }
    const Order& o = e.order;
    const u64 provider =
        o.provider_account.value != 0 ? owners_.owner(o.provider_account.value).value_or(0) : 0;
    render_order(object, o, order_signature(o), provider, &said);
  }
  std::string out;
  render_webhook_event(out, history::order_event_id(e.group, e.sequence, e.n), e.type,
                       e.at_ns / kNanosPerSecond, e.group, e.sequence, object);
  return out;
}

// A retry under a key the webhook store kept a reply for: that reply again (or the
// key's reuse with another body refused); nullopt: no retry, go on.
std::optional<bool> Service::webhook_replay(Exchange& ex, webhooks::WebhookStore& store,
                                            u64 content) {
  if (ex.key_.empty()) return std::nullopt;
  const Result<std::optional<webhooks::WebhookStore::Reply>> kept =
      store.reply(ex.key_.lo, ex.key_.hi);
  if (!kept.ok()) {
    PG_LOG_ERROR("event=webhook_store_failed message=\"{}\"", kept.status().message());
    return fail(ex, ResultCode::not_durable, "the webhook store cannot be read now; retry");
  }
  if (!kept.value()) return std::nullopt;
  if (kept.value()->content_hash != content) {
    return fail(ex, ResultCode::idempotency_key_reused,
                describe(ResultCode::idempotency_key_reused));
  }
  ex.reply.body = kept.value()->body;
  return finish(ex, static_cast<unsigned>(kept.value()->status));
}

std::optional<IpnState> Service::order_ipn(u64 order_id) const {
  webhooks::Deliverer* w = webhooks_.load(std::memory_order_acquire);
  if (w == nullptr) return std::nullopt;
  const Result<std::optional<webhooks::Delivery>> latest = w->store().latest_for_order(order_id);
  if (!latest.ok()) {
    PG_LOG_ERROR("event=webhook_store_read_failed message=\"{}\"", latest.status().message());
    return std::nullopt;
  }
  if (!latest.value()) return std::nullopt;
  const webhooks::Delivery& d = *latest.value();
  return IpnState{.status = webhooks::name(d.status),
                  .attempts = d.attempts,
                  .last_status = d.last_status,
                  .next_attempt_at_s = d.status == webhooks::DeliveryStatus::pending
                                           ? d.next_attempt_ns / kNanosPerSecond
                                           : 0};
}

bool Service::sees_ipn(const Exchange& ex, const Order& order) const {
  if (ex.principal_.is_operator) return true;
  const Merchant* caller = ex.principal_.merchant.get();
  return caller != nullptr && caller->kind == PrincipalKind::merchant &&
         merchants_.can_see(caller->id, order.merchant);
}

bool Service::ipn_url_allowed(Exchange& ex, const std::string& url) {
  webhooks::Deliverer* w = webhooks_.load(std::memory_order_acquire);
  if (w == nullptr || w->config().allow_private) return true;
  std::string why;
  const std::optional<webhooks::TargetUrl> target = webhooks::parse_target_url(url, &why);
  if (!target) return !fail(ex, ResultCode::invalid_field, "ipn_url: " + why);
  const std::optional<boost::asio::ip::address> literal = webhooks::literal_address(target->host);
  if (literal && !webhooks::address_allowed(*literal, false)) {
    return !fail(ex, ResultCode::url_not_allowed,
                 "ipn_url: a loopback, private, link-local or reserved address; webhooks go to "
                 "public addresses only");
  }
  return true;
}

// A URL a webhook may go to: http(s), and (unless [webhooks] allow_private) a host
// that resolves only to public addresses. The lookup blocks this IO thread for at
// most kLookupMs; registering an endpoint is rare (and rate-limited per merchant).
// Every send checks again, against the addresses it connects to.
bool Service::webhook_url_allowed(Exchange& ex, const std::string& url) {
  webhooks::Deliverer* w = webhooks_.load(std::memory_order_acquire);
  std::string why;
  const std::optional<webhooks::TargetUrl> target = webhooks::parse_target_url(url, &why);
  if (!target) return !fail(ex, ResultCode::invalid_field, "url: " + why);
  if (w->config().allow_private) return true;
  // (Bounded: a merchant's slow name server holds this IO thread at most kLookupMs, and
  // at most kLookupsMax lookups are on their way at once.)
  static std::atomic<u32> lookups{0};
  if (lookups.fetch_add(1, std::memory_order_acq_rel) >= kLookupsMax) {
    lookups.fetch_sub(1, std::memory_order_acq_rel);
    ex.reply.retry_after_s = 1;
    return !fail(ex, ResultCode::overloaded, "too many webhook URLs are being checked; retry");
  }
  struct Release {
    ~Release() { lookups.fetch_sub(1, std::memory_order_acq_rel); }
  } release;
  std::string unresolved;
  const auto results =
      webhooks::resolve_host_within(target->host, target->port, kLookupMs, &unresolved);
  if (results.empty()) {
    return !fail(ex, ResultCode::url_not_allowed,
                 fmt::format("url: the host {} does not resolve ({})", target->host, unresolved));
  }
  for (const auto& entry : results) {
    if (!webhooks::address_allowed(entry.address(), false)) {
      return !fail(ex, ResultCode::url_not_allowed,
                   "url: the host resolves to a loopback, private, link-local or reserved "
                   "address; webhooks go to public addresses only");
    }
  }
  return true;
}

bool Service::webhook_endpoints(Exchange& ex) {
  webhooks::Deliverer* w = webhooks_.load(std::memory_order_acquire);
  if (w == nullptr) {
    return fail(ex, ResultCode::not_implemented,
                "webhooks are off on this server ([webhooks] enabled), or the history store they "
                "read is not open yet (docs/WEBHOOKS.md)");
  }
  webhooks::WebhookStore& store = w->store();
  const Route route = ex.route_;
  const auto store_failed = [&](const Status& s) {
    PG_LOG_ERROR("event=webhook_store_failed message=\"{}\"", s.message());
    return fail(ex, ResultCode::not_durable,
                "the webhook store could not be written or read; nothing changed, retry with the "
                "same Idempotency-Key");
  };
  const auto replay = [&](u64 content) { return webhook_replay(ex, store, content); };
  const u64 caller = ex.principal_.merchant != nullptr ? ex.principal_.merchant->id : 0;
  // When an endpoint change happens, in the time its owner's events are stamped with:
  // the group's command time (the wall clock, steered to gradually after a step of it),
  // so that Endpoint::receives compares like with like.
  const auto command_time_ns = [&](u64 owner) {
    const u64 wall = wall_ns();
    const MerchantRef m = merchants_.find(owner);
    if (m == nullptr || m->group >= engine().groups()) return wall;
    const i64 offset =
        engine().group(m->group).stats().clock_offset_ns.load(std::memory_order_relaxed);
    return static_cast<u64>(static_cast<i64>(wall) + offset);
  };
  std::optional<webhooks::Deliverer::EndpointChange> change_under_way;
  // Merchants (their orders' and withdrawals' events) and users (their withdrawals').
  const bool has_endpoints = ex.principal_.merchant != nullptr &&
                             (ex.principal_.merchant->kind == PrincipalKind::merchant ||
                              ex.principal_.merchant->kind == PrincipalKind::user);

  if (route == Route::webhook_endpoints_list) {
    if (!ex.principal_.is_operator && !has_endpoints) {
      return fail(ex, ResultCode::not_found, "only merchants and users have webhook endpoints");
    }
    const Result<std::vector<webhooks::Endpoint>> all =
        store.endpoints(ex.principal_.is_operator ? 0 : caller);
    if (!all.ok()) return store_failed(all.status());
    JsonWriter json(ex.reply.body);
    json.begin_object();
    json.key("object").string("list");
    json.key("data").begin_array();
    for (const webhooks::Endpoint& e : all.value())
      write_endpoint(json, e, false);
    json.end_array();
    json.key("has_more").boolean(false);
    json.end_object();
    return finish(ex, 200);
  }

  if (route == Route::webhook_endpoints_create) {
    WebhookEndpointChange& change = ex.webhook_change_;
    const u64 content = Hasher{}.add_bytes(ex.view_.body).add(caller).add(5).value();
    if (ex.step_ == 0) {
      if (!has_endpoints) {
        return fail(ex, ResultCode::post_not_allowed,
                    "only merchants and users register webhook endpoints");
      }
      const Problem problem =
          decoder().webhook_endpoint(ex.view_.body, RequestDecoder::EndpointBody::create, &change);
      if (!problem.ok()) return fail_problem(ex, problem);
      if (!ex.key_.empty()) return claim_for_registry(ex, content);
    } else if (!ex.results_[0].ok()) {
      return fail_claim(ex, ex.results_[0].code);
    }
    // A retry's first answer comes before any check that could now say otherwise.
    if (const std::optional<bool> answered = replay(content)) return *answered;
    const auto full = [&] {
      return fail(ex, ResultCode::webhook_endpoints_full,
                  fmt::format("an owner has at most {} webhook endpoints; delete one first",
                              kEndpointsMax));
    };
    const Result<u64> count = store.endpoint_count(caller);  // (before any lookup)
    if (!count.ok()) return store_failed(count.status());
    if (count.value() >= kEndpointsMax) return full();
    if (!webhook_url_allowed(ex, *change.url)) return true;
    webhooks::Endpoint e;
    e.merchant = caller;
    e.url = *change.url;
    e.events = *change.events;
    e.secret = "whsec_" + random_hex(32);
    e.created_s = wall_seconds();
    change_under_way.emplace(*w);
    e.created_ns = command_time_ns(caller);
    const Result<std::optional<webhooks::Endpoint>> made = store.create_endpoint(
        std::move(e),
        webhooks::KeptReply{
            .key_lo = ex.key_.lo,
            .key_hi = ex.key_.hi,
            .content_hash = content,
            .status = 201,
            .render =
                [](const webhooks::Endpoint& made_one) { return endpoint_json(made_one, false); }},
        kEndpointsMax);
    change_under_way.reset();
    if (!made.ok()) return store_failed(made.status());
    if (!made.value()) return full();  // (another request took the last place meanwhile)
    PG_LOG_INFO("event=webhook_endpoint_created endpoint={} merchant={:x}", made.value()->id,
                caller);
    ex.reply.body = endpoint_json(*made.value(), true);
    return finish(ex, 201);
  }

  // A route of one endpoint: the caller's (or its sub-merchant's), or any for operators.
  const Result<std::optional<webhooks::Endpoint>> found = store.endpoint(ex.path_id_);
  if (!found.ok()) return store_failed(found.status());
  if (!found.value() || (!ex.principal_.is_operator &&
                         (caller == 0 || !merchants_.can_see(caller, found.value()->merchant)))) {
    return fail(ex, ResultCode::webhook_endpoint_not_found, "no such webhook endpoint");
  }
  const webhooks::Endpoint& endpoint = *found.value();
  switch (route) {
    case Route::webhook_endpoints_get:
      ex.reply.body = endpoint_json(endpoint, false);
      return finish(ex, 200);
    case Route::webhook_endpoints_update: {
      WebhookEndpointChange& change = ex.webhook_change_;
      if (ex.step_ == 0) {
        const Problem problem = decoder().webhook_endpoint(
            ex.view_.body, RequestDecoder::EndpointBody::update, &change);
        if (!problem.ok()) return fail_problem(ex, problem);
        // The request's key (its signature, without an Idempotency-Key) is claimed: a
        // captured change replayed later is refused, as on every route.
        if (!ex.key_.empty()) {
          return claim_for_registry(
              ex, Hasher{}.add_bytes(ex.view_.body).add(endpoint.id).add(7).value());
        }
      } else if (!ex.results_[0].ok()) {
        return fail_claim(ex, ex.results_[0].code);
      }
      if (change.url && !webhook_url_allowed(ex, *change.url)) return true;
      change_under_way.emplace(*w);
      const Result<std::optional<webhooks::Endpoint>> changed =
          store.update_endpoint(endpoint.id, change.url, change.events, change.disabled,
                                command_time_ns(endpoint.merchant));
      change_under_way.reset();
      if (!changed.ok()) return store_failed(changed.status());
      if (!changed.value())
        return fail(ex, ResultCode::webhook_endpoint_not_found, "no such webhook endpoint");
      ex.reply.body = endpoint_json(*changed.value(), false);
      return finish(ex, 200);
    }
    case Route::webhook_endpoints_delete: {
      change_under_way.emplace(*w);
      const Result<bool> removed = store.delete_endpoint(endpoint.id, wall_ns());
      change_under_way.reset();
      if (!removed.ok()) return store_failed(removed.status());
      if (!removed.value()) {
        return fail(ex, ResultCode::webhook_endpoint_not_found, "no such webhook endpoint");
      }
      JsonWriter json(ex.reply.body);
      json.begin_object();
      json.key("id").id(IdKind::webhook_endpoint, endpoint.id);
      json.key("object").string("webhook_endpoint");
      json.key("deleted").boolean(true);
      json.end_object();
      return finish(ex, 200);
    }
    case Route::webhook_endpoints_rotate: {
      WebhookEndpointChange& change = ex.webhook_change_;
      const u64 content = Hasher{}.add_bytes(ex.view_.body).add(endpoint.id).add(6).value();
      if (ex.step_ == 0) {
        const Problem problem = decoder().webhook_endpoint(
            ex.view_.body, RequestDecoder::EndpointBody::rotate, &change);
        if (!problem.ok()) return fail_problem(ex, problem);
        if (!ex.key_.empty()) return claim_for_registry(ex, content);
      } else if (!ex.results_[0].ok()) {
        return fail_claim(ex, ex.results_[0].code);
      }
      if (const std::optional<bool> answered = replay(content)) return *answered;
      const u64 grace = change.grace_period_s.value_or(w->config().grace_period_s);
      change_under_way.emplace(*w);  // (the worker signs with the endpoints it has loaded)
      const Result<std::optional<webhooks::Endpoint>> rotated = store.rotate_secret(
          endpoint.id, "whsec_" + random_hex(32), wall_seconds() + grace,
          webhooks::KeptReply{
              .key_lo = ex.key_.lo,
              .key_hi = ex.key_.hi,
              .content_hash = content,
              .status = 200,
              .render = [](const webhooks::Endpoint& e) { return endpoint_json(e, false); }});
      change_under_way.reset();
      if (!rotated.ok()) return store_failed(rotated.status());
      if (!rotated.value())
        return fail(ex, ResultCode::webhook_endpoint_not_found, "no such webhook endpoint");
      PG_LOG_INFO("event=webhook_secret_rotated endpoint={} grace_s={}", endpoint.id, grace);
      ex.reply.body = endpoint_json(*rotated.value(), true);
      return finish(ex, 200);
    }
    default:
      return fail(ex, ResultCode::not_found, "no such route");
  }
}

bool Service::webhook_deliveries(Exchange& ex) {
  webhooks::Deliverer* w = webhooks_.load(std::memory_order_acquire);
  if (w == nullptr) {
    return fail(ex, ResultCode::not_implemented,
                "webhooks are off on this server ([webhooks] enabled), or the history store they "
                "read is not open yet (docs/WEBHOOKS.md)");
  }
  webhooks::WebhookStore& store = w->store();
  const auto store_failed = [&](const Status& s) {
    PG_LOG_ERROR("event=webhook_store_failed message=\"{}\"", s.message());
    return fail(ex, ResultCode::not_durable, "the webhook store cannot be read now; retry");
  };
  const u64 caller = ex.principal_.merchant != nullptr ? ex.principal_.merchant->id : 0;
  const auto visible = [&](u64 merchant) {
    return ex.principal_.is_operator || (caller != 0 && merchants_.can_see(caller, merchant));
  };

  if (ex.route_ == Route::webhook_deliveries_list) {
    DeliveryListQuery q;
    if (const Problem p = parse_delivery_list_query(ex.view_.target, &q); !p.ok()) {
      return fail_problem(ex, p);
    }
    webhooks::DeliveryQuery query;
    query.merchant =
        ex.principal_.is_operator ? q.merchant.value_or(0) : q.merchant.value_or(caller);
    if (!visible(query.merchant == 0 ? caller : query.merchant) ||
        (!ex.principal_.is_operator && query.merchant == 0)) {
      return fail(ex, ResultCode::merchant_not_found, "no such merchant");
    }
    // An order's, a withdrawal's or an endpoint's deliveries are all of one merchant:
    // asked for without merchant=, they are shown if the caller sees that merchant (a
    // sub-merchant's too), else none, as for an id that does not exist.
    const bool of_one_object = !ex.principal_.is_operator && !q.merchant && (q.order || q.endpoint);
    if (of_one_object) query.merchant = 0;
    query.endpoint = q.endpoint.value_or(0);
    if (q.status) query.status = webhooks::delivery_status_named(*q.status);
    query.order = q.order;
    query.order_is_withdrawal = q.withdrawal;
    query.before_id = q.cursor;
    query.limit = q.limit + 1;  // one more: is there a next page
    Result<std::vector<webhooks::Delivery>> page = store.deliveries(query);
    if (!page.ok()) return store_failed(page.status());
    std::vector<webhooks::Delivery>& rows = page.value();
    bool more = rows.size() > q.limit;
    if (more) rows.resize(q.limit);
    if (of_one_object) {
      std::erase_if(rows, [&](const webhooks::Delivery& d) { return !visible(d.merchant); });
      more = more && !rows.empty();
    }
    JsonWriter json(ex.reply.body);
    json.begin_object();
    json.key("object").string("list");
    json.key("data").begin_array();
    for (const webhooks::Delivery& d : rows)
      write_delivery(json, d, false);
    json.end_array();
    json.key("has_more").boolean(more);
    json.key("next_cursor");
    if (more) {
      json.id(IdKind::webhook_delivery, rows.back().id);
    } else {
      json.null();
    }
    json.end_object();
    return finish(ex, 200);
  }

  const Result<std::optional<webhooks::Delivery>> found = store.delivery(ex.path_id_);
  if (!found.ok()) return store_failed(found.status());
  const bool missing = !found.value() || !visible(found.value()->merchant);
  // (A keyed resend's retry is answered from its kept reply even when the delivery has
  // been pruned since: the key is the caller's own.)
  const bool keyed_resend = ex.route_ == Route::webhook_deliveries_resend && !ex.key_.empty();
  if (missing && !keyed_resend) {
    return fail(ex, ResultCode::webhook_delivery_not_found, "no such webhook delivery");
  }
  if (ex.route_ == Route::webhook_deliveries_resend) {
    const u64 content = Hasher{}.add(ex.path_id_).add(8).value();
    if (ex.step_ == 0 && !ex.key_.empty()) return claim_for_registry(ex, content);
    if (ex.step_ > 0 && !ex.results_[0].ok()) return fail_claim(ex, ex.results_[0].code);
    // A retry answers as the first did and sends nothing more.
    if (const std::optional<bool> answered = webhook_replay(ex, store, content)) {
      return *answered;
    }
    if (missing)
      return fail(ex, ResultCode::webhook_delivery_not_found, "no such webhook delivery");
    if (found.value()->endpoint != 0) {
      const Result<std::optional<webhooks::Endpoint>> endpoint =
          store.endpoint(found.value()->endpoint);
      if (!endpoint.ok()) return store_failed(endpoint.status());
      if (!endpoint.value()) {
        return fail(ex, ResultCode::webhook_endpoint_not_found,
                    "the delivery's endpoint was deleted: nothing to send it to");
      }
    }
    const u64 now = wall_ns();
    const auto render = [](const webhooks::Delivery& d) {
      std::string out;
      JsonWriter json(out);
      write_delivery(json, d, false);
      return out;
    };
    const Result<std::optional<webhooks::Delivery>> again = store.resend(
        ex.path_id_, now, now + w->config().retry_period_ns,
        webhooks::KeptReply{
            .key_lo = ex.key_.lo, .key_hi = ex.key_.hi, .content_hash = content, .status = 200},
        render);
    if (!again.ok()) return store_failed(again.status());
    if (!again.value())
      return fail(ex, ResultCode::webhook_delivery_not_found, "no such webhook delivery");
    PG_LOG_INFO("event=webhook_resend delivery={}", ex.path_id_);
    ex.reply.body = render(*again.value());
    return finish(ex, 200);
  }
  JsonWriter json(ex.reply.body);
  write_delivery(json, *found.value(), true);
  return finish(ex, 200);
}

}  // namespace paygate::api
