// sql::Connection over MariaDB's client library (history/sql.h).
//
// Statements are the text protocol's: a statement's parameters are written into its
// text when it runs, integers as decimals and every text or blob as a hex literal
// (X'...', so nothing a caller sent is ever read as SQL). An INSERT of one row of
// VALUES is queued rather than sent: its rows go together in one bulk execution of the
// statement prepared once (the binary protocol's arrays of parameters: one round trip
// and no parsing per row; a round trip per row would cap the store at a few thousand
// rows a second, and parsing inserts of many rows took a third of the server's time).
// Queued rows are sent before anything else runs on the connection, so a read sees
// every row written before it, and a transaction's COMMIT sends them first; a ROLLBACK
// drops them. What goes wrong in a queued insert is the error of what runs next.
//
// A connection that broke (the server went away, or killed it) connects again when it
// next begins a transaction or runs outside one; inside a transaction, every statement
// fails until the caller rolls back. The client library never reconnects by itself
// (that would commit the rest of a transaction on its own), autocommit is on outside
// transactions, and a COMMIT goes only to a connection the server says is still in
// the transaction; a COMMIT that fails rolls back.
#include <mysql.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <vector>

#include <fmt/format.h>

#include "base/assert.h"
#include "history/sql.h"

namespace paygate::sql {
namespace {

// A statement's text, cut at its parameters.
struct Piece {
  std::string text;   // before the parameter
  int parameter = 0;  // 1-based; 0: none (the last piece)
};

// Errors after which the connection is of no more use: the client's own (2000-2999: the
// server gone, lost, a read timed out...), the server's "connection killed" (1927),
// "shutdown in progress" (1053), "disconnected for idleness" (4031).
bool breaks_connection(unsigned code) {
  return (code >= 2000 && code <= 2999) || code == 1927 || code == 1053 || code == 4031;
}

std::vector<Piece> cut(std::string_view sql) {
  std::vector<Piece> pieces(1);
  int next_positional = 0;
  bool quoted = false;
  for (std::size_t i = 0; i < sql.size(); ++i) {
    const char c = sql[i];
    if (c == '\'') quoted = !quoted;
    if (c != '?' || quoted) {
      pieces.back().text += c;
      continue;
    }
    int number = 0;
    while (i + 1 < sql.size() && sql[i + 1] >= '0' && sql[i + 1] <= '9') {
      number = number * 10 + (sql[++i] - '0');
    }
    // (Bare and numbered parameters are not mixed in one statement; ?0 is not one.)
    pieces.back().parameter = number > 0 ? number : ++next_positional;
    pieces.emplace_back();
  }
  return pieces;
}

struct Value {
  enum class Kind : u8 { null, integer, bytes } kind = Kind::null;
  i64 integer = 0;
  std::string bytes;
};

void append_literal(std::string& out, const Value& v) {
  switch (v.kind) {
    case Value::Kind::null:
      out += "NULL";
      return;
    case Value::Kind::integer:
      fmt::format_to(std::back_inserter(out), "{}", v.integer);
      return;
    case Value::Kind::bytes: {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "X'";
      for (const char c : v.bytes) {
        const auto b = static_cast<unsigned char>(c);
        out += kHex[b >> 4];
        out += kHex[b & 15];
      }
      out += '\'';
      return;
    }
  }
}

class MariaDbConnection;

class MariaDbStatement final : public StatementImpl {
 public:
  MariaDbStatement(MariaDbConnection& db, std::string_view sql);
  ~MariaDbStatement() override;
  bool ok() const override { return true; }  // (its errors are the server's, when it runs)
  void bind(int at, i64 value) override { slot(at) = Value{Value::Kind::integer, value, {}}; }
  void bind_text(int at, std::string_view text) override {
    slot(at) = Value{Value::Kind::bytes, 0, std::string(text)};
  }
  void bind_blob(int at, std::string_view bytes) override { bind_text(at, bytes); }
  void bind_null(int at) override { slot(at) = Value{}; }
  int step() override;
  bool run() override;
  void reset() override;
  i64 integer(int column) const override {
    i64 value = 0;
    if (row_ != nullptr && row_[column] != nullptr) {
      std::from_chars(row_[column], row_[column] + lengths_[column], value);
    }
    return value;
  }
  std::string_view bytes(int column) const override {
    if (row_ == nullptr || row_[column] == nullptr) return {};
    return std::string_view(row_[column], lengths_[column]);
  }
  Type type(int column) const override {
    if (row_ == nullptr || row_[column] == nullptr) return Type::null;
    return IS_NUM(fields_[column].type) ? Type::integer : Type::bytes;
  }
  int columns() const override { return static_cast<int>(field_count_); }

