// Commands the ledger applies, and their results. A Command is 64 bytes of plain
// data so that rings and journals can hold it in place; every byte is defined
// (reserved fields are zero), so equal commands are equal byte for byte.
#pragma once

#include <cstring>
#include <string>

#include "base/result_code.h"
#include "base/types.h"
#include "ledger/types.h"

namespace paygate {

enum class CommandKind : u8 {
  create_account = 1,
  transfer = 2,      // immediate, or a hold when flags has kTransferPending
  post_pending = 3,  // capture all (amount 0) or part of a hold; the rest is released
  void_pending = 4,  // release a hold
  tick = 5,          // advance time only; holds past their timeout expire
  // A transfer between groups (docs/LEDGER.md): the credit in the other group, and the
  // answer back to the group that holds the money. Only groups send these.
  deliver = 6,
  settle = 7,
  // Takes the request's idempotency key for a request that is more than one command,
  // or whose commands run in another group (docs/LEDGER.md, "Claims"): a key names one
  // request, whatever endpoint or group it reaches. If the key is taken by another
  // request (or there is no room for it), the claim answers why and the `covers`
  // commands after it in the same request are not run: they answer the same code.
  claim = 8,
  // Sets the quota limits of one merchant (set_quota.owner), or with owner 0 the
  // group's defaults (ledger/owner_quotas.h). Only operators, through the gateway.
  set_quota = 9,
  // Orders (orders/order_book.h): each a transition of one order and its money.
  order_create = 10,    // order_create body
  order_checkout = 11,  // order body: account = the payer's (wallet) or provider's clearing
  order_result = 12,    // order body: action 1 success, 2 failed
  order_cancel = 13,    // order body
  order_refund = 14,    // order body: amount (0: the rest)
  order_resolve = 15,   // order body: action 1 accept, 2 reject
  // A wallet of this group pays an order of another (docs/ORDERS.md, "Between groups"):
  // order body, account = the wallet, amount = the order's, action = wallet. The first
  // step of the protocol between groups; the order's group marks it paid when the
  // credit arrives (deliver, kDeliverOrder).
  order_pay = 16,
};

// Which table of remembered keys a command's key lives in (docs/LEDGER.md).
enum class KeyLane : u8 {
  // A client's Idempotency-Key: remembered with its result for idempotency_window_ns,
  // and a retry gets that result again.
  client = 0,
  // A signed request's own signature, for a request that carries no Idempotency-Key:
  // remembered for signature_window_ns, and anything seen under it again is refused
  // (signature_replayed). It makes the replay check of signed requests durable.
  signature = 1,
};

// A client's idempotency key, already hashed at the edge together with the
// merchant it belongs to (so keys are scoped per merchant). Zero is "no key".
struct IdempotencyKey {
  u64 lo = 0;
  u64 hi = 0;

