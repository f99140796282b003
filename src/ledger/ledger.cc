#include "ledger/ledger.h"

#include <algorithm>
#include <bit>
#include <vector>

#include <fmt/format.h>

#include "base/prefetch.h"

namespace paygate {

namespace {

// How far ahead apply_batch() asks the cache for what later commands will touch.
constexpr u32 kPrefetchDistance = 8;

// Undo entries one command can make: two accounts, one pool change, one recent slot.
constexpr u32 kUndoPerCommand = 4;

bool adds_within_limit(u64 value, u64 amount) noexcept {
  PG_ASSERT(value <= kAmountMax && amount <= kAmountMax);
  return value + amount <= kAmountMax;  // cannot wrap: both are below 2^63
}

LedgerEvent event_at(Stamp stamp, LedgerEventKind kind, u64 id, Currency currency) noexcept {
  LedgerEvent event;
  event.sequence = stamp.sequence;
  event.timestamp_ns = stamp.timestamp_ns;
  event.kind = kind;
  event.id = id;
  event.currency = currency;
  return event;
}

}  // namespace

Ledger::Ledger(const LedgerConfig& config)
    : config_(config),
      prefix_bits_(config.prefix.bits()),
      accounts_(config.accounts_max),
      pending_(config.pending_max),
      free_slots_(config.pending_max),
      pending_index_(config.pending_max),
      expiry_(config.pending_max),
      recent_(std::bit_ceil(std::max<u32>(config.recent_transfers_max, 1))),
      recent_mask_(recent_.size() - 1),
      quotas_(std::max<u32>(config.owners_max, 1)),
      idempotency_(config.idempotency_keys_max, config.idempotency_window_ns),
      signatures_(config.signature_capacity(), config.signature_window_ns),
      undo_(std::size_t{kBatchMax} * kUndoPerCommand),
      digest_scratch_(config.pending_max),
      channels_(config.groups),
      clearing_index_(kClearingAccountsMax),
      orders_(OrderConfig{.prefix = config.prefix,
                          .orders_max = config.orders_max,
                          .final_retained_ns = config.order_final_retained_ns}) {
  PG_ASSERT(config.prefix.valid());
  static_assert(u64{~u32{0}} <= kSerialMax, "every account index fits in a serial");
  PG_ASSERT(config.accounts_max > 0);
  PG_ASSERT(config.pending_max > 0);
  PG_ASSERT(config.groups >= 1 && config.groups <= kGroupMax + 1);
  // Pop order from the free stack is slot 0, 1, 2, ...: push them in reverse.
  for (u32 i = 0; i < config.pending_max; ++i)
    free_slots_[i] = config.pending_max - 1 - i;
  free_top_ = config.pending_max;
  idempotency_.count_owners_in(&quotas_);
}

// ---------------------------------------------------------------------------
// Entry points

CommandResult Ledger::apply(Stamp stamp, const Command& command) noexcept {
  advance(stamp);
  return execute_keyed(stamp, command);
}

void Ledger::apply_batch(Stamp first, std::span<const Command> commands,
                         std::span<CommandResult> results) noexcept {
  PG_ASSERT(results.size() >= commands.size());
  advance(first);
  run_commands(first, commands, results);
  finish(first, commands.size());
}

CommandResult Ledger::apply_claimed(Stamp first, const Command& claim,
                                    std::span<const Command> commands,
                                    std::span<CommandResult> results) noexcept {
  PG_ASSERT(results.size() >= commands.size());
  PG_ASSERT(claim.kind == CommandKind::claim && claim.claim.covers == commands.size());
  advance(first);
  const CommandResult claimed = execute_keyed(first, claim);
  if (claimed.ok()) {
    run_commands(nth(first, 1), commands, results);
  } else {
    for (std::size_t i = 0; i < commands.size(); ++i)
      results[i] = CommandResult{claimed.code};
  }
  finish(first, commands.size() + 1);
  return claimed;
}

void Ledger::run_commands(Stamp first, std::span<const Command> commands,
                          std::span<CommandResult> results) noexcept {
  const std::size_t count = commands.size();
  Lookahead ahead{.serial = next_transfer_serial_, .holds = 0};
  for (std::size_t i = 0; i < std::min<std::size_t>(kPrefetchDistance, count); ++i) {
    prefetch(commands[i], ahead);
  }
  // A claim that did not hold takes the commands it covers down with it: they answer
  // its code and change nothing (a request never spans two calls, live or replayed).
  std::size_t skip = 0;
  ResultCode skip_code = ResultCode::ok;
  for (std::size_t i = 0; i < count; ++i) {
    if (i + kPrefetchDistance < count) prefetch(commands[i + kPrefetchDistance], ahead);
    if (skip > 0) {
      --skip;
      results[i] = CommandResult{skip_code};
      continue;
    }
    results[i] = execute_keyed(nth(first, i), commands[i]);
    if (commands[i].kind == CommandKind::claim && !results[i].ok()) {
      skip = std::min<std::size_t>(commands[i].claim.covers, count - i - 1);
      skip_code = results[i].code;
    }
  }
}

const Account* Ledger::find_account(AccountId id) const noexcept {
  return account_at(id);
}

std::optional<Transfer> Ledger::find_transfer(TransferId id) const noexcept {
  if (id.empty()) return std::nullopt;
  if (const u32* slot = pending_slot(id)) return pending_[*slot];
  if (!issued_here(id.value)) return std::nullopt;
  const Transfer& recent = recent_[id_serial(id.value) & recent_mask_];
  if (recent.id == id) return recent;
  return std::nullopt;
}

// ---------------------------------------------------------------------------
// Time

class Ledger::OrderMoneyAt final : public OrderMoney {
 public:
  OrderMoneyAt(Ledger& ledger, Stamp stamp) noexcept : ledger_(ledger), stamp_(stamp) {}
  CommandResult move(AccountId debit, AccountId credit, u64 amount,
                     Currency currency) noexcept override {
    return transfer(debit, credit, amount, currency, 0);
  }
  CommandResult hold(AccountId debit, AccountId credit, u64 amount,
                     Currency currency) noexcept override {
    return transfer(debit, credit, amount, currency, kTransferOrder);
  }
  void close_hold(TransferId id, bool post) noexcept override {
    const u32* slot = ledger_.pending_slot(id);
    PG_ASSERT(slot != nullptr && ledger_.pending_[*slot].order_hold());
    const u64 amount = ledger_.pending_[*slot].amount;
    ledger_.close_pending<false>(*slot, post ? TransferStatus::posted : TransferStatus::voided,
                                 post ? amount : 0, stamp_);
  }
  CommandResult send(AccountId debit, AccountId credit, u64 amount,
                     u64 order_id) noexcept override {
    Account* from = ledger_.account_at(debit);
    PG_ASSERT(from != nullptr && ledger_.peer_group(credit.value) >= 0);
    const CommandResult sent = ledger_.hold_for_group(
        stamp_, *from, credit, amount, kTransferBetweenGroups | kTransferOrderRefund, 0);
    if (sent.ok()) {
      // While it is open the hold names its order (Transfer::refunded_order).
      Transfer& hold = ledger_.pending_[*ledger_.pending_slot(TransferId{sent.id})];
      hold.posted_amount = order_id;
    }
    return sent;
  }
  const Account* account(AccountId id) const noexcept override { return ledger_.account_at(id); }
  bool in_other_group(AccountId id) const noexcept override {
    return ledger_.peer_group(id.value) >= 0;
  }
  bool order_room(u64 merchant) const noexcept override {
    const OwnerQuota* entry = ledger_.quotas_.find(merchant);
    PG_ASSERT(entry != nullptr);  // a merchant with an account has an entry
    return ledger_.quotas_.has_room(*entry, Quota::orders);
  }
  void order_taken(u64 merchant) noexcept override { ledger_.quotas_.add(merchant, Quota::orders); }
  void order_left(u64 merchant) noexcept override {
    ledger_.quotas_.remove(merchant, Quota::orders);
  }

