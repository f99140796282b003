// Routes of withdrawals: a payer's money leaving paygate through a provider. A
// withdrawal is a two-phase hold from the payer's account toward the provider's
// clearing account (so the money is held, never lost, while the provider pays out);
// the provider's result posts it (success) or voids it (failed), and its timeout
// releases it (timeout). Its id is the hold's ("wdr_…" = "trf_…" with the same digits).
// The result route is pending_action (service_transfers.cc), which posts and voids.
#include "api/service.h"

#include <fmt/format.h>

#include "api/http_status.h"
#include "api/id_text.h"
#include "api/render.h"
#include "api/service_internal.h"

namespace paygate::api {

using detail::decoder;

u64 Service::withdrawal_provider(const Transfer& hold) const {
  if (!hold.two_phase()) return 0;
  const std::optional<u64> owner = owners_.owner(hold.credit_account_id.value);
  return owner && principal_kind(*owner) == PrincipalKind::provider ? *owner : 0;
}

ResultCode Service::may_decide_withdrawal(const Exchange& ex, const Transfer& hold) const {
  const u64 provider = ex.outcome_.found ? withdrawal_provider(hold) : 0;
  if (provider == 0) return ResultCode::withdrawal_not_found;
  if (ex.principal_.is_operator || (is_provider(ex) && ex.principal_.merchant->id == provider)) {
    return ResultCode::ok;
  }
  return visible_transfer(ex, hold) ? ResultCode::awaits_provider
                                    : ResultCode::withdrawal_not_found;
}

bool Service::fail_withdrawal_result(Exchange& ex, ResultCode code) {
  std::string_view status;
  switch (code) {
    case ResultCode::pending_transfer_already_posted:
      status = "success";
      break;
    case ResultCode::pending_transfer_already_voided:
      status = "failed";
      break;
    case ResultCode::transfer_expired:
      status = "timeout";
      break;
    default:
      return fail(ex, code, describe(code));
  }
  return fail(ex, ResultCode::invalid_withdrawal_state,
              fmt::format("the withdrawal is already final (status {}); a result changes only a "
                          "processing one",
                          status));
}

// The provider money is routed to: the one named, else the oldest for the currency; it
// clears in that currency, here. nullptr: the request was answered with why not.
MerchantRef Service::route_provider(Exchange& ex, u64 provider_id, Currency currency) {
  const MerchantRef provider =
      provider_id != 0 ? merchants_.find(provider_id) : merchants_.default_provider(currency);
  if (provider == nullptr || provider->clearing_account == 0 ||
      provider->kind != PrincipalKind::provider) {
    const ResultCode code =
        provider_id != 0 ? ResultCode::provider_not_found : ResultCode::no_provider;
    fail(ex, code, describe(code));
    return nullptr;
  }
  if (provider->clearing_currency != currency) {
    fail(ex, ResultCode::currency_mismatch,
         fmt::format("the provider clears {}, not {}", provider->clearing_currency.letters(),
                     currency.letters()));
    return nullptr;
  }
  if (engine().route(provider->clearing_account) == nullptr) {
    fail(ex, ResultCode::no_provider, describe(ResultCode::no_provider));
    return nullptr;
  }
  return provider;
}

bool Service::create_withdrawal(Exchange& ex) {
  WithdrawalCreate& w = ex.withdrawal_;
  TransferCreate& t = ex.transfer_;
  if (ex.step_ == 0) {
    const Problem problem = decoder().withdrawal_create(ex.view_.body, &w);
    if (!problem.ok()) return fail_problem(ex, problem);
    // The deadline is the provider's to rely on: a payer choosing a short one could get
    // its money back (expiry) after the provider paid out and before it reported.
    if (w.timeout_s != kWithdrawalTimeoutDefaultS && !ex.principal_.is_operator) {
      return fail(ex, ResultCode::operator_only,
                  "only operators set a withdrawal's timeout_s (default 3 days)");
    }
    if (engine().route(w.account_id) == nullptr || !visible_account(ex, w.account_id)) {
      return fail(ex, ResultCode::account_not_found, "no such account");
    }
    const MerchantRef provider = route_provider(ex, w.provider_id, w.currency);
    if (provider == nullptr) return true;
    ex.provider_id_ = provider->id;
    t.reset();
    t.debit_account_id = w.account_id;
    t.credit_account_id = provider->clearing_account;
    t.amount = w.amount;
    t.currency = w.currency;
    t.pending = true;
    t.timeout_s = w.timeout_s;
    t.extra_hash = w.extra_hash;
    // The hold stays in the payer's group until the provider's success posts it (and
    // carries the credit to the clearing account's group, if that is another).
    ex.between_groups_ = engine().route(w.account_id) != engine().route(t.credit_account_id);
    ex.commands_.resize(1);
    ex.results_.resize(1);
    annotate(ex, journal::AnnotationKind::destination, w.destination);
    return submit_transfer(ex, /*last_step=*/true);
  }
  const CommandResult result = ex.results_[0];
  if (!result.ok()) return fail(ex, result.code, describe(result.code));
  Transfer hold;
  hold.id = TransferId{result.id};
  hold.debit_account_id = AccountId{t.debit_account_id};
  hold.credit_account_id = AccountId{t.credit_account_id};
  hold.amount = t.amount;
  hold.currency = t.currency;
  hold.status = TransferStatus::pending;
  hold.flags = kTransferPending | (ex.between_groups_ ? kTransferBetweenGroups : 0);
  render_withdrawal(ex.reply.body, hold, ex.provider_id_, w.destination, {}, t.timeout_s);
  return finish(ex, 201);
}

bool Service::get_withdrawal(Exchange& ex) {
  if (ex.step_ == 0) {
    ex.transfers_.resize(1);
    Request request{.kind = RequestKind::lookup_transfer, .lookup_id = ex.path_id_};
    request.transfer_out = ex.transfers_.data();
    request.completion = &ex;
    return submit(ex, request);
  }
  const Transfer& hold = ex.transfers_[0];
  const ResultCode refused = may_decide_withdrawal(ex, hold);
  // The payer sees its withdrawal; only the provider (or an operator) decides it.
  if (refused != ResultCode::ok && refused != ResultCode::awaits_provider) {
    return fail(ex, refused, describe(refused));
  }
  render_withdrawal(ex.reply.body, hold, withdrawal_provider(hold), {}, {});
  return finish(ex, 200);
}

}  // namespace paygate::api
