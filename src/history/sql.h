// One way to talk to the history store's database, whichever it is (docs/HISTORY.md):
// SQLite, embedded, or MariaDB, a server. The store's code is written once against a
// Connection and its Statements; what differs between the two (their DDL, an upsert's
// words, how a transaction begins) is asked of the connection's dialect.
//
// Parameters are `?` (the next) or `?N` (the Nth, from 1, usable more than once), as
// SQLite numbers them; values are 64-bit integers, texts, blobs and NULL. Columns read
// back as integers, bytes (a text or a blob) and NULL.
//
// Threads: a connection and its statements belong to one thread at a time (the store
// guards each with a mutex).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "base/status.h"
#include "base/types.h"

namespace paygate::sql {

enum class Dialect : u8 { sqlite, mariadb };
// What step() says.
inline constexpr int kRow = 100;   // a row is there to read
inline constexpr int kDone = 101;  // no more rows (or a statement that returns none ran)
inline constexpr int kError = 1;
enum class Type : u8 { null, integer, bytes };

// A prepared statement of one connection (the implementations'), behind Statement.
class StatementImpl {
 public:
  virtual ~StatementImpl() = default;
  virtual bool ok() const = 0;
  virtual void bind(int at, i64 value) = 0;
  virtual void bind_text(int at, std::string_view text) = 0;
  virtual void bind_blob(int at, std::string_view bytes) = 0;  // (MariaDB: as text)
  virtual void bind_null(int at) = 0;
  virtual int step() = 0;
  // Runs it to its end (a MariaDB insert of many rows may only be queued: its error,
  // if any, is the next statement's or the commit's).
  virtual bool run() = 0;
  virtual void reset() = 0;
  virtual i64 integer(int column) const = 0;
  virtual std::string_view bytes(int column) const = 0;  // valid until the next step()
  virtual Type type(int column) const = 0;
  virtual int columns() const = 0;
};

class Connection {
 public:
  virtual ~Connection() = default;
  virtual Dialect dialect() const noexcept = 0;
  virtual std::unique_ptr<StatementImpl> prepare(std::string_view sql) = 0;
  // Runs `sql` (one statement; MariaDB: any queued rows first).
  virtual bool exec(std::string_view sql) = 0;
  // What the last failure was.
  virtual std::string error() const = 0;
  // Begins a transaction that writes (SQLite: takes the write lock at once).
  bool begin_writing() {
    return exec(dialect() == Dialect::sqlite ? "BEGIN IMMEDIATE" : "START TRANSACTION");
  }
  // Begins a transaction that reads every table as of one commit.
  bool begin_reading() {
    return exec(dialect() == Dialect::sqlite ? "BEGIN"
                                             : "START TRANSACTION WITH CONSISTENT SNAPSHOT");
  }
};

// A statement of `db`, finalized when it goes; the API of sqlite::Statement.
class Statement {
 public:
  Statement(Connection& db, std::string_view sql) : impl_(db.prepare(sql)) {}
  Statement(Connection* db, std::string_view sql) : Statement(*db, sql) {}
  Statement(const std::unique_ptr<Connection>& db, std::string_view sql) : Statement(*db, sql) {}

  bool ok() const noexcept { return impl_ != nullptr && impl_->ok(); }
  Statement& bind(int at, i64 value) {
    impl_->bind(at, value);
    return *this;
  }
  Statement& bind_text(int at, std::string_view text) {
    impl_->bind_text(at, text);
    return *this;
  }
  Statement& bind_blob(int at, const void* data, std::size_t size) {
    impl_->bind_blob(at, std::string_view(static_cast<const char*>(data), size));
    return *this;
  }
  Statement& bind_null(int at) {
    impl_->bind_null(at);
    return *this;
  }
  int step() { return impl_->step(); }
  bool run() { return impl_->run(); }
  void reset() { impl_->reset(); }
  i64 integer(int column) const { return impl_->integer(column); }
  std::string text(int column) const { return std::string(impl_->bytes(column)); }
  std::string_view blob(int column) const { return impl_->bytes(column); }
  int columns() const { return impl_->columns(); }
  Type type(int column) const { return impl_->type(column); }
  bool is_null(int column) const { return impl_->type(column) == Type::null; }

 private:
  std::unique_ptr<StatementImpl> impl_;
};

// Where a MariaDB store is ([history] in the configuration, docs/OPERATING.md).
struct MariaDbConfig {
  std::string host = "127.0.0.1";
  u16 port = 3306;
  std::string socket = {};  // a Unix socket instead of host and port, when set
  std::string user = "paygate";
  std::string password = {};
  std::string database = "paygate";
  u32 connect_timeout_s = 5;
  u32 io_timeout_s = 30;  // a read or write of the connection
  // TLS: when `ssl`, a connection that is not encrypted is refused. The server's
  // certificate is checked against the CA certificates in `ssl_ca`, and its name
  // against `host`, unless `ssl_verify` is false. A client certificate when `ssl_cert`
  // and `ssl_key` are set.
  bool ssl = false;
  std::string ssl_ca = {};
  std::string ssl_cert = {};
  std::string ssl_key = {};
  bool ssl_verify = true;
};

// A database name put into SQL as it is (CREATE DATABASE, USE): 1 to 64 letters, digits
// and _, nothing that needs quoting.
bool valid_database_name(std::string_view name);
// Whether the TLS settings hang together (the message names the setting to change):
// a verified server needs the CA to verify it with, a client certificate its key, and
// TLS settings without `ssl` would silently not be used.
Status check_tls(const MariaDbConfig& config);

// SQLite: opens (creating, mode 0600; WAL, synchronous=FULL) the file for writing, or an
// existing one for reading only.
Result<std::unique_ptr<Connection>> open_sqlite(const std::string& file, bool writing);
// MariaDB: connects (the database is made when it is not there, for a writer), with
// autocommit, binary collation of byte strings, and strict SQL mode. A writer refuses a
// server that does not flush its log at every commit (innodb_flush_log_at_trx_commit
// other than 1): the journal's retention counts on a written watermark staying written.
Result<std::unique_ptr<Connection>> open_mariadb(const MariaDbConfig& config, bool writing);

}  // namespace paygate::sql
