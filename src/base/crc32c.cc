#include "base/crc32c.h"

#include <array>
#include <cstring>

namespace paygate {
namespace {

constexpr u32 kPolynomial = 0x82F63B78u;  // Castagnoli, reflected

// Slice-by-8 tables: table[k][b] is the CRC of byte b followed by k zero bytes.
constexpr std::array<std::array<u32, 256>, 8> make_tables() {
  std::array<std::array<u32, 256>, 8> table{};
  for (u32 b = 0; b < 256; ++b) {
    u32 crc = b;
    for (int bit = 0; bit < 8; ++bit)
      crc = (crc >> 1) ^ ((crc & 1) ? kPolynomial : 0);
    table[0][b] = crc;
  }
  for (u32 b = 0; b < 256; ++b) {
    for (int k = 1; k < 8; ++k)
      table[k][b] = (table[k - 1][b] >> 8) ^ table[0][table[k - 1][b] & 0xFF];
  }
  return table;
}
constexpr auto kTables = make_tables();

__attribute__((target("sse4.2"))) u32 extend_hardware(u32 crc, const unsigned char* p,
                                                      std::size_t size) noexcept {
  u64 state = ~crc;
  while (size >= 8) {
    u64 word;
    std::memcpy(&word, p, 8);
    state = __builtin_ia32_crc32di(state, word);
    p += 8;
    size -= 8;
  }
  u32 state32 = static_cast<u32>(state);
  while (size-- > 0)
    state32 = __builtin_ia32_crc32qi(state32, *p++);
  return ~state32;
}

const bool kHardware = __builtin_cpu_supports("sse4.2");

}  // namespace

namespace detail {

u32 crc32c_extend_portable(u32 crc, const void* data, std::size_t size) noexcept {
  const auto* p = static_cast<const unsigned char*>(data);
  u32 state = ~crc;
  while (size >= 8) {
    u32 low, high;
    std::memcpy(&low, p, 4);
    std::memcpy(&high, p + 4, 4);
    low ^= state;
    state = kTables[7][low & 0xFF] ^ kTables[6][(low >> 8) & 0xFF] ^
            kTables[5][(low >> 16) & 0xFF] ^ kTables[4][low >> 24] ^ kTables[3][high & 0xFF] ^
            kTables[2][(high >> 8) & 0xFF] ^ kTables[1][(high >> 16) & 0xFF] ^
            kTables[0][high >> 24];
    p += 8;
    size -= 8;
  }
  while (size-- > 0)
    state = (state >> 8) ^ kTables[0][(state ^ *p++) & 0xFF];
  return ~state;
}

bool crc32c_hardware_available() noexcept {
  return kHardware;
}

}  // namespace detail

u32 crc32c_extend(u32 crc, const void* data, std::size_t size) noexcept {
  if (kHardware) return extend_hardware(crc, static_cast<const unsigned char*>(data), size);
  return detail::crc32c_extend_portable(crc, data, size);
}

}  // namespace paygate
