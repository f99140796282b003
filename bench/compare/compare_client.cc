// compare_client: the balance-reservation workloads of bench/compare, run against
// the usual designs, so that paygate's figures have a baseline measured the same way.
//
// One operation checks and reserves 1 on a merchant's balance:
//   postgres, mariadb  BEGIN; SELECT balance, held … FOR UPDATE; (refuse if the balance
//                      cannot cover it) UPDATE … SET held = held + 1; INSERT a log row;
//                      COMMIT — the design of a payment service on a SQL database
//   redis              one Lua script per operation (check, HINCRBY, RPUSH of a log
//                      entry): the seeds' cache-and-lock design, on an append-only
//                      file synced at every write
// Workloads: --merchants 1 is the hot merchant; 10,000 the uniform one. With
// --ops-per-request K a request carries K operations on one merchant: in SQL one
// transaction, in Redis K scripts pipelined in one round trip.
//
// --workload order-cycle: one operation is an order's cycle, three requests as
// paygate's three (create, checkout, the provider's success), each durable:
//   postgres, mariadb  INSERT the order; then BEGIN; SELECT the order and the
//                      merchant's balance FOR UPDATE; UPDATE both (processing, the
//                      amount pending); COMMIT; then BEGIN; UPDATE the order (success)
//                      and the balance (credited); COMMIT
//   redis              three Lua scripts: create (a counter, the order's hash), checkout
//                      and result, each taking the seeds' lock record (SET NX PX) on
//                      the order while it checks and moves it
// At the end: as many orders in success as cycles answered, the balances credited by
// as much, nothing left pending.
//
// --clients threads, one connection each, one request in flight each, for --seconds
// or until --max-ops operations, whichever is first; the clock starts once every
// client has connected. Progress once a second on stderr. At the end every operation
// is checked: the merchants' held amounts and the log's rows must each equal the
// operations acknowledged. Prints one line:
//   compare system=… workload=… clients=… ops_per_request=… ops=… ops_per_sec=…
//           p50_us=… p99_us=… failures=… max_us=… over_2s=… (requests answered after
//           more than 2 s) slowest_connection_share=… fastest_connection_share=…
//           (the slowest and fastest connection's requests against the mean)
//
//   compare_client --system postgres --port 55432 --setup --merchants 10000
//   compare_client --system postgres --port 55432 --merchants 1 --clients 16 --seconds 10
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <mysql.h>

#include <CLI/CLI.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../latency.h"
#include "../progress.h"

namespace paygate {
namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string system;
  std::string host = "127.0.0.1";
  u16 port = 0;
  std::string user = "bench";
  std::string database = "bench";
  bool setup = false;
  u32 merchants = 1;
  u32 ops_per_request = 1;
  u32 clients = 16;
  double seconds = 10;
  u64 max_ops = 10'000'000;
  std::string workload = "reserve";  // reserve | order-cycle
};

// What every system offers the workload: one request of `count` operations on one
// merchant; false on a failure of the system (not a refusal for funds, which
// cannot happen here: balances are set far above what a run can reserve).
class Connection {
 public:
  virtual ~Connection() = default;
  virtual bool reserve(u32 merchant, u32 count) = 0;
  // One order, created, checked out and paid: three durable requests.
  virtual bool order_cycle(u32 merchant) = 0;
};

constexpr long long kStartBalance = 1'000'000'000'000;

// ---- PostgreSQL (libpq) ----

