// The 64-byte layout a command has where it leaves the process: in the journal
// (format versions 1 and 2, which packs these words) and on the binary protocol
// (version 1). docs/JOURNAL.md, "Commands", gives the same table.
//
//   offset size  field
//   0      1     kind
//   1      1     flags
//   2      1     key lane
//   3      5     reserved (carried as sent)
//   8      8     extra_hash
//   16     16    key (lo, hi)
//   32     32    body, by kind:
//     create_account  owner u64, currency u32, account kind u8, 3 + 16 reserved
//     transfer        debit u64, credit u64, amount u64, currency u32, timeout_s u32
//     post / void     transfer u64, amount u64, 16 reserved
//     deliver         source transfer u64, credit u64, amount u64, currency u32,
//                     channel number u32
//     settle          transfer u64, channel number u32, delivery u16, 2 + 16 reserved
//     claim           covers u32, 4 reserved, owner u64 (0 before quotas), signature
//                     16 (lo, hi; with flag kClaimSignature, else 0)
//     set_quota       owner u64, accounts u32, holds u32, idempotency keys u32,
//                     4 + 8 reserved
//     tick, unknown   32 bytes carried as they came
//
// The ledger's Command is free to change: encode/decode translate field by field, and
// only a change of this table needs a new journal format or protocol version. Every
// byte a command has is carried (reserved ones too: the ledger refuses some commands
// for a non-zero reserved field, and a replay must refuse them the same).
#pragma once

#include "base/types.h"
#include "ledger/command.h"

namespace paygate::journal {

struct CommandLayout {
  u64 words[8];  // little-endian, as in the table
};
static_assert(sizeof(CommandLayout) == 64);

CommandLayout encode(const Command& command) noexcept;
Command decode(const CommandLayout& layout) noexcept;

}  // namespace paygate::journal
