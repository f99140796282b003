#include "history/store.h"

#include <cstring>

#include <algorithm>
#include <chrono>
#include <functional>
#include <limits>
#include <tuple>
#include <utility>

#include <fmt/format.h>

#include "base/assert.h"
#include "base/hash.h"
#include "base/log.h"

namespace paygate::history {
namespace {

// Each migration takes the store from the version before it to its own (SQLite's: the
// statements of one, ";" between them).
constexpr const char* kSqliteMigrations[] = {
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
    // 2: orders, as their last change left them, and each change.
    R"sql(
CREATE TABLE orders(
  id INTEGER PRIMARY KEY, grp INTEGER NOT NULL, merchant INTEGER NOT NULL,
  status INTEGER NOT NULL, created_ns INTEGER NOT NULL,
  created_sequence INTEGER NOT NULL, updated_sequence INTEGER NOT NULL,
  merchant_ref TEXT, state_format INTEGER NOT NULL, state BLOB NOT NULL);
CREATE INDEX orders_by_merchant ON orders(merchant, created_ns, id);
CREATE INDEX orders_by_merchant_status ON orders(merchant, status, created_ns, id);
CREATE INDEX orders_by_created ON orders(created_ns, id);
CREATE INDEX orders_by_ref ON orders(merchant_ref);
CREATE TABLE order_changes(
  id INTEGER NOT NULL, sequence INTEGER NOT NULL, n INTEGER NOT NULL,
  status INTEGER NOT NULL, amount_refunded INTEGER NOT NULL, at_ns INTEGER NOT NULL,
  PRIMARY KEY (id, sequence, n)) WITHOUT ROWID;
)sql",
    // 3: the webhook outbox: each order change a merchant is told of, with the order as
    // it left it; seq is the order of writing, the webhook worker's cursor.
    R"sql(
CREATE TABLE order_events(
  seq INTEGER PRIMARY KEY, grp INTEGER NOT NULL, sequence INTEGER NOT NULL,
  n INTEGER NOT NULL, order_id INTEGER NOT NULL, merchant INTEGER NOT NULL,
  type TEXT NOT NULL, at_ns INTEGER NOT NULL, state BLOB NOT NULL,
  UNIQUE (grp, sequence, n));
)sql",
    // 4: orders by status, for those that need attention (processing too long,
    // unresolved exception_checkout).
    R"sql(
CREATE INDEX orders_by_status ON orders(status, created_ns, id);
)sql",
    // 5: each order change's group, so that a group's changes can be read in the order
    // the group made them (the Kafka publisher, docs/KAFKA.md).
    R"sql(
ALTER TABLE order_changes ADD COLUMN grp INTEGER NOT NULL DEFAULT 0;
UPDATE order_changes SET grp = (SELECT o.grp FROM orders o WHERE o.id = order_changes.id);
CREATE INDEX order_changes_by_group ON order_changes(grp, sequence, n);
)sql",
    // 6: the archive of final orders that left the group's memory (the seeds' cold
    // store): their rows move there from `orders`, by the month they were created in
    // (MariaDB partitions it by that month). Orders that left memory before this
    // version stay in `orders`.
    R"sql(
CREATE TABLE order_archive(
  month INTEGER NOT NULL, id INTEGER NOT NULL, grp INTEGER NOT NULL,
  merchant INTEGER NOT NULL, status INTEGER NOT NULL, created_ns INTEGER NOT NULL,
  created_sequence INTEGER NOT NULL, updated_sequence INTEGER NOT NULL,
  merchant_ref TEXT, state_format INTEGER NOT NULL, state BLOB NOT NULL,
  archived_sequence INTEGER NOT NULL,
  PRIMARY KEY (id, month)) WITHOUT ROWID;
CREATE INDEX order_archive_by_merchant ON order_archive(merchant, created_ns, id);
CREATE INDEX order_archive_by_merchant_status ON order_archive(merchant, status, created_ns, id);
CREATE INDEX order_archive_by_created ON order_archive(created_ns, id);
CREATE INDEX order_archive_by_ref ON order_archive(merchant_ref);
)sql",
};
static_assert(std::size(kSqliteMigrations) == kSchemaVersion);

// MariaDB's: stores there began at schema 5, made at once in its shape (each column
// where SQLite's migrations left it, for digest() to compare the two); each statement
// its own (MariaDB commits DDL as it goes: a crash in the middle of the first leaves
// tables that the next start's CREATE TABLE IF NOT EXISTS passes over).
// (Each later version has its MariaDB migration beside SQLite's, rerunnable as this
// one is: no transaction holds MariaDB's DDL.)
static_assert(kSchemaVersion == 6, "write MariaDB's migration to the new version");
constexpr const char* kMariaDbSchema5[] = {
    "CREATE TABLE IF NOT EXISTS watermarks(grp BIGINT PRIMARY KEY, "
    "first_sequence BIGINT NOT NULL, sequence BIGINT NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS events(grp BIGINT NOT NULL, sequence BIGINT NOT NULL, "
    "idx BIGINT NOT NULL, kind BIGINT NOT NULL, id BIGINT NOT NULL, debit BIGINT NOT NULL, "
    "credit BIGINT NOT NULL, amount BIGINT NOT NULL, released BIGINT NOT NULL, "
    "currency VARBINARY(16) NOT NULL, owner BIGINT NOT NULL, detail BIGINT NOT NULL, "
    "at_ns BIGINT NOT NULL, PRIMARY KEY (grp, sequence, idx)) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS transfers(grp BIGINT NOT NULL, id BIGINT NOT NULL, "
    "created_sequence BIGINT NOT NULL, debit BIGINT NOT NULL, credit BIGINT NOT NULL, "
    "amount BIGINT NOT NULL, posted_amount BIGINT NOT NULL, currency VARBINARY(16) NOT NULL, "
    "status VARBINARY(16) NOT NULL, flags BIGINT NOT NULL, expires_ns BIGINT NOT NULL, "
    "created_ns BIGINT NOT NULL, updated_sequence BIGINT NOT NULL, updated_ns BIGINT NOT NULL, "
    "reference BLOB, metadata BLOB, PRIMARY KEY (grp, id)) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS entries(account BIGINT NOT NULL, sequence BIGINT NOT NULL, "
    "idx BIGINT NOT NULL, side BIGINT NOT NULL, transfer BIGINT NOT NULL, kind BIGINT NOT NULL, "
    "amount BIGINT NOT NULL, held BIGINT NOT NULL, balance BIGINT NOT NULL, "
    "available BIGINT NOT NULL, at_ns BIGINT NOT NULL, "
    "PRIMARY KEY (account, sequence, idx, side)) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS annotations(grp BIGINT NOT NULL, sequence BIGINT NOT NULL, "
    "n BIGINT NOT NULL, kind BIGINT NOT NULL, text BLOB NOT NULL, "
    "PRIMARY KEY (grp, sequence, n)) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS orders(id BIGINT PRIMARY KEY, grp BIGINT NOT NULL, "
    "merchant BIGINT NOT NULL, status BIGINT NOT NULL, created_ns BIGINT NOT NULL, "
    "created_sequence BIGINT NOT NULL, updated_sequence BIGINT NOT NULL, "
    "merchant_ref VARBINARY(256), state_format BIGINT NOT NULL, state BLOB NOT NULL, "
    "KEY orders_by_merchant (merchant, created_ns, id), "
    "KEY orders_by_merchant_status (merchant, status, created_ns, id), "
    "KEY orders_by_created (created_ns, id), KEY orders_by_ref (merchant_ref), "
    "KEY orders_by_status (status, created_ns, id)) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS order_changes(id BIGINT NOT NULL, sequence BIGINT NOT NULL, "
    "n BIGINT NOT NULL, status BIGINT NOT NULL, amount_refunded BIGINT NOT NULL, "
    "at_ns BIGINT NOT NULL, grp BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (id, sequence, n), "
    "KEY order_changes_by_group (grp, sequence, n)) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS order_events(seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, "
    "grp BIGINT NOT NULL, sequence BIGINT NOT NULL, n BIGINT NOT NULL, "
    "order_id BIGINT NOT NULL, merchant BIGINT NOT NULL, type VARBINARY(64) NOT NULL, "
    "at_ns BIGINT NOT NULL, state BLOB NOT NULL, UNIQUE KEY (grp, sequence, n)) ENGINE=InnoDB",
};
// 6: SQLite's, partitioned by month (yyyymm) by range: a month's partition is made
// (with the next month's) before the first order of that month is archived, best
// effort (Store::partition_archive); p_future takes whatever finds no partition, so
// that no write fails for want of one.
constexpr const char* kMariaDbSchema6[] = {
    "CREATE TABLE IF NOT EXISTS order_archive(month BIGINT NOT NULL, id BIGINT NOT NULL, "
    "grp BIGINT NOT NULL, merchant BIGINT NOT NULL, status BIGINT NOT NULL, "
    "created_ns BIGINT NOT NULL, created_sequence BIGINT NOT NULL, "
    "updated_sequence BIGINT NOT NULL, merchant_ref VARBINARY(256), "
    "state_format BIGINT NOT NULL, state BLOB NOT NULL, archived_sequence BIGINT NOT NULL, "
    "PRIMARY KEY (id, month), "
    "KEY order_archive_by_merchant (merchant, created_ns, id), "
    "KEY order_archive_by_merchant_status (merchant, status, created_ns, id), "
    "KEY order_archive_by_created (created_ns, id), KEY order_archive_by_ref (merchant_ref)) "
    "ENGINE=InnoDB PARTITION BY RANGE (month) (PARTITION p_future VALUES LESS THAN MAXVALUE)",
};

