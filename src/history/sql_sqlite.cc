// sql::Connection over SQLite (history/sql.h): the statements are sqlite::Statement's
// (history/sqlite_db.h, which the webhook store uses as they are).
#include <sqlite3.h>

#include "history/sql.h"
#include "history/sqlite_db.h"

namespace paygate::sql {
namespace {

class SqliteStatement final : public StatementImpl {
 public:
  SqliteStatement(sqlite3* db, std::string_view sql) : statement_(db, std::string(sql).c_str()) {}
  bool ok() const override { return statement_.ok(); }
  void bind(int at, i64 value) override { statement_.bind(at, value); }
  void bind_text(int at, std::string_view text) override {
    // (A view of nothing is an empty text, as MariaDB's X'' is, not NULL.)
    statement_.bind_text(at, text.data() != nullptr ? text : std::string_view(""));
  }
  void bind_blob(int at, std::string_view bytes) override {
    statement_.bind_blob(at, bytes.data() != nullptr ? bytes.data() : "", bytes.size());
  }
  void bind_null(int at) override { statement_.bind_null(at); }
  int step() override {
    const int rc = statement_.step();
    return rc == SQLITE_ROW ? kRow : rc == SQLITE_DONE ? kDone : kError;
  }
  bool run() override { return statement_.run(); }
  void reset() override { statement_.reset(); }
  i64 integer(int column) const override { return statement_.integer(column); }
  // (SQLite hands a text's bytes as a blob's, unconverted.)
  std::string_view bytes(int column) const override { return statement_.blob(column); }
  Type type(int column) const override {
    switch (statement_.type(column)) {
      case SQLITE_NULL:
        return Type::null;
      case SQLITE_INTEGER:
        return Type::integer;
      default:
        return Type::bytes;
    }
  }
  int columns() const override { return statement_.columns(); }

 private:
  sqlite::Statement statement_;
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
