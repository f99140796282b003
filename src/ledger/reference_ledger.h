// A deliberately simple ledger for the model test: the rules of docs/LEDGER.md written
// as plainly as possible, with std::map and whole-state copies, sharing no code with
// ledger.cc beyond the Command and result types. If the two ever disagree, one of
// them is wrong.
#pragma once

#include <bit>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "base/ids.h"
#include "ledger/command.h"
#include "ledger/ledger.h"

namespace paygate {

class ReferenceLedger {
 public:
  struct Acc {
    u64 id = 0;
    u64 owner = 0;
    Currency currency;
    AccountKind kind = AccountKind::user;
    u8 flags = 0;
    u64 debits_pending = 0, debits_posted = 0, credits_pending = 0, credits_posted = 0;
    u64 updated_seq = 0;
    bool may_go_negative() const {
      return kind == AccountKind::system || (flags & kAccountAllowNegative) != 0;
    }
  };
  struct Trf {
    u64 id = 0, debit = 0, credit = 0, amount = 0, posted_amount = 0;
    u64 created_at_ns = 0, expires_at_ns = 0;
    Currency currency;
    TransferStatus status = TransferStatus::posted;
    u8 flags = 0;
  };

  explicit ReferenceLedger(const LedgerConfig& config)
      : config_(config),
        recent_window_(std::bit_ceil(std::max<u32>(config.recent_transfers_max, 1))) {}

  CommandResult apply(Stamp stamp, const Command& command) {
    move_clock(stamp);
    return apply_keyed(stamp, command);
  }

  void apply_batch(Stamp stamp, std::span<const Command> commands,
                   std::span<CommandResult> results) {
    move_clock(stamp);
    // Command i runs at sequence stamp.sequence + i. A claim that does not hold
    // answers its code for the commands it covers, which do nothing.
    for (std::size_t i = 0; i < commands.size(); ++i) {
      results[i] = apply_keyed(Stamp{stamp.sequence + i, stamp.timestamp_ns}, commands[i]);
      if (commands[i].kind != CommandKind::claim || results[i].code == ResultCode::ok) continue;
      const std::size_t last =
          std::min<std::size_t>(i + commands[i].claim.covers, commands.size() - 1);
      for (std::size_t j = i + 1; j <= last; ++j)
        results[j] = {results[i].code};
      i = last;
    }
  }

  ResultCode apply_atomic(Stamp stamp, std::span<const Command> commands, IdempotencyKey batch_key,
                          std::span<CommandResult> results) {
    move_clock(stamp);
    if (commands.empty()) return ResultCode::batch_empty;
    if (commands.size() > kBatchMax) {
      for (std::size_t i = 0; i < commands.size(); ++i)
        results[i] = {ResultCode::batch_too_large};
      return ResultCode::batch_too_large;
    }
    for (std::size_t i = 0; i < commands.size(); ++i) {
      if (!commands[i].key.empty()) {
        for (std::size_t j = 0; j < commands.size(); ++j)
          results[j] = {ResultCode::atomic_batch_failed};
        results[i] = {ResultCode::idempotency_key_in_atomic_batch};
        return ResultCode::idempotency_key_in_atomic_batch;
      }
    }
    const std::vector<Command> content(commands.begin(), commands.end());
    if (!batch_key.empty()) {
      if (const Remembered* earlier = remembered(batch_key, stamp)) {
        if (earlier->content != content) {
          for (std::size_t i = 0; i < commands.size(); ++i)
            results[i] = {ResultCode::idempotency_key_reused};
          return ResultCode::idempotency_key_reused;
        }
        std::copy(earlier->results.begin(), earlier->results.end(), results.begin());
        return earlier->outcome;
      }
      if (live_keys(client_, config_.idempotency_window_ns, stamp) >=
          config_.idempotency_keys_max) {
        for (std::size_t i = 0; i < commands.size(); ++i)
          results[i] = {ResultCode::idempotency_capacity};
        return ResultCode::idempotency_capacity;
      }
    }
    // The batch's key counts against the merchant its first operation names.
    const u64 batch_owner = batch_key.empty() ? 0 : key_owner(commands[0]);
    if (!batch_key.empty()) {
      if (const ResultCode refused = check_quota(batch_owner, Quota::idempotency_keys, stamp);
          refused != ResultCode::ok) {
        for (std::size_t i = 0; i < commands.size(); ++i)
          results[i] = {refused};
        return refused;
      }
    }
    const State before = state_;
    ResultCode outcome = ResultCode::ok;
    for (std::size_t i = 0; i < commands.size(); ++i) {
      // Quotas are set on their own, never inside an atomic batch.
      results[i] = commands[i].kind == CommandKind::set_quota
                       ? CommandResult{ResultCode::invalid_command}
                       : execute(Stamp{stamp.sequence + i, stamp.timestamp_ns}, commands[i]);
      if (results[i].code != ResultCode::ok) {
        outcome = results[i].code;
        state_ = before;
        for (std::size_t j = 0; j < commands.size(); ++j)
          results[j] = {ResultCode::atomic_batch_failed};
        results[i] = {outcome};
        break;
      }
    }
    if (!batch_key.empty()) {
      remember(batch_key, stamp, content,
               std::vector<CommandResult>(results.begin(), results.begin() + commands.size()),
               outcome, batch_owner);
    }
    return outcome;
  }

