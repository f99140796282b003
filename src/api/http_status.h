// The HTTP status for each result code (API.md, conventions): 400 bad input, 401
// credentials, 403 not allowed, 404 unknown (or not yours), 409 state conflict or
// idempotency mismatch, 410 a cursor or an
// outcome past what is still held, 422 business rule, 429 rate limited,
// 500 a bug (logged), 503 unavailable.
#pragma once

#include "base/result_code.h"

namespace paygate::api {

constexpr unsigned http_status(ResultCode code) noexcept {
  switch (code) {
    case ResultCode::ok:
      return 200;
    case ResultCode::invalid_amount:
    case ResultCode::invalid_currency:
    case ResultCode::invalid_account_kind:
    case ResultCode::invalid_command:
    case ResultCode::same_account:
    case ResultCode::currency_mismatch:
    case ResultCode::batch_too_large:
    case ResultCode::batch_empty:
    case ResultCode::idempotency_key_in_atomic_batch:
    case ResultCode::invalid_json:
    case ResultCode::invalid_field:
    case ResultCode::missing_field:
    case ResultCode::unknown_field:
    case ResultCode::invalid_idempotency_key:
    case ResultCode::invalid_cursor:
    case ResultCode::url_not_allowed:
    case ResultCode::invalid_order_signature:
      return 400;
    case ResultCode::missing_credentials:
    case ResultCode::invalid_credentials:
    case ResultCode::invalid_signature:
    case ResultCode::timestamp_out_of_window:
    case ResultCode::signature_replayed:
    case ResultCode::invalid_token:
    case ResultCode::token_expired:
      return 401;
    case ResultCode::operator_only:
    case ResultCode::post_not_allowed:
    case ResultCode::awaits_provider:
      return 403;
    case ResultCode::debit_account_not_found:
    case ResultCode::credit_account_not_found:
    case ResultCode::transfer_not_found:
    case ResultCode::account_not_found:
    case ResultCode::not_found:
    case ResultCode::merchant_not_found:
    case ResultCode::user_not_found:
    case ResultCode::provider_not_found:
    case ResultCode::withdrawal_not_found:
    case ResultCode::order_not_found:
    case ResultCode::webhook_endpoint_not_found:
    case ResultCode::webhook_delivery_not_found:
      return 404;
    case ResultCode::method_not_allowed:
      return 405;
    case ResultCode::transfer_not_pending:
    case ResultCode::pending_transfer_already_posted:
    case ResultCode::pending_transfer_already_voided:
    case ResultCode::transfer_expired:
    case ResultCode::transfer_settling:
    case ResultCode::idempotency_key_reused:
    case ResultCode::invalid_withdrawal_state:
    case ResultCode::duplicate_order:
    case ResultCode::invalid_order_state:
      return 409;
    case ResultCode::body_too_large:
      return 413;
    case ResultCode::cursor_expired:
    case ResultCode::outcome_expired:
    case ResultCode::order_archived:
      return 410;
    case ResultCode::unsupported_media_type:
      return 415;
    case ResultCode::insufficient_funds:
    case ResultCode::overflow:
    case ResultCode::exceeds_pending_amount:
    case ResultCode::atomic_batch_failed:
    case ResultCode::cross_group_transfer:
    case ResultCode::quota_accounts:
    case ResultCode::quota_holds:
    case ResultCode::quota_idempotency_keys:
    case ResultCode::quota_orders:
    case ResultCode::no_provider:
    case ResultCode::refund_exceeds_order:
    case ResultCode::rejected_risk:
    case ResultCode::webhook_endpoints_full:
      return 422;
    case ResultCode::rate_limited:
      return 429;
    case ResultCode::not_implemented:
      return 501;
    case ResultCode::accounts_full:
    case ResultCode::pending_transfers_full:
    case ResultCode::ids_exhausted:
    case ResultCode::owners_full:
    case ResultCode::orders_full:
    case ResultCode::idempotency_capacity:
    case ResultCode::replay_cache_full:
    case ResultCode::overloaded:
    case ResultCode::not_durable:
    case ResultCode::history_behind:
    case ResultCode::order_loading:
    case ResultCode::shutting_down:
    case ResultCode::not_ready:
      return 503;
    case ResultCode::stale_delivery:  // between groups only, never an answer
    case ResultCode::internal_error:
      return 500;
  }
  return 500;
}

// A sentence for merchants to read next to the stable code.
constexpr std::string_view describe(ResultCode code) noexcept {
  switch (code) {
    case ResultCode::debit_account_not_found:
      return "no such debit_account";
    case ResultCode::credit_account_not_found:
      return "no such credit_account";
    case ResultCode::transfer_not_found:
      return "no such transfer";
    case ResultCode::account_not_found:
      return "no such account";
    case ResultCode::currency_mismatch:
      return "the accounts and the transfer must share one currency";
    case ResultCode::insufficient_funds:
      return "the debit account's available balance is short";
    case ResultCode::overflow:
      return "the amount would overflow a balance";
    case ResultCode::exceeds_pending_amount:
      return "the amount is more than the hold";
    case ResultCode::transfer_not_pending:
      return "the transfer is not a hold";
    case ResultCode::pending_transfer_already_posted:
      return "the hold was already posted";
    case ResultCode::pending_transfer_already_voided:
      return "the hold was already voided";
    case ResultCode::transfer_expired:
      return "the hold expired";
    case ResultCode::transfer_settling:
      return "a post of this hold is on its way to the other group; read the transfer for how "
             "it ends";
    case ResultCode::accounts_full:
      return "the group has no room for more accounts";
    case ResultCode::pending_transfers_full:
      return "the group has no room for more holds";
    case ResultCode::ids_exhausted:
      return "the group has run out of ids";
    case ResultCode::idempotency_key_reused:
      return "this Idempotency-Key was used with a different request";
    case ResultCode::owners_full:
      return "the group has no room to count another merchant's quotas (owners_max)";
    case ResultCode::quota_accounts:
      return "the merchant has as many accounts as its quota allows (GET "
             "/v1/merchants/{id}/quotas); an operator may raise it";
    case ResultCode::quota_holds:
      return "the debit account's merchant has as many open holds as its quota allows (GET "
             "/v1/merchants/{id}/quotas): post or void some, or ask an operator to raise it";
    case ResultCode::quota_idempotency_keys:
      return "the merchant has as many Idempotency-Keys inside their window as its quota "
             "allows (GET /v1/merchants/{id}/quotas): keys leave it as their window ends; "
             "send fewer keyed requests, or ask an operator to raise it";
    case ResultCode::quota_orders:
      return "the merchant holds as many orders (open, or final and still in memory) as its "
             "quota allows (GET /v1/merchants/{id}/quotas): final ones leave memory after "
             "[orders] final_retained_s, then retry (with a new Idempotency-Key: a keyed "
             "request is answered as the first time); or ask an operator to raise it";
    case ResultCode::post_not_allowed:
      return "only the debit account's owner (or an operator) posts a hold; its credit side may "
             "void it";
    case ResultCode::signature_replayed:
      return "this signature was already used: a request that changes state is accepted once, "
             "also across restarts. Sign each request anew (a sub-second X-Paygate-Timestamp, "
             "such as 1795355278.250, tells two requests in one second apart), and to retry one, "
             "sign it again and send the same Idempotency-Key";
    case ResultCode::idempotency_capacity:
      return "the group's table of idempotency keys is full of keys still inside their window; "
             "retry after Retry-After (docs/OPERATING.md, sizing the idempotency table)";
    case ResultCode::atomic_batch_failed:
      return "another operation of the atomic batch failed";
    case ResultCode::same_account:
      return "debit_account and credit_account must differ";
    case ResultCode::cross_group_transfer:
      return "the operation crosses groups; send it as a request of its own (POST "
             "/v1/transfers, or /v1/transfers/{id}/post), not in a batch";
    case ResultCode::outcome_expired:
      return "the transfer was made, but its outcome is older than what the group still holds";
    case ResultCode::awaits_provider:
      return "this hold awaits a provider: a withdrawal's is decided by its provider (or an "
             "operator) with POST /v1/withdrawals/{id}/result; an order's (checkout balance) by "
             "its provider's result, its cancel or its expiry";
    case ResultCode::no_provider:
      return "no provider clears this currency (name one with a clearing account in it)";
    case ResultCode::rejected_risk:
      return "the merchant's risk rules refused this checkout; the order is final (status "
             "rejected_risk) and nothing moved";
    case ResultCode::order_loading:
      return "another request is loading the order into Redis; retry";
    case ResultCode::withdrawal_not_found:
      return "no such withdrawal";
    case ResultCode::user_not_found:
      return "no such user";
    case ResultCode::provider_not_found:
      return "no such provider";
    case ResultCode::merchant_not_found:
      return "no such merchant";
    case ResultCode::order_not_found:
      return "no such order";
    case ResultCode::webhook_endpoint_not_found:
      return "no such webhook endpoint";
    case ResultCode::webhook_delivery_not_found:
      return "no such webhook delivery";
    case ResultCode::refund_exceeds_order:
      return "the refund is more than what the order has left to refund (its amount less "
             "amount_refunded)";
    case ResultCode::invalid_order_state:
      return "the order's status does not allow this step (docs/ORDERS.md, the transitions)";
    case ResultCode::invalid_withdrawal_state:
      return "the withdrawal's status does not allow this step";
    case ResultCode::orders_full:
      return "the group has no room for more orders; retry later";
    case ResultCode::webhook_endpoints_full:
      return "the merchant has as many webhook endpoints as it may have: delete one first";
    default:
      return name(code);
  }
}

}  // namespace paygate::api
