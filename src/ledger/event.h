// What the ledger tells an observer about each change it makes: the committed events
// of docs/API.md's /v1/events and the statement lines of /v1/accounts/{id}/entries.
//
// Events are a pure function of the commands and their stamps (the ledger is
// deterministic), so replaying a journal produces them again, the same and in the
// same order. A failed command makes no event; an atomic batch that fails takes back
// the events of its commands (rewind), but not the expiries that ran before it.
#pragma once

#include "base/types.h"
#include "ledger/types.h"

namespace paygate {

enum class LedgerEventKind : u8 {
  account_created = 1,
  transfer_posted = 2,   // an immediate transfer moved the money
  transfer_pending = 3,  // a hold was placed
  pending_posted = 4,    // a hold was captured (amount), the rest (released) let go
  pending_voided = 5,    // a hold was released on request (released = the hold)
  pending_expired = 6,   // a hold was released because its timeout passed
};

struct LedgerEvent {
  u64 sequence = 0;  // the command that made it (expiries: the command they ran before)
  u64 timestamp_ns = 0;
  u64 id = 0;  // the account created, or the transfer
  AccountId debit_account_id;
  AccountId credit_account_id;
  u64 amount = 0;    // moved (posted, captured) or held (pending)
  u64 released = 0;  // holds closed: the part given back to the debit account
  // Each side's balance (credits posted − debits posted) just after this event: the
  // running balance of the statement lines it makes (a hold changes none). 0 for
  // account_created.
  i64 debit_balance = 0;
  i64 credit_balance = 0;
  MerchantId owner;  // account_created: the account's owner
  Currency currency;
  // The sink's: this event's place among its sequence's events (a tick after a long
  // pause may expire every open hold at one sequence, so more than 2^16).
  u32 index = 0;
  LedgerEventKind kind = LedgerEventKind::account_created;
  u8 detail = 0;  // account_created: the AccountKind; otherwise 0
  u8 reserved[6] = {};

  constexpr bool operator==(const LedgerEvent&) const noexcept = default;
};
static_assert(sizeof(LedgerEvent) == 96);
static_assert(std::is_trivially_copyable_v<LedgerEvent>);

// Where the ledger hands its events, on the ledger's own thread. An implementation
// must not allocate or block: it runs inside every command.
class LedgerEventSink {
 public:
  virtual void append(const LedgerEvent& event) noexcept = 0;
  // A point to come back to: rewind(mark()) drops every event appended since.
  virtual u64 mark() const noexcept = 0;
  virtual void rewind(u64 mark) noexcept = 0;

 protected:
  ~LedgerEventSink() = default;
};

std::string_view name(LedgerEventKind kind) noexcept;

}  // namespace paygate