  constexpr bool empty() const noexcept { return lo == 0 && hi == 0; }
  constexpr bool operator==(const IdempotencyKey&) const noexcept = default;
};

struct CreateAccountBody {
  MerchantId owner;
  Currency currency;
  AccountKind kind = AccountKind::user;
  u8 reserved0[3] = {};
  u64 reserved1[2] = {};
};

struct TransferBody {
  AccountId debit_account_id;
  AccountId credit_account_id;
  u64 amount = 0;
  Currency currency;
  u32 timeout_s = 0;  // holds only; 0: never expires
};

// The credit side of a transfer between groups, applied in the credit account's group.
struct DeliverBody {
  TransferId source_transfer_id;  // the hold in the sending group (its id names that group)
  AccountId credit_account_id;
  u64 amount = 0;
  Currency currency;
  u32 channel_number = 0;  // the hold's number on the channel (GroupChannels)
};

// A deliver's flags.
enum DeliverFlags : u8 {
  // The payment of an order of the receiving group by a wallet of the sending one
  // (Transfer::pays_order): credit_account_id names the order (its account is credited
  // and the order marked paid, or the delivery refused), and the command's extra_hash
  // carries the paying account (no key is ever on a deliver: the channel number is
  // its idempotency).
  kDeliverOrder = 1 << 0,
};

// The sending group learns what the delivery came to: post the hold, or void it.
struct SettleBody {
  TransferId transfer_id;
  u32 channel_number = 0;
  ResultCode delivery = ResultCode::ok;  // what the deliver command answered
  u16 reserved0 = 0;
  u64 reserved1[2] = {};
};

struct PendingBody {
  TransferId transfer_id;
  u64 amount = 0;  // post only: 0 captures the whole hold
  u64 reserved[2] = {};
};

struct ClaimBody {
  u32 covers = 0;  // the commands right after this one that run only if the claim holds
  u32 reserved0 = 0;
  // The merchant the key is counted against (its idempotency_keys quota); 0: none
  // (operators' keys, and journals written before quotas).
  MerchantId owner;
  // With kClaimSignature (a client's key's claim, KeyLane::client, for a signed
  // request): the request's signature, taken in KeyLane::signature by the same command
  // before the key, so that a replay of the request with its key dropped or changed is
  // refused after a restart too. Else empty.
  IdempotencyKey signature;
};
// A claim's flags. (A claim with flags was refused before kClaimSignature, and one
// with the flag but no signature still is: an older journal replays the same.)
enum ClaimFlags : u8 { kClaimSignature = 1 << 0 };

struct SetQuotaBody {
  MerchantId owner;  // 0: the group's defaults
  // By Quota (accounts, holds, idempotency_keys): a number, kQuotaGroupDefault or
  // kQuotaUnchanged (ledger/owner_quotas.h).
  u32 limit[3] = {};
  // The orders limit, the same way, when the command's flags have kSetQuotaOrders;
  // else 0 and unchanged (commands journaled before the orders quota).
  u32 orders_limit = 0;
  u64 reserved1 = 0;
};
enum SetQuotaFlags : u8 { kSetQuotaOrders = 1 << 0 };

// A new order for `account` (its owner is the order's merchant).
struct OrderCreateBody {
  AccountId account;
  u64 amount = 0;
  Currency currency;
  u32 expires_in_s = 0;
  u64 ref_hash = 0;  // the merchant_ref, hashed at the edge: unique per merchant
};

// A step of an existing order.
struct OrderBody {
  u64 order_id = 0;
  AccountId account;
  u64 amount = 0;
  u8 action = 0;  // checkout: the OrderMethod; result/resolve: 1 success or accept, 2 not
  u8 reserved0[7] = {};
};
// A checkout's action: the method in the low bits, the risk rule that refused it (the
// gateway's decision, orders/order_book.h) above them.
inline constexpr u8 kCheckoutRiskShift = 4;
// order_create's flags: its request gave a callback_url (journaled as an annotation;
// the order records that it has one, for a checkout's redirect_url).
inline constexpr u8 kOrderCallbackUrl = 1;
inline constexpr u8 kCheckoutMethodMask = (1u << kCheckoutRiskShift) - 1;

struct Command {
  CommandKind kind = CommandKind::tick;
  u8 flags = 0;  // AccountFlags for create_account, TransferFlags for transfer
  KeyLane key_lane = KeyLane::client;
  u8 reserved0 = 0;
  u32 reserved1 = 0;
  // Fingerprint of request fields the ledger does not keep (a transfer's reference or
  // metadata), so an idempotent retry that changes only those is still "different".
  u64 extra_hash = 0;
  IdempotencyKey key;
  // The body that kind names. Every body is exactly 32 bytes with no padding, and the
  // factories assign a whole body, so every byte of a Command is always defined.
  union {
    CreateAccountBody create_account;
    TransferBody transfer;
    PendingBody pending;
    DeliverBody deliver;
    SettleBody settle;
    ClaimBody claim;
    SetQuotaBody set_quota;
    OrderCreateBody order_create;
    OrderBody order;
  };

