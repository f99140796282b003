#include "history/sqlite_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <algorithm>
#include <functional>
#include <limits>

#include <fmt/format.h>

#include "base/assert.h"

namespace paygate::history {
namespace {

// Each migration takes the store from the version before it to its own.
constexpr const char* kMigrations[] = {
    // 1: the first schema.
    R"sql(
CREATE TABLE watermarks(
  grp INTEGER PRIMARY KEY,
  first_sequence INTEGER NOT NULL,
  sequence INTEGER NOT NULL);
CREATE TABLE events(
  grp INTEGER NOT NULL, sequence INTEGER NOT NULL, idx INTEGER NOT NULL,
  kind INTEGER NOT NULL, id INTEGER NOT NULL, debit INTEGER NOT NULL,
  credit INTEGER NOT NULL, amount INTEGER NOT NULL, released INTEGER NOT NULL,
  currency TEXT NOT NULL, owner INTEGER NOT NULL, detail INTEGER NOT NULL,
  at_ns INTEGER NOT NULL,
  PRIMARY KEY (grp, sequence, idx)) WITHOUT ROWID;
CREATE TABLE transfers(
  grp INTEGER NOT NULL, id INTEGER NOT NULL, created_sequence INTEGER NOT NULL,
  debit INTEGER NOT NULL, credit INTEGER NOT NULL, amount INTEGER NOT NULL,
  posted_amount INTEGER NOT NULL, currency TEXT NOT NULL, status TEXT NOT NULL,
  flags INTEGER NOT NULL, expires_ns INTEGER NOT NULL, created_ns INTEGER NOT NULL, updated_sequence INTEGER NOT NULL,
  updated_ns INTEGER NOT NULL, reference TEXT, metadata TEXT,
  PRIMARY KEY (grp, id)) WITHOUT ROWID;
CREATE TABLE entries(
  account INTEGER NOT NULL, sequence INTEGER NOT NULL, idx INTEGER NOT NULL,
  side INTEGER NOT NULL, transfer INTEGER NOT NULL, kind INTEGER NOT NULL,
  amount INTEGER NOT NULL, held INTEGER NOT NULL, balance INTEGER NOT NULL,
  available INTEGER NOT NULL, at_ns INTEGER NOT NULL,
  PRIMARY KEY (account, sequence, idx, side)) WITHOUT ROWID;
CREATE TABLE annotations(
  grp INTEGER NOT NULL, sequence INTEGER NOT NULL, n INTEGER NOT NULL,
  kind INTEGER NOT NULL, text TEXT NOT NULL,
  PRIMARY KEY (grp, sequence, n)) WITHOUT ROWID;
)sql",
};
static_assert(std::size(kMigrations) == kSchemaVersion);

i64 signed_of(u64 value) noexcept {
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
  i64 integer(int column) const { return sqlite3_column_int64(stmt_, column); }
  std::string text(int column) const {
    const unsigned char* p = sqlite3_column_text(stmt_, column);
    return p == nullptr
               ? std::string()
               : std::string(reinterpret_cast<const char*>(p),
                             static_cast<std::size_t>(sqlite3_column_bytes(stmt_, column)));
  }
  bool is_null(int column) const { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }

 private:
  sqlite3_stmt* stmt_ = nullptr;
  int rc_ = SQLITE_ERROR;
};

const char* status_after(LedgerEventKind kind) noexcept {
  switch (kind) {
    case LedgerEventKind::transfer_posted:
    case LedgerEventKind::pending_posted:
      return "posted";
    case LedgerEventKind::transfer_pending:
      return "pending";
    case LedgerEventKind::pending_voided:
      return "voided";
    case LedgerEventKind::pending_expired:
      return "expired";
    case LedgerEventKind::account_created:
      break;
  }
  return "";
}

}  // namespace

