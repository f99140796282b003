#include "orders/order_book.h"

#include <cstring>

#include <algorithm>

#include <fmt/format.h>

namespace paygate {

std::string_view name(OrderStatus status) noexcept {
  switch (status) {
    case OrderStatus::created:
      return "created";
    case OrderStatus::processing:
      return "processing";
    case OrderStatus::success:
      return "success";
    case OrderStatus::failed:
      return "failed";
    case OrderStatus::timeout:
      return "timeout";
    case OrderStatus::cancelled:
      return "cancelled";
    case OrderStatus::rejected_risk:
      return "rejected_risk";
    case OrderStatus::exception_checkout:
      return "exception_checkout";
  }
  return "unknown";
}

std::string_view name(RiskRule rule) noexcept {
  switch (rule) {
    case RiskRule::none:
      return "none";
    case RiskRule::max_amount:
      return "max_amount";
    case RiskRule::payer_velocity:
      return "max_checkouts_per_payer_per_minute";
    case RiskRule::blocked_payer:
      return "blocked_payers";
  }
  return "unknown";
}

std::string_view name(OrderMethod method) noexcept {
  switch (method) {
    case OrderMethod::none:
      return "none";
    case OrderMethod::wallet:
      return "wallet";
    case OrderMethod::balance:
      return "balance";
    case OrderMethod::external:
      return "external";
  }
  return "unknown";
}

OrderBook::OrderBook(const OrderConfig& config)
    : config_(config),
      orders_(std::max<u32>(config.orders_max, 1)),
      free_slots_(std::max<u32>(config.orders_max, 1)),
      index_(std::max<u32>(config.orders_max, 1)),
      refs_(std::max<u32>(config.orders_max, 1)),
      expiry_(std::max<u32>(config.orders_max, 1)),
      retention_(std::max<u32>(config.orders_max, 1)) {
  config_.orders_max = std::max<u32>(config.orders_max, 1);
  for (u32 i = 0; i < config_.orders_max; ++i)
    free_slots_[i] = config_.orders_max - 1 - i;
  free_top_ = config_.orders_max;
}

// ---------------------------------------------------------------------------
// Time

void OrderBook::advance(Stamp stamp, OrderMoney& money) noexcept {
  // Bounded: each pass finishes one open order.
  while (!expiry_.empty() && expiry_.top().expires_at_ns <= stamp.timestamp_ns) {
    const u32 slot = expiry_.top().slot;
    finish(slot, OrderStatus::timeout, stamp, money);
    changed(orders_[slot], stamp);
  }
  while (!retention_.empty() && retention_.top().expires_at_ns <= stamp.timestamp_ns) {
    release(retention_.top().slot, stamp, money);
  }
}

void OrderBook::finish(u32 slot, OrderStatus status, Stamp stamp, OrderMoney& money) noexcept {
  Order& order = orders_[slot];
  PG_ASSERT(!is_final(order.status) && is_final(status));
  if (order.method == OrderMethod::balance && order.status == OrderStatus::processing) {
    // The merchant's held money goes to the provider, or back: posting a hold cannot fail.
    const bool post = status == OrderStatus::success;
    money.close_hold(order.hold_id, post);
    if (post) order.transfer_id = order.hold_id;
  }
  expiry_.remove(slot);
  order.status = status;
  retain(slot, stamp);
}

void OrderBook::retain(u32 slot, Stamp stamp) noexcept {
  Order& order = orders_[slot];
  order.finished_at_ns = stamp.timestamp_ns;
  order.retain_serial = next_retain_serial_++;
  // One lane: every order is held equally long, so they leave in the order they came.
  retention_.push(slot, order.finished_at_ns + config_.final_retained_ns, order.retain_serial, 1);
}

void OrderBook::release(u32 slot, Stamp stamp, OrderMoney& money) noexcept {
  retention_.remove(slot);
  Order& order = orders_[slot];
  if (observer_ != nullptr) observer_->order_left(order, stamp);
  money.order_left(order.merchant);
  if (order.ref_hash != 0) refs_.erase(ref_key(order.merchant, order.ref_hash));
  index_.erase(order.id);
  order = Order{};
  free_slots_[free_top_++] = slot;
  --count_;
}

// Full: refused (orders_full). A final order is never let go before its retention ends,
// so that its refunds, its late results and its merchant_ref stay answerable.
u32 OrderBook::take_slot(Stamp) noexcept {
  if (free_top_ == 0) return kNoSlot;
  return free_slots_[--free_top_];
}

// ---------------------------------------------------------------------------
// Commands

CommandResult OrderBook::apply(Stamp stamp, const Command& command, OrderMoney& money) noexcept {
  if (observer_ == nullptr) return dispatch(stamp, command, money);
  // The observer hears of the order the command names only if the command changed it.
  const bool create = command.kind == CommandKind::order_create;
  const Order* held = create ? nullptr : find(command.order.order_id);
  const Order before = held != nullptr ? *held : Order{};
  const CommandResult result = dispatch(stamp, command, money);
  const Order* after = create ? (result.ok() ? find(result.id) : nullptr) : held;
  if (after != nullptr && std::memcmp(after, &before, sizeof(Order)) != 0)
    changed(*after, stamp, create);
  return result;
}

CommandResult OrderBook::dispatch(Stamp stamp, const Command& command, OrderMoney& money) noexcept {
  const u8 flags_allowed = command.kind == CommandKind::order_create ? kOrderCallbackUrl : 0;
  if ((command.flags & ~flags_allowed) != 0) return {ResultCode::invalid_command};
  if (command.kind != CommandKind::order_create) {
    for (const u8 byte : command.order.reserved0) {
      if (byte != 0) return {ResultCode::invalid_command};
    }
  }
  switch (command.kind) {
    case CommandKind::order_create:
      return create(stamp, command, money);
    case CommandKind::order_checkout:
      return checkout(stamp, command, money);
    case CommandKind::order_result:
      return result(stamp, command, money);
    case CommandKind::order_cancel:
      return cancel(stamp, command, money);
    case CommandKind::order_refund:
      return refund(command, money);
    case CommandKind::order_resolve:
      return resolve(stamp, command, money);
    default:
      return {ResultCode::invalid_command};
  }
}

CommandResult OrderBook::create(Stamp stamp, const Command& command, OrderMoney& money) noexcept {
  const OrderCreateBody& body = command.order_create;
  if (body.amount == 0 || body.amount > kAmountMax) return {ResultCode::invalid_amount};
  if (!body.currency.valid()) return {ResultCode::invalid_currency};
  if (body.expires_in_s == 0 || body.expires_in_s > kOrderExpiresInMaxS) {
    return {ResultCode::invalid_command};
  }
  const Account* account = money.account(body.account);
  // Orders pay a merchant's own account (not a ledger-made clearing one).
  if (account == nullptr || account->owner.value == 0 || (account->flags & kAccountClearing)) {
    return {ResultCode::account_not_found};
  }
  if (account->currency != body.currency) return {ResultCode::currency_mismatch};
  const u64 merchant = account->owner.value;
  if (body.ref_hash != 0) {
    if (const u64* existing = refs_.find(ref_key(merchant, body.ref_hash))) {
      return CommandResult{.code = ResultCode::duplicate_order, .id = *existing};
    }
  }
  if (next_serial_ > kSerialMax) return {ResultCode::ids_exhausted};
  // The merchant's share first (a merchant at its share cannot fill the table for the
  // others), after every check of the order itself (a duplicate merchant_ref is named).
  if (!money.order_room(merchant)) return {ResultCode::quota_orders};
  const u32 slot = take_slot(stamp);
  if (slot == kNoSlot) return {ResultCode::orders_full};
  money.order_taken(merchant);
  Order& order = orders_[slot];
  order = Order{};
  order.id = make_id(config_.prefix, next_serial_++);
  order.merchant = merchant;
  order.account = body.account;
  order.amount = body.amount;
  order.currency = body.currency;
  order.created_at_ns = stamp.timestamp_ns;
  order.expires_in_s = body.expires_in_s;
  order.expires_at_ns = stamp.timestamp_ns + u64{body.expires_in_s} * kNanosPerSecond;
  order.ref_hash = body.ref_hash;
  order.has_callback_url = (command.flags & kOrderCallbackUrl) != 0 ? 1 : 0;
  index_.insert(order.id, slot);
  if (body.ref_hash != 0) refs_.insert(ref_key(merchant, body.ref_hash), order.id);
  expiry_.push(slot, order.expires_at_ns, order.id, body.expires_in_s);
  ++count_;
  // Its creation time rides in channel_number (whole seconds fit a u32 until 2106), so
  // that the answer, and a keyed retry's, can show created_at and expires_at.
  return CommandResult{.code = ResultCode::ok,
                       .channel_number = static_cast<u32>(stamp.timestamp_ns / kNanosPerSecond),
                       .id = order.id};
}

CommandResult OrderBook::checkout(Stamp stamp, const Command& command, OrderMoney& money) noexcept {
  const OrderBody& body = command.order;
  const u32* slot = slot_of(body.order_id);
  if (slot == nullptr) return {ResultCode::order_not_found};
  Order& order = orders_[*slot];
  if (order.status != OrderStatus::created) return refuse_state(order);
  const auto method = static_cast<OrderMethod>(body.action & kCheckoutMethodMask);
  const auto rule = static_cast<RiskRule>(body.action >> kCheckoutRiskShift);
  if (method == OrderMethod::none || method > OrderMethod::external ||
      rule > RiskRule::blocked_payer) {
    return {ResultCode::invalid_command};
  }
  if (rule != RiskRule::none) {
    // Refused by the merchant's risk rules: recorded, final, nothing moves.
    order.risk_rule = rule;
    finish(*slot, OrderStatus::rejected_risk, stamp, money);
    return CommandResult{.code = ResultCode::ok, .id = order.id};
  }
  const Account* account = money.account(body.account);
  if (account == nullptr) return {ResultCode::debit_account_not_found};
  if (account->currency != order.currency) return {ResultCode::currency_mismatch};
  switch (method) {
    case OrderMethod::wallet: {
      // The payer's money moves to the merchant in this command: success or nothing.
      const CommandResult moved =
          money.move(body.account, order.account, order.amount, order.currency);
      if (!moved.ok()) return moved;
      order.method = OrderMethod::wallet;
      order.payer_account = body.account;
      order.transfer_id = TransferId{moved.id};
      finish(*slot, OrderStatus::success, stamp, money);
      return CommandResult{.code = ResultCode::ok, .id = moved.id};
    }
    case OrderMethod::balance: {
      // The merchant pays from the order's account, its prefunded one: held toward the
      // provider until its result (only the order's steps can end the hold).
      const CommandResult held =
          money.hold(order.account, body.account, order.amount, order.currency);
      if (!held.ok()) return held;
      order.method = OrderMethod::balance;
      order.payer_account = order.account;
      order.provider_account = body.account;
      order.hold_id = TransferId{held.id};
      order.status = OrderStatus::processing;
      return CommandResult{.code = ResultCode::ok, .id = order.id};
    }
    case OrderMethod::external:
      // Nothing is held here: the provider collects the money and reports.
      order.method = OrderMethod::external;
      order.provider_account = body.account;
      order.status = OrderStatus::processing;
      return CommandResult{.code = ResultCode::ok, .id = order.id};
    default:
      return {ResultCode::invalid_command};
  }
}

CommandResult OrderBook::result(Stamp stamp, const Command& command, OrderMoney& money) noexcept {
  const OrderBody& body = command.order;
  const u32* slot = slot_of(body.order_id);
  if (slot == nullptr) return {ResultCode::order_not_found};
  Order& order = orders_[*slot];
  const bool success = body.action == 1;
  if (body.action != 1 && body.action != 2) return {ResultCode::invalid_command};
  if ((order.status == OrderStatus::timeout || order.status == OrderStatus::cancelled) &&
      (order.method == OrderMethod::external || order.method == OrderMethod::balance) && success &&
      order.resolution == OrderResolution::none && order.late_result == 0) {
    // The provider took the money (or paid, for balance) after the order had timed out
    // or been cancelled: nothing moves now; an operator settles it (resolve).
    order.status = OrderStatus::exception_checkout;
    order.late_result = 1;
    retention_.remove(*slot);  // held until an operator resolves it
    return CommandResult{.code = ResultCode::ok, .id = order.id};
  }
  if (order.status != OrderStatus::processing) return refuse_state(order);
  if (success && order.method == OrderMethod::external) {
    const CommandResult moved =
        money.move(order.provider_account, order.account, order.amount, order.currency);
    if (!moved.ok()) return moved;
    order.transfer_id = TransferId{moved.id};
  }
  finish(*slot, success ? OrderStatus::success : OrderStatus::failed, stamp, money);
  return CommandResult{.code = ResultCode::ok, .id = order.id};
}

CommandResult OrderBook::cancel(Stamp stamp, const Command& command, OrderMoney& money) noexcept {
  const u32* slot = slot_of(command.order.order_id);
  if (slot == nullptr) return {ResultCode::order_not_found};
  Order& order = orders_[*slot];
  if (is_final(order.status)) return refuse_state(order);
  finish(*slot, OrderStatus::cancelled, stamp, money);
  return CommandResult{.code = ResultCode::ok, .id = order.id};
}

CommandResult OrderBook::refund(const Command& command, OrderMoney& money) noexcept {
  const OrderBody& body = command.order;
  const u32* slot = slot_of(body.order_id);
  if (slot == nullptr) return {ResultCode::order_not_found};
  Order& order = orders_[*slot];
  if (order.status != OrderStatus::success) return refuse_state(order);
  const u64 left = order.amount - order.amount_refunded;
  const u64 amount = body.amount == 0 ? left : body.amount;
  if (amount == 0 || amount > left) return {ResultCode::refund_exceeds_order};
  // Back where it came from: the payer's wallet, or the provider (which returns it to
  // the card or bank account it came from); balance: the provider back to the merchant.
  // A wallet in another group (paid_between_groups) is refunded between groups: the
  // money is held here and carried there, and counted on the order from now.
  const bool elsewhere =
      order.method == OrderMethod::wallet && money.in_other_group(order.payer_account);
  const CommandResult moved =
      elsewhere ? money.send(order.account, order.payer_account, amount, order.id)
                : money.move(paid_side(order), paying_side(order), amount, order.currency);
  if (!moved.ok()) return moved;
  order.amount_refunded += amount;
  return moved;
}

CommandResult OrderBook::payable(u64 id, u64 amount, Currency currency) const noexcept {
  const u32* slot = slot_of(id);
  if (slot == nullptr)
    return {archived(id) ? ResultCode::order_archived : ResultCode::order_not_found};
  const Order& order = orders_[*slot];
  if (order.status != OrderStatus::created) return refuse_state(order);
  if (currency != order.currency) return {ResultCode::currency_mismatch};
  if (amount != order.amount) return {ResultCode::invalid_amount};
  return {ResultCode::ok};
}

void OrderBook::paid_between_groups(Stamp stamp, u64 id, AccountId payer, TransferId credit,
                                    OrderMoney& money) noexcept {
  const u32* slot = slot_of(id);
  PG_ASSERT(slot != nullptr && orders_[*slot].status == OrderStatus::created);
  Order& order = orders_[*slot];
  order.method = OrderMethod::wallet;
  order.payer_account = payer;
  order.transfer_id = credit;
  finish(*slot, OrderStatus::success, stamp, money);
  changed(order, stamp);
}

void OrderBook::refund_returned(Stamp stamp, u64 id, u64 amount) noexcept {
  const u32* slot = slot_of(id);
  if (slot == nullptr) return;  // left memory: its record is the archive's
  Order& order = orders_[*slot];
  PG_ASSERT(order.status == OrderStatus::success && order.amount_refunded >= amount);
  order.amount_refunded -= amount;
  changed(order, stamp);
}

CommandResult OrderBook::resolve(Stamp stamp, const Command& command, OrderMoney& money) noexcept {
  const OrderBody& body = command.order;
  const u32* slot = slot_of(body.order_id);
  if (slot == nullptr) return {ResultCode::order_not_found};
  Order& order = orders_[*slot];
  if (body.action != 1 && body.action != 2) return {ResultCode::invalid_command};
  if (order.status != OrderStatus::exception_checkout) return refuse_state(order);
  if (body.action == 1) {
    // Accepted: the money moves as the success would have moved it (balance: the
    // hold was released at the timeout or cancel, so the merchant's funds decide).
    const CommandResult moved =
        money.move(paying_side(order), paid_side(order), order.amount, order.currency);
    if (!moved.ok()) return moved;
    order.transfer_id = TransferId{moved.id};
    order.status = OrderStatus::success;
    order.resolution = OrderResolution::accepted;
  } else {
    // Rejected: the provider owes the payer a refund, outside paygate.
    order.status = OrderStatus::failed;
    order.resolution = OrderResolution::rejected;
  }
  retain(*slot, stamp);
  return CommandResult{.code = ResultCode::ok, .id = order.id};
}

// ---------------------------------------------------------------------------
// State

Status OrderBook::load(u64 next_serial, u64 next_retain_serial, const std::vector<Order>& orders,
                       u64 now_ns) {
  PG_ASSERT(count_ == 0 && next_serial_ == 1);
  const auto fail = [](std::string why) { return Status::corruption("orders: " + why); };
  if (next_serial == 0 || next_serial > kSerialMax + 1 || orders.size() > config_.orders_max) {
    return fail("bad header");
  }
  next_serial_ = next_serial;
  next_retain_serial_ = next_retain_serial;
  // ((time, id or sequence), slot)
  std::vector<std::pair<std::pair<u64, u64>, u32>> open, finals;
  for (const Order& order : orders) {
    if (order.id == 0 || id_prefix_bits(order.id) != config_.prefix.bits() ||
        id_serial(order.id) >= next_serial_ || index_.find(order.id) != nullptr ||
        order.status < OrderStatus::created || order.status > OrderStatus::exception_checkout ||
        order.amount == 0 || order.amount_refunded > order.amount || order.merchant == 0 ||
        is_final(order.status) != (order.finished_at_ns != 0) || order.expires_in_s == 0 ||
        order.expires_in_s > kOrderExpiresInMaxS || order.method > OrderMethod::external ||
        order.resolution > OrderResolution::rejected || order.late_result > 1 ||
        order.risk_rule > RiskRule::blocked_payer ||
        (order.risk_rule != RiskRule::none) != (order.status == OrderStatus::rejected_risk) ||
        order.has_callback_url > 1 || order.reserved2 != 0 ||
        (order.hold_id.value != 0) != (order.method == OrderMethod::balance)) {
      return fail(fmt::format("bad order {}", order.id));
    }
    if (order.ref_hash != 0) {
      const u64 key = ref_key(order.merchant, order.ref_hash);
      if (refs_.find(key) != nullptr) return fail(fmt::format("duplicate ref on {}", order.id));
      refs_.insert(key, order.id);
    }
    const u32 slot = free_slots_[--free_top_];
    orders_[slot] = order;
    index_.insert(order.id, slot);
    ++count_;
    if (order.status == OrderStatus::exception_checkout) {
      // held until resolved
    } else if (is_final(order.status)) {
      if (order.retain_serial >= next_retain_serial_) {
        return fail(fmt::format("bad retention of {}", order.id));
      }
      finals.push_back({{order.finished_at_ns, order.retain_serial}, slot});
    } else {
      open.push_back({{order.expires_at_ns, order.id}, slot});
    }
  }
  (void)now_ns;
  std::sort(open.begin(), open.end());
  for (const auto& [key, slot] : open) {
    expiry_.push(slot, key.first, key.second, orders_[slot].expires_in_s);
  }
  std::sort(finals.begin(), finals.end());
  for (std::size_t i = 1; i < finals.size(); ++i) {
    if (finals[i].first.second == finals[i - 1].first.second) {
      return fail("two orders share a place in the retention order");
    }
  }
  for (const auto& [key, slot] : finals) {
    retention_.push(slot, key.first + config_.final_retained_ns, key.second, 1);
  }
  return check_invariants(now_ns);
}

void OrderBook::hash_into(Hasher& hasher) const {
  std::vector<u64> ids;
  ids.reserve(count_);
  index_.for_each([&](u64 id, u32) { ids.push_back(id); });
  std::sort(ids.begin(), ids.end());
  hasher.add(next_serial_).add(next_retain_serial_).add(ids.size());
  for (const u64 id : ids) {
    const Order& o = *find(id);
    hasher.add(o.id)
        .add(o.merchant)
        .add(o.account.value)
        .add(o.amount)
        .add(o.amount_refunded)
        .add(o.created_at_ns)
        .add(o.expires_at_ns)
        .add(o.finished_at_ns)
        .add(o.retain_serial)
        .add(o.ref_hash)
        .add(o.payer_account.value)
        .add(o.provider_account.value)
        .add(o.transfer_id.value)
        .add(o.currency.code)
        .add(o.expires_in_s)
        .add(static_cast<u64>(o.status))
        .add(static_cast<u64>(o.method))
        .add(static_cast<u64>(o.resolution))
        .add(o.late_result);
    // Only balance orders have one, only rejected ones a rule (states from before
    // either hash as they did).
    if (o.hold_id.value != 0) hasher.add(o.hold_id.value);
    if (o.has_callback_url != 0) hasher.add(0x43424b55u);  // (absent before: same digests)
    if (o.risk_rule != RiskRule::none) hasher.add(0x5249534bu + static_cast<u64>(o.risk_rule));
  }
}

Status OrderBook::check_invariants(u64 now_ns) const {
  const auto fail = [](std::string why) {
    return Status::corruption("invariant broken: orders: " + why);
  };
  u32 live = 0, open = 0, with_ref = 0, unresolved = 0;
  for (u32 slot = 0; slot < config_.orders_max; ++slot) {
    const Order& o = orders_[slot];
    if (o.id == 0) continue;
    ++live;
    const u32* found = index_.find(o.id);
    if (found == nullptr || *found != slot) return fail(fmt::format("{} not indexed", o.id));
    if (o.amount_refunded > o.amount) return fail(fmt::format("{} refunded too much", o.id));
    if (o.amount_refunded != 0 && o.status != OrderStatus::success) {
      return fail(fmt::format("{} refunded but not a success", o.id));
    }
    const bool final_status = is_final(o.status);
    if (final_status == expiry_.contains(slot)) {
      return fail(fmt::format("{} open iff expiring", o.id));
    }
    const bool held = o.status == OrderStatus::exception_checkout;
    unresolved += held ? 1 : 0;
    if ((final_status && !held) != retention_.contains(slot)) {
      return fail(fmt::format("{} final (and resolved) iff retained", o.id));
    }
    if (!final_status) {
      ++open;
      if (o.expires_at_ns <= now_ns && now_ns != 0) {
        return fail(fmt::format("{} open past its expiry", o.id));
      }
    }
    if ((o.status == OrderStatus::success) != (o.transfer_id.value != 0)) {
      return fail(fmt::format("{}: a success has the transfer that paid it, nothing else", o.id));
    }
    if ((o.status == OrderStatus::rejected_risk) != (o.risk_rule != RiskRule::none)) {
      return fail(fmt::format("{}: a risk rejection, and only one, names its rule", o.id));
    }
    if ((o.method == OrderMethod::balance) != (o.hold_id.value != 0)) {
      return fail(fmt::format("{}: a balance checkout, and only one, has its hold", o.id));
    }
    if (o.ref_hash != 0) {
      ++with_ref;
      const u64* by_ref = refs_.find(ref_key(o.merchant, o.ref_hash));
      if (by_ref == nullptr || *by_ref != o.id) return fail(fmt::format("{} ref lost", o.id));
    }
  }
  if (live != count_ || live != index_.size() || with_ref != refs_.size() ||
      open != expiry_.size() || live - open - unresolved != retention_.size() ||
      free_top_ + live != config_.orders_max) {
    return fail("counts disagree");
  }
  return Status::success();
}

}  // namespace paygate