  Command() noexcept : pending{} {}

  static Command make_create_account(MerchantId owner, Currency currency, AccountKind kind,
                                     u8 flags = 0) noexcept {
    Command c;
    c.kind = CommandKind::create_account;
    c.flags = flags;
    c.create_account = CreateAccountBody{.owner = owner, .currency = currency, .kind = kind};
    return c;
  }
  static Command make_transfer(AccountId debit, AccountId credit, u64 amount,
                               Currency currency) noexcept {
    Command c;
    c.kind = CommandKind::transfer;
    c.transfer = TransferBody{.debit_account_id = debit,
                              .credit_account_id = credit,
                              .amount = amount,
                              .currency = currency};
    return c;
  }
  static Command make_hold(AccountId debit, AccountId credit, u64 amount, Currency currency,
                           u32 timeout_s) noexcept {
    Command c = make_transfer(debit, credit, amount, currency);
    c.flags = kTransferPending;
    c.transfer.timeout_s = timeout_s;
    return c;
  }
  static Command make_post(TransferId id, u64 amount = 0) noexcept {
    Command c;
    c.kind = CommandKind::post_pending;
    c.pending = PendingBody{.transfer_id = id, .amount = amount};
    return c;
  }
  // Posts a two-phase hold between groups: the caller carries the credit to the other
  // group and the settlement back (docs/LEDGER.md). Only the gateway sends it.
  static Command make_post_between_groups(TransferId id, u64 amount = 0) noexcept {
    Command c = make_post(id, amount);
    c.flags = kTransferBetweenGroups;
    return c;
  }
  static Command make_void(TransferId id) noexcept {
    Command c;
    c.kind = CommandKind::void_pending;
    c.pending = PendingBody{.transfer_id = id};
    return c;
  }
  static Command make_tick() noexcept { return Command{}; }
  static Command make_deliver(TransferId source, AccountId credit, u64 amount, Currency currency,
                              u32 channel_number) noexcept {
    Command c;
    c.kind = CommandKind::deliver;
    c.deliver = DeliverBody{.source_transfer_id = source,
                            .credit_account_id = credit,
                            .amount = amount,
                            .currency = currency,
                            .channel_number = channel_number};
    return c;
  }
  static Command make_order_deliver(TransferId source, u64 order_id, AccountId payer, u64 amount,
                                    Currency currency, u32 channel_number) noexcept {
    Command c = make_deliver(source, AccountId{order_id}, amount, currency, channel_number);
    c.flags = kDeliverOrder;
    c.extra_hash = payer.value;
    return c;
  }
  static Command make_settle(TransferId id, u32 channel_number, ResultCode delivery) noexcept {
    Command c;
    c.kind = CommandKind::settle;
    c.settle =
        SettleBody{.transfer_id = id, .channel_number = channel_number, .delivery = delivery};
    return c;
  }

  // `fingerprint` is the content of the whole request the key names.
  // `owner`: the merchant whose key it is (counted against its quota), or 0.
  // `signature`: see ClaimBody (only with KeyLane::client).
  static Command make_claim(IdempotencyKey key, u64 fingerprint, u32 covers,
                            KeyLane lane = KeyLane::client, MerchantId owner = {},
                            IdempotencyKey signature = {}) noexcept {
    Command c;
    c.kind = CommandKind::claim;
    c.key = key;
    c.key_lane = lane;
    c.extra_hash = fingerprint;
    c.claim = ClaimBody{.covers = covers, .owner = owner, .signature = signature};
    if (!signature.empty()) c.flags = kClaimSignature;
    return c;
  }
  // `orders` defaults to kQuotaUnchanged (ledger/owner_quotas.h): then the command is
  // byte for byte what it was before the orders quota (no flag), and so is its key's
  // fingerprint.
  static Command make_set_quota(MerchantId owner, u32 accounts, u32 holds, u32 idempotency_keys,
                                u32 orders = ~u32{0} - 1) noexcept {
    Command c;
    c.kind = CommandKind::set_quota;
    c.set_quota = SetQuotaBody{.owner = owner, .limit = {accounts, holds, idempotency_keys}};
    if (orders != ~u32{0} - 1) {
      c.flags = kSetQuotaOrders;
      c.set_quota.orders_limit = orders;
    }
    return c;
  }