Result<std::unique_ptr<SqliteStore>> SqliteStore::open(const std::filesystem::path& file) {
  std::unique_ptr<SqliteStore> store(new SqliteStore());
  store->file_ = file;
  // 0600, as every file of the data directory (it holds what callers sent); SQLite
  // gives its -wal and -shm files the database file's mode.
  const int fd = ::open(file.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) {
    return Status::io_error(
        fmt::format("history store {}: cannot open: {}", file.string(), std::strerror(errno)));
  }
  ::fchmod(fd, 0600);
  ::close(fd);
  const int rc =
      sqlite3_open_v2(file.c_str(), &store->db_,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) return store->failed("open");
  sqlite3_busy_timeout(store->db_, 5000);
  // WAL: readers do not wait for the writer. FULL: a committed watermark is on disk.
  for (const char* pragma :
       {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA foreign_keys=OFF",
        "PRAGMA cache_size=-262144", "PRAGMA wal_autocheckpoint=16384"}) {
    if (Status s = store->exec(pragma); !s.ok()) return s;
  }
  if (Status s = store->migrate(); !s.ok()) return s;
  if (sqlite3_open_v2(file.c_str(), &store->reader_, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
                      nullptr) != SQLITE_OK) {
    return store->read_failed("open for reading");
  }
  sqlite3_busy_timeout(store->reader_, 5000);
  return store;
}

SqliteStore::~SqliteStore() {
  if (reader_ != nullptr) sqlite3_close(reader_);
  if (db_ != nullptr) sqlite3_close(db_);
}

Status SqliteStore::read_failed(const std::string& what) const {
  return Status::io_error(
      fmt::format("history store {}: {}: {}", file_.string(), what,
                  reader_ != nullptr ? sqlite3_errmsg(reader_) : "no connection"));
}

Status SqliteStore::failed(const std::string& what) const {
  return Status::io_error(fmt::format("history store {}: {}: {}", file_.string(), what,
                                      db_ != nullptr ? sqlite3_errmsg(db_) : "no connection"));
}

Status SqliteStore::exec(const char* sql) {
  char* error = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &error) != SQLITE_OK) {
    const std::string why = error != nullptr ? error : "unknown error";
    sqlite3_free(error);
    return Status::io_error(fmt::format("history store {}: {}", file_.string(), why));
  }
  return Status::success();
}

