#include "webhooks/webhook_store.h"

#include <sqlite3.h>

#include <fmt/format.h>

#include "base/assert.h"
#include "history/sqlite_db.h"
#include "webhooks/target_url.h"

namespace paygate::webhooks {
namespace {

using sqlite::signed_of;
using sqlite::Statement;

constexpr const char* kMigrations[] = {
    // 1: endpoints, creations' replies, the cursor into the outbox, deliveries.
    R"sql(
CREATE TABLE endpoints(
  id INTEGER PRIMARY KEY AUTOINCREMENT, merchant INTEGER NOT NULL, url TEXT NOT NULL,
  events TEXT NOT NULL, secret TEXT NOT NULL, previous_secret TEXT NOT NULL DEFAULT '',
  previous_until_s INTEGER NOT NULL DEFAULT 0, disabled INTEGER NOT NULL DEFAULT 0,
  created_s INTEGER NOT NULL);
CREATE INDEX endpoints_by_merchant ON endpoints(merchant, id);
CREATE TABLE replies(
  key_lo INTEGER NOT NULL, key_hi INTEGER NOT NULL, content_hash INTEGER NOT NULL,
  status INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (key_lo, key_hi)) WITHOUT ROWID;
CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE cursors(
  grp INTEGER PRIMARY KEY, sequence INTEGER NOT NULL, n INTEGER NOT NULL);
CREATE TABLE deliveries(
  id INTEGER PRIMARY KEY AUTOINCREMENT, event TEXT NOT NULL, type TEXT NOT NULL,
  order_id INTEGER NOT NULL, merchant INTEGER NOT NULL, endpoint INTEGER NOT NULL,
  target TEXT NOT NULL, url TEXT NOT NULL, body TEXT NOT NULL, status INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, last_status INTEGER NOT NULL DEFAULT 0,
  last_error TEXT NOT NULL DEFAULT '', created_ns INTEGER NOT NULL,
  next_attempt_ns INTEGER NOT NULL, finished_ns INTEGER NOT NULL DEFAULT 0,
  give_up_ns INTEGER NOT NULL, UNIQUE (event, target));
CREATE INDEX deliveries_due ON deliveries(status, next_attempt_ns);
CREATE INDEX deliveries_by_order ON deliveries(order_id, target, status, id);
CREATE INDEX deliveries_by_merchant ON deliveries(merchant, id);
CREATE INDEX deliveries_by_endpoint ON deliveries(endpoint, id);
)sql",
    // 2: final deliveries by when they ended, for pruning.
    R"sql(
CREATE INDEX deliveries_finished ON deliveries(finished_ns) WHERE status != 0;
)sql",
    // 3: when an endpoint was made and last enabled or disabled, and its events before
    // their last change, so that an event goes to the endpoints as they were when it
    // happened, not as they are when the worker reads it (Endpoint::receives).
    R"sql(
ALTER TABLE endpoints ADD COLUMN created_ns INTEGER NOT NULL DEFAULT 0;
ALTER TABLE endpoints ADD COLUMN disabled_changed_ns INTEGER NOT NULL DEFAULT 0;
ALTER TABLE endpoints ADD COLUMN previous_events TEXT NOT NULL DEFAULT '';
ALTER TABLE endpoints ADD COLUMN events_changed_ns INTEGER NOT NULL DEFAULT 0;
UPDATE endpoints SET created_ns = created_s * 1000000000;
)sql",
};

constexpr const char* kEndpointColumns =
    "id, merchant, url, events, secret, previous_secret, previous_until_s, disabled, created_s, "
    "created_ns, disabled_changed_ns, previous_events, events_changed_ns";
constexpr const char* kDeliveryColumns =
    "id, event, type, order_id, merchant, endpoint, url, status, attempts, last_status, "
    "last_error, created_ns, next_attempt_ns, finished_ns, give_up_ns, target";

std::string join_events(const std::vector<std::string>& events) {
  std::string out;
  for (const std::string& e : events) {
    if (!out.empty()) out += ',';
    out += e;
  }
  return out;
}

