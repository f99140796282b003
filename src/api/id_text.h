// Ids as merchants see them: a type prefix and the 64-bit id in 16 lower-case hex
// digits, e.g. "acc_0001000000000005". The hex digits are the id's bits as laid out
// in base/ids.h, so region (first hex digit) and group (next three) can be read off
// any id: acc_0001000000000005 is region 0, group 1, serial 5. docs/API.md says so.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "base/types.h"

namespace paygate::api {

enum class IdKind : u8 { merchant, account, transfer };

inline constexpr std::size_t kIdTextSize = 20;  // "acc_" + 16 hex digits

constexpr std::string_view id_prefix_text(IdKind kind) noexcept {
  switch (kind) {
    case IdKind::merchant:
      return "mer_";
    case IdKind::account:
      return "acc_";
    case IdKind::transfer:
      return "trf_";
  }
  return "???_";
}

// Writes exactly kIdTextSize characters.
inline void format_id(IdKind kind, u64 id, char* out) noexcept {
  static constexpr char kHex[] = "0123456789abcdef";
  const std::string_view prefix = id_prefix_text(kind);
  for (std::size_t i = 0; i < 4; ++i)
    out[i] = prefix[i];
  for (int i = 0; i < 16; ++i)
    out[4 + i] = kHex[(id >> (60 - 4 * i)) & 0xF];
}

inline std::string id_text(IdKind kind, u64 id) {
  std::string text(kIdTextSize, '\0');
  format_id(kind, id, text.data());
  return text;
}

// The id, or nothing when the text is not exactly a well-formed id of this kind.
// Zero is never an id.
constexpr std::optional<u64> parse_id(IdKind kind, std::string_view text) noexcept {
  if (text.size() != kIdTextSize || text.substr(0, 4) != id_prefix_text(kind)) return std::nullopt;
  u64 id = 0;
  for (std::size_t i = 4; i < kIdTextSize; ++i) {
    const char c = text[i];
    u64 digit;
    if (c >= '0' && c <= '9') {
      digit = static_cast<u64>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      digit = static_cast<u64>(c - 'a' + 10);
    } else {
      return std::nullopt;
    }
    id = (id << 4) | digit;
  }
  if (id == 0) return std::nullopt;
  return id;
}

static_assert(parse_id(IdKind::account, "acc_0001000000000005") == 0x0001000000000005ull);
static_assert(!parse_id(IdKind::transfer, "acc_0001000000000005"));
static_assert(!parse_id(IdKind::account, "acc_0001000000000005 "));
static_assert(!parse_id(IdKind::account, "acc_000100000000000F"));

}  // namespace paygate::api
