#include "journal/command_packing.h"

#include "journal/command_layout.h"

#include <bit>
#include <cstring>

namespace paygate::journal {
namespace {

constexpr u32 kWords = sizeof(CommandLayout) / sizeof(u64);
static_assert(kWords == 8, "the mask is one byte");

constexpr u64 zigzag(u64 delta) noexcept {
  return (delta << 1) ^ static_cast<u64>(static_cast<i64>(delta) >> 63);
}
constexpr u64 unzigzag(u64 value) noexcept {
  return (value >> 1) ^ (0 - (value & 1));
}

// 0: 1 byte, 1: 2 bytes, 2: 4 bytes, 3: 8 bytes.
constexpr u32 size_class(u64 value) noexcept {
  return value < (u64{1} << 8) ? 0 : value < (u64{1} << 16) ? 1 : value < (u64{1} << 32) ? 2 : 3;
}

}  // namespace

unsigned char* CommandPacker::pack(const Command& command, unsigned char* out) noexcept {
  const CommandLayout layout = encode(command);  // the journal's words, not memory's
  const u64* words = layout.words;
  // A request's commands are often all alike: one branch for a repeat, not eight.
  u64 any_difference = 0;
  for (u32 w = 0; w < kWords; ++w)
    any_difference |= words[w] ^ previous_[w];
  if (any_difference == 0) {
    *out = 0;
    return out + 1;
  }
  u32 mask = 0;
  u32 differing = 0;
  u64 values[kWords];
  u32 classes = 0;  // 2 bits per differing word
  for (u32 w = 0; w < kWords; ++w) {
    if (words[w] == previous_[w]) continue;
    mask |= 1u << w;
    values[differing] = zigzag(words[w] - previous_[w]);
    classes |= size_class(values[differing]) << (2 * differing);
    ++differing;
    previous_[w] = words[w];
  }
  *out++ = static_cast<unsigned char>(mask);
  const u32 class_bytes = (differing + 3) / 4;
  out[0] = static_cast<unsigned char>(classes);
  out[1] = static_cast<unsigned char>(classes >> 8);  // the first payload, if one byte
  out += class_bytes;
  for (u32 i = 0; i < differing; ++i) {
    // A whole word is stored, the cursor moves by the value's size: the rest is
    // overwritten by what comes next.
    std::memcpy(out, &values[i], sizeof(u64));
    out += u32{1} << ((classes >> (2 * i)) & 3);
  }
  return out;
}

std::size_t unpack_commands(const unsigned char* in, std::size_t size, u32 count,
                            Command* out) noexcept {
  u64 words[kWords] = {};
  std::size_t at = 0;
  for (u32 c = 0; c < count; ++c) {
    if (at >= size) return 0;
    const u32 mask = in[at++];
    const u32 differing = static_cast<u32>(std::popcount(mask));
    const u32 class_bytes = (differing + 3) / 4;
    if (size - at < class_bytes) return 0;
    u32 classes = 0;
    for (u32 b = 0; b < class_bytes; ++b)
      classes |= u32{in[at + b]} << (8 * b);
    at += class_bytes;
    u32 i = 0;
    for (u32 w = 0; w < kWords; ++w) {
      if ((mask & (1u << w)) == 0) continue;
      const std::size_t bytes = std::size_t{1} << ((classes >> (2 * i)) & 3);
      if (size - at < bytes) return 0;
      u64 value = 0;
      std::memcpy(&value, in + at, bytes);  // little-endian: the low bytes
      at += bytes;
      words[w] += unzigzag(value);
      ++i;
    }
    CommandLayout layout;
    std::memcpy(layout.words, words, sizeof words);
    out[c] = decode(layout);
  }
  return at;
}

}  // namespace paygate::journal