class Postgres final : public Connection {
 public:
  // `for_setup`: the tables may not exist yet, so nothing is prepared.
  explicit Postgres(const Options& o, bool for_setup = false) {
    const std::string info = "host=" + o.host + " port=" + std::to_string(o.port) +
                             " user=" + o.user + " dbname=" + o.database;
    conn_ = PQconnectdb(info.c_str());
    if (PQstatus(conn_) != CONNECTION_OK) {
      std::fprintf(stderr, "compare_client: postgres: %s", PQerrorMessage(conn_));
      ok_ = false;
      return;
    }
    ok_ = for_setup ||
          (prepare("lock", "SELECT balance, held FROM merchants WHERE id = $1 FOR UPDATE") &&
           prepare("hold", "UPDATE merchants SET held = held + 1 WHERE id = $1") &&
           prepare("log", "INSERT INTO holds (merchant_id, amount) VALUES ($1, 1)") &&
           prepare("order_create",
                   "INSERT INTO orders (merchant_id, amount, status) VALUES ($1, 1, 1) "
                   "RETURNING id") &&
           prepare("order_lock", "SELECT status FROM orders WHERE id = $1 FOR UPDATE") &&
           prepare("order_processing", "UPDATE orders SET status = 2 WHERE id = $1") &&
           prepare("order_success", "UPDATE orders SET status = 3 WHERE id = $1 AND status = 2") &&
           prepare("credit",
                   "UPDATE merchants SET held = held - 1, balance = balance + 1 WHERE id = $1"));
  }
  ~Postgres() override { PQfinish(conn_); }
  bool ok() const { return ok_; }

  bool exec(const char* sql) {
    PGresult* r = PQexec(conn_, sql);
    const ExecStatusType status = PQresultStatus(r);
    const bool good = status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK;
    if (!good) std::fprintf(stderr, "compare_client: postgres: %s", PQerrorMessage(conn_));
    PQclear(r);
    return good;
  }

  bool reserve(u32 merchant, u32 count) override {
    const std::string id = std::to_string(merchant);
    const char* params[] = {id.c_str()};
    if (!exec("BEGIN")) return false;
    for (u32 i = 0; i < count; ++i) {
      PGresult* r = PQexecPrepared(conn_, "lock", 1, params, nullptr, nullptr, 0);
      bool good = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
      // The check: the balance must cover what is held plus this reservation.
      good = good && std::atoll(PQgetvalue(r, 0, 0)) - std::atoll(PQgetvalue(r, 0, 1)) >= 1;
      PQclear(r);
      good = good && step("hold", params) && step("log", params);
      if (!good) {
        exec("ROLLBACK");
        return false;
      }
    }
    return exec("COMMIT");
  }

  bool order_cycle(u32 merchant) override {
    const std::string id = std::to_string(merchant);
    const char* merchant_params[] = {id.c_str()};
    PGresult* made = PQexecPrepared(conn_, "order_create", 1, merchant_params, nullptr, nullptr, 0);
    const bool created = PQresultStatus(made) == PGRES_TUPLES_OK && PQntuples(made) == 1;
    const std::string order = created ? PQgetvalue(made, 0, 0) : "";
    PQclear(made);
    if (!created) return false;
    const char* order_params[] = {order.c_str()};
    // The checkout: the order and the balance locked, both moved.
    if (!exec("BEGIN")) return false;
    PGresult* r = PQexecPrepared(conn_, "order_lock", 1, order_params, nullptr, nullptr, 0);
    bool good = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
                std::atoi(PQgetvalue(r, 0, 0)) == 1;
    PQclear(r);
    if (good) {
      r = PQexecPrepared(conn_, "lock", 1, merchant_params, nullptr, nullptr, 0);
      good = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
      PQclear(r);
    }
    good = good && step("order_processing", order_params) && step("hold", merchant_params);
    if (!good || !exec("COMMIT")) {
      exec("ROLLBACK");
      return false;
    }
    // The provider's success.
    if (!exec("BEGIN")) return false;
    good = step("order_success", order_params) && step("credit", merchant_params);
    if (!good) {
      exec("ROLLBACK");
      return false;
    }
    return exec("COMMIT");
  }

  // Orders in success, and the merchants' balances above where they started.
  bool order_totals(long long* paid, long long* credited, long long* pending) {
    const std::string sql =
        "SELECT (SELECT COUNT(*) FROM orders WHERE status = 3), (SELECT COALESCE(SUM(balance), "
        "0) - COUNT(*) * " +
        std::to_string(kStartBalance) +
        " FROM merchants), (SELECT COALESCE(SUM(held), 0) FROM merchants)";
    PGresult* r = PQexec(conn_, sql.c_str());
    const bool good = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    if (good) {
      *paid = std::atoll(PQgetvalue(r, 0, 0));
      *credited = std::atoll(PQgetvalue(r, 0, 1));
      *pending = std::atoll(PQgetvalue(r, 0, 2));
    }
    PQclear(r);
    return good;
  }

