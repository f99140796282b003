// Turns request bodies (JSON) into typed requests, validating every field at the
// edge: a request that passes here is well formed, and what is left to refuse is the
// ledger's business (funds, states, ids that do not exist).
//
// Strict by design: unknown fields are rejected (`unknown_field`), so a typo such as
// "ammount" never silently becomes a default. Amounts follow API.md: JSON integers in
// 1 .. 2^63-1; fractions, exponents, strings, negatives and zero are invalid_amount.
//
// One decoder per IO thread: it reuses its parser and buffers, so decoding allocates
// nothing once warm (apart from the strings a request keeps, such as a reference).
#pragma once

#include <simdjson.h>

#include <string>
#include <string_view>
#include <vector>

#include "base/result_code.h"
#include "base/types.h"
#include "ledger/owner_quotas.h"
#include "ledger/types.h"

namespace paygate::api {

// Why a request was refused at the edge. ok() when it was not.
struct Problem {
  ResultCode code = ResultCode::ok;
  std::string message;

  bool ok() const noexcept { return code == ResultCode::ok; }
};

inline constexpr std::size_t kNameBytesMax = 200;
inline constexpr std::size_t kReferenceBytesMax = 256;
inline constexpr std::size_t kMetadataBytesMax = 4096;  // minified
inline constexpr u32 kBatchOperationsMax = 8190;

// POST /v1/merchants, and also /v1/users and /v1/providers (name, and a provider's
// clearing currency).
struct MerchantCreate {
  std::string name;
  u64 parent_id = 0;  // 0: none
  u32 region = 0;
  bool has_region = false;
  Currency currency;  // providers: the clearing account's
};

inline constexpr u32 kWithdrawalTimeoutDefaultS = 3 * 24 * 3600;

// POST /v1/withdrawals: a hold from `account` toward the provider's clearing account.
struct WithdrawalCreate {
  u64 account_id = 0;
  u64 amount = 0;
  Currency currency;
  std::string destination;  // where the provider pays out (an IBAN, a card token, …)
  u64 provider_id = 0;      // 0: the currency's default provider
  u32 timeout_s = kWithdrawalTimeoutDefaultS;
  u64 extra_hash = 0;  // fingerprint of destination and provider, for idempotency
};

inline constexpr u32 kOrderExpiresInDefaultS = 900;
inline constexpr std::size_t kUrlBytesMax = 2048;

// POST /v1/orders.
struct OrderCreate {
  std::string merchant_ref;
  u64 amount = 0;
  Currency currency;
  u64 account_id = 0;  // 0: the merchant's first account in the currency
  u32 expires_in_s = kOrderExpiresInDefaultS;
  std::string ipn_url, callback_url, description;
  std::string metadata;  // minified JSON object, or empty
  u64 extra_hash = 0;    // fingerprint of what the ledger does not keep
};

// POST /v1/webhook_endpoints {url, events}, POST /v1/webhook_endpoints/{id}
// {url?, events?, disabled?}, POST /v1/webhook_endpoints/{id}/rotate {grace_period_s?}.
struct WebhookEndpointChange {
  std::optional<std::string> url;
  std::optional<std::vector<std::string>> events;  // known types or "*", no repeats
  std::optional<bool> disabled;
  std::optional<u32> grace_period_s;
};
inline constexpr u32 kWebhookGraceMaxS = 7 * 86400;

// POST /v1/orders/{id}/checkout, /refunds, /resolve (the fields each takes).
struct OrderStep {
  std::string signature;
  u8 method = 0;  // OrderMethod
  u64 payer_account = 0;
  u64 provider_id = 0;
  u64 amount = 0;  // refunds: 0 the rest
  std::string reason;
  bool accept = false;  // resolve
};

// POST /v1/withdrawals/{id}/result (and an order's result: the same fields).
struct WithdrawalResult {
  bool success = false;
  std::string provider_ref;
};

// POST /v1/merchants/{id}/risk: each rule given replaces the merchant's (null or 0:
// none); an absent one stays as it is.
inline constexpr std::size_t kBlockedPayersMax = 1000;
struct RiskSet {
  bool has_max_amount = false;
  u64 max_amount = 0;
  bool has_payer_velocity = false;
  u32 max_checkouts_per_payer_per_minute = 0;
  bool has_blocked_payers = false;
  std::vector<u64> blocked_payers;  // principal ids, sorted, distinct
};

// POST /v1/merchants/{id}/quotas: each limit as a set_quota command carries it (a
// number; kQuotaGroupDefault for null; kQuotaUnchanged when the field is absent).
struct QuotaSet {
  u32 limit[kQuotaKinds] = {kQuotaUnchanged, kQuotaUnchanged, kQuotaUnchanged, kQuotaUnchanged};
};

struct AccountCreate {
  Currency currency;
  u64 owner_id = 0;  // 0: the caller (a merchant), or none (an operator's system account)
  AccountKind kind = AccountKind::user;
  bool allow_negative = false;
  u32 group = 0;  // operators, for an account without an owner
  bool has_group = false;
};

struct TransferCreate {
  u64 debit_account_id = 0;
  u64 credit_account_id = 0;
  u64 amount = 0;
  Currency currency;
  bool pending = false;
  u32 timeout_s = 0;  // holds only; 0: never expires
  std::string reference;
  std::string metadata;  // minified JSON object, or empty
  u64 extra_hash = 0;    // fingerprint of reference + metadata, for idempotency

