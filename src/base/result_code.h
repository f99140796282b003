// The one list of outcome codes. Ledger results, pipeline refusals and the HTTP API's
// error codes all come from here. The numbers and the snake_case names are stable:
// they are written into journals and read by merchants' code, so a code is never
// renumbered, renamed or reused; new codes take new numbers.
#pragma once

#include <array>
#include <optional>
#include <string_view>

#include "base/types.h"

namespace paygate {

// X(name, number)
#define PAYGATE_RESULT_CODES(X)                              \
  X(ok, 0)                                                   \
  /* a command's own fields */                               \
  X(invalid_amount, 1)                                       \
  X(invalid_currency, 2)                                     \
  X(invalid_account_kind, 3)                                 \
  X(invalid_command, 4)                                      \
  X(same_account, 5)                                         \
  /* ids that do not name anything */                        \
  X(debit_account_not_found, 10)                             \
  X(credit_account_not_found, 11)                            \
  X(transfer_not_found, 12)                                  \
  X(account_not_found, 13)                                   \
  /* money rules */                                          \
  X(currency_mismatch, 20)                                   \
  X(insufficient_funds, 21)                                  \
  X(overflow, 22)                                            \
  X(exceeds_pending_amount, 23)                              \
  /* the life of a pending transfer */                       \
  X(transfer_not_pending, 30)                                \
  X(pending_transfer_already_posted, 31)                     \
  X(pending_transfer_already_voided, 32)                     \
  X(transfer_expired, 33)                                    \
  X(transfer_settling, 34)                                   \
  /* fixed capacities */                                     \
  X(accounts_full, 40)                                       \
  X(pending_transfers_full, 41)                              \
  X(batch_too_large, 42)                                     \
  X(ids_exhausted, 43)                                       \
  X(owners_full, 44)                                         \
  /* idempotency */                                          \
  X(idempotency_key_reused, 50)                              \
  X(idempotency_key_in_atomic_batch, 51)                     \
  X(idempotency_capacity, 52)                                \
  /* batches */                                              \
  X(atomic_batch_failed, 60)                                 \
  X(batch_empty, 61)                                         \
  /* the pipeline: not an answer about the command itself */ \
  X(overloaded, 70)                                          \
  X(not_durable, 71)                                         \
  X(shutting_down, 72)                                       \
  X(not_ready, 73)                                           \
  X(internal_error, 74)                                      \
  /* between groups */                                       \
  X(stale_delivery, 80)                                      \
  /* per-merchant quotas (ledger/owner_quotas.h) */          \
  X(quota_accounts, 90)                                      \
  X(quota_holds, 91)                                         \
  X(quota_idempotency_keys, 92)                              \
  X(quota_orders, 93)                                        \
  /* the API's edge: refused before reaching a ledger */     \
  X(invalid_json, 100)                                       \
  X(invalid_field, 101)                                      \
  X(missing_field, 102)                                      \
  X(unknown_field, 103)                                      \
  X(body_too_large, 104)                                     \
  X(unsupported_media_type, 105)                             \
  X(invalid_idempotency_key, 106)                            \
  X(invalid_cursor, 107)                                     \
  X(not_found, 110)                                          \
  X(method_not_allowed, 111)                                 \
  X(merchant_not_found, 112)                                 \
  X(cross_group_transfer, 113)                               \
  X(not_implemented, 114)                                    \
  X(cursor_expired, 115)                                     \
  X(outcome_expired, 116)                                    \
  X(history_behind, 117)                                     \
  X(missing_credentials, 120)                                \
  X(invalid_credentials, 121)                                \
  X(invalid_signature, 122)                                  \
  X(timestamp_out_of_window, 123)                            \
  X(signature_replayed, 124)                                 \
  X(invalid_token, 125)                                      \
  X(token_expired, 126)                                      \
  X(operator_only, 127)                                      \
  X(post_not_allowed, 128)                                   \
  X(rate_limited, 130)                                       \
  X(replay_cache_full, 131)                                  \
  /* users, providers and withdrawals */                     \
  X(user_not_found, 140)                                     \
  X(provider_not_found, 141)                                 \
  X(withdrawal_not_found, 142)                               \
  X(invalid_withdrawal_state, 143)                           \
  X(awaits_provider, 144)                                    \
  X(no_provider, 145)                                        \
  /* orders */                                               \
  X(order_not_found, 150)                                    \
  X(order_archived, 151)                                     \
  X(duplicate_order, 152)                                    \
  X(invalid_order_state, 153)                                \
  X(invalid_order_signature, 154)                            \
  X(refund_exceeds_order, 155)                               \
  X(orders_full, 156)                                        \
  X(rejected_risk, 157)                                      \
  X(order_loading, 158)                                      \
  /* webhooks */                                             \
  X(webhook_endpoint_not_found, 160)                         \
  X(webhook_delivery_not_found, 161)                         \
  X(url_not_allowed, 162)                                    \
  X(webhook_endpoints_full, 163)

enum class ResultCode : u16 {
#define PAYGATE_RESULT_ENUM(name, number) name = number,
  PAYGATE_RESULT_CODES(PAYGATE_RESULT_ENUM)
#undef PAYGATE_RESULT_ENUM
};

namespace detail {
struct ResultCodeEntry {
  ResultCode code;
  std::string_view name;
};
inline constexpr ResultCodeEntry kResultCodeTable[] = {
#define PAYGATE_RESULT_ENTRY(name, number) {ResultCode::name, #name},
    PAYGATE_RESULT_CODES(PAYGATE_RESULT_ENTRY)
#undef PAYGATE_RESULT_ENTRY
};
}  // namespace detail

// Every code, in declaration order.
inline constexpr auto all_result_codes() noexcept {
  std::array<ResultCode, std::size(detail::kResultCodeTable)> codes{};
  for (std::size_t i = 0; i < codes.size(); ++i)
    codes[i] = detail::kResultCodeTable[i].code;
  return codes;
}

// The stable snake_case name, or "unknown" for a number that is no code.
constexpr std::string_view name(ResultCode code) noexcept {
  for (const auto& entry : detail::kResultCodeTable) {
    if (entry.code == code) return entry.name;
  }
  return "unknown";
}

constexpr std::optional<ResultCode> result_code_from_name(std::string_view text) noexcept {
  for (const auto& entry : detail::kResultCodeTable) {
    if (entry.name == text) return entry.code;
  }
  return std::nullopt;
}

}  // namespace paygate
