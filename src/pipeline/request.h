// What callers hand a group: requests, and how they hear back.
//
// A Request points at the caller's commands and results; both must stay valid until
// the Completion is called. The group calls complete() exactly once, on its own
// thread, after the request's commands are durable in the journal (status ok), or
// when they cannot be made durable (not_durable: the outcome is unknown; retry with
// the same idempotency key). Lookups and reads are answered in order with the commands
// around them, and also only once what they saw is durable.
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <optional>

#include "base/result_code.h"
#include "journal/annotation.h"
#include "ledger/command.h"
#include "ledger/owner_quotas.h"
#include "ledger/types.h"
#include "orders/order_book.h"
#include "pipeline/event_log.h"

namespace paygate {

enum class RequestKind : u8 {
  commands = 1,         // each command on its own (Ledger::apply_batch)
  atomic = 2,           // all or none (Ledger::apply_atomic), under batch_key
  lookup_account = 3,   // account_out[i] ← the account lookup_ids[i] (or lookup_id)
  lookup_transfer = 4,  // transfer_out[i] ← the transfer lookup_ids[i] (or lookup_id)
  read_events = 5,      // events_out ← up to count events after `cursor` (EventLog);
                        // page.unknown: the cursor is past every sequence used
  read_entries = 6,     // events_out ← up to count events of account lookup_id, before `cursor`
  // transfer_out[i], channel_numbers_out[i] ← up to count transfers to other groups not
  // yet settled (Ledger::for_each_unsettled); Outcome::filled says how many
  read_unsettled = 7,
  // *quota_out ← the quota entry of merchant lookup_id (zeroed, with its owner, when
  // it has none: nothing counted, no limits of its own); *quota_defaults_out ← the
  // group's default limits. Outcome::found: the merchant had an entry.
  lookup_quota = 8,
  // *order_out ← the order lookup_id (zeroed when not held). Outcome::found: it is
  // held; Outcome::archived: it was made here and has left memory since.
  lookup_order = 9,
};

struct Outcome {
  ResultCode status = ResultCode::ok;  // ok, not_durable or shutting_down
  ResultCode atomic = ResultCode::ok;  // atomic requests: ok or why the batch failed
  u64 first_sequence = 0;              // the first command's sequence (commands, atomic)
  bool found = false;                  // lookups: every id was found
  bool archived = false;               // lookup_order: made here, no longer held
  EventPage page;                      // reads: what events_out holds
  u32 filled = 0;                      // read_unsettled: how many it found (up to count)
  // When the group took the request from its ring, and when it released the answer
  // (steady clock, ns; each read once per batch or burst): for the edge's stage
  // timings (paygate_http_stage_seconds); no part of any state.
  u64 taken_ns = 0;
  u64 released_ns = 0;
};

class Completion {
 public:
  // Runs on the group thread: keep it short (hand the outcome to another thread).
  virtual void complete(const Outcome& outcome) noexcept = 0;

 protected:
  ~Completion() = default;
};

struct Request {
  RequestKind kind = RequestKind::commands;
  u32 count = 0;  // commands (1 .. kBatchMax)
  const Command* commands = nullptr;
  CommandResult* results = nullptr;  // count of them, filled before complete()
  IdempotencyKey batch_key{};        // atomic
  // commands: a claim logged and applied just before `commands`, covering all of them
  // (claim->claim.covers == count): they run only if it holds (Ledger::apply_claimed).
  // Its result goes to claim_result. Outcome::first_sequence is the claim's.
  const Command* claim = nullptr;
  CommandResult* claim_result = nullptr;
  // commands and atomic: text the ledger does not keep (a transfer's reference and
  // metadata, an order's URLs), journaled in the same group commit just before the
  // commands, so that history has it; annotations[i].command indexes `commands` (the
  // claim aside). In command order; each must fit a journal record of the group on its
  // own, and all of them with the commands half a group commit (else batch_too_large).
  // The texts must stay valid until the completion runs.
  const journal::Annotation* annotations = nullptr;
  u32 annotation_count = 0;
  // Lookups: one id (lookup_id), or count of them (lookup_ids). An id not found
  // leaves its output zeroed (id 0).
  u64 lookup_id = 0;
  const u64* lookup_ids = nullptr;
  Account* account_out = nullptr;
  Transfer* transfer_out = nullptr;
  Completion* completion = nullptr;
  // Reads: count is how many events_out has room for (1 .. kBatchMax); no cursor reads
  // from the oldest event held (read_events) or the account's newest (read_entries).
  LedgerEvent* events_out = nullptr;
  std::optional<EventKey> cursor = std::nullopt;
  u32* channel_numbers_out = nullptr;  // read_unsettled
  OwnerQuota* quota_out = nullptr;     // lookup_quota
  QuotaLimits* quota_defaults_out = nullptr;
  // lookup_order; or commands (one order command): the order as that command left it,
  // copied when it is applied (Outcome::found, archived as for lookup_order).
  Order* order_out = nullptr;
};

// A completion a thread can block on: for tests, tools and simple clients.
//
// The waiter usually destroys the object as soon as wait() returns, so the notifier
// must be finished with it by then: wait() returns only after complete() has made
// its last touch (state released), never merely after it has begun.
class WaitableCompletion final : public Completion {
 public:
  void complete(const Outcome& outcome) noexcept override {
    outcome_ = outcome;
    state_.store(kDone, std::memory_order_seq_cst);
    if (waiting_.load(std::memory_order_seq_cst)) {
      ::syscall(SYS_futex, reinterpret_cast<u32*>(&state_), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr,
                0);
    }
    state_.store(kReleased, std::memory_order_release);  // the last touch
  }

  const Outcome& wait() noexcept {
    while (state_.load(std::memory_order_seq_cst) == kPending) {
      waiting_.store(true, std::memory_order_seq_cst);
      if (state_.load(std::memory_order_seq_cst) != kPending) break;
      ::syscall(SYS_futex, reinterpret_cast<u32*>(&state_), FUTEX_WAIT_PRIVATE, kPending, nullptr,
                nullptr, 0);
    }
    while (state_.load(std::memory_order_acquire) != kReleased)
      __builtin_ia32_pause();
    return outcome_;
  }

  bool done() const noexcept { return state_.load(std::memory_order_acquire) == kReleased; }
  void reset() noexcept {
    state_.store(kPending, std::memory_order_relaxed);
    waiting_.store(false, std::memory_order_relaxed);
  }

 private:
  static constexpr u32 kPending = 0, kDone = 1, kReleased = 2;
  static_assert(sizeof(std::atomic<u32>) == sizeof(u32));
  Outcome outcome_;
  std::atomic<u32> state_{kPending};
  std::atomic<bool> waiting_{false};
};

}  // namespace paygate
