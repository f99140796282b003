#include "journal/command_layout.h"

#include <cstring>
#include <type_traits>

namespace paygate::journal {
namespace {

template <typename T>
void put(unsigned char* bytes, u32 at, T value) noexcept {
  static_assert(std::is_trivially_copyable_v<T>);
  std::memcpy(bytes + at, &value, sizeof value);
}
template <typename T>
T get(const unsigned char* bytes, u32 at) noexcept {
  static_assert(std::is_trivially_copyable_v<T>);
  T value;
  std::memcpy(&value, bytes + at, sizeof value);
  return value;
}

constexpr u32 kBody = 32;

}  // namespace

CommandLayout encode(const Command& c) noexcept {
  CommandLayout layout{};
  auto* b = reinterpret_cast<unsigned char*>(layout.words);
  put(b, 0, static_cast<u8>(c.kind));
  put(b, 1, c.flags);
  put(b, 2, static_cast<u8>(c.key_lane));
  put(b, 3, c.reserved0);
  put(b, 4, c.reserved1);
  put(b, 8, c.extra_hash);
  put(b, 16, c.key.lo);
  put(b, 24, c.key.hi);
  unsigned char* body = b + kBody;
  switch (c.kind) {
    case CommandKind::create_account:
      put(body, 0, c.create_account.owner.value);
      put(body, 8, c.create_account.currency.code);
      put(body, 12, static_cast<u8>(c.create_account.kind));
      std::memcpy(body + 13, c.create_account.reserved0, 3);
      put(body, 16, c.create_account.reserved1[0]);
      put(body, 24, c.create_account.reserved1[1]);
      break;
    case CommandKind::transfer:
      put(body, 0, c.transfer.debit_account_id.value);
      put(body, 8, c.transfer.credit_account_id.value);
      put(body, 16, c.transfer.amount);
      put(body, 24, c.transfer.currency.code);
      put(body, 28, c.transfer.timeout_s);
      break;
    case CommandKind::post_pending:
    case CommandKind::void_pending:
      put(body, 0, c.pending.transfer_id.value);
      put(body, 8, c.pending.amount);
      put(body, 16, c.pending.reserved[0]);
      put(body, 24, c.pending.reserved[1]);
      break;
    case CommandKind::deliver:
      put(body, 0, c.deliver.source_transfer_id.value);
      put(body, 8, c.deliver.credit_account_id.value);
      put(body, 16, c.deliver.amount);
      put(body, 24, c.deliver.currency.code);
      put(body, 28, c.deliver.channel_number);
      break;
    case CommandKind::settle:
      put(body, 0, c.settle.transfer_id.value);
      put(body, 8, c.settle.channel_number);
      put(body, 12, static_cast<u16>(c.settle.delivery));
      put(body, 14, c.settle.reserved0);
      put(body, 16, c.settle.reserved1[0]);
      put(body, 24, c.settle.reserved1[1]);
      break;
    case CommandKind::claim:
      put(body, 0, c.claim.covers);
      put(body, 4, c.claim.reserved0);
      put(body, 8, c.claim.owner.value);
      put(body, 16, c.claim.signature.lo);
      put(body, 24, c.claim.signature.hi);
      break;
    case CommandKind::set_quota:
      put(body, 0, c.set_quota.owner.value);
      put(body, 8, c.set_quota.limit[0]);
      put(body, 12, c.set_quota.limit[1]);
      put(body, 16, c.set_quota.limit[2]);
      put(body, 20, c.set_quota.orders_limit);
      put(body, 24, c.set_quota.reserved1);
      break;
    case CommandKind::order_create:
      put(body, 0, c.order_create.account.value);
      put(body, 8, c.order_create.amount);
      put(body, 16, c.order_create.currency.code);
      put(body, 20, c.order_create.expires_in_s);
      put(body, 24, c.order_create.ref_hash);
      break;
    case CommandKind::order_checkout:
    case CommandKind::order_result:
    case CommandKind::order_cancel:
    case CommandKind::order_refund:
    case CommandKind::order_resolve:
    case CommandKind::order_pay:
      put(body, 0, c.order.order_id);
      put(body, 8, c.order.account.value);
      put(body, 16, c.order.amount);
      put(body, 24, c.order.action);
      std::memcpy(body + 25, c.order.reserved0, 7);
      break;
    case CommandKind::tick:
    default:  // a kind this build does not know: its body as it came
      std::memcpy(body, &c.pending, kBody);
      break;
  }
  return layout;
}

Command decode(const CommandLayout& layout) noexcept {
  const auto* b = reinterpret_cast<const unsigned char*>(layout.words);
  Command c;
  c.kind = static_cast<CommandKind>(get<u8>(b, 0));
  c.flags = get<u8>(b, 1);
  c.key_lane = static_cast<KeyLane>(get<u8>(b, 2));
  c.reserved0 = get<u8>(b, 3);
  c.reserved1 = get<u32>(b, 4);
  c.extra_hash = get<u64>(b, 8);
  c.key.lo = get<u64>(b, 16);
  c.key.hi = get<u64>(b, 24);
  const unsigned char* body = b + kBody;
  switch (c.kind) {
    case CommandKind::create_account:
      c.create_account = CreateAccountBody{};
      c.create_account.owner = MerchantId{get<u64>(body, 0)};
      c.create_account.currency = Currency{get<u32>(body, 8)};
      c.create_account.kind = static_cast<AccountKind>(get<u8>(body, 12));
      std::memcpy(c.create_account.reserved0, body + 13, 3);
      c.create_account.reserved1[0] = get<u64>(body, 16);
      c.create_account.reserved1[1] = get<u64>(body, 24);
      break;
    case CommandKind::transfer:
      c.transfer = TransferBody{};
      c.transfer.debit_account_id = AccountId{get<u64>(body, 0)};
      c.transfer.credit_account_id = AccountId{get<u64>(body, 8)};
      c.transfer.amount = get<u64>(body, 16);
      c.transfer.currency = Currency{get<u32>(body, 24)};
      c.transfer.timeout_s = get<u32>(body, 28);
      break;
    case CommandKind::post_pending:
    case CommandKind::void_pending:
      c.pending = PendingBody{};
      c.pending.transfer_id = TransferId{get<u64>(body, 0)};
      c.pending.amount = get<u64>(body, 8);
      c.pending.reserved[0] = get<u64>(body, 16);
      c.pending.reserved[1] = get<u64>(body, 24);
      break;
    case CommandKind::deliver:
      c.deliver = DeliverBody{};
      c.deliver.source_transfer_id = TransferId{get<u64>(body, 0)};
      c.deliver.credit_account_id = AccountId{get<u64>(body, 8)};
      c.deliver.amount = get<u64>(body, 16);
      c.deliver.currency = Currency{get<u32>(body, 24)};
      c.deliver.channel_number = get<u32>(body, 28);
      break;
    case CommandKind::settle:
      c.settle = SettleBody{};
      c.settle.transfer_id = TransferId{get<u64>(body, 0)};
      c.settle.channel_number = get<u32>(body, 8);
      c.settle.delivery = static_cast<ResultCode>(get<u16>(body, 12));
      c.settle.reserved0 = get<u16>(body, 14);
      c.settle.reserved1[0] = get<u64>(body, 16);
      c.settle.reserved1[1] = get<u64>(body, 24);
      break;
    case CommandKind::claim:
      c.claim = ClaimBody{};
      c.claim.covers = get<u32>(body, 0);
      c.claim.reserved0 = get<u32>(body, 4);
      c.claim.owner = MerchantId{get<u64>(body, 8)};
      c.claim.signature.lo = get<u64>(body, 16);
      c.claim.signature.hi = get<u64>(body, 24);
      break;
    case CommandKind::set_quota:
      c.set_quota = SetQuotaBody{};
      c.set_quota.owner = MerchantId{get<u64>(body, 0)};
      c.set_quota.limit[0] = get<u32>(body, 8);
      c.set_quota.limit[1] = get<u32>(body, 12);
      c.set_quota.limit[2] = get<u32>(body, 16);
      c.set_quota.orders_limit = get<u32>(body, 20);
      c.set_quota.reserved1 = get<u64>(body, 24);
      break;
    case CommandKind::order_create:
      c.order_create = OrderCreateBody{};
      c.order_create.account = AccountId{get<u64>(body, 0)};
      c.order_create.amount = get<u64>(body, 8);
      c.order_create.currency = Currency{get<u32>(body, 16)};
      c.order_create.expires_in_s = get<u32>(body, 20);
      c.order_create.ref_hash = get<u64>(body, 24);
      break;
    case CommandKind::order_checkout:
    case CommandKind::order_result:
    case CommandKind::order_cancel:
    case CommandKind::order_refund:
    case CommandKind::order_resolve:
    case CommandKind::order_pay:
      c.order = OrderBody{};
      c.order.order_id = get<u64>(body, 0);
      c.order.account = AccountId{get<u64>(body, 8)};
      c.order.amount = get<u64>(body, 16);
      c.order.action = get<u8>(body, 24);
      std::memcpy(c.order.reserved0, body + 25, 7);
      break;
    case CommandKind::tick:
    default:
      std::memcpy(static_cast<void*>(&c.pending), body, kBody);
      break;
  }
  return c;
}

}  // namespace paygate::journal