  // Sums the merchants' held amounts and counts the log's rows.
  bool totals(long long* held, long long* rows) {
    PGresult* r = PQexec(conn_,
                         "SELECT (SELECT COALESCE(SUM(held), 0) FROM merchants), "
                         "(SELECT COUNT(*) FROM holds)");
    const bool good = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    if (good) {
      *held = std::atoll(PQgetvalue(r, 0, 0));
      *rows = std::atoll(PQgetvalue(r, 0, 1));
    }
    PQclear(r);
    return good;
  }

 private:
  bool prepare(const char* name, const char* sql) {
    PGresult* r = PQprepare(conn_, name, sql, 1, nullptr);
    const bool good = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!good) std::fprintf(stderr, "compare_client: postgres: %s", PQerrorMessage(conn_));
    PQclear(r);
    return good;
  }
  bool step(const char* name, const char* const* params) {
    PGresult* r = PQexecPrepared(conn_, name, 1, params, nullptr, nullptr, 0);
    const bool good = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    return good;
  }

  PGconn* conn_ = nullptr;
  bool ok_ = false;
};

// ---- MariaDB (libmariadb) ----

class Mariadb final : public Connection {
 public:
  explicit Mariadb(const Options& o) {
    conn_ = mysql_init(nullptr);
    if (mysql_real_connect(conn_, o.host.c_str(), o.user.c_str(), nullptr, o.database.c_str(),
                           o.port, nullptr, 0) == nullptr) {
      std::fprintf(stderr, "compare_client: mariadb: %s\n", mysql_error(conn_));
      return;
    }
    ok_ = true;
  }
  ~Mariadb() override { mysql_close(conn_); }
  bool ok() const { return ok_; }

  bool exec(const std::string& sql) {
    if (mysql_real_query(conn_, sql.data(), sql.size()) != 0) {
      std::fprintf(stderr, "compare_client: mariadb: %s\n", mysql_error(conn_));
      return false;
    }
    if (MYSQL_RES* r = mysql_store_result(conn_)) mysql_free_result(r);
    return true;
  }

  bool reserve(u32 merchant, u32 count) override {
    const std::string id = std::to_string(merchant);
    const std::string lock = "SELECT balance, held FROM merchants WHERE id = " + id + " FOR UPDATE";
    const std::string hold = "UPDATE merchants SET held = held + 1 WHERE id = " + id;
    const std::string log = "INSERT INTO holds (merchant_id, amount) VALUES (" + id + ", 1)";
    if (!exec("BEGIN")) return false;
    for (u32 i = 0; i < count; ++i) {
      bool good = mysql_real_query(conn_, lock.data(), lock.size()) == 0;
      MYSQL_RES* r = good ? mysql_store_result(conn_) : nullptr;
      MYSQL_ROW row = r ? mysql_fetch_row(r) : nullptr;
      good = row != nullptr && std::atoll(row[0]) - std::atoll(row[1]) >= 1;
      if (r) mysql_free_result(r);
      good = good && exec(hold) && exec(log);
      if (!good) {
        exec("ROLLBACK");
        return false;
      }
    }
    return exec("COMMIT");
  }

  bool order_cycle(u32 merchant) override {
    const std::string id = std::to_string(merchant);
    if (!exec("INSERT INTO orders (merchant_id, amount, status) VALUES (" + id + ", 1, 1)")) {
      return false;
    }
    const std::string order = std::to_string(mysql_insert_id(conn_));
    // The checkout: the order and the balance locked, both moved.
    if (!exec("BEGIN")) return false;
    bool good = query_one("SELECT status FROM orders WHERE id = " + order + " FOR UPDATE") == 1 &&
                query_one("SELECT balance FROM merchants WHERE id = " + id + " FOR UPDATE") > 0 &&
                exec("UPDATE orders SET status = 2 WHERE id = " + order) &&
                exec("UPDATE merchants SET held = held + 1 WHERE id = " + id);
    if (!good || !exec("COMMIT")) {
      exec("ROLLBACK");
      return false;
    }
    // The provider's success.
    if (!exec("BEGIN")) return false;
    good = exec("UPDATE orders SET status = 3 WHERE id = " + order + " AND status = 2") &&
           mysql_affected_rows(conn_) == 1 &&
           exec("UPDATE merchants SET held = held - 1, balance = balance + 1 WHERE id = " + id);
    if (!good) {
      exec("ROLLBACK");
      return false;
    }
    return exec("COMMIT");
  }