std::vector<std::string> split_events(std::string_view text) {
  std::vector<std::string> out;
  while (!text.empty()) {
    const std::size_t comma = text.find(',');
    out.emplace_back(text.substr(0, comma));
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return out;
}

Endpoint endpoint_of(const Statement& s) {
  Endpoint e;
  e.id = static_cast<u64>(s.integer(0));
  e.merchant = static_cast<u64>(s.integer(1));
  e.url = s.text(2);
  e.events = split_events(s.text(3));
  e.secret = s.text(4);
  e.previous_secret = s.text(5);
  e.previous_until_s = static_cast<u64>(s.integer(6));
  e.disabled = s.integer(7) != 0;
  e.created_s = static_cast<u64>(s.integer(8));
  e.created_ns = static_cast<u64>(s.integer(9));
  e.disabled_changed_ns = static_cast<u64>(s.integer(10));
  e.previous_events = split_events(s.text(11));
  e.events_changed_ns = static_cast<u64>(s.integer(12));
  return e;
}

// kDeliveryColumns from `first`, then the body when `with_body`.
Delivery delivery_of(const Statement& s, bool with_body) {
  Delivery d;
  d.id = static_cast<u64>(s.integer(0));
  d.event = s.text(1);
  d.type = s.text(2);
  d.order_id = static_cast<u64>(s.integer(3));
  d.merchant = static_cast<u64>(s.integer(4));
  d.endpoint = static_cast<u64>(s.integer(5));
  d.url = s.text(6);
  d.status = static_cast<DeliveryStatus>(s.integer(7));
  d.attempts = static_cast<u32>(s.integer(8));
  d.last_status = static_cast<u32>(s.integer(9));
  d.last_error = s.text(10);
  d.created_ns = static_cast<u64>(s.integer(11));
  d.next_attempt_ns = static_cast<u64>(s.integer(12));
  d.finished_ns = static_cast<u64>(s.integer(13));
  d.give_up_ns = static_cast<u64>(s.integer(14));
  d.target = s.text(15);
  if (with_body) d.body = s.text(16);
  return d;
}

// How a transaction's commit reaches the disk. `synced` (synchronous=FULL, the
// connection's setting): before the commit returns — what a request is answered with.
// `derived` (synchronous=NORMAL in WAL: the commit survives a crash of the process; a
// power loss can take back the last ones, never part of one): the worker's own
// writes, each of which is made again if lost — deliveries from the outbox after their
// cursor, which goes back with them; an outcome, by sending again (a duplicate that the
// receiver drops by event id, as around any crash). A later synced commit carries the
// earlier ones to the disk with it.
enum class Commit { synced, derived };

// A transaction on `db` that rolls back unless committed.
class Transaction {
 public:
  Transaction(sqlite3* db, std::string_view label, Commit commit = Commit::synced)
      : db_(db), label_(label), derived_(commit == Commit::derived) {
    if (derived_) (void)sqlite::exec(db_, "PRAGMA synchronous=NORMAL", label_);
    began_ = sqlite::exec(db_, "BEGIN IMMEDIATE", label_);
  }
  ~Transaction() {
    // (A COMMIT that failed can leave the transaction open: SQLITE_BUSY.)
    if (began_.ok() && (!done_ || sqlite3_get_autocommit(db_) == 0)) {
      (void)sqlite::exec(db_, "ROLLBACK", label_);
    }
    if (derived_) {
      const Status restored = sqlite::exec(db_, "PRAGMA synchronous=FULL", label_);
      // (Outside a transaction, it cannot fail; were it to, every write after would be
      // as weakly kept, an answered one too.)
      PG_ASSERT(restored.ok());
    }
  }
  const Status& began() const noexcept { return began_; }
  Status commit() {
    done_ = true;
    return sqlite::exec(db_, "COMMIT", label_);
  }

 private:
  sqlite3* db_;
  std::string_view label_;
  bool derived_ = false;
  Status began_;
  bool done_ = false;
};

}  // namespace

std::string_view name(DeliveryStatus status) noexcept {
  switch (status) {
    case DeliveryStatus::pending:
      return "pending";
    case DeliveryStatus::delivered:
      return "delivered";
    case DeliveryStatus::failed:
      return "failed";
  }
  return "unknown";
}

std::optional<DeliveryStatus> delivery_status_named(std::string_view text) noexcept {
  for (const DeliveryStatus s :
       {DeliveryStatus::pending, DeliveryStatus::delivered, DeliveryStatus::failed}) {
    if (name(s) == text) return s;
  }
  return std::nullopt;
}