 private:
  Value& slot(int at) {
    PG_ASSERT(at >= 1);
    if (static_cast<std::size_t>(at) > values_.size()) values_.resize(static_cast<std::size_t>(at));
    return values_[static_cast<std::size_t>(at - 1)];
  }
  // The statement's text with its parameters' values.
  std::string render() const;

  MariaDbConnection& db_;
  std::vector<Piece> pieces_;
  std::vector<Value> values_;
  // An INSERT of one row of VALUES (queued, not sent): its text with a `?` for each
  // parameter, and the parameter each `?` is in turn. Not one: prepared_ is empty.
  std::string prepared_;
  std::vector<int> row_parameters_;
  MYSQL_RES* result_ = nullptr;
  MYSQL_ROW row_ = nullptr;
  unsigned long* lengths_ = nullptr;
  MYSQL_FIELD* fields_ = nullptr;
  unsigned field_count_ = 0;
  bool executed_ = false;
  friend class MariaDbConnection;
};

class MariaDbConnection final : public Connection {
 public:
  MariaDbConnection(const MariaDbConfig& config, bool writing)
      : config_(config), writing_(writing) {}
  ~MariaDbConnection() override {
    pending_.clear();
    close_prepared();
    if (mysql_ != nullptr) mysql_close(mysql_);
  }
  Dialect dialect() const noexcept override { return Dialect::mariadb; }
  std::unique_ptr<StatementImpl> prepare(std::string_view sql) override {
    return std::make_unique<MariaDbStatement>(*this, sql);
  }
  bool exec(std::string_view sql) override {
    const bool committing = sql == "COMMIT";
    const bool ending = committing || sql == "ROLLBACK";
    const bool beginning = sql.starts_with("START TRANSACTION") || sql == "BEGIN";
    if (sql == "ROLLBACK") {
      pending_.clear();
      queued_bytes_ = 0;
    }
    bool ok = false;
    if (committing) {
      // Every queued row first; then only a transaction the server still holds.
      ok = !broken_ && flush();
      if (ok && !server_in_transaction()) {
        error_ = "the transaction is no longer open on the server";
        ok = false;
      }
      ok = ok && raw(sql);
      if (!ok && !broken_) (void)raw("ROLLBACK");  // (nothing of it may commit later)
    } else {
      ok = query(sql);
    }
    if (ok && beginning) in_transaction_ = true;
    if (ending) {
      // (What a failed COMMIT left queued is no transaction's any more.)
      in_transaction_ = false;
      pending_.clear();
      queued_bytes_ = 0;
    }
    if (ok) discard_results();
    return ok;
  }
  bool in_transaction() const noexcept { return in_transaction_; }
  std::string error() const override { return error_; }