  // The first column of a one-row query, or -1.
  long long query_one(const std::string& sql) {
    if (mysql_real_query(conn_, sql.data(), sql.size()) != 0) return -1;
    MYSQL_RES* r = mysql_store_result(conn_);
    MYSQL_ROW row = r ? mysql_fetch_row(r) : nullptr;
    const long long value = row != nullptr && row[0] != nullptr ? std::atoll(row[0]) : -1;
    if (r) mysql_free_result(r);
    return value;
  }

  bool order_totals(long long* paid, long long* credited, long long* pending) {
    *paid = query_one("SELECT COUNT(*) FROM orders WHERE status = 3");
    *credited = query_one("SELECT COALESCE(SUM(balance), 0) - COUNT(*) * " +
                          std::to_string(kStartBalance) + " FROM merchants");
    *pending = query_one("SELECT COALESCE(SUM(held), 0) FROM merchants");
    return *paid >= 0 && *pending >= 0;
  }

  bool totals(long long* held, long long* rows) {
    const std::string sql =
        "SELECT (SELECT COALESCE(SUM(held), 0) FROM merchants), (SELECT COUNT(*) FROM holds)";
    if (mysql_real_query(conn_, sql.data(), sql.size()) != 0) return false;
    MYSQL_RES* r = mysql_store_result(conn_);
    MYSQL_ROW row = r ? mysql_fetch_row(r) : nullptr;
    const bool good = row != nullptr;
    if (good) {
      *held = std::atoll(row[0]);
      *rows = std::atoll(row[1]);
    }
    if (r) mysql_free_result(r);
    return good;
  }

 private:
  MYSQL* conn_ = nullptr;
  bool ok_ = false;
};

// ---- Redis with Lua (hiredis) ----

// KEYS[1] the merchant's hash, KEYS[2] the log; refuses (0) when the balance cannot
// cover what is held plus 1.
constexpr const char* kReserveScript = R"(
local b = tonumber(redis.call('HGET', KEYS[1], 'balance'))
local h = tonumber(redis.call('HGET', KEYS[1], 'held'))
if b == nil or b - h < 1 then return 0 end
redis.call('HINCRBY', KEYS[1], 'held', 1)
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
)";

// An order's cycle, the seeds' way: each step takes the order's lock record (SET NX
// PX, KEYS[2]) while it checks the order's status and moves it.
// Create: KEYS[1] the merchant's hash; returns the new order's id.
constexpr const char* kOrderCreateScript = R"(
local id = redis.call('INCR', 'orders:next')
redis.call('HSET', 'order:' .. id, 'merchant', KEYS[1], 'amount', 1, 'status', 'created')
return id
)";
// Checkout: KEYS[1] the order, KEYS[2] its lock, KEYS[3] the merchant; 1 when done.
constexpr const char* kOrderCheckoutScript = R"(
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', 5000) then return 0 end
local ok = redis.call('HGET', KEYS[1], 'status') == 'created' and
           tonumber(redis.call('HGET', KEYS[3], 'balance')) ~= nil
if ok then
  redis.call('HSET', KEYS[1], 'status', 'processing')
  redis.call('HINCRBY', KEYS[3], 'held', 1)
end
redis.call('DEL', KEYS[2])
if ok then return 1 end
return 0
)";
// The provider's success: the same keys; the merchant credited.
constexpr const char* kOrderResultScript = R"(
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', 5000) then return 0 end
local ok = redis.call('HGET', KEYS[1], 'status') == 'processing'
if ok then
  redis.call('HSET', KEYS[1], 'status', 'success')
  redis.call('HINCRBY', KEYS[3], 'held', -1)
  redis.call('HINCRBY', KEYS[3], 'balance', 1)
  redis.call('INCR', 'orders:paid')
