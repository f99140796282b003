// The group's recent committed events, in memory: what GET /v1/events pages through,
// and, chained per account, the statement lines of GET /v1/accounts/{id}/entries.
//
// The ledger appends (LedgerEventSink) as it applies commands; replay at recovery
// appends the same events again, so after a restart the log holds every event since
// the snapshot it recovered from. Older ones, and those pushed out when the ring is
// full, are no longer held: a reader asking for them is told so (expired), never
// handed a gap. The journal stays the truth; a durable consumer (the history store, a
// Kafka publisher) keeps up with this log and keeps its own watermark.
//
// Thread: only the group thread touches it (reads arrive as requests in the ring), so
// nothing is locked. Memory: all allocated at construction; appending allocates
// nothing.
#pragma once

#include <optional>
#include <span>

#include "base/fixed_array.h"
#include "base/types.h"
#include "ledger/event.h"

namespace paygate {

// Where an event sits in its group's stream: the command's sequence, then its place
// among that command's events. Stable across restarts (replay makes the same events).
struct EventKey {
  u64 sequence = 0;
  u32 index = 0;
  constexpr auto operator<=>(const EventKey&) const noexcept = default;
};
constexpr EventKey key_of(const LedgerEvent& event) noexcept {
  return EventKey{event.sequence, event.index};
}

struct EventPage {
  u32 count = 0;
  bool more = false;      // another page can be read from where this one ended
  bool expired = false;   // the cursor is older than what the log still holds
  bool unknown = false;   // read_account: the cursor names no event of this account
  bool complete = false;  // read_account, no more: the account's whole history was shown
};

class EventLog final : public LedgerEventSink {
 public:
  // capacity: events held, a power of two of at least kBatchMax (so that taking back
  // a failed atomic batch never reaches below what the ring still holds).
  EventLog(u32 capacity, u32 accounts_max);

  // Events at or before `sequence` are not held (recovery started from a snapshot
  // there). REQUIRES: nothing appended yet.
  void start_after(u64 sequence) noexcept;

  void append(const LedgerEvent& event) noexcept override;
  u64 mark() const noexcept override { return head_; }
  void rewind(u64 mark) noexcept override;

  // The events after `after` (from the oldest held when absent), oldest first.
  EventPage read_after(std::optional<EventKey> after, std::span<LedgerEvent> out) const noexcept;
  // The account's events (not its creation), newest first: the newest when `before`
  // is absent, else those older than the event `before` names.
  EventPage read_account(u64 account_id, std::optional<EventKey> before,
                         std::span<LedgerEvent> out) const noexcept;

  u64 held() const noexcept { return head_ - floor_; }

 private:
  // A chain link is a position + 1; 0 ends the chain.
  struct Stored {
    LedgerEvent event;
    u64 prev_debit = 0;   // the debit account's (or the created account's) previous event
    u64 prev_credit = 0;  // the credit account's previous event
  };

  Stored& at(u64 position) noexcept { return ring_[position & mask_]; }
  const Stored& at(u64 position) const noexcept { return ring_[position & mask_]; }
  bool holds(u64 link) const noexcept { return link != 0 && link - 1 >= floor_; }
  // The first held position whose key is above `key`.
  u64 first_after(EventKey key) const noexcept;
  u64* chain_head(AccountId account) noexcept;
  const u64* chain_head(AccountId account) const noexcept {
    return const_cast<EventLog*>(this)->chain_head(account);
  }
  // The link to the account's event before the one stored at `s`.
  static u64 previous_for(const Stored& s, u64 account_id) noexcept;

  FixedArray<Stored> ring_;
  u64 mask_;
  u64 head_ = 0;                  // positions appended so far
  u64 floor_ = 0;                 // the oldest position still held; [floor_, head_) are held
  std::optional<EventKey> lost_;  // the newest event no longer held, if any
  FixedArray<u64> newest_;        // account serial - 1 → link to its newest event
};

}  // namespace paygate
