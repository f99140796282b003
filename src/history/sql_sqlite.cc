// sql::Connection over SQLite (history/sql.h).
#include <sqlite3.h>

#include "history/sql.h"
#include "history/sqlite_db.h"

namespace paygate::sql {
namespace {

class SqliteStatement final : public StatementImpl {
 public:
  SqliteStatement(sqlite3* db, std::string_view sql) {
    rc_ = sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &stmt_, nullptr);
  }
  ~SqliteStatement() override { sqlite3_finalize(stmt_); }
  bool ok() const override { return rc_ == SQLITE_OK; }
  void bind(int at, i64 value) override { sqlite3_bind_int64(stmt_, at, value); }
  void bind_text(int at, std::string_view text) override {
    // (A view of nothing is an empty text, as MariaDB's X'' is, not NULL.)
    sqlite3_bind_text(stmt_, at, text.data() != nullptr ? text.data() : "",
                      static_cast<int>(text.size()), SQLITE_TRANSIENT);
  }
  void bind_blob(int at, std::string_view bytes) override {
    sqlite3_bind_blob(stmt_, at, bytes.data(), static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
  }
  void bind_null(int at) override { sqlite3_bind_null(stmt_, at); }
  int step() override {
    const int rc = sqlite3_step(stmt_);
    return rc == SQLITE_ROW ? kRow : rc == SQLITE_DONE ? kDone : kError;
  }
  bool run() override {
    const int rc = sqlite3_step(stmt_);
    reset();
    return rc == SQLITE_DONE;
  }
  void reset() override {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  i64 integer(int column) const override { return sqlite3_column_int64(stmt_, column); }
  std::string_view bytes(int column) const override {
    const void* p = sqlite3_column_type(stmt_, column) == SQLITE_TEXT
                        ? static_cast<const void*>(sqlite3_column_text(stmt_, column))
                        : sqlite3_column_blob(stmt_, column);
    return p == nullptr
               ? std::string_view()
               : std::string_view(static_cast<const char*>(p),
                                  static_cast<std::size_t>(sqlite3_column_bytes(stmt_, column)));
  }
  Type type(int column) const override {
    switch (sqlite3_column_type(stmt_, column)) {
      case SQLITE_NULL:
        return Type::null;
      case SQLITE_INTEGER:
        return Type::integer;
      default:
        return Type::bytes;
    }
  }
  int columns() const override { return sqlite3_column_count(stmt_); }

 private:
  sqlite3_stmt* stmt_ = nullptr;
  int rc_ = SQLITE_ERROR;
};

class SqliteConnection final : public Connection {
 public:
  explicit SqliteConnection(sqlite3* db) : db_(db) {}
  ~SqliteConnection() override { sqlite3_close(db_); }
  Dialect dialect() const noexcept override { return Dialect::sqlite; }
  std::unique_ptr<StatementImpl> prepare(std::string_view sql) override {
    return std::make_unique<SqliteStatement>(db_, sql);
  }
  bool exec(std::string_view sql) override {
    const std::string text(sql);
    return sqlite3_exec(db_, text.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK;
  }
  std::string error() const override { return sqlite3_errmsg(db_); }

 private:
  sqlite3* db_;
};

}  // namespace

Result<std::unique_ptr<Connection>> open_sqlite(const std::string& file, bool writing) {
  sqlite3* db = nullptr;
  const std::string label = "history store " + file;
  const Status opened = writing ? sqlite::open_for_writing(file, label, &db)
                                : sqlite::open_for_reading(file, label, &db);
  // (A failed open may still leave a handle to close.)
  std::unique_ptr<Connection> connection =
      db != nullptr ? std::make_unique<SqliteConnection>(db) : nullptr;
  if (!opened.ok()) return opened;
  return connection;
}

}  // namespace paygate::sql
