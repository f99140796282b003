// Routes of orders (docs/API.md, "Orders"; the machine: orders/order_book.h). Every
// step is looked up first (is it there, who may act, is the signature right), then
// one command of the order's group that changes the order and its money together.
#include "api/service.h"

#include <fmt/format.h>

#include "api/crypto.h"
#include "api/http_status.h"
#include "api/id_text.h"
#include "api/render.h"
#include "api/service_internal.h"
#include "base/hash.h"
#include "base/log.h"

namespace paygate::api {

using detail::decoder;

namespace {

constexpr u8 kPositive = 1, kNegative = 2;  // result success / resolve accept, and not

// What each status still allows, for the message of invalid_order_state.
std::string_view allowed_in(OrderStatus status) {
  switch (status) {
    case OrderStatus::created:
      return "it can be checked out or cancelled";
    case OrderStatus::processing:
      return "it waits for its provider's result, or a cancel";
    case OrderStatus::success:
      return "it can be refunded";
    case OrderStatus::exception_checkout:
      return "an operator resolves it";
    default:
      return "it is final";
  }
}

}  // namespace

// HMAC-SHA256 over what a payer must not be able to change, keyed by the server.
std::string Service::order_signature(const Order& o) const {
  const std::string id = id_text(IdKind::order, o.id);
  const std::string merchant = principal_id_text(o.merchant);
  const std::string amount = std::to_string(o.amount);
  const std::string currency = o.currency.letters();
  const std::string expires = std::to_string(o.expires_at_ns / kNanosPerSecond);
  return to_hex(
      hmac_sha256(order_key_, {id, "|", merchant, "|", amount, "|", currency, "|", expires}));
}

// Operators; the merchant (and its parents); the payer who paid it from its wallet;
// the provider it was routed to.
bool Service::visible_order(const Exchange& ex, const Order& o) const {
  if (ex.principal_.is_operator || visible_owner(ex, o.merchant)) return true;
  const u64 caller = ex.principal_.merchant->id;
  for (const AccountId side : {o.payer_account, o.provider_account}) {
    if (side.value == 0) continue;
    const std::optional<u64> owner = owners_.owner(side.value);
    if (owner && *owner == caller) return true;
  }
  return false;
}

bool Service::lookup_order(Exchange& ex, bool last_step) {
  Request request{.kind = RequestKind::lookup_order, .lookup_id = ex.path_id_};
  request.order_out = &ex.order_;
  request.completion = &ex;
  return submit(ex, request, last_step);
}

// The caller's checkout of order `o` against its merchant's risk rules: the amount for
// everyone; the payer rules for a principal paying (a wallet's owner, else the caller),
// not an operator. Admitted checkouts count toward the payer's velocity.
RiskRule Service::checkout_risk(const Exchange& ex, const Order& o) {
  const MerchantRef merchant = merchants_.find(o.merchant);
  if (merchant == nullptr || !merchant->risk.any()) return RiskRule::none;
  const RiskRules& rules = merchant->risk;
  if (rules.max_amount != 0 && o.amount > rules.max_amount) return RiskRule::max_amount;
  if (ex.principal_.is_operator) return RiskRule::none;
  u64 payer = ex.principal_.merchant->id;
  if (ex.order_step_.method == static_cast<u8>(OrderMethod::wallet)) {
    payer = owners_.owner(ex.order_step_.payer_account).value_or(payer);
  }
  // A blocked principal is blocked with everything under it: the payer and each of
  // its parents is looked for (the tree is shallow; the walk is bounded all the same).
  u64 principal = payer;
  for (u32 depth = 0; principal != 0 && depth < 64; ++depth) {
    if (rules.blocks(principal)) return RiskRule::blocked_payer;
    const MerchantRef found = merchants_.find(principal);
    principal = found == nullptr ? 0 : found->parent_id;
  }
  if (rules.max_checkouts_per_payer_per_minute != 0 &&
      !checkout_velocity_.admit(o.merchant, payer, rules.max_checkouts_per_payer_per_minute,
                                ex.started_ns_)) {
    return RiskRule::payer_velocity;
  }
  return RiskRule::none;
}

// What a step did to the order (for an answer when the order could not be read back).
void Service::advance_order(Order& o, const Command& command, const CommandResult& result) {
  const u8 action = command.order.action;
  switch (command.kind) {
    case CommandKind::order_checkout:
      if (const auto rule = static_cast<RiskRule>(action >> kCheckoutRiskShift);
          rule != RiskRule::none) {
        o.status = OrderStatus::rejected_risk;
        o.risk_rule = rule;
        break;
      }
      o.method = static_cast<OrderMethod>(action);
      if (o.method == OrderMethod::wallet) {
        o.status = OrderStatus::success;
        o.payer_account = command.order.account;
        o.transfer_id = TransferId{result.id};
      } else {
        o.status = OrderStatus::processing;
        o.provider_account = command.order.account;
        if (o.method == OrderMethod::balance) o.payer_account = o.account;
      }
      break;
    case CommandKind::order_result:
      if (o.status == OrderStatus::timeout || o.status == OrderStatus::cancelled) {
        o.status = OrderStatus::exception_checkout;
        o.late_result = 1;
      } else {
        o.status = action == kPositive ? OrderStatus::success : OrderStatus::failed;
      }
      break;
    case CommandKind::order_resolve:
      o.status = action == kPositive ? OrderStatus::success : OrderStatus::failed;
      o.resolution = action == kPositive ? OrderResolution::accepted : OrderResolution::rejected;
      break;
    case CommandKind::order_cancel:
      o.status = OrderStatus::cancelled;
      break;
    default:  // a refund: the amount is the answer's
      break;
  }
}

bool Service::fail_order_lookup(Exchange& ex) {
  if (ex.route_ == Route::orders_result && ex.outcome_.archived) {
    // A provider's result for an order that has left memory moves nothing and is
    // recorded nowhere else: someone must look at it.
    PG_LOG_WARN("event=order_result_after_archive order={} result={}",
                id_text(IdKind::order, ex.path_id_),
                ex.withdrawal_result_.success ? "success" : "failed");
  }
  if (ex.outcome_.archived) {
    return fail(ex, ResultCode::order_archived,
                "the order is final and has left the engine's memory ([orders] "
                "final_retained_s); its history is the read side's (docs/ORDERS.md)");
  }
  return fail(ex, ResultCode::order_not_found, "no such order");
}

bool Service::fail_order_command(Exchange& ex, const CommandResult& result) {
  if (result.code == ResultCode::invalid_order_state) {
    const auto status = static_cast<OrderStatus>(result.channel_number);
    return fail(ex, result.code,
                fmt::format("the order is {}: {}", name(status), allowed_in(status)));
  }
  if (result.code == ResultCode::duplicate_order) {
    return fail(
        ex, result.code,
        fmt::format("merchant_ref is already used by {}", id_text(IdKind::order, result.id)));
  }
  return fail(ex, result.code, describe(result.code));
}

// A step whose money crosses groups (a wallet elsewhere pays, or is refunded): the
// order's command is the first step of the protocol between groups (pipeline/carry.h),
// keyed like any step, so that a retry finds the same hold and is carried to the end.
bool Service::carry_order_step(Exchange& ex, const Command& command) {
  ex.order_seen_ = ex.order_;
  ex.between_groups_ = true;
  // (The request's content, for a claim of its key in another group.)
  ex.commands_.assign(1, Command{command}.with_key(ex.key_, ex.key_lane_));
  ex.results_.assign(1, CommandResult{});
  return start_carry(ex, ex.commands_[0], /*last=*/false);
}

// After the carry, the order is read back: a refund is answered with its hold's amount
// and the order as it is now; a checkout with the order paid, or, refused, in the
// state that refused it.
bool Service::order_step_between_groups(Exchange& ex) {
  const CarryBetweenGroups::Carried& carried = ex.carry_.carried()[0];
  Order& o = ex.order_;
  const bool refund = ex.route_ == Route::orders_refunds;
  if (refund && ex.step_ == 2) {
    if (carried.code == ResultCode::invalid_order_state) {
      return fail_order_command(ex, OrderBook::refuse_state(ex.order_seen_));
    }
    if (const std::optional<bool> failed = fail_carried(ex)) return *failed;
    ex.group_ = engine().route(o.id);  // the carry left it at its last step's
    return lookup_order(ex, /*last_step=*/true);
  }
  if (refund) {
    // The refund is its hold (what "the rest" came to, a retry's too); the order as
    // it is now (gone from memory: as it was, with this refund).
    const u64 amount = ex.carry_.holds()[0].amount;
    if (!ex.outcome_.found) {
      o = ex.order_seen_;
      o.amount_refunded = std::min(o.amount, o.amount_refunded + amount);
    }
    render_refund(ex.reply.body, o, carried.hold.value, amount, ex.order_step_.reason);
    return finish(ex, 201);
  }
  if (ex.step_ == 2) {
    // Refused by the order's group because the order was not open (the payer's money
    // went back): answered below with the state that refused it.
    const bool order_refused =
        ex.carry_.status() == ResultCode::ok && carried.numbered &&
        (carried.code == ResultCode::invalid_order_state ||
         carried.code == ResultCode::order_not_found || carried.code == ResultCode::order_archived);
    if (!order_refused) {
      if (const std::optional<bool> failed = fail_carried(ex)) return *failed;
    }
    ex.group_ = engine().route(o.id);  // the carry left it at its last step's
    return lookup_order(ex, /*last_step=*/true);
  }
  if (carried.code != ResultCode::ok) {
    if (!ex.outcome_.found) return fail_order_lookup(ex);
    return fail_order_command(ex, OrderBook::refuse_state(o));
  }
  if (!ex.outcome_.found) {
    // Paid, then gone from memory (a retry's, long after): the order as it was, paid
    // (its transfer: the payer's side of the payment).
    o = ex.order_seen_;
    o.status = OrderStatus::success;
    o.method = OrderMethod::wallet;
    o.payer_account = AccountId{ex.order_step_.payer_account};
    o.transfer_id = carried.hold;
  }
  return answer_order(ex);
}

bool Service::create_order(Exchange& ex) {
  OrderCreate& r = ex.order_create_;
  if (ex.step_ == 0) {
    const Problem problem = decoder().order_create(ex.view_.body, &r);
    if (!problem.ok()) return fail_problem(ex, problem);
    const bool is_operator = ex.principal_.is_operator;
    if (!is_operator && ex.principal_.merchant->kind != PrincipalKind::merchant) {
      return fail(ex, ResultCode::operator_only, "merchants (and operators) create orders");
    }
    if (r.account_id == 0) {
      if (is_operator) return fail(ex, ResultCode::missing_field, "an operator names the account");
      const std::optional<u64> first =
          owners_.first_account(ex.principal_.merchant->id, r.currency.code);
      if (!first) {
        return fail(ex, ResultCode::account_not_found,
                    fmt::format("the merchant has no account in {}: open one, or name one",
                                r.currency.letters()));
      }
      r.account_id = *first;
    }
    ex.group_ = engine().route(r.account_id);
    if (ex.group_ == nullptr || !visible_account(ex, r.account_id)) {
      return fail(ex, ResultCode::account_not_found, "no such account");
    }
    // An order pays a merchant: an account a user or a provider owns (a wallet, a
    // clearing account), which only an operator can name here, would make the owner
    // the order's merchant, able to steer its money where transfers may not go.
    const std::optional<u64> owner = owners_.owner(r.account_id);
    if (!owner) return fail(ex, ResultCode::account_not_found, "no such account");
    if (*owner != 0 && principal_kind(*owner) != PrincipalKind::merchant) {
      return fail(ex, ResultCode::invalid_account_kind,
                  "an order pays into a merchant's account; this one is a user's or a provider's");
    }
    if (!r.ipn_url.empty() && !ipn_url_allowed(ex, r.ipn_url)) return true;
    const u64 ref = Hasher{}.add_bytes(r.merchant_ref).add(r.merchant_ref.size()).value();
    const u8 flags = r.callback_url.empty() ? 0 : kOrderCallbackUrl;
    ex.commands_.assign(1, Command::make_order_create(AccountId{r.account_id}, r.amount, r.currency,
                                                      r.expires_in_s, ref | 1, flags)
                               .with_extra_hash(r.extra_hash)
                               .with_key(ex.key_, ex.key_lane_));
    ex.results_.assign(1, CommandResult{});
    ex.annotations_.clear();
    using journal::AnnotationKind;
    for (const auto& [kind, text] : {std::pair{AnnotationKind::merchant_ref, &r.merchant_ref},
                                     {AnnotationKind::description, &r.description},
                                     {AnnotationKind::metadata, &r.metadata},
                                     {AnnotationKind::ipn_url, &r.ipn_url},
                                     {AnnotationKind::callback_url, &r.callback_url}}) {
      if (!text->empty()) ex.annotations_.push_back({0, kind, *text});
    }
    return submit_one(ex, /*last_step=*/true, /*annotated=*/true);
  }
  const CommandResult result = ex.results_[0];
  if (!result.ok()) return fail_order_command(ex, result);
  Order& o = ex.order_;
  o = Order{};
  o.id = result.id;
  o.merchant = owners_.owner(r.account_id).value_or(0);
  o.account = AccountId{r.account_id};
  o.amount = r.amount;
  o.currency = r.currency;
  o.created_at_ns = u64{result.channel_number} * kNanosPerSecond;
  o.expires_at_ns = o.created_at_ns + u64{r.expires_in_s} * kNanosPerSecond;
  render_order(ex.reply.body, o, order_signature(o), 0, &r);
  return finish(ex, 201);
}

bool Service::get_order(Exchange& ex) {
  if (ex.step_ == 0) {
    if (const Problem problem = parse_read_query(ex.view_.target, &ex.min_sequence_);
        !problem.ok()) {
      return fail_problem(ex, problem);
    }
    const u32 group = id_prefix(ex.path_id_).group;
    if (const std::optional<bool> waited = await_min_sequence(ex, group, ex.min_sequence_)) {
      return *waited;
    }
    return lookup_order(ex, /*last_step=*/true);
  }
  if (ex.step_ == 1) {  // the group's answer (step 2: after a wait for the store)
    if (!ex.outcome_.found && ex.outcome_.archived) {
      if (const std::optional<bool> answered = order_from_history(ex)) return *answered;
    }
    if (!ex.outcome_.found) return fail_order_lookup(ex);
    if (!visible_order(ex, ex.order_)) {
      return fail(ex, ResultCode::order_not_found, "no such order");
    }
  }
  return answer_held_order(ex);
}

bool Service::order_step(Exchange& ex) {
  if (ex.redirect_waited_) return answer_order(ex);  // the store was waited for
  OrderStep& s = ex.order_step_;
  Order& o = ex.order_;
  const Route route = ex.route_;
  if (ex.step_ == 0) {
    Problem problem;
    switch (route) {
      case Route::orders_checkout:
        problem = decoder().order_checkout(ex.view_.body, &s);
        break;
      case Route::orders_result:
        problem = decoder().withdrawal_result(ex.view_.body, &ex.withdrawal_result_);
        break;
      case Route::orders_resolve:
        problem = decoder().order_resolve(ex.view_.body, &s);
        break;
      case Route::orders_refunds:
        problem = decoder().order_refund(ex.view_.body, &s);
        break;
      default:  // cancel: {} or nothing
        problem = decoder().void_pending(ex.view_.body);
        break;
    }
    if (!problem.ok()) return fail_problem(ex, problem);
    if (route == Route::orders_resolve && !ex.principal_.is_operator) {
      return fail(ex, ResultCode::operator_only, "operators resolve an exception_checkout");
    }
    return lookup_order(ex, /*last_step=*/false);
  }
  if (ex.step_ == 1) {
    if (!ex.outcome_.found) return fail_order_lookup(ex);
    const bool is_operator = ex.principal_.is_operator;
    const u64 caller = is_operator ? 0 : ex.principal_.merchant->id;
    AccountId account{};
    u64 amount = 0;
    u8 action = 0;
    u64 extra = 0;
    CommandKind kind = CommandKind::order_cancel;
    switch (route) {
      case Route::orders_checkout: {
        // The signature is what lets a payer's browser check out an order it was shown:
        // whoever holds it may, and it covers what the payer must not change.
        if (!equal_constant_time(s.signature, order_signature(o))) {
          return fail(ex, ResultCode::invalid_order_signature,
                      "signature does not match the order (its id, merchant, amount, currency "
                      "and expiry)");
        }
        const auto method = static_cast<OrderMethod>(s.method);
        if (method == OrderMethod::wallet) {
          if (engine().route(s.payer_account) == nullptr || !visible_account(ex, s.payer_account)) {
            return fail(ex, ResultCode::debit_account_not_found, "no such payer_account");
          }
          account = AccountId{s.payer_account};
        } else {
          // balance: the merchant pays from the order's account, its prefunded one.
          if (method == OrderMethod::balance && !visible_owner(ex, o.merchant)) {
            return fail(ex, ResultCode::debit_account_not_found,
                        "method balance pays from the order's account: its merchant (or an "
                        "operator) checks it out");
          }
          const MerchantRef provider = route_provider(ex, s.provider_id, o.currency);
          if (provider == nullptr) return true;
          // The provider's clearing account in the order's group: the order's money
          // stays in its group, whichever group the provider calls home.
          const u32 group = id_prefix(o.id).group;
          account = AccountId{provider->clearing_account_in(group)};
          if (account.value == 0) {
            return fail(ex, ResultCode::cross_group_transfer,
                        fmt::format("the provider has no clearing account in group {}, the "
                                    "order's (it was onboarded before there was one in each "
                                    "group, or the group was added since; docs/ORDERS.md)",
                                    group));
          }
        }
        const bool elsewhere = engine().route(account.value) != ex.group_;
        if (elsewhere && method != OrderMethod::wallet) {  // a registry not of these groups
          return fail(ex, ResultCode::cross_group_transfer,
                      "the provider's clearing account for this order is in another group");
        }
        // The risk rules are asked once, while the order is open; a keyed retry of a
        // refused checkout sends the same refusal, for the group to answer as before.
        const RiskRule rule = o.status == OrderStatus::created         ? checkout_risk(ex, o)
                              : o.status == OrderStatus::rejected_risk ? o.risk_rule
                                                                       : RiskRule::none;
        kind = CommandKind::order_checkout;
        action = checkout_action(method, rule);
        if (elsewhere && rule == RiskRule::none) {
          // A wallet of another group pays: held there, credited here with the order's
          // transition in one command, settled there (docs/ORDERS.md, "Between groups").
          // Without a key to answer a retry from, a closed order is refused now.
          if (o.status != OrderStatus::created &&
              (ex.key_.empty() || ex.key_lane_ != KeyLane::client)) {
            return fail_order_command(ex, OrderBook::refuse_state(o));
          }
          return carry_order_step(
              ex, Command::make_order(CommandKind::order_pay, o.id, account, o.amount, action));
        }
        break;
      }
      case Route::orders_result: {
        const std::optional<u64> provider =
            o.provider_account.value != 0 ? owners_.owner(o.provider_account.value) : std::nullopt;
        const bool routed = provider && *provider == caller && is_provider(ex);
        if (!is_operator && !routed) {
          if (!visible_order(ex, o)) return fail(ex, ResultCode::order_not_found, "no such order");
          return fail(ex, ResultCode::awaits_provider,
                      "only the provider the order was routed to (or an operator) reports its "
                      "result");
        }
        kind = CommandKind::order_result;
        action = ex.withdrawal_result_.success ? kPositive : kNegative;
        extra = Hasher{}.add_bytes(ex.withdrawal_result_.provider_ref).add(6).value();
        annotate(ex, journal::AnnotationKind::provider_ref, ex.withdrawal_result_.provider_ref);
        break;
      }
      case Route::orders_resolve:
        kind = CommandKind::order_resolve;
        action = s.accept ? kPositive : kNegative;
        break;
      default:  // cancel, refunds: the merchant's (or an operator's)
        if (!visible_owner(ex, o.merchant)) {
          return fail(ex, ResultCode::order_not_found, "no such order");
        }
        if (route == Route::orders_refunds) {
          if (o.method == OrderMethod::balance && !is_operator) {
            return fail(ex, ResultCode::operator_only,
                        "a balance order's refund takes the money back from its provider: an "
                        "operator makes it once the provider has returned it");
          }
          kind = CommandKind::order_refund;
          amount = s.amount;
          extra = Hasher{}.add_bytes(s.reason).add(7).value();
          annotate(ex, journal::AnnotationKind::reason, s.reason);
          if (o.method == OrderMethod::wallet &&
              engine().route(o.payer_account.value) != ex.group_) {
            // To a wallet of another group: held here, carried there, settled here.
            return carry_order_step(
                ex, Command::make_order(kind, o.id, {}, amount, 0).with_extra_hash(extra));
          }
        }
        break;
    }
    ex.commands_.assign(1, Command::make_order(kind, o.id, account, amount, action)
                               .with_extra_hash(extra)
                               .with_key(ex.key_, ex.key_lane_));
    ex.results_.assign(1, CommandResult{});
    // The group copies the order out as the step leaves it, in the same pass (so that
    // a keyed retry, answered by the ledger as the first time, shows the same while
    // nothing else has changed it), with no trip of its own.
    ex.order_seen_ = o;
    Request request{.kind = RequestKind::commands,
                    .count = 1,
                    .commands = ex.commands_.data(),
                    .results = ex.results_.data(),
                    .completion = &ex};
    request.order_out = &o;
    return submit(ex, with_annotations(ex, request));
  }
  if (ex.between_groups_) return order_step_between_groups(ex);
  // The step is done; a refund's amount is its transfer's.
  const bool refund = route == Route::orders_refunds;
  if (ex.step_ == 2) {
    const CommandResult result = ex.results_[0];
    if (!result.ok()) return fail_order_command(ex, result);
    ex.order_stale_ = !ex.outcome_.found;
    if (ex.order_stale_) {
      // Not held after the step (a retry's order that has left memory): the step still
      // happened, so answer from the order as it was, moved on by the step.
      o = ex.order_seen_;
      advance_order(o, ex.commands_[0], result);
    }
    if (refund) {
      ex.transfers_.resize(1);
      Request request{.kind = RequestKind::lookup_transfer, .lookup_id = result.id};
      request.transfer_out = ex.transfers_.data();
      request.completion = &ex;
      return submit(ex, request, /*last_step=*/true);
    }
  } else if (refund) {
    // The transfer is the truth (a racing refund may have moved part of "the rest");
    // gone from the recent ring, what was left before the step is the best answer.
    if (ex.outcome_.found) {
      s.amount = ex.transfers_[0].amount;
    } else if (s.amount == 0) {
      s.amount = ex.order_seen_.amount - ex.order_seen_.amount_refunded;
    }
    if (ex.order_stale_) o.amount_refunded += s.amount;  // the order from before the step
    render_refund(ex.reply.body, o, ex.results_[0].id, s.amount, s.reason);
    return finish(ex, 201);
  }
  if (route == Route::orders_checkout && o.status == OrderStatus::rejected_risk) {
    return fail(ex, ResultCode::rejected_risk,
                fmt::format("the merchant's risk rules refused this checkout ({}); the order "
                            "{} is final (rejected_risk) and nothing moved",
                            name(o.risk_rule), id_text(IdKind::order, o.id)));
  }
  return answer_order(ex);
}

}  // namespace paygate::api