  Status connect() {
    close_prepared();
    if (mysql_ != nullptr) mysql_close(mysql_);
    mysql_ = mysql_init(nullptr);
    if (mysql_ == nullptr) return Status::io_error("MariaDB: out of memory");
    const unsigned connect_timeout = config_.connect_timeout_s;
    const unsigned io_timeout = config_.io_timeout_s;
    mysql_options(mysql_, MYSQL_OPT_CONNECT_TIMEOUT, &connect_timeout);
    mysql_options(mysql_, MYSQL_OPT_READ_TIMEOUT, &io_timeout);
    mysql_options(mysql_, MYSQL_OPT_WRITE_TIMEOUT, &io_timeout);
    const my_bool no_reconnect = 0;
    mysql_options(mysql_, MYSQL_OPT_RECONNECT, &no_reconnect);
    if (config_.ssl) {
      const my_bool enforce = 1;
      const my_bool verify = config_.ssl_verify ? 1 : 0;
      mysql_options(mysql_, MYSQL_OPT_SSL_ENFORCE, &enforce);
      mysql_options(mysql_, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &verify);
      const auto file = [&](mysql_option option, const std::string& path) {
        if (!path.empty()) mysql_options(mysql_, option, path.c_str());
      };
      file(MYSQL_OPT_SSL_CA, config_.ssl_ca);
      file(MYSQL_OPT_SSL_CERT, config_.ssl_cert);
      file(MYSQL_OPT_SSL_KEY, config_.ssl_key);
    }
    const bool socket = !config_.socket.empty();
    if (mysql_real_connect(mysql_, socket ? nullptr : config_.host.c_str(), config_.user.c_str(),
                           config_.password.c_str(), nullptr, socket ? 0 : config_.port,
                           socket ? config_.socket.c_str() : nullptr, 0) == nullptr) {
      return failed(fmt::format("connect to {}", where()));
    }
    // (Belt and braces: MYSQL_OPT_SSL_ENFORCE already refused a connection without TLS
    // before authenticating; no statement is sent before this.)
    if (config_.ssl && mysql_get_ssl_cipher(mysql_) == nullptr) {
      error_ = "the connection is not encrypted, and TLS is required (mariadb_ssl)";
      return Status::io_error(fmt::format("MariaDB {}: connect: {}", where(), error_));
    }
    const std::string database = fmt::format("`{}`", config_.database);
    if (writing_ && !raw("CREATE DATABASE IF NOT EXISTS " + database)) {
      return failed("create database " + config_.database);
    }
    if (!raw("USE " + database) ||
        !raw("SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'") ||
        !raw("SET NAMES utf8mb4") || mysql_autocommit(mysql_, 1) != 0) {
      return failed("set up the session");
    }
    if (writing_) {
      if (Status s = check_durable(); !s.ok()) {
        error_ = s.message();
        return s;
      }
    }
    // A lock waited for (a second writer's watermark) fails before the connection's
    // own read timeout would take it for a broken one.
    if (!raw(fmt::format("SET SESSION innodb_lock_wait_timeout = {}",
                         std::max<u32>(1, config_.io_timeout_s / 2))) ||
        !raw("SELECT @@max_allowed_packet")) {
      return failed("set up the session");
    }
    if (MYSQL_RES* result = mysql_store_result(mysql_)) {
      MYSQL_ROW row = mysql_fetch_row(result);
      if (row != nullptr && row[0] != nullptr) {
        queue_bytes_max_ =
            std::min<std::size_t>(std::size_t{4} << 20, std::strtoull(row[0], nullptr, 10) / 2);
      }
      mysql_free_result(result);
    }
    broken_ = false;
    return Status::success();
  }
  // A writer's commits must be on disk when they return (the journal's retention
  // counts on a written watermark): InnoDB's log flushed at each commit, and, with a
  // binary log (whose sync then stands for InnoDB's), that log synced at each commit.
  // Checked at every connect.
  Status check_durable() {
    if (!raw("SELECT @@innodb_flush_log_at_trx_commit, @@log_bin, @@sync_binlog")) {
      return failed("read the server's durability settings");
    }
    MYSQL_RES* result = mysql_store_result(mysql_);
    MYSQL_ROW row = result != nullptr ? mysql_fetch_row(result) : nullptr;
    const auto number = [&](int column) {
      return row != nullptr && row[column] != nullptr ? std::atoll(row[column]) : -1;
    };
    const long long flush_at_commit = number(0), log_bin = number(1), sync_binlog = number(2);
    if (result != nullptr) mysql_free_result(result);
    if (flush_at_commit != 1 || (log_bin != 0 && sync_binlog != 1)) {
      return Status::invalid_config(fmt::format(
          "MariaDB {}: innodb_flush_log_at_trx_commit is {}, log_bin {}, sync_binlog {}: the "
          "history store needs commits flushed to disk (innodb_flush_log_at_trx_commit = 1, "
          "and sync_binlog = 1 where the binary log is on): the journal's retention counts on "
          "a written watermark",
          where(), flush_at_commit, log_bin, sync_binlog));
    }
    return Status::success();
  }
  bool server_in_transaction() {
    unsigned int status = 0;
    if (mariadb_get_infov(mysql_, MARIADB_CONNECTION_SERVER_STATUS, &status) != 0) return false;
    return (status & SERVER_STATUS_IN_TRANS) != 0;
  }
  std::string where() const {
    return config_.socket.empty() ? fmt::format("{}:{}", config_.host, config_.port)
                                  : config_.socket;
  }
  Status failed(const std::string& what) {
    error_ = mysql_ != nullptr ? mysql_error(mysql_) : "no connection";
    return Status::io_error(fmt::format("MariaDB {}: {}: {}", where(), what, error_));
  }