namespace {
bool listed(const std::vector<std::string>& events, std::string_view type) noexcept {
  for (const std::string& e : events) {
    if (e == "*" || e == type) return true;
  }
  return false;
}
}  // namespace

bool Endpoint::wants(std::string_view type) const noexcept {
  return listed(events, type);
}

bool Endpoint::receives(std::string_view type, u64 event_ns) const noexcept {
  if (event_ns < created_ns) return false;  // registered after it
  // Before the last change of each, the endpoint was as that change found it.
  const bool disabled_then = event_ns < disabled_changed_ns ? !disabled : disabled;
  if (disabled_then) return false;
  return listed(event_ns < events_changed_ns ? previous_events : events, type);
}

std::string delivery_target(u64 endpoint, std::string_view url) {
  if (endpoint != 0) return fmt::format("endpoint:{}", endpoint);
  // An ipn_url's: its origin, so that the limit per target holds whatever paths a
  // merchant's orders name.
  std::string why;
  const std::optional<TargetUrl> parsed = parse_target_url(url, &why);
  if (!parsed) return std::string(url);
  return fmt::format("{}://{}:{}", parsed->https ? "https" : "http", parsed->host, parsed->port);
}

Result<std::unique_ptr<WebhookStore>> WebhookStore::open(const std::filesystem::path& file) {
  std::unique_ptr<WebhookStore> store(new WebhookStore());
  store->file_ = file;
  store->label_ = "webhook store " + file.string();
  if (Status s = sqlite::open_for_writing(file, store->label_, &store->db_); !s.ok()) return s;
  int version = 0;
  if (Status s = sqlite::migrate(store->db_, store->label_, kMigrations, &version); !s.ok()) {
    return s;
  }
  if (Status s = sqlite::open_for_reading(file, store->label_, &store->reader_); !s.ok()) return s;
  if (Status s = sqlite::open_for_reading(file, store->label_, &store->worker_reader_); !s.ok()) {
    return s;
  }
  return store;
}

WebhookStore::~WebhookStore() {
  if (worker_reader_ != nullptr) sqlite3_close(worker_reader_);
  if (reader_ != nullptr) sqlite3_close(reader_);
  if (db_ != nullptr) sqlite3_close(db_);
}

Status WebhookStore::failed(std::string_view what, sqlite3* db) const {
  return Status::io_error(fmt::format("{}: {}: {}", label_, what, sqlite3_errmsg(db)));
}

Result<std::optional<WebhookStore::Reply>> WebhookStore::reply(u64 key_lo, u64 key_hi) {
  std::lock_guard lock(read_mutex_);
  Statement read(reader_,
                 "SELECT content_hash, status, body FROM replies WHERE key_lo = ? AND key_hi = ?");
  if (!read.ok()) return failed("read a reply", reader_);
  const int rc = read.bind(1, signed_of(key_lo)).bind(2, signed_of(key_hi)).step();
  if (rc == SQLITE_DONE) return std::optional<Reply>();
  if (rc != SQLITE_ROW) return failed("read a reply", reader_);
  return std::optional<Reply>(Reply{.content_hash = static_cast<u64>(read.integer(0)),
                                    .status = static_cast<int>(read.integer(1)),
                                    .body = read.text(2)});
}

Status WebhookStore::keep(const KeptReply& reply, const std::function<std::string()>& body) {
  if (reply.key_lo == 0 && reply.key_hi == 0) return Status::success();
  Statement keep(db_,
                 "INSERT INTO replies(key_lo, key_hi, content_hash, status, body) "
                 "VALUES (?,?,?,?,?)");
  if (!keep.ok() || !keep.bind(1, signed_of(reply.key_lo))
                         .bind(2, signed_of(reply.key_hi))
                         .bind(3, signed_of(reply.content_hash))
                         .bind(4, reply.status)
                         .bind_text(5, body())
                         .run()) {
    return failed("keep a reply", db_);
  }
  return Status::success();
}

