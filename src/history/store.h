// The history store (docs/HISTORY.md), in SQLite (embedded, the default) or MariaDB
// (a server, for scale): every event of every group kept for good as rows — the events themselves,
// transfers with their reference and metadata and status, statement lines with running balances,
// and every annotation — with each group's watermark written in the same transaction as its rows,
// so that a projector applies each (group, sequence) exactly once, whatever crash comes between.
//
// Threads: two connections, each guarded by a mutex: one the projectors write with
// (each its own group's rows), one readers read with, never waiting for a write in
// progress (SQLite's WAL; MariaDB's InnoDB). A commit is durable (SQLite: synchronous=
// FULL; MariaDB: innodb_flush_log_at_trx_commit=1, checked at open), so the journal's
// retention may count on a written watermark.
//
// The two keep the same rows in the same tables and columns (history/sql.h writes
// one code for both; store_test.cc holds them to the same digest()): SQLite's text and
// integer columns are MariaDB's VARBINARY/BLOB (bytes compared as bytes) and BIGINT.
#pragma once

#include <atomic>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "history/order_events.h"
#include "history/sql.h"
#include "journal/annotation.h"
#include "ledger/event.h"
#include "ledger/types.h"
#include "orders/order_book.h"
#include "pipeline/event_log.h"

namespace paygate::history {

// The schema version this build writes; older stores are migrated at open.
inline constexpr int kSchemaVersion = 6;
// The orders table keeps an order as the order book's record (orders/order_book.h,
// 128 bytes, the machine's byte order: little-endian where paygate runs); this number
// says which layout, and a build reads only its own (rebuild the store after a change).
inline constexpr int kOrderStateFormat = 1;

// A statement line: how an event changed one account of the group.
struct EntryRow {
  u64 account = 0;
  u64 sequence = 0;
  u32 index = 0;     // the event's place among its sequence's events
  u8 side = 0;       // 0: the account was the event's debit side, 1: its credit side
  u64 transfer = 0;  // the transfer (or hold)
  LedgerEventKind kind = LedgerEventKind::transfer_posted;
  i64 amount = 0;     // the change to the balance (held: 0)
  i64 held = 0;       // the change to what is held
  i64 balance = 0;    // after the event
  i64 available = 0;  // after the event
  u64 at_ns = 0;
};

struct AnnotationRow {
  u64 sequence = 0;
  journal::AnnotationKind kind = journal::AnnotationKind::reference;
  std::string text;
};

// An order as one command left it (created, a new status, a refund counted).
struct OrderChange {
  u64 sequence = 0;
  u64 at_ns = 0;         // the command's time
  bool created = false;  // by this command
  Order order;
};

// An order as the store keeps it: the order book's record as its last change left it,
// and what its creating request said.
struct OrderRow {
  Order order;
  u32 group = 0;
  u64 created_sequence = 0;  // 0: made before the store's history of its group
  u64 updated_sequence = 0;
  std::string merchant_ref, description, metadata, ipn_url, callback_url;
};

// A page of orders, newest first (by creation time, then id).
struct OrderQuery {
  u64 merchant = 0;  // 0: every merchant's
  std::optional<OrderStatus> status = std::nullopt;
  u64 created_from_ns = 0;           // at or after
  u64 created_to_ns = ~u64{0} >> 1;  // before
  std::optional<std::string> merchant_ref = std::nullopt;
  std::optional<u64> after_order = std::nullopt;  // the cursor: the page continues after this order
  u32 limit = 100;
  // Only orders that need someone's attention (docs/WEBHOOKS.md, "Attention"): an
  // unresolved exception_checkout, or processing since before this time (its last
  // change's command time).
  std::optional<u64> attention_before_ns = std::nullopt;
};

struct TransferRow {
  u64 id = 0;
  u32 group = 0;
  u64 created_sequence = 0;
  u64 debit = 0, credit = 0;
  u64 amount = 0;         // as made (a hold: held)
  u64 posted_amount = 0;  // moved: all of an immediate one, what a post captured
  std::string currency;
  std::string status;  // posted, pending, voided, expired
  u8 flags = 0;        // TransferFlags, as made
  u64 expires_ns = 0;  // a hold's expiry (0: none)
  u64 created_ns = 0, updated_sequence = 0, updated_ns = 0;
  std::string reference, metadata;
};

// An order's change as the store keeps it, with the order's row as it is now (of which
// only what an order is made with is the same at every change: merchant, amount,
// currency, merchant_ref).
struct OrderChangeRow {
  u64 sequence = 0;
  u32 n = 0;  // its place among its command's order changes
  OrderStatus status = OrderStatus::created;
  u64 amount_refunded = 0;  // after the change
  u64 at_ns = 0;            // the command's time
  OrderRow order = {};
};

// An order change its merchant is told of, or a withdrawal's outcome (docs/WEBHOOKS.md):
// the store's outbox of notifications, written with the change, in the same
// transaction.
struct OrderEventRow {
  u64 seq = 0;  // the store's order of writing: a reader's cursor
  u32 group = 0;
  u64 sequence = 0;   // the command that made the change
  u32 n = 0;          // the event's place among its command's events
  std::string type;   // order_event_type() or withdrawal_event_type()
  u64 at_ns = 0;      // the command's time
  u64 object_id = 0;  // the order's id, or the withdrawal's (its hold's)
  u64 recipient = 0;  // the order's merchant, or the withdrawn account's owner
  Order order;        // an order's event: the order as the change left it,
  std::optional<OrderRow> order_row = std::nullopt;  // and its row now, with its texts
  // A withdrawal's event: its hold as it closed, the request's destination, and the
  // provider's reference sent with the result (if any).
  std::optional<TransferRow> withdrawal = std::nullopt;
  std::string destination = {}, provider_ref = {};
};
// What one projected stretch of a group's journal adds, up to its watermark.
struct Batch {
  u32 group = 0;
  u64 after = 0;      // the group's watermark it continues (0: the group's first batch)
  u64 watermark = 0;  // every command of the group up to here is in the store
  std::vector<LedgerEvent> events;
  std::vector<EntryRow> entries;
  std::vector<AnnotationRow> annotations;
  // Each transfer made in the batch as the ledger made it, in the order of their
  // events (transfer_posted, transfer_pending): flags and expiry are not in events.
  std::vector<Transfer> made;
  std::vector<OrderChange> orders;  // in sequence order
  // Each hold closed (posted, voided, expired) by the batch, with its account's owner:
  // a withdrawal's raises an event (the store knows which holds are withdrawals).
  struct HoldClosed {
    u64 sequence = 0;
    u64 transfer = 0;
    u64 owner = 0;  // of the account the hold is drawn from
    LedgerEventKind kind = LedgerEventKind::pending_posted;
    u64 at_ns = 0;
  };
  std::vector<HoldClosed> holds_closed;  // in sequence order
  // Each final order that left the group's memory (its retention passed): its row
  // moves from `orders` to `order_archive`, after the batch's changes.
  struct OrderLeft {
    u64 sequence = 0;
    u64 id = 0;
    u64 created_ns = 0;
  };
  std::vector<OrderLeft> orders_left;  // in sequence order
  void clear() {
    orders_left.clear();
    holds_closed.clear();
    orders.clear();
    events.clear();
    entries.clear();
    annotations.clear();
    made.clear();
  }
};

// The month an archived order is kept under (order_archive's partitions in MariaDB):
// its creation's, UTC, as yyyymm.
u32 archive_month(u64 created_ns) noexcept;
// The month after `month` (yyyymm).
u32 next_month(u32 month) noexcept;

// Where the store is ([history] in the configuration).
struct StoreConfig {
  sql::Dialect kind = sql::Dialect::sqlite;
  std::filesystem::path file;       // SQLite's
  sql::MariaDbConfig mariadb = {};  // MariaDB's
  std::string describe() const;     // for logs and errors: the file, or the server and database
};

class Store {
 public:
  // Opens (creating) the store and migrates it to kSchemaVersion.
  static Result<std::unique_ptr<Store>> open(const StoreConfig& config);
  static Result<std::unique_ptr<Store>> open(const std::filesystem::path& file) {
    return open(StoreConfig{.file = file});
  }
  // The same store for reading only, on a connection of its own (a thread that reads
  // much, the Kafka publisher, then never waits for the readers of the shared one, nor
  // they for it). The store must exist at kSchemaVersion (open() made it so); writes
  // on it are a bug.
  static Result<std::unique_ptr<Store>> open_reader(const StoreConfig& config);
  static Result<std::unique_ptr<Store>> open_reader(const std::filesystem::path& file) {
    return open_reader(StoreConfig{.file = file});
  }
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // The last sequence of `group` in the store (0: none), and the first (0: none).
  Result<u64> watermark(u32 group);
  Result<u64> first_sequence(u32 group);
  // The batch's rows and its group's watermark, in one transaction; refused (busy,
  // nothing written) unless the batch continues the group's watermark (the group's
  // first batch starts its history anywhere).
  Status write(const Batch& batch);
  // Rows for orders the store has none of (held when the group's history in the store
  // began, or made before the store kept orders), as they are at `sequence`, the
  // group's watermark: without their request's texts or the changes before.
  Status backfill_orders(u32 group, u64 sequence, const std::vector<Order>& orders);

