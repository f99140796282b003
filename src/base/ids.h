// The layout of every account and transfer id, so that any thread can route by id alone.
//
//   bit 63..60  region   (4 bits,  16 regions)
//   bit 59..48  group    (12 bits, 4096 groups per region)
//   bit 47..0   serial   (48 bits, assigned by the group's ledger, starting at 1)
//
// At 2 million new transfers per second a group runs out of serials after 4.4
// years of continuous load; the ledger reports exhaustion as a result code.
#pragma once

#include "base/types.h"

namespace paygate {

inline constexpr int kIdRegionBits = 4;
inline constexpr int kIdGroupBits = 12;
inline constexpr int kIdSerialBits = 48;
static_assert(kIdRegionBits + kIdGroupBits + kIdSerialBits == 64);

inline constexpr u32 kRegionMax = (1u << kIdRegionBits) - 1;
inline constexpr u32 kGroupMax = (1u << kIdGroupBits) - 1;
inline constexpr u64 kSerialMax = (u64{1} << kIdSerialBits) - 1;

struct IdPrefix {
  u32 region = 0;
  u32 group = 0;

  constexpr u64 bits() const noexcept {
    return (u64{region} << (kIdGroupBits + kIdSerialBits)) | (u64{group} << kIdSerialBits);
  }
  constexpr bool valid() const noexcept { return region <= kRegionMax && group <= kGroupMax; }
  constexpr auto operator<=>(const IdPrefix&) const noexcept = default;
};

constexpr u64 make_id(IdPrefix prefix, u64 serial) noexcept {
  return prefix.bits() | serial;
}
constexpr u64 id_serial(u64 id) noexcept {
  return id & kSerialMax;
}
constexpr u64 id_prefix_bits(u64 id) noexcept {
  return id & ~kSerialMax;
}
constexpr IdPrefix id_prefix(u64 id) noexcept {
  return IdPrefix{static_cast<u32>(id >> (kIdGroupBits + kIdSerialBits)),
                  static_cast<u32>((id >> kIdSerialBits) & kGroupMax)};
}

static_assert(id_serial(make_id({3, 17}, 42)) == 42);
static_assert(id_prefix(make_id({3, 17}, 42)) == IdPrefix{3, 17});
static_assert(id_prefix(make_id({kRegionMax, kGroupMax}, kSerialMax)) ==
              IdPrefix{kRegionMax, kGroupMax});

}  // namespace paygate