Result<std::optional<Endpoint>> WebhookStore::create_endpoint(Endpoint endpoint,
                                                              const KeptReply& reply,
                                                              u64 endpoints_max) {
  std::lock_guard lock(mutex_);
  Transaction txn(db_, label_);
  if (!txn.began().ok()) return txn.began();
  Statement count(db_, "SELECT COUNT(*) FROM endpoints WHERE merchant = ?");
  if (!count.ok() || count.bind(1, signed_of(endpoint.merchant)).step() != SQLITE_ROW) {
    return failed("count endpoints", db_);
  }
  if (static_cast<u64>(count.integer(0)) >= endpoints_max) return std::optional<Endpoint>();
  Statement insert(db_,
                   "INSERT INTO endpoints(merchant, url, events, secret, created_s, created_ns) "
                   "VALUES (?,?,?,?,?,?)");
  if (!insert.ok() || !insert.bind(1, signed_of(endpoint.merchant))
                           .bind_text(2, endpoint.url)
                           .bind_text(3, join_events(endpoint.events))
                           .bind_text(4, endpoint.secret)
                           .bind(5, signed_of(endpoint.created_s))
                           .bind(6, signed_of(endpoint.created_ns))
                           .run()) {
    return failed("create an endpoint", db_);
  }
  endpoint.id = static_cast<u64>(sqlite3_last_insert_rowid(db_));
  if (Status s = keep(reply, [&] { return reply.render(endpoint); }); !s.ok()) return s;
  if (Status s = txn.commit(); !s.ok()) return s;
  return std::optional<Endpoint>(std::move(endpoint));
}

Result<std::optional<Endpoint>> WebhookStore::read_endpoint(sqlite3* db, u64 id) {
  Statement read(db,
                 fmt::format("SELECT {} FROM endpoints WHERE id = ?", kEndpointColumns).c_str());
  if (!read.ok()) return failed("read an endpoint", db);
  const int rc = read.bind(1, signed_of(id)).step();
  if (rc == SQLITE_DONE) return std::optional<Endpoint>();
  if (rc != SQLITE_ROW) return failed("read an endpoint", db);
  return std::optional<Endpoint>(endpoint_of(read));
}

Result<std::optional<Endpoint>> WebhookStore::endpoint(u64 id) {
  std::lock_guard lock(read_mutex_);
  return read_endpoint(reader_, id);
}

Result<u64> WebhookStore::endpoint_count(u64 merchant) {
  std::lock_guard lock(read_mutex_);
  Statement count(reader_, "SELECT COUNT(*) FROM endpoints WHERE merchant = ?");
  if (!count.ok() || count.bind(1, signed_of(merchant)).step() != SQLITE_ROW) {
    return failed("count endpoints", reader_);
  }
  return static_cast<u64>(count.integer(0));
}

Result<std::vector<Endpoint>> WebhookStore::endpoints(u64 merchant) {
  std::lock_guard lock(read_mutex_);
  Statement read(reader_, fmt::format("SELECT {} FROM endpoints{} ORDER BY id", kEndpointColumns,
                                      merchant != 0 ? " WHERE merchant = ?" : "")
                              .c_str());
  if (!read.ok()) return failed("read endpoints", reader_);
  if (merchant != 0) read.bind(1, signed_of(merchant));
  std::vector<Endpoint> out;
  for (int rc = read.step(); rc != SQLITE_DONE; rc = read.step()) {
    if (rc != SQLITE_ROW) return failed("read endpoints", reader_);
    out.push_back(endpoint_of(read));
  }
  return out;
}

Result<std::optional<Endpoint>> WebhookStore::update_endpoint(
    u64 id, std::optional<std::string> url, std::optional<std::vector<std::string>> events,
    std::optional<bool> disabled, u64 now_ns) {
  std::lock_guard lock(mutex_);
  // (Every expression reads the row as it was before the update.) A change that
  // changes nothing keeps the time of the last one.
  Statement update(db_,
                   "UPDATE endpoints SET url = COALESCE(?2, url), events = COALESCE(?3, events), "
                   "disabled = COALESCE(?4, disabled), "
                   "previous_events = CASE WHEN ?3 IS NOT NULL AND ?3 != events THEN events "
                   "ELSE previous_events END, "
                   "events_changed_ns = CASE WHEN ?3 IS NOT NULL AND ?3 != events THEN ?5 "
                   "ELSE events_changed_ns END, "
                   "disabled_changed_ns = CASE WHEN ?4 IS NOT NULL AND ?4 != disabled THEN ?5 "
                   "ELSE disabled_changed_ns END WHERE id = ?1");
  if (!update.ok()) return failed("update an endpoint", db_);
  update.bind(1, signed_of(id)).bind(5, signed_of(now_ns));
  if (url) update.bind_text(2, *url);
  if (events) update.bind_text(3, join_events(*events));
  if (disabled) update.bind(4, *disabled ? 1 : 0);
  if (!update.run()) return failed("update an endpoint", db_);
  return read_endpoint(db_, id);
}

