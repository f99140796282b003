// The journal's compact form of a run of commands (format version 2).
//
// Consecutive commands in a record are mostly alike: a request's holds share their
// accounts, amount and currency, and differ, if at all, in a key or a hash. Each
// command is written as the difference from the one before it (the first from an
// all-zero command), word by word over the eight 64-bit words of its layout
// (command_layout.h):
//
//   1 byte          mask: bit w set when word w differs from the previous command's
//   ceil(k/4) bytes the size of each of the k differing words' deltas, 2 bits each
//                   (lowest bits first): 0 = 1 byte, 1 = 2, 2 = 4, 3 = 8
//   payload         each differing word's delta (word - previous, modulo 2^64),
//                   zigzag-encoded, little-endian in its size
//
// A command equal to the previous one is the single byte 0; the worst case is
// 1 + 2 + 64 = 67 bytes. A 1,000-hold request on one account is about 1 KB instead
// of 64 KB, so a sync carries sixty times fewer bytes. Packing runs on the group
// thread as the records are staged; unpacking only on recovery and in the tools.
#pragma once

#include <cstddef>

#include "base/types.h"
#include "journal/command_layout.h"
#include "ledger/command.h"

namespace paygate::journal {

inline constexpr u32 kPackedCommandBytesMax = 1 + 2 + sizeof(CommandLayout);

// Packs commands one after another, each against the one before it.
class CommandPacker {
 public:
  // Writes `command` at `out` and returns the byte after it. May store up to 7 bytes
  // of scratch past the returned end (never past out + kPackedCommandBytesMax); the
  // caller overwrites them with what follows (the next command, padding, trailer).
  unsigned char* pack(const Command& command, unsigned char* out) noexcept;

 private:
  u64 previous_[8] = {};
};

// Unpacks `count` commands from [in, in + size) into `out`. Returns the bytes they
// took, or 0 when the bytes are not `count` packed commands (never reads past size).
std::size_t unpack_commands(const unsigned char* in, std::size_t size, u32 count,
                            Command* out) noexcept;

}  // namespace paygate::journal
