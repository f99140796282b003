// `paygate projection rebuild|digest` (docs/HISTORY.md, "Rebuild"): the history store
// made again from the journals, and a digest to compare two stores by.
#pragma once

#include <filesystem>

#include "app/serve.h"

namespace paygate {

// Replays every group's journal of the data directory `options` name (with the
// settings `paygate serve` would run with) into a new store at `store_file`, which
// must not exist: from sequence 1 where the journal still has it, else from its newest
// snapshot. Prints progress, then the new store's digest. Exit code: 0 done, 1 refused
// (a store that exists, fewer --groups than the data directory has, no journal at all,
// other ledger settings) or failed. Run it with the server stopped (or on a copy): it
// reads each journal to its end.
int projection_rebuild(const ServeOptions& options, const std::filesystem::path& store_file);

// Prints each table's rows and hash, and the watermarks. Exit code: 0, or 1 on error.
int projection_digest(const std::filesystem::path& store_file);

}  // namespace paygate