// Applies the migrations from the store's version up to kSchemaVersion, each with its
// record (SQLite: in one transaction; MariaDB: its DDL commits as it goes, and only
// the record says it is done). Refuses a store newer than this build.
Status migrate(sql::Connection& db, const std::string& label, int* version) {
  const auto failed = [&](std::string_view what) {
    return Status::io_error(fmt::format("{}: {}: {}", label, what, db.error()));
  };
  const bool sqlite = db.dialect() == sql::Dialect::sqlite;
  if (!db.exec(sqlite ? "CREATE TABLE IF NOT EXISTS schema_migrations(version INTEGER PRIMARY "
                        "KEY, applied_at INTEGER NOT NULL)"
                      : "CREATE TABLE IF NOT EXISTS schema_migrations(version BIGINT PRIMARY "
                        "KEY, applied_at BIGINT NOT NULL) ENGINE=InnoDB")) {
    return failed("make schema_migrations");
  }
  {
    sql::Statement current(db, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations");
    if (!current.ok() || current.step() != sql::kRow) return failed("read the schema version");
    *version = static_cast<int>(current.integer(0));
  }
  if (*version > kSchemaVersion) {
    return Status::invalid_config(fmt::format(
        "{} has schema version {}, newer than this paygate's {}", label, *version, kSchemaVersion));
  }
  const i64 now_s = std::chrono::duration_cast<std::chrono::seconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count();
  for (int next = *version + 1; next <= kSchemaVersion; ++next) {
    // (MariaDB: no transaction; its DDL would end one, and the record then goes alone.)
    if (sqlite && !db.begin_writing()) return failed("begin a migration");
    bool applied = true;
    if (sqlite) {
      applied = db.exec(kSqliteMigrations[next - 1]);
    } else if (next == 5) {
      for (const char* statement : kMariaDbSchema5)
        applied = applied && db.exec(statement);
    } else if (next == 6) {
      for (const char* statement : kMariaDbSchema6)
        applied = applied && db.exec(statement);
    }  // (MariaDB: versions before 5 are no store's)
    if (applied) {
      sql::Statement record(db, "INSERT INTO schema_migrations(version, applied_at) VALUES (?, ?)");
      applied = record.ok() && record.bind(1, next).bind(2, now_s).run() &&
                (!sqlite || db.exec("COMMIT"));
    }
    if (!applied) {
      Status why = failed(fmt::format("apply migration {}", next));
      if (sqlite) (void)db.exec("ROLLBACK");
      return why;
    }
    *version = next;
  }
  return Status::success();
}

// Ids use all 64 bits; the stores keep them as signed integers, bit for bit.
i64 signed_of(u64 value) noexcept {
  return static_cast<i64>(value);
}

using sql::Statement;

// A bound on sequences as SQLite keeps them (its integers are signed).
i64 capped(u64 through) noexcept {
  return through > static_cast<u64>(std::numeric_limits<i64>::max())
             ? std::numeric_limits<i64>::max()
             : static_cast<i64>(through);
}

// A page of a group's rows in key order: ?1 the group, ?2 ?3 the key after which it
// starts (none: before every key), ?4 its size, ?5 the last sequence it may reach.
// (Pages say "after (a, b)" as `x >= a AND (x > a OR y > b)`, not `(x, y) > (a, b)`:
// MariaDB reads a comparison of row values from the index's start, every page.)
void bind_page(Statement& read, u32 group, std::optional<EventKey> after, u32 limit, u64 through) {
  const i64 sequence = after ? signed_of(after->sequence) : 0;
  const i64 index = after ? i64{after->index} : -1;
  read.bind(1, group).bind(2, sequence).bind(3, index).bind(4, limit).bind(5, capped(through));
}

// An order that needs attention: an unresolved exception_checkout (a resolved one is
// success or failed), or processing since before ?8 (its last change's time).
constexpr const char* kAttention =
    " AND (status = 8 OR (status = 2 AND (SELECT MAX(c.at_ns) FROM order_changes c "
    "WHERE c.id = orders.id) < ?8))";
static_assert(static_cast<int>(OrderStatus::exception_checkout) == 8 &&
              static_cast<int>(OrderStatus::processing) == 2);

// The annotation of `kind` at `sequence` in `annotations` (in sequence order), or nullptr.
const AnnotationRow* find_annotation(const std::vector<AnnotationRow>& annotations, u64 sequence,
                                     journal::AnnotationKind kind) {
  auto it = std::lower_bound(annotations.begin(), annotations.end(), sequence,
                             [](const AnnotationRow& a, u64 s) { return a.sequence < s; });
  for (; it != annotations.end() && it->sequence == sequence; ++it) {
    if (it->kind == kind) return &*it;
  }
  return nullptr;
}

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

u32 archive_month(u64 created_ns) noexcept {
  using namespace std::chrono;
  const year_month_day day{floor<days>(sys_time<nanoseconds>(nanoseconds(created_ns)))};
  return static_cast<u32>(static_cast<int>(day.year()) * 100 +
                          static_cast<int>(static_cast<unsigned>(day.month())));
}

u32 next_month(u32 month) noexcept {
  return month % 100 == 12 ? (month / 100 + 1) * 100 + 1 : month + 1;
}

void Store::partition_archive(const Batch& batch) {
  if (db_->dialect() != sql::Dialect::mariadb || batch.orders_left.empty()) return;
  // After a failure, not again for a minute (the rows wait in p_future meanwhile).
  const u64 now = static_cast<u64>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                       std::chrono::steady_clock::now().time_since_epoch())
                                       .count());
  if (now < partition_retry_ns_) return;
  const auto failed_now = [&](std::string_view what) {
    archive_bound_ = 0;  // read again next time (another writer may have made some)
    partition_retry_ns_ = now + 60 * kNanosPerSecond;
    partition_failures_.fetch_add(1, std::memory_order_relaxed);
    PG_LOG_WARN(
        "event=history_partition_failed message=\"{}: {}: {} (the archived orders go to "
        "p_future until a later try makes their month's partition)\"",
        label_, what, db_->error());
  };
  u32 oldest = ~u32{0}, newest = 0;
  for (const Batch::OrderLeft& left : batch.orders_left) {
    oldest = std::min(oldest, archive_month(left.created_ns));
    newest = std::max(newest, archive_month(left.created_ns));
  }
  if (archive_bound_ == 0) {
    // The partitions made so far (by this writer or one before it).
    Statement bound(db_,
                    "SELECT COALESCE(MAX(CAST(PARTITION_DESCRIPTION AS UNSIGNED)), 0) FROM "
                    "information_schema.PARTITIONS WHERE TABLE_SCHEMA = DATABASE() AND "
                    "TABLE_NAME = 'order_archive' AND PARTITION_DESCRIPTION <> 'MAXVALUE'");
    if (!bound.ok() || bound.step() != sql::kRow) {
      return failed_now("read order_archive's partitions");
    }
    archive_bound_ = static_cast<u32>(bound.integer(0));
  }
  if (newest < archive_bound_) return;
  // The months from the last partition (or the batch's oldest: a first partition holds
  // every month up to its own) to the month after the newest (so that the next month's
  // first archived order finds its partition made), at most ten years at once (older
  // ones then share the first). The DDL waits at most 2 s for the tables' readers
  // (their open transactions hold it off; while it waits, new readers wait behind it).
  const u32 last = next_month(newest);
  u32 month = archive_bound_ != 0 ? archive_bound_ : oldest;
  month = std::max(month, newest - 1000);  // (yyyymm: ten years back)
  std::string sql = "ALTER TABLE order_archive WAIT 2 REORGANIZE PARTITION p_future INTO (";
  for (; month <= last; month = next_month(month)) {
    sql += fmt::format("PARTITION p{} VALUES LESS THAN ({}), ", month, next_month(month));
  }
  sql += "PARTITION p_future VALUES LESS THAN MAXVALUE)";
  if (!db_->exec(sql)) return failed_now("make order_archive's partitions");
  archive_bound_ = next_month(last);
}