  // What the real ledger's find_transfer() must answer.
  std::optional<Trf> find_transfer(u64 id) const {
    const auto it = state_.transfers.find(id);
    if (it == state_.transfers.end()) return std::nullopt;
    if (it->second.status == TransferStatus::pending || in_recent_window(id)) return it->second;
    return std::nullopt;
  }
  const Acc* find_account(u64 id) const {
    const auto it = state_.accounts.find(id);
    return it == state_.accounts.end() ? nullptr : &it->second;
  }

  const std::map<u64, Acc>& accounts() const { return state_.accounts; }
  std::vector<Trf> open_holds() const {
    std::vector<Trf> holds;
    for (const auto& [id, t] : state_.transfers) {
      if (t.status == TransferStatus::pending) holds.push_back(t);
    }
    return holds;
  }
  u64 open_hold_count() const { return state_.open_holds; }
  u64 transfers_made() const { return state_.next_serial - 1; }
  u64 next_serial() const { return state_.next_serial; }
  u64 recent_window() const { return recent_window_; }

  // Keys still inside their window, by lane.
  u64 live_client_keys() {
    return live_keys(client_, config_.idempotency_window_ns, Stamp{0, now_ns_});
  }
  u64 live_signature_keys() {
    return live_keys(signatures_, config_.signature_window_ns, Stamp{0, now_ns_});
  }

  // The invariants, checked the slow way. Empty when they hold.
  std::string broken_invariant() const {
    u128 dp = 0, cp = 0, dpend = 0, cpend = 0, held = 0;
    std::map<u64, u128> held_by, incoming;
    for (const auto& [id, t] : state_.transfers) {
      if (t.status != TransferStatus::pending) continue;
      held += t.amount;
      held_by[t.debit] += t.amount;
      incoming[t.credit] += t.amount;
    }
    for (const auto& [id, a] : state_.accounts) {
      dp += a.debits_posted;
      cp += a.credits_posted;
      dpend += a.debits_pending;
      cpend += a.credits_pending;
      if (!a.may_go_negative() && u128{a.debits_posted} + a.debits_pending > a.credits_posted) {
        return "restricted account below zero";
      }
      if (u128{a.debits_posted} + a.debits_pending > kAmountMax ||
          u128{a.credits_posted} + a.credits_pending > kAmountMax) {
        return "account totals above the limit";
      }
      if (held_by[id] != a.debits_pending || incoming[id] != a.credits_pending) {
        return "account pending counters differ from its holds";
      }
    }
    if (dp != cp) return "posted debits differ from posted credits";
    if (dpend != cpend) return "pending debits differ from pending credits";
    if (dpend != held) return "held differs from the sum of open holds";
    return {};
  }

 private:
  struct State {
    std::map<u64, Acc> accounts;
    std::map<u64, Trf> transfers;            // open holds, and closed transfers still in the window
    std::set<std::pair<u64, u64>> expiring;  // (expires_at_ns, id) of open holds with a timeout
    u64 next_serial = 1;
    u64 open_holds = 0;
    std::map<u64, u64> accounts_of, holds_of;  // by owner (quotas)
  };
  struct Remembered {
    std::vector<Command> content;  // the command(s) with their key cleared
    std::vector<CommandResult> results;
    ResultCode outcome = ResultCode::ok;
    u64 created_at_ns = 0;
    u64 owner = 0;  // whose idempotency_keys quota it counts against
  };
  // Remembered keys of one lane, and the order they were made in.
  struct Keys {
    std::map<std::pair<u64, u64>, Remembered> by_key;
    std::deque<std::pair<std::pair<u64, u64>, u64>> made;  // (key, created_at_ns)
    std::map<u64, u64> of_owner;                           // keys by owner (quotas)

