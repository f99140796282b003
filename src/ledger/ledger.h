// The deterministic, in-memory, double-entry ledger of one group.
//
// Thread: exactly one thread (the group's) calls anything here; nothing is locked.
// Determinism: the ledger reads time only from the Stamp handed to each call, uses
// no randomness, and never lets hash order reach a result, so the same calls give
// the same results and the same state_digest(), bit for bit.
// Memory: everything is allocated in the constructor; applying commands allocates
// nothing, does no IO and throws nothing.
//
// Time: before any command at time t runs, every hold whose timeout is at or before
// t expires (in (expiry, id) order). A tick command does nothing else, so the group
// logs ticks to move time on when no other command arrives.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/fixed_array.h"
#include "base/hash.h"
#include "base/ids.h"
#include "base/open_address_map.h"
#include "base/result_code.h"
#include "base/status.h"
#include "ledger/command.h"
#include "ledger/event.h"
#include "ledger/expiry_queue.h"
#include "ledger/group_channels.h"
#include "ledger/idempotency_window.h"
#include "ledger/owner_quotas.h"
#include "ledger/pending_index.h"
#include "ledger/types.h"
#include "orders/order_book.h"

namespace paygate {

// The most commands in one batch (the API's limit, and what the undo log is sized for).
inline constexpr u32 kBatchMax = 8190;

struct LedgerConfig {
  IdPrefix prefix{};  // region and group written into every id this ledger makes
  u32 accounts_max = 1u << 20;
  u32 pending_max = 1u << 20;  // open holds at once
  // Closed transfers kept for lookups and for precise post/void answers; rounded up
  // to a power of two. Older ones are the read side's business.
  u32 recent_transfers_max = 1u << 20;
  // Client Idempotency-Keys (KeyLane::client): kept this long, at most this many at
  // once; a keyed command that finds no room is refused (idempotency_capacity).
  u32 idempotency_keys_max = 1u << 20;
  u64 idempotency_window_ns = 24 * 3600 * kNanosPerSecond;
  // Signatures of signed requests without a key (KeyLane::signature), likewise. The
  // window must cover twice the API's timestamp window (a signature is accepted up
  // to that far from its timestamp, on either side).
  // 0: as many as idempotency_keys_max (signature_capacity()).
  u32 signature_keys_max = 0;
  u64 signature_window_ns = 600 * kNanosPerSecond;

  u32 signature_capacity() const noexcept {
    return signature_keys_max != 0 ? signature_keys_max : idempotency_keys_max;
  }
  // Merchants whose quotas one group can count at once (ledger/owner_quotas.h); one
  // more is refused (owners_full) until an owner's entry falls idle. 40 B each. It
  // shapes results but the journal does not record it: not a server setting.
  u32 owners_max = 1u << 16;
  // Orders (orders/order_book.h): open ones and final ones still held, ~340 B each with
  // their indexes, allocated and touched with the ledger (so small here, for the many
  // ledgers tests and tools make; `paygate serve` defaults to 65,536); final ones are
  // held this long, then answered as archived.
  u32 orders_max = 1024;
  u64 order_final_retained_ns = 3600 * kNanosPerSecond;
  // Groups of this region that transfers may cross to (prefix.group is one of them);
  // 1: transfers stay in the group. Each other group costs 128 KiB (GroupChannels).
  u32 groups = 1;
};

// Clearing accounts (one per other group and currency) the ledger can make.
inline constexpr u32 kClearingAccountsMax = 4096;

// Where save() writes and load() reads the ledger's state (a snapshot file, memory).
class StateSink {
 public:
  virtual void write(const void* data, std::size_t size) noexcept = 0;

 protected:
  ~StateSink() = default;
};
class StateSource {
 public:
  // Fills all `size` bytes, or returns false.
  [[nodiscard]] virtual bool read(void* data, std::size_t size) noexcept = 0;

 protected:
  ~StateSource() = default;
};

class Ledger {
 public:
  explicit Ledger(const LedgerConfig& config);
  Ledger(const Ledger&) = delete;
  Ledger& operator=(const Ledger&) = delete;

  // Every command has its own sequence number. For a batch, `first` is the stamp of
  // its first command: command i runs at sequence first.sequence + i, all at
  // first.timestamp_ns. REQUIRES: sequences and times never go backwards.

  // Applies one command.
  [[nodiscard]] CommandResult apply(Stamp stamp, const Command& command) noexcept;

  // Applies each command on its own, in order; results[i] answers commands[i]. The
  // same as calling apply() for each at its sequence, only faster.
  void apply_batch(Stamp first, std::span<const Command> commands,
                   std::span<CommandResult> results) noexcept;