  // Sends what is queued, then `sql`; results are the caller's to take.
  bool query(std::string_view sql) {
    if (broken_ && !in_transaction_) {
      if (Status s = connect(); !s.ok()) return false;
    }
    if (broken_) {
      error_ = "the connection broke in a transaction";
      return false;
    }
    if (!flush()) return false;
    return raw(sql);
  }
  bool raw(std::string_view sql) {
    if (mysql_real_query(mysql_, sql.data(), sql.size()) == 0) return true;
    note_failure();
    return false;
  }
  // Takes the last failure's words, and whether it broke the connection.
  void note_failure() {
    error_ = mysql_error(mysql_);
    if (breaks_connection(mysql_errno(mysql_))) broken_ = true;
  }
  void discard_results() {
    do {
      if (MYSQL_RES* r = mysql_store_result(mysql_)) mysql_free_result(r);
    } while (mysql_next_result(mysql_) == 0);
  }

  // Queues a row of `statement`'s insert: its values in the order of its `?`s (sending
  // the queue when it passes queue_bytes_max_).
  bool queue(const MariaDbStatement* statement, std::vector<Value> row, std::size_t bytes) {
    if (broken_) {
      error_ = "the connection broke in a transaction";
      return false;
    }
    auto it = std::find_if(pending_.begin(), pending_.end(),
                           [&](const Pending& p) { return p.statement == statement; });
    if (it == pending_.end()) {
      it = pending_.insert(
          pending_.end(),
          Pending{statement, statement->prepared_, statement->row_parameters_.size(), {}});
    }
    it->values.insert(it->values.end(), std::make_move_iterator(row.begin()),
                      std::make_move_iterator(row.end()));
    queued_bytes_ += bytes;
    if (queued_bytes_ < queue_bytes_max_) return true;
    return flush();
  }
  // Sends every queued insert, in the order their statements first queued.
  bool flush() {
    bool ok = true;
    for (Pending& p : pending_) {
      if (!ok) break;
      ok = execute_bulk(p);
    }
    pending_.clear();
    queued_bytes_ = 0;
    return ok;
  }
  void forget(const MariaDbStatement* statement) {
    // (Its rows still go: a statement may go before the commit that sends them; another
    // statement made where it was is another's.)
    for (Pending& p : pending_) {
      if (p.statement == statement) p.statement = nullptr;
    }
  }

  MYSQL* mysql() { return mysql_; }

 private:
  // Queued rows are sent at this many bytes: 4 MiB, or half the server's largest
  // packet where that is less (a bulk execution is one packet).
  std::size_t queue_bytes_max_ = std::size_t{4} << 20;
  struct Pending {
    const MariaDbStatement* statement;
    std::string sql;            // prepared
    std::size_t columns;        // its `?`s
    std::vector<Value> values;  // row by row
  };