end
redis.call('DEL', KEYS[2])
if ok then return 1 end
return 0
)";

class Redis final : public Connection {
 public:
  explicit Redis(const Options& o) {
    ctx_ = redisConnect(o.host.c_str(), o.port);
    if (ctx_ == nullptr || ctx_->err) {
      std::fprintf(stderr, "compare_client: redis: %s\n", ctx_ ? ctx_->errstr : "no memory");
      return;
    }
    ok_ = load(kReserveScript, &sha_) && load(kOrderCreateScript, &create_sha_) &&
          load(kOrderCheckoutScript, &checkout_sha_) && load(kOrderResultScript, &result_sha_);
  }
  ~Redis() override {
    if (ctx_) redisFree(ctx_);
  }
  bool ok() const { return ok_; }
  redisContext* context() { return ctx_; }

  // `count` scripts in one round trip: each its own operation, as paygate's batch is.
  bool reserve(u32 merchant, u32 count) override {
    const std::string key = "merchant:" + std::to_string(merchant);
    for (u32 i = 0; i < count; ++i) {
      redisAppendCommand(ctx_, "EVALSHA %s 2 %s holds %s", sha_.c_str(), key.c_str(), key.c_str());
    }
    bool good = true;
    for (u32 i = 0; i < count; ++i) {
      void* reply = nullptr;
      if (redisGetReply(ctx_, &reply) != REDIS_OK || reply == nullptr) return false;
      auto* r = static_cast<redisReply*>(reply);
      good = good && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
      freeReplyObject(r);
    }
    return good;
  }

  bool order_cycle(u32 merchant) override {
    const std::string key = "merchant:" + std::to_string(merchant);
    long long id = 0;
    if (!eval(create_sha_, 1, {key}, &id) || id <= 0) return false;
    const std::string order = "order:" + std::to_string(id);
    const std::vector<std::string> keys = {order, "lock:" + order, key};
    long long done = 0;
    if (!eval(checkout_sha_, 3, keys, &done) || done != 1) return false;
    return eval(result_sha_, 3, keys, &done) && done == 1;
  }

 private:
  bool load(const char* script, std::string* sha) {
    auto* r = static_cast<redisReply*>(redisCommand(ctx_, "SCRIPT LOAD %s", script));
    const bool good = r && r->type == REDIS_REPLY_STRING;
    if (good) *sha = r->str;
    if (r) freeReplyObject(r);
    return good;
  }
  // EVALSHA with `keys` and one argument (a token for the lock record); an integer reply.
  bool eval(const std::string& sha, int count, const std::vector<std::string>& keys,
            long long* out) {
    std::vector<const char*> argv = {"EVALSHA", sha.c_str()};
    const std::string n = std::to_string(count);
    argv.push_back(n.c_str());
    for (const std::string& k : keys)
      argv.push_back(k.c_str());
    argv.push_back("client");
    auto* r = static_cast<redisReply*>(
        redisCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(), nullptr));
    const bool good = r && r->type == REDIS_REPLY_INTEGER;
    if (good) *out = r->integer;
    if (!good && r && r->type == REDIS_REPLY_ERROR) {
      std::fprintf(stderr, "compare_client: redis: %s\n", r->str);
    }
    if (r) freeReplyObject(r);
    return good;
  }

  redisContext* ctx_ = nullptr;
  std::string sha_, create_sha_, checkout_sha_, result_sha_;
  bool ok_ = false;
};

std::unique_ptr<Connection> connect(const Options& o) {
  if (o.system == "postgres") {
    auto c = std::make_unique<Postgres>(o);
    if (c->ok()) return c;
  } else if (o.system == "mariadb") {
    auto c = std::make_unique<Mariadb>(o);
    if (c->ok()) return c;
  } else if (o.system == "redis") {
    auto c = std::make_unique<Redis>(o);
    if (c->ok()) return c;
  }
  return nullptr;
}

// ---- setup: the schema and `merchants` merchants, each with a large balance ----

