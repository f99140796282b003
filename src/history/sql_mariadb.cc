// sql::Connection over MariaDB's client library (history/sql.h).
//
// Statements are the text protocol's: a statement's parameters are written into its
// text when it runs, integers as decimals and every text or blob as a hex literal
// (X'...', so nothing a caller sent is ever read as SQL). An INSERT of one row of
// VALUES is queued rather than sent, its rows gathered into one INSERT of many rows
// (about 1 MB): a round trip per row would cap the store at a few thousand rows a
// second. Queued rows are sent before anything else runs on the connection, so a
// read sees every row written before it, and a transaction's COMMIT sends them first;
// a ROLLBACK drops them. What goes wrong in a queued insert is the error of what runs
// next.
//
// A connection that broke (the server went away) connects again when it next begins
// a transaction or runs outside one; inside a transaction, every statement fails
// until the caller rolls back.
#include <mysql.h>
#include <errmsg.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "history/sql.h"

namespace paygate::sql {
namespace {

// A statement's text, cut at its parameters.
struct Piece {
  std::string text;  // before the parameter
  int parameter = 0;  // 1-based; 0: none (the last piece)
};

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
    if (static_cast<std::size_t>(at) > values_.size()) values_.resize(static_cast<std::size_t>(at));
    return values_[static_cast<std::size_t>(at - 1)];
  }
  // The text of pieces_ [first, last) with their parameters, less `skip` characters.
  std::string render(std::size_t first, std::size_t last, std::size_t skip = 0) const;

  MariaDbConnection& db_;
  std::vector<Piece> pieces_;
  std::vector<Value> values_;
  // An INSERT of one row of VALUES: head_ ("INSERT ... VALUES "), the row (pieces_ up to
  // row_end_, less the head), tail_ (after its ")": ON DUPLICATE KEY ...). Not one:
  // row_end_ == 0.
  std::size_t row_end_ = 0;
  std::string head_, tail_;
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
  MariaDbConnection(const MariaDbConfig& config, bool writing) : config_(config), writing_(writing) {}
  ~MariaDbConnection() override {
    pending_.clear();
    if (mysql_ != nullptr) mysql_close(mysql_);
  }
  Dialect dialect() const noexcept override { return Dialect::mariadb; }
  std::unique_ptr<StatementImpl> prepare(std::string_view sql) override {
    return std::make_unique<MariaDbStatement>(*this, sql);
  }
  bool exec(std::string_view sql) override {
    const bool ending = sql == "ROLLBACK" || sql == "COMMIT";
    const bool beginning = sql.starts_with("START TRANSACTION") || sql == "BEGIN";
    if (sql == "ROLLBACK") pending_.clear();
    bool ok = query(sql);
    if (ok && beginning) in_transaction_ = true;
    if (ending) in_transaction_ = false;
    if (ok) discard_results();
    return ok;
  }
  std::string error() const override { return error_; }

  Status connect() {
    if (mysql_ != nullptr) mysql_close(mysql_);
    mysql_ = mysql_init(nullptr);
    if (mysql_ == nullptr) return Status::io_error("MariaDB: out of memory");
    const unsigned connect_timeout = config_.connect_timeout_s;
    const unsigned io_timeout = config_.io_timeout_s;
    mysql_options(mysql_, MYSQL_OPT_CONNECT_TIMEOUT, &connect_timeout);
    mysql_options(mysql_, MYSQL_OPT_READ_TIMEOUT, &io_timeout);
    mysql_options(mysql_, MYSQL_OPT_WRITE_TIMEOUT, &io_timeout);
    const bool socket = !config_.socket.empty();
    if (mysql_real_connect(mysql_, socket ? nullptr : config_.host.c_str(), config_.user.c_str(),
                           config_.password.c_str(), nullptr, socket ? 0 : config_.port,
                           socket ? config_.socket.c_str() : nullptr, 0) == nullptr) {
      return failed(fmt::format("connect to {}", where()));
    }
    const std::string database = fmt::format("`{}`", config_.database);
    if (writing_ && !raw("CREATE DATABASE IF NOT EXISTS " + database)) {
      return failed("create database " + config_.database);
    }
    if (!raw("USE " + database) ||
        !raw("SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'") ||
        !raw("SET NAMES utf8mb4")) {
      return failed("set up the session");
    }
    broken_ = false;
    return Status::success();
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
    error_ = mysql_error(mysql_);
    const unsigned code = mysql_errno(mysql_);
    if (code == CR_SERVER_GONE_ERROR || code == CR_SERVER_LOST) broken_ = true;
    return false;
  }
  void discard_results() {
    do {
      if (MYSQL_RES* r = mysql_store_result(mysql_)) mysql_free_result(r);
    } while (mysql_next_result(mysql_) == 0);
  }