Result<std::optional<Endpoint>> WebhookStore::rotate_secret(u64 id, std::string secret,
                                                            u64 grace_until_s,
                                                            const KeptReply& reply) {
  std::lock_guard lock(mutex_);
  Transaction txn(db_, label_);
  if (!txn.began().ok()) return txn.began();
  Statement update(db_,
                   "UPDATE endpoints SET previous_secret = secret, previous_until_s = ?2, "
                   "secret = ?3 WHERE id = ?1");
  if (!update.ok() ||
      !update.bind(1, signed_of(id)).bind(2, signed_of(grace_until_s)).bind_text(3, secret).run()) {
    return failed("rotate an endpoint's secret", db_);
  }
  Result<std::optional<Endpoint>> rotated = read_endpoint(db_, id);
  if (!rotated.ok() || !rotated.value()) return rotated;
  if (Status s = keep(reply, [&] { return reply.render(*rotated.value()); }); !s.ok()) return s;
  if (Status s = txn.commit(); !s.ok()) return s;
  return rotated;
}

Result<bool> WebhookStore::delete_endpoint(u64 id, u64 now_ns) {
  std::lock_guard lock(mutex_);
  Transaction txn(db_, label_);
  if (!txn.began().ok()) return txn.began();
  Statement remove(db_, "DELETE FROM endpoints WHERE id = ?");
  if (!remove.ok() || !remove.bind(1, signed_of(id)).run()) {
    return failed("delete an endpoint", db_);
  }
  const bool removed = sqlite3_changes(db_) > 0;
  Statement fail_pending(db_,
                         "UPDATE deliveries SET status = 2, last_error = 'endpoint deleted', "
                         "finished_ns = ?2 WHERE endpoint = ?1 AND status = 0");
  if (!fail_pending.ok() || !fail_pending.bind(1, signed_of(id)).bind(2, signed_of(now_ns)).run()) {
    return failed("fail an endpoint's deliveries", db_);
  }
  if (Status s = txn.commit(); !s.ok()) return s;
  return removed;
}

Result<std::vector<Cursor>> WebhookStore::cursors() {
  std::lock_guard lock(worker_read_mutex_);
  Statement read(worker_reader_, "SELECT grp, sequence, n FROM cursors ORDER BY grp");
  if (!read.ok()) return failed("read the cursors", worker_reader_);
  std::vector<Cursor> out;
  for (int rc = read.step(); rc != SQLITE_DONE; rc = read.step()) {
    if (rc != SQLITE_ROW) return failed("read the cursors", worker_reader_);
    out.push_back({static_cast<u32>(read.integer(0)), static_cast<u64>(read.integer(1)),
                   static_cast<u32>(read.integer(2))});
  }
  return out;
}

Result<bool> WebhookStore::initialize(const std::vector<Cursor>& start) {
  std::lock_guard lock(mutex_);
  Transaction txn(db_, label_);
  if (!txn.began().ok()) return txn.began();
  Statement done(db_, "SELECT value FROM meta WHERE key = 'initialized'");
  if (!done.ok()) return failed("read the store's state", db_);
  const int rc = done.step();
  if (rc == SQLITE_ROW) return false;
  if (rc != SQLITE_DONE) return failed("read the store's state", db_);
  Statement place(db_,
                  "INSERT INTO cursors(grp, sequence, n) VALUES (?,?,?) ON CONFLICT(grp) DO "
                  "UPDATE SET sequence = excluded.sequence, n = excluded.n");
  Statement mark(db_, "INSERT INTO meta(key, value) VALUES ('initialized', 1)");
  if (!place.ok() || !mark.ok()) return failed("prepare", db_);
  for (const Cursor& c : start) {
    if (!place.bind(1, c.group).bind(2, signed_of(c.sequence)).bind(3, c.n).run()) {
      return failed("place a cursor", db_);
    }
  }
  if (!mark.run()) return failed("mark the store initialized", db_);
  if (Status s = txn.commit(); !s.ok()) return s;
  return true;
}

