// What callers hand a group: requests, and how they hear back.
//
// A Request points at the caller's commands and results; both must stay valid until
// the Completion is called. The group calls complete() exactly once, on its own
// thread, after the request's commands are durable in the journal (status ok), or
// when they cannot be made durable (not_durable: the outcome is unknown; retry with
// the same idempotency key). Lookups are answered in order with the commands around
// them, and also only once what they saw is durable.
#pragma once

#include <atomic>

#include "base/event.h"
#include "base/result_code.h"
#include "ledger/command.h"
#include "ledger/types.h"

namespace paygate {

enum class RequestKind : u8 {
  commands = 1,         // each command on its own (Ledger::apply_batch)
  atomic = 2,           // all or none (Ledger::apply_atomic), under batch_key
  lookup_account = 3,   // account_out ← the account lookup_id, if found
  lookup_transfer = 4,  // transfer_out ← the transfer lookup_id, if found
};

struct Outcome {
  ResultCode status = ResultCode::ok;  // ok, not_durable or shutting_down
  ResultCode atomic = ResultCode::ok;  // atomic requests: ok or why the batch failed
  u64 first_sequence = 0;              // the first command's sequence (commands, atomic)
  bool found = false;                  // lookups
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
  u64 lookup_id = 0;
  Account* account_out = nullptr;
  Transfer* transfer_out = nullptr;
  Completion* completion = nullptr;
};

// A completion a thread can block on: for tests, tools and simple clients.
class WaitableCompletion final : public Completion {
 public:
  void complete(const Outcome& outcome) noexcept override {
    outcome_ = outcome;
    done_.store(true, std::memory_order_release);
    event_.notify_all();
  }
  const Outcome& wait() noexcept {
    while (!done_.load(std::memory_order_acquire)) {
      const u32 epoch = event_.prepare_wait();
      if (done_.load(std::memory_order_acquire)) {
        event_.cancel_wait();
        break;
      }
      event_.wait(epoch, 0);
    }
    return outcome_;
  }
  bool done() const noexcept { return done_.load(std::memory_order_acquire); }
  void reset() noexcept { done_.store(false, std::memory_order_relaxed); }

 private:
  Outcome outcome_;
  std::atomic<bool> done_{false};
  Event event_;
};

}  // namespace paygate
