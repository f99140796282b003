#include "app/serve.h"

#include <fmt/format.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <toml++/toml.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <limits>
#include <thread>

#include "api/auth.h"
#include "api/binary_server.h"
#include "api/crypto.h"
#include "api/http_server.h"
#include "api/merchants.h"
#include "api/owner_index.h"
#include "api/service.h"
#include "app/read_side.h"
#include "base/clock.h"
#include "base/durable_file.h"
#include "base/log.h"
#include "cache/order_cache.h"
#include "cache/order_feed.h"
#include "history/worker.h"
#include "pipeline/engine.h"
#include "publish/kafka_publisher.h"
#include "webhooks/deliverer.h"

namespace paygate {
namespace {

constexpr u64 kMillisMax = 86'400'000ull * 366 * 100;  // a century: far below a wrap in ns

struct Settings {
  api::HttpConfig http;
  api::BinaryConfig binary;
  api::ServiceConfig service;
  api::AuthConfig auth;
  EngineConfig engine = served_engine_defaults();
  ReadSideConfig read;  // history, webhooks, Kafka, Redis
  u64 drain_timeout_ms = 10'000;
  // Every merchant's default share of its group's tables ([quotas]; by Quota:
  // accounts, holds, idempotency keys, orders). kQuotaShare: a quarter of the table.
  static constexpr u32 kQuotaShare = ~u32{0};
  u32 quotas[kQuotaKinds] = {kQuotaShare, kQuotaShare, kQuotaShare, kQuotaShare};

