// The events an order's changes raise for its merchant (docs/WEBHOOKS.md): which
// change raises which, and their ids. The history store keeps them as its outbox
// (history/store.h, order_events); the webhook worker delivers them.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "base/types.h"
#include "ledger/event.h"
#include "orders/order_book.h"

namespace paygate::history {

// The event an order change raises: a final status reached ("order.success",
// "order.failed", "order.timeout", "order.cancelled", "order.rejected_risk",
// "order.exception_checkout"), or a final order's refunds changed ("order.refunded",
// "order.refund_returned"); none for anything else. `before`: the order as the change
// found it (nullptr: made by it, or unknown to the store).
std::optional<std::string_view> order_event_type(const Order* before, const Order& after);
inline constexpr std::string_view kOrderEventTypes[] = {
    "order.success",   "order.failed",         "order.timeout",
    "order.cancelled", "order.rejected_risk",  "order.exception_checkout",
    "order.refunded",  "order.refund_returned"};
// An event's id: stable, from its group, command and place, so that a receiver can
// drop a second delivery of it.
std::string order_event_id(u32 group, u64 sequence, u32 n);

// The event a withdrawal's outcome raises for the owner of the account it is drawn
// from: its hold posted ("withdrawal.success"), voided ("withdrawal.failed") or expired
// ("withdrawal.timeout"); none for anything else. A withdrawal is a hold whose command
// carried a destination (api/service_withdrawals.cc); its events share the outbox and
// the ids of order events (n counts on after the command's order changes).
std::optional<std::string_view> withdrawal_event_type(LedgerEventKind closed);
inline constexpr std::string_view kWithdrawalEventTypes[] = {
    "withdrawal.success", "withdrawal.failed", "withdrawal.timeout"};
// Whether `type` names an event the outbox can hold (an endpoint's `events`).
bool known_event_type(std::string_view type);
inline constexpr std::size_t kEventTypesCount =
    std::size(kOrderEventTypes) + std::size(kWithdrawalEventTypes);

}  // namespace paygate::history