  // The same as apply_batch() of `claim` followed by `commands` (claim.claim.covers ==
  // commands.size()), with the claim's result returned apart: the commands run only if
  // the claim holds, else each answers its code. `first` is the claim's stamp.
  [[nodiscard]] CommandResult apply_claimed(Stamp first, const Command& claim,
                                            std::span<const Command> commands,
                                            std::span<CommandResult> results) noexcept;

  // Applies all commands or none. On failure results[i] holds the failing command's
  // code, every other result is atomic_batch_failed, and the state is as before
  // (apart from holds that expired at this stamp). The batch's idempotency key, if
  // any, covers the whole batch; commands inside it must not carry their own.
  // Returns ok or the code that made the batch fail. The batch uses its sequences
  // whatever the outcome.
  [[nodiscard]] ResultCode apply_atomic(Stamp first, std::span<const Command> commands,
                                        const IdempotencyKey& batch_key,
                                        std::span<CommandResult> results) noexcept;

  // Every change from now on is also told to `sink` (nullptr: to no one). The sink is
  // not state: a snapshot neither saves nor needs it.
  void set_event_sink(LedgerEventSink* sink) noexcept { events_ = sink; }
  // Orders' changes, as the order book makes them (the history projector's ledger).
  void set_order_observer(OrderObserver* observer) noexcept { orders_.set_observer(observer); }

  // Lookups. A pointer stays valid until the next command is applied.
  const Account* find_account(AccountId id) const noexcept;
  // An open hold, or a transfer among the last recent_transfers_max made.
  std::optional<Transfer> find_transfer(TransferId id) const noexcept;

  // Writes the whole logical state (docs/SNAPSHOT.md). Allocates nothing and takes no
  // lock, so a forked child can call it while the parent goes on.
  void save(StateSink& sink) const noexcept;
  // Reads state written by save() into this ledger, which must not have applied
  // anything yet and must have the same LedgerConfig. On failure (corruption: malformed
  // input or a broken invariant; invalid_config: another configuration) the ledger
  // must be discarded.
  Status load(StateSource& source);

  // A hash of the whole logical state: accounts and open holds in id order, recent
  // transfers, idempotency records, counters and the last stamp.
  u64 state_digest() const;
  // Checks every invariant from scratch; O(state). For tests, recovery and operators:
  // corruption naming the first invariant found broken, or ok.
  Status check_invariants() const;

  const LedgerConfig& config() const noexcept { return config_; }
  u32 account_count() const noexcept { return account_count_; }
  u32 pending_count() const noexcept { return config_.pending_max - free_top_; }
  u64 transfers_made() const noexcept { return next_transfer_serial_ - 1; }
  u32 idempotency_records() const noexcept { return idempotency_.size(); }
  u32 signature_records() const noexcept { return signatures_.size(); }
  // When a keyed command of that lane would next find room (now, if it has room).
  u64 key_room_at_ns(KeyLane lane) const noexcept {
    return keys(lane).room_at_ns(last_stamp_.timestamp_ns);
  }
  // Keyed commands refused for want of room (idempotency_capacity) since this ledger
  // was made: a counter for metrics, not state (replay counts them again).
  u64 key_capacity_refusals() const noexcept { return key_capacity_refusals_; }
  Stamp last_stamp() const noexcept { return last_stamp_; }
  // Every transfer to another group whose outcome this group has not yet heard (step 1
  // done, step 3 not): visit(hold, channel number), by group and then in number order.
  // After a restart these are delivered and settled again (pipeline/between_groups.h).
  template <typename Visit>
  void for_each_unsettled(Visit&& visit) const {
    channels_.for_each_unsettled([&](u32, u32 number, u64 id) {
      const u32* slot = pending_slot(TransferId{id});
      PG_ASSERT(slot != nullptr);
      visit(pending_[*slot], number);
    });
  }
  // The clearing account for money to and from `group` in `currency`, if made yet.
  const Account* find_clearing_account(u32 group, Currency currency) const noexcept;

  // A merchant's quota entry (usage and own limits), if it has one; the group's
  // defaults. For the API's reads.
  const OwnerQuota* find_quota(MerchantId owner) const noexcept {
    return quotas_.find(owner.value);
  }
  const OwnerQuotas& quotas() const noexcept { return quotas_; }

  // An order held in memory (open, or final within its retention), and whether an id
  // names an order made here that has left memory since.
  const Order* find_order(u64 id) const noexcept { return orders_.find(id); }
  bool order_archived(u64 id) const noexcept { return orders_.archived(id); }
  const OrderBook& orders() const noexcept { return orders_; }