  // As `*this = TransferCreate{}`, keeping the strings' buffers: a batch resets one per
  // operation, and building a blank and moving it in was a quarter of its decoding.
  void reset() noexcept {
    static_assert(sizeof(Currency) == 4 && sizeof(std::string) == 32 &&
                      sizeof(TransferCreate) == 3 * 8 + 4 + 4 + 4 + 4 + 2 * 32 + 8,
                  "a field was added: reset it here");
    debit_account_id = 0;
    credit_account_id = 0;
    amount = 0;
    currency = Currency{};
    pending = false;
    timeout_s = 0;
    reference.clear();
    metadata.clear();
    extra_hash = 0;
  }
};

struct PendingAction {
  u64 amount = 0;  // post: 0 captures all
};

enum class BatchOp : u8 { transfer, post, void_ };

struct BatchOperation {
  BatchOp op = BatchOp::transfer;
  TransferCreate transfer;  // op transfer
  u64 transfer_id = 0;      // op post / void
  u64 amount = 0;           // op post: 0 captures all
};

struct BatchRequest {
  bool atomic = false;
  u32 count = 0;  // operations[0 .. count) are this request's; the vector is reused
  std::vector<BatchOperation> operations;
};

class RequestDecoder {
 public:
  Problem merchant_create(std::string_view body, MerchantCreate* out);
  // {name?}: an empty body is allowed.
  Problem user_create(std::string_view body, MerchantCreate* out);
  // {name, currency?} (currency: "USD" when absent).
  Problem provider_create(std::string_view body, MerchantCreate* out);
  Problem withdrawal_create(std::string_view body, WithdrawalCreate* out);
  Problem withdrawal_result(std::string_view body, WithdrawalResult* out);
  Problem order_create(std::string_view body, OrderCreate* out);
  Problem order_checkout(std::string_view body, OrderStep* out);
  // {amount?, reason?}: an empty body refunds the rest.
  Problem order_refund(std::string_view body, OrderStep* out);
  // `create`: url and events required. `rotate`: only grace_period_s (also the body of
  // an API key's rotation, POST /v1/merchants/{id}/keys).
  enum class EndpointBody : u8 { create, update, rotate };
  Problem webhook_endpoint(std::string_view body, EndpointBody kind, WebhookEndpointChange* out);
  Problem order_resolve(std::string_view body, OrderStep* out);
  Problem account_create(std::string_view body, AccountCreate* out);
  Problem transfer_create(std::string_view body, TransferCreate* out);
  // An empty body is allowed: capture all.
  Problem post_pending(std::string_view body, PendingAction* out);
  // An empty body or {} only.
  Problem void_pending(std::string_view body);
  Problem quota_set(std::string_view body, QuotaSet* out);
  Problem risk_set(std::string_view body, RiskSet* out);
  Problem batch(std::string_view body, BatchRequest* out);

 private:
  Problem parse(std::string_view body, simdjson::dom::object* root);
  Problem decode_operation(simdjson::dom::element value, BatchOperation* out);

  simdjson::dom::parser parser_;
  std::string padded_;
  std::string scratch_;
};

}  // namespace paygate::api