  Result<std::optional<TransferRow>> transfer(u32 group, u64 id);
  // The account's statement lines, newest first, before (sequence, index) if given.
  Result<std::vector<EntryRow>> entries(u64 account, std::optional<std::pair<u64, u32>> before,
                                        u32 limit);
  Result<std::vector<AnnotationRow>> annotations(u32 group, u64 sequence);
  Result<std::optional<OrderRow>> order(u64 id);
  // The page of orders `query` asks for; nullopt when its cursor names no order of it.
  Result<std::optional<std::vector<OrderRow>>> orders(const OrderQuery& query);
  // An order's statuses, oldest first: (sequence, status, amount refunded, at_ns).
  struct OrderStep {
    u64 sequence = 0;
    OrderStatus status = OrderStatus::created;
    u64 amount_refunded = 0;
    u64 at_ns = 0;
  };
  Result<std::vector<OrderStep>> order_history(u64 id);
  // How many orders need attention (OrderQuery::attention_before_ns): processing since
  // before `before_ns`, and unresolved exception_checkout.
  struct Attention {
    u64 processing = 0;
    u64 exception_checkout = 0;
  };
  Result<Attention> attention(u64 before_ns);
  // The outbox's events of `group` after (sequence, n), in their group's order: a
  // reader's cursor is (group, sequence, n), the same in a store rebuilt from the
  // journal (seq is not: it says how the groups' writes interleaved).
  Result<std::vector<OrderEventRow>> order_events(u32 group, u64 after_sequence, u32 after_n,
                                                  u32 limit);
  // The group's events after `after` (from its first when absent), in order, up to
  // sequence `through`.
  Result<std::vector<LedgerEvent>> events(u32 group, std::optional<EventKey> after, u32 limit,
                                          u64 through = ~u64{0});
  // The keys of the group's last event and last order change at or before sequence
  // `through` (none: no such row): where a reader that has every row up to there goes on.
  struct LastKeys {
    std::optional<EventKey> event, order_change;
  };
  Result<LastKeys> last_keys(u32 group, u64 through);
  // The group's order changes after `after` ((sequence, n); from its first when
  // absent), in the order the group made them, up to sequence `through`.
  Result<std::vector<OrderChangeRow>> order_changes(u32 group, std::optional<EventKey> after,
                                                    u32 limit, u64 through = ~u64{0});
  // The events that moved `account` (a statement's lines: not its creation), newest
  // first, before `before` (from the newest when absent).
  Result<std::vector<LedgerEvent>> account_events(u32 group, u64 account,
                                                  std::optional<EventKey> before, u32 limit);
  Result<u64> rows(const std::string& table);  // for tests and tools
  // Each table's rows and a hash of all their values in key order (watermarks: the
  // group and its first sequence only, as a store stopped a little later differs
  // there), to tell two stores of the same journal are the same (projection rebuild).
  struct TableDigest {
    std::string table;
    u64 rows = 0;
    u64 hash = 0;
    bool operator==(const TableDigest&) const = default;
  };
  Result<std::vector<TableDigest>> digest();
  struct Watermark {
    u32 group = 0;
    u64 first_sequence = 0, sequence = 0;
  };
  Result<std::vector<Watermark>> watermarks();
  int schema_version() const noexcept { return schema_version_; }
  // Rows written (events, statement lines, annotations), for /metrics.
  u64 rows_written() const noexcept { return rows_written_.load(std::memory_order_relaxed); }
  // MariaDB: times order_archive's partitions could not be made (logged), for /metrics.
  u64 partition_failures() const noexcept {
    return partition_failures_.load(std::memory_order_relaxed);
  }