  // The server's journals wait out a 1 ms sync gap under load: measured in
  // docs/BENCHMARKS.md, it raises HTTP throughput and cuts p99 several-fold on a
  // busy machine, and a lone request is still synced at once. The gap ends early
  // once 1,024 commands wait (big batches gain nothing from waiting longer, and
  // their clients would), or when nothing has come for 100 µs (clients that each
  // wait for their answer are all waiting): docs/OPERATING.md.
  static EngineConfig served_engine_defaults() {
    EngineConfig engine;
    engine.group.journal_sync_gap_ns = 1'000'000;
    engine.group.journal_sync_gap_commands = 1024;
    engine.group.journal_sync_gap_quiet_ns = 100'000;
    engine.group.ledger.orders_max = 1u << 16;  // docs/ORDERS.md, memory
    return engine;
  }
};

// Every group's default quotas, from the configuration, as a journaled command of
// each group before the first request: a replay meets the limits in force then, and
// a changed setting takes effect from this start on.
Status set_default_quotas(Engine& engine, const u32 (&configured)[kQuotaKinds]) {
  for (u32 g = 0; g < engine.groups(); ++g) {
    Group& group = engine.group(g);
    const LedgerConfig& ledger = group.config().ledger;
    const u32 tables[kQuotaKinds] = {ledger.accounts_max, ledger.pending_max,
                                     ledger.idempotency_keys_max, ledger.orders_max};
    u32 limits[kQuotaKinds];
    for (u32 q = 0; q < kQuotaKinds; ++q) {
      limits[q] =
          configured[q] != Settings::kQuotaShare ? configured[q] : std::max<u32>(tables[q] / 4, 1);
    }
    const Command command =
        Command::make_set_quota(MerchantId{}, limits[0], limits[1], limits[2], limits[3]);
    CommandResult result;
    WaitableCompletion done;
    const Request request{.kind = RequestKind::commands,
                          .count = 1,
                          .commands = &command,
                          .results = &result,
                          .completion = &done};
    if (const ResultCode refused = group.submit(request); refused != ResultCode::ok) {
      return Status::busy(fmt::format("group {}: {}", g, name(refused)));
    }
    const Outcome& outcome = wait_for(group, done);
    if (outcome.status != ResultCode::ok || !result.ok()) {
      return Status::io_error(fmt::format("group {}: setting the default quotas: {} {}", g,
                                          name(outcome.status), name(result.code)));
    }
    PG_LOG_INFO("event=quotas_default group={} accounts={} holds={} idempotency_keys={} orders={}",
                g, limits[0], limits[1], limits[2], limits[3]);
  }
  return Status::success();
}

Status split_address(const std::string& text, std::string* host, u16* port) {
  const std::size_t colon = text.rfind(':');
  unsigned value = 0;
  if (colon == std::string::npos || std::sscanf(text.c_str() + colon + 1, "%u", &value) != 1 ||
      value > 65535) {
    return Status::invalid_config(fmt::format("\"{}\" is not HOST:PORT", text));
  }
  *host = text.substr(0, colon);
  *port = static_cast<u16>(value);
  return Status::success();
}

// Reads the TOML file into settings. Every key must be known: a misspelt key is an
// error, not a silent default.
Status apply_config_file(const std::filesystem::path& file, Settings* s) {
  toml::table root;
  try {
    root = toml::parse_file(file.string());
  } catch (const toml::parse_error& e) {
    return Status::invalid_config(fmt::format("{}: {}", file.string(), e.description()));
  }
  LedgerConfig& ledger = s->engine.group.ledger;
  GroupConfig& group = s->engine.group;
  u64 window_s = ledger.idempotency_window_ns / kNanosPerSecond;
  u64 final_retained_s = ledger.order_final_retained_ns / kNanosPerSecond;
  u64 tick_ms = group.tick_interval_ns / 1'000'000;
  u64 sync_gap_us = group.journal_sync_gap_ns / 1'000;
  u64 sync_gap_quiet_us = group.journal_sync_gap_quiet_ns / 1'000;
  u64 history_poll_ms = s->read.history.poll_interval_ns / 1'000'000;
  u64 read_wait_ms = s->read.history.read_wait_ns / 1'000'000;
  u64 redirect_wait_ms = s->read.history.redirect_wait_ns / 1'000'000;
  u64 texts_wait_ms = s->read.history.texts_wait_ns / 1'000'000;
  u64 attention_after_s = s->read.history.attention_after_ns / kNanosPerSecond;
  u64 history_open_retry_s = s->read.history.open_retry_ns / kNanosPerSecond;
  u64 history_reopen_interval_s = s->read.history.reopen_interval_ns / kNanosPerSecond;
  std::string history_store =
      s->read.history.store.kind == sql::Dialect::sqlite ? "sqlite" : "mariadb";
  u64 webhook_poll_ms = s->read.webhooks.poll_interval_ns / 1'000'000;
  u64 webhook_timeout_ms = s->read.webhooks.timeout_ns / 1'000'000;
  u64 webhook_retry_base_ms = s->read.webhooks.retry_base_ns / 1'000'000;
  u64 webhook_retry_max_ms = s->read.webhooks.retry_max_ns / 1'000'000;
  u64 webhook_retry_period_s = s->read.webhooks.retry_period_ns / kNanosPerSecond;
  u64 webhook_retain_s = s->read.webhooks.retain_ns / kNanosPerSecond;
  u64 kafka_poll_ms = s->read.kafka.poll_interval_ns / 1'000'000;
  u64 kafka_watermark_ms = s->read.kafka.watermark_interval_ns / 1'000'000;
  u64 redis_connect_timeout_ms = s->read.redis.redis.connect_timeout_ns / 1'000'000;
  u64 redis_command_timeout_ms = s->read.redis.redis.command_timeout_ns / 1'000'000;
  u64 redis_lock_ms = s->read.redis.lock_ns / 1'000'000;
  u64 redis_wait_ms = s->read.redis.wait_ns / 1'000'000;
  u64 redis_poll_ms = s->read.redis.poll_ns / 1'000'000;
  u64 redis_failure_pause_ms = s->read.redis.failure_pause_ns / 1'000'000;
  u64 feed_poll_ms = s->read.feed.poll_interval_ns / 1'000'000;
  struct Key {
    const char* section;
    const char* name;
    std::function<bool(const toml::node&)> set;
  };
  // A whole number from `least` up to what the setting's type holds.
  const auto unsigned_into = [](auto* target, int64_t least = 0) {
    return [target, least](const toml::node& node) {
      using T = std::remove_pointer_t<decltype(target)>;
      const auto value = node.value<int64_t>();
      if (!value || *value < least || static_cast<u64>(*value) > std::numeric_limits<T>::max()) {
        return false;
      }
      *target = static_cast<T>(*value);
      return true;
    };
  };
  const auto double_into = [](double* target) {
    return [target](const toml::node& node) {
      const auto value = node.value<double>();
      if (!value || *value <= 0) return false;
      *target = *value;
      return true;
    };
  };
  // A path or a text. Empty: a file is its default, no brokers is no publishing, and
  // an empty topic_prefix names the topics "ledger" and "orders".
  const auto text_into = [](auto* target) {
    return [target](const toml::node& node) {
      const auto value = node.value<std::string>();
      if (!value) return false;
      *target = *value;
      return true;
    };
  };
  const auto bool_into = [](bool* target) {
    return [target](const toml::node& node) {
      const auto value = node.value<bool>();
      if (!value || !node.is_boolean()) return false;
      *target = *value;
      return true;
    };
  };
  const Key keys[] = {
      {"http", "io_threads", unsigned_into(&s->http.io_threads, 1)},
      {"http", "connections_max", unsigned_into(&s->http.connections_max)},
      {"http", "body_bytes_max", unsigned_into(&s->http.body_bytes_max)},
      {"http", "header_bytes_max", unsigned_into(&s->http.header_bytes_max)},
      {"http", "pipeline_max", unsigned_into(&s->http.pipeline_max, 1)},
      {"http", "request_timeout_ms", unsigned_into(&s->http.request_timeout_ms)},
      {"binary", "io_threads", unsigned_into(&s->binary.io_threads, 1)},
      {"binary", "window", unsigned_into(&s->binary.window, 1)},
      {"binary", "connections_max", unsigned_into(&s->binary.connections_max)},
      {"binary", "idle_timeout_ms", unsigned_into(&s->binary.idle_timeout_ms)},
      {"limits", "rate_per_s", double_into(&s->service.rate_per_s)},
      {"limits", "rate_burst", double_into(&s->service.rate_burst)},
      {"limits", "operator_rate_per_s", double_into(&s->service.operator_rate_per_s)},
      {"limits", "operator_rate_burst", double_into(&s->service.operator_rate_burst)},
      {"limits", "auth_failure_rate_per_s", double_into(&s->service.auth_failure_rate_per_s)},
      {"limits", "auth_failure_burst", double_into(&s->service.auth_failure_burst)},
      {"auth", "window_s", unsigned_into(&s->auth.window_s)},
      {"auth", "key_grace_period_s", unsigned_into(&s->service.key_grace_period_s)},
      {"auth", "replay_cache_max", unsigned_into(&s->auth.replay_cache_max)},
      {"auth", "jwt_lifetime_max_s", unsigned_into(&s->auth.jwt_lifetime_max_s, 1)},
      {"ledger", "accounts_max", unsigned_into(&ledger.accounts_max)},
      {"ledger", "pending_max", unsigned_into(&ledger.pending_max)},
      {"ledger", "recent_transfers_max", unsigned_into(&ledger.recent_transfers_max)},
      {"ledger", "idempotency_keys_max", unsigned_into(&ledger.idempotency_keys_max)},
      {"ledger", "idempotency_window_s", unsigned_into(&window_s)},
      {"ledger", "signature_keys_max", unsigned_into(&ledger.signature_keys_max, 1)},
      {"orders", "orders_max", unsigned_into(&ledger.orders_max, 1)},
      {"orders", "final_retained_s", unsigned_into(&final_retained_s, 1)},
      {"quotas", "accounts", unsigned_into(&s->quotas[0])},
      {"quotas", "holds", unsigned_into(&s->quotas[1])},
      {"quotas", "idempotency_keys", unsigned_into(&s->quotas[2])},
      {"quotas", "orders", unsigned_into(&s->quotas[3])},
      {"group", "ring_capacity", unsigned_into(&group.ring_capacity)},
      {"group", "events_max", unsigned_into(&group.events_max)},
      {"group", "tick_interval_ms", unsigned_into(&tick_ms)},
      {"group", "snapshot_every_commands", unsigned_into(&group.snapshot_every_commands)},
      {"group", "snapshots_kept", unsigned_into(&group.snapshots_kept)},
      {"group", "journal_segment_bytes", unsigned_into(&group.journal_segment_bytes)},
      {"group", "journal_sync_gap_us", unsigned_into(&sync_gap_us)},
      {"group", "journal_sync_gap_commands", unsigned_into(&group.journal_sync_gap_commands)},
      {"group", "journal_sync_gap_quiet_us", unsigned_into(&sync_gap_quiet_us)},
      {"group", "journal_prepare_segments", bool_into(&group.journal_prepare_segments)},
      {"server", "drain_timeout_ms", unsigned_into(&s->drain_timeout_ms)},
      {"history", "enabled", bool_into(&s->read.history.enabled)},
      {"history", "file", text_into(&s->read.history.store.file)},
      {"history", "store", text_into(&history_store)},
      {"history", "mariadb_host", text_into(&s->read.history.store.mariadb.host)},
      {"history", "mariadb_port", unsigned_into(&s->read.history.store.mariadb.port, 1)},
      {"history", "mariadb_socket", text_into(&s->read.history.store.mariadb.socket)},
      {"history", "mariadb_user", text_into(&s->read.history.store.mariadb.user)},
      {"history", "mariadb_password", text_into(&s->read.history.store.mariadb.password)},
      {"history", "mariadb_database", text_into(&s->read.history.store.mariadb.database)},
      {"history", "mariadb_connect_timeout_s",
       unsigned_into(&s->read.history.store.mariadb.connect_timeout_s, 1)},
      {"history", "mariadb_io_timeout_s",
       unsigned_into(&s->read.history.store.mariadb.io_timeout_s, 1)},
      {"history", "mariadb_ssl", bool_into(&s->read.history.store.mariadb.ssl)},
      {"history", "mariadb_ssl_ca", text_into(&s->read.history.store.mariadb.ssl_ca)},
      {"history", "mariadb_ssl_cert", text_into(&s->read.history.store.mariadb.ssl_cert)},
      {"history", "mariadb_ssl_key", text_into(&s->read.history.store.mariadb.ssl_key)},
      {"history", "mariadb_ssl_verify", bool_into(&s->read.history.store.mariadb.ssl_verify)},
      {"history", "poll_interval_ms", unsigned_into(&history_poll_ms, 1)},
      {"history", "read_wait_ms", unsigned_into(&read_wait_ms, 0)},
      {"history", "redirect_wait_ms", unsigned_into(&redirect_wait_ms, 0)},
      {"history", "texts_wait_ms", unsigned_into(&texts_wait_ms, 0)},
      {"history", "attention_after_s", unsigned_into(&attention_after_s, 0)},
      {"history", "batch_events", unsigned_into(&s->read.history.batch_events, 1)},
      {"history", "retention_segments_max",
       unsigned_into(&s->read.history.retention_segments_max, 1)},
      {"history", "open_retry_s", unsigned_into(&history_open_retry_s, 0)},
      {"history", "reopen_interval_s", unsigned_into(&history_reopen_interval_s, 0)},
      {"webhooks", "enabled", bool_into(&s->read.webhooks.enabled)},
      {"webhooks", "file", text_into(&s->read.webhooks.file)},
      {"webhooks", "poll_interval_ms", unsigned_into(&webhook_poll_ms, 1)},
      {"webhooks", "concurrency", unsigned_into(&s->read.webhooks.concurrency, 1)},
      {"webhooks", "per_target", unsigned_into(&s->read.webhooks.per_target, 1)},
      {"webhooks", "per_merchant", unsigned_into(&s->read.webhooks.per_merchant, 1)},
      {"webhooks", "timeout_ms", unsigned_into(&webhook_timeout_ms, 1)},
      {"webhooks", "retry_base_ms", unsigned_into(&webhook_retry_base_ms, 1)},
      {"webhooks", "retry_max_ms", unsigned_into(&webhook_retry_max_ms, 1)},
      {"webhooks", "retry_period_s", unsigned_into(&webhook_retry_period_s, 1)},
      {"webhooks", "grace_period_s", unsigned_into(&s->read.webhooks.grace_period_s, 0)},
      {"webhooks", "allow_private", bool_into(&s->read.webhooks.allow_private)},
      {"webhooks", "ca_file", text_into(&s->read.webhooks.ca_file)},
      {"webhooks", "response_limit_bytes", unsigned_into(&s->read.webhooks.response_limit, 1)},
      {"webhooks", "nice", unsigned_into(&s->read.webhooks.nice, 0)},
      {"webhooks", "retain_s", unsigned_into(&webhook_retain_s, 0)},
      {"kafka", "brokers", text_into(&s->read.kafka.brokers)},
      {"kafka", "topic_prefix", text_into(&s->read.kafka.topic_prefix)},
      {"kafka", "watermark_file", text_into(&s->read.kafka.watermark_file)},
      {"kafka", "batch_rows", unsigned_into(&s->read.kafka.batch_rows, 1)},
      {"kafka", "poll_interval_ms", unsigned_into(&kafka_poll_ms, 1)},
      {"kafka", "watermark_interval_ms", unsigned_into(&kafka_watermark_ms, 1)},
      {"kafka", "message_timeout_ms", unsigned_into(&s->read.kafka.message_timeout_ms, 0)},
      {"kafka", "linger_ms", unsigned_into(&s->read.kafka.linger_ms, 0)},
      {"redis", "address", text_into(&s->read.redis.redis.address)},
      {"redis", "key_prefix", text_into(&s->read.redis.key_prefix)},
      {"redis", "entry_ttl_s", unsigned_into(&s->read.redis.entry_ttl_s, 0)},
      {"redis", "connect_timeout_ms", unsigned_into(&redis_connect_timeout_ms, 1)},
      {"redis", "command_timeout_ms", unsigned_into(&redis_command_timeout_ms, 1)},
      {"redis", "lock_ms", unsigned_into(&redis_lock_ms, 1)},
      {"redis", "wait_ms", unsigned_into(&redis_wait_ms, 0)},
      {"redis", "poll_ms", unsigned_into(&redis_poll_ms, 1)},
      {"redis", "failure_pause_ms", unsigned_into(&redis_failure_pause_ms, 0)},
      {"redis", "connections_idle_max", unsigned_into(&s->read.redis.connections_idle_max, 1)},
      {"redis", "feed", bool_into(&s->read.feed.enabled)},
      {"redis", "feed_batch_rows", unsigned_into(&s->read.feed.batch_rows, 1)},
      {"redis", "feed_poll_interval_ms", unsigned_into(&feed_poll_ms, 1)},
  };
  for (const auto& [section_name, section] : root) {
    const toml::table* table = section.as_table();
    if (table == nullptr) {
      return Status::invalid_config(
          fmt::format("{}: \"{}\" must be a [section]", file.string(), section_name.str()));
    }
    for (const auto& [key_name, value] : *table) {
      const Key* key = nullptr;
      for (const Key& k : keys) {
        if (section_name.str() == k.section && key_name.str() == k.name) key = &k;
      }
      if (key == nullptr) {
        return Status::invalid_config(fmt::format("{}: unknown setting {}.{}", file.string(),
                                                  section_name.str(), key_name.str()));
      }
      if (!key->set(value)) {
        const std::string_view k = key_name.str();
        return Status::invalid_config(fmt::format(
            "{}: {}.{} must be {}", file.string(), section_name.str(), k,
            k == "journal_prepare_segments" || k == "enabled" || k == "allow_private" ||
                    k == "feed" || k == "mariadb_ssl" || k == "mariadb_ssl_verify"
                ? "true or false"
            : k == "file" || k == "ca_file" || k == "watermark_file" || k == "mariadb_ssl_ca" ||
                    k == "mariadb_ssl_cert" || k == "mariadb_ssl_key"
                ? "a file name"
            : k == "brokers" || k == "topic_prefix" || k == "address" || k == "key_prefix" ||
                    k == "store" ||
                    (k.starts_with("mariadb_") && k != "mariadb_port" && !k.ends_with("_s"))
                ? "a text"
                : "a positive number"));
      }
    }
  }
  s->read.history.poll_interval_ns = history_poll_ms * 1'000'000;
  s->read.history.read_wait_ns = read_wait_ms * 1'000'000;
  s->read.history.redirect_wait_ns = redirect_wait_ms * 1'000'000;
  s->read.history.texts_wait_ns = texts_wait_ms * 1'000'000;
  s->read.history.attention_after_ns = attention_after_s * kNanosPerSecond;
  if (history_open_retry_s > 3600) {
    return Status::invalid_config(
        fmt::format("{}: history.open_retry_s must be at most 3600", file.string()));
  }
  s->read.history.open_retry_ns = history_open_retry_s * kNanosPerSecond;
  if (history_reopen_interval_s > 300) {
    return Status::invalid_config(
        fmt::format("{}: history.reopen_interval_s must be at most 300", file.string()));
  }
  s->read.history.reopen_interval_ns = history_reopen_interval_s * kNanosPerSecond;
  if (history_store != "sqlite" && history_store != "mariadb") {
    return Status::invalid_config(
        fmt::format("{}: history.store must be \"sqlite\" or \"mariadb\"", file.string()));
  }
  s->read.history.store.kind =
      history_store == "sqlite" ? sql::Dialect::sqlite : sql::Dialect::mariadb;
  if (!sql::valid_database_name(s->read.history.store.mariadb.database)) {
    return Status::invalid_config(fmt::format(
        "{}: history.mariadb_database must be 1 to 64 letters, digits and _", file.string()));
  }
  if (const Status tls = sql::check_tls(s->read.history.store.mariadb); !tls.ok()) {
    return Status::invalid_config(fmt::format("{}: history.{}", file.string(), tls.message()));
  }
  s->read.webhooks.poll_interval_ns = webhook_poll_ms * 1'000'000;
  s->read.kafka.poll_interval_ns = kafka_poll_ms * 1'000'000;
  s->read.kafka.watermark_interval_ns = kafka_watermark_ms * 1'000'000;
  for (const u64 ms : {redis_connect_timeout_ms, redis_command_timeout_ms, redis_lock_ms,
                       redis_wait_ms, redis_poll_ms, redis_failure_pause_ms}) {
    // (Past this the nanoseconds would wrap; OrderCache::open bounds each far lower.)
    if (ms > kMillisMax) {
      return Status::invalid_config(
          fmt::format("{}: a [redis] time in ms must be at most {}", file.string(), kMillisMax));
    }
  }
  s->read.redis.redis.connect_timeout_ns = redis_connect_timeout_ms * 1'000'000;
  s->read.redis.redis.command_timeout_ns = redis_command_timeout_ms * 1'000'000;
  s->read.redis.lock_ns = redis_lock_ms * 1'000'000;
  s->read.redis.wait_ns = redis_wait_ms * 1'000'000;
  s->read.redis.poll_ns = redis_poll_ms * 1'000'000;
  s->read.redis.failure_pause_ns = redis_failure_pause_ms * 1'000'000;
  s->read.feed.poll_interval_ns = feed_poll_ms * 1'000'000;
  if (!s->read.redis.redis.address.empty()) {
    if (const Status bad = cache::OrderCache::open(s->read.redis).status(); !bad.ok()) {
      return Status::invalid_config(fmt::format("{}: [redis] {}", file.string(), bad.message()));
    }
  }
  s->read.webhooks.timeout_ns = webhook_timeout_ms * 1'000'000;
  s->read.webhooks.retry_base_ns = webhook_retry_base_ms * 1'000'000;
  s->read.webhooks.retry_max_ns = webhook_retry_max_ms * 1'000'000;
  s->read.webhooks.retry_period_ns = webhook_retry_period_s * kNanosPerSecond;
  if (webhook_retain_s > kMillisMax / 1000) {
    return Status::invalid_config(
        fmt::format("{}: webhooks.retain_s must be at most {}", file.string(), kMillisMax / 1000));
  }
  s->read.webhooks.retain_ns = webhook_retain_s * kNanosPerSecond;
  ledger.idempotency_window_ns = window_s * kNanosPerSecond;
  ledger.order_final_retained_ns = final_retained_s * kNanosPerSecond;
  // The ledger keeps signatures for twice the most the timestamp check allows
  // (LedgerConfig::signature_window_ns, fixed so that journals stay comparable).
  s->auth.signatures_kept_s = ledger.signature_window_ns / kNanosPerSecond;
  if (s->auth.window_s == 0 ||
      2 * s->auth.window_s * kNanosPerSecond > ledger.signature_window_ns) {
    return Status::invalid_config(fmt::format("{}: auth.window_s must be 1 to {}", file.string(),
                                              ledger.signature_window_ns / kNanosPerSecond / 2));
  }
  for (const u32 limit : s->quotas) {
    if (limit != Settings::kQuotaShare && limit > kQuotaMax) {
      return Status::invalid_config(
          fmt::format("{}: a [quotas] limit must be at most {}", file.string(), kQuotaMax));
    }
  }
  group.tick_interval_ns = tick_ms * 1'000'000;
  group.journal_sync_gap_ns = sync_gap_us * 1'000;
  group.journal_sync_gap_quiet_ns = sync_gap_quiet_us * 1'000;
  return Status::success();
}

// A secret kept in the data dir (mode 0600): read it, or make one the first time.
// `created` says whether it was made now.
Result<std::string> load_or_create_secret(const std::filesystem::path& file,
                                          std::string_view prefix, bool* created) {
  *created = false;
  Result<std::string> read = read_file(file);
  if (read.ok()) {
    std::string text = std::move(read).value();
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r'))
      text.pop_back();
    if (text.empty()) return Status::corruption(fmt::format("{} is empty", file.string()));
    return text;
  }
  if (read.status().code() != StatusCode::not_found) return read.status();
  std::string secret = std::string(prefix) + api::random_hex(32);
  if (Status written = write_file_durably(file, secret + "\n", 0600); !written.ok()) {
    return written;
  }
  *created = true;
  return secret;
}

// The data directory holds every balance and the secrets that verify requests: made
// 0700 (an existing one tightened to it, and said so); one that others may write to
// is refused, since whoever can write there can rewrite the journal.
Status prepare_data_dir(const std::filesystem::path& dir) {
  std::error_code ec;
  const bool made = std::filesystem::create_directories(dir, ec);
  if (ec) return Status::io_error(ec.message());
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return Status::io_error(std::strerror(errno));
  if (!S_ISDIR(st.st_mode)) return Status::invalid_config("not a directory");
  const mode_t mode = st.st_mode & 07777;
  if (!made && (mode & (S_IWGRP | S_IWOTH)) != 0) {
    return Status::invalid_config(fmt::format(
        "the data directory is writable by others (mode {:04o}); make it the server's alone "
        "(chmod 700) before starting",
        mode));
  }
  if (mode != 0700) {
    if (::chmod(dir.c_str(), 0700) != 0) return Status::io_error(std::strerror(errno));
    if (!made) {
      PG_LOG_WARN("event=data_dir_permissions dir={} was={:04o} now=0700", dir.string(), mode);
    }
  }
  return Status::success();
}

// Every connection is a file, and the soft limit is often 1,024: it is raised toward
// the hard limit, enough for both listeners' connections_max and the files a group
// keeps (journal segments, snapshots, the data directory's). A hard limit too low for
// that is logged, so that a full table shows as a cause, not as refused accepts
// (paygate_accept_failures_total).
void raise_file_limit(u64 connections) {
  constexpr u64 kFilesBesidesConnections = 1024;
  const u64 wanted = connections + kFilesBesidesConnections;
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) != 0) return;
  const u64 before = files.rlim_cur;
  if (files.rlim_cur != RLIM_INFINITY && files.rlim_cur < wanted) {
    files.rlim_cur =
        files.rlim_max == RLIM_INFINITY ? wanted : std::min<u64>(wanted, files.rlim_max);
    if (::setrlimit(RLIMIT_NOFILE, &files) != 0) files.rlim_cur = before;
  }
  if (files.rlim_cur != before) {
    PG_LOG_INFO("event=file_limit_raised from={} to={}", before, files.rlim_cur);
  }
  if (files.rlim_cur != RLIM_INFINITY && files.rlim_cur < wanted) {
    PG_LOG_WARN(
        "event=file_limit_low files_max={} wanted={} message=\"the hard limit on open files "
        "is below connections_max of both listeners plus {}: raise it (ulimit -Hn, "
        "LimitNOFILE=) or lower connections_max\"",
        files.rlim_cur, wanted, kFilesBesidesConnections);
  }
}