    auto find(std::pair<u64, u64> key) const { return by_key.find(key); }
    auto end() const { return by_key.end(); }
    void put(std::pair<u64, u64> key, Remembered record) {
      made.emplace_back(key, record.created_at_ns);
      ++of_owner[record.owner];
      by_key[key] = std::move(record);
    }
  };

  // Keys still inside the window at `stamp`; those past it are let go first.
  static u64 live_keys(Keys& k, u64 window_ns, Stamp stamp) {
    while (!k.made.empty() && stamp.timestamp_ns - k.made.front().second >= window_ns) {
      const auto it = k.by_key.find(k.made.front().first);
      if (it != k.by_key.end() && it->second.created_at_ns == k.made.front().second) {
        --k.of_owner[it->second.owner];
        k.by_key.erase(it);
      }
      k.made.pop_front();
    }
    return k.by_key.size();
  }

  void move_clock(Stamp stamp) {
    now_ns_ = stamp.timestamp_ns;
    while (!state_.expiring.empty() && state_.expiring.begin()->first <= stamp.timestamp_ns) {
      const u64 id = state_.expiring.begin()->second;
      close(state_.transfers.at(id), TransferStatus::expired, 0, stamp);
    }
  }

  CommandResult apply_keyed(Stamp stamp, const Command& command) {
    if (command.key.empty()) {
      // A claim names a key, or it is malformed.
      if (command.kind == CommandKind::claim) return {ResultCode::invalid_command};
      return execute(stamp, command);
    }
    const auto id = std::make_pair(command.key.lo, command.key.hi);
    if (command.key_lane == KeyLane::signature) {
      if (const ResultCode refused = signature_refusal(id, stamp); refused != ResultCode::ok) {
        return {refused};
      }
      const CommandResult result = execute_claim_or(stamp, command);
      signatures_.put(id, Remembered{{}, {}, result.code, stamp.timestamp_ns});
      return result;
    }
    if (command.key_lane != KeyLane::client) return {ResultCode::invalid_command};
    Command content = command;
    content.key = IdempotencyKey{};
    if (signed_claim(command)) {
      // The request's signature, before its key: a replay is refused whatever key it
      // carries; the signature is not the request's content.
      const auto signature = std::make_pair(command.claim.signature.lo, command.claim.signature.hi);
      if (const ResultCode refused = signature_refusal(signature, stamp);
          refused != ResultCode::ok) {
        return {refused};
      }
      signatures_.put(signature, Remembered{{}, {}, ResultCode::ok, stamp.timestamp_ns});
      content.flags = 0;
      content.claim.signature = IdempotencyKey{};
    }
    if (const Remembered* earlier = remembered(command.key, stamp)) {
      if (earlier->content != std::vector<Command>{content})
        return {ResultCode::idempotency_key_reused};
      return earlier->results[0];
    }
    // A key is never forgotten inside its window: with no room, the command is refused.
    if (live_keys(client_, config_.idempotency_window_ns, stamp) >= config_.idempotency_keys_max) {
      return {ResultCode::idempotency_capacity};
    }
    const u64 owner = key_owner(command);
    if (const ResultCode refused = check_quota(owner, Quota::idempotency_keys, stamp);
        refused != ResultCode::ok) {
      return {refused};
    }
    const CommandResult result = execute_claim_or(stamp, command);
    remember(command.key, stamp, {content}, {result}, result.code, owner);
    return result;
  }
  // A signature seen again inside its window is a replay, whatever it carries; a new
  // one needs room.
  ResultCode signature_refusal(std::pair<u64, u64> signature, Stamp stamp) {
    const auto it = signatures_.find(signature);
    if (it != signatures_.end() &&
        stamp.timestamp_ns - it->second.created_at_ns < config_.signature_window_ns) {
      return ResultCode::signature_replayed;
    }
    if (live_keys(signatures_, config_.signature_window_ns, stamp) >=
        config_.signature_capacity()) {
      return ResultCode::idempotency_capacity;
    }
    return ResultCode::ok;
  }
  // A keyed claim holds once its key is taken; anything else runs.
  CommandResult execute_claim_or(Stamp stamp, const Command& command) {
    if (command.kind != CommandKind::claim) return execute(stamp, command);
    return {command.flags == 0 || signed_claim(command) ? ResultCode::ok
                                                        : ResultCode::invalid_command};
  }
  static bool signed_claim(const Command& c) {
    return c.kind == CommandKind::claim && c.key_lane == KeyLane::client &&
           c.flags == kClaimSignature && !c.claim.signature.empty();
  }

