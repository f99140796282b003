// Ids as merchants see them: a type prefix and the 64-bit id in 16 lower-case hex
// digits, e.g. "acc_0001000000000005". The hex digits are the id's bits as laid out
// in base/ids.h, so region (first hex digit) and group (next three) can be read off
// any id: acc_0001000000000005 is region 0, group 1, serial 5. docs/API.md says so.
#pragma once

#include <bit>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include "base/types.h"

namespace paygate::api {

enum class IdKind : u8 {
  merchant,
  account,
  transfer,
  user,
  provider,
  withdrawal,
  order,
  webhook_endpoint,
  webhook_delivery,
};

inline constexpr std::size_t kIdTextSize = 20;  // "acc_" + 16 hex digits

constexpr std::string_view id_prefix_text(IdKind kind) noexcept {
  switch (kind) {
    case IdKind::merchant:
      return "mer_";
    case IdKind::account:
      return "acc_";
    case IdKind::transfer:
      return "trf_";
    case IdKind::user:
      return "usr_";
    case IdKind::provider:
      return "prv_";
    case IdKind::withdrawal:
      return "wdr_";
    case IdKind::order:
      return "ord_";
    case IdKind::webhook_endpoint:
      return "whe_";
    case IdKind::webhook_delivery:
      return "whd_";
  }
  return "???_";
}

// Eight hex digits of `value`, most significant first, as eight bytes in memory order.
// Branch-free: every answer of a batch carries three ids (SWAR: each nibble is
// spread into a byte of its own, then 0-9 and a-f are made in one step each).
constexpr u64 hex_digits8(u32 value) noexcept {
  u64 x = value;
  x = ((x & 0xFFFF0000ull) << 16) | (x & 0xFFFFull);
  x = ((x & 0x0000FF000000FF00ull) << 8) | (x & 0x000000FF000000FFull);
  x = ((x & 0x00F000F000F000F0ull) << 4) | (x & 0x000F000F000F000Full);
  // Byte i (from the least significant) now holds nibble i. A digit above 9 gets 'a'
  // - '0' - 10 = 39 more: adding 6 carries into bit 4 exactly for those.
  const u64 letters = ((x + 0x0606060606060606ull) >> 4) & 0x0101010101010101ull;
  x += 0x3030303030303030ull + letters * 39;
  return __builtin_bswap64(x);  // the most significant digit first in memory
}
// "0123abcf" in memory: read as a little-endian u64, the last digit is the top byte.
static_assert(hex_digits8(0x0123abcf) == 0x6663626133323130ull);

// Writes exactly kIdTextSize characters.
inline void format_id(IdKind kind, u64 id, char* out) noexcept {
  std::memcpy(out, id_prefix_text(kind).data(), 4);
  // hex_digits8 gives the digits in memory order for a little-endian store.
  static_assert(std::endian::native == std::endian::little);
  const u64 high = hex_digits8(static_cast<u32>(id >> 32));
  const u64 low = hex_digits8(static_cast<u32>(id));
  std::memcpy(out + 4, &high, 8);
  std::memcpy(out + 12, &low, 8);
}

inline std::string id_text(IdKind kind, u64 id) {
  std::string text(kIdTextSize, '\0');
  format_id(kind, id, text.data());
  return text;
}

// Eight lower-case hex digits, the first in the lowest byte of `chars` (as loaded from
// memory), as their 32-bit value; nothing if any byte is not 0-9 or a-f. Branch-free
// (SWAR): every operation of a batch carries two ids. Each byte is range-checked by
// adding a bias that sets its top bit exactly when it is at or above a bound; bytes
// below 0x80 cannot carry into the next.
constexpr std::optional<u32> parse_hex_digits8(u64 chars) noexcept {
  constexpr u64 kOnes = 0x0101010101010101ull;
  constexpr u64 kTop = 0x8080808080808080ull;
  const auto at_least = [&](u64 bound) { return chars + (0x80 - bound) * kOnes; };
  const u64 digit = at_least('0') & ~at_least('9' + 1);
  const u64 letter = at_least('a') & ~at_least('f' + 1);
  if ((chars & kTop) != 0 || ((digit | letter) & kTop) != kTop) return std::nullopt;
  // '0'-'9' are 0x30-0x39 and 'a'-'f' 0x61-0x66: the low nibble, plus 9 for letters.
  u64 x = (chars & 0x0F0F0F0F0F0F0F0Full) + ((letter & kTop) >> 7) * 9;
  // Byte i holds digit i, the most significant first: pack them into one number.
  x = ((x << 4) | (x >> 8)) & 0x00FF00FF00FF00FFull;
  x = ((x << 8) | (x >> 16)) & 0x0000FFFF0000FFFFull;
  x = ((x << 16) | (x >> 32)) & 0xFFFFFFFFull;
  return static_cast<u32>(x);
}
static_assert(parse_hex_digits8(0x6663626133323130ull) == 0x0123abcfu);  // "0123abcf"
static_assert(!parse_hex_digits8(0x4663626133323130ull));                // "0123abcF"
static_assert(!parse_hex_digits8(0x6663626133323A30ull));                // "0:23abcf"

// The id, or nothing when the text is not exactly a well-formed id of this kind.
// Zero is never an id.
constexpr std::optional<u64> parse_id(IdKind kind, std::string_view text) noexcept {
  if (text.size() != kIdTextSize || text.substr(0, 4) != id_prefix_text(kind)) return std::nullopt;
  const auto load8 = [&](std::size_t at) {
    u64 chars = 0;
    if (!std::is_constant_evaluated()) {
      static_assert(std::endian::native == std::endian::little);
      std::memcpy(&chars, text.data() + at, 8);
      return chars;
    }
    for (std::size_t i = 0; i < 8; ++i)
      chars |= u64{static_cast<unsigned char>(text[at + i])} << (8 * i);
    return chars;
  };
  const std::optional<u32> high = parse_hex_digits8(load8(4));
  const std::optional<u32> low = parse_hex_digits8(load8(12));
  if (!high || !low) return std::nullopt;
  const u64 id = (u64{*high} << 32) | *low;
  if (id == 0) return std::nullopt;
  return id;
}

// Principals (docs/API.md): merchants, users (payers) and providers share one serial
// space, and the top two bits of an id's serial say which kind it is, so that an
// owner's id reads the same wherever it is shown ("mer_", "usr_", "prv_") and a
// merchant's id can never be taken for a user's.
enum class PrincipalKind : u8 { merchant = 0, user = 1, provider = 2 };
inline constexpr int kPrincipalKindShift = 46;

constexpr u64 principal_kind_bits(PrincipalKind kind) noexcept {
  return u64{static_cast<u8>(kind)} << kPrincipalKindShift;
}
constexpr PrincipalKind principal_kind(u64 id) noexcept {
  return static_cast<PrincipalKind>((id >> kPrincipalKindShift) & 3);
}
constexpr IdKind principal_id_kind(PrincipalKind kind) noexcept {
  return kind == PrincipalKind::user       ? IdKind::user
         : kind == PrincipalKind::provider ? IdKind::provider
                                           : IdKind::merchant;
}
// The id of a principal of exactly that kind ("usr_…" naming a merchant's number is no id).
constexpr std::optional<u64> parse_principal_id(PrincipalKind kind,
                                                std::string_view text) noexcept {
  const std::optional<u64> id = parse_id(principal_id_kind(kind), text);
  if (!id || principal_kind(*id) != kind) return std::nullopt;
  return id;
}
// A principal's id of any kind, by its prefix.
constexpr std::optional<u64> parse_any_principal_id(std::string_view text) noexcept {
  for (const PrincipalKind kind :
       {PrincipalKind::merchant, PrincipalKind::user, PrincipalKind::provider}) {
    if (const std::optional<u64> id = parse_principal_id(kind, text)) return id;
  }
  return std::nullopt;
}
inline std::string principal_id_text(u64 id) {
  return id_text(principal_id_kind(principal_kind(id)), id);
}

static_assert(parse_any_principal_id("usr_0000400000000007") == 0x0000400000000007ull);
static_assert(!parse_any_principal_id("mer_0000400000000007"));
static_assert(parse_any_principal_id("mer_0000000000000007") == 7);
static_assert(!parse_principal_id(PrincipalKind::provider, "prv_0000400000000007"));

static_assert(parse_id(IdKind::account, "acc_0001000000000005") == 0x0001000000000005ull);
static_assert(!parse_id(IdKind::transfer, "acc_0001000000000005"));
static_assert(!parse_id(IdKind::account, "acc_0001000000000005 "));
static_assert(!parse_id(IdKind::account, "acc_000100000000000F"));

}  // namespace paygate::api
