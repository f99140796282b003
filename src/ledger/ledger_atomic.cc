// Atomic batches: all of their commands or none (Ledger::apply_atomic), the undo that
// puts a failed one back, and the answers a retry rebuilds from the batch's record.
#include "ledger/ledger.h"

namespace paygate {
namespace {

u64 content_hash_of(std::span<const Command> commands) noexcept {
  Hasher hasher(0x41544F4D4943ull);  // "ATOMIC"
  hasher.add(commands.size());
  for (const Command& command : commands)
    hasher.add(content_hash(command));
  return hasher.value();
}

}  // namespace

ResultCode Ledger::apply_atomic(Stamp first, std::span<const Command> commands,
                                const IdempotencyKey& batch_key,
                                std::span<CommandResult> results) noexcept {
  PG_ASSERT(results.size() >= commands.size());
  if (commands.empty()) return ResultCode::batch_empty;  // no sequence used, nothing moves
  advance(first);
  finish(first, commands.size());
  const Stamp stamp = first;
  const auto fail_all = [&](ResultCode code) {
    for (std::size_t i = 0; i < commands.size(); ++i)
      results[i] = CommandResult{code};
    return code;
  };
  if (commands.size() > kBatchMax) return fail_all(ResultCode::batch_too_large);
  for (std::size_t i = 0; i < commands.size(); ++i) {
    if (!commands[i].key.empty()) {
      fail_all(ResultCode::atomic_batch_failed);
      results[i] = CommandResult{ResultCode::idempotency_key_in_atomic_batch};
      return ResultCode::idempotency_key_in_atomic_batch;
    }
  }

  u64 content = 0;
  // The batch's key counts against the merchant its first operation names.
  const u64 key_owner_of_batch = batch_key.empty() ? 0 : key_owner(commands[0]);
  if (!batch_key.empty()) {
    content = content_hash_of(commands);
    if (const IdempotencyRecord* record = idempotency_.find(batch_key, stamp.timestamp_ns)) {
      if (record->content_hash != content) return fail_all(ResultCode::idempotency_key_reused);
      replay_atomic_results(*record, commands, results);
      return record->code;
    }
    if (!idempotency_.has_room(stamp.timestamp_ns)) {
      ++key_capacity_refusals_;
      return fail_all(ResultCode::idempotency_capacity);
    }
    if (const ResultCode refused = check_key_quota(key_owner_of_batch, stamp.timestamp_ns);
        refused != ResultCode::ok) {
      return fail_all(refused);
    }
  }

  const u32 account_count_before = account_count_;
  const u64 next_serial_before = next_transfer_serial_;
  const u64 events_before = events_ != nullptr ? events_->mark() : 0;
  undo_size_ = 0;
  ResultCode outcome = ResultCode::ok;
  u16 failed_index = 0;
  for (std::size_t i = 0; i < commands.size(); ++i) {
    results[i] = execute<true>(nth(first, i), commands[i]);
    if (!results[i].ok()) {
      outcome = results[i].code;
      failed_index = static_cast<u16>(i);
      rollback(account_count_before, next_serial_before);
      if (events_ != nullptr) events_->rewind(events_before);
      fail_all(ResultCode::atomic_batch_failed);
      results[i] = CommandResult{outcome};
      break;
    }
  }
  undo_size_ = 0;

  if (!batch_key.empty()) {
    idempotency_.insert(IdempotencyRecord{
        .key = batch_key,
        .content_hash = content,
        .created_at_ns = stamp.timestamp_ns,
        .result_id = make_id(config_.prefix, next_serial_before),
        .first_account_id = make_id(config_.prefix, u64{account_count_before} + 1),
        .code = outcome,
        .failed_index = failed_index,
        .owner = key_owner_of_batch,
    });
    quotas_.add(key_owner_of_batch, Quota::idempotency_keys);
  }
  return outcome;
}

void Ledger::rollback(u32 account_count, u64 next_transfer_serial) noexcept {
  // Newest first, so each entry restores what the one before it saw.
  while (undo_size_ > 0) {
    const UndoEntry& undo = undo_[--undo_size_];
    switch (undo.kind) {
      case UndoEntry::Kind::account:
        accounts_[undo.index] = undo.account;
        break;
      case UndoEntry::Kind::recent_slot:
        recent_[undo.index] = undo.transfer;
        break;
      case UndoEntry::Kind::pending_created: {
        const Transfer& hold = pending_[undo.index];
        if (hold.two_phase()) quotas_.remove(owner_of(hold.debit_account_id), Quota::holds);
        if (expiry_.contains(undo.index)) expiry_.remove(undo.index);
        const bool erased = pending_index_.erase(hold.id.value);
        PG_ASSERT(erased);
        pending_[undo.index] = Transfer{};
        free_slots_[free_top_++] = undo.index;
        break;
      }
      case UndoEntry::Kind::pending_closed: {
        // The slot was pushed on the free stack when the hold closed; it is on top.
        PG_ASSERT(free_top_ > 0 && free_slots_[free_top_ - 1] == undo.index);
        --free_top_;
        pending_[undo.index] = undo.transfer;
        pending_index_.insert(undo.transfer.id.value, undo.index);
        if (undo.transfer.two_phase()) {
          quotas_.add(owner_of(undo.transfer.debit_account_id), Quota::holds);
        }
        if (undo.transfer.expires_at_ns != 0) {
          expiry_.restore(undo.index, undo.transfer.expires_at_ns, undo.transfer.id.value,
                          undo.position);
        }
        break;
      }
    }
  }
  for (u32 i = account_count; i < account_count_; ++i) {
    quotas_.remove(accounts_[i].owner.value, Quota::accounts);
    accounts_[i] = Account{};
  }
  account_count_ = account_count;
  next_transfer_serial_ = next_transfer_serial;
}

void Ledger::replay_atomic_results(const IdempotencyRecord& record,
                                   std::span<const Command> commands,
                                   std::span<CommandResult> results) const noexcept {
  if (record.code != ResultCode::ok) {
    for (std::size_t i = 0; i < commands.size(); ++i) {
      results[i] = CommandResult{ResultCode::atomic_batch_failed};
    }
    results[record.failed_index] = CommandResult{record.code};
    return;
  }
  // A batch that succeeded made its accounts and transfers with consecutive serials.
  u64 account_serial = id_serial(record.first_account_id);
  u64 transfer_serial = id_serial(record.result_id);
  for (std::size_t i = 0; i < commands.size(); ++i) {
    const Command& command = commands[i];
    u64 id = 0;
    switch (command.kind) {
      case CommandKind::create_account:
        id = make_id(config_.prefix, account_serial++);
        break;
      case CommandKind::transfer:
        id = make_id(config_.prefix, transfer_serial++);
        break;
      case CommandKind::post_pending:
      case CommandKind::void_pending:
        id = command.pending.transfer_id.value;
        break;
      case CommandKind::deliver:
      case CommandKind::settle:  // never in an atomic batch
      case CommandKind::claim:   // never in one either
      case CommandKind::set_quota:
      case CommandKind::tick:
      case CommandKind::order_create:  // orders: never in an atomic batch
      case CommandKind::order_checkout:
      case CommandKind::order_result:
      case CommandKind::order_cancel:
      case CommandKind::order_refund:
      case CommandKind::order_resolve:
      case CommandKind::order_pay:
        break;
    }
    results[i] = CommandResult{.code = ResultCode::ok, .id = id};
  }
}

}  // namespace paygate
