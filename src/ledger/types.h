// What the ledger holds: accounts and transfers, as fixed-size plain records.
#pragma once

#include <string>
#include <string_view>

#include "base/result_code.h"
#include "base/types.h"

namespace paygate {

// An ISO 4217 code packed into 32 bits: 'U' | 'S' << 8 | 'D' << 16. Zero is "none".
struct Currency {
  u32 code = 0;

  static constexpr Currency from(std::string_view letters) noexcept {
    if (letters.size() != 3) return Currency{};
    u32 packed = 0;
    for (std::size_t i = 0; i < 3; ++i) {
      const char c = letters[i];
      if (c < 'A' || c > 'Z') return Currency{};
      packed |= u32{static_cast<unsigned char>(c)} << (8 * i);
    }
    return Currency{packed};
  }
  // Three upper-case letters and nothing else. Branch-free: every transfer asks.
  constexpr bool valid() const noexcept {
    // Per byte: c - 'A' must be below 26. Adding 0x80 - 'A' sets a byte's top bit iff
    // c >= 'A'; adding 0x80 - 'Z' - 1 sets it iff c > 'Z' (no byte carries, as c < 0x80).
    constexpr u32 kLow = 0x00808080u - 0x00414141u;
    constexpr u32 kHigh = 0x00808080u - 0x005B5B5Bu;
    const bool ascii = (code & 0xFF808080u) == 0;
    const u32 at_least_a = (code + kLow) & 0x00808080u;
    const u32 above_z = (code + kHigh) & 0x00808080u;
    return ascii && at_least_a == 0x00808080u && above_z == 0;
  }
  std::string letters() const {
    return valid()
               ? std::string{static_cast<char>(code & 0xFF), static_cast<char>((code >> 8) & 0xFF),
                             static_cast<char>((code >> 16) & 0xFF)}
               : std::string{};
  }
  constexpr auto operator<=>(const Currency&) const noexcept = default;
};
static_assert(Currency::from("USD").valid());
static_assert(!Currency::from("usd").valid());
static_assert(!Currency{}.valid());
static_assert(Currency::from("AZZ").valid() && Currency::from("ZAA").valid());
static_assert(!Currency{0x00445340}.valid() && !Currency{0x0044535B}.valid());  // '@', '['
static_assert(!Currency{0x44535544}.valid() && !Currency{0x00D35544}.valid());

enum class AccountKind : u8 { merchant = 1, user = 2, system = 3 };
constexpr bool valid(AccountKind kind) noexcept {
  return kind == AccountKind::merchant || kind == AccountKind::user || kind == AccountKind::system;
}

enum AccountFlags : u8 {
  kAccountAllowNegative = 1 << 0,
  // Made by the ledger itself: the account through which money leaves for, or arrives
  // from, group `clearing_group` (docs/LEDGER.md). Never set by a command.
  kAccountClearing = 1 << 1,
};
inline constexpr u8 kAccountFlagsKnown = kAccountAllowNegative;  // what commands may set

// One account, one cache line. Balances are four monotone-or-released counters, as
// in double entry: posted moves are final, pending ones are holds.
struct alignas(64) Account {
  AccountId id;
  MerchantId owner;
  u64 debits_pending = 0;
  u64 debits_posted = 0;
  u64 credits_pending = 0;
  u64 credits_posted = 0;
  u64 updated_seq = 0;  // sequence of the last command that changed this account
  Currency currency;
  AccountKind kind = AccountKind::user;
  u8 flags = 0;
  u16 clearing_group = 0;  // kAccountClearing: the other group

  // Restricted accounts never let debits (posted + pending) exceed posted credits.
  constexpr bool restricted() const noexcept {
    return kind != AccountKind::system && (flags & kAccountAllowNegative) == 0;
  }
  // Both fit an i64: the ledger keeps debits_posted + debits_pending and
  // credits_posted + credits_pending each at or below kAmountMax.
  constexpr i64 balance() const noexcept {
    return static_cast<i64>(credits_posted) - static_cast<i64>(debits_posted);
  }
  constexpr i64 available() const noexcept { return balance() - static_cast<i64>(debits_pending); }
};
static_assert(sizeof(Account) == 64);

enum class TransferStatus : u8 {
  posted = 1,   // money moved (immediately, or a pending transfer that was posted)
  pending = 2,  // a hold: reserved on the debit side, not yet moved
  voided = 3,   // a hold released on request
  expired = 4,  // a hold released because its timeout passed
};

enum TransferFlags : u8 {
  kTransferPending = 1 << 0,  // created as a hold (two-phase)
  // The credit account is in another group: the money is held here until that group
  // has credited it, then posted to the clearing account (docs/LEDGER.md).
  kTransferBetweenGroups = 1 << 1,
  // A hold made by an order (checkout balance): only that order's steps post or void
  // it (its provider's result, its cancel or expiry), never a transfer command. The
  // ledger sets it; a command cannot.
  // With kTransferBetweenGroups: a wallet's payment of an order in another group
  // (docs/ORDERS.md, "Between groups"): credit_account_id names that order, whose group
  // credits its account and marks it paid in one command (the deliver step).
  kTransferOrder = 1 << 2,
  // With kTransferBetweenGroups: the refund of an order of this group to a wallet in
  // another group. While it is open, posted_amount names the order, so that a refused
  // delivery (the money comes back) also takes the refund off the order.
  kTransferOrderRefund = 1 << 3,
};
inline constexpr u8 kTransferFlagsKnown = kTransferPending | kTransferBetweenGroups;

struct alignas(64) Transfer {
  TransferId id;
  AccountId debit_account_id;
  AccountId credit_account_id;
  u64 amount = 0;  // immediate: the amount moved; pending: the amount held
  // A posted hold: the part captured (the rest was released). An open two-phase hold
  // between groups that is being posted: the part on its way (on_channel()).
  u64 posted_amount = 0;
  u64 created_at_ns = 0;
  u64 expires_at_ns = 0;  // 0: the hold never expires
  Currency currency;
  TransferStatus status = TransferStatus::posted;
  u8 flags = 0;
  // A transfer between groups that was voided: why the other group refused the credit.
  ResultCode refused = ResultCode::ok;

  constexpr bool two_phase() const noexcept { return (flags & kTransferPending) != 0; }
  constexpr bool between_groups() const noexcept { return (flags & kTransferBetweenGroups) != 0; }
  constexpr bool order_hold() const noexcept { return (flags & kTransferOrder) != 0; }
  // A wallet's payment of an order in another group: the order it pays.
  constexpr bool pays_order() const noexcept { return order_hold() && between_groups(); }
  constexpr u64 paid_order() const noexcept { return pays_order() ? credit_account_id.value : 0; }
  // An open refund to a wallet in another group: the order it refunds.
  constexpr bool order_refund() const noexcept { return (flags & kTransferOrderRefund) != 0; }
  constexpr u64 refunded_order() const noexcept {
    return order_refund() && status == TransferStatus::pending ? posted_amount : 0;
  }
  // An open hold between groups whose credit is on its way to the other group (it
  // has a number on the channel): an immediate one from the start; a two-phase one
  // once posted, when posted_amount says what the other group is to credit.
  constexpr bool on_channel() const noexcept {
    return between_groups() && (!two_phase() || posted_amount != 0);
  }
  // What the other group is to credit for an open hold on its channel.
  constexpr u64 delivery_amount() const noexcept { return two_phase() ? posted_amount : amount; }
};
static_assert(sizeof(Transfer) == 64);

std::string_view name(AccountKind kind) noexcept;
std::string_view name(TransferStatus status) noexcept;

}  // namespace paygate
