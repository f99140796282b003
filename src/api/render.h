// The JSON bodies of the API's answers (docs/API.md lists every field).
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "api/merchants.h"
#include "api/request_decoder.h"
#include "base/result_code.h"
#include "history/store.h"
#include "ledger/event.h"
#include "ledger/types.h"
#include "orders/order_book.h"
#include "pipeline/event_log.h"

namespace paygate::api {

void render_error(std::string& out, ResultCode code, std::string_view message);
// An account as it is now.
void render_account(std::string& out, const Account& account);
// A new account, from its creation alone (all balances zero), so that an idempotent
// retry renders the very same body.
void render_new_account(std::string& out, u64 id, const AccountCreate& request, u64 owner);
// A transfer as the ledger holds it now.
// `said`: the reference and metadata its request carried (from the history store),
// when known.
struct TransferSaid {
  std::string_view reference, metadata;
  u64 as_of_sequence = 0;  // answered from the store: what it reflects (0: from the group)
};
void render_transfer(std::string& out, const Transfer& transfer, const TransferSaid& said = {});
// A new transfer, from its request and id alone (again: retries render the same).
// between_groups: the transfer crossed groups (and was posted once the other group credited).
void render_new_transfer(std::string& out, u64 id, const TransferCreate& request,
                         bool between_groups = false);
// A hold just posted or voided: the hold as it was, with its new status.
void render_closed_hold(std::string& out, const Transfer& hold, bool posted, u64 posted_amount);
// A withdrawal (docs/API.md): its hold, the provider it is routed to, and what the
// request carried that the ledger does not keep (shown when not empty / zero).
void render_withdrawal(std::string& out, const Transfer& hold, u64 provider,
                       std::string_view destination, std::string_view provider_ref,
                       u32 timeout_s = 0);
// What GET /v1/orders/{id} says of an order's notification (docs/WEBHOOKS.md): its
// newest delivery's state.
struct IpnState {
  std::string_view status;  // pending, delivered, failed
  u32 attempts = 0;
  u32 last_status = 0;        // HTTP status of the last attempt (0: none)
  u64 next_attempt_at_s = 0;  // pending: when it is tried next
};

// An order (docs/API.md, "Orders"), with its signature and the provider it was routed
// to (0: none); `created`: the request that made it, whose fields the ledger does not
// keep (shown in the creation's answer).
// `as_of_sequence`: answered from the history store, what it reflects (0: from memory).
// `redirect_url`: a final checkout's, where its merchant asked the payer be sent.
void render_order(std::string& out, const Order& order, std::string_view signature, u64 provider,
                  const OrderCreate* created = nullptr, u64 as_of_sequence = 0,
                  std::string_view redirect_url = {}, const IpnState* ipn = nullptr);
// A webhook event (docs/WEBHOOKS.md): {id, object: "event", type, created, group,
// sequence, data: {object}}, `object` rendered already (the order as the change left
// it, or the withdrawal).
void render_webhook_event(std::string& out, std::string_view id, std::string_view type,
                          u64 created_s, u32 group, u64 sequence, std::string_view object);
// A page of GET /v1/orders: each order as GET /v1/orders/{id} shows it.
struct ListedOrder {
  Order order;
  std::string signature;
  u64 provider = 0;
  OrderCreate said;
};
// `next`: the cursor of the next page (when `more`); `as_of_sequence`: what the page
// reflects of the one group it read (0: several groups).
void render_order_list(std::string& out, std::span<const ListedOrder> orders, bool more,
                       u64 as_of_sequence);
// A refund of `order` (as it is after it): the transfer that moved it back.
void render_refund(std::string& out, const Order& order, u64 transfer, u64 amount,
                   std::string_view reason);
// A merchant; `with_secret` only when a key is created (shown once).
void render_merchant(std::string& out, const Merchant& merchant, bool with_secret);
// {merchant, accounts: {used, limit, source}, holds: …, idempotency_keys: …}; limit is
// null when there is none, source "merchant" (its own) or "group" (the default).
void render_quotas(std::string& out, const OwnerQuota& quota, const QuotaLimits& defaults);
void render_risk(std::string& out, u64 merchant, const RiskRules& rules);

// The Kafka publisher's messages (docs/KAFKA.md), key and value: a ledger event as
// GET /v1/events shows it, keyed by the account it is about (made, or debited); an
// order's change, keyed by the order.
void render_event_message(std::string& key, std::string& value, u32 group, const LedgerEvent& e);
void render_order_change_message(std::string& key, std::string& value, u32 group,
                                 const history::OrderChangeRow& change);
// A page of GET /v1/events. `next`: where the next page starts (none: nothing read yet).
void render_events(std::string& out, u32 group, std::span<const LedgerEvent> events,
                   std::optional<EventKey> next, bool more);
// A page of an account's statement, newest line first.
void render_entries(std::string& out, u32 group, u64 account, std::span<const LedgerEvent> lines,
                    bool more, bool complete);

}  // namespace paygate::api
