// The protocol between groups, in one place: the steps that carry transfers between
// groups (docs/LEDGER.md, "Transfers between groups"), as a step machine that any
// thread can drive. next() says what to submit where; the caller submits it (with its
// own completion) and hands the outcome to on_done(); repeat until done(). The HTTP
// edge drives one transfer from its IO threads; startup and the finisher drive a
// channel's worth at once and wait (run_to_end).
//
//   number    the command that makes the hold and numbers it on its channel: an
//             immediate transfer between groups, or the post of a two-phase one (the
//             caller's, keyed by the caller), in the debit group
//   look_up   the hold as that group's ledger keeps it: what the other group is to
//             credit (Transfer::delivery_amount) comes from there, never from the
//             request
//   deliver   the credit, in the credit account's group
//   settle    back in the debit group: posted if the credit was made, voided if the
//             other group refused it
//
// Every step is safe to repeat (a delivery is applied once per channel number; a
// settlement answers how it settled), so a machine started again on the same hold,
// by a retry or by the finisher, finishes it exactly once.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "ledger/command.h"
#include "ledger/types.h"
#include "pipeline/request.h"

namespace paygate {

class Engine;
class Group;

// A transfer between groups whose hold is numbered on its channel but not settled.
struct UnsettledTransfer {
  u32 group = 0;  // the group holding the debit account (and the hold)
  Transfer hold;
  u32 channel_number = 0;
};

class CarryBetweenGroups {
 public:
  enum class Stage : u8 { number, look_up, deliver, settle, done };

  // How one transfer came out, once done().
  struct Carried {
    TransferId hold;
    u32 channel_number = 0;
    // ok: posted (the money moved). The other group's refusal (credit_account_not_found,
    // currency_mismatch, ...): voided, the money released. The number step's own refusal
    // (insufficient_funds, ...): nothing was held. outcome_expired: settled so long ago
    // that its group no longer holds the outcome. internal_error: the ledger refused a
    // step as malformed (a fault of the caller's; logged; the hold stays for the
    // finisher).
    ResultCode code = ResultCode::ok;
    bool numbered = false;  // the hold was made (the number step answered ok)
  };

  // From the command that numbers one hold (Command::make_transfer flagged
  // kTransferBetweenGroups, or make_post_between_groups), to be run in debit_group.
  void begin(Engine& engine, u32 debit_group, const Command& number);
  // From holds already numbered, all of one channel (one debit group, one credit
  // group), as the ledger reported them (Ledger::for_each_unsettled).
  void begin_numbered(Engine& engine, std::span<const UnsettledTransfer> holds);

  Stage stage() const noexcept { return stage_; }
  bool done() const noexcept { return stage_ == Stage::done; }
  // What to submit now and where, completing to `completion`. REQUIRES: !done(). The
  // request points into this machine, which must outlive its completion.
  Group& group() const noexcept { return *group_; }
  Request request(Completion* completion) const noexcept {
    Request r = request_;
    r.completion = completion;
    return r;
  }
  // The outcome of the request last submitted (or the code submit() refused it with,
  // as Outcome::status): moves on.
  void on_done(const Outcome& outcome);

  // When done: ok, or why a step could not be taken (overloaded, not_durable,
  // shutting_down, or the credit group missing): the holds then stay unsettled, held,
  // and the finisher (or the next start) takes them on.
  ResultCode status() const noexcept { return status_; }
  std::span<const Carried> carried() const noexcept { return carried_; }
  // The holds as their group keeps them (from the look_up step on; empty before).
  std::span<const Transfer> holds() const noexcept { return holds_; }
  // Where a step failed, for logs: "delivering 3 transfers (the first trf_…) to group 1".
  const std::string& problem() const noexcept { return problem_; }

 private:
  void to_stage(Stage stage);
  void finish(ResultCode status);
  void fail_step(ResultCode status);

  Engine* engine_ = nullptr;
  Stage stage_ = Stage::done;
  u32 debit_group_ = 0;
  u32 credit_group_ = 0;
  Group* group_ = nullptr;
  Request request_{};
  std::vector<Command> commands_;
  std::vector<CommandResult> results_;
  std::vector<Transfer> holds_;  // as the ledger keeps them
  std::vector<u64> lookup_ids_;
  std::vector<Carried> carried_;
  ResultCode status_ = ResultCode::ok;
  std::string problem_;
};

// Drives `carry` to its end from the calling thread, waiting for each step: for
// startup and the finisher, never for a group's own thread.
void run_to_end(CarryBetweenGroups& carry);

}  // namespace paygate