bool set_up(const Options& o) {
  const std::string n = std::to_string(o.merchants);
  const std::string balance = std::to_string(kStartBalance);
  if (o.system == "postgres") {
    Postgres pg(o, /*for_setup=*/true);
    return pg.ok() && pg.exec("DROP TABLE IF EXISTS holds, merchants, orders") &&
           pg.exec(
               "CREATE TABLE orders (id BIGSERIAL PRIMARY KEY, merchant_id BIGINT NOT NULL, "
               "amount BIGINT NOT NULL, status SMALLINT NOT NULL, created_at TIMESTAMPTZ NOT "
               "NULL DEFAULT now())") &&
           pg.exec(
               "CREATE TABLE merchants (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL, "
               "held BIGINT NOT NULL)") &&
           pg.exec(
               "CREATE TABLE holds (id BIGSERIAL PRIMARY KEY, merchant_id BIGINT NOT NULL, "
               "amount BIGINT NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now())") &&
           pg.exec(("INSERT INTO merchants SELECT g, " + balance + ", 0 FROM generate_series(1, " +
                    n + ") AS g")
                       .c_str()) &&
           pg.exec("VACUUM ANALYZE merchants");
  }
  if (o.system == "mariadb") {
    Mariadb db(o);
    if (!db.ok() || !db.exec("DROP TABLE IF EXISTS holds, merchants, orders") ||
        !db.exec("CREATE TABLE orders (id BIGINT AUTO_INCREMENT PRIMARY KEY, merchant_id BIGINT "
                 "NOT NULL, amount BIGINT NOT NULL, status SMALLINT NOT NULL, created_at "
                 "TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB") ||
        !db.exec("CREATE TABLE merchants (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL, "
                 "held BIGINT NOT NULL) ENGINE=InnoDB") ||
        !db.exec("CREATE TABLE holds (id BIGINT AUTO_INCREMENT PRIMARY KEY, merchant_id BIGINT "
                 "NOT NULL, amount BIGINT NOT NULL, created_at TIMESTAMP(6) NOT NULL DEFAULT "
                 "CURRENT_TIMESTAMP(6)) ENGINE=InnoDB")) {
      return false;
    }
    for (u32 first = 1; first <= o.merchants; first += 1000) {
      std::string insert = "INSERT INTO merchants VALUES ";
      for (u32 id = first; id < first + 1000 && id <= o.merchants; ++id) {
        insert += (id == first ? "(" : ",(") + std::to_string(id) + "," + balance + ",0)";
      }
      if (!db.exec(insert)) return false;
    }
    return true;
  }
  if (o.system == "redis") {
    Redis redis(o);
    if (!redis.ok()) return false;
    redisContext* c = redis.context();
    redisAppendCommand(c, "FLUSHALL");
    for (u32 id = 1; id <= o.merchants; ++id) {
      redisAppendCommand(c, "HSET merchant:%u balance %lld held 0", id, kStartBalance);
    }
    for (u32 i = 0; i <= o.merchants; ++i) {
      void* reply = nullptr;
      if (redisGetReply(c, &reply) != REDIS_OK || reply == nullptr) return false;
      const bool error = static_cast<redisReply*>(reply)->type == REDIS_REPLY_ERROR;
      freeReplyObject(reply);
      if (error) return false;
    }
    return true;
  }
  return false;
}

// The merchants' held amounts and the log's entries.
bool totals(const Options& o, long long* held, long long* rows) {
  if (o.system == "postgres") {
    Postgres pg(o);
    return pg.ok() && pg.totals(held, rows);
  }
  if (o.system == "mariadb") {
    Mariadb db(o);
    return db.ok() && db.totals(held, rows);
  }
  Redis redis(o);
  if (!redis.ok()) return false;
  *held = 0;
  redisContext* c = redis.context();
  for (u32 id = 1; id <= o.merchants; ++id)
    redisAppendCommand(c, "HGET merchant:%u held", id);
  for (u32 id = 1; id <= o.merchants; ++id) {
    void* reply = nullptr;
    if (redisGetReply(c, &reply) != REDIS_OK || reply == nullptr) return false;
    auto* r = static_cast<redisReply*>(reply);
    if (r->type == REDIS_REPLY_STRING) *held += std::atoll(r->str);
    freeReplyObject(r);
  }
  auto* r = static_cast<redisReply*>(redisCommand(c, "LLEN holds"));
  if (r == nullptr || r->type != REDIS_REPLY_INTEGER) return false;
  *rows = r->integer;
  freeReplyObject(r);
  return true;
}