  const Remembered* remembered(IdempotencyKey key, Stamp stamp) const {
    const auto it = client_.find(std::make_pair(key.lo, key.hi));
    if (it == client_.end()) return nullptr;
    if (stamp.timestamp_ns - it->second.created_at_ns >= config_.idempotency_window_ns)
      return nullptr;
    return &it->second;
  }

  void remember(IdempotencyKey key, Stamp stamp, std::vector<Command> content,
                std::vector<CommandResult> results, ResultCode outcome, u64 owner) {
    client_.put(std::make_pair(key.lo, key.hi), Remembered{std::move(content), std::move(results),
                                                           outcome, stamp.timestamp_ns, owner});
  }

  // Quotas, counted from scratch each time they are asked about.
  u64 key_owner(const Command& c) const {
    const auto debit_owner = [&](u64 account) -> u64 {
      const Acc* a = find_account(account);
      return a == nullptr ? 0 : a->owner;
    };
    switch (c.kind) {
      case CommandKind::claim:
        return c.claim.owner.value;
      case CommandKind::create_account:
        return c.create_account.owner.value;
      case CommandKind::transfer:
        return debit_owner(c.transfer.debit_account_id.value);
      case CommandKind::post_pending:
      case CommandKind::void_pending: {
        const std::optional<Trf> t = find_transfer(c.pending.transfer_id.value);
        return t ? debit_owner(t->debit) : 0;
      }
      default:
        return 0;
    }
  }
  static u64 count_of(const std::map<u64, u64>& counts, u64 owner) {
    const auto it = counts.find(owner);
    return it == counts.end() ? 0 : it->second;
  }
  u64 used(u64 owner, Quota quota, Stamp stamp) {
    switch (quota) {
      case Quota::accounts:
        return count_of(state_.accounts_of, owner);
      case Quota::holds:
        return count_of(state_.holds_of, owner);
      case Quota::idempotency_keys:
        live_keys(client_, config_.idempotency_window_ns, stamp);
        return count_of(client_.of_owner, owner);
      case Quota::orders:  // the reference makes no orders (order_book_test models them)
        return 0;
    }
    return 0;
  }
  // Owners counted or limited now: those whose entry the real ledger cannot reuse.
  std::set<u64> owners_in_use(Stamp stamp) {
    std::set<u64> owners;
    for (const auto& [owner, limits] : limits_)
      if (limits != QuotaLimits{}) owners.insert(owner);
    live_keys(client_, config_.idempotency_window_ns, stamp);
    for (const auto* counts : {&state_.accounts_of, &state_.holds_of, &client_.of_owner}) {
      for (const auto& [owner, n] : *counts)
        if (owner != 0 && n > 0) owners.insert(owner);
    }
    return owners;
  }
  ResultCode check_quota(u64 owner, Quota quota, Stamp stamp) {
    if (owner == 0) return ResultCode::ok;
    const std::set<u64> in_use = owners_in_use(stamp);
    if (!in_use.contains(owner) && in_use.size() >= config_.owners_max) {
      return ResultCode::owners_full;
    }
    const u32 q = static_cast<u32>(quota);
    const auto own = limits_.find(owner);
    u32 limit = own == limits_.end() ? kQuotaGroupDefault : own->second.limit[q];
    if (limit == kQuotaGroupDefault) limit = defaults_.limit[q];
    if (limit != kQuotaGroupDefault && used(owner, quota, stamp) >= limit) {
      return quota_refusal(quota);
    }
    return ResultCode::ok;
  }
  CommandResult set_quota(Stamp stamp, const Command& c) {
    const SetQuotaBody& b = c.set_quota;
    const bool with_orders = c.flags == kSetQuotaOrders;
    if ((c.flags != 0 && !with_orders) || (!with_orders && b.orders_limit != 0) ||
        b.reserved1 != 0) {
      return {ResultCode::invalid_command};
    }
    const u32 given[kQuotaKinds] = {b.limit[0], b.limit[1], b.limit[2],
                                    with_orders ? b.orders_limit : kQuotaUnchanged};
    for (const u32 limit : given) {
      if (limit > kQuotaMax && limit != kQuotaGroupDefault && limit != kQuotaUnchanged)
        return {ResultCode::invalid_command};
    }
    const u64 owner = b.owner.value;
    if (owner != 0) {
      const std::set<u64> in_use = owners_in_use(stamp);
      if (!in_use.contains(owner) && in_use.size() >= config_.owners_max)
        return {ResultCode::owners_full};
    }
    QuotaLimits& into = owner == 0 ? defaults_ : limits_[owner];
    for (u32 q = 0; q < kQuotaKinds; ++q)
      if (given[q] != kQuotaUnchanged) into.limit[q] = given[q];
    return {.code = ResultCode::ok, .id = owner};
  }