  static Command make_order_create(AccountId account, u64 amount, Currency currency,
                                   u32 expires_in_s, u64 ref_hash, u8 flags = 0) noexcept {
    Command c;
    c.kind = CommandKind::order_create;
    c.flags = flags;
    c.order_create = OrderCreateBody{.account = account,
                                     .amount = amount,
                                     .currency = currency,
                                     .expires_in_s = expires_in_s,
                                     .ref_hash = ref_hash};
    return c;
  }
  static Command make_order(CommandKind kind, u64 order_id, AccountId account = {}, u64 amount = 0,
                            u8 action = 0) noexcept {
    Command c;
    c.kind = kind;
    c.order =
        OrderBody{.order_id = order_id, .account = account, .amount = amount, .action = action};
    return c;
  }

  Command& with_key(IdempotencyKey k, KeyLane lane = KeyLane::client) noexcept {
    key = k;
    key_lane = lane;
    return *this;
  }
  Command& with_extra_hash(u64 h) noexcept {
    extra_hash = h;
    return *this;
  }

  bool operator==(const Command& other) const noexcept {
    return std::memcmp(static_cast<const void*>(this), static_cast<const void*>(&other),
                       sizeof(Command)) == 0;
  }
};
static_assert(sizeof(CreateAccountBody) == 32);
static_assert(sizeof(TransferBody) == 32);
static_assert(sizeof(PendingBody) == 32);
static_assert(sizeof(DeliverBody) == 32);
static_assert(sizeof(SettleBody) == 32);
static_assert(sizeof(ClaimBody) == 32);
static_assert(sizeof(SetQuotaBody) == 32);
static_assert(sizeof(OrderCreateBody) == 32);
static_assert(sizeof(OrderBody) == 32);
static_assert(sizeof(Command) == 64);
static_assert(std::is_trivially_copyable_v<Command>);

// Commands only the gateway itself sends (the steps of a transfer between groups,
// which it carries from group to group; quotas, which operators set through it; an
// order's steps, which it sends only after checking the order's signature, who may
// act and the risk rules, and some of which it carries between groups): never taken
// from a client as they are.
constexpr bool gateway_only(const Command& command) noexcept {
  return command.kind == CommandKind::deliver || command.kind == CommandKind::settle ||
         command.kind == CommandKind::set_quota ||
         (command.kind >= CommandKind::order_create && command.kind <= CommandKind::order_pay) ||
         ((command.kind == CommandKind::transfer || command.kind == CommandKind::post_pending) &&
          (command.flags & kTransferBetweenGroups) != 0);
}

// One line of text for operators' tools: "transfer debit=… credit=… amount=…".
std::string describe(const Command& command);

// The content of a command for idempotency: everything but the key itself.
u64 content_hash(const Command& command) noexcept;

struct CommandResult {
  ResultCode code = ResultCode::ok;
  u16 reserved0 = 0;
  // A transfer between groups: its number on the channel to the credit account's group.
  // An order command refused for the order's state: that state (OrderStatus).
  u32 channel_number = 0;
  u64 id = 0;  // the account or transfer created, or the transfer posted / voided

  constexpr bool ok() const noexcept { return code == ResultCode::ok; }
  constexpr bool operator==(const CommandResult&) const noexcept = default;
};
static_assert(sizeof(CommandResult) == 16);

}  // namespace paygate