// Orders paid, the merchants' balances above their start, and what is still pending.
bool order_totals(const Options& o, long long* paid, long long* credited, long long* pending) {
  if (o.system == "postgres") {
    Postgres pg(o);
    return pg.ok() && pg.order_totals(paid, credited, pending);
  }
  if (o.system == "mariadb") {
    Mariadb db(o);
    return db.ok() && db.order_totals(paid, credited, pending);
  }
  Redis redis(o);
  if (!redis.ok()) return false;
  redisContext* c = redis.context();
  *credited = 0;
  *pending = 0;
  for (u32 id = 1; id <= o.merchants; ++id)
    redisAppendCommand(c, "HMGET merchant:%u balance held", id);
  for (u32 id = 1; id <= o.merchants; ++id) {
    void* reply = nullptr;
    if (redisGetReply(c, &reply) != REDIS_OK || reply == nullptr) return false;
    auto* r = static_cast<redisReply*>(reply);
    const bool good = r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
                      r->element[0]->type == REDIS_REPLY_STRING &&
                      r->element[1]->type == REDIS_REPLY_STRING;
    if (good) {
      *credited += std::atoll(r->element[0]->str) - kStartBalance;
      *pending += std::atoll(r->element[1]->str);
    }
    freeReplyObject(r);
    if (!good) return false;
  }
  auto* r = static_cast<redisReply*>(redisCommand(c, "GET orders:paid"));
  if (r == nullptr) return false;
  *paid = r->type == REDIS_REPLY_STRING ? std::atoll(r->str) : 0;
  freeReplyObject(r);
  return true;
}

int run(const Options& o) {
  const bool orders = o.workload == "order-cycle";
  std::atomic<u64> ops{0}, failures{0};
  std::atomic<u64> budget{o.max_ops};  // operations not yet claimed by a client
  LatencyRecord answers(o.clients);
  // Every client connects before the clock starts: a database that forks a process per
  // connection takes seconds to open a thousand, which is not the workload's time.
  std::atomic<u32> connected{0}, ready{0};
  std::atomic<bool> go{false};
  Clock::time_point start{}, deadline{};
  std::vector<std::thread> clients;
  for (u32 c = 0; c < o.clients; ++c) {
    clients.emplace_back([&, c] {
      std::unique_ptr<Connection> connection = connect(o);
      if (connection) connected.fetch_add(1);
      ready.fetch_add(1);
      go.wait(false);
      if (!connection) {
        failures.fetch_add(1);
        return;
      }
      std::mt19937 random(c + 1);
      while (Clock::now() < deadline) {
        // Claim this request's operations from the run's bound.
        u64 left = budget.load();
        while (left >= o.ops_per_request &&
               !budget.compare_exchange_weak(left, left - o.ops_per_request)) {
        }
        if (left < o.ops_per_request) break;
        const u32 merchant = o.merchants == 1 ? 1 : 1 + random() % o.merchants;
        const auto sent = Clock::now();
        if (!(orders ? connection->order_cycle(merchant)
                     : connection->reserve(merchant, o.ops_per_request))) {
          failures.fetch_add(1);
          return;
        }
        answers.answered(
            c,
            static_cast<u64>(
                std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - sent).count()));
        ops.fetch_add(o.ops_per_request, std::memory_order_relaxed);
      }
    });
  }
  while (ready.load() < o.clients)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::fprintf(stderr, "compare_client: %u of %u clients connected\n", connected.load(), o.clients);
  start = Clock::now();
  deadline =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds));
  go.store(true);  // (start and deadline are published by it)
  go.notify_all();
  u64 last = 0;
  Progress progress([&](int second) {
    const u64 now = ops.load();
    std::fprintf(stderr, "progress system=%s t=%ds ops=%llu ops_last_s=%llu\n", o.system.c_str(),
                 second, static_cast<unsigned long long>(now),
                 static_cast<unsigned long long>(now - last));
    last = now;
  });
  for (auto& t : clients)
    t.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  progress.stop();
  const auto answered = static_cast<long long>(ops.load());
  if (orders) {
    long long paid = -1, credited = -1, pending = -1;
    if (!order_totals(o, &paid, &credited, &pending) || paid != answered || credited != answered ||
        pending != 0) {
      std::fprintf(stderr,
                   "compare_client: %s has %lld orders paid, %lld credited, %lld pending, but %lld "
                   "cycles were answered\n",
                   o.system.c_str(), paid, credited, pending, answered);
      failures.fetch_add(1);
    }
  } else {
    long long held = -1, rows = -1;
    if (!totals(o, &held, &rows) || held != answered || rows != answered) {
      std::fprintf(stderr,
                   "compare_client: %s holds %lld in %lld log rows, but %lld were answered\n",
                   o.system.c_str(), held, rows, answered);
      failures.fetch_add(1);
    }
  }
  std::printf(
      "compare system=%s workload=%s clients=%u ops_per_request=%u ops=%llu seconds=%.2f "
      "ops_per_sec=%.0f p50_us=%.0f p99_us=%.0f failures=%llu max_us=%.0f over_2s=%llu "
      "slowest_connection_share=%.2f fastest_connection_share=%.2f\n",
      o.system.c_str(),
      orders             ? "order-cycle"
      : o.merchants == 1 ? "hot"
                         : "uniform",
      o.clients, o.ops_per_request, static_cast<unsigned long long>(ops.load()), elapsed,
      static_cast<double>(ops.load()) / elapsed, answers.percentile_us(0.50),
      answers.percentile_us(0.99), static_cast<unsigned long long>(failures.load()),
      answers.max_us(), static_cast<unsigned long long>(answers.over_timeout()),
      answers.slowest_share(), answers.fastest_share());
  return failures.load() == 0 && connected.load() == o.clients ? 0 : 1;
}

}  // namespace
}  // namespace paygate

