// `paygate journal verify|dump`: read-only inspection of a group's journal.
#pragma once

#include <filesystem>

#include "base/types.h"

namespace paygate {

// Checks every record and replays the log into a ledger built from the configuration
// the journal records (from the newest snapshot when the journal no longer starts at
// sequence 1). Exit code: 0 clean, 1 torn tail (recovery would clear it), 2 corrupt.
int journal_verify(const std::filesystem::path& dir);

// Prints records (and their commands) from `from` on, at most `limit` records.
int journal_dump(const std::filesystem::path& dir, u64 from, u64 limit);

}  // namespace paygate
