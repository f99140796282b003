// Cache hints that the compiler keeps.
//
// GCC 12 takes a function whose only effect is a __builtin_prefetch for a pure one,
// and deletes the calls to it when it has not inlined it early: the ledger's
// prefetch of a hashed slot had vanished from the binary that way, and every new
// hold paid a full cache and TLB miss. The empty volatile asm is an effect the
// compiler must keep, so the hint stays wherever it is written.
#pragma once

namespace paygate {

inline void prefetch_for_read(const void* address) noexcept {
  asm volatile("" : "+r"(address));
  __builtin_prefetch(address, 0);
}

inline void prefetch_for_write(const void* address) noexcept {
  asm volatile("" : "+r"(address));
  __builtin_prefetch(address, 1);
}

}  // namespace paygate
