// CRC-32C (Castagnoli), as used by iSCSI, ext4 and LevelDB: the checksum of every
// journal record and snapshot. Uses the SSE4.2 crc32 instruction when the CPU has
// it, a table otherwise; both give the same values (crc32c_test).
#pragma once

#include <cstddef>

#include "base/types.h"

namespace paygate {

// Extends `crc` (the CRC of earlier bytes, 0 for none) over `size` more bytes.
u32 crc32c_extend(u32 crc, const void* data, std::size_t size) noexcept;

inline u32 crc32c(const void* data, std::size_t size) noexcept {
  return crc32c_extend(0, data, size);
}

namespace detail {
u32 crc32c_extend_portable(u32 crc, const void* data, std::size_t size) noexcept;
bool crc32c_hardware_available() noexcept;
}  // namespace detail

}  // namespace paygate