  // Queues a row of `statement`'s insert (sending its rows when they pass 1 MB).
  bool queue(const MariaDbStatement* statement, const std::string& row) {
    auto it = std::find_if(pending_.begin(), pending_.end(),
                           [&](const Pending& p) { return p.statement == statement; });
    if (it == pending_.end()) {
      it = pending_.insert(pending_.end(), Pending{statement, statement->head_, statement->tail_});
    } else {
      it->sql += ',';
    }
    it->sql += row;
    if (it->sql.size() < kQueueBytes) return true;
    return flush();
  }
  // Sends every queued insert, in the order their statements first queued.
  bool flush() {
    bool ok = true;
    for (Pending& p : pending_) {
      if (!ok) break;
      p.sql += p.tail;
      ok = raw(p.sql);
    }
    pending_.clear();
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
  static constexpr std::size_t kQueueBytes = 1 << 20;
  struct Pending {
    const MariaDbStatement* statement;
    std::string sql, tail;
  };

  MariaDbConfig config_;
  bool writing_;
  MYSQL* mysql_ = nullptr;
  std::string error_;
  bool broken_ = false;
  bool in_transaction_ = false;
  std::vector<Pending> pending_;
};

MariaDbStatement::MariaDbStatement(MariaDbConnection& db, std::string_view sql)
    : db_(db), pieces_(cut(sql)) {
  // One row of VALUES: "INSERT ... VALUES (" ... ")" [tail], the row's parameters all
  // between its parentheses.
  const std::string& first = pieces_.front().text;
  const std::size_t values = first.find("VALUES (");
  if (first.starts_with("INSERT") && values != std::string::npos && pieces_.size() > 1) {
    std::size_t close = pieces_.size() - 1;  // the piece with the row's ")"
    if (pieces_[close].text.starts_with(")")) {
      head_ = first.substr(0, values + 7);
      tail_ = pieces_[close].text.substr(1);
      row_end_ = close;
    }
  }
}

MariaDbStatement::~MariaDbStatement() {
  if (result_ != nullptr) mysql_free_result(result_);
  db_.forget(this);
}

std::string MariaDbStatement::render(std::size_t first, std::size_t last,
                                     std::size_t skip) const {
  std::string out;
  for (std::size_t i = first; i < last; ++i) {
    out += std::string_view(pieces_[i].text).substr(i == first ? skip : 0);
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
    if (!db_.query(render(0, pieces_.size()))) return kError;
    result_ = mysql_store_result(db_.mysql());
    if (result_ == nullptr) return mysql_field_count(db_.mysql()) == 0 ? kDone : kError;
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
  if (row_end_ > 0) {
    ok = db_.queue(this, render(0, row_end_, head_.size()) + ")");
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

Result<std::unique_ptr<Connection>> open_mariadb(const MariaDbConfig& config, bool writing) {
  auto connection = std::make_unique<MariaDbConnection>(config, writing);
  if (Status s = connection->connect(); !s.ok()) return s;
  if (writing) {
    MariaDbStatement flushed(*connection, "SELECT @@innodb_flush_log_at_trx_commit");
    if (flushed.step() != kRow) return connection->failed("read innodb_flush_log_at_trx_commit");
    if (flushed.integer(0) != 1) {
      return Status::invalid_config(fmt::format(
          "MariaDB {}: innodb_flush_log_at_trx_commit is {}, and the history store needs 1 (a "
          "commit flushed to disk: the journal's retention counts on a written watermark)",
          connection->where(), flushed.integer(0)));
    }
  }
  return std::unique_ptr<Connection>(std::move(connection));
}

}  // namespace paygate::sql
