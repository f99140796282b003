// Routes of accounts: opening one in its owner's group, reading one.
#include "api/service.h"

#include "api/http_status.h"
#include "api/render.h"
#include "api/service_internal.h"

namespace paygate::api {

using detail::decoder;

bool Service::create_account(Exchange& ex) {
  AccountCreate& r = ex.account_create_;
  if (ex.step_ == 0) {
    const Problem problem = decoder().account_create(ex.view_.body, &r);
    if (!problem.ok()) return fail_problem(ex, problem);
    const bool is_operator = ex.principal_.is_operator;
    if (!is_operator && (r.kind == AccountKind::system || r.allow_negative || r.has_group)) {
      return fail(ex, ResultCode::operator_only,
                  "only operators open system or allow_negative accounts or choose a group");
    }
    // A user's accounts are wallets.
    if (!is_operator && ex.principal_.merchant->kind == PrincipalKind::user &&
        r.kind != AccountKind::user) {
      return fail(ex, ResultCode::invalid_account_kind, "a user's accounts are of kind \"user\"");
    }
    u32 group = r.has_group ? r.group : 0;
    if (r.owner_id == 0 && !is_operator) r.owner_id = ex.principal_.merchant->id;
    if (r.owner_id != 0) {
      const MerchantRef owner = merchants_.find(r.owner_id);
      if (owner == nullptr ||
          (!is_operator && !merchants_.can_see(ex.principal_.merchant->id, owner->id))) {
        return fail(ex, ResultCode::merchant_not_found, "no such merchant");
      }
      if (r.has_group && r.group != owner->group) {
        return fail(ex, ResultCode::invalid_field, "an owned account lives in its owner's group");
      }
      group = owner->group;
    }
    if (group >= engine().groups()) {
      return fail(ex, ResultCode::invalid_field, "group is beyond the configured groups");
    }
    ex.group_ = &engine().group(group);
    ex.commands_.resize(1);
    ex.results_.resize(1);
    ex.commands_[0] = Command::make_create_account(MerchantId{r.owner_id}, r.currency, r.kind,
                                                   r.allow_negative ? kAccountAllowNegative : 0)
                          .with_key(ex.key_, ex.key_lane_);
    return submit_one(ex);
  }
  const CommandResult result = ex.results_[0];
  if (!result.ok()) return fail(ex, result.code, describe(result.code));
  owners_.set(result.id, r.owner_id, r.currency.code);
  render_new_account(ex.reply.body, result.id, r, r.owner_id);
  return finish(ex, 201);
}

bool Service::get_account(Exchange& ex) {
  if (ex.step_ == 0) {
    if (!visible_account(ex, ex.path_id_)) {
      return fail(ex, ResultCode::account_not_found, "no such account");
    }
    Request request{.kind = RequestKind::lookup_account, .lookup_id = ex.path_id_};
    request.account_out = &ex.account_;
    request.completion = &ex;
    return submit(ex, request);
  }
  if (!ex.outcome_.found) return fail(ex, ResultCode::account_not_found, "no such account");
  render_account(ex.reply.body, ex.account_);
  return finish(ex, 200);
}

}  // namespace paygate::api