sigset_t stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

}  // namespace

Status served_settings(const ServeOptions& options, EngineConfig* engine,
                       history::HistoryConfig* history) {
  Settings s;
  s.engine.data_dir = options.data_dir;
  s.engine.groups = options.groups;
  if (options.groups == 0 || options.groups > kGroupMax + 1) {
    return Status::invalid_config(fmt::format("--groups must be 1 to {}", kGroupMax + 1));
  }
  if (!options.config_file.empty()) {
    if (Status s_ok = apply_config_file(options.config_file, &s); !s_ok.ok()) return s_ok;
  }
  if (s.read.history.store.file.empty())
    s.read.history.store.file = options.data_dir / "history.sqlite";
  *engine = s.engine;
  *history = s.read.history;
  return Status::success();
}

int run_serve(const ServeOptions& options) {
  // Block the stop signals before any thread starts, so every thread inherits the
  // mask and only the main thread's sigwait() sees them.
  const sigset_t signals = stop_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  Settings s;
  s.engine.data_dir = options.data_dir;
  s.engine.groups = options.groups;
  if (options.groups == 0 || options.groups > kGroupMax + 1) {
    PG_LOG_ERROR("event=bad_config message=\"--groups must be 1 to {}\"", kGroupMax + 1);
    return 2;
  }
  Status configured = split_address(options.http, &s.http.address, &s.http.port);
  if (configured.ok() && !options.binary.empty()) {
    configured = split_address(options.binary, &s.binary.address, &s.binary.port);
  }
  if (configured.ok() && !options.config_file.empty()) {
    configured = apply_config_file(options.config_file, &s);
  }
  if (!configured.ok()) {
    PG_LOG_ERROR("event=bad_config message=\"{}\"", configured.message());
    return 2;
  }
  const u32 cores = std::max(1u, std::thread::hardware_concurrency());
  if (s.http.io_threads == 0) {
    // Each group's thread wants a core of its own; the IO threads share the rest, and
    // are at least two where there are two cores: with an io_context per IO thread,
    // two on 2 cores and one group gave 1.10-1.40x the one-transfer requests/s and the
    // same batch ops/s as one (docs/BENCHMARKS.md).
    s.http.io_threads =
        std::max(cores > s.engine.groups ? cores - s.engine.groups : 1, std::min(cores, 2u));
  }
  if (s.binary.io_threads == 0) s.binary.io_threads = cores;
  if (Status private_dir = prepare_data_dir(options.data_dir); !private_dir.ok()) {
    PG_LOG_ERROR("event=bad_data_dir dir={} message=\"{}\"", options.data_dir.string(),
                 private_dir.message());
    return 2;
  }

  bool created = false;
  s.auth.admin_token = options.admin_token;
  if (s.auth.admin_token.empty()) {
    const std::filesystem::path token_file = options.data_dir / "admin_token";
    Result<std::string> token = load_or_create_secret(token_file, "pgadm_", &created);
    if (!token.ok()) {
      PG_LOG_ERROR("event=admin_token_failed message=\"{}\"", token.status().message());
      return 2;
    }
    s.auth.admin_token = std::move(token).value();
    if (created) {
      // Only where it is: stdout often ends up in log files, and tokens are never
      // logged (docs/OPERATING.md).
      std::printf("paygate: a new admin token is in %s (mode 0600); read it with: cat %s\n",
                  token_file.c_str(), token_file.c_str());
      std::fflush(stdout);
    }
  }
  Result<std::string> server_key =
      load_or_create_secret(options.data_dir / "server_key", "", &created);
  if (!server_key.ok()) {
    PG_LOG_ERROR("event=server_key_failed message=\"{}\"", server_key.status().message());
    return 2;
  }
  s.service.idempotency_secret = std::move(server_key).value();

  Result<std::unique_ptr<api::MerchantRegistry>> registry = api::MerchantRegistry::open(
      options.data_dir / "merchants.json", s.engine.region, s.engine.groups);
  if (!registry.ok()) {
    PG_LOG_ERROR("event=merchants_failed message=\"{}\"", registry.status().message());
    return 2;
  }
  const std::unique_ptr<api::MerchantRegistry> merchants = std::move(registry).value();
  // Signed POSTs from before this start are refused (AuthConfig::started_ns).
  s.auth.started_ns = static_cast<u64>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                           std::chrono::system_clock::now().time_since_epoch())
                                           .count());
  api::Authenticator auth(*merchants, s.auth);
  api::OwnerIndex owners(IdPrefix{s.engine.region, 0}, s.engine.groups,
                         s.engine.group.ledger.accounts_max);
  api::Service service(*merchants, auth, owners, s.service);

  raise_file_limit(u64{s.http.connections_max} +
                   (options.binary.empty() ? 0 : u64{s.binary.connections_max}));
  // Listen first: /healthz answers and /readyz says "not yet" while groups recover.
  api::IoRuntime runtime(s.http.io_threads);
  api::HttpServer http(service, s.http, runtime);
  if (Status listening = http.listen(); !listening.ok()) {
    PG_LOG_ERROR("event=listen_failed message=\"{}\"", listening.message());
    return 2;
  }
  // The binary protocol runs on IO threads of its own: its frames carry up to 8,190
  // commands each to decode and check, work that spreads over cores, while HTTP's
  // many small requests do best on fewer threads (docs/BENCHMARKS.md).
  std::unique_ptr<api::IoRuntime> binary_runtime;
  std::unique_ptr<api::BinaryServer> binary;
  if (!options.binary.empty()) {
    binary_runtime = std::make_unique<api::IoRuntime>(s.binary.io_threads);
    binary = std::make_unique<api::BinaryServer>(service, owners, s.auth.admin_token, s.binary,
                                                 *binary_runtime);
    if (Status listening = binary->listen(); !listening.ok()) {
      PG_LOG_ERROR("event=listen_failed message=\"{}\"", listening.message());
      return 2;
    }
  }
  runtime.start();
  if (binary) {
    binary_runtime->start();
    PG_LOG_INFO("event=listening_binary address={}:{} io_threads={}", s.binary.address,
                binary->port(), s.binary.io_threads);
  }
  PG_LOG_INFO("event=listening http={}:{} data_dir={} groups={} io_threads={}", s.http.address,
              http.port(), options.data_dir.string(), s.engine.groups, s.http.io_threads);

  const auto recovery_started = std::chrono::steady_clock::now();
  Result<std::unique_ptr<Engine>> recovered = Engine::open(s.engine);
  if (!recovered.ok()) {
    PG_LOG_ERROR("event=recovery_failed message=\"{}\"", recovered.status().message());
    runtime.stop();
    if (binary_runtime) binary_runtime->stop();
    return 3;
  }
  const std::unique_ptr<Engine> engine = std::move(recovered).value();
  api::Service::index_owners(*engine, owners);
  // The history store catches up from where it stands before the groups take work, so
  // that retention never removes what it has not read (docs/HISTORY.md).
  ReadSide read_side(s.read, options.data_dir, *engine, service, *merchants);
  read_side.open();
  engine->start();
  if (const BetweenGroupsReport& report = engine->between_groups_at_start(); report.unsettled > 0) {
    PG_LOG_INFO("event=between_groups_finished unsettled={} posted={} voided={}", report.unsettled,
                report.posted, report.voided);
    if (!report.problem.empty()) {
      PG_LOG_ERROR("event=between_groups_unfinished message=\"{}\"", report.problem);
    }
  }
  if (const Status set = set_default_quotas(*engine, s.quotas); !set.ok()) {
    PG_LOG_ERROR("event=quotas_failed message=\"{}\"", set.message());
    engine->stop();
    runtime.stop();
    if (binary_runtime) binary_runtime->stop();
    return 3;
  }
  service.attach(engine.get());
  service.set_ready(true);
  PG_LOG_INFO(
      "event=ready recovery_s={:.3f} merchants={}",
      std::chrono::duration<double>(std::chrono::steady_clock::now() - recovery_started).count(),
      merchants->size());

  int signal = 0;
  sigwait(&signals, &signal);
  PG_LOG_INFO("event=stopping signal={}", signal);

  // Stop taking work, let what was taken finish, then make it all durable.
  http.close();
  if (binary) binary->close();
  service.set_draining();
  const auto in_flight = [&] { return http.in_flight() + (binary ? binary->in_flight() : 0); };
  const auto drain_deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(s.drain_timeout_ms);
  while (in_flight() != 0 && std::chrono::steady_clock::now() < drain_deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  read_side.stop_opening();
  engine->stop();  // answers anything still taken, syncs, joins
  read_side.stop();
  // Let the answers queued by the final stop reach their connections.
  const auto flush_deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
  while (in_flight() != 0 && std::chrono::steady_clock::now() < flush_deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  runtime.stop();
  if (binary_runtime) binary_runtime->stop();
  PG_LOG_INFO("event=stopped");
  return 0;
}

}  // namespace paygate