std::string StoreConfig::describe() const {
  if (kind == sql::Dialect::sqlite) return file.string();
  const std::string at =
      mariadb.socket.empty() ? fmt::format("{}:{}", mariadb.host, mariadb.port) : mariadb.socket;
  return fmt::format("mariadb {}@{}/{}", mariadb.user, at, mariadb.database);
}

namespace {
Result<std::unique_ptr<sql::Connection>> connect(const StoreConfig& config, bool writing) {
  return config.kind == sql::Dialect::sqlite ? sql::open_sqlite(config.file.string(), writing)
                                             : sql::open_mariadb(config.mariadb, writing);
}
}  // namespace

Result<std::unique_ptr<Store>> Store::open(const StoreConfig& config) {
  std::unique_ptr<Store> store(new Store());
  store->label_ = "history store " + config.describe();
  Result<std::unique_ptr<sql::Connection>> writer = connect(config, true);
  if (!writer.ok()) return writer.status();
  store->db_ = std::move(writer).value();
  if (Status s = migrate(*store->db_, store->label_, &store->schema_version_); !s.ok()) return s;
  Result<std::unique_ptr<sql::Connection>> reader = connect(config, false);
  if (!reader.ok()) return reader.status();
  store->reader_ = std::move(reader).value();
  return store;
}