  // When the next hold or order expires (or a final order leaves memory), or 0 if
  // nothing is due ever: the group logs a tick then.
  u64 next_expiry_ns() const noexcept {
    const u64 hold = expiry_.empty() ? 0 : expiry_.top().expires_at_ns;
    const u64 order = orders_.next_due_ns();
    return hold == 0 ? order : order == 0 ? hold : std::min(hold, order);
  }

 private:
  friend struct LedgerTestAccess;  // tests reach states too costly to reach by commands

  // What an atomic batch changed, to put back if it fails.
  struct UndoEntry {
    enum class Kind : u8 { account, pending_created, pending_closed, recent_slot };
    Kind kind;
    u32 index;                       // account index, pending slot or recent slot
    ExpiryQueue::Position position;  // pending_closed: where it sat in the expiry queue
    union {
      Account account;
      Transfer transfer;
    };
  };

  // apply_batch() after advance(): each command at its own sequence from `first`.
  void run_commands(Stamp first, std::span<const Command> commands,
                    std::span<CommandResult> results) noexcept;
  template <bool kUndo>
  CommandResult execute(Stamp stamp, const Command& command) noexcept;
  CommandResult execute_keyed(Stamp stamp, const Command& command) noexcept;
  CommandResult execute_signed(Stamp stamp, const Command& command) noexcept;
  // A signature seen again inside its window (signature_replayed), or no room for it
  // (idempotency_capacity); ok: it may be taken.
  ResultCode check_signature(IdempotencyKey signature, u64 now_ns) noexcept;
  IdempotencyWindow& keys(KeyLane lane) noexcept {
    return lane == KeyLane::signature ? signatures_ : idempotency_;
  }
  const IdempotencyWindow& keys(KeyLane lane) const noexcept {
    return lane == KeyLane::signature ? signatures_ : idempotency_;
  }
  template <bool kUndo>
  CommandResult create_account(Stamp stamp, const Command& command) noexcept;
  template <bool kUndo>
  CommandResult transfer(Stamp stamp, const Command& command) noexcept;
  template <bool kUndo>
  [[gnu::always_inline]] CommandResult transfer_flagged(Stamp stamp, const Command& command,
                                                        u8 flags) noexcept;
  template <bool kUndo>
  CommandResult post_pending(Stamp stamp, const Command& command) noexcept;
  template <bool kUndo>
  CommandResult void_pending(Stamp stamp, const Command& command) noexcept;
  CommandResult send_between_groups(Stamp stamp, const Command& command) noexcept;
  CommandResult hold_for_group(Stamp stamp, Account& debit, AccountId recorded_credit, u64 amount,
                               u8 flags, u32 timeout_s) noexcept;
  CommandResult pay_order_between_groups(Stamp stamp, const Command& command) noexcept;
  CommandResult post_between_groups(u32 slot, u64 amount) noexcept;
  CommandResult deliver(Stamp stamp, const Command& command) noexcept;
  [[gnu::always_inline]] ResultCode check_funds(const Account& debit, const Account* credit,
                                                u64 amount) const noexcept;
  CommandResult settle(Stamp stamp, const Command& command) noexcept;
  CommandResult set_quota(Stamp stamp, const Command& command) noexcept;
  // The order machine's view of this ledger's money at one stamp.
  class OrderMoneyAt;
  CommandResult apply_order(Stamp stamp, const Command& command) noexcept;
  // The owner's quota entry, made if needed (nullptr: owners_full). REQUIRES: owner != 0.
  OwnerQuota* quota_entry(u64 owner, u64 now_ns) noexcept;
  // Whether the debit account's owner may open one more two-phase hold.
  bool has_hold_room(const Account& debit) const noexcept {
    const OwnerQuota* entry = quotas_.find(debit.owner.value);
    // An owner with an account has an entry (0 has none and is never limited).
    PG_ASSERT(entry != nullptr || debit.owner.value == 0);
    return entry == nullptr || quotas_.has_room(*entry, Quota::holds);
  }
  // The merchant a keyed command's key counts against: the claim's owner, the new
  // account's owner, the debit account's owner (of a transfer, or of the hold posted
  // or voided); 0 when none (never counted).
  u64 key_owner(const Command& command) const noexcept;
  // Whether `owner` may have one more key (0 always may): ok, or the refusal.
  ResultCode check_key_quota(u64 owner, u64 now_ns) noexcept;
  // Recounts usage from accounts, open holds and held keys into `into` (load,
  // invariants); false when `into` has no room for every owner.
  bool count_usage(OwnerQuotas& into) const noexcept;
  // The owners with limits of their own, by owner (digest).
  std::vector<OwnerQuota> limited_owners() const;

