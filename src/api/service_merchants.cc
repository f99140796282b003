// Routes of principals (operators): onboarding merchants, users and providers,
// reading them, key rotation — kept by the registry (merchants.h), not a ledger — and
// merchants' quotas, which are the merchant's group's state (ledger/owner_quotas.h).
#include "api/service.h"

#include <fmt/format.h>

#include "api/http_status.h"
#include "api/render.h"
#include "api/service_internal.h"
#include "base/hash.h"
#include "base/log.h"

namespace paygate::api {

using detail::decoder;

namespace {
// What onboarding and key rotation answer (and the registry keeps for a retry).
StoredReply created_reply(const Merchant& m, bool with_secret) {
  StoredReply r{.content_hash = 0, .status = 201, .body = {}};
  render_merchant(r.body, m, with_secret);
  return r;
}
}  // namespace

// POST /v1/merchants, and /v1/users: a user (a payer) is a principal with its own key,
// spread over the groups like a top-level merchant, whose accounts are wallets.
bool Service::create_merchant(Exchange& ex) {
  MerchantCreate& request = ex.merchant_create_;
  const bool user = ex.route_ == Route::users_create;
  const u64 content = Hasher{}.add_bytes(ex.view_.body).add(user ? 3 : 1).value();
  if (ex.step_ == 0) {
    if (!ex.principal_.is_operator) return fail(ex, ResultCode::operator_only, "operators only");
    const Problem problem = user ? decoder().user_create(ex.view_.body, &request)
                                 : decoder().merchant_create(ex.view_.body, &request);
    if (!problem.ok()) return fail_problem(ex, problem);
    if (!ex.key_.empty()) return claim_for_registry(ex, content);
  } else if (!ex.results_[0].ok()) {
    return fail_claim(ex, ex.results_[0].code);
  }
  StoredReply reply;
  Status failure;
  const ResultCode code =
      merchants_.create(request, user ? PrincipalKind::user : PrincipalKind::merchant, ex.key_,
                        content, created_reply, &reply, &failure);
  if (code == ResultCode::invalid_field) return fail(ex, code, "region is not this deployment's");
  if (code != ResultCode::ok) return fail_registry(ex, code, failure);
  ex.reply.body = reply.body;
  return finish(ex, reply.status);
}

// A provider, with a clearing account (a system account it owns) in every group, so that
// an order's money never leaves the order's group: the registry makes the provider,
// each group in turn opens its account, and the registry records them and keeps the
// reply, each step durable before the next. A crash between them leaves a provider
// whose secret was never shown and that the registry knows with no account: inert (a
// retry with the same Idempotency-Key onboards a new one).
bool Service::create_provider(Exchange& ex) {
  MerchantCreate& request = ex.merchant_create_;
  const u64 content = Hasher{}.add_bytes(ex.view_.body).add(4).value();
  if (ex.step_ == 0) {
    ex.provider_id_ = 0;
    if (!ex.principal_.is_operator) return fail(ex, ResultCode::operator_only, "operators only");
    const Problem problem = decoder().provider_create(ex.view_.body, &request);
    if (!problem.ok()) return fail_problem(ex, problem);
    if (!ex.key_.empty()) return claim_for_registry(ex, content);
  } else if (ex.provider_id_ == 0 && !ex.results_[0].ok()) {
    return fail_claim(ex, ex.results_[0].code);
  }
  StoredReply reply;
  Status failure;
  if (ex.provider_id_ == 0) {
    u64 created = 0;
    const ResultCode code = merchants_.create(request, PrincipalKind::provider, ex.key_, content,
                                              created_reply, &reply, &failure, &created);
    if (code == ResultCode::overloaded) {
      return fail(ex, code,
                  "an onboarding with this Idempotency-Key is on its way; retry shortly with the "
                  "same key for its answer");
    }
    if (code != ResultCode::ok) return fail_registry(ex, code, failure);
    if (created == 0) {  // a retry of a finished onboarding
      ex.reply.body = reply.body;
      return finish(ex, reply.status);
    }
    ex.provider_id_ = created;
    ex.lookup_ids_.clear();  // the clearing accounts made, by group
  } else {
    const CommandResult result = ex.results_[0];
    if (!result.ok()) {
      merchants_.abandon_onboarding(ex.key_);
      return fail(ex, result.code,
                  fmt::format("the provider's clearing account in group {} could not be opened "
                              "({}); nothing usable was made, onboard it again",
                              ex.lookup_ids_.size(), describe(result.code)));
    }
    owners_.set(result.id, ex.provider_id_);
    ex.lookup_ids_.push_back(result.id);
  }
  if (ex.lookup_ids_.size() < engine().groups()) {
    ex.group_ = &engine().group(static_cast<u32>(ex.lookup_ids_.size()));
    ex.commands_.assign(1, Command::make_create_account(MerchantId{ex.provider_id_},
                                                        request.currency, AccountKind::system));
    ex.results_.assign(1, CommandResult{});
    const bool refused = submit_one(ex, ex.lookup_ids_.size() + 1 == engine().groups());
    if (refused) merchants_.abandon_onboarding(ex.key_);  // a retry may onboard anew
    return refused;
  }
  const ResultCode code =
      merchants_.set_clearing_accounts(ex.provider_id_, ex.lookup_ids_, request.currency, ex.key_,
                                       content, created_reply, &reply, &failure);
  if (code != ResultCode::ok) return fail_registry(ex, code, failure);
  ex.reply.body = reply.body;
  return finish(ex, reply.status);
}

// The registry keeps its own replies, but an operator's key is one key everywhere
// (issue: the same key onboarded a merchant and opened an account): before the
// registry acts, the key is claimed in its home group like any request's, so its use
// on another route, or a ledger route's use of it, is refused.
bool Service::claim_for_registry(Exchange& ex, u64 content) {
  ex.key_taken_ = true;
  ex.group_ = &key_home(ex);
  ex.commands_.assign(
      1,
      Command::make_claim(ex.key_, Hasher{}.add(static_cast<u64>(ex.route_)).add(content).value(),
                          0, ex.key_lane_, {}, ex.signature_key_));
  ex.results_.assign(1, CommandResult{});
  return submit_one(ex);
}

// The registry's refusal, or its failed write: logged (with the file and the system's
// reason, which are not the client's business) and answered not_durable.
bool Service::fail_registry(Exchange& ex, ResultCode code, const Status& failure) {
  if (failure.ok()) return fail(ex, code, name(code));
  PG_LOG_ERROR("event=merchants_write_failed error=\"{}\"", failure.to_string());
  return fail(ex, code,
              "the merchant registry could not be written durably; nothing changed, retry "
              "with the same Idempotency-Key");
}

bool Service::get_merchant(Exchange& ex) {
  const MerchantRef merchant = merchants_.find(ex.path_id_);
  if (merchant == nullptr || (!ex.principal_.is_operator &&
                              !merchants_.can_see(ex.principal_.merchant->id, merchant->id))) {
    const ResultCode unknown = ex.route_ == Route::users_get       ? ResultCode::user_not_found
                               : ex.route_ == Route::providers_get ? ResultCode::provider_not_found
                                                                   : ResultCode::merchant_not_found;
    return fail(ex, unknown, describe(unknown));
  }
  render_merchant(ex.reply.body, *merchant, false);
  return finish(ex, 200);
}

// The old key keeps working for the grace period ({grace_period_s}, default [auth]
// key_grace_period_s; 0 ends it at once), so that a merchant can deploy the new one
// without a moment refused; its webhooks carry both signatures meanwhile.
bool Service::rotate_key(Exchange& ex) {
  const u64 content = Hasher{}.add(ex.path_id_).add(2).add_bytes(ex.view_.body).value();
  if (ex.step_ == 0) {
    if (!ex.principal_.is_operator) return fail(ex, ResultCode::operator_only, "operators only");
    const Problem problem = decoder().webhook_endpoint(
        ex.view_.body, RequestDecoder::EndpointBody::rotate, &ex.webhook_change_);
    if (!problem.ok()) return fail_problem(ex, problem);
    if (!ex.key_.empty()) return claim_for_registry(ex, content);
  } else if (!ex.results_[0].ok()) {
    return fail_claim(ex, ex.results_[0].code);
  }
  StoredReply reply;
  Status failure;
  const ResultCode code = merchants_.rotate_key(
      ex.path_id_, ex.webhook_change_.grace_period_s.value_or(config_.key_grace_period_s), ex.key_,
      content, created_reply, &reply, &failure);
  if (code == ResultCode::merchant_not_found && ex.route_ != Route::merchants_keys) {
    const ResultCode unknown = ex.route_ == Route::users_keys ? ResultCode::user_not_found
                                                              : ResultCode::provider_not_found;
    return fail(ex, unknown, describe(unknown));
  }
  if (code != ResultCode::ok) return fail_registry(ex, code, failure);
  ex.reply.body = reply.body;
  return finish(ex, reply.status);
}

// The merchant the path names, as its caller may see it (an operator: any; a merchant:
// itself and its sub-merchants); nullptr after answering 404.
MerchantRef Service::path_merchant(Exchange& ex) {
  const MerchantRef merchant = merchants_.find(ex.path_id_);
  if (merchant == nullptr || merchant->group >= engine().groups() ||
      (!ex.principal_.is_operator &&
       !merchants_.can_see(ex.principal_.merchant->id, merchant->id))) {
    fail(ex, ResultCode::merchant_not_found, "no such merchant");
    return nullptr;
  }
  ex.group_ = &engine().group(merchant->group);
  return merchant;
}

bool Service::get_quotas(Exchange& ex) {
  if (ex.step_ == 0 && path_merchant(ex) == nullptr) return true;
  return read_quotas(ex, 0);
}

// Operators set a merchant's limits: a journaled command of its group, so that the
// group refuses the same after any restart.
bool Service::set_quotas(Exchange& ex) {
  if (ex.step_ == 0) {
    if (!ex.principal_.is_operator) return fail(ex, ResultCode::operator_only, "operators only");
    const Problem problem = decoder().quota_set(ex.view_.body, &ex.quota_set_);
    if (!problem.ok()) return fail_problem(ex, problem);
    if (path_merchant(ex) == nullptr) return true;
    const u32* limit = ex.quota_set_.limit;
    ex.commands_.assign(
        1, Command::make_set_quota(MerchantId{ex.path_id_}, limit[0], limit[1], limit[2], limit[3])
               .with_key(ex.key_, ex.key_lane_));
    ex.results_.assign(1, CommandResult{});
    return submit_one(ex, /*last_step=*/false);
  }
  if (ex.step_ == 1 && !ex.results_[0].ok()) {
    return fail(ex, ex.results_[0].code, describe(ex.results_[0].code));
  }
  return read_quotas(ex, 1);
}

// A merchant's risk rules: operators set them (kept in the registry, durably), the
// merchant and operators read them. Checked at each checkout (checkout_risk). Setting
// the same rules again changes nothing; an Idempotency-Key is claimed first, as for
// the registry's other routes, so that its use with other content is refused.
bool Service::merchant_risk(Exchange& ex) {
  const bool set = ex.route_ == Route::merchants_risk_set;
  RiskSet& request = ex.risk_set_;
  const u64 content = Hasher{}.add_bytes(ex.view_.body).value();
  if (ex.step_ == 0) {
    if (set && !ex.principal_.is_operator) {
      return fail(ex, ResultCode::operator_only, "operators only");
    }
    if (set) {
      const Problem problem = decoder().risk_set(ex.view_.body, &request);
      if (!problem.ok()) return fail_problem(ex, problem);
    }
    const MerchantRef merchant = path_merchant(ex);
    if (merchant == nullptr) return true;
    if (merchant->kind != PrincipalKind::merchant) {
      return fail(ex, ResultCode::merchant_not_found, "risk rules are a merchant's");
    }
    if (set && !ex.key_.empty()) return claim_for_registry(ex, content);
  } else if (!ex.results_[0].ok()) {
    return fail_claim(ex, ex.results_[0].code);
  }
  const MerchantRef merchant = merchants_.find(ex.path_id_);  // principals are never removed
  PG_ASSERT(merchant != nullptr);
  RiskRules rules = merchant->risk;
  if (set) {
    Status failure;
    const ResultCode code = merchants_.set_risk(merchant->id, request, &rules, &failure);
    if (code != ResultCode::ok) return fail_registry(ex, code, failure);
    PG_LOG_INFO("event=risk_rules_set merchant={} max_amount={} velocity={} blocked_payers={}",
                id_text(IdKind::merchant, merchant->id), rules.max_amount,
                rules.max_checkouts_per_payer_per_minute, rules.blocked_payers.size());
  }
  render_risk(ex.reply.body, merchant->id, rules);
  return finish(ex, 200);
}

bool Service::read_quotas(Exchange& ex, u32 read_step) {
  if (ex.step_ == read_step) {
    Request request{.kind = RequestKind::lookup_quota, .lookup_id = ex.path_id_};
    request.quota_out = &ex.quota_;
    request.quota_defaults_out = &ex.quota_defaults_;
    request.completion = &ex;
    return submit(ex, request);
  }
  render_quotas(ex.reply.body, ex.quota_, ex.quota_defaults_);
  return finish(ex, 200);
}

}  // namespace paygate::api
