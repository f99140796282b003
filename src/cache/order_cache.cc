#include "cache/order_cache.h"

#include <fmt/format.h>
#include <signal.h>
#include <sys/random.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "api/id_text.h"
#include "base/assert.h"
#include "base/clock.h"

namespace paygate::cache {
namespace {

// Whether decimal a is greater than decimal b (neither with leading zeros): by length,
// then by text, so that no sequence is rounded (Lua numbers are doubles).
constexpr std::string_view kNewer = R"(
local function newer(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
local function put(key, ttl_ms, sequence, status, merchant, refunded, row)
  local now = redis.call('HGET', key, 'sequence')
  if now and not newer(sequence, now) then return 0 end
  redis.call('HSET', key, 'sequence', sequence, 'status', status, 'merchant', merchant,
             'amount_refunded', refunded, 'row', row)
  if ttl_ms ~= '0' then redis.call('PEXPIRE', key, ttl_ms) end
  return 1
end
)";

// KEYS: the entry. ARGV: ttl_ms, then the entry's five fields.
const RedisScript& put_script() {
  static const RedisScript script(std::string(kNewer) +
                                  "return put(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], "
                                  "ARGV[5], ARGV[6])\n");
  return script;
}

// KEYS: the entries, then the cursor. ARGV: ttl_ms, the cursor's text, the text it
// must have now ('' for none), then five fields per entry. -1, and nothing written,
// when the cursor is not what the feed thinks (Redis was emptied or restored from an
// older snapshot, or another feed moved it): the feed reads it again.
const RedisScript& put_changes_script() {
  static const RedisScript script(std::string(kNewer) + R"(
if (redis.call('GET', KEYS[#KEYS]) or '') ~= ARGV[3] then return -1 end
local written = 0
for i = 1, #KEYS - 1 do
  local at = 3 + (i - 1) * 5
  written = written + put(KEYS[i], ARGV[1], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3],
                          ARGV[at + 4], ARGV[at + 5])
end
redis.call('SET', KEYS[#KEYS], ARGV[2])
return written
)");
  return script;
}

// KEYS: the entry, its lock. ARGV: this reader's token, the lock's life in ms.
// {'hit', row}, or {'lock'} (this reader loads), or {'wait'} (another one does).
const RedisScript& get_or_lock_script() {
  static const RedisScript script(R"(
local row = redis.call('HGET', KEYS[1], 'row')
if row then return {'hit', row} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {'lock'} end
return {'wait'}
)");
  return script;
}

// KEYS: the lock. ARGV: the token that took it. Frees it only if that is still so.
const RedisScript& unlock_script() {
  static const RedisScript script(R"(
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
)");
  return script;
}

// The entry's row: a version byte and the order book record's (the store's
// kOrderStateFormat), the record, the store's group and sequences, then each text as a
// 4-byte length and its bytes.
constexpr u8 kRowFormat = 2;  // 1: without the record's format
static_assert(history::kOrderStateFormat < 256);
constexpr u8 kRecordFormat = history::kOrderStateFormat;

template <typename T>
void append_raw(std::string& out, const T& value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

template <typename T>
bool take_raw(std::string_view& in, T& value) {
  if (in.size() < sizeof(T)) return false;
  std::memcpy(&value, in.data(), sizeof(T));
  in.remove_prefix(sizeof(T));
  return true;
}

bool take_text(std::string_view& in, std::string& text) {
  u32 size = 0;
  if (!take_raw(in, size) || in.size() < size) return false;
  text.assign(in.substr(0, size));
  in.remove_prefix(size);
  return true;
}

}  // namespace

std::string encode_order_row(const history::OrderRow& row) {
  std::string out;
  out.reserve(2 + sizeof(Order) + 20 + 20 + row.merchant_ref.size() + row.description.size() +
              row.metadata.size() + row.ipn_url.size() + row.callback_url.size());
  append_raw(out, kRowFormat);
  append_raw(out, kRecordFormat);
  append_raw(out, row.order);
  append_raw(out, row.group);
  append_raw(out, row.created_sequence);
  append_raw(out, row.updated_sequence);
  for (const std::string* text :
       {&row.merchant_ref, &row.description, &row.metadata, &row.ipn_url, &row.callback_url}) {
    append_raw(out, static_cast<u32>(text->size()));
    out += *text;
  }
  return out;
}

std::optional<history::OrderRow> decode_order_row(std::string_view in) {
  history::OrderRow row;
  u8 format = 0, record_format = 0;
  if (!take_raw(in, format) || format != kRowFormat || !take_raw(in, record_format) ||
      record_format != kRecordFormat || !take_raw(in, row.order) || !take_raw(in, row.group) ||
      !take_raw(in, row.created_sequence) || !take_raw(in, row.updated_sequence)) {
    return std::nullopt;
  }
  for (std::string* text :
       {&row.merchant_ref, &row.description, &row.metadata, &row.ipn_url, &row.callback_url}) {
    if (!take_text(in, *text)) return std::nullopt;
  }
  if (!in.empty()) return std::nullopt;
  return row;
}

std::string_view name(OrderCache::Outcome outcome) noexcept {
  switch (outcome) {
    case OrderCache::Outcome::hit:
      return "hit";
    case OrderCache::Outcome::loaded:
      return "loaded";
    case OrderCache::Outcome::waited:
      return "waited";
    case OrderCache::Outcome::not_found:
      return "not_found";
    case OrderCache::Outcome::pending:
      return "pending";
  }
  return "unknown";
}

// A pooled connection for the length of one call.
class OrderCache::Lease {
 public:
  explicit Lease(OrderCache& cache) : cache_(cache), connection_(cache.take()) {}
  ~Lease() { cache_.give_back(std::move(connection_)); }
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  RedisConnection* operator->() noexcept { return connection_.get(); }
  RedisConnection& operator*() noexcept { return *connection_; }

 private:
  OrderCache& cache_;
  std::unique_ptr<RedisConnection> connection_;
};

Result<std::unique_ptr<OrderCache>> OrderCache::open(const OrderCacheConfig& config) {
  if (Status checked = check_redis_address(config.redis.address); !checked.ok()) return checked;
  if (config.key_prefix.empty()) {
    return Status::invalid_config("[redis] key_prefix must not be empty");
  }
  // Bounds that keep every product of them in range (Redis takes milliseconds up to
  // 2^63, and the waits are added to a steady clock).
  constexpr u64 kMinute = 60'000'000'000, kHour = 60 * kMinute;
  const struct {
    const char* name;
    u64 value, least, most;
  } bounds[] = {
      {"entry_ttl_s", config.entry_ttl_s, 0, 10 * 366 * 86'400},
      {"lock_ms", config.lock_ns, 1'000'000, kHour},
      {"wait_ms", config.wait_ns, 0, 10 * kMinute},
      {"poll_ms", config.poll_ns, 1'000'000, kMinute},
      {"connect_timeout_ms", config.redis.connect_timeout_ns, 1'000'000, kMinute},
      {"command_timeout_ms", config.redis.command_timeout_ns, 1'000'000, kMinute},
      {"failure_pause_ms", config.failure_pause_ns, 0, kHour},
  };
  for (const auto& b : bounds) {
    if (b.value < b.least || b.value > b.most) {
      const bool seconds = std::string_view(b.name).ends_with("_s");
      return Status::invalid_config(fmt::format("[redis] {} must be from {} to {}", b.name,
                                                seconds ? b.least : b.least / 1'000'000,
                                                seconds ? b.most : b.most / 1'000'000));
    }
  }
  // hiredis writes to its sockets with write(): a connection Redis closed must be an
  // error, not a SIGPIPE that ends the process (every other socket of paygate's sends
  // with MSG_NOSIGNAL or through Asio, so ignoring it changes nothing else).
  ::signal(SIGPIPE, SIG_IGN);
  return std::unique_ptr<OrderCache>(new OrderCache(config));
}

OrderCache::OrderCache(const OrderCacheConfig& config) : config_(config) {}

std::unique_ptr<RedisConnection> OrderCache::take() {
  {
    const std::lock_guard lock(pool_mutex_);
    if (!idle_.empty()) {
      std::unique_ptr<RedisConnection> connection = std::move(idle_.back());
      idle_.pop_back();
      return connection;
    }
  }
  return std::make_unique<RedisConnection>(config_.redis);
}

void OrderCache::give_back(std::unique_ptr<RedisConnection> connection) {
  const std::lock_guard lock(pool_mutex_);
  if (idle_.size() < config_.connections_idle_max) idle_.push_back(std::move(connection));
}

std::string OrderCache::entry_key(u64 id) const {
  return config_.key_prefix + "order:" + api::id_text(api::IdKind::order, id);
}
std::string OrderCache::lock_key(u64 id) const {
  return config_.key_prefix + "lock:" + api::id_text(api::IdKind::order, id);
}
std::string OrderCache::cursor_key(u32 group) const {
  return fmt::format("{}feed:{}", config_.key_prefix, group);
}

Status OrderCache::failed(const Result<RedisReply>& reply, const RedisConnection& redis,
                          bool readers) {
  if (reply.ok() && !reply.value().is_error()) return Status::success();
  count_error();
  if (reply.ok()) return Status::io_error("Redis: " + std::string(reply.value().text()));
  // Unreachable (not one slow command, nor the feed's big scripts): skipped for a
  // moment, so that readers do not each spend a connect timeout on it (they read the
  // store meanwhile).
  if (readers && redis.unreachable()) {
    down_until_ns_.store(steady_ns() + config_.failure_pause_ns, std::memory_order_relaxed);
  }
  return reply.status();
}

Status OrderCache::paused() const {
  if (steady_ns() >= down_until_ns_.load(std::memory_order_relaxed)) return Status::success();
  return Status::io_error("Redis failed a moment ago: skipped for [redis] failure_pause_ms");
}

std::string OrderCache::new_token() {
  // Random: another gateway's (same pid in its container) never matches it. Never
  // waits for the kernel's pool (early at boot): this process's clock and count then,
  // unique within it.
  u64 bits[2] = {};
  if (::getrandom(bits, sizeof bits, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof bits)) {
    bits[0] = steady_ns();
    bits[1] = tokens_.fetch_add(1, std::memory_order_relaxed) + 1;
  }
  return fmt::format("{:016x}{:016x}", bits[0], bits[1]);
}

std::vector<std::string> OrderCache::entry_args(const history::OrderRow& row) const {
  return {std::to_string(row.updated_sequence), std::string(name(row.order.status)),
          api::id_text(api::IdKind::merchant, row.order.merchant),
          std::to_string(row.order.amount_refunded), encode_order_row(row)};
}

Result<OrderCache::Read> OrderCache::order(u64 id, const Loader& loader) {
  if (Status skip = paused(); !skip.ok()) return skip;
  Lease redis(*this);
  const std::string entry = entry_key(id), lock = lock_key(id);
  const std::string token = new_token();
  const std::string lock_ms = std::to_string(config_.lock_ns / 1'000'000);
  const u64 deadline = steady_ns() + config_.wait_ns;
  bool waited = false, forgot = false;
  for (;;) {
    Result<RedisReply> reply = redis->run(get_or_lock_script(), {entry, lock}, {token, lock_ms});
    if (Status bad = failed(reply, *redis); !bad.ok()) return bad;
    const std::string_view tag = reply.value().element(0).value_or("");
    if (tag == "hit") {
      std::optional<history::OrderRow> row =
          decode_order_row(reply.value().element(1).value_or(""));
      if (row && row->order.id == id) {
        (waited ? counters_.waits : counters_.hits).fetch_add(1, std::memory_order_relaxed);
        return Read{.outcome = waited ? Outcome::waited : Outcome::hit, .row = std::move(row)};
      }
      // Not a row this build reads (another version wrote it), or not this order's:
      // removed, and loaded again (once; a second is an error, and the store answers).
      count_error();
      if (forgot) return Status::corruption("the Redis entry " + entry + " is not an order row");
      forgot = true;
      Result<RedisReply> removed = redis->command({"DEL", entry});
      if (Status bad = failed(removed, *redis); !bad.ok()) return bad;
      continue;
    }
    if (tag == "lock") return load(*redis, id, lock, token, loader);
    if (tag != "wait") {
      count_error();
      return Status::io_error("unexpected answer from Redis to the order read script");
    }
    if (!waited) counters_.lock_seen.fetch_add(1, std::memory_order_relaxed);
    waited = true;
    if (steady_ns() >= deadline) {
      counters_.pending.fetch_add(1, std::memory_order_relaxed);
      return Read{.outcome = Outcome::pending};
    }
    std::this_thread::sleep_for(std::chrono::nanoseconds(config_.poll_ns));
  }
}

Result<OrderCache::Read> OrderCache::load(RedisConnection& redis, u64 id, const std::string& lock,
                                          const std::string& token, const Loader& loader) {
  counters_.store_reads.fetch_add(1, std::memory_order_relaxed);
  bool keep = true;
  Result<std::optional<history::OrderRow>> loaded = loader(keep);
  Read read{.outcome = Outcome::not_found};
  if (loaded.ok() && loaded.value()) {
    PG_ASSERT(loaded.value()->order.id == id);
    read = Read{.outcome = Outcome::loaded, .row = std::move(loaded.value())};
    counters_.loaded.fetch_add(1, std::memory_order_relaxed);
  }
  if (read.row) {
    const std::vector<std::string> fields = entry_args(*read.row);
    // A row the loader is not sure of is kept a moment only: for the readers waiting
    // on this load, no longer than the store could have been behind without Redis.
    const std::string ttl_ms = std::to_string(keep ? config_.entry_ttl_s * 1000 : kUnsureTtlMs);
    Result<RedisReply> put =
        redis.run(put_script(), {entry_key(id)},
                  {ttl_ms, fields[0], fields[1], fields[2], fields[3], fields[4]});
    if (!failed(put, redis).ok()) {
      // The reader has its row; the next one loads again.
    } else if (put.value().integer() == 1) {
      counters_.writes.fetch_add(1, std::memory_order_relaxed);
    }
  }
  if (loaded.ok() && !read.row) counters_.not_found.fetch_add(1, std::memory_order_relaxed);
  // Freed whatever happened, so that a waiter loads at once rather than at its lapse.
  (void)failed(redis.run(unlock_script(), {lock}, {token}), redis);
  if (!loaded.ok()) return loaded.status();
  return read;
}

Result<bool> OrderCache::put(const history::OrderRow& row) {
  if (Status skip = paused(); !skip.ok()) return skip;
  Lease redis(*this);
  const std::vector<std::string> fields = entry_args(row);
  const std::string ttl_ms = std::to_string(config_.entry_ttl_s * 1000);
  Result<RedisReply> reply =
      redis->run(put_script(), {entry_key(row.order.id)},
                 {ttl_ms, fields[0], fields[1], fields[2], fields[3], fields[4]});
  if (Status bad = failed(reply, *redis); !bad.ok()) return bad;
  const bool written = reply.value().integer() == 1;
  if (written) counters_.writes.fetch_add(1, std::memory_order_relaxed);
  return written;
}

Status OrderCache::put_changes(u32 group, const std::vector<history::OrderRow>& rows,
                               std::optional<EventKey> from, EventKey to) {
  const auto text = [](EventKey key) { return fmt::format("{} {}", key.sequence, key.index); };
  std::vector<std::string> keys;
  std::vector<std::string> args;
  keys.reserve(rows.size() + 1);
  args.reserve(3 + rows.size() * 5);
  args.push_back(std::to_string(config_.entry_ttl_s * 1000));
  args.push_back(text(to));
  args.push_back(from ? text(*from) : std::string());
  for (const history::OrderRow& row : rows) {
    keys.push_back(entry_key(row.order.id));
    for (std::string& field : entry_args(row))
      args.push_back(std::move(field));
  }
  keys.push_back(cursor_key(group));
  const std::vector<std::string_view> key_views(keys.begin(), keys.end());
  const std::vector<std::string_view> arg_views(args.begin(), args.end());
  Lease redis(*this);
  Result<RedisReply> reply = redis->run(put_changes_script(), key_views, arg_views);
  if (Status bad = failed(reply, *redis, /*readers=*/false); !bad.ok()) return bad;
  if (reply.value().integer() < 0) {
    return Status::busy(
        fmt::format("the feed's cursor of group {} in Redis is not where the feed "
                    "left it (Redis emptied or restored?): read again",
                    group));
  }
  counters_.writes.fetch_add(static_cast<u64>(reply.value().integer()), std::memory_order_relaxed);
  return Status::success();
}

Result<std::optional<EventKey>> OrderCache::cursor(u32 group) {
  Lease redis(*this);
  Result<RedisReply> reply = redis->command({"GET", cursor_key(group)});
  if (Status bad = failed(reply, *redis, /*readers=*/false); !bad.ok()) return bad;
  if (reply.value().is_nil()) return std::optional<EventKey>();
  unsigned long long sequence = 0;
  unsigned index = 0;
  const std::string text(reply.value().text());
  char rest = 0;
  if (std::sscanf(text.c_str(), "%llu %u%c", &sequence, &index, &rest) != 2) {
    return Status::corruption("the Redis key " + cursor_key(group) +
                              " is not a feed cursor: " + text);
  }
  return std::optional<EventKey>(EventKey{sequence, index});
}

Status OrderCache::forget(u64 id) {
  Lease redis(*this);
  Result<RedisReply> reply = redis->command({"DEL", entry_key(id)});
  if (Status bad = failed(reply, *redis); !bad.ok()) return bad;
  return Status::success();
}

}  // namespace paygate::cache