Status SqliteStore::migrate() {
  if (Status s = exec("CREATE TABLE IF NOT EXISTS schema_migrations("
                      "version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)");
      !s.ok()) {
    return s;
  }
  {
    Statement current(db_, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations");
    if (!current.ok() || current.step() != SQLITE_ROW) return failed("read the schema version");
    schema_version_ = static_cast<int>(current.integer(0));
  }
  if (schema_version_ > kSchemaVersion) {
    return Status::invalid_config(
        fmt::format("history store {} has schema version {}, newer than this paygate's {}",
                    file_.string(), schema_version_, kSchemaVersion));
  }
  for (int version = schema_version_ + 1; version <= kSchemaVersion; ++version) {
    // Each migration and its record in one transaction: a crash leaves it undone.
    if (Status s = exec("BEGIN IMMEDIATE"); !s.ok()) return s;
    Status applied = exec(kMigrations[version - 1]);
    if (applied.ok()) {
      Statement record(db_,
                       "INSERT INTO schema_migrations(version, applied_at) "
                       "VALUES (?, strftime('%s','now'))");
      if (!record.ok() || !record.bind(1, version).run()) applied = failed("record a migration");
    }
    if (!applied.ok()) {
      (void)exec("ROLLBACK");
      return applied;
    }
    if (Status s = exec("COMMIT"); !s.ok()) return s;
    schema_version_ = version;
  }
  return Status::success();
}

Result<u64> SqliteStore::watermark(u32 group) {
  std::lock_guard lock(read_mutex_);
  Statement read(reader_, "SELECT sequence FROM watermarks WHERE grp = ?");
  if (!read.ok()) return read_failed("read a watermark");
  const int rc = read.bind(1, group).step();
  if (rc == SQLITE_ROW) return static_cast<u64>(read.integer(0));
  if (rc == SQLITE_DONE) return u64{0};
  return read_failed("read a watermark");
}

Result<u64> SqliteStore::first_sequence(u32 group) {
  std::lock_guard lock(read_mutex_);
  Statement read(reader_, "SELECT first_sequence FROM watermarks WHERE grp = ?");
  if (!read.ok()) return read_failed("read a watermark");
  const int rc = read.bind(1, group).step();
  if (rc == SQLITE_ROW) return static_cast<u64>(read.integer(0));
  if (rc == SQLITE_DONE) return u64{0};
  return read_failed("read a watermark");
}

Status SqliteStore::write(const Batch& batch) {
  std::lock_guard lock(mutex_);
  PG_ASSERT(batch.watermark >= batch.after);
  if (Status s = exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  const auto abandon = [&](const std::string& what) {
    Status why = failed(what);
    (void)exec("ROLLBACK");
    return why;
  };
  {
    Statement current(db_, "SELECT sequence FROM watermarks WHERE grp = ?");
    if (!current.ok()) return abandon("read a watermark");
    const int rc = current.bind(1, batch.group).step();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return abandon("read a watermark");
    // The group's first batch may start anywhere (its history starts there); every
    // later one continues the last.
    const u64 stored = rc == SQLITE_ROW ? static_cast<u64>(current.integer(0)) : batch.after;
    if (stored != batch.after) {
      (void)exec("ROLLBACK");
      return Status::busy(fmt::format(
          "history store: group {} is at sequence {}, the batch continues {}: not written",
          batch.group, stored, batch.after));
    }
  }
  Statement event(db_,
                  "INSERT INTO events(grp, sequence, idx, kind, id, debit, credit, amount, "
                  "released, currency, owner, detail, at_ns) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)");
  Statement made(
      db_,
      "INSERT INTO transfers(grp, id, created_sequence, debit, credit, amount, "
      "posted_amount, currency, status, created_ns, updated_sequence, updated_ns, "
      "reference, metadata, flags, expires_ns) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
  Statement closed(db_,
                   "UPDATE transfers SET status = ?, posted_amount = ?, updated_sequence = ?, "
                   "updated_ns = ? WHERE grp = ? AND id = ?");
  Statement entry(db_,
                  "INSERT INTO entries(account, sequence, idx, side, transfer, kind, amount, held, "
                  "balance, available, at_ns) VALUES (?,?,?,?,?,?,?,?,?,?,?)");
  Statement note(db_, "INSERT INTO annotations(grp, sequence, n, kind, text) VALUES (?,?,?,?,?)");
  Statement mark(db_,
                 "INSERT INTO watermarks(grp, first_sequence, sequence) VALUES (?,?,?) "
                 "ON CONFLICT(grp) DO UPDATE SET sequence = excluded.sequence");
  if (!event.ok() || !made.ok() || !closed.ok() || !entry.ok() || !note.ok() || !mark.ok()) {
    return abandon("prepare");
  }
  // Annotations by sequence, for the transfers made at them (both in sequence order).
  std::size_t next_note = 0;
  std::size_t next_made = 0;
  for (const LedgerEvent& e : batch.events) {
    const bool ok = event.bind(1, batch.group)
                        .bind(2, signed_of(e.sequence))
                        .bind(3, e.index)
                        .bind(4, static_cast<i64>(e.kind))
                        .bind(5, signed_of(e.id))
                        .bind(6, signed_of(e.debit_account_id.value))
                        .bind(7, signed_of(e.credit_account_id.value))
                        .bind(8, signed_of(e.amount))
                        .bind(9, signed_of(e.released))
                        .bind_text(10, e.currency.letters())
                        .bind(11, signed_of(e.owner.value))
                        .bind(12, e.detail)
                        .bind(13, signed_of(e.timestamp_ns))
                        .run();
    if (!ok) return abandon(fmt::format("write event {}.{}", e.sequence, e.index));
    if (e.kind == LedgerEventKind::transfer_posted || e.kind == LedgerEventKind::transfer_pending) {
      while (next_note < batch.annotations.size() &&
             batch.annotations[next_note].sequence < e.sequence) {
        ++next_note;
      }
      std::optional<std::string_view> reference, metadata;
      for (std::size_t n = next_note;
           n < batch.annotations.size() && batch.annotations[n].sequence == e.sequence; ++n) {
        const AnnotationRow& a = batch.annotations[n];
        if (a.kind == journal::AnnotationKind::reference) reference = a.text;
        if (a.kind == journal::AnnotationKind::metadata) metadata = a.text;
      }
      const bool posted = e.kind == LedgerEventKind::transfer_posted;
      // As the ledger made it (the batch has one for each such event, in order): its
      // credit account is the transfer's (the event's, between groups, is this group's
      // clearing account).
      const Transfer* as_made =
          next_made < batch.made.size() && batch.made[next_made].id.value == e.id
              ? &batch.made[next_made++]
              : nullptr;
      made.bind(1, batch.group)
          .bind(2, signed_of(e.id))
          .bind(3, signed_of(e.sequence))
          .bind(4, signed_of(e.debit_account_id.value))
          .bind(5, signed_of(as_made != nullptr ? as_made->credit_account_id.value
                                                : e.credit_account_id.value))
          .bind(6, signed_of(e.amount))
          .bind(7, posted ? signed_of(e.amount) : 0)
          .bind_text(8, e.currency.letters())
          .bind_text(9, status_after(e.kind))
          .bind(10, signed_of(e.timestamp_ns))
          .bind(11, signed_of(e.sequence))
          .bind(12, signed_of(e.timestamp_ns));
      if (reference)
        made.bind_text(13, *reference);
      else
        made.bind_null(13);
      if (metadata)
        made.bind_text(14, *metadata);
      else
        made.bind_null(14);
      made.bind(15, as_made != nullptr ? as_made->flags : (posted ? 0 : kTransferPending))
          .bind(16, as_made != nullptr ? signed_of(as_made->expires_at_ns) : 0);
      if (!made.run()) return abandon(fmt::format("write transfer {:x}", e.id));
    } else if (e.kind != LedgerEventKind::account_created) {
      // A hold closed (a hold made before the store's history began has no row).
      const bool ok_closed = closed.bind_text(1, status_after(e.kind))
                                 .bind(2, signed_of(e.amount))
                                 .bind(3, signed_of(e.sequence))
                                 .bind(4, signed_of(e.timestamp_ns))
                                 .bind(5, batch.group)
                                 .bind(6, signed_of(e.id))
                                 .run();
      if (!ok_closed) return abandon(fmt::format("update transfer {:x}", e.id));
    }
  }
  for (const EntryRow& r : batch.entries) {
    const bool ok = entry.bind(1, signed_of(r.account))
                        .bind(2, signed_of(r.sequence))
                        .bind(3, r.index)
                        .bind(4, r.side)
                        .bind(5, signed_of(r.transfer))
                        .bind(6, static_cast<i64>(r.kind))
                        .bind(7, r.amount)
                        .bind(8, r.held)
                        .bind(9, r.balance)
                        .bind(10, r.available)
                        .bind(11, signed_of(r.at_ns))
                        .run();
    if (!ok) return abandon(fmt::format("write entry {:x} {}", r.account, r.sequence));
  }
  u64 last_sequence = 0;
  i64 n = 0;
  for (const AnnotationRow& a : batch.annotations) {
    n = a.sequence == last_sequence ? n + 1 : 0;
    last_sequence = a.sequence;
    const bool ok = note.bind(1, batch.group)
                        .bind(2, signed_of(a.sequence))
                        .bind(3, n)
                        .bind(4, static_cast<i64>(a.kind))
                        .bind_text(5, a.text)
                        .run();
    if (!ok) return abandon(fmt::format("write annotation {}", a.sequence));
  }
  if (!mark.bind(1, batch.group)
           .bind(2, signed_of(batch.after + 1))
           .bind(3, signed_of(batch.watermark))
           .run()) {
    return abandon("write the watermark");
  }
  if (Status s = exec("COMMIT"); !s.ok()) {
    (void)exec("ROLLBACK");
    return s;
  }
  rows_written_.fetch_add(batch.events.size() + batch.entries.size() + batch.annotations.size(),
                          std::memory_order_relaxed);
  return Status::success();
}

Result<std::optional<TransferRow>> SqliteStore::transfer(u32 group, u64 id) {
  std::lock_guard lock(read_mutex_);
  Statement read(reader_,
                 "SELECT created_sequence, debit, credit, amount, posted_amount, currency, status, "
                 "created_ns, updated_sequence, updated_ns, reference, metadata, flags, "
                 "expires_ns FROM transfers WHERE grp = ? AND id = ?");
  if (!read.ok()) return read_failed("read a transfer");
  const int rc = read.bind(1, group).bind(2, signed_of(id)).step();
  if (rc == SQLITE_DONE) return std::optional<TransferRow>();
  if (rc != SQLITE_ROW) return read_failed("read a transfer");
  TransferRow row;
  row.id = id;
  row.group = group;
  row.created_sequence = static_cast<u64>(read.integer(0));
  row.debit = static_cast<u64>(read.integer(1));
  row.credit = static_cast<u64>(read.integer(2));
  row.amount = static_cast<u64>(read.integer(3));
  row.posted_amount = static_cast<u64>(read.integer(4));
  row.currency = read.text(5);
  row.status = read.text(6);
  row.created_ns = static_cast<u64>(read.integer(7));
  row.updated_sequence = static_cast<u64>(read.integer(8));
  row.updated_ns = static_cast<u64>(read.integer(9));
  row.reference = read.text(10);
  row.metadata = read.text(11);
  row.flags = static_cast<u8>(read.integer(12));
  row.expires_ns = static_cast<u64>(read.integer(13));
  return std::optional<TransferRow>(std::move(row));
}

Result<std::vector<EntryRow>> SqliteStore::entries(u64 account,
                                                   std::optional<std::pair<u64, u32>> before,
                                                   u32 limit) {
  std::lock_guard lock(read_mutex_);
  Statement read(reader_,
                 "SELECT sequence, idx, transfer, kind, amount, held, balance, available, at_ns "
                 "FROM entries WHERE account = ?1 AND (sequence, idx) < (?2, ?3) "
                 "ORDER BY sequence DESC, idx DESC, side DESC LIMIT ?4");
  if (!read.ok()) return read_failed("read entries");
  const auto [sequence, index] = before.value_or(std::pair<u64, u32>{~u64{0} >> 1, 0});
  read.bind(1, signed_of(account)).bind(2, signed_of(sequence)).bind(3, index).bind(4, limit);
  std::vector<EntryRow> rows;
  for (int rc = read.step(); rc != SQLITE_DONE; rc = read.step()) {
    if (rc != SQLITE_ROW) return read_failed("read entries");
    EntryRow& row = rows.emplace_back();
    row.account = account;
    row.sequence = static_cast<u64>(read.integer(0));
    row.index = static_cast<u32>(read.integer(1));
    row.transfer = static_cast<u64>(read.integer(2));
    row.kind = static_cast<LedgerEventKind>(read.integer(3));
    row.amount = read.integer(4);
    row.held = read.integer(5);
    row.balance = read.integer(6);
    row.available = read.integer(7);
    row.at_ns = static_cast<u64>(read.integer(8));
  }
  return rows;
}

namespace {

// Rows of `read` whose first twelve columns are an event's, in the events table's order.
Result<std::vector<LedgerEvent>> read_events(Statement& read,
                                             const std::function<Status()>& failed) {
  std::vector<LedgerEvent> out;
  for (int rc = read.step(); rc != SQLITE_DONE; rc = read.step()) {
    if (rc != SQLITE_ROW) return failed();
    LedgerEvent& e = out.emplace_back();
    e.sequence = static_cast<u64>(read.integer(0));
    e.index = static_cast<u32>(read.integer(1));
    e.kind = static_cast<LedgerEventKind>(read.integer(2));
    e.id = static_cast<u64>(read.integer(3));
    e.debit_account_id = AccountId{static_cast<u64>(read.integer(4))};
    e.credit_account_id = AccountId{static_cast<u64>(read.integer(5))};
    e.amount = static_cast<u64>(read.integer(6));
    e.released = static_cast<u64>(read.integer(7));
    e.currency = Currency::from(read.text(8));
    e.owner = MerchantId{static_cast<u64>(read.integer(9))};
    e.detail = static_cast<u8>(read.integer(10));
    e.timestamp_ns = static_cast<u64>(read.integer(11));
  }
  return out;
}

}  // namespace

Result<std::vector<LedgerEvent>> SqliteStore::events(u32 group, std::optional<EventKey> after,
                                                     u32 limit) {
  std::lock_guard lock(read_mutex_);
  Statement read(reader_,
                 "SELECT sequence, idx, kind, id, debit, credit, amount, released, currency, "
                 "owner, detail, at_ns FROM events WHERE grp = ?1 AND (sequence, idx) > (?2, ?3) "
                 "ORDER BY sequence, idx LIMIT ?4");
  if (!read.ok()) return read_failed("read events");
  // No cursor: from the first (a key before every event's).
  const i64 sequence = after ? signed_of(after->sequence) : 0;
  const i64 index = after ? i64{after->index} : -1;
  read.bind(1, group).bind(2, sequence).bind(3, index).bind(4, limit);
  return read_events(read, [&] { return read_failed("read events"); });
}

Result<std::vector<LedgerEvent>> SqliteStore::account_events(u32 group, u64 account,
                                                             std::optional<EventKey> before,
                                                             u32 limit) {
  std::lock_guard lock(read_mutex_);
  Statement read(reader_,
                 "SELECT e.sequence, e.idx, e.kind, e.id, e.debit, e.credit, e.amount, "
                 "e.released, e.currency, e.owner, e.detail, e.at_ns FROM entries n JOIN events e "
                 "ON e.grp = ?1 AND e.sequence = n.sequence AND e.idx = n.idx "
                 "WHERE n.account = ?2 AND (n.sequence, n.idx) < (?3, ?4) "
                 "ORDER BY n.sequence DESC, n.idx DESC LIMIT ?5");
  if (!read.ok()) return read_failed("read a statement");
  // No cursor: from the newest (a key after every event's).
  const i64 sequence = before ? signed_of(before->sequence) : std::numeric_limits<i64>::max();
  const i64 index = before ? i64{before->index} : 0;
  read.bind(1, group).bind(2, signed_of(account)).bind(3, sequence).bind(4, index).bind(5, limit);
  return read_events(read, [&] { return read_failed("read a statement"); });
}

Result<std::vector<AnnotationRow>> SqliteStore::annotations(u32 group, u64 sequence) {
  std::lock_guard lock(read_mutex_);
  Statement read(reader_,
                 "SELECT kind, text FROM annotations WHERE grp = ? AND sequence = ? ORDER BY n");
  if (!read.ok()) return read_failed("read annotations");
  read.bind(1, group).bind(2, signed_of(sequence));
  std::vector<AnnotationRow> rows;
  for (int rc = read.step(); rc != SQLITE_DONE; rc = read.step()) {
    if (rc != SQLITE_ROW) return read_failed("read annotations");
    rows.push_back({sequence, static_cast<journal::AnnotationKind>(read.integer(0)), read.text(1)});
  }
  return rows;
}

Result<u64> SqliteStore::rows(const std::string& table) {
  std::lock_guard lock(read_mutex_);
  // Only the store's own tables: the name is not bound, so it is checked.
  static constexpr const char* kTables[] = {"events",      "transfers",  "entries",
                                            "annotations", "watermarks", "schema_migrations"};
  if (std::find(std::begin(kTables), std::end(kTables), table) == std::end(kTables)) {
    return Status::invalid_config("no such table: " + table);
  }
  Statement count(reader_, ("SELECT COUNT(*) FROM " + table).c_str());
  if (!count.ok() || count.step() != SQLITE_ROW) return read_failed("count " + table);
  return static_cast<u64>(count.integer(0));
}

}  // namespace paygate::history