int main(int argc, char** argv) {
  paygate::Options o;
  CLI::App app{"compare_client: balance reservations against PostgreSQL, MariaDB or Redis"};
  app.add_option("--system", o.system, "postgres | mariadb | redis")->required();
  app.add_option("--host", o.host)->capture_default_str();
  app.add_option("--port", o.port)->required();
  app.add_option("--user", o.user)->capture_default_str();
  app.add_option("--database", o.database)->capture_default_str();
  app.add_flag("--setup", o.setup, "create the schema and the merchants, then exit");
  app.add_option("--merchants", o.merchants, "1: the hot merchant; more: uniform over them")
      ->capture_default_str();
  app.add_option("--ops-per-request", o.ops_per_request,
                 "operations per request on one merchant (SQL: one transaction)")
      ->capture_default_str();
  app.add_option("--clients", o.clients, "connections, one thread and one request each")
      ->capture_default_str();
  app.add_option("--seconds", o.seconds, "run at most this long")->capture_default_str();
  app.add_option("--max-ops", o.max_ops, "run at most this many operations")->capture_default_str();
  app.add_option("--workload", o.workload,
                 "reserve (a balance reservation per operation) | order-cycle (an order "
                 "created, checked out and paid per operation: three requests)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (o.merchants == 0 || o.ops_per_request == 0 || o.clients == 0 || o.clients > 4096 ||
      o.seconds <= 0 || o.seconds > 600 ||
      (o.workload != "reserve" && o.workload != "order-cycle") ||
      (o.workload == "order-cycle" && o.ops_per_request != 1)) {
    std::fprintf(stderr, "compare_client: bad options\n");
    return 2;
  }
  if (o.setup) {
    if (!paygate::set_up(o)) {
      std::fprintf(stderr, "compare_client: setup of %s failed\n", o.system.c_str());
      return 1;
    }
    std::printf("compare_client: %s has %u merchants\n", o.system.c_str(), o.merchants);
    return 0;
  }
  return paygate::run(o);
}