  // Runs p.sql once with each of its rows' values, in one bulk execution.
  bool execute_bulk(Pending& p) {
    MYSQL_STMT*& stmt = prepared_[p.sql];
    if (stmt == nullptr) {
      stmt = mysql_stmt_init(mysql_);
      if (stmt == nullptr ||
          mysql_stmt_prepare(stmt, p.sql.data(), static_cast<unsigned long>(p.sql.size())) != 0) {
        error_ = stmt != nullptr ? mysql_stmt_error(stmt) : "out of memory";
        if (stmt != nullptr && breaks_connection(mysql_stmt_errno(stmt))) broken_ = true;
        if (stmt != nullptr) mysql_stmt_close(stmt);
        stmt = nullptr;
        return false;
      }
    }
    const std::size_t rows = p.columns == 0 ? 0 : p.values.size() / p.columns;
    // Column by column: integers in an array, texts as pointers and lengths, a NULL by
    // its indicator.
    std::vector<MYSQL_BIND> binds(p.columns);
    std::vector<std::vector<long long>> integers(p.columns);
    std::vector<std::vector<char*>> texts(p.columns);
    std::vector<std::vector<unsigned long>> lengths(p.columns);
    std::vector<std::vector<char>> indicators(p.columns);
    for (std::size_t c = 0; c < p.columns; ++c) {
      Value::Kind kind = Value::Kind::null;
      for (std::size_t r = 0; r < rows && kind == Value::Kind::null; ++r)
        kind = p.values[r * p.columns + c].kind;
      const bool bytes = kind == Value::Kind::bytes;
      indicators[c].resize(rows);
      if (bytes) {
        texts[c].resize(rows);
        lengths[c].resize(rows);
      } else {
        integers[c].resize(rows);
      }
      for (std::size_t r = 0; r < rows; ++r) {
        Value& v = p.values[r * p.columns + c];
        if (v.kind != Value::Kind::null && v.kind != kind) {
          error_ = "a column of a queued insert has integers and texts";
          return false;
        }
        indicators[c][r] = v.kind == Value::Kind::null ? STMT_INDICATOR_NULL : STMT_INDICATOR_NONE;
        if (bytes) {
          texts[c][r] = v.bytes.data();
          lengths[c][r] = static_cast<unsigned long>(v.bytes.size());
        } else {
          integers[c][r] = v.integer;
        }
      }
      MYSQL_BIND& b = binds[c];
      std::memset(&b, 0, sizeof b);
      b.buffer_type = bytes ? MYSQL_TYPE_STRING : MYSQL_TYPE_LONGLONG;
      b.buffer = bytes ? static_cast<void*>(texts[c].data()) : integers[c].data();
      b.length = bytes ? lengths[c].data() : nullptr;
      b.u.indicator = indicators[c].data();
    }
    unsigned int array_size = static_cast<unsigned int>(rows);
    if (mysql_stmt_attr_set(stmt, STMT_ATTR_ARRAY_SIZE, &array_size) != 0 ||
        mysql_stmt_bind_param(stmt, binds.data()) != 0 || mysql_stmt_execute(stmt) != 0) {
      error_ = mysql_stmt_error(stmt);
      if (breaks_connection(mysql_stmt_errno(stmt))) broken_ = true;
      return false;
    }
    return true;
  }
  void close_prepared() {
    for (auto& [sql, stmt] : prepared_) {
      if (stmt != nullptr) mysql_stmt_close(stmt);
    }
    prepared_.clear();
  }