  CommandResult execute(Stamp stamp, const Command& c) {
    CommandResult result;
    switch (c.kind) {
      case CommandKind::create_account:
        result = create_account(stamp, c);
        break;
      case CommandKind::transfer:
        result = transfer(stamp, c);
        break;
      case CommandKind::post_pending:
        result = post_or_void(stamp, c, true);
        break;
      case CommandKind::void_pending:
        result = post_or_void(stamp, c, false);
        break;
      case CommandKind::tick:
        result = {ResultCode::ok};
        break;
      case CommandKind::set_quota:
        result = set_quota(stamp, c);
        break;
      default:
        result = {ResultCode::invalid_command};
        break;
    }
    forget_old_transfers();
    return result;
  }

  CommandResult create_account(Stamp stamp, const Command& c) {
    const auto& b = c.create_account;
    if ((c.flags & ~kAccountAllowNegative) != 0) return {ResultCode::invalid_command};
    if (!b.currency.valid()) return {ResultCode::invalid_currency};
    if (b.kind != AccountKind::merchant && b.kind != AccountKind::user &&
        b.kind != AccountKind::system) {
      return {ResultCode::invalid_account_kind};
    }
    if (state_.accounts.size() == config_.accounts_max) return {ResultCode::accounts_full};
    if (const ResultCode refused = check_quota(b.owner.value, Quota::accounts, stamp);
        refused != ResultCode::ok) {
      return {refused};
    }
    Acc a;
    a.id = make_id(config_.prefix, state_.accounts.size() + 1);
    a.owner = b.owner.value;
    ++state_.accounts_of[a.owner];
    a.currency = b.currency;
    a.kind = b.kind;
    a.flags = c.flags;
    a.updated_seq = stamp.sequence;
    state_.accounts[a.id] = a;
    return {.code = ResultCode::ok, .id = a.id};
  }

  CommandResult transfer(Stamp stamp, const Command& c) {
    const auto& b = c.transfer;
    const bool hold = c.flags == kTransferPending;
    if (c.flags != 0 && c.flags != kTransferPending) return {ResultCode::invalid_command};
    if (!hold && b.timeout_s != 0) return {ResultCode::invalid_command};
    if (b.amount == 0 || b.amount > kAmountMax) return {ResultCode::invalid_amount};
    if (!b.currency.valid()) return {ResultCode::invalid_currency};
    if (b.debit_account_id == b.credit_account_id) return {ResultCode::same_account};
    auto debit = state_.accounts.find(b.debit_account_id.value);
    if (debit == state_.accounts.end()) return {ResultCode::debit_account_not_found};
    auto credit = state_.accounts.find(b.credit_account_id.value);
    if (credit == state_.accounts.end()) return {ResultCode::credit_account_not_found};
    Acc& d = debit->second;
    Acc& k = credit->second;
    if (d.currency != b.currency || k.currency != b.currency)
      return {ResultCode::currency_mismatch};
    if (hold && state_.open_holds == config_.pending_max)
      return {ResultCode::pending_transfers_full};
    if (hold && d.owner != 0) {
      // Its owner has an entry already (its accounts count): never owners_full.
      if (const ResultCode refused = check_quota(d.owner, Quota::holds, stamp);
          refused != ResultCode::ok) {
        return {refused};
      }
    }
    if (state_.next_serial > kSerialMax) return {ResultCode::ids_exhausted};
    if (!d.may_go_negative() &&
        u128{d.debits_posted} + d.debits_pending + b.amount > d.credits_posted) {
      return {ResultCode::insufficient_funds};
    }
    // Each side's total, posted plus pending, stays within the limit.
    if (u128{d.debits_posted} + d.debits_pending + b.amount > kAmountMax ||
        u128{k.credits_posted} + k.credits_pending + b.amount > kAmountMax) {
      return {ResultCode::overflow};
    }

    Trf t;
    t.id = make_id(config_.prefix, state_.next_serial++);
    t.debit = d.id;
    t.credit = k.id;
    t.amount = b.amount;
    t.created_at_ns = stamp.timestamp_ns;
    t.currency = b.currency;
    t.flags = c.flags;
    if (hold) {
      d.debits_pending += b.amount;
      k.credits_pending += b.amount;
      t.status = TransferStatus::pending;
      ++state_.open_holds;
      ++state_.holds_of[d.owner];
      if (b.timeout_s != 0) {
        t.expires_at_ns = stamp.timestamp_ns + u64{b.timeout_s} * kNanosPerSecond;
        state_.expiring.insert({t.expires_at_ns, t.id});
      }
    } else {
      d.debits_posted += b.amount;
      k.credits_posted += b.amount;
      t.status = TransferStatus::posted;
    }
    d.updated_seq = stamp.sequence;
    k.updated_seq = stamp.sequence;
    state_.transfers[t.id] = t;
    return {.code = ResultCode::ok, .id = t.id};
  }

