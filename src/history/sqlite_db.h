// What the SQLite stores share (the history store, history/store.h; the
// webhook store, webhooks/webhook_store.h): prepared statements, opening a database
// file as every file of the data directory is (0600, WAL, synchronous=FULL), and
// versioned migrations applied at open.
#pragma once

#include <sqlite3.h>

#include <filesystem>
#include <span>
#include <string>
#include <string_view>

#include "base/status.h"
#include "base/types.h"

namespace paygate::sqlite {

inline i64 signed_of(u64 value) noexcept {
  return static_cast<i64>(value);  // ids use all 64 bits; SQLite keeps them as they are
}

// A prepared statement, finalized when it goes.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  bool ok() const noexcept { return rc_ == SQLITE_OK; }
  Statement& bind(int at, i64 value) {
    sqlite3_bind_int64(stmt_, at, value);
    return *this;
  }
  Statement& bind_text(int at, std::string_view text) {
    sqlite3_bind_text(stmt_, at, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Statement& bind_blob(int at, const void* data, std::size_t size) {
    sqlite3_bind_blob(stmt_, at, data, static_cast<int>(size), SQLITE_TRANSIENT);
    return *this;
  }
  Statement& bind_null(int at) {
    sqlite3_bind_null(stmt_, at);
    return *this;
  }
  int step() { return sqlite3_step(stmt_); }
  // Runs it to its end and readies it for the next bindings; false on an error.
  bool run() {
    const int rc = sqlite3_step(stmt_);
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
    return rc == SQLITE_DONE;
  }
  // Readies it for the next bindings after step() (rows read).
  void reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  i64 integer(int column) const { return sqlite3_column_int64(stmt_, column); }
  std::string text(int column) const {
    const unsigned char* p = sqlite3_column_text(stmt_, column);
    return p == nullptr
               ? std::string()
               : std::string(reinterpret_cast<const char*>(p),
                             static_cast<std::size_t>(sqlite3_column_bytes(stmt_, column)));
  }
  std::string_view blob(int column) const {
    const void* p = sqlite3_column_blob(stmt_, column);
    return p == nullptr
               ? std::string_view()
               : std::string_view(static_cast<const char*>(p),
                                  static_cast<std::size_t>(sqlite3_column_bytes(stmt_, column)));
  }
  int columns() const { return sqlite3_column_count(stmt_); }
  int type(int column) const { return sqlite3_column_type(stmt_, column); }
  bool is_null(int column) const { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }

 private:
  sqlite3_stmt* stmt_ = nullptr;
  int rc_ = SQLITE_ERROR;
};

// Runs `sql`; the error names `label` (the store and its file).
Status exec(sqlite3* db, const char* sql, std::string_view label);

// Opens (creating, mode 0600) `file` for writing in WAL mode with synchronous=FULL (a
// commit is on disk when it returns) into *db; the caller closes it.
Status open_for_writing(const std::filesystem::path& file, std::string_view label, sqlite3** db);
// A second connection for reading (WAL: it never waits for the writer).
Status open_for_reading(const std::filesystem::path& file, std::string_view label, sqlite3** db);

// Applies migrations[v] (taking the database from version v to v + 1) for each v from
// the database's version up, each with its record in one transaction; refuses a
// database newer than migrations.size(). *version: the version after.
Status migrate(sqlite3* db, std::string_view label, std::span<const char* const> migrations,
               int* version);

}  // namespace paygate::sqlite
