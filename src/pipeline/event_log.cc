#include "pipeline/event_log.h"

#include <bit>
#include <limits>

#include "base/assert.h"
#include "base/ids.h"
#include "base/prefetch.h"
#include "ledger/ledger.h"

namespace paygate {

namespace {
// How many events ahead append() asks the cache for the ring entry.
constexpr u64 kPrefetchAhead = 8;
}  // namespace

EventLog::EventLog(u32 capacity, u32 accounts_max)
    : ring_(capacity), mask_(u64{capacity} - 1), newest_(accounts_max) {
  PG_ASSERT(std::has_single_bit(capacity) && capacity >= kBatchMax);
}

void EventLog::start_after(u64 sequence) noexcept {
  PG_ASSERT(head_ == 0);
  if (sequence > 0) lost_ = EventKey{sequence, std::numeric_limits<u32>::max()};
}

u64* EventLog::chain_head(AccountId account) noexcept {
  const u64 serial = id_serial(account.value);
  PG_ASSERT(serial >= 1 && serial <= newest_.size());
  return &newest_[serial - 1];
}

u64 EventLog::previous_for(const Stored& s, u64 account_id) noexcept {
  return s.event.credit_account_id.value == account_id ? s.prev_credit : s.prev_debit;
}

void EventLog::append(const LedgerEvent& event) noexcept {
  const u64 position = head_;
  // Events come in log order: never an older sequence after a newer one.
  PG_ASSERT(position == floor_ || at(position - 1).event.sequence <= event.sequence);
  PG_ASSERT(!lost_ || lost_->sequence <= event.sequence);
  if (position >= ring_.size()) {
    // The ring is full: the oldest event leaves.
    const u64 leaving = position - ring_.size();
    if (leaving >= floor_) {
      lost_ = key_of(at(leaving).event);
      floor_ = leaving + 1;
    }
  }
  // The ring is written in order, and its lines are cold when their turn comes:
  // ask for one a few events ahead so that the write below does not wait for it.
  prefetch_for_write(&at(position + kPrefetchAhead));
  Stored& s = at(position);
  s.event = event;
  s.event.index = 0;
  if (position > floor_) {
    const LedgerEvent& before = at(position - 1).event;
    if (before.sequence == event.sequence) s.event.index = before.index + 1;
  } else if (lost_ && lost_->sequence == event.sequence) {
    s.event.index = lost_->index + 1;
  }
  const u64 link = position + 1;
  if (event.kind == LedgerEventKind::account_created) {
    u64* newest = chain_head(AccountId{event.id});
    s.prev_debit = *newest;
    s.prev_credit = 0;
    *newest = link;
  } else {
    u64* debit = chain_head(event.debit_account_id);
    u64* credit = chain_head(event.credit_account_id);
    s.prev_debit = *debit;
    s.prev_credit = *credit;
    *debit = link;
    *credit = link;
  }
  head_ = position + 1;
  PG_ASSERT(head_ - floor_ <= ring_.size());  // what is held fits the ring
}

void EventLog::rewind(u64 mark) noexcept {
  PG_ASSERT(mark <= head_ && mark >= floor_);
  // Newest first, so each chain gets back the link it had before.
  while (head_ > mark) {
    const Stored& s = at(--head_);
    if (s.event.kind == LedgerEventKind::account_created) {
      *chain_head(AccountId{s.event.id}) = s.prev_debit;
    } else {
      *chain_head(s.event.debit_account_id) = s.prev_debit;
      *chain_head(s.event.credit_account_id) = s.prev_credit;
    }
  }
}

u64 EventLog::first_after(EventKey key) const noexcept {
  u64 low = floor_, high = head_;
  while (low < high) {
    const u64 middle = low + (high - low) / 2;
    if (key_of(at(middle).event) <= key) {
      low = middle + 1;
    } else {
      high = middle;
    }
  }
  return low;
}

EventPage EventLog::read_after(std::optional<EventKey> after,
                               std::span<LedgerEvent> out) const noexcept {
  EventPage page;
  if (after && lost_ && *after < *lost_) {
    page.expired = true;
    return page;
  }
  u64 position = after ? first_after(*after) : floor_;
  PG_ASSERT(position >= floor_ && position <= head_);
  while (position < head_ && page.count < out.size()) {
    out[page.count++] = at(position++).event;
  }
  page.more = position < head_;
  return page;
}

EventPage EventLog::read_account(u64 account_id, std::optional<EventKey> before,
                                 std::span<LedgerEvent> out) const noexcept {
  EventPage page;
  const AccountId account{account_id};
  u64 link = 0;
  if (!before) {
    link = *chain_head(account);
  } else {
    const u64 position = first_after(*before) - 1;  // the last at or before `before`
    const bool found =
        position + 1 > floor_ && position < head_ && key_of(at(position).event) == *before;
    if (!found) {
      if (lost_ && *before <= *lost_) {
        page.expired = true;
      } else {
        page.unknown = true;
      }
      return page;
    }
    const Stored& named = at(position);
    if (named.event.kind == LedgerEventKind::account_created ||
        (named.event.debit_account_id != account && named.event.credit_account_id != account)) {
      page.unknown = true;
      return page;
    }
    link = previous_for(named, account_id);
  }
  while (holds(link)) {
    const Stored& s = at(link - 1);
    // A chain only runs back in time.
    PG_ASSERT(page.count == 0 || key_of(s.event) < key_of(out[page.count - 1]));
    if (s.event.kind == LedgerEventKind::account_created) {
      page.complete = true;
      return page;
    }
    if (page.count == out.size()) {
      page.more = true;
      return page;
    }
    out[page.count++] = s.event;
    link = previous_for(s, account_id);
  }
  return page;  // the chain runs on into events no longer held: not complete
}

}  // namespace paygate