 private:
  CommandResult transfer(AccountId debit, AccountId credit, u64 amount, Currency currency,
                         u8 flags) noexcept {
    if (!ledger_.issued_here(debit.value)) return {ResultCode::debit_account_not_found};
    if (!ledger_.issued_here(credit.value)) return {ResultCode::credit_account_not_found};
    return ledger_.transfer_flagged<false>(
        stamp_, Command::make_transfer(debit, credit, amount, currency), flags);
  }

  Ledger& ledger_;
  Stamp stamp_;
};

void Ledger::advance(Stamp stamp) noexcept {
  PG_ASSERT(stamp.sequence > last_stamp_.sequence || last_stamp_.sequence == 0);
  PG_ASSERT(stamp.timestamp_ns >= last_stamp_.timestamp_ns);
  last_stamp_ = stamp;
  // Bounded: each pass removes one hold, and at most pending_max are open.
  while (!expiry_.empty() && expiry_.top().expires_at_ns <= stamp.timestamp_ns) {
    close_pending<false>(expiry_.top().slot, TransferStatus::expired, 0, stamp);
  }
  OrderMoneyAt money(*this, stamp);
  orders_.advance(stamp, money);
}

// ---------------------------------------------------------------------------
// Commands

CommandResult Ledger::execute_keyed(Stamp stamp, const Command& command) noexcept {
  if (command.key.empty()) return execute<false>(stamp, command);
  if (command.key_lane == KeyLane::signature) return execute_signed(stamp, command);
  if (command.key_lane != KeyLane::client) return CommandResult{ResultCode::invalid_command};
  if (command.kind == CommandKind::claim && command.flags == kClaimSignature &&
      !command.claim.signature.empty()) {
    // The request's signature first: a replay is refused before its key is looked at
    // (its key may be dropped or changed), and a retry (signed again) passes on to it.
    if (const ResultCode refused = check_signature(command.claim.signature, stamp.timestamp_ns);
        refused != ResultCode::ok) {
      return CommandResult{refused};
    }
    signatures_.insert(IdempotencyRecord{.key = command.claim.signature,
                                         .created_at_ns = stamp.timestamp_ns,
                                         .code = ResultCode::ok});
  }

  const u64 content = content_hash(command);
  if (const IdempotencyRecord* record = idempotency_.find(command.key, stamp.timestamp_ns)) {
    if (record->content_hash != content) return CommandResult{ResultCode::idempotency_key_reused};
    return CommandResult{
        .code = record->code, .channel_number = record->channel_number, .id = record->result_id};
  }
  // Never forget a key inside its window to make room: refuse the new one instead.
  if (!idempotency_.has_room(stamp.timestamp_ns)) {
    ++key_capacity_refusals_;
    return CommandResult{ResultCode::idempotency_capacity};
  }
  const u64 owner = key_owner(command);
  if (const ResultCode refused = check_key_quota(owner, stamp.timestamp_ns);
      refused != ResultCode::ok) {
    return CommandResult{refused};
  }
  const CommandResult result = execute<false>(stamp, command);
  idempotency_.insert(IdempotencyRecord{
      .key = command.key,
      .content_hash = content,
      .created_at_ns = stamp.timestamp_ns,
      .result_id = result.id,
      .code = result.code,
      .channel_number = result.channel_number,
      .owner = owner,
  });
  quotas_.add(owner, Quota::idempotency_keys);
  return result;
}

u64 Ledger::key_owner(const Command& command) const noexcept {
  switch (command.kind) {
    case CommandKind::claim:
      return command.claim.owner.value;
    case CommandKind::create_account:
      return command.create_account.owner.value;
    case CommandKind::transfer:
      return owner_of(command.transfer.debit_account_id);
    case CommandKind::post_pending:
    case CommandKind::void_pending: {
      // The hold's debit side, open or closed: a key on a closed hold takes room in
      // the table too, and must count against someone (the edge finds every hold it
      // lets through here). The credit side, which may void, spends it: see
      // docs/API.md, "Quotas".
      const std::optional<Transfer> hold = find_transfer(command.pending.transfer_id);
      return hold ? owner_of(hold->debit_account_id) : 0;
    }
    case CommandKind::order_create:
    case CommandKind::order_checkout:
    case CommandKind::order_result:
    case CommandKind::order_cancel:
    case CommandKind::order_refund:
    case CommandKind::order_resolve:
      return orders_.key_owner(command, [&](AccountId id) { return owner_of(id); });
    case CommandKind::order_pay:  // the wallet's owner
      return owner_of(command.order.account);
    case CommandKind::tick:
    case CommandKind::deliver:
    case CommandKind::settle:
    case CommandKind::set_quota:
      break;
  }
  return 0;
}

// REQUIRES: the key table's expired records are dropped (has_room() just ran), so the
// usage counted is the keys live now, as a recovery from a snapshot would count it.
ResultCode Ledger::check_key_quota(u64 owner, u64 now_ns) noexcept {
  if (owner == 0) return ResultCode::ok;
  OwnerQuota* entry = quota_entry(owner, now_ns);
  if (entry == nullptr) return ResultCode::owners_full;
  if (!quotas_.has_room(*entry, Quota::idempotency_keys)) return ResultCode::quota_idempotency_keys;
  return ResultCode::ok;
}

OwnerQuota* Ledger::quota_entry(u64 owner, u64 now_ns) noexcept {
  if (OwnerQuota* entry = quotas_.find(owner)) return entry;
  // Whether an entry is idle (reusable) must not depend on keys past their window
  // that no command has dropped yet: a recovery from a snapshot never has those.
  idempotency_.drop_expired(now_ns);
  return quotas_.find_or_add(owner);
}

// A signed request's signature, seen again inside its window, is a replay: refused,
// whatever the content (the same signature is the same bytes).
CommandResult Ledger::execute_signed(Stamp stamp, const Command& command) noexcept {
  PG_ASSERT(!command.key.empty() && command.key_lane == KeyLane::signature);
  if (const ResultCode refused = check_signature(command.key, stamp.timestamp_ns);
      refused != ResultCode::ok) {
    return CommandResult{refused};
  }
  const CommandResult result = execute<false>(stamp, command);
  signatures_.insert(IdempotencyRecord{
      .key = command.key, .created_at_ns = stamp.timestamp_ns, .code = result.code});
  return result;
}

ResultCode Ledger::check_signature(IdempotencyKey signature, u64 now_ns) noexcept {
  if (signatures_.find(signature, now_ns) != nullptr) return ResultCode::signature_replayed;
  if (!signatures_.has_room(now_ns)) {
    ++key_capacity_refusals_;
    return ResultCode::idempotency_capacity;
  }
  return ResultCode::ok;
}

template <bool kUndo>
CommandResult Ledger::execute(Stamp stamp, const Command& command) noexcept {
  switch (command.kind) {
    case CommandKind::create_account:
      return create_account<kUndo>(stamp, command);
    case CommandKind::transfer:
      return transfer<kUndo>(stamp, command);
    case CommandKind::post_pending:
      return post_pending<kUndo>(stamp, command);
    case CommandKind::void_pending:
      return void_pending<kUndo>(stamp, command);
    case CommandKind::deliver:
      if constexpr (kUndo) return CommandResult{ResultCode::invalid_command};
      return deliver(stamp, command);
    case CommandKind::settle:
      if constexpr (kUndo) return CommandResult{ResultCode::invalid_command};
      return settle(stamp, command);
    case CommandKind::tick:
      // Holds due by now expired in advance(); drop idempotency records past the
      // window so memory and the metrics follow time even when idle.
      idempotency_.drop_expired(stamp.timestamp_ns);
      signatures_.drop_expired(stamp.timestamp_ns);
      return CommandResult{ResultCode::ok};
    case CommandKind::set_quota:
      if constexpr (kUndo) return CommandResult{ResultCode::invalid_command};
      return set_quota(stamp, command);
    case CommandKind::order_create:
    case CommandKind::order_checkout:
    case CommandKind::order_result:
    case CommandKind::order_cancel:
    case CommandKind::order_refund:
    case CommandKind::order_resolve:
      if constexpr (kUndo) return CommandResult{ResultCode::invalid_command};  // not atomic
      return apply_order(stamp, command);
    case CommandKind::order_pay:
      if constexpr (kUndo) return CommandResult{ResultCode::invalid_command};  // nor this
      return pay_order_between_groups(stamp, command);
    case CommandKind::claim:
      // The key was taken in execute_keyed(); a claim does nothing else. Without a
      // key, or inside an atomic batch (which has its own key), it is malformed.
      if constexpr (kUndo) return CommandResult{ResultCode::invalid_command};
      // A signature only with a client's key (execute_keyed took it): elsewhere the
      // flag is malformed too.
      if (command.key.empty() || command.claim.reserved0 != 0 ||
          (command.flags != 0 &&
           (command.flags != kClaimSignature || command.key_lane != KeyLane::client ||
            command.claim.signature.empty()))) {
        return CommandResult{ResultCode::invalid_command};
      }
      return CommandResult{ResultCode::ok};
  }
  return CommandResult{ResultCode::invalid_command};
}

// Orders move money only by transfers inside this group (immediate ones, or a balance
// checkout's hold that only its order ends), made by the order command itself at its
// stamp, with every rule a transfer has.
CommandResult Ledger::apply_order(Stamp stamp, const Command& command) noexcept {
  OrderMoneyAt money(*this, stamp);
  return orders_.apply(stamp, command, money);
}

template <bool kUndo>
CommandResult Ledger::create_account(Stamp stamp, const Command& command) noexcept {
  const CreateAccountBody& body = command.create_account;
  if ((command.flags & ~kAccountFlagsKnown) != 0) return {ResultCode::invalid_command};
  if (!body.currency.valid()) return {ResultCode::invalid_currency};
  if (!valid(body.kind)) return {ResultCode::invalid_account_kind};
  if (account_count_ == config_.accounts_max) return {ResultCode::accounts_full};
  if (body.owner.value != 0) {
    OwnerQuota* entry = quota_entry(body.owner.value, stamp.timestamp_ns);
    if (entry == nullptr) return {ResultCode::owners_full};
    if (!quotas_.has_room(*entry, Quota::accounts)) return {ResultCode::quota_accounts};
    quotas_.add(*entry, Quota::accounts);
  }

  // No undo entry: a rollback restores account_count_ and clears the slots above it
  // (and uncounts them from their owners).
  const u32 index = account_count_++;
  Account& account = accounts_[index];
  account = Account{};
  account.id = AccountId{make_id(config_.prefix, u64{index} + 1)};
  account.owner = body.owner;
  account.currency = body.currency;
  account.kind = body.kind;
  account.flags = command.flags;
  account.updated_seq = stamp.sequence;
  if (events_ != nullptr) {
    LedgerEvent event =
        event_at(stamp, LedgerEventKind::account_created, account.id.value, account.currency);
    event.owner = account.owner;
    event.detail = static_cast<u8>(account.kind);
    events_->append(event);
  }
  return {.code = ResultCode::ok, .id = account.id.value};
}

template <bool kUndo>
CommandResult Ledger::transfer(Stamp stamp, const Command& command) noexcept {
  if ((command.flags & ~kTransferFlagsKnown) != 0) return {ResultCode::invalid_command};
  if ((command.flags & kTransferPending) == 0 && command.transfer.timeout_s != 0) {
    return {ResultCode::invalid_command};
  }
  return transfer_flagged<kUndo>(stamp, command, command.flags);
}

// A transfer whose flags are known good: a command's, or the ledger's own (an order's
// hold, kTransferOrder).
template <bool kUndo>
inline CommandResult Ledger::transfer_flagged(Stamp stamp, const Command& command,
                                              u8 flags) noexcept {
  const TransferBody& body = command.transfer;
  const bool hold = (flags & (kTransferPending | kTransferOrder)) != 0;
  if (body.amount == 0 || body.amount > kAmountMax) return {ResultCode::invalid_amount};
  if (!body.currency.valid()) return {ResultCode::invalid_currency};
  if (body.debit_account_id == body.credit_account_id) return {ResultCode::same_account};
  if ((flags & kTransferBetweenGroups) != 0) [[unlikely]] {
    // Never inside an atomic batch: the other group's credit cannot be taken back
    // with the batch.
    if (kUndo) return {ResultCode::cross_group_transfer};
    return send_between_groups(stamp, command);
  }
  Account* debit = account_at(body.debit_account_id);
  if (debit == nullptr) return {ResultCode::debit_account_not_found};
  Account* credit = account_at(body.credit_account_id);
  if (credit == nullptr) return {ResultCode::credit_account_not_found};
  if (((debit->flags | credit->flags) & kAccountClearing) != 0) [[unlikely]] {
    // Clearing accounts move only with the transfers between groups they serve.
    return {(debit->flags & kAccountClearing) != 0 ? ResultCode::debit_account_not_found
                                                   : ResultCode::credit_account_not_found};
  }
  if (debit->currency != body.currency || credit->currency != body.currency) {
    return {ResultCode::currency_mismatch};
  }
  if (hold && free_top_ == 0) return {ResultCode::pending_transfers_full};
  if ((flags & kTransferPending) != 0 && !has_hold_room(*debit)) return {ResultCode::quota_holds};
  const ResultCode refused = check_funds(*debit, credit, body.amount);
  if (refused != ResultCode::ok) return {refused};
  const TransferId id = move<kUndo>(stamp, *debit, *credit, body.credit_account_id, body.amount,
                                    body.currency, flags, hold, body.timeout_s);
  return {.code = ResultCode::ok, .id = id.value};
}

// Step 1 of a transfer between groups: hold the amount, credited to the clearing
// account for the credit account's group, and number it on that channel. A two-phase
// hold is numbered when it is posted (post_between_groups): until then it is an
// ordinary hold here, which may be voided or expire.
CommandResult Ledger::send_between_groups(Stamp stamp, const Command& command) noexcept {
  const TransferBody& body = command.transfer;
  Account* debit = account_at(body.debit_account_id);
  if (debit == nullptr || (debit->flags & kAccountClearing) != 0) {
    return {ResultCode::debit_account_not_found};
  }
  // The credit account is the other group's to check (step 2).
  if (peer_group(body.credit_account_id.value) < 0) return {ResultCode::credit_account_not_found};
  if (debit->currency != body.currency) return {ResultCode::currency_mismatch};
  return hold_for_group(stamp, *debit, body.credit_account_id, body.amount, command.flags,
                        body.timeout_s);
}

// The hold of step 1 on `debit` (in its currency) toward the group that `recorded_credit`
// names (an account there, or an order: Transfer::pays_order), numbered on that
// channel unless it is two-phase. REQUIRES: that group is a peer.
CommandResult Ledger::hold_for_group(Stamp stamp, Account& debit, AccountId recorded_credit,
                                     u64 amount, u8 flags, u32 timeout_s) noexcept {
  const i64 peer = peer_group(recorded_credit.value);
  PG_ASSERT(peer >= 0 && (flags & kTransferBetweenGroups) != 0);
  const bool two_phase = (flags & kTransferPending) != 0;
  if (free_top_ == 0 || (!two_phase && !channels_.can_send(static_cast<u32>(peer)))) {
    return {ResultCode::pending_transfers_full};
  }
  if (two_phase && !has_hold_room(debit)) return {ResultCode::quota_holds};
  Account* clearing = clearing_account(static_cast<u32>(peer), debit.currency);
  const ResultCode refused = check_funds(debit, clearing, amount);
  if (refused != ResultCode::ok) return {refused};
  if (clearing == nullptr) {
    if (account_count_ == config_.accounts_max || clearing_index_.size() == kClearingAccountsMax) {
      return {ResultCode::accounts_full};
    }
    clearing = &make_clearing_account(stamp, static_cast<u32>(peer), debit.currency);
  }
  // An immediate one is held, without a timeout, until the other group answers
  // (settle); a two-phase one keeps the timeout it was given until it is posted.
  const TransferId id =
      move<false>(stamp, debit, *clearing, recorded_credit, amount, debit.currency, flags,
                  /*hold=*/true, two_phase ? timeout_s : 0);
  if (two_phase) return {.code = ResultCode::ok, .id = id.value};
  const u32 number = channels_.send(static_cast<u32>(peer), id.value);
  return {.code = ResultCode::ok, .channel_number = number, .id = id.value};
}

// A wallet of this group pays an order of another (docs/ORDERS.md, "Between groups"):
// step 1, the payer's money held toward the order's group and numbered on its channel.
// That group checks the order (open, this amount and currency) when the credit arrives.
CommandResult Ledger::pay_order_between_groups(Stamp stamp, const Command& command) noexcept {
  const OrderBody& body = command.order;
  if (command.flags != 0 || body.action != static_cast<u8>(OrderMethod::wallet)) {
    return {ResultCode::invalid_command};
  }
  for (const u8 byte : body.reserved0) {
    if (byte != 0) return {ResultCode::invalid_command};
  }
  // (An order of this group is checked out by order_checkout.)
  if (peer_group(body.order_id) < 0 || id_serial(body.order_id) == 0) {
    return {ResultCode::order_not_found};
  }
  Account* payer = account_at(body.account);
  if (payer == nullptr || (payer->flags & kAccountClearing) != 0) {
    return {ResultCode::debit_account_not_found};
  }
  if (body.amount == 0 || body.amount > kAmountMax) return {ResultCode::invalid_amount};
  return hold_for_group(stamp, *payer, AccountId{body.order_id}, body.amount,
                        kTransferBetweenGroups | kTransferOrder, 0);
}

// Posting a two-phase hold between groups: number it on the channel with the amount
// to deliver. From here it no longer expires and cannot be voided: the other group
// credits it (settle posts it) or refuses (settle voids it).
CommandResult Ledger::post_between_groups(u32 slot, u64 amount) noexcept {
  Transfer& hold = pending_[slot];
  PG_ASSERT(hold.between_groups() && amount != 0 && amount <= hold.amount);
  if (hold.on_channel())
    return {hold.two_phase() ? ResultCode::transfer_settling : ResultCode::transfer_not_pending};
  const i64 peer = peer_group(hold.credit_account_id.value);
  PG_ASSERT(peer >= 0);
  if (!channels_.can_send(static_cast<u32>(peer))) return {ResultCode::pending_transfers_full};
  if (expiry_.contains(slot)) expiry_.remove(slot);
  hold.expires_at_ns = 0;
  hold.posted_amount = amount;
  const u32 number = channels_.send(static_cast<u32>(peer), hold.id.value);
  return {.code = ResultCode::ok, .channel_number = number, .id = hold.id.value};
}

// The checks every new transfer ends with: serials left, the debit account's funds,
// and both sides' totals (a credit account not made yet holds nothing).
inline ResultCode Ledger::check_funds(const Account& debit, const Account* credit,
                                      u64 amount) const noexcept {
  if (next_transfer_serial_ > kSerialMax) return ResultCode::ids_exhausted;
  if (debit.restricted()) {
    PG_ASSERT(debit.debits_posted + debit.debits_pending <= debit.credits_posted);
    const u64 available = debit.credits_posted - debit.debits_posted - debit.debits_pending;
    if (amount > available) return ResultCode::insufficient_funds;
  }
  // Each side's total (posted + pending) stays within kAmountMax, so balances and
  // availability always fit an i64 and a later post, which only moves pending to
  // posted, cannot overflow.
  if (!adds_within_limit(debit.debits_posted + debit.debits_pending, amount) ||
      (credit != nullptr &&
       !adds_within_limit(credit->credits_posted + credit->credits_pending, amount))) {
    return ResultCode::overflow;
  }
  return ResultCode::ok;
}

template <bool kUndo>
inline TransferId Ledger::move(Stamp stamp, Account& debit, Account& credit,
                               AccountId recorded_credit, u64 amount, Currency currency, u8 flags,
                               bool hold, u32 timeout_s) noexcept {
  save_account<kUndo>(debit);
  save_account<kUndo>(credit);
  const u64 serial = next_transfer_serial_++;
  const TransferId id{make_id(config_.prefix, serial)};
  u64 expires_at_ns = 0;
  if (hold) {
    debit.debits_pending += amount;
    credit.credits_pending += amount;
    if (timeout_s != 0) {
      expires_at_ns = stamp.timestamp_ns + u64{timeout_s} * kNanosPerSecond;
      PG_ASSERT(expires_at_ns > stamp.timestamp_ns);
    }
  } else {
    debit.debits_posted += amount;
    credit.credits_posted += amount;
  }
  debit.updated_seq = stamp.sequence;
  credit.updated_seq = stamp.sequence;
  PG_ASSERT(!debit.restricted() ||
            debit.debits_posted + debit.debits_pending <= debit.credits_posted);

  // Written in place: the recent ring is where every new transfer lands first.
  Transfer& made = recent_slot<kUndo>(serial);
  made.id = id;
  made.debit_account_id = debit.id;
  made.credit_account_id = recorded_credit;
  made.amount = amount;
  made.posted_amount = 0;
  made.created_at_ns = stamp.timestamp_ns;
  made.expires_at_ns = expires_at_ns;
  made.currency = currency;
  made.status = hold ? TransferStatus::pending : TransferStatus::posted;
  made.flags = flags;
  made.refused = ResultCode::ok;
  if (hold) {
    if ((flags & kTransferPending) != 0) quotas_.add(debit.owner.value, Quota::holds);
    const u32 slot = free_slots_[--free_top_];
    pending_[slot] = made;
    pending_index_.insert(id.value, slot);
    if (expires_at_ns != 0) expiry_.push(slot, expires_at_ns, id.value, timeout_s);
    if constexpr (kUndo) {
      UndoEntry& undo = undo_[undo_size_++];
      undo.kind = UndoEntry::Kind::pending_created;
      undo.index = slot;
    }
  }
  if (events_ != nullptr) {
    // Events are this group's books: they name the account the money went to here.
    LedgerEvent event =
        event_at(stamp, hold ? LedgerEventKind::transfer_pending : LedgerEventKind::transfer_posted,
                 id.value, currency);
    event.debit_account_id = debit.id;
    event.credit_account_id = credit.id;
    event.amount = amount;
    event.debit_balance = debit.balance();
    event.credit_balance = credit.balance();
    events_->append(event);
  }
  return id;
}

template <bool kUndo>
CommandResult Ledger::post_pending(Stamp stamp, const Command& command) noexcept {
  const PendingBody& body = command.pending;
  if ((command.flags & ~kTransferBetweenGroups) != 0) return {ResultCode::invalid_command};
  const u32* slot = pending_slot(body.transfer_id);
  if (slot == nullptr) return {closed_transfer_code(body.transfer_id)};
  const Transfer& hold = pending_[*slot];
  PG_ASSERT(hold.status == TransferStatus::pending);
  PG_ASSERT(hold.expires_at_ns == 0 || hold.expires_at_ns > stamp.timestamp_ns);
  // An order's hold is its order's: posted by its provider's result (OrderMoney).
  if (hold.order_hold()) return {ResultCode::awaits_provider};
  if (!hold.two_phase()) return {ResultCode::transfer_not_pending};  // only settle closes it
  const u64 amount = body.amount == 0 ? hold.amount : body.amount;
  if (amount > hold.amount) return {ResultCode::exceeds_pending_amount};
  if (hold.between_groups() != ((command.flags & kTransferBetweenGroups) != 0)) [[unlikely]] {
    // A hold between groups is posted only by a caller that carries the credit to the
    // other group (the gateway), and never inside an atomic batch.
    return {ResultCode::cross_group_transfer};
  }
  if (hold.between_groups()) [[unlikely]] {
    if constexpr (kUndo) return {ResultCode::cross_group_transfer};
    return post_between_groups(*slot, amount);
  }
  const TransferId id = hold.id;
  close_pending<kUndo>(*slot, TransferStatus::posted, amount, stamp);
  return {.code = ResultCode::ok, .id = id.value};
}

template <bool kUndo>
CommandResult Ledger::void_pending(Stamp stamp, const Command& command) noexcept {
  const PendingBody& body = command.pending;
  if (command.flags != 0 || body.amount != 0) return {ResultCode::invalid_command};
  const u32* slot = pending_slot(body.transfer_id);
  if (slot == nullptr) return {closed_transfer_code(body.transfer_id)};
  const Transfer& hold = pending_[*slot];
  if (hold.order_hold()) return {ResultCode::awaits_provider};  // the order's to release
  if (hold.on_channel()) {
    return {hold.two_phase() ? ResultCode::transfer_settling : ResultCode::transfer_not_pending};
  }
  close_pending<kUndo>(*slot, TransferStatus::voided, 0, stamp);
  return {.code = ResultCode::ok, .id = body.transfer_id.value};
}

// Step 2 of a transfer between groups, in the credit account's group: credit it from
// the clearing account of the sending group, once per channel number.
CommandResult Ledger::deliver(Stamp stamp, const Command& command) noexcept {
  const DeliverBody& body = command.deliver;
  if ((command.flags & ~kDeliverOrder) != 0 || !command.key.empty()) {
    return {ResultCode::invalid_command};
  }
  const bool pays_order = command.flags == kDeliverOrder;
  const i64 peer = peer_group(body.source_transfer_id.value);
  if (peer < 0 || id_serial(body.source_transfer_id.value) == 0) {
    return {ResultCode::invalid_command};
  }
  const u32 from = static_cast<u32>(peer);
  ResultCode recorded = ResultCode::ok;
  switch (channels_.arrival(from, body.channel_number, &recorded)) {
    case GroupChannels::Arrival::repeat:
      return {recorded};
    case GroupChannels::Arrival::stale:
      return {ResultCode::stale_delivery};
    case GroupChannels::Arrival::fresh:
      break;
  }
  // Whatever comes of it is recorded, so that a repeat answers the same.
  const auto outcome = [&]() -> CommandResult {
    if (body.amount == 0 || body.amount > kAmountMax) return {ResultCode::invalid_amount};
    if (!body.currency.valid()) return {ResultCode::invalid_currency};
    AccountId credit_id = body.credit_account_id;
    const AccountId payer{command.extra_hash};
    if (pays_order) {
      // An order of this group, paid by a wallet of the sending one: the order's
      // account is credited if the order takes this payment now, else it is refused
      // (and the sending group gives the payer its money back).
      if (peer_group(payer.value) != static_cast<i64>(from)) return {ResultCode::invalid_command};
      const CommandResult payable =
          orders_.payable(body.credit_account_id.value, body.amount, body.currency);
      if (!payable.ok()) return payable;
      credit_id = orders_.find(body.credit_account_id.value)->account;
    }
    Account* credit = account_at(credit_id);
    if (credit == nullptr || (credit->flags & kAccountClearing) != 0) {
      return {ResultCode::credit_account_not_found};
    }
    if (credit->currency != body.currency) return {ResultCode::currency_mismatch};
    // The clearing account is the debit side; one not made yet holds nothing.
    Account* clearing = clearing_account(from, body.currency);
    Account unmade;
    unmade.kind = AccountKind::system;
    const ResultCode refused =
        check_funds(clearing != nullptr ? *clearing : unmade, credit, body.amount);
    if (refused != ResultCode::ok) return {refused};
    if (clearing == nullptr) {
      if (account_count_ == config_.accounts_max ||
          clearing_index_.size() == kClearingAccountsMax) {
        return {ResultCode::accounts_full};
      }
      clearing = &make_clearing_account(stamp, from, body.currency);
    }
    const TransferId id = move<false>(stamp, *clearing, *credit, credit->id, body.amount,
                                      body.currency, kTransferBetweenGroups, /*hold=*/false, 0);
    if (pays_order) {
      OrderMoneyAt money(*this, stamp);
      orders_.paid_between_groups(stamp, body.credit_account_id.value, payer, id, money);
    }
    return {.code = ResultCode::ok, .id = id.value};
  }();
  channels_.record(from, body.channel_number, outcome.code);
  return outcome;
}

// Step 3, back in the sending group: post the hold if the other group credited, void
// it if it refused. Settling again answers how it settled.
CommandResult Ledger::settle(Stamp stamp, const Command& command) noexcept {
  const SettleBody& body = command.settle;
  if (command.flags != 0 || !command.key.empty() || body.reserved0 != 0) {
    return {ResultCode::invalid_command};
  }
  const TransferId id = body.transfer_id;
  if (const u32* slot = pending_slot(id)) {
    const Transfer& hold = pending_[*slot];
    const i64 peer = peer_group(hold.credit_account_id.value);
    if (!hold.on_channel() || peer < 0 ||
        !channels_.is_open(static_cast<u32>(peer), body.channel_number, id.value) ||
        body.delivery == ResultCode::stale_delivery) {
      // Not this channel's open transfer, or an answer that cannot come while it is
      // open: change nothing.
      return {ResultCode::invalid_command};
    }
    channels_.settle(static_cast<u32>(peer), body.channel_number);
    if (body.delivery == ResultCode::ok) {
      close_pending<false>(*slot, TransferStatus::posted, hold.delivery_amount(), stamp);
    } else {
      // A refund the payer's group refused comes back to the merchant: the order no
      // longer counts it (if the order is still held; else its record is archived).
      if (const u64 order = hold.refunded_order())
        orders_.refund_returned(stamp, order, hold.amount);
      close_pending<false>(*slot, TransferStatus::voided, 0, stamp, body.delivery);
    }
    return {.code = body.delivery, .id = id.value};
  }
  // Settled before: answer from the record while the recent ring holds it.
  if (const std::optional<Transfer> settled = find_transfer(id)) {
    // (A transfer this group delivered is between groups too, but its credit is here.)
    // (Nor was one voided or expired by hand: only one that was never on the channel.)
    if (!settled->between_groups() || issued_here(settled->credit_account_id.value) ||
        (settled->status != TransferStatus::posted && settled->refused == ResultCode::ok)) {
      return {ResultCode::invalid_command};
    }
    const ResultCode code =
        settled->status == TransferStatus::posted ? ResultCode::ok : settled->refused;
    return {.code = code, .id = id.value};
  }
  return {closed_transfer_code(id) == ResultCode::transfer_not_found
              ? ResultCode::transfer_not_found
              : ResultCode::outcome_expired};
}

// Sets a merchant's limits (or, for owner 0, the group's defaults). A limit below
// what the merchant already uses refuses what would add to it; nothing is taken away.
CommandResult Ledger::set_quota(Stamp stamp, const Command& command) noexcept {
  const SetQuotaBody& body = command.set_quota;
  const bool with_orders = command.flags == kSetQuotaOrders;
  if ((command.flags != 0 && !with_orders) || (!with_orders && body.orders_limit != 0) ||
      body.reserved1 != 0) {
    return {ResultCode::invalid_command};
  }
  const u32 given[kQuotaKinds] = {body.limit[0], body.limit[1], body.limit[2],
                                  with_orders ? body.orders_limit : kQuotaUnchanged};
  QuotaLimits limits;
  for (u32 q = 0; q < kQuotaKinds; ++q) {
    const u32 limit = given[q];
    if (limit > kQuotaMax && limit != kQuotaGroupDefault && limit != kQuotaUnchanged) {
      return {ResultCode::invalid_command};
    }
    limits.limit[q] = limit;
  }
  if (body.owner.value == 0) {
    OwnerQuotas::merge(quotas_.defaults(), limits);
    return {.code = ResultCode::ok};
  }
  OwnerQuota* entry = quota_entry(body.owner.value, stamp.timestamp_ns);
  if (entry == nullptr) return {ResultCode::owners_full};
  OwnerQuotas::merge(entry->limits, limits);
  return {.code = ResultCode::ok, .id = body.owner.value};
}

i64 Ledger::peer_group(u64 id) const noexcept {
  const IdPrefix prefix = id_prefix(id);
  if (prefix.region != config_.prefix.region || prefix.group == config_.prefix.group ||
      prefix.group >= channels_.groups()) {
    return -1;
  }
  return prefix.group;
}

Account* Ledger::clearing_account(u32 group, Currency currency) noexcept {
  return const_cast<Account*>(find_clearing_account(group, currency));
}

const Account* Ledger::find_clearing_account(u32 group, Currency currency) const noexcept {
  const u32* index = clearing_index_.find(clearing_key(group, currency));
  return index == nullptr ? nullptr : &accounts_[*index];
}

Account& Ledger::make_clearing_account(Stamp stamp, u32 group, Currency currency) noexcept {
  PG_ASSERT(account_count_ < config_.accounts_max &&
            clearing_index_.find(clearing_key(group, currency)) == nullptr);
  Command command = Command::make_create_account(MerchantId{}, currency, AccountKind::system);
  const CommandResult made = create_account<false>(stamp, command);
  PG_ASSERT(made.ok());
  const u32 index = static_cast<u32>(id_serial(made.id) - 1);
  Account& account = accounts_[index];
  account.flags = kAccountClearing;
  account.clearing_group = static_cast<u16>(group);
  clearing_index_.insert(clearing_key(group, currency), index);
  return account;
}

Account* Ledger::credit_side(const Transfer& hold) noexcept {
  return const_cast<Account*>(static_cast<const Ledger*>(this)->credit_side(hold));
}

const Account* Ledger::credit_side(const Transfer& hold) const noexcept {
  if (!hold.between_groups()) return account_at(hold.credit_account_id);
  const IdPrefix prefix = id_prefix(hold.credit_account_id.value);
  return find_clearing_account(prefix.group, hold.currency);
}

// Why a transfer id that is no open hold cannot be posted or voided.
ResultCode Ledger::closed_transfer_code(TransferId id) const noexcept {
  if (!issued_here(id.value)) return ResultCode::transfer_not_found;
  const u64 serial = id_serial(id.value);
  if (serial == 0 || serial >= next_transfer_serial_) return ResultCode::transfer_not_found;
  const Transfer& recent = recent_[serial & recent_mask_];
  // Older than the recent window: it was made, and it is no open hold.
  if (recent.id != id) return ResultCode::transfer_not_pending;
  switch (recent.status) {
    case TransferStatus::posted:
      return recent.two_phase() ? ResultCode::pending_transfer_already_posted
                                : ResultCode::transfer_not_pending;
    case TransferStatus::voided:
      return ResultCode::pending_transfer_already_voided;
    case TransferStatus::expired:
      return ResultCode::transfer_expired;
    case TransferStatus::pending:
      break;
  }
  PG_ASSERT(false && "an open hold is always in the pending index");
  return ResultCode::transfer_not_found;
}

// ---------------------------------------------------------------------------
// State changes shared by commands

template <bool kUndo>
void Ledger::close_pending(u32 slot, TransferStatus status, u64 posted_amount, Stamp stamp,
                           ResultCode refused) noexcept {
  const Transfer hold = pending_[slot];
  PG_ASSERT(hold.status == TransferStatus::pending);
  PG_ASSERT(posted_amount <= hold.amount);
  PG_ASSERT((status == TransferStatus::posted) == (posted_amount > 0));
  Account* debit = account_at(hold.debit_account_id);
  Account* credit = credit_side(hold);
  PG_ASSERT(debit != nullptr && credit != nullptr);
  PG_ASSERT(debit->debits_pending >= hold.amount && credit->credits_pending >= hold.amount);

  save_account<kUndo>(*debit);
  save_account<kUndo>(*credit);
  debit->debits_pending -= hold.amount;
  credit->credits_pending -= hold.amount;
  debit->debits_posted += posted_amount;
  credit->credits_posted += posted_amount;
  PG_ASSERT(debit->debits_posted + debit->debits_pending <= kAmountMax);
  PG_ASSERT(credit->credits_posted + credit->credits_pending <= kAmountMax);
  // Capturing at most what was held keeps a restricted account within its credits.
  PG_ASSERT(!debit->restricted() ||
            debit->debits_posted + debit->debits_pending <= debit->credits_posted);
  debit->updated_seq = stamp.sequence;
  credit->updated_seq = stamp.sequence;

  if (hold.two_phase()) quotas_.remove(debit->owner.value, Quota::holds);

  ExpiryQueue::Position position;
  if (expiry_.contains(slot)) position = expiry_.remove(slot);
  const bool erased = pending_index_.erase(hold.id.value);
  PG_ASSERT(erased);
  pending_[slot] = Transfer{};
  free_slots_[free_top_++] = slot;
  if constexpr (kUndo) {
    UndoEntry& undo = undo_[undo_size_++];
    undo.kind = UndoEntry::Kind::pending_closed;
    undo.index = slot;
    undo.position = position;
    undo.transfer = hold;
  }

  if (events_ != nullptr) {
    const LedgerEventKind kind = status == TransferStatus::posted ? LedgerEventKind::pending_posted
                                 : status == TransferStatus::voided
                                     ? LedgerEventKind::pending_voided
                                     : LedgerEventKind::pending_expired;
    LedgerEvent event = event_at(stamp, kind, hold.id.value, hold.currency);
    event.debit_account_id = hold.debit_account_id;
    event.credit_account_id = credit->id;
    event.amount = posted_amount;
    event.released = hold.amount - posted_amount;
    event.debit_balance = debit->balance();
    event.credit_balance = credit->balance();
    events_->append(event);
  }

  // The recent slot still holds this transfer unless newer ones wrapped over it.
  const u64 serial = id_serial(hold.id.value);
  if (recent_[serial & recent_mask_].id == hold.id) {
    Transfer& recent = recent_slot<kUndo>(serial);
    recent.status = status;
    recent.posted_amount = posted_amount;
    recent.refused = refused;
  }
}

template <bool kUndo>
Transfer& Ledger::recent_slot(u64 serial) noexcept {
  const u64 slot = serial & recent_mask_;
  if constexpr (kUndo) {
    UndoEntry& undo = undo_[undo_size_++];
    undo.kind = UndoEntry::Kind::recent_slot;
    undo.index = static_cast<u32>(slot);
    undo.transfer = recent_[slot];
  }
  return recent_[slot];
}

template <bool kUndo>
void Ledger::save_account(const Account& account) noexcept {
  if constexpr (kUndo) {
    PG_ASSERT(undo_size_ < undo_.size());
    UndoEntry& undo = undo_[undo_size_++];
    undo.kind = UndoEntry::Kind::account;
    undo.index = static_cast<u32>(id_serial(account.id.value) - 1);
    undo.account = account;
  }
}

void Ledger::prefetch(const Command& command, Lookahead& ahead) const noexcept {
  if (!command.key.empty()) keys(command.key_lane).prefetch(command.key);
  if (command.kind == CommandKind::transfer) {
    if (const Account* debit = account_at(command.transfer.debit_account_id)) {
      prefetch_for_write(debit);
    }
    if (const Account* credit = account_at(command.transfer.credit_account_id)) {
      prefetch_for_write(credit);
    }
    // What a new transfer writes is known before it runs: the next entry of the
    // recent ring and, for a hold, the next free pool slot and the index entry after
    // the last hold's. Fresh lines each time, so each would otherwise be a miss.
    prefetch_for_write(&recent_[ahead.serial & recent_mask_]);
    if ((command.flags & kTransferPending) != 0) {
      pending_index_.prefetch(make_id(config_.prefix, ahead.serial), /*for_write=*/true);
      if (ahead.holds < free_top_)
        prefetch_for_write(&pending_[free_slots_[free_top_ - 1 - ahead.holds]]);
      ++ahead.holds;
    }
    ++ahead.serial;
  } else if (command.kind == CommandKind::post_pending ||
             command.kind == CommandKind::void_pending) {
    pending_index_.prefetch(command.pending.transfer_id.value);
  }
}

Account* Ledger::account_at(AccountId id) noexcept {
  return const_cast<Account*>(static_cast<const Ledger*>(this)->account_at(id));
}

const Account* Ledger::account_at(AccountId id) const noexcept {
  if (!issued_here(id.value)) return nullptr;
  const u64 serial = id_serial(id.value);
  if (serial == 0 || serial > account_count_) return nullptr;
  return &accounts_[serial - 1];
}

template CommandResult Ledger::execute<false>(Stamp, const Command&) noexcept;
template CommandResult Ledger::execute<true>(Stamp, const Command&) noexcept;

}  // namespace paygate
