#include "base/result_code.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace paygate {
namespace {

TEST(ResultCode, NamesAreUniqueSnakeCaseAndRoundTrip) {
  std::set<std::string_view> names;
  std::set<u16> numbers;
  for (ResultCode code : all_result_codes()) {
    const std::string_view text = name(code);
    ASSERT_FALSE(text.empty());
    for (char c : text)
      EXPECT_TRUE((c >= 'a' && c <= 'z') || c == '_') << text;
    EXPECT_TRUE(names.insert(text).second) << "duplicate name " << text;
    EXPECT_TRUE(numbers.insert(static_cast<u16>(code)).second) << "duplicate number " << text;
    EXPECT_EQ(result_code_from_name(text), code);
  }
  EXPECT_EQ(name(static_cast<ResultCode>(9999)), "unknown");
  EXPECT_EQ(result_code_from_name("no_such_code"), std::nullopt);
}

// Numbers and names are written to journals and read by merchants: they never change.
// Adding a code means adding a line here; changing one of these lines is a break.
TEST(ResultCode, NumbersAndNamesAreStable) {
  const std::pair<u16, std::string_view> stable[] = {
      {0, "ok"},
      {1, "invalid_amount"},
      {2, "invalid_currency"},
      {3, "invalid_account_kind"},
      {4, "invalid_command"},
      {5, "same_account"},
      {10, "debit_account_not_found"},
      {11, "credit_account_not_found"},
      {12, "transfer_not_found"},
      {13, "account_not_found"},
      {20, "currency_mismatch"},
      {21, "insufficient_funds"},
      {22, "overflow"},
      {23, "exceeds_pending_amount"},
      {30, "transfer_not_pending"},
      {31, "pending_transfer_already_posted"},
      {32, "pending_transfer_already_voided"},
      {33, "transfer_expired"},
      {34, "transfer_settling"},
      {40, "accounts_full"},
      {41, "pending_transfers_full"},
      {42, "batch_too_large"},
      {43, "ids_exhausted"},
      {44, "owners_full"},
      {50, "idempotency_key_reused"},
      {51, "idempotency_key_in_atomic_batch"},
      {52, "idempotency_capacity"},
      {60, "atomic_batch_failed"},
      {61, "batch_empty"},
      {70, "overloaded"},
      {71, "not_durable"},
      {72, "shutting_down"},
      {73, "not_ready"},
      {74, "internal_error"},
      {80, "stale_delivery"},
      {90, "quota_accounts"},
      {91, "quota_holds"},
      {92, "quota_idempotency_keys"},
      {93, "quota_orders"},
      {100, "invalid_json"},
      {101, "invalid_field"},
      {102, "missing_field"},
      {103, "unknown_field"},
      {104, "body_too_large"},
      {105, "unsupported_media_type"},
      {106, "invalid_idempotency_key"},
      {107, "invalid_cursor"},
      {110, "not_found"},
      {111, "method_not_allowed"},
      {112, "merchant_not_found"},
      {113, "cross_group_transfer"},
      {114, "not_implemented"},
      {115, "cursor_expired"},
      {116, "outcome_expired"},
      {117, "history_behind"},
      {120, "missing_credentials"},
      {121, "invalid_credentials"},
      {122, "invalid_signature"},
      {123, "timestamp_out_of_window"},
      {124, "signature_replayed"},
      {125, "invalid_token"},
      {126, "token_expired"},
      {127, "operator_only"},
      {128, "post_not_allowed"},
      {130, "rate_limited"},
      {131, "replay_cache_full"},
      {140, "user_not_found"},
      {141, "provider_not_found"},
      {142, "withdrawal_not_found"},
      {143, "invalid_withdrawal_state"},
      {144, "awaits_provider"},
      {145, "no_provider"},
      {150, "order_not_found"},
      {151, "order_archived"},
      {152, "duplicate_order"},
      {153, "invalid_order_state"},
      {154, "invalid_order_signature"},
      {155, "refund_exceeds_order"},
      {156, "orders_full"},
      {157, "rejected_risk"},
      {158, "order_loading"},
      {160, "webhook_endpoint_not_found"},
      {161, "webhook_delivery_not_found"},
      {162, "url_not_allowed"},
      {163, "webhook_endpoints_full"},
  };
  for (const auto& [number, text] : stable) {
    EXPECT_EQ(name(static_cast<ResultCode>(number)), text) << number;
  }
  EXPECT_EQ(std::size(stable), all_result_codes().size()) << "a code is missing from this list";
}

}  // namespace
}  // namespace paygate