Status WebhookStore::enqueue(const std::vector<NewDelivery>& deliveries, const Cursor& cursor) {
  std::lock_guard lock(mutex_);
  Transaction txn(db_, label_, Commit::derived);
  if (!txn.began().ok()) return txn.began();
  // (An event already made into deliveries — a cursor behind them, restored — is not
  // made twice.)
  Statement insert(db_,
                   "INSERT OR IGNORE INTO deliveries(event, type, order_id, merchant, endpoint, "
                   "target, url, body, status, created_ns, next_attempt_ns, give_up_ns) "
                   "VALUES (?,?,?,?,?,?,?,?,0,?,?,?)");
  Statement move(db_,
                 "INSERT INTO cursors(grp, sequence, n) VALUES (?,?,?) ON CONFLICT(grp) DO "
                 "UPDATE SET sequence = excluded.sequence, n = excluded.n");
  if (!insert.ok() || !move.ok()) return failed("prepare", db_);
  for (const NewDelivery& d : deliveries) {
    const bool ok = insert.bind_text(1, d.event)
                        .bind_text(2, d.type)
                        .bind(3, signed_of(d.order_id))
                        .bind(4, signed_of(d.merchant))
                        .bind(5, signed_of(d.endpoint))
                        .bind_text(6, delivery_target(d.endpoint, d.url))
                        .bind_text(7, d.url)
                        .bind_text(8, d.body)
                        .bind(9, signed_of(d.created_ns))
                        .bind(10, signed_of(d.created_ns))
                        .bind(11, signed_of(d.give_up_ns))
                        .run();
    if (!ok) return failed("make a delivery", db_);
  }
  if (!move.bind(1, cursor.group).bind(2, signed_of(cursor.sequence)).bind(3, cursor.n).run()) {
    return failed("move a cursor", db_);
  }
  return txn.commit();
}

