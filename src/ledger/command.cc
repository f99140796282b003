#include "ledger/command.h"

#include <fmt/format.h>

#include "base/hash.h"

namespace paygate {

std::string describe(const Command& command) {
  std::string text;
  switch (command.kind) {
    case CommandKind::create_account:
      text = fmt::format(
          "create_account owner={} currency={} kind={} allow_negative={}",
          command.create_account.owner.value, command.create_account.currency.letters(),
          name(command.create_account.kind), (command.flags & kAccountAllowNegative) != 0);
      break;
    case CommandKind::transfer:
      text = fmt::format("{} debit={} credit={} amount={} currency={}",
                         (command.flags & kTransferPending) ? "hold" : "transfer",
                         command.transfer.debit_account_id.value,
                         command.transfer.credit_account_id.value, command.transfer.amount,
                         command.transfer.currency.letters());
      if (command.transfer.timeout_s != 0)
        text += fmt::format(" timeout_s={}", command.transfer.timeout_s);
      break;
    case CommandKind::post_pending:
      text = fmt::format("post transfer={} amount={}", command.pending.transfer_id.value,
                         command.pending.amount == 0 ? std::string("all")
                                                     : std::to_string(command.pending.amount));
      break;
    case CommandKind::void_pending:
      text = fmt::format("void transfer={}", command.pending.transfer_id.value);
      break;
    case CommandKind::deliver:
      text = fmt::format("deliver from={} {}={} amount={} currency={} number={}",
                         command.deliver.source_transfer_id.value,
                         command.flags == kDeliverOrder ? "order" : "credit",
                         command.deliver.credit_account_id.value, command.deliver.amount,
                         command.deliver.currency.letters(), command.deliver.channel_number);
      if (command.flags == kDeliverOrder) text += fmt::format(" payer={}", command.extra_hash);
      break;
    case CommandKind::settle:
      text =
          fmt::format("settle transfer={} number={} delivery={}", command.settle.transfer_id.value,
                      command.settle.channel_number, name(command.settle.delivery));
      break;
    case CommandKind::tick:
      text = "tick";
      break;
    case CommandKind::claim:
      text = fmt::format("claim covers={} fingerprint={:016x}", command.claim.covers,
                         command.extra_hash);
      if (command.flags == kClaimSignature) text += " with_signature";
      if (command.claim.owner.value != 0)
        text += fmt::format(" owner={}", command.claim.owner.value);
      break;
    case CommandKind::set_quota: {
      const auto limit = [](u32 value) {
        return value == ~u32{0}       ? std::string("default")
               : value == ~u32{0} - 1 ? std::string("unchanged")
                                      : std::to_string(value);
      };
      text = fmt::format("set_quota owner={} accounts={} holds={} idempotency_keys={}",
                         command.set_quota.owner.value, limit(command.set_quota.limit[0]),
                         limit(command.set_quota.limit[1]), limit(command.set_quota.limit[2]));
      if (command.flags == kSetQuotaOrders) {
        text += fmt::format(" orders={}", limit(command.set_quota.orders_limit));
      }
      break;
    }
    case CommandKind::order_create:
      text = fmt::format(
          "order_create account={} amount={} currency={} expires_in_s={} "
          "ref={:016x}",
          command.order_create.account.value, command.order_create.amount,
          command.order_create.currency.letters(), command.order_create.expires_in_s,
          command.order_create.ref_hash);
      break;
    case CommandKind::order_checkout:
    case CommandKind::order_result:
    case CommandKind::order_cancel:
    case CommandKind::order_refund:
    case CommandKind::order_resolve:
    case CommandKind::order_pay: {
      static constexpr const char* kNames[] = {"order_checkout", "order_result",  "order_cancel",
                                               "order_refund",   "order_resolve", "order_pay"};
      text = fmt::format(
          "{} order={} account={} amount={} action={}",
          kNames[static_cast<int>(command.kind) - static_cast<int>(CommandKind::order_checkout)],
          command.order.order_id, command.order.account.value, command.order.amount,
          command.order.action);
      break;
    }
    default:
      text = fmt::format("unknown kind={}", static_cast<int>(command.kind));
  }
  if (!command.key.empty()) {
    text += fmt::format(" key={:016x}{:016x}", command.key.hi, command.key.lo);
    if (command.key_lane == KeyLane::signature) text += " lane=signature";
  }
  return text;
}

u64 content_hash(const Command& command) noexcept {
  Hasher hasher;
  // An order's kOrderCallbackUrl only says its request had a callback_url, which
  // extra_hash covers already: left out, a create remembered before the flag existed
  // and its retry now hash the same.
  // Likewise a claim's kClaimSignature: the request's signature is not its content
  // (a retry is signed again, or not signed at all), so a retry of a claim taken before
  // the flag existed, or with another signature, hashes the same.
  u8 flags = command.flags;
  if (command.kind == CommandKind::order_create) flags &= static_cast<u8>(~kOrderCallbackUrl);
  if (command.kind == CommandKind::claim && command.flags == kClaimSignature &&
      !command.claim.signature.empty()) {
    flags = 0;
  }
  hasher.add(static_cast<u64>(command.kind)).add(flags).add(command.extra_hash);
  switch (command.kind) {
    case CommandKind::create_account:
      hasher.add(command.create_account.owner.value)
          .add(command.create_account.currency.code)
          .add(static_cast<u64>(command.create_account.kind));
      break;
    case CommandKind::transfer:
      hasher.add(command.transfer.debit_account_id.value)
          .add(command.transfer.credit_account_id.value)
          .add(command.transfer.amount)
          .add(command.transfer.currency.code)
          .add(command.transfer.timeout_s);
      break;
    case CommandKind::post_pending:
    case CommandKind::void_pending:
      hasher.add(command.pending.transfer_id.value).add(command.pending.amount);
      break;
    case CommandKind::deliver:
      hasher.add(command.deliver.source_transfer_id.value)
          .add(command.deliver.credit_account_id.value)
          .add(command.deliver.amount)
          .add(command.deliver.currency.code)
          .add(command.deliver.channel_number);
      break;
    case CommandKind::settle:
      hasher.add(command.settle.transfer_id.value)
          .add(command.settle.channel_number)
          .add(static_cast<u64>(command.settle.delivery));
      break;
    case CommandKind::claim:
      hasher.add(command.claim.covers);
      // Only when there is one: a claim remembered before quotas (owner 0) must match
      // its retry after them.
      if (command.claim.owner.value != 0) hasher.add(command.claim.owner.value);
      break;
    case CommandKind::set_quota:
      hasher.add(command.set_quota.owner.value)
          .add(command.set_quota.limit[0])
          .add(command.set_quota.limit[1])
          .add(command.set_quota.limit[2]);
      // Only when it is set: a request remembered before the orders quota must match
      // its retry after it.
      if (command.flags == kSetQuotaOrders) hasher.add(command.set_quota.orders_limit);
      break;
    case CommandKind::order_create:
      hasher.add(command.order_create.account.value)
          .add(command.order_create.amount)
          .add(command.order_create.currency.code)
          .add(command.order_create.expires_in_s)
          .add(command.order_create.ref_hash);
      break;
    case CommandKind::order_checkout:
    case CommandKind::order_result:
    case CommandKind::order_cancel:
    case CommandKind::order_refund:
    case CommandKind::order_resolve:
    case CommandKind::order_pay: {
      // A checkout's risk rule is the gateway's decision, not the client's request: a
      // keyed retry that the rules judge otherwise is still the same request, answered
      // as the first time.
      const u8 action = command.kind == CommandKind::order_checkout
                            ? static_cast<u8>(command.order.action & kCheckoutMethodMask)
                            : command.order.action;
      hasher.add(command.order.order_id)
          .add(command.order.account.value)
          .add(command.order.amount)
          .add(action);
      break;
    }
    case CommandKind::tick:
      break;
  }
  return hasher.value();
}

}  // namespace paygate
