#include "history/sqlite_db.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace paygate::sqlite {
namespace {
Status failed(sqlite3* db, std::string_view label, std::string_view what) {
  return Status::io_error(
      fmt::format("{}: {}: {}", label, what, db != nullptr ? sqlite3_errmsg(db) : "no connection"));
}
}  // namespace

Status exec(sqlite3* db, const char* sql, std::string_view label) {
  char* error = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &error) != SQLITE_OK) {
    const std::string why = error != nullptr ? error : "unknown error";
    sqlite3_free(error);
    return Status::io_error(fmt::format("{}: {}", label, why));
  }
  return Status::success();
}

Status open_for_writing(const std::filesystem::path& file, std::string_view label, sqlite3** db) {
  // 0600, as every file of the data directory (it holds what callers sent); SQLite
  // gives its -wal and -shm files the database file's mode.
  const int fd = ::open(file.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) {
    return Status::io_error(fmt::format("{}: cannot open: {}", label, std::strerror(errno)));
  }
  ::fchmod(fd, 0600);
  ::close(fd);
  if (sqlite3_open_v2(file.c_str(), db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                      nullptr) != SQLITE_OK) {
    return failed(*db, label, "open");
  }
  sqlite3_busy_timeout(*db, 5000);
  // WAL: readers do not wait for the writer. FULL: a commit is on disk.
  for (const char* pragma :
       {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA foreign_keys=OFF",
        "PRAGMA cache_size=-262144", "PRAGMA wal_autocheckpoint=16384"}) {
    if (Status s = exec(*db, pragma, label); !s.ok()) return s;
  }
  return Status::success();
}

Status open_for_reading(const std::filesystem::path& file, std::string_view label, sqlite3** db) {
  if (sqlite3_open_v2(file.c_str(), db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr) !=
      SQLITE_OK) {
    return failed(*db, label, "open for reading");
  }
  sqlite3_busy_timeout(*db, 5000);
  return Status::success();
}

Status migrate(sqlite3* db, std::string_view label, std::span<const char* const> migrations,
               int* version) {
  if (Status s = exec(db,
                      "CREATE TABLE IF NOT EXISTS schema_migrations("
                      "version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
                      label);
      !s.ok()) {
    return s;
  }
  {
    Statement current(db, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations");
    if (!current.ok() || current.step() != SQLITE_ROW) {
      return failed(db, label, "read the schema version");
    }
    *version = static_cast<int>(current.integer(0));
  }
  const int newest = static_cast<int>(migrations.size());
  if (*version > newest) {
    return Status::invalid_config(fmt::format(
        "{} has schema version {}, newer than this paygate's {}", label, *version, newest));
  }
  for (int next = *version + 1; next <= newest; ++next) {
    // Each migration and its record in one transaction: a crash leaves it undone.
    if (Status s = exec(db, "BEGIN IMMEDIATE", label); !s.ok()) return s;
    Status applied = exec(db, migrations[static_cast<std::size_t>(next - 1)], label);
    if (applied.ok()) {
      Statement record(db,
                       "INSERT INTO schema_migrations(version, applied_at) "
                       "VALUES (?, strftime('%s','now'))");
      if (!record.ok() || !record.bind(1, next).run()) {
        applied = failed(db, label, "record a migration");
      }
    }
    if (!applied.ok()) {
      (void)exec(db, "ROLLBACK", label);
      return applied;
    }
    if (Status s = exec(db, "COMMIT", label); !s.ok()) return s;
    *version = next;
  }
  return Status::success();
}

}  // namespace paygate::sqlite