namespace {
// A JSON array of texts, for json_each().
std::string json_texts(const std::vector<std::string>& texts) {
  std::string out = "[";
  for (const std::string& t : texts) {
    if (out.size() > 1) out += ',';
    out += '"';
    for (const char c : t) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  out += ']';
  return out;
}
std::string json_numbers(const std::vector<u64>& numbers) {
  std::string out = "[";
  for (const u64 v : numbers) {
    if (out.size() > 1) out += ',';
    out += std::to_string(static_cast<i64>(v));
  }
  out += ']';
  return out;
}
}  // namespace

Result<std::vector<Delivery>> WebhookStore::due(u64 now_ns, const std::vector<u64>& in_flight,
                                                const std::vector<std::string>& busy,
                                                const std::vector<u64>& busy_merchants, u32 limit) {
  std::lock_guard lock(worker_read_mutex_);
  // The oldest pending delivery of each (order, target) only; busy targets and
  // disabled endpoints left out.
  Statement read(
      worker_reader_,
      fmt::format(
          "SELECT {}, body FROM deliveries d WHERE d.status = 0 AND d.next_attempt_ns <= ?1 "
          "AND d.id = (SELECT MIN(e.id) FROM deliveries e WHERE e.order_id = d.order_id "
          "AND e.target = d.target AND e.status = 0 "
          "AND (e.type LIKE 'order.%') = (d.type LIKE 'order.%')) "
          "AND (d.endpoint = 0 OR d.endpoint NOT IN (SELECT id FROM endpoints WHERE disabled = 1)) "
          "AND d.target NOT IN (SELECT value FROM json_each(?2)) "
          "AND d.merchant NOT IN (SELECT value FROM json_each(?4)) "
          "AND d.id NOT IN (SELECT value FROM json_each(?5)) "
          "ORDER BY d.next_attempt_ns, d.id LIMIT ?3",
          kDeliveryColumns)
          .c_str());
  if (!read.ok()) return failed("read due deliveries", worker_reader_);
  read.bind(1, signed_of(now_ns))
      .bind_text(2, json_texts(busy))
      .bind(3, limit)
      .bind_text(4, json_numbers(busy_merchants))
      .bind_text(5, json_numbers(in_flight));
  std::vector<Delivery> out;
  for (int rc = read.step(); rc != SQLITE_DONE; rc = read.step()) {
    if (rc != SQLITE_ROW) return failed("read due deliveries", worker_reader_);
    out.push_back(delivery_of(read, /*with_body=*/true));
  }
  return out;
}

Status WebhookStore::record(const std::vector<Outcome>& outcomes) {
  std::lock_guard lock(mutex_);
  Transaction txn(db_, label_, Commit::derived);
  if (!txn.began().ok()) return txn.began();
  Statement update(
      db_,
      // (The give-up time as stored decides, not the attempt's copy: a resend while it
      // was in flight gave the delivery a new one. The last retry is due just before it.)
      "UPDATE deliveries SET attempts = attempts + 1, last_status = ?2, last_error = ?3, "
      "status = CASE WHEN ?4 THEN 1 WHEN ?5 = 0 OR ?6 >= give_up_ns THEN 2 ELSE 0 END, "
      "next_attempt_ns = CASE WHEN ?4 OR ?5 = 0 OR ?6 >= give_up_ns THEN 0 "
      "ELSE MIN(?5, give_up_ns - 1) END, "
      "finished_ns = CASE WHEN ?4 OR ?5 = 0 OR ?6 >= give_up_ns THEN ?6 ELSE 0 END, "
      "url = COALESCE(NULLIF(?7, ''), url) WHERE id = ?1 AND status = 0");
  if (!update.ok()) return failed("prepare", db_);
  for (const Outcome& o : outcomes) {
    const bool ok = update.bind(1, signed_of(o.id))
                        .bind(2, o.http_status)
                        .bind_text(3, o.error)
                        .bind(4, o.delivered ? 1 : 0)
                        .bind(5, signed_of(o.next_attempt_ns))
                        .bind(6, signed_of(o.at_ns))
                        .bind_text(7, o.url)
                        .run();
    if (!ok) return failed("record an attempt", db_);
  }
  return txn.commit();
}

Result<u64> WebhookStore::expire(u64 now_ns, const std::vector<u64>& in_flight) {
  std::lock_guard lock(mutex_);
  Statement update(db_,
                   "UPDATE deliveries SET status = 2, last_error = CASE WHEN last_error = '' "
                   "THEN 'expired' ELSE 'expired: ' || last_error END, finished_ns = ?1 "
                   "WHERE status = 0 AND give_up_ns <= ?1 "
                   "AND id NOT IN (SELECT value FROM json_each(?2))");
  if (!update.ok() ||
      !update.bind(1, signed_of(now_ns)).bind_text(2, json_numbers(in_flight)).run()) {
    return failed("expire deliveries", db_);
  }
  return static_cast<u64>(sqlite3_changes(db_));
}

Result<u64> WebhookStore::prune(u64 finished_before_ns, u32 limit) {
  std::lock_guard lock(mutex_);
  Statement remove(db_,
                   "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries "
                   "WHERE status != 0 AND finished_ns < ?1 ORDER BY finished_ns LIMIT ?2)");
  if (!remove.ok() || !remove.bind(1, signed_of(finished_before_ns)).bind(2, limit).run()) {
    return failed("prune deliveries", db_);
  }
  return static_cast<u64>(sqlite3_changes(db_));
}

Result<std::optional<Delivery>> WebhookStore::delivery(u64 id) {
  std::lock_guard lock(read_mutex_);
  Statement read(
      reader_,
      fmt::format("SELECT {}, body FROM deliveries WHERE id = ?", kDeliveryColumns).c_str());
  if (!read.ok()) return failed("read a delivery", reader_);
  const int rc = read.bind(1, signed_of(id)).step();
  if (rc == SQLITE_DONE) return std::optional<Delivery>();
  if (rc != SQLITE_ROW) return failed("read a delivery", reader_);
  return std::optional<Delivery>(delivery_of(read, /*with_body=*/true));
}

Result<std::vector<Delivery>> WebhookStore::deliveries(const DeliveryQuery& q) {
  std::lock_guard lock(read_mutex_);
  // Every parameter numbered, so that a condition left out leaves its binding unused.
  const std::string sql =
      fmt::format("SELECT {} FROM deliveries WHERE id < ?1{}{}{}{} ORDER BY id DESC LIMIT ?6",
                  kDeliveryColumns, q.merchant != 0 ? " AND merchant = ?2" : "",
                  q.endpoint != 0 ? " AND endpoint = ?3" : "", q.status ? " AND status = ?4" : "",
                  !q.order                ? ""
                  : q.order_is_withdrawal ? " AND order_id = ?5 AND type LIKE 'withdrawal.%'"
                                          : " AND order_id = ?5 AND type LIKE 'order.%'");
  Statement read(reader_, sql.c_str());
  if (!read.ok()) return failed("read deliveries", reader_);
  read.bind(1, q.before_id ? signed_of(*q.before_id) : std::numeric_limits<i64>::max())
      .bind(2, signed_of(q.merchant))
      .bind(3, signed_of(q.endpoint))
      .bind(4, q.status ? static_cast<i64>(*q.status) : 0)
      .bind(5, q.order ? signed_of(*q.order) : 0)
      .bind(6, q.limit);
  std::vector<Delivery> out;
  for (int rc = read.step(); rc != SQLITE_DONE; rc = read.step()) {
    if (rc != SQLITE_ROW) return failed("read deliveries", reader_);
    out.push_back(delivery_of(read, /*with_body=*/false));
  }
  return out;
}

Result<std::optional<Delivery>> WebhookStore::latest_for_order(u64 order_id) {
  std::lock_guard lock(read_mutex_);
  Statement read(reader_, fmt::format("SELECT {} FROM deliveries WHERE order_id = ? "
                                      "AND type LIKE 'order.%' ORDER BY id DESC LIMIT 1",
                                      kDeliveryColumns)
                              .c_str());
  if (!read.ok()) return failed("read a delivery", reader_);
  const int rc = read.bind(1, signed_of(order_id)).step();
  if (rc == SQLITE_DONE) return std::optional<Delivery>();
  if (rc != SQLITE_ROW) return failed("read a delivery", reader_);
  return std::optional<Delivery>(delivery_of(read, /*with_body=*/false));
}

Result<std::optional<Delivery>> WebhookStore::resend(
    u64 id, u64 now_ns, u64 give_up_ns, const KeptReply& reply,
    const std::function<std::string(const Delivery&)>& render) {
  std::lock_guard lock(mutex_);
  Transaction txn(db_, label_);
  if (!txn.began().ok()) return txn.began();
  Statement update(db_,
                   "UPDATE deliveries SET status = 0, next_attempt_ns = ?2, give_up_ns = ?3, "
                   "finished_ns = 0 WHERE id = ?1");
  if (!update.ok() || !update.bind(1, signed_of(id))
                           .bind(2, signed_of(now_ns))
                           .bind(3, signed_of(give_up_ns))
                           .run()) {
    return failed("resend a delivery", db_);
  }
  if (sqlite3_changes(db_) == 0) return std::optional<Delivery>();
  Statement read(db_,
                 fmt::format("SELECT {} FROM deliveries WHERE id = ?", kDeliveryColumns).c_str());
  if (!read.ok() || read.bind(1, signed_of(id)).step() != SQLITE_ROW) {
    return failed("read a delivery", db_);
  }
  Delivery resent = delivery_of(read, /*with_body=*/false);
  if (Status s = keep(reply, [&] { return render(resent); }); !s.ok()) return s;
  if (Status s = txn.commit(); !s.ok()) return s;
  return std::optional<Delivery>(std::move(resent));
}

Result<std::vector<WebhookStore::Backlog>> WebhookStore::backlog() {
  std::lock_guard lock(read_mutex_);
  Statement read(reader_,
                 "SELECT endpoint, COUNT(*), MIN(created_ns) FROM deliveries WHERE status = 0 "
                 "GROUP BY endpoint ORDER BY endpoint");
  if (!read.ok()) return failed("read the backlog", reader_);
  std::vector<Backlog> out;
  for (int rc = read.step(); rc != SQLITE_DONE; rc = read.step()) {
    if (rc != SQLITE_ROW) return failed("read the backlog", reader_);
    out.push_back({static_cast<u64>(read.integer(0)), static_cast<u64>(read.integer(1)),
                   static_cast<u64>(read.integer(2))});
  }
  return out;
}

}  // namespace paygate::webhooks