  // Moves `amount` (held or posted) from debit to credit as a new transfer, which
  // records `recorded_credit` as its credit account (another group's account, for a
  // transfer between groups). All checks are done; this cannot fail.
  // Inlined into the transfer path: as a call it was measurably slower.
  template <bool kUndo>
  [[gnu::always_inline]] TransferId move(Stamp stamp, Account& debit, Account& credit,
                                         AccountId recorded_credit, u64 amount, Currency currency,
                                         u8 flags, bool hold, u32 timeout_s) noexcept;
  // The account that a hold's credit counts against: its credit account, or the
  // clearing account of a hold bound for another group.
  Account* credit_side(const Transfer& hold) noexcept;
  const Account* credit_side(const Transfer& hold) const noexcept;
  // The group of the region that `id` names, if it is another group of this ledger's
  // channels; otherwise -1.
  i64 peer_group(u64 id) const noexcept;
  Account* clearing_account(u32 group, Currency currency) noexcept;
  // REQUIRES: none yet for (group, currency), and room for an account.
  Account& make_clearing_account(Stamp stamp, u32 group, Currency currency) noexcept;
  static u64 clearing_key(u32 group, Currency currency) noexcept {
    return (u64{group} << 32) | currency.code;
  }

  template <bool kUndo>
  void close_pending(u32 slot, TransferStatus status, u64 posted_amount, Stamp stamp,
                     ResultCode refused = ResultCode::ok) noexcept;
  // The recent-ring slot for a transfer serial, saved for undo first when kUndo.
  template <bool kUndo>
  Transfer& recent_slot(u64 serial) noexcept;
  template <bool kUndo>
  void save_account(const Account& account) noexcept;
  ResultCode closed_transfer_code(TransferId id) const noexcept;

  void advance(Stamp stamp) noexcept;  // checks time order, expires due holds
  // Records that commands through `first + count - 1` have run.
  void finish(Stamp first, std::size_t count) noexcept {
    if (count > 0) last_stamp_.sequence = first.sequence + count - 1;
  }
  static Stamp nth(Stamp first, std::size_t i) noexcept {
    return Stamp{first.sequence + i, first.timestamp_ns};
  }
  void rollback(u32 account_count, u64 next_transfer_serial) noexcept;
  void replay_atomic_results(const IdempotencyRecord& record, std::span<const Command> commands,
                             std::span<CommandResult> results) const noexcept;
  // What apply_batch() expects the commands it has asked the cache for to take: the
  // serial and pool slot the next of them will get if every transfer before it
  // succeeds. A guess (a refused transfer shifts it by one) that costs a stray load.
  struct Lookahead {
    u64 serial;
    u32 holds;  // holds among the commands already asked for
  };
  // Asks the cache for what executing `command` will touch, and moves `ahead` past it.
  void prefetch(const Command& command, Lookahead& ahead) const noexcept;
  std::size_t sorted_pending_ids() const noexcept;  // into digest_scratch_

  // The owner of an account made here (0 for none, or no such account).
  u64 owner_of(AccountId id) const noexcept {
    const Account* account = account_at(id);
    return account == nullptr ? 0 : account->owner.value;
  }
  Account* account_at(AccountId id) noexcept;
  const Account* account_at(AccountId id) const noexcept;
  const u32* pending_slot(TransferId id) const noexcept {
    return id.empty() ? nullptr : pending_index_.find(id.value);
  }
  bool issued_here(u64 id) const noexcept { return id_prefix_bits(id) == prefix_bits_; }

  LedgerConfig config_;
  u64 prefix_bits_;

  FixedArray<Account> accounts_;  // index = serial - 1
  u32 account_count_ = 0;

  FixedArray<Transfer> pending_;  // the pool of open holds, by slot
  FixedArray<u32> free_slots_;    // a stack of free pool slots
  u32 free_top_ = 0;              // free_slots_[0, free_top_) are free
  PendingIndex pending_index_;    // transfer id → pool slot
  ExpiryQueue expiry_;

  FixedArray<Transfer> recent_;  // transfer serial & recent_mask_ → the transfer
  u64 recent_mask_;
  u64 next_transfer_serial_ = 1;

  OwnerQuotas quotas_;             // per-merchant usage and limits
  IdempotencyWindow idempotency_;  // KeyLane::client
  IdempotencyWindow signatures_;   // KeyLane::signature
  u64 key_capacity_refusals_ = 0;

  FixedArray<UndoEntry> undo_;
  u32 undo_size_ = 0;

  Stamp last_stamp_;
  LedgerEventSink* events_ = nullptr;
  mutable FixedArray<u64> digest_scratch_;  // pending ids, sorted for state_digest()

  // Transfers between groups. Last, so that the hot members above keep their places.
  GroupChannels channels_;                              // to and from the region's other groups
  OpenAddressMap<u64, u32, Mix64Hash> clearing_index_;  // clearing_key → account index
  OrderBook orders_;
};

}  // namespace paygate