  MariaDbConfig config_;
  bool writing_;
  MYSQL* mysql_ = nullptr;
  std::string error_;
  bool broken_ = false;
  bool in_transaction_ = false;
  std::vector<Pending> pending_;
  std::size_t queued_bytes_ = 0;
  std::map<std::string, MYSQL_STMT*> prepared_;  // the queued inserts', by their text
};

MariaDbStatement::MariaDbStatement(MariaDbConnection& db, std::string_view sql)
    : db_(db), pieces_(cut(sql)) {
  // One row of VALUES: "INSERT ... VALUES (" ... ")" [tail], the row's parameters all
  // between its parentheses.
  const std::string& first = pieces_.front().text;
  const std::size_t values = first.find("VALUES (");
  if (first.starts_with("INSERT") && values != std::string::npos && pieces_.size() > 1 &&
      pieces_.back().text.starts_with(")")) {
    for (const Piece& piece : pieces_) {
      prepared_ += piece.text;
      if (piece.parameter > 0) {
        prepared_ += '?';
        row_parameters_.push_back(piece.parameter);
      }
    }
  }
}

MariaDbStatement::~MariaDbStatement() {
  if (result_ != nullptr) mysql_free_result(result_);
  db_.forget(this);
}

std::string MariaDbStatement::render() const {
  std::string out;
  for (std::size_t i = 0; i < pieces_.size(); ++i) {
    out += pieces_[i].text;
    if (pieces_[i].parameter > 0) {
      const auto at = static_cast<std::size_t>(pieces_[i].parameter);
      append_literal(out, at <= values_.size() ? values_[at - 1] : Value{});
    }
  }
  return out;
}

int MariaDbStatement::step() {
  if (!executed_) {
    executed_ = true;
    if (!db_.query(render())) return kError;
    result_ = mysql_store_result(db_.mysql());
    if (result_ == nullptr) {
      if (mysql_field_count(db_.mysql()) == 0) return kDone;
      db_.note_failure();
      return kError;
    }
    fields_ = mysql_fetch_fields(result_);
    field_count_ = mysql_num_fields(result_);
  }
  if (result_ == nullptr) return kDone;
  row_ = mysql_fetch_row(result_);
  if (row_ == nullptr) return kDone;
  lengths_ = mysql_fetch_lengths(result_);
  return kRow;
}

bool MariaDbStatement::run() {
  bool ok = false;
  if (!prepared_.empty() && db_.in_transaction()) {
    std::vector<Value> row;
    row.reserve(row_parameters_.size());
    std::size_t bytes = 16;
    for (const int at : row_parameters_) {
      const auto index = static_cast<std::size_t>(at);
      row.push_back(index <= values_.size() ? values_[index - 1] : Value{});
      bytes += 8 + row.back().bytes.size();
    }
    ok = db_.queue(this, std::move(row), bytes);
  } else {
    ok = step() != kError;
  }
  reset();
  return ok;
}

void MariaDbStatement::reset() {
  if (result_ != nullptr) mysql_free_result(result_);
  result_ = nullptr;
  row_ = nullptr;
  executed_ = false;
  values_.clear();
}

}  // namespace

bool valid_database_name(std::string_view name) {
  return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  });
}

Status check_tls(const MariaDbConfig& config) {
  if (!config.ssl) {
    if (!config.ssl_ca.empty() || !config.ssl_cert.empty() || !config.ssl_key.empty()) {
      return Status::invalid_config(
          "mariadb_ssl_ca, mariadb_ssl_cert and mariadb_ssl_key are used only with mariadb_ssl "
          "= true");
    }
    return Status::success();
  }
  if (config.ssl_verify && config.ssl_ca.empty()) {
    return Status::invalid_config(
        "mariadb_ssl_ca must name the CA certificates that verify the server (or "
        "mariadb_ssl_verify = false, which lets anyone between pose as the server)");
  }
  if (config.ssl_cert.empty() != config.ssl_key.empty()) {
    return Status::invalid_config("mariadb_ssl_cert and mariadb_ssl_key go together");
  }
  return Status::success();
}

Result<std::unique_ptr<Connection>> open_mariadb(const MariaDbConfig& config, bool writing) {
  if (!valid_database_name(config.database)) {
    return Status::invalid_config(fmt::format(
        "MariaDB database name \"{}\": 1 to 64 letters, digits and _", config.database));
  }
  if (Status tls = check_tls(config); !tls.ok()) return tls;
  // The client library's global state, made once before any connection (mysql_init
  // would make it on first use, which is not safe from two threads at once).
  static const bool library = mysql_library_init(0, nullptr, nullptr) == 0;
  if (!library) return Status::io_error("MariaDB: the client library did not initialise");
  auto connection = std::make_unique<MariaDbConnection>(config, writing);
  if (Status s = connection->connect(); !s.ok()) return s;
  return std::unique_ptr<Connection>(std::move(connection));
}

}  // namespace paygate::sql