 private:
  Store() = default;
  Status exec(const char* sql);
  Status failed(const std::string& what) const;
  Status read_failed(const std::string& what) const;
  Status order_texts(OrderRow& row, sql::Statement& read);  // REQUIRES: read_mutex_ held
  // MariaDB: makes order_archive's partitions for the months of the batch's orders
  // that left memory (DDL: before the batch's transaction). Best effort: a failure is
  // logged and counted, tried again a minute later, and never holds the batch back
  // (p_future takes its rows). REQUIRES: mutex_ held.
  void partition_archive(const Batch& batch);
  Result<std::optional<TransferRow>> transfer_row(u32 group, u64 id);  // REQUIRES: same
  Result<u64> watermark_column(u32 group, const char* sql);

  std::mutex mutex_;  // the writer's
  std::unique_ptr<sql::Connection> db_;
  std::mutex read_mutex_;
  std::unique_ptr<sql::Connection> reader_;
  std::atomic<u64> rows_written_{0};
  int schema_version_ = 0;
  // MariaDB: order_archive's partitions cover the months before this (0: not read yet).
  u32 archive_bound_ = 0;
  u64 partition_retry_ns_ = 0;  // steady clock: no partition DDL before it
  std::atomic<u64> partition_failures_{0};
  std::string label_;  // "history store <where>"
};

}  // namespace paygate::history
