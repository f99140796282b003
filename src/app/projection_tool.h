// `paygate projection rebuild|digest` (docs/HISTORY.md, "Rebuild"): the history store
// made again from the journals, and a digest to compare two stores by.
#pragma once

#include <filesystem>

#include "app/serve.h"

namespace paygate {

// Replays every group's journal of the data directory `options` name (with the
// settings `paygate serve` would run with) into a new store: a SQLite file at
// `store_file`, which must not exist, or (`mariadb_database` given) that database on
// the MariaDB server the settings' [history] names, which must hold no rows. From
// sequence 1 where the journal still has it, else from its newest snapshot. Prints
// progress, then the new store's digest. Exit code: 0 done, 1 refused (a store that
// exists, fewer --groups than the data directory has, no journal at all, other ledger
// settings) or failed. Run it with the server stopped (or on a copy): it reads each
// journal to its end.
int projection_rebuild(const ServeOptions& options, const std::filesystem::path& store_file,
                       const std::string& mariadb_database);

// Prints each table's rows and hash, and the watermarks, of the SQLite file or the
// MariaDB database (on the server of the settings' [history]). Exit code: 0, or 1 on
// error.
int projection_digest(const ServeOptions& options, const std::filesystem::path& store_file,
                      const std::string& mariadb_database);

}  // namespace paygate
