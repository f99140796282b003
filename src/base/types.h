// Fixed-width integers, strong id types and amount limits shared by every module.
#pragma once

#include <compare>
#include <cstdint>
#include <limits>

namespace paygate {

using u8 = std::uint8_t;
using u16 = std::uint16_t;
using u32 = std::uint32_t;
using u64 = std::uint64_t;
using i64 = std::int64_t;
using u128 = unsigned __int128;

// Amounts are integers in minor units. Every balance counter stays at or below
// kAmountMax, so credits − debits always fits in an i64 and in a JSON integer.
inline constexpr u64 kAmountMax = static_cast<u64>(std::numeric_limits<i64>::max());

// A u64 with a tag, so an AccountId cannot be passed where a TransferId is meant.
// Zero is "no id"; real ids are never zero.
template <typename Tag>
struct StrongId {
  u64 value = 0;

  constexpr bool empty() const noexcept { return value == 0; }
  constexpr auto operator<=>(const StrongId&) const noexcept = default;
};

struct AccountIdTag {};
struct TransferIdTag {};
struct MerchantIdTag {};
using AccountId = StrongId<AccountIdTag>;
using TransferId = StrongId<TransferIdTag>;
using MerchantId = StrongId<MerchantIdTag>;

// Where a command sits in its group's log: the sequence number and the time the
// sequencer stamped on it. The ledger reads time only from here.
struct Stamp {
  u64 sequence = 0;
  u64 timestamp_ns = 0;
};

inline constexpr u64 kNanosPerSecond = 1'000'000'000;

// Eight ASCII characters as a little-endian u64: file magics read as text in a hex dump.
constexpr u64 tag8(const char (&text)[9]) noexcept {
  u64 value = 0;
  for (int i = 7; i >= 0; --i)
    value = (value << 8) | static_cast<unsigned char>(text[i]);
  return value;
}
static_assert((tag8("ABCDEFGH") & 0xFF) == 'A');

}  // namespace paygate
