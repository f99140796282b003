#include "pipeline/carry.h"

#include <fmt/format.h>

#include "base/assert.h"
#include "base/ids.h"
#include "base/log.h"
#include "pipeline/engine.h"

namespace paygate {

void CarryBetweenGroups::begin(Engine& engine, u32 debit_group, const Command& number) {
  PG_ASSERT(debit_group < engine.groups());
  // An immediate transfer or a post, flagged as between groups; or an order's step that
  // pays (or refunds) across groups: a wallet's checkout of an order elsewhere, in the
  // payer's group; a refund to a wallet elsewhere, in the order's.
  const bool order =
      number.kind == CommandKind::order_pay || number.kind == CommandKind::order_refund;
  PG_ASSERT(order ||
            (((number.kind == CommandKind::transfer && (number.flags & kTransferPending) == 0) ||
              number.kind == CommandKind::post_pending) &&
             (number.flags & kTransferBetweenGroups) != 0));
  engine_ = &engine;
  debit_group_ = debit_group;
  status_ = ResultCode::ok;
  problem_.clear();
  carried_.assign(1, Carried{});
  commands_.assign(1, number);
  to_stage(Stage::number);
}

void CarryBetweenGroups::begin_numbered(Engine& engine, std::span<const UnsettledTransfer> holds) {
  PG_ASSERT(!holds.empty() && holds.size() <= kBatchMax);
  engine_ = &engine;
  debit_group_ = holds.front().group;
  status_ = ResultCode::ok;
  problem_.clear();
  carried_.clear();
  holds_.clear();
  for (const UnsettledTransfer& t : holds) {
    // One channel: one debit group, one credit group.
    PG_ASSERT(t.group == debit_group_ && t.hold.on_channel() &&
              id_prefix(t.hold.credit_account_id.value).group ==
                  id_prefix(holds.front().hold.credit_account_id.value).group);
    carried_.push_back(
        Carried{.hold = t.hold.id, .channel_number = t.channel_number, .numbered = true});
    holds_.push_back(t.hold);
  }
  to_stage(Stage::deliver);
}

// Builds the request of `stage` (or ends the machine when there is nothing to do).
void CarryBetweenGroups::to_stage(Stage stage) {
  stage_ = stage;
  request_ = Request{};
  switch (stage) {
    case Stage::number:
      group_ = &engine_->group(debit_group_);
      results_.assign(1, CommandResult{});
      request_ = Request{.kind = RequestKind::commands,
                         .count = 1,
                         .commands = commands_.data(),
                         .results = results_.data()};
      return;
    case Stage::look_up:
      group_ = &engine_->group(debit_group_);
      lookup_ids_.assign(1, carried_[0].hold.value);
      holds_.assign(1, Transfer{});
      request_ = Request{.kind = RequestKind::lookup_transfer, .count = 1};
      request_.lookup_ids = lookup_ids_.data();
      request_.transfer_out = holds_.data();
      return;
    case Stage::deliver: {
      Group* credit = engine_->route(holds_.front().credit_account_id.value);
      credit_group_ = id_prefix(holds_.front().credit_account_id.value).group;
      if (credit == nullptr) return fail_step(ResultCode::shutting_down);
      group_ = credit;
      commands_.clear();
      for (std::size_t i = 0; i < holds_.size(); ++i) {
        const Transfer& hold = holds_[i];
        PG_ASSERT(hold.on_channel() && hold.delivery_amount() > 0);
        commands_.push_back(
            hold.pays_order()
                ? Command::make_order_deliver(hold.id, hold.paid_order(), hold.debit_account_id,
                                              hold.amount, hold.currency,
                                              carried_[i].channel_number)
                : Command::make_deliver(hold.id, hold.credit_account_id, hold.delivery_amount(),
                                        hold.currency, carried_[i].channel_number));
      }
      break;
    }
    case Stage::settle:
      group_ = &engine_->group(debit_group_);
      commands_.clear();
      for (std::size_t i = 0; i < carried_.size(); ++i) {
        // The delivery's answer (ok or the refusal), in `code` since the deliver step.
        commands_.push_back(
            Command::make_settle(carried_[i].hold, carried_[i].channel_number, carried_[i].code));
      }
      break;
    case Stage::done:
      group_ = nullptr;
      return;
  }
  results_.assign(commands_.size(), CommandResult{});
  request_ = Request{.kind = RequestKind::commands,
                     .count = static_cast<u32>(commands_.size()),
                     .commands = commands_.data(),
                     .results = results_.data()};
}

void CarryBetweenGroups::on_done(const Outcome& outcome) {
  PG_ASSERT(!done());
  if (outcome.status != ResultCode::ok) return fail_step(outcome.status);
  switch (stage_) {
    case Stage::number: {
      const CommandResult& result = results_[0];
      carried_[0].code = result.code;
      if (!result.ok()) return finish(ResultCode::ok);  // refused in its own group
      PG_ASSERT(result.id != 0);
      carried_[0].hold = TransferId{result.id};
      carried_[0].channel_number = result.channel_number;
      carried_[0].numbered = true;
      return to_stage(Stage::look_up);
    }
    case Stage::look_up: {
      const Transfer& hold = holds_[0];
      if (hold.id.empty()) {
        // Numbered, then settled so long ago that the ring no longer holds it.
        carried_[0].code = ResultCode::outcome_expired;
        return finish(ResultCode::ok);
      }
      PG_ASSERT(hold.id == carried_[0].hold && hold.between_groups());
      carried_[0].code = ResultCode::ok;
      // Settled already (by the finisher, or an earlier try): settling again answers
      // how. Else it is on its channel, and its credit is carried.
      if (hold.status != TransferStatus::pending) return to_stage(Stage::settle);
      return to_stage(Stage::deliver);
    }
    case Stage::deliver:
      PG_ASSERT(results_.size() == carried_.size());
      for (std::size_t i = 0; i < carried_.size(); ++i)
        carried_[i].code = results_[i].code;
      return to_stage(Stage::settle);
    case Stage::settle:
      PG_ASSERT(results_.size() == carried_.size());
      for (std::size_t i = 0; i < carried_.size(); ++i) {
        ResultCode code = results_[i].code;
        if (code == ResultCode::invalid_command) {
          // Not this channel's open transfer: no correct caller sends that. The hold
          // stays as it was, and the finisher settles it.
          PG_LOG_ERROR(
              "event=settle_refused transfer=trf_{:016x} channel_number={} group={} "
              "message=\"the ledger refused a settlement as malformed; the money stays held "
              "and the finisher settles it\"",
              carried_[i].hold.value, carried_[i].channel_number, debit_group_);
          code = ResultCode::internal_error;
        }
        carried_[i].code = code;
      }
      return finish(ResultCode::ok);
    case Stage::done:
      break;
  }
}

void CarryBetweenGroups::fail_step(ResultCode status) {
  static constexpr const char* kDoing[] = {"numbering", "looking up", "delivering", "settling"};
  const u32 group = stage_ == Stage::deliver ? credit_group_ : debit_group_;
  problem_ = fmt::format("{} {} transfers (the first trf_{:016x}) in group {}: {}",
                         kDoing[static_cast<int>(stage_)], carried_.size(),
                         carried_.front().hold.value, group, name(status));
  finish(status);
}

void CarryBetweenGroups::finish(ResultCode status) {
  status_ = status;
  to_stage(Stage::done);
}

void run_to_end(CarryBetweenGroups& carry) {
  while (!carry.done()) {
    WaitableCompletion done;
    const ResultCode submitted = carry.group().submit(carry.request(&done));
    if (submitted != ResultCode::ok) {
      Outcome refused;
      refused.status = submitted;
      carry.on_done(refused);
      continue;
    }
    carry.on_done(wait_for(carry.group(), done));
  }
}

}  // namespace paygate
