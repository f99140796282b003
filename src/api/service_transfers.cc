// Routes of transfers: making one (in one group, or carried between groups by
// pipeline/carry.h), reading one, posting or voiding a hold.
#include "api/service.h"

#include <fmt/format.h>

#include "api/http_status.h"
#include "api/id_text.h"
#include "api/render.h"
#include "api/service_internal.h"
#include "base/hash.h"
#include "base/log.h"

namespace paygate::api {

using detail::decoder;

// Both accounts are the caller's to move (unknown ones are not), and in one group.
ResultCode Service::check_transfer_accounts(const Exchange& ex, const TransferCreate& t) const {
  // An id of another region or of a group beyond ours names nothing here.
  Group* debit_group = engine().route(t.debit_account_id);
  Group* credit_group = engine().route(t.credit_account_id);
  if (debit_group == nullptr || !visible_account(ex, t.debit_account_id)) {
    return ResultCode::debit_account_not_found;
  }
  // A provider pays in (a deposit, a settled payment) to a merchant's or user's account,
  // at once (a hold toward someone else's account would be theirs to decide); everyone
  // else moves money only among accounts it can see.
  if (credit_group == nullptr ||
      (!visible_account(ex, t.credit_account_id) && !provider_may_credit(ex, t))) {
    return ResultCode::credit_account_not_found;
  }
  if (debit_group != credit_group) {
    return ResultCode::cross_group_transfer;
  }
  return ResultCode::ok;
}

// The ledger command for a transfer request (immediate or hold), with the
// fingerprint of what the ledger does not keep.
Command Service::transfer_command(const TransferCreate& t) {
  const AccountId debit{t.debit_account_id}, credit{t.credit_account_id};
  Command command = t.pending ? Command::make_hold(debit, credit, t.amount, t.currency, t.timeout_s)
                              : Command::make_transfer(debit, credit, t.amount, t.currency);
  command.with_extra_hash(t.extra_hash);
  return command;  // by name, so it is built where the caller wants it
}

// Who may act on a hold the caller can see (docs/API.md, security model): posting
// captures the debit account's money, so only its owner's side (or an operator) posts;
// either side may void, which only gives the money back.
ResultCode Service::may_act_on_hold(const Exchange& ex, const Transfer& hold, bool post) const {
  if (!visible_transfer(ex, hold)) return ResultCode::transfer_not_found;
  // An order's hold (checkout balance) is its order's, operators' too: the ledger would
  // refuse it the same.
  if (hold.order_hold()) return ResultCode::awaits_provider;
  // A withdrawal's outcome is its provider's to report (POST /v1/withdrawals/{id}/result):
  // a payer voiding it after the provider paid out would be paid twice.
  if (!ex.principal_.is_operator && withdrawal_provider(hold) != 0) {
    return ResultCode::awaits_provider;
  }
  if (post && !visible_account(ex, hold.debit_account_id.value)) {
    return ResultCode::post_not_allowed;
  }
  return ResultCode::ok;
}

bool Service::provider_may_credit(const Exchange& ex, const TransferCreate& t) const {
  if (!is_provider(ex) || t.pending) return false;
  const std::optional<u64> owner = owners_.owner(t.credit_account_id);
  return owner && *owner != 0 && principal_kind(*owner) != PrincipalKind::provider;
}

bool Service::visible_transfer(const Exchange& ex, const Transfer& transfer) const {
  // A payment of an order elsewhere names the order, not an account: its payer's only
  // (the order's merchant sees the credit in the order's group).
  return visible_account(ex, transfer.debit_account_id.value) ||
         (!transfer.pays_order() && visible_account(ex, transfer.credit_account_id.value));
}

bool Service::create_transfer(Exchange& ex) {
  TransferCreate& r = ex.transfer_;
  if (ex.step_ == 0) {
    const Problem problem = decoder().transfer_create(ex.view_.body, &r);
    if (!problem.ok()) return fail_problem(ex, problem);
    const ResultCode refused = check_transfer_accounts(ex, r);
    const bool between_groups = refused == ResultCode::cross_group_transfer;
    if (refused != ResultCode::ok && !between_groups) return fail(ex, refused, describe(refused));
    ex.between_groups_ = between_groups;
    ex.commands_.resize(1);
    ex.results_.resize(1);
    annotate_transfer(ex, 0, r);
    if (between_groups && r.pending) {
      // A two-phase hold between groups stays in the debit account's group until it
      // is posted; the credit account is checked now, so that a hold is not made for
      // an account that could never take it.
      ex.group_ = engine().route(r.credit_account_id);
      Request request{.kind = RequestKind::lookup_account, .lookup_id = r.credit_account_id};
      request.account_out = &ex.account_;
      request.completion = &ex;
      return submit(ex, request, /*last_step=*/false);
    }
    return submit_transfer(ex, /*last_step=*/!between_groups);
  }
  if (ex.between_groups_) return transfer_between_groups(ex);
  const CommandResult result = ex.results_[0];
  if (!result.ok()) return fail(ex, result.code, describe(result.code));
  render_new_transfer(ex.reply.body, result.id, r);
  return finish(ex, 201);
}

// The ledger command of a transfer request, in the debit account's group, with what
// the caller put in ex.annotations_. An immediate one between groups is carried from
// there (its hold, the credit, the settlement).
bool Service::submit_transfer(Exchange& ex, bool last_step) {
  const TransferCreate& r = ex.transfer_;
  ex.group_ = engine().route(r.debit_account_id);
  Command command = transfer_command(r).with_key(ex.key_, ex.key_lane_);
  if (ex.between_groups_) command.flags |= kTransferBetweenGroups;
  if (ex.between_groups_ && !r.pending) return start_carry(ex, command, /*last=*/true);
  ex.commands_[0] = command;
  return submit_one(ex, last_step, /*annotated=*/true);
}

// A transfer between groups after its first step. Immediate: carried (carry_step)
// and answered here once done. Two-phase: the credit account was looked up (step 1),
// then the hold made (step 2), to be carried when it is posted (pending_action).
bool Service::transfer_between_groups(Exchange& ex) {
  const TransferCreate& r = ex.transfer_;
  if (r.pending) {
    if (ex.step_ == 1) {
      const Account& credit = ex.account_;
      if (!ex.outcome_.found || (credit.flags & kAccountClearing) != 0) {
        return fail(ex, ResultCode::credit_account_not_found,
                    describe(ResultCode::credit_account_not_found));
      }
      if (credit.currency != r.currency) {
        return fail(ex, ResultCode::currency_mismatch, describe(ResultCode::currency_mismatch));
      }
      return submit_transfer(ex, /*last_step=*/true);
    }
    const CommandResult result = ex.results_[0];
    if (!result.ok()) return fail(ex, result.code, describe(result.code));
    render_new_transfer(ex.reply.body, result.id, r, /*between_groups=*/true);
    return finish(ex, 201);
  }
  if (const std::optional<bool> failed = fail_carried(ex)) return *failed;
  render_new_transfer(ex.reply.body, ex.carry_.carried()[0].hold.value, r, /*between_groups=*/true);
  return finish(ex, 201);
}

// Starts carrying a transfer between groups from the command that numbers its hold
// (pipeline/carry.h): that command (keyed, so that a retry finds the same hold), the
// hold looked up, the credit, the settlement. `last`: the request has nothing after it.
bool Service::start_carry(Exchange& ex, const Command& number, bool last) {
  // Where the money is held: the debit account's group (an order's checkout: the
  // paying wallet's; its refund: the order's).
  const u64 debit = number.kind == CommandKind::transfer    ? number.transfer.debit_account_id.value
                    : number.kind == CommandKind::order_pay ? number.order.account.value
                    : number.kind == CommandKind::order_refund ? number.order.order_id
                                                               : number.pending.transfer_id.value;
  ex.carry_.begin(engine(), id_prefix(debit).group, number);
  ex.carrying_ = true;
  ex.carry_last_ = last;
  const std::optional<bool> answered = carry_step(ex);
  PG_ASSERT(answered.has_value());  // its first step is submitted, or refused and answered
  return *answered;
}

// Submits the carry's next step: false while one is on its way, true when the request
// was answered (its first step refused at the door), nothing once the carry is done
// (the route then answers from ex.carry_). A later step a group refuses at the door
// ends the carry with that status; the hold stays, and the finisher takes it on.
std::optional<bool> Service::carry_step(Exchange& ex) {
  using Stage = CarryBetweenGroups::Stage;
  while (!ex.carry_.done()) {
    ex.group_ = &ex.carry_.group();
    const bool last = ex.carry_last_ && ex.carry_.stage() == Stage::settle;
    // The first step carries the request's key, and may need its claim (submit), and
    // what the request said about the transfer it numbers (ex.annotations_).
    if (ex.carry_.stage() == Stage::number) {
      return submit(ex, with_annotations(ex, ex.carry_.request(&ex)), last);
    }
    ex.last_step_ = last;
    mark_submitted(ex);
    const ResultCode code = ex.group_->submit(ex.carry_.request(&ex));
    if (code == ResultCode::ok) return false;
    Outcome refused;
    refused.status = code;
    ex.carry_.on_done(refused);
  }
  ex.carrying_ = false;
  return std::nullopt;
}

// A carry that did not end in its transfer posted: answered here (true). Nothing when
// it was posted, for the route to answer.
std::optional<bool> Service::fail_carried(Exchange& ex) {
  const CarryBetweenGroups& carry = ex.carry_;
  const CarryBetweenGroups::Carried& carried = carry.carried()[0];
  if (carry.status() != ResultCode::ok) {
    if (!carried.numbered) {
      return fail(ex, carry.status(),
                  "the transfer could not be made durable; its outcome is unknown, retry with "
                  "the same Idempotency-Key");
    }
    return fail(ex, carry.status(),
                fmt::format("the transfer between groups {} was made but could not be finished "
                            "now; its money stays held, the engine finishes it shortly, and a "
                            "retry with the same Idempotency-Key answers its outcome",
                            id_text(IdKind::transfer, carried.hold.value)));
  }
  switch (carried.code) {
    case ResultCode::ok:
      return std::nullopt;
    case ResultCode::internal_error:
      return fail(ex, carried.code,
                  "the transfer between groups could not be settled (a fault of the gateway, "
                  "logged); the money stays held, the engine settles it shortly, and a retry "
                  "with the same Idempotency-Key answers its outcome");
    case ResultCode::outcome_expired:
      return fail(ex, carried.code, describe(carried.code));
    default:
      if (!carried.numbered) return fail(ex, carried.code, describe(carried.code));
      return fail(
          ex, carried.code,
          fmt::format("the other group refused the credit ({}); the transfer {} "
                      "was voided and the money released",
                      describe(carried.code), id_text(IdKind::transfer, carried.hold.value)));
  }
}

bool Service::get_transfer(Exchange& ex) {
  const u32 group = id_prefix(ex.path_id_).group;
  if (ex.step_ == 0) {
    if (const Problem problem = parse_read_query(ex.view_.target, &ex.min_sequence_);
        !problem.ok()) {
      return fail_problem(ex, problem);
    }
    if (const std::optional<bool> waited = await_min_sequence(ex, group, ex.min_sequence_)) {
      return *waited;
    }
    ex.transfers_.resize(1);
    Request request{.kind = RequestKind::lookup_transfer, .lookup_id = ex.path_id_};
    request.transfer_out = ex.transfers_.data();
    request.completion = &ex;
    return submit(ex, request);
  }
  // Step 1: the group's answer; step 2: the same transfer, held, after a wait for the
  // store to have it.
  const bool held = ex.step_ > 1 || ex.outcome_.found;
  // What its request said is in the history store; so is every transfer the group no
  // longer holds (docs/HISTORY.md).
  std::optional<history::TransferRow> row;
  u64 as_of = 0;
  if (history::HistoryWorker* history = history_.load(std::memory_order_acquire)) {
    if (group < history->groups()) {
      Result<std::optional<history::TransferRow>> stored =
          history->store().transfer(group, ex.path_id_);
      if (!stored.ok() && !held) {
        // Not held, and the store cannot say: unknown, not absent.
        PG_LOG_ERROR("event=history_read_failed message=\"{}\"", stored.status().message());
        return fail(ex, ResultCode::not_durable, "the history store cannot be read now; retry");
      }
      if (stored.ok()) row = std::move(stored).value();
      as_of = history->watermark(group);
      // Held but not in the store yet: its reference and metadata are on their way
      // (read your writes). Only a transfer the caller may see is waited for.
      if (held && stored.ok() && !row && ex.step_ == 1 && visible_transfer(ex, ex.transfers_[0]) &&
          wait_for_store(ex, group, history->config().texts_wait_ns)) {
        return false;
      }
    }
  }
  if (!held && row) ex.transfers_[0] = transfer_of(*row);
  if ((!held && !row) || !visible_transfer(ex, ex.transfers_[0])) {
    return fail(ex, ResultCode::transfer_not_found, "no such transfer");
  }
  render_transfer(ex.reply.body, ex.transfers_[0],
                  TransferSaid{.reference = row ? std::string_view(row->reference) : "",
                               .metadata = row ? std::string_view(row->metadata) : "",
                               .as_of_sequence = held ? 0 : as_of});
  return finish(ex, 200);
}

// A transfer as the history store keeps it, in the ledger's terms (between groups: not
// marked; the store does not know of the settlement).
Transfer Service::transfer_of(const history::TransferRow& row) {
  Transfer t{};
  t.id = TransferId{row.id};
  t.debit_account_id = AccountId{row.debit};
  t.credit_account_id = AccountId{row.credit};
  t.amount = row.amount;
  t.posted_amount = row.posted_amount;
  t.currency = Currency::from(row.currency);
  t.created_at_ns = row.created_ns;
  t.expires_at_ns = row.status == "pending" ? row.expires_ns : 0;
  t.flags = row.flags;
  t.status = row.status == "posted"    ? TransferStatus::posted
             : row.status == "pending" ? TransferStatus::pending
             : row.status == "voided"  ? TransferStatus::voided
                                       : TransferStatus::expired;
  return t;
}

// Post or void: look the hold up (is it yours? what does it hold?), then act.
// A withdrawal's result (POST /v1/withdrawals/{id}/result) is the same: success posts
// the whole hold, failed voids it.
bool Service::pending_action(Exchange& ex) {
  const bool withdrawal = ex.route_ == Route::withdrawals_result;
  if (ex.step_ == 0) {
    const Problem problem =
        withdrawal ? decoder().withdrawal_result(ex.view_.body, &ex.withdrawal_result_)
        : ex.route_ == Route::transfers_post ? decoder().post_pending(ex.view_.body, &ex.pending_)
                                             : decoder().void_pending(ex.view_.body);
    if (!problem.ok()) return fail_problem(ex, problem);
    if (ex.route_ != Route::transfers_post) ex.pending_ = PendingAction{};
    ex.transfers_.resize(1);
    Request request{.kind = RequestKind::lookup_transfer, .lookup_id = ex.path_id_};
    request.transfer_out = ex.transfers_.data();
    request.completion = &ex;
    return submit(ex, request, /*last_step=*/false);
  }
  const bool post = withdrawal ? ex.withdrawal_result_.success : ex.route_ == Route::transfers_post;
  const Transfer& hold = ex.transfers_[0];
  const u64 posted_amount = ex.pending_.amount != 0 ? ex.pending_.amount : hold.amount;
  if (ex.step_ == 1) {
    const ResultCode refused = withdrawal          ? may_decide_withdrawal(ex, hold)
                               : ex.outcome_.found ? may_act_on_hold(ex, hold, post)
                                                   : ResultCode::transfer_not_found;
    if (refused != ResultCode::ok) return fail(ex, refused, describe(refused));
    ex.commands_.resize(1);
    ex.results_.resize(1);
    const TransferId id{ex.path_id_};
    // Posting a hold between groups carries the credit to the other group (voiding
    // one is local, like any other).
    ex.between_groups_ = post && hold.between_groups();
    // What the ledger does not keep (a withdrawal's provider_ref) still tells a retry
    // from another request under the same key.
    const u64 extra =
        withdrawal ? Hasher{}.add_bytes(ex.withdrawal_result_.provider_ref).add(5).value() : 0;
    if (withdrawal) {
      annotate(ex, journal::AnnotationKind::provider_ref, ex.withdrawal_result_.provider_ref);
    }
    if (ex.between_groups_) {
      ex.group_ = engine().route(ex.path_id_);
      return start_carry(ex,
                         Command::make_post_between_groups(id, ex.pending_.amount)
                             .with_extra_hash(extra)
                             .with_key(ex.key_, ex.key_lane_),
                         /*last=*/true);
    }
    ex.commands_[0] = (post ? Command::make_post(id, ex.pending_.amount) : Command::make_void(id))
                          .with_extra_hash(extra)
                          .with_key(ex.key_, ex.key_lane_);
    return submit_one(ex, /*last_step=*/true, /*annotated=*/true);
  }
  if (ex.between_groups_) {
    const CarryBetweenGroups::Carried& carried = ex.carry_.carried()[0];
    if (withdrawal && ex.carry_.status() == ResultCode::ok && !carried.numbered &&
        carried.code != ResultCode::ok) {
      return fail_withdrawal_result(ex, carried.code);
    }
    if (const std::optional<bool> failed = fail_carried(ex)) return *failed;
  } else if (const CommandResult result = ex.results_[0]; !result.ok()) {
    if (withdrawal) return fail_withdrawal_result(ex, result.code);
    return fail(ex, result.code, describe(result.code));
  }
  if (withdrawal) {
    Transfer closed = hold;
    closed.status = post ? TransferStatus::posted : TransferStatus::voided;
    closed.posted_amount = post ? hold.amount : 0;
    render_withdrawal(ex.reply.body, closed, withdrawal_provider(hold), {},
                      ex.withdrawal_result_.provider_ref);
    return finish(ex, 200);
  }
  render_closed_hold(ex.reply.body, hold, post, posted_amount);
  return finish(ex, 200);
}

}  // namespace paygate::api