  CommandResult post_or_void(Stamp stamp, const Command& c, bool post) {
    const u64 id = c.pending.transfer_id.value;
    if (c.flags != 0) return {ResultCode::invalid_command};
    if (!post && c.pending.amount != 0) return {ResultCode::invalid_command};
    const bool issued = id_prefix_bits(id) == config_.prefix.bits() && id_serial(id) != 0 &&
                        id_serial(id) < state_.next_serial;
    if (!issued) return {ResultCode::transfer_not_found};
    const auto it = state_.transfers.find(id);
    if (it == state_.transfers.end()) return {ResultCode::transfer_not_pending};
    Trf& t = it->second;
    if (t.status != TransferStatus::pending) {
      if (!in_recent_window(id)) return {ResultCode::transfer_not_pending};
      if (t.status == TransferStatus::voided) return {ResultCode::pending_transfer_already_voided};
      if (t.status == TransferStatus::expired) return {ResultCode::transfer_expired};
      return {(t.flags & kTransferPending) ? ResultCode::pending_transfer_already_posted
                                           : ResultCode::transfer_not_pending};
    }
    if (!post) {
      close(t, TransferStatus::voided, 0, stamp);
      return {.code = ResultCode::ok, .id = id};
    }
    const u64 amount = c.pending.amount == 0 ? t.amount : c.pending.amount;
    if (amount > t.amount) return {ResultCode::exceeds_pending_amount};
    close(t, TransferStatus::posted, amount, stamp);
    return {.code = ResultCode::ok, .id = id};
  }

  void close(Trf& t, TransferStatus status, u64 posted_amount, Stamp stamp) {
    Acc& d = state_.accounts.at(t.debit);
    Acc& k = state_.accounts.at(t.credit);
    d.debits_pending -= t.amount;
    k.credits_pending -= t.amount;
    d.debits_posted += posted_amount;
    k.credits_posted += posted_amount;
    d.updated_seq = stamp.sequence;
    k.updated_seq = stamp.sequence;
    if (t.expires_at_ns != 0) state_.expiring.erase({t.expires_at_ns, t.id});
    t.status = status;
    t.posted_amount = posted_amount;
    --state_.open_holds;
    --state_.holds_of[d.owner];
  }

  bool in_recent_window(u64 id) const {
    return id_serial(id) + recent_window_ >= state_.next_serial;
  }

  // Closed transfers older than the window are the read side's business: drop them
  // now and then so the reference stays small.
  void forget_old_transfers() {
    if (state_.transfers.size() < 2 * (recent_window_ + config_.pending_max)) return;
    for (auto it = state_.transfers.begin(); it != state_.transfers.end();) {
      const bool closed = it->second.status != TransferStatus::pending;
      it = closed && !in_recent_window(it->first) ? state_.transfers.erase(it) : std::next(it);
    }
  }

  LedgerConfig config_;
  u64 recent_window_;
  State state_;
  u64 now_ns_ = 0;
  std::map<u64, QuotaLimits> limits_;  // merchants' own quota limits
  QuotaLimits defaults_;               // the group's (kQuotaGroupDefault: none)
  Keys client_;                        // KeyLane::client
  Keys signatures_;                    // KeyLane::signature
};

}  // namespace paygate
