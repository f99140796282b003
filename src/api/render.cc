#include "api/render.h"

#include <algorithm>

#include "api/id_text.h"
#include "api/json_writer.h"
#include "api/page_query.h"

namespace paygate::api {
namespace {

void owner_field(JsonWriter& json, u64 owner) {
  json.key("owner");
  if (owner == 0) {
    json.null();
  } else {
    json.id(principal_id_kind(principal_kind(owner)), owner);
  }
}

void cursor_field(JsonWriter& json, std::string_view name, u32 group, std::optional<EventKey> key) {
  json.key(name);
  if (key) {
    json.string(cursor_text(Cursor{group, *key}));
  } else {
    json.null();
  }
}

// The fields every event and statement line shares.
void event_head(JsonWriter& json, u32 group, const LedgerEvent& e) {
  cursor_field(json, "cursor", group, key_of(e));
  json.key("sequence").unsigned_number(e.sequence);
  json.key("type").string(name(e.kind));
  json.key("at").unsigned_number(e.timestamp_ns / kNanosPerSecond);
}

// What a hold's closing gave back to the debit account (a capture's rest, a void, an
// expiry).
void released_field(JsonWriter& json, const LedgerEvent& e) {
  if (e.kind == LedgerEventKind::pending_posted || e.kind == LedgerEventKind::pending_voided ||
      e.kind == LedgerEventKind::pending_expired) {
    json.key("released").unsigned_number(e.released);
  }
}

// An event as GET /v1/events shows it.
void event_object(JsonWriter& json, u32 group, const LedgerEvent& e) {
  json.begin_object();
  event_head(json, group, e);
  json.key("currency").string(e.currency.letters());
  if (e.kind == LedgerEventKind::account_created) {
    json.key("account_id").id(IdKind::account, e.id);
    owner_field(json, e.owner.value);
    json.key("kind").string(name(static_cast<AccountKind>(e.detail)));
  } else {
    json.key("transfer_id").id(IdKind::transfer, e.id);
    json.key("debit_account").id(IdKind::account, e.debit_account_id.value);
    json.key("credit_account").id(IdKind::account, e.credit_account_id.value);
    json.key("amount").unsigned_number(e.amount);
    released_field(json, e);
  }
  json.end_object();
}

}  // namespace

void render_event_message(std::string& key, std::string& value, u32 group, const LedgerEvent& e) {
  // Keyed by the account the event is about: the one made, or the one debited.
  key = id_text(IdKind::account,
                e.kind == LedgerEventKind::account_created ? e.id : e.debit_account_id.value);
  JsonWriter json(value);
  event_object(json, group, e);
}

void render_order_change_message(std::string& key, std::string& value, u32 group,
                                 const history::OrderChangeRow& change) {
  const Order& order = change.order.order;
  key = id_text(IdKind::order, order.id);
  JsonWriter json(value);
  json.begin_object();
  json.key("object").string("order_change");
  json.key("order_id").id(IdKind::order, order.id);
  json.key("group").unsigned_number(group);
  json.key("sequence").unsigned_number(change.sequence);
  json.key("n").unsigned_number(change.n);
  json.key("status").string(name(change.status));
  json.key("at").unsigned_number(change.at_ns / kNanosPerSecond);
  json.key("merchant").id(IdKind::merchant, order.merchant);
  json.key("merchant_ref");
  if (change.order.merchant_ref.empty()) {
    json.null();  // (an order the store's history began with: its texts are not there)
  } else {
    json.string(change.order.merchant_ref);
  }
  json.key("amount").unsigned_number(order.amount);
  json.key("amount_refunded").unsigned_number(change.amount_refunded);
  json.key("currency").string(order.currency.letters());
  json.end_object();
}

void render_events(std::string& out, u32 group, std::span<const LedgerEvent> events,
                   std::optional<EventKey> next, bool more) {
  JsonWriter json(out);
  json.begin_object().key("events").begin_array();
  for (const LedgerEvent& e : events)
    event_object(json, group, e);
  json.end_array();
  cursor_field(json, "next_cursor", group, next);
  json.key("has_more").boolean(more);
  json.end_object();
}

void render_entries(std::string& out, u32 group, u64 account, std::span<const LedgerEvent> lines,
                    bool more, bool complete) {
  JsonWriter json(out);
  json.begin_object().key("entries").begin_array();
  for (const LedgerEvent& e : lines) {
    const bool debit = e.debit_account_id.value == account;
    json.begin_object();
    event_head(json, group, e);
    json.key("transfer_id").id(IdKind::transfer, e.id);
    json.key("direction").string(debit ? "debit" : "credit");
    json.key("counterparty")
        .id(IdKind::account, debit ? e.credit_account_id.value : e.debit_account_id.value);
    json.key("amount").unsigned_number(e.amount);
    released_field(json, e);
    json.key("balance_after").number(debit ? e.debit_balance : e.credit_balance);
    json.key("currency").string(e.currency.letters());
    json.end_object();
  }
  json.end_array();
  cursor_field(json, "next_cursor", group,
               more && !lines.empty() ? std::optional(key_of(lines.back())) : std::nullopt);
  json.key("has_more").boolean(more);
  json.key("history_complete").boolean(!more && complete);
  json.end_object();
}

void render_error(std::string& out, ResultCode code, std::string_view message) {
  JsonWriter json(out);
  json.begin_object().key("error").begin_object();
  json.key("code").string(name(code));
  json.key("message").string(message);
  json.end_object().end_object();
}

void render_account(std::string& out, const Account& a) {
  JsonWriter json(out);
  json.begin_object();
  json.key("id").id(IdKind::account, a.id.value);
  json.key("currency").string(a.currency.letters());
  owner_field(json, a.owner.value);
  json.key("kind").string(name(a.kind));
  json.key("allow_negative").boolean((a.flags & kAccountAllowNegative) != 0);
  json.key("balance").number(a.balance());
  json.key("available").number(a.available());
  json.key("held").unsigned_number(a.debits_pending);
  json.key("debits_posted").unsigned_number(a.debits_posted);
  json.key("credits_posted").unsigned_number(a.credits_posted);
  json.key("debits_pending").unsigned_number(a.debits_pending);
  json.key("credits_pending").unsigned_number(a.credits_pending);
  json.key("updated_seq").unsigned_number(a.updated_seq);
  json.end_object();
}

void render_new_account(std::string& out, u64 id, const AccountCreate& request, u64 owner) {
  Account account;
  account.id = AccountId{id};
  account.owner = MerchantId{owner};
  account.currency = request.currency;
  account.kind = request.kind;
  account.flags = request.allow_negative ? kAccountAllowNegative : 0;
  JsonWriter json(out);
  json.begin_object();
  json.key("id").id(IdKind::account, id);
  json.key("currency").string(account.currency.letters());
  owner_field(json, owner);
  json.key("kind").string(name(account.kind));
  json.key("allow_negative").boolean(request.allow_negative);
  for (const char* field : {"balance", "available", "held", "debits_posted", "credits_posted",
                            "debits_pending", "credits_pending"}) {
    json.key(field).number(0);
  }
  json.end_object();
}

void render_transfer(std::string& out, const Transfer& t, const TransferSaid& said) {
  JsonWriter json(out);
  json.begin_object();
  json.key("id").id(IdKind::transfer, t.id.value);
  json.key("status").string(name(t.status));
  json.key("debit_account").id(IdKind::account, t.debit_account_id.value);
  // A wallet's payment of an order in another group names the order: its account is
  // that group's to credit.
  if (t.pays_order()) {
    json.key("order").id(IdKind::order, t.paid_order());
  } else {
    json.key("credit_account").id(IdKind::account, t.credit_account_id.value);
  }
  json.key("amount").unsigned_number(t.amount);
  json.key("currency").string(t.currency.letters());
  // A hold, either way (between groups, an order's money settles as a transfer does).
  json.key("pending").boolean(t.two_phase() || (t.order_hold() && !t.between_groups()));
  if (t.two_phase() && t.status == TransferStatus::posted) {
    json.key("posted_amount").unsigned_number(t.posted_amount);
  }
  json.key("created_at").unsigned_number(t.created_at_ns / kNanosPerSecond);
  if (t.expires_at_ns != 0)
    json.key("expires_at").unsigned_number(t.expires_at_ns / kNanosPerSecond);
  if (t.between_groups()) {
    json.key("between_groups").boolean(true);
    // Open, and its credit on the way to the other group: it ends posted or refused.
    if (t.status == TransferStatus::pending && t.on_channel()) json.key("settling").boolean(true);
    if (t.refused != ResultCode::ok) json.key("refused").string(name(t.refused));
  }
  if (!said.reference.empty()) json.key("reference").string(said.reference);
  if (!said.metadata.empty()) json.key("metadata").raw(said.metadata);
  if (said.as_of_sequence != 0) json.key("as_of_sequence").unsigned_number(said.as_of_sequence);
  json.end_object();
}

void render_new_transfer(std::string& out, u64 id, const TransferCreate& r, bool between_groups) {
  JsonWriter json(out);
  json.begin_object();
  json.key("id").id(IdKind::transfer, id);
  json.key("status").string(r.pending ? "pending" : "posted");
  json.key("debit_account").id(IdKind::account, r.debit_account_id);
  json.key("credit_account").id(IdKind::account, r.credit_account_id);
  json.key("amount").unsigned_number(r.amount);
  json.key("currency").string(r.currency.letters());
  json.key("pending").boolean(r.pending);
  if (r.timeout_s != 0) json.key("timeout_s").unsigned_number(r.timeout_s);
  if (!r.reference.empty()) json.key("reference").string(r.reference);
  if (!r.metadata.empty()) json.key("metadata").raw(r.metadata);
  if (between_groups) json.key("between_groups").boolean(true);
  json.end_object();
}

void render_closed_hold(std::string& out, const Transfer& hold, bool posted, u64 posted_amount) {
  Transfer closed = hold;
  closed.status = posted ? TransferStatus::posted : TransferStatus::voided;
  closed.posted_amount = posted ? posted_amount : 0;
  render_transfer(out, closed);
}

void render_withdrawal(std::string& out, const Transfer& hold, u64 provider,
                       std::string_view destination, std::string_view provider_ref, u32 timeout_s) {
  JsonWriter json(out);
  json.begin_object();
  json.key("id").id(IdKind::withdrawal, hold.id.value);
  json.key("object").string("withdrawal");
  std::string_view status = "processing";
  switch (hold.status) {
    case TransferStatus::pending:
      break;
    case TransferStatus::posted:
      status = "success";
      break;
    case TransferStatus::voided:
      status = "failed";
      break;
    case TransferStatus::expired:
      status = "timeout";
      break;
  }
  json.key("status").string(status);
  json.key("account").id(IdKind::account, hold.debit_account_id.value);
  json.key("amount").unsigned_number(hold.amount);
  json.key("currency").string(hold.currency.letters());
  json.key("provider").id(IdKind::provider, provider);
  json.key("clearing_account").id(IdKind::account, hold.credit_account_id.value);
  json.key("transfer").id(IdKind::transfer, hold.id.value);
  if (!destination.empty()) json.key("destination").string(destination);
  if (!provider_ref.empty()) json.key("provider_ref").string(provider_ref);
  if (hold.created_at_ns != 0) {
    json.key("created_at").unsigned_number(hold.created_at_ns / kNanosPerSecond);
  }
  if (hold.expires_at_ns != 0) {
    json.key("expires_at").unsigned_number(hold.expires_at_ns / kNanosPerSecond);
  }
  if (timeout_s != 0) json.key("timeout_s").unsigned_number(timeout_s);
  if (hold.refused != ResultCode::ok) json.key("refused").string(name(hold.refused));
  json.end_object();
}

namespace {

void write_order(JsonWriter& json, const Order& o, std::string_view signature, u64 provider,
                 const OrderCreate* created, u64 as_of_sequence, std::string_view redirect_url = {},
                 const IpnState* ipn = nullptr) {
  json.begin_object();
  json.key("id").id(IdKind::order, o.id);
  json.key("object").string("order");
  json.key("status").string(name(o.status));
  json.key("merchant").id(principal_id_kind(principal_kind(o.merchant)), o.merchant);
  json.key("account").id(IdKind::account, o.account.value);
  json.key("amount").unsigned_number(o.amount);
  json.key("currency").string(o.currency.letters());
  json.key("amount_refunded").unsigned_number(o.amount_refunded);
  json.key("method");
  if (o.method == OrderMethod::none) {
    json.null();
  } else {
    json.string(name(o.method));
  }
  if (o.payer_account.value != 0)
    json.key("payer_account").id(IdKind::account, o.payer_account.value);
  if (provider != 0) json.key("provider").id(IdKind::provider, provider);
  if (o.transfer_id.value != 0) json.key("transfer").id(IdKind::transfer, o.transfer_id.value);
  if (o.hold_id.value != 0) json.key("hold").id(IdKind::transfer, o.hold_id.value);
  json.key("created_at").unsigned_number(o.created_at_ns / kNanosPerSecond);
  json.key("expires_at").unsigned_number(o.expires_at_ns / kNanosPerSecond);
  if (o.finished_at_ns != 0) {
    json.key("finished_at").unsigned_number(o.finished_at_ns / kNanosPerSecond);
  }
  if (o.late_result != 0) json.key("late_result").string("success");
  if (o.risk_rule != RiskRule::none) json.key("risk_rule").string(name(o.risk_rule));
  if (o.resolution != OrderResolution::none) {
    json.key("resolution")
        .string(o.resolution == OrderResolution::accepted ? "accepted" : "rejected");
  }
  if (created != nullptr) {
    // (Empty only for an order the history store has no request of.)
    if (!created->merchant_ref.empty()) json.key("merchant_ref").string(created->merchant_ref);
    if (!created->description.empty()) json.key("description").string(created->description);
    if (!created->metadata.empty()) json.key("metadata").raw(created->metadata);
    if (!created->ipn_url.empty()) json.key("ipn_url").string(created->ipn_url);
    if (!created->callback_url.empty()) json.key("callback_url").string(created->callback_url);
  }
  json.key("signature").string(signature);
  if (!redirect_url.empty()) json.key("redirect_url").string(redirect_url);
  if (ipn != nullptr) {
    json.key("ipn").begin_object();
    json.key("status").string(ipn->status);
    json.key("attempts").unsigned_number(ipn->attempts);
    json.key("last_status");
    if (ipn->last_status != 0) {
      json.unsigned_number(ipn->last_status);
    } else {
      json.null();
    }
    json.key("next_attempt_at");
    if (ipn->next_attempt_at_s != 0) {
      json.unsigned_number(ipn->next_attempt_at_s);
    } else {
      json.null();
    }
    json.end_object();
  }
  if (as_of_sequence != 0) json.key("as_of_sequence").unsigned_number(as_of_sequence);
  json.end_object();
}

}  // namespace

void render_order(std::string& out, const Order& o, std::string_view signature, u64 provider,
                  const OrderCreate* created, u64 as_of_sequence, std::string_view redirect_url,
                  const IpnState* ipn) {
  JsonWriter json(out);
  write_order(json, o, signature, provider, created, as_of_sequence, redirect_url, ipn);
}

void render_webhook_event(std::string& out, std::string_view id, std::string_view type,
                          u64 created_s, u32 group, u64 sequence, std::string_view object) {
  JsonWriter json(out);
  json.begin_object();
  json.key("id").string(id);
  json.key("object").string("event");
  json.key("type").string(type);
  json.key("created").unsigned_number(created_s);
  json.key("group").unsigned_number(group);
  json.key("sequence").unsigned_number(sequence);
  json.key("data").begin_object();
  json.key("object").raw(object);
  json.end_object();
  json.end_object();
}

void render_order_list(std::string& out, std::span<const ListedOrder> orders, bool more,
                       u64 as_of_sequence) {
  JsonWriter json(out);
  json.begin_object();
  json.key("object").string("list");
  json.key("data").begin_array();
  for (const ListedOrder& o : orders)
    write_order(json, o.order, o.signature, o.provider, &o.said, 0);
  json.end_array();
  json.key("has_more").boolean(more);
  json.key("next_cursor");
  if (more && !orders.empty()) {
    json.id(IdKind::order, orders.back().order.id);
  } else {
    json.null();
  }
  if (as_of_sequence != 0) json.key("as_of_sequence").unsigned_number(as_of_sequence);
  json.end_object();
}

void render_refund(std::string& out, const Order& o, u64 transfer, u64 amount,
                   std::string_view reason) {
  JsonWriter json(out);
  json.begin_object();
  json.key("id").id(IdKind::transfer, transfer);
  json.key("object").string("refund");
  json.key("order").id(IdKind::order, o.id);
  json.key("amount").unsigned_number(amount);
  json.key("currency").string(o.currency.letters());
  json.key("amount_refunded").unsigned_number(o.amount_refunded);
  if (!reason.empty()) json.key("reason").string(reason);
  json.key("status").string("succeeded");
  json.end_object();
}

void render_risk(std::string& out, u64 merchant, const RiskRules& rules) {
  JsonWriter json(out);
  json.begin_object();
  json.key("merchant").id(IdKind::merchant, merchant);
  json.key("object").string("risk_rules");
  json.key("max_amount");
  if (rules.max_amount == 0) {
    json.null();
  } else {
    json.unsigned_number(rules.max_amount);
  }
  json.key("max_checkouts_per_payer_per_minute");
  if (rules.max_checkouts_per_payer_per_minute == 0) {
    json.null();
  } else {
    json.unsigned_number(rules.max_checkouts_per_payer_per_minute);
  }
  json.key("blocked_payers").begin_array();
  for (const u64 payer : rules.blocked_payers) {
    json.id(principal_id_kind(principal_kind(payer)), payer);
  }
  json.end_array();
  json.end_object();
}

void render_quotas(std::string& out, const OwnerQuota& quota, const QuotaLimits& defaults) {
  JsonWriter json(out);
  json.begin_object();
  json.key("merchant").id(IdKind::merchant, quota.owner);
  static constexpr std::string_view kNames[kQuotaKinds] = {"accounts", "holds", "idempotency_keys",
                                                           "orders"};
  for (u32 q = 0; q < kQuotaKinds; ++q) {
    const bool own = quota.limits.limit[q] != kQuotaGroupDefault;
    const u32 limit = own ? quota.limits.limit[q] : defaults.limit[q];
    json.key(kNames[q]).begin_object();
    json.key("used").unsigned_number(quota.used[q]);
    json.key("limit");
    if (limit == kQuotaGroupDefault) {
      json.null();
    } else {
      json.unsigned_number(limit);
    }
    json.key("source").string(own ? "merchant" : "group");
    json.end_object();
  }
  json.end_object();
}

void render_merchant(std::string& out, const Merchant& m, bool with_secret) {
  JsonWriter json(out);
  json.begin_object();
  json.key("id").id(principal_id_kind(m.kind), m.id);
  json.key("name").string(m.name);
  if (m.kind == PrincipalKind::merchant) {
    json.key("parent_id");
    if (m.parent_id == 0) {
      json.null();
    } else {
      json.id(IdKind::merchant, m.parent_id);
    }
  }
  json.key("region").unsigned_number(m.region);
  json.key("group").unsigned_number(m.group);
  json.key("key_id").string(m.key_id);
  if (with_secret) json.key("secret").string(m.secret);
  if (!m.previous_key_id.empty() && m.previous_valid(static_cast<u64>(std::time(nullptr)))) {
    json.key("previous_key_id").string(m.previous_key_id);
    json.key("previous_key_expires_at").unsigned_number(m.previous_until_s);
  }
  json.key("created_at").unsigned_number(m.created_at_s);
  if (m.kind == PrincipalKind::provider) {
    json.key("clearing_account");
    if (m.clearing_account == 0) {
      json.null();
    } else {
      json.id(IdKind::account, m.clearing_account);
    }
    // One per group: an order clears in its own group (docs/ORDERS.md, "Providers").
    json.key("clearing_accounts").begin_array();
    const u32 groups = std::max(static_cast<u32>(m.clearing_by_group.size()), m.group + 1);
    for (u32 g = 0; g < groups; ++g) {
      const u64 account = m.clearing_account_in(g);
      if (account == 0) continue;  // none there (a provider onboarded with one account)
      json.begin_object().key("group").unsigned_number(g);
      json.key("account").id(IdKind::account, account).end_object();
    }
    json.end_array();
    json.key("currency").string(m.clearing_currency.letters());
  }
  json.end_object();
}

}  // namespace paygate::api