Result<std::unique_ptr<Store>> Store::open_reader(const StoreConfig& config) {
  std::unique_ptr<Store> store(new Store());
  store->label_ = "history store " + config.describe();
  Result<std::unique_ptr<sql::Connection>> reader = connect(config, false);
  if (!reader.ok()) return reader.status();
  store->reader_ = std::move(reader).value();
  Statement current(store->reader_, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations");
  if (!current.ok() || current.step() != sql::kRow) return store->read_failed("read the schema");
  store->schema_version_ = static_cast<int>(current.integer(0));
  if (store->schema_version_ != kSchemaVersion) {
    return Status::invalid_config(fmt::format("{}: schema {}, this paygate reads {}", store->label_,
                                              store->schema_version_, kSchemaVersion));
  }
  return store;
}

Store::~Store() = default;

Status Store::read_failed(const std::string& what) const {
  return Status::io_error(fmt::format("{}: {}: {}", label_, what,
                                      reader_ != nullptr ? reader_->error() : "no connection"));
}

Status Store::failed(const std::string& what) const {
  return Status::io_error(
      fmt::format("{}: {}: {}", label_, what, db_ != nullptr ? db_->error() : "no connection"));
}

Status Store::exec(const char* sql) {
  if (db_->exec(sql)) return Status::success();
  return failed(sql);
}

Result<u64> Store::watermark(u32 group) {
  return watermark_column(group, "SELECT sequence FROM watermarks WHERE grp = ?");
}

Result<u64> Store::first_sequence(u32 group) {
  return watermark_column(group, "SELECT first_sequence FROM watermarks WHERE grp = ?");
}

Result<u64> Store::watermark_column(u32 group, const char* sql) {
  std::lock_guard lock(read_mutex_);
  Statement read(reader_, sql);
  if (!read.ok()) return read_failed("read a watermark");
  const int rc = read.bind(1, group).step();
  if (rc == sql::kRow) return static_cast<u64>(read.integer(0));
  if (rc == sql::kDone) return u64{0};  // nothing of the group yet
  return read_failed("read a watermark");
}

Status Store::write(const Batch& batch) {
  PG_ASSERT(db_ != nullptr);  // not a reader's (open_reader)
  std::lock_guard lock(mutex_);
  PG_ASSERT(batch.watermark >= batch.after);
  partition_archive(batch);  // (best effort: p_future takes what finds no partition)
  if (!db_->begin_writing()) return failed("begin");
  const bool sqlite = db_->dialect() == sql::Dialect::sqlite;
  const auto abandon = [&](const std::string& what) {
    Status why = failed(what);
    (void)exec("ROLLBACK");
    return why;
  };
  {
    // (MariaDB: a locking read, so that a second writer of the same store waits here
    // rather than both taking the watermark to be where it was; SQLite's BEGIN
    // IMMEDIATE already takes the one write lock.)
    Statement current(db_, sqlite ? "SELECT sequence FROM watermarks WHERE grp = ?"
                                  : "SELECT sequence FROM watermarks WHERE grp = ? FOR UPDATE");
    if (!current.ok()) return abandon("read a watermark");
    const int rc = current.bind(1, batch.group).step();
    if (rc != sql::kRow && rc != sql::kDone) return abandon("read a watermark");
    // The group's first batch may start anywhere (its history starts there); every
    // later one continues the last.
    const u64 stored = rc == sql::kRow ? static_cast<u64>(current.integer(0)) : batch.after;
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
  Statement order_made(
      db_,
      std::string("INSERT INTO orders(id, grp, merchant, status, created_ns, created_sequence, "
                  "updated_sequence, merchant_ref, state_format, state) VALUES "
                  "(?,?,?,?,?,?,?,?,?,?) ") +
          (sqlite ? "ON CONFLICT(id) DO UPDATE SET status = excluded.status, "
                    "updated_sequence = excluded.updated_sequence, state = excluded.state"
                  : "ON DUPLICATE KEY UPDATE status = VALUES(status), "
                    "updated_sequence = VALUES(updated_sequence), state = VALUES(state)"));
  Statement order_before(db_, "SELECT state FROM orders WHERE id = ?");
  Statement order_event(db_,
                        "INSERT INTO order_events(grp, sequence, n, order_id, merchant, type, "
                        "at_ns, state) VALUES (?,?,?,?,?,?,?,?)");
  Statement order_step(db_,
                       "INSERT INTO order_changes(id, sequence, n, status, amount_refunded, at_ns, "
                       "grp) VALUES (?,?,?,?,?,?,?)");
  Statement mark(db_, sqlite
                          ? "INSERT INTO watermarks(grp, first_sequence, sequence) VALUES (?,?,?) "
                            "ON CONFLICT(grp) DO UPDATE SET sequence = excluded.sequence"
                          : "INSERT INTO watermarks(grp, first_sequence, sequence) VALUES (?,?,?) "
                            "ON DUPLICATE KEY UPDATE sequence = VALUES(sequence)");
  Statement is_withdrawal(db_,
                          "SELECT 1 FROM transfers t JOIN annotations a ON a.grp = t.grp AND "
                          "a.sequence = t.created_sequence AND a.kind = ?3 "
                          "WHERE t.grp = ?1 AND t.id = ?2");
  if (!event.ok() || !made.ok() || !closed.ok() || !entry.ok() || !note.ok() || !mark.ok() ||
      !order_made.ok() || !order_step.ok() || !order_before.ok() || !order_event.ok() ||
      !is_withdrawal.ok()) {
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
  // In the table's key order (account first), not the batch's (sequence first): then the
  // transaction's inserts walk the B-tree once, each page in turn, instead of jumping
  // between the accounts' pages; with the larger transactions that cuts the time of a
  // projection by about a quarter (docs/BENCHMARKS.md, 2026-12-07).
  std::vector<const EntryRow*> in_key_order;
  in_key_order.reserve(batch.entries.size());
  for (const EntryRow& r : batch.entries)
    in_key_order.push_back(&r);
  std::sort(in_key_order.begin(), in_key_order.end(), [](const EntryRow* a, const EntryRow* b) {
    return std::tie(a->account, a->sequence, a->index, a->side) <
           std::tie(b->account, b->sequence, b->index, b->side);
  });
  for (const EntryRow* row : in_key_order) {
    const EntryRow& r = *row;
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
  // n: the change's place among its sequence's (one command may time out orders, then
  // change one of them again).
  u64 last_order_sequence = 0;
  n = 0;
  for (std::size_t i = 0; i < batch.orders.size(); ++i) {
    const OrderChange& c = batch.orders[i];
    const Order& o = c.order;
    n = i > 0 && c.sequence == last_order_sequence ? n + 1 : 0;
    last_order_sequence = c.sequence;
    // Made by this command: its request's merchant_ref is annotated at its sequence.
    const bool created = c.created;
    const AnnotationRow* ref = created ? find_annotation(batch.annotations, c.sequence,
                                                         journal::AnnotationKind::merchant_ref)
                                       : nullptr;
    // The order as the change before left it (this transaction's own writes included),
    // for the event the change raises.
    std::optional<Order> before;
    if (!created) {
      const int rc = order_before.bind(1, signed_of(o.id)).step();
      if (rc == sql::kRow && order_before.blob(0).size() == sizeof(Order)) {
        before.emplace();
        std::memcpy(&*before, order_before.blob(0).data(), sizeof(Order));
      } else if (rc != sql::kRow && rc != sql::kDone) {
        return abandon(fmt::format("read order {:x}", o.id));
      }
      order_before.reset();
    }
    order_made.bind(1, signed_of(o.id))
        .bind(2, batch.group)
        .bind(3, signed_of(o.merchant))
        .bind(4, static_cast<i64>(o.status))
        .bind(5, signed_of(o.created_at_ns))
        .bind(6, created ? signed_of(c.sequence) : 0)
        .bind(7, signed_of(c.sequence))
        .bind(9, kOrderStateFormat)
        .bind_blob(10, &o, sizeof(Order));
    if (ref != nullptr)
      order_made.bind_text(8, ref->text);
    else
      order_made.bind_null(8);
    if (!order_made.run()) return abandon(fmt::format("write order {:x}", o.id));
    const bool ok = order_step.bind(1, signed_of(o.id))
                        .bind(2, signed_of(c.sequence))
                        .bind(3, n)
                        .bind(4, static_cast<i64>(o.status))
                        .bind(5, signed_of(o.amount_refunded))
                        .bind(6, signed_of(c.at_ns))
                        .bind(7, batch.group)
                        .run();
    if (!ok) return abandon(fmt::format("write order change {:x} {}", o.id, c.sequence));
    if (const std::optional<std::string_view> type =
            order_event_type(before ? &*before : nullptr, o)) {
      const bool written = order_event.bind(1, batch.group)
                               .bind(2, signed_of(c.sequence))
                               .bind(3, n)
                               .bind(4, signed_of(o.id))
                               .bind(5, signed_of(o.merchant))
                               .bind_text(6, *type)
                               .bind(7, signed_of(c.at_ns))
                               .bind_blob(8, &o, sizeof(Order))
                               .run();
      if (!written) return abandon(fmt::format("write order event {:x} {}", o.id, c.sequence));
    }
  }
  // A closed hold that is a withdrawal (its command carried a destination: this
  // transaction's rows included) raises an event; its n counts on after its command's
  // order changes (a hold made before the store's history began has no row: none).
  static constexpr char kNoState = 0;
  u64 last_closed_sequence = 0;
  u32 closed_n = 0;
  for (const Batch::HoldClosed& h : batch.holds_closed) {
    const std::optional<std::string_view> type = withdrawal_event_type(h.kind);
    if (!type) continue;
    const int rc = is_withdrawal.bind(1, batch.group)
                       .bind(2, signed_of(h.transfer))
                       .bind(3, static_cast<i64>(journal::AnnotationKind::destination))
                       .step();
    is_withdrawal.reset();
    if (rc != sql::kRow && rc != sql::kDone) {
      return abandon(fmt::format("read transfer {:x}", h.transfer));
    }
    if (rc != sql::kRow) continue;
    if (h.sequence != last_closed_sequence) {
      const auto first =
          std::lower_bound(batch.orders.begin(), batch.orders.end(), h.sequence,
                           [](const OrderChange& c, u64 s) { return c.sequence < s; });
      const auto last =
          std::upper_bound(first, batch.orders.end(), h.sequence,
                           [](u64 s, const OrderChange& c) { return s < c.sequence; });
      closed_n = static_cast<u32>(last - first);
      last_closed_sequence = h.sequence;
    }
    const bool written = order_event.bind(1, batch.group)
                             .bind(2, signed_of(h.sequence))
                             .bind(3, closed_n++)
                             .bind(4, signed_of(h.transfer))
                             .bind(5, signed_of(h.owner))
                             .bind_text(6, *type)
                             .bind(7, signed_of(h.at_ns))
                             .bind_blob(8, &kNoState, 0)  // (a blob, empty: not NULL)
                             .run();
    if (!written) return abandon(fmt::format("write withdrawal event {:x}", h.transfer));
  }
  // Orders that left memory: their rows (which this transaction's changes left as they
  // are for good) move to the archive.
  if (!batch.orders_left.empty()) {
    Statement archive(
        db_,
        "INSERT INTO order_archive(month, id, grp, merchant, status, created_ns, "
        "created_sequence, updated_sequence, merchant_ref, state_format, state, "
        "archived_sequence) SELECT ?1, id, grp, merchant, status, created_ns, created_sequence, "
        "updated_sequence, merchant_ref, state_format, state, ?2 FROM orders WHERE id = ?3");
    Statement unheld(db_, "DELETE FROM orders WHERE id = ?");
    if (!archive.ok() || !unheld.ok()) return abandon("prepare the archive");
    for (const Batch::OrderLeft& left : batch.orders_left) {
      const bool moved = archive.bind(1, archive_month(left.created_ns))
                             .bind(2, signed_of(left.sequence))
                             .bind(3, signed_of(left.id))
                             .run() &&
                         unheld.bind(1, signed_of(left.id)).run();
      if (!moved) return abandon(fmt::format("archive order {:x}", left.id));
    }
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
  rows_written_.fetch_add(
      batch.events.size() + batch.entries.size() + batch.annotations.size() + batch.orders.size(),
      std::memory_order_relaxed);
  return Status::success();
}

Status Store::backfill_orders(u32 group, u64 sequence, const std::vector<Order>& orders) {
  if (orders.empty()) return Status::success();
  PG_ASSERT(db_ != nullptr);  // not a reader's (open_reader)
  std::lock_guard lock(mutex_);
  if (!db_->begin_writing()) return failed("begin");
  Statement insert(
      db_, std::string("INSERT INTO orders(id, grp, merchant, status, created_ns, "
                       "created_sequence, updated_sequence, merchant_ref, "
                       "state_format, state) VALUES (?,?,?,?,?,0,?,NULL,?,?) ") +
               (db_->dialect() == sql::Dialect::sqlite ? "ON CONFLICT(id) DO NOTHING"
                                                       : "ON DUPLICATE KEY UPDATE id = id"));
  bool ok = insert.ok();
  for (std::size_t i = 0; ok && i < orders.size(); ++i) {
    const Order& o = orders[i];
    ok = insert.bind(1, signed_of(o.id))
             .bind(2, group)
             .bind(3, signed_of(o.merchant))
             .bind(4, static_cast<i64>(o.status))
             .bind(5, signed_of(o.created_at_ns))
             .bind(6, signed_of(sequence))
             .bind(7, kOrderStateFormat)
             .bind_blob(8, &o, sizeof(Order))
             .run();
  }
  if (!ok) {
    Status why = failed("backfill orders");
    (void)exec("ROLLBACK");
    return why;
  }
  if (Status s = exec("COMMIT"); !s.ok()) {
    (void)exec("ROLLBACK");
    return s;
  }
  return Status::success();
}

Result<std::optional<TransferRow>> Store::transfer(u32 group, u64 id) {
  std::lock_guard lock(read_mutex_);
  return transfer_row(group, id);
}

Result<std::optional<TransferRow>> Store::transfer_row(u32 group, u64 id) {
  Statement read(reader_,
                 "SELECT created_sequence, debit, credit, amount, posted_amount, currency, status, "
                 "created_ns, updated_sequence, updated_ns, reference, metadata, flags, "
                 "expires_ns FROM transfers WHERE grp = ? AND id = ?");
  if (!read.ok()) return read_failed("read a transfer");
  const int rc = read.bind(1, group).bind(2, signed_of(id)).step();
  if (rc == sql::kDone) return std::optional<TransferRow>();
  if (rc != sql::kRow) return read_failed("read a transfer");
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

Result<std::vector<EntryRow>> Store::entries(u64 account, std::optional<std::pair<u64, u32>> before,
                                             u32 limit) {
  std::lock_guard lock(read_mutex_);
  Statement read(
      reader_,
      "SELECT sequence, idx, transfer, kind, amount, held, balance, available, at_ns "
      "FROM entries WHERE account = ?1 AND sequence <= ?2 AND (sequence < ?2 OR idx < ?3) "
      "ORDER BY sequence DESC, idx DESC, side DESC LIMIT ?4");
  if (!read.ok()) return read_failed("read entries");
  const auto [sequence, index] = before.value_or(std::pair<u64, u32>{~u64{0} >> 1, 0});
  read.bind(1, signed_of(account)).bind(2, signed_of(sequence)).bind(3, index).bind(4, limit);
  std::vector<EntryRow> rows;
  for (int rc = read.step(); rc != sql::kDone; rc = read.step()) {
    if (rc != sql::kRow) return read_failed("read entries");
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
// (`statement_of`: a statement's read, whose column 12 is the running balance of that
// account's line, set on the event's side of it.)
Result<std::vector<LedgerEvent>> read_events(Statement& read, const std::function<Status()>& failed,
                                             u64 statement_of = 0) {
  std::vector<LedgerEvent> out;
  for (int rc = read.step(); rc != sql::kDone; rc = read.step()) {
    if (rc != sql::kRow) return failed();
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
    if (statement_of != 0) {
      (e.debit_account_id.value == statement_of ? e.debit_balance : e.credit_balance) =
          read.integer(12);
    }
  }
  return out;
}

}  // namespace

Result<std::vector<LedgerEvent>> Store::events(u32 group, std::optional<EventKey> after, u32 limit,
                                               u64 through) {
  std::lock_guard lock(read_mutex_);
  Statement read(reader_,
                 "SELECT sequence, idx, kind, id, debit, credit, amount, released, currency, "
                 "owner, detail, at_ns FROM events WHERE grp = ?1 AND sequence >= ?2 AND "
                 "(sequence > ?2 OR idx > ?3) "
                 "AND sequence <= ?5 ORDER BY sequence, idx LIMIT ?4");
  if (!read.ok()) return read_failed("read events");
  bind_page(read, group, after, limit, through);
  return read_events(read, [&] { return read_failed("read events"); });
}

Result<std::vector<LedgerEvent>> Store::account_events(u32 group, u64 account,
                                                       std::optional<EventKey> before, u32 limit) {
  std::lock_guard lock(read_mutex_);
  Statement read(reader_,
                 "SELECT e.sequence, e.idx, e.kind, e.id, e.debit, e.credit, e.amount, "
                 "e.released, e.currency, e.owner, e.detail, e.at_ns, n.balance "
                 "FROM entries n JOIN events e "
                 "ON e.grp = ?1 AND e.sequence = n.sequence AND e.idx = n.idx "
                 "WHERE n.account = ?2 AND n.sequence <= ?3 AND (n.sequence < ?3 OR n.idx < ?4) "
                 "ORDER BY n.sequence DESC, n.idx DESC LIMIT ?5");
  if (!read.ok()) return read_failed("read a statement");
  // No cursor: from the newest (a key after every event's).
  const i64 sequence = before ? signed_of(before->sequence) : std::numeric_limits<i64>::max();
  const i64 index = before ? i64{before->index} : 0;
  read.bind(1, group).bind(2, signed_of(account)).bind(3, sequence).bind(4, index).bind(5, limit);
  return read_events(
      read, [&] { return read_failed("read a statement"); }, account);
}

Result<std::vector<AnnotationRow>> Store::annotations(u32 group, u64 sequence) {
  std::lock_guard lock(read_mutex_);
  Statement read(reader_,
                 "SELECT kind, text FROM annotations WHERE grp = ? AND sequence = ? ORDER BY n");
  if (!read.ok()) return read_failed("read annotations");
  read.bind(1, group).bind(2, signed_of(sequence));
  std::vector<AnnotationRow> rows;
  for (int rc = read.step(); rc != sql::kDone; rc = read.step()) {
    if (rc != sql::kRow) return read_failed("read annotations");
    rows.push_back({sequence, static_cast<journal::AnnotationKind>(read.integer(0)), read.text(1)});
  }
  return rows;
}

namespace {

constexpr const char* kOrderColumns =
    "id, grp, created_sequence, updated_sequence, merchant_ref, state, state_format";
// The same of an order joined as `o` (orders) and `a` (order_archive), from the one
// that has its row (never both: the row moves to the archive when the order leaves
// the group's memory, and changes no more).
constexpr const char* kEitherOrderColumns =
    "COALESCE(o.id, a.id), COALESCE(o.grp, a.grp), "
    "COALESCE(o.created_sequence, a.created_sequence), "
    "COALESCE(o.updated_sequence, a.updated_sequence), "
    "COALESCE(o.merchant_ref, a.merchant_ref), COALESCE(o.state, a.state), "
    "COALESCE(o.state_format, a.state_format)";
constexpr const char* kOrderTexts =
    "SELECT kind, text FROM annotations WHERE grp = ? AND sequence = ? ORDER BY n";

// An order row of `read` (kOrderColumns), without its texts; nullopt if its state is
// not an order's record (written by another build).
// (`first`: the column kOrderColumns start at.)
std::optional<OrderRow> order_row(const Statement& read, int first = 0) {
  const std::string_view state = read.blob(first + 5);
  if (read.integer(first + 6) != kOrderStateFormat || state.size() != sizeof(Order)) {
    return std::nullopt;
  }
  OrderRow row;
  std::memcpy(&row.order, state.data(), sizeof(Order));
  row.group = static_cast<u32>(read.integer(first + 1));
  row.created_sequence = static_cast<u64>(read.integer(first + 2));
  row.updated_sequence = static_cast<u64>(read.integer(first + 3));
  row.merchant_ref = read.text(first + 4);
  return row;
}

}  // namespace

// What the order's creating request said (annotated at its sequence), read with
// `read` (kOrderTexts, prepared once for many rows).
Status Store::order_texts(OrderRow& row, Statement& read) {
  if (row.created_sequence == 0) return Status::success();
  if (!read.ok()) return read_failed("read an order's annotations");
  read.bind(1, row.group).bind(2, signed_of(row.created_sequence));
  for (int rc = read.step(); rc != sql::kDone; rc = read.step()) {
    if (rc != sql::kRow) {
      read.reset();
      return read_failed("read an order's annotations");
    }
    std::string* text = nullptr;
    switch (static_cast<journal::AnnotationKind>(read.integer(0))) {
      case journal::AnnotationKind::merchant_ref:
        text = &row.merchant_ref;
        break;
      case journal::AnnotationKind::description:
        text = &row.description;
        break;
      case journal::AnnotationKind::metadata:
        text = &row.metadata;
        break;
      case journal::AnnotationKind::ipn_url:
        text = &row.ipn_url;
        break;
      case journal::AnnotationKind::callback_url:
        text = &row.callback_url;
        break;
      default:
        break;
    }
    if (text != nullptr) *text = read.text(1);
  }
  read.reset();
  return Status::success();
}

Result<std::optional<OrderRow>> Store::order(u64 id) {
  std::lock_guard lock(read_mutex_);
  Statement read(reader_, fmt::format("SELECT {0} FROM orders WHERE id = ?1 UNION ALL "
                                      "SELECT {0} FROM order_archive WHERE id = ?1",
                                      kOrderColumns)
                              .c_str());
  if (!read.ok()) return read_failed("read an order");
  const int rc = read.bind(1, signed_of(id)).step();
  if (rc == sql::kDone) return std::optional<OrderRow>();
  if (rc != sql::kRow) return read_failed("read an order");
  std::optional<OrderRow> row = order_row(read);
  if (!row) return Status::corruption(fmt::format("history store: order {:x} is malformed", id));
  Statement texts(reader_, kOrderTexts);
  if (Status s = order_texts(*row, texts); !s.ok()) return s;
  return row;
}

Result<std::optional<std::vector<OrderRow>>> Store::orders(const OrderQuery& q) {
  std::lock_guard lock(read_mutex_);
  // Rows before (before_ns, before_id), newest first: created_to (exclusive, so before
  // every id at it), or the cursor's order when that comes first.
  i64 before_ns = signed_of(q.created_to_ns);
  i64 before_id = std::numeric_limits<i64>::min();
  if (q.after_order) {
    Statement at(reader_,
                 "SELECT created_ns, merchant FROM orders WHERE id = ?1 UNION ALL "
                 "SELECT created_ns, merchant FROM order_archive WHERE id = ?1");
    if (!at.ok()) return read_failed("read orders");
    const int rc = at.bind(1, signed_of(*q.after_order)).step();
    if (rc == sql::kDone) return std::optional<std::vector<OrderRow>>();
    if (rc != sql::kRow) return read_failed("read orders");
    if (q.merchant != 0 && static_cast<u64>(at.integer(1)) != q.merchant) {
      return std::optional<std::vector<OrderRow>>();  // not the caller's: not a cursor
    }
    const std::pair<i64, i64> cursor{at.integer(0), signed_of(*q.after_order)};
    if (cursor < std::pair<i64, i64>{before_ns, before_id}) std::tie(before_ns, before_id) = cursor;
  }
  // (created_ns, id) < (before_ns, before_id) walks the index newest first (written
  // as a range on created_ns and a test of id at its edge: MariaDB scans from the
  // index's start for a comparison of row values, SQLite does not); the
  // merchant, when given, leads it.
  // (Every parameter is numbered up to ?7, the limit, so a condition left out leaves its
  // binding unused.) The page of each table, then of both: held orders in `orders`,
  // those that left memory in `order_archive` (final ones: none needs attention).
  const auto page_of = [&](const char* table) {
    return fmt::format(
        "SELECT {}, created_ns AS at_ns FROM {} WHERE created_ns <= ?2 AND "
        "(created_ns < ?2 OR id < ?3) AND created_ns >= ?4{}{}{}{} "
        "ORDER BY created_ns DESC, id DESC LIMIT ?7",
        kOrderColumns, table, q.merchant != 0 ? " AND merchant = ?1" : "",
        q.status ? " AND status = ?5" : "", q.merchant_ref ? " AND merchant_ref = ?6" : "",
        q.attention_before_ns ? kAttention : "");
  };
  const std::string sql =
      q.attention_before_ns
          ? page_of("orders")
          : fmt::format(
                "SELECT {} FROM (SELECT * FROM ({}) h UNION ALL SELECT * FROM ({}) c) u "
                "ORDER BY at_ns DESC, id DESC LIMIT ?7",
                kOrderColumns, page_of("orders"), page_of("order_archive"));
  Statement read(reader_, sql.c_str());
  if (!read.ok()) return read_failed("read orders");
  read.bind(1, signed_of(q.merchant))
      .bind(2, before_ns)
      .bind(3, before_id)
      .bind(4, signed_of(q.created_from_ns))
      .bind(5, q.status ? static_cast<i64>(*q.status) : 0)
      .bind(7, q.limit)
      .bind(8, signed_of(q.attention_before_ns.value_or(0)));
  if (q.merchant_ref) read.bind_text(6, *q.merchant_ref);
  std::vector<OrderRow> rows;
  for (int rc = read.step(); rc != sql::kDone; rc = read.step()) {
    if (rc != sql::kRow) return read_failed("read orders");
    std::optional<OrderRow> row = order_row(read);
    if (!row) return Status::corruption("history store: an order row is malformed");
    rows.push_back(std::move(*row));
  }
  Statement texts(reader_, kOrderTexts);
  for (OrderRow& row : rows) {
    if (Status s = order_texts(row, texts); !s.ok()) return s;
  }
  return std::optional<std::vector<OrderRow>>(std::move(rows));
}

Result<std::vector<Store::OrderStep>> Store::order_history(u64 id) {
  std::lock_guard lock(read_mutex_);
  Statement read(reader_,
                 "SELECT sequence, status, amount_refunded, at_ns FROM order_changes WHERE id = ? "
                 "ORDER BY sequence, n");
  if (!read.ok()) return read_failed("read an order's history");
  read.bind(1, signed_of(id));
  std::vector<OrderStep> steps;
  for (int rc = read.step(); rc != sql::kDone; rc = read.step()) {
    if (rc != sql::kRow) return read_failed("read an order's history");
    steps.push_back({static_cast<u64>(read.integer(0)), static_cast<OrderStatus>(read.integer(1)),
                     static_cast<u64>(read.integer(2)), static_cast<u64>(read.integer(3))});
  }
  return steps;
}

Result<std::vector<Store::TableDigest>> Store::digest() {
  std::lock_guard lock(read_mutex_);
  static constexpr std::pair<const char*, const char*> kTables[] = {
      {"events", "SELECT * FROM events ORDER BY grp, sequence, idx"},
      {"transfers", "SELECT * FROM transfers ORDER BY grp, id"},
      {"entries", "SELECT * FROM entries ORDER BY account, sequence, idx, side"},
      {"annotations", "SELECT * FROM annotations ORDER BY grp, sequence, n"},
      {"orders", "SELECT * FROM orders ORDER BY id"},
      {"order_changes", "SELECT * FROM order_changes ORDER BY id, sequence, n"},
      {"order_archive", "SELECT * FROM order_archive ORDER BY id"},
      // seq leaves out: it says how the groups' writes interleaved, which a rebuild
      // does not repeat.
      {"order_events",
       "SELECT grp, sequence, n, order_id, merchant, type, at_ns, state FROM order_events "
       "ORDER BY grp, sequence, n"},
      {"watermarks", "SELECT grp, first_sequence FROM watermarks ORDER BY grp"},
  };
  // One read transaction: every table as of one commit.
  if (!reader_->begin_reading()) return read_failed("begin a digest");
  struct End {
    sql::Connection& db;
    ~End() { db.exec("COMMIT"); }
  } end{*reader_};
  std::vector<TableDigest> out;
  for (const auto& [table, query] : kTables) {
    Statement read(reader_, query);
    if (!read.ok()) return read_failed(std::string("digest ") + table);
    TableDigest& d = out.emplace_back();
    d.table = table;
    Hasher hasher;
    for (int rc = read.step(); rc != sql::kDone; rc = read.step()) {
      if (rc != sql::kRow) return read_failed(std::string("digest ") + table);
      ++d.rows;
      for (int c = 0; c < read.columns(); ++c) {
        // (A text and a blob alike: MariaDB's columns of both are bytes.)
        const sql::Type type = read.type(c);
        hasher.add(static_cast<u64>(type));
        if (type == sql::Type::integer) hasher.add(static_cast<u64>(read.integer(c)));
        if (type == sql::Type::bytes) hasher.add_bytes(read.blob(c));
      }
    }
    d.hash = hasher.value();
  }
  return out;
}

Result<std::vector<Store::Watermark>> Store::watermarks() {
  std::lock_guard lock(read_mutex_);
  Statement read(reader_, "SELECT grp, first_sequence, sequence FROM watermarks ORDER BY grp");
  if (!read.ok()) return read_failed("read the watermarks");
  std::vector<Watermark> out;
  for (int rc = read.step(); rc != sql::kDone; rc = read.step()) {
    if (rc != sql::kRow) return read_failed("read the watermarks");
    out.push_back({static_cast<u32>(read.integer(0)), static_cast<u64>(read.integer(1)),
                   static_cast<u64>(read.integer(2))});
  }
  return out;
}

Result<u64> Store::rows(const std::string& table) {
  std::lock_guard lock(read_mutex_);
  // Only the store's own tables: the name is not bound, so it is checked.
  static constexpr const char* kTables[] = {
      "events", "transfers",     "entries",      "annotations",  "watermarks", "schema_migrations",
      "orders", "order_changes", "order_events", "order_archive"};
  if (std::find(std::begin(kTables), std::end(kTables), table) == std::end(kTables)) {
    return Status::invalid_config("no such table: " + table);
  }
  Statement count(reader_, ("SELECT COUNT(*) FROM " + table).c_str());
  if (!count.ok() || count.step() != sql::kRow) return read_failed("count " + table);
  return static_cast<u64>(count.integer(0));
}

Result<Store::Attention> Store::attention(u64 before_ns) {
  std::lock_guard lock(read_mutex_);
  Statement count(reader_,
                  "SELECT (SELECT COUNT(*) FROM orders WHERE status = 2 AND (SELECT MAX(c.at_ns) "
                  "FROM order_changes c WHERE c.id = orders.id) < ?1), "
                  "(SELECT COUNT(*) FROM orders WHERE status = 8)");
  if (!count.ok() || count.bind(1, signed_of(before_ns)).step() != sql::kRow) {
    return read_failed("count orders that need attention");
  }
  return Attention{.processing = static_cast<u64>(count.integer(0)),
                   .exception_checkout = static_cast<u64>(count.integer(1))};
}

std::optional<std::string_view> order_event_type(const Order* before, const Order& after) {
  if (!is_final(after.status)) return std::nullopt;  // the merchant waits for the outcome
  if (before == nullptr || before->status != after.status) {
    switch (after.status) {
      case OrderStatus::success:
        return "order.success";
      case OrderStatus::failed:
        return "order.failed";
      case OrderStatus::timeout:
        return "order.timeout";
      case OrderStatus::cancelled:
        return "order.cancelled";
      case OrderStatus::rejected_risk:
        return "order.rejected_risk";
      case OrderStatus::exception_checkout:
        return "order.exception_checkout";
      case OrderStatus::created:
      case OrderStatus::processing:
        break;
    }
    return std::nullopt;
  }
  if (after.amount_refunded > before->amount_refunded) return "order.refunded";
  // A refund to a wallet of another group that its group refused: the money came back.
  if (after.amount_refunded < before->amount_refunded) return "order.refund_returned";
  return std::nullopt;
}

std::optional<std::string_view> withdrawal_event_type(LedgerEventKind closed) {
  switch (closed) {
    case LedgerEventKind::pending_posted:
      return "withdrawal.success";
    case LedgerEventKind::pending_voided:
      return "withdrawal.failed";
    case LedgerEventKind::pending_expired:
      return "withdrawal.timeout";
    default:
      return std::nullopt;
  }
}

bool known_event_type(std::string_view type) {
  const auto in = [&](const auto& types) {
    return std::find(std::begin(types), std::end(types), type) != std::end(types);
  };
  return in(kOrderEventTypes) || in(kWithdrawalEventTypes);
}

std::string order_event_id(u32 group, u64 sequence, u32 n) {
  return fmt::format("evt_{}_{}_{}", group, sequence, n);
}

Result<std::vector<OrderChangeRow>> Store::order_changes(u32 group, std::optional<EventKey> after,
                                                         u32 limit, u64 through) {
  std::lock_guard lock(read_mutex_);
  Statement read(reader_,
                 fmt::format("SELECT c.sequence, c.n, c.status, c.amount_refunded, c.at_ns, {} "
                             "FROM order_changes c LEFT JOIN orders o ON o.id = c.id "
                             "LEFT JOIN order_archive a ON o.id IS NULL AND a.id = c.id "
                             "WHERE c.grp = ?1 AND c.sequence >= ?2 AND (c.sequence > ?2 OR "
                             "c.n > ?3) AND c.sequence <= ?5 AND (o.id IS NOT NULL OR a.id IS "
                             "NOT NULL) ORDER BY c.sequence, c.n LIMIT ?4",
                             kEitherOrderColumns)
                     .c_str());
  if (!read.ok()) return read_failed("read order changes");
  bind_page(read, group, after, limit, through);
  std::vector<OrderChangeRow> rows;
  for (int rc = read.step(); rc != sql::kDone; rc = read.step()) {
    if (rc != sql::kRow) return read_failed("read order changes");
    std::optional<OrderRow> order = order_row(read, 5);
    // (An order written by another build's layout: the store must be rebuilt.)
    if (!order) return read_failed("read an order change's order (another state_format)");
    rows.push_back(OrderChangeRow{.sequence = static_cast<u64>(read.integer(0)),
                                  .n = static_cast<u32>(read.integer(1)),
                                  .status = static_cast<OrderStatus>(read.integer(2)),
                                  .amount_refunded = static_cast<u64>(read.integer(3)),
                                  .at_ns = static_cast<u64>(read.integer(4)),
                                  .order = std::move(*order)});
  }
  return rows;
}

Result<Store::LastKeys> Store::last_keys(u32 group, u64 through) {
  std::lock_guard lock(read_mutex_);
  LastKeys keys;
  for (const bool events : {true, false}) {
    Statement read(reader_, events ? "SELECT sequence, idx FROM events WHERE grp = ?1 AND "
                                     "sequence <= ?2 ORDER BY sequence DESC, idx DESC LIMIT 1"
                                   : "SELECT sequence, n FROM order_changes WHERE grp = ?1 AND "
                                     "sequence <= ?2 ORDER BY sequence DESC, n DESC LIMIT 1");
    if (!read.ok()) return read_failed("read the last keys");
    const int rc = read.bind(1, group).bind(2, capped(through)).step();
    if (rc != sql::kRow && rc != sql::kDone) return read_failed("read the last keys");
    if (rc == sql::kDone) continue;
    const EventKey key{static_cast<u64>(read.integer(0)), static_cast<u32>(read.integer(1))};
    (events ? keys.event : keys.order_change) = key;
  }
  return keys;
}

Result<std::vector<OrderEventRow>> Store::order_events(u32 group, u64 after_sequence, u32 after_n,
                                                       u32 limit) {
  std::lock_guard lock(read_mutex_);
  // An order's event comes with its order's row (kOrderColumns, from column 9), for the
  // texts its request carried.
  Statement read(reader_,
                 fmt::format("SELECT e.seq, e.grp, e.sequence, e.n, e.type, e.at_ns, e.state, "
                             "e.order_id, e.merchant, {} FROM order_events e "
                             "LEFT JOIN orders o ON o.id = e.order_id AND e.type LIKE 'order.%' "
                             "LEFT JOIN order_archive a ON o.id IS NULL AND a.id = e.order_id AND "
                             "e.type LIKE 'order.%' "
                             "WHERE e.grp = ?1 AND e.sequence >= ?2 AND (e.sequence > ?2 OR "
                             "e.n > ?3) ORDER BY e.sequence, e.n LIMIT ?4",
                             kEitherOrderColumns)
                     .c_str());
  // A withdrawal's texts: its destination (at the hold's command), the provider's
  // reference (at the result's).
  Statement text(reader_,
                 "SELECT text FROM annotations WHERE grp = ? AND sequence = ? AND kind = ?");
  Statement order_said(reader_, kOrderTexts);
  if (!read.ok() || !text.ok()) return read_failed("read order events");
  const auto annotation = [&](u64 sequence, journal::AnnotationKind kind, std::string* out) {
    const int rc =
        text.bind(1, group).bind(2, signed_of(sequence)).bind(3, static_cast<i64>(kind)).step();
    if (rc == sql::kRow) *out = text.text(0);
    text.reset();
    return rc == sql::kRow || rc == sql::kDone;
  };
  read.bind(1, group).bind(2, signed_of(after_sequence)).bind(3, after_n).bind(4, limit);
  std::vector<OrderEventRow> out;
  for (int rc = read.step(); rc != sql::kDone; rc = read.step()) {
    if (rc != sql::kRow) return read_failed("read order events");
    OrderEventRow& e = out.emplace_back();
    e.seq = static_cast<u64>(read.integer(0));
    e.group = static_cast<u32>(read.integer(1));
    e.sequence = static_cast<u64>(read.integer(2));
    e.n = static_cast<u32>(read.integer(3));
    e.type = read.text(4);
    e.at_ns = static_cast<u64>(read.integer(5));
    e.object_id = static_cast<u64>(read.integer(7));
    e.recipient = static_cast<u64>(read.integer(8));
    if (e.type.starts_with("withdrawal.")) {
      Result<std::optional<TransferRow>> hold = transfer_row(group, e.object_id);
      if (!hold.ok()) return hold.status();
      if (!hold.value()) {
        return Status::corruption(
            fmt::format("history store: withdrawal event {} names no transfer", e.seq));
      }
      e.withdrawal = std::move(hold.value());
      // The provider's reference is its result's, the command that closed the hold (an
      // expiry has none: what closes it then is any command of the group).
      const bool decided = e.type != "withdrawal.timeout";
      if (!annotation(e.withdrawal->created_sequence, journal::AnnotationKind::destination,
                      &e.destination) ||
          (decided &&
           !annotation(e.sequence, journal::AnnotationKind::provider_ref, &e.provider_ref))) {
        return read_failed("read a withdrawal's annotations");
      }
      continue;
    }
    const std::string_view state = read.blob(6);
    if (state.size() != sizeof(Order)) {
      return Status::corruption(fmt::format("history store: order event {} is malformed", e.seq));
    }
    std::memcpy(&e.order, state.data(), sizeof(Order));
    if (!read.is_null(9)) {
      e.order_row = order_row(read, 9);
      if (!e.order_row) {  // (not to be sent without its ipn_url: stop, as order() would)
        return Status::corruption(
            fmt::format("history store: order {:x} is malformed", e.object_id));
      }
    }
    if (e.order_row) {
      if (Status s = order_texts(*e.order_row, order_said); !s.ok()) return s;
    }
  }
  return out;
}

}  // namespace paygate::history
