// Deterministic 64-bit hashing for digests, content fingerprints and hash tables.
// Not cryptographic: inputs that an attacker controls are hashed with a keyed hash
// at the edge before they reach these tables.
#pragma once

#include <string_view>

#include "base/types.h"

namespace paygate {

// The splitmix64 finaliser: a bijection on u64 with good avalanche.
constexpr u64 mix64(u64 x) noexcept {
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 31;
  return x;
}

// mix64 as the hash of a u64-keyed table (OpenAddressMap and the like).
struct Mix64Hash {
  constexpr u64 operator()(u64 key) const noexcept { return mix64(key); }
};

// Folds values one at a time; the result depends on their order.
class Hasher {
 public:
  constexpr explicit Hasher(u64 seed = 0x6A09E667F3BCC908ull) noexcept : state_(seed) {}

  constexpr Hasher& add(u64 value) noexcept {
    state_ = mix64(state_ ^ (value + 0x9E3779B97F4A7C15ull + (state_ << 6) + (state_ >> 2)));
    return *this;
  }
  constexpr Hasher& add_bytes(std::string_view bytes) noexcept {
    add(bytes.size());
    u64 word = 0;
    int filled = 0;
    for (char c : bytes) {
      word |= u64{static_cast<unsigned char>(c)} << (8 * filled);
      if (++filled == 8) {
        add(word);
        word = 0;
        filled = 0;
      }
    }
    if (filled != 0) add(word);
    return *this;
  }
  constexpr u64 value() const noexcept { return mix64(state_); }

 private:
  u64 state_;
};

}  // namespace paygate
