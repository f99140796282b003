#include "api/metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>

#include "api/id_text.h"
#include "cache/order_cache.h"
#include "cache/order_feed.h"
#include "history/worker.h"
#include "pipeline/engine.h"
#include "publish/kafka_publisher.h"
#include "webhooks/deliverer.h"

namespace paygate::api {
namespace {

// Bucket bounds in seconds for latency histograms; each is converted to ns and
// counted with Histogram::count_at_most (exact to within its ~6% bucket width).
constexpr double kLatencyBoundsS[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                      0.01,   0.025,   0.05,   0.1,   0.25,   1.0};
constexpr double kBatchBounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096};

void header(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

// One Prometheus histogram series from a Histogram of values in `unit` per bound unit.
void histogram(std::string& out, std::string_view name, std::string_view labels, const Histogram& h,
               std::span<const double> bounds, double unit) {
  const std::string_view comma = labels.empty() ? "" : ",";
  for (const double bound : bounds) {
    fmt::format_to(std::back_inserter(out), "{}_bucket{{{}{}le=\"{}\"}} {}\n", name, labels, comma,
                   bound, h.count_at_most(static_cast<u64>(bound * unit)));
  }
  const u64 count = h.count();
  fmt::format_to(std::back_inserter(out), "{}_bucket{{{}{}le=\"+Inf\"}} {}\n", name, labels, comma,
                 count);
  fmt::format_to(std::back_inserter(out), "{}_sum{{{}}} {}\n", name, labels,
                 static_cast<double>(h.sum()) / unit);
  fmt::format_to(std::back_inserter(out), "{}_count{{{}}} {}\n", name, labels, count);
}

template <typename... Args>
void line(std::string& out, fmt::format_string<Args...> format, Args&&... args) {
  fmt::format_to(std::back_inserter(out), format, std::forward<Args>(args)...);
}

}  // namespace

std::string_view route_name(Route route) noexcept {
  switch (route) {
    case Route::healthz:
      return "/healthz";
    case Route::readyz:
      return "/readyz";
    case Route::metrics:
      return "/metrics";
    case Route::merchants_create:
      return "POST /v1/merchants";
    case Route::merchants_get:
      return "GET /v1/merchants/{id}";
    case Route::merchants_keys:
      return "POST /v1/merchants/{id}/keys";
    case Route::merchants_quotas_get:
      return "GET /v1/merchants/{id}/quotas";
    case Route::merchants_quotas_set:
      return "POST /v1/merchants/{id}/quotas";
    case Route::merchants_risk_get:
      return "GET /v1/merchants/{id}/risk";
    case Route::merchants_risk_set:
      return "POST /v1/merchants/{id}/risk";
    case Route::accounts_create:
      return "POST /v1/accounts";
    case Route::accounts_get:
      return "GET /v1/accounts/{id}";
    case Route::accounts_entries:
      return "GET /v1/accounts/{id}/entries";
    case Route::transfers_create:
      return "POST /v1/transfers";
    case Route::transfers_get:
      return "GET /v1/transfers/{id}";
    case Route::transfers_post:
      return "POST /v1/transfers/{id}/post";
    case Route::users_create:
      return "POST /v1/users";
    case Route::users_get:
      return "GET /v1/users/{id}";
    case Route::users_keys:
      return "POST /v1/users/{id}/keys";
    case Route::providers_create:
      return "POST /v1/providers";
    case Route::providers_get:
      return "GET /v1/providers/{id}";
    case Route::providers_keys:
      return "POST /v1/providers/{id}/keys";
    case Route::withdrawals_create:
      return "POST /v1/withdrawals";
    case Route::withdrawals_get:
      return "GET /v1/withdrawals/{id}";
    case Route::withdrawals_result:
      return "POST /v1/withdrawals/{id}/result";
    case Route::orders_create:
      return "POST /v1/orders";
    case Route::orders_list:
      return "GET /v1/orders";
    case Route::orders_get:
      return "GET /v1/orders/{id}";
    case Route::orders_checkout:
      return "POST /v1/orders/{id}/checkout";
    case Route::orders_result:
      return "POST /v1/orders/{id}/result";
    case Route::orders_resolve:
      return "POST /v1/orders/{id}/resolve";
    case Route::orders_cancel:
      return "POST /v1/orders/{id}/cancel";
    case Route::orders_refunds:
      return "POST /v1/orders/{id}/refunds";
    case Route::webhook_endpoints_create:
      return "POST /v1/webhook_endpoints";
    case Route::webhook_endpoints_list:
      return "GET /v1/webhook_endpoints";
    case Route::webhook_endpoints_get:
      return "GET /v1/webhook_endpoints/{id}";
    case Route::webhook_endpoints_update:
      return "POST /v1/webhook_endpoints/{id}";
    case Route::webhook_endpoints_delete:
      return "DELETE /v1/webhook_endpoints/{id}";
    case Route::webhook_endpoints_rotate:
      return "POST /v1/webhook_endpoints/{id}/rotate";
    case Route::webhook_deliveries_list:
      return "GET /v1/webhook_deliveries";
    case Route::webhook_deliveries_get:
      return "GET /v1/webhook_deliveries/{id}";
    case Route::webhook_deliveries_resend:
      return "POST /v1/webhook_deliveries/{id}/resend";
    case Route::transfers_void:
      return "POST /v1/transfers/{id}/void";
    case Route::batch:
      return "POST /v1/batch";
    case Route::events:
      return "GET /v1/events";
    case Route::unknown:
      return "unknown";
  }
  return "unknown";
}

void render_metrics(const MetricsSources& s, std::string& out) {
  header(out, "paygate_ready", "gauge", "1 once recovery has finished and requests are taken");
  line(out, "paygate_ready {}\n", s.ready ? 1 : 0);
  header(out, "paygate_merchants", "gauge", "merchants known");
  line(out, "paygate_merchants {}\n", s.merchants);

  if (s.engine != nullptr) {
    Engine& engine = *s.engine;
    header(out, "paygate_group_commands_total", "counter",
           "commands applied and made durable (rate() gives commands/s)");
    for (u32 g = 0; g < engine.groups(); ++g) {
      line(out, "paygate_group_commands_total{{group=\"{}\"}} {}\n", g,
           engine.group(g).stats().commands.load(std::memory_order_relaxed));
    }
    header(out, "paygate_group_requests_total", "counter", "requests taken from the ring");
    for (u32 g = 0; g < engine.groups(); ++g) {
      line(out, "paygate_group_requests_total{{group=\"{}\"}} {}\n", g,
           engine.group(g).stats().requests.load(std::memory_order_relaxed));
    }
    header(out, "paygate_group_ring_occupancy", "gauge", "requests waiting in the input ring");
    for (u32 g = 0; g < engine.groups(); ++g) {
      line(out, "paygate_group_ring_occupancy{{group=\"{}\"}} {}\n", g,
           engine.group(g).ring_occupancy());
    }
    header(out, "paygate_group_ring_capacity", "gauge", "input ring slots");
    for (u32 g = 0; g < engine.groups(); ++g) {
      line(out, "paygate_group_ring_capacity{{group=\"{}\"}} {}\n", g,
           engine.group(g).ring_capacity());
    }
    header(out, "paygate_group_overloaded_total", "counter", "requests refused: ring full");
    for (u32 g = 0; g < engine.groups(); ++g) {
      line(out, "paygate_group_overloaded_total{{group=\"{}\"}} {}\n", g,
           engine.group(g).stats().overloaded.load(std::memory_order_relaxed));
    }
    header(out, "paygate_group_failed", "gauge",
           "1 when the journal failed (nothing is acknowledged)");
    for (u32 g = 0; g < engine.groups(); ++g) {
      line(out, "paygate_group_failed{{group=\"{}\"}} {}\n", g, engine.group(g).failed() ? 1 : 0);
    }
    header(out, "paygate_group_durable_sequence", "gauge", "last sequence durable in the journal");
    for (u32 g = 0; g < engine.groups(); ++g) {
      line(out, "paygate_group_durable_sequence{{group=\"{}\"}} {}\n", g,
           engine.group(g).durable_sequence());
    }
    header(out, "paygate_snapshots_total", "counter", "snapshots published");
    for (u32 g = 0; g < engine.groups(); ++g) {
      line(out, "paygate_snapshots_total{{group=\"{}\"}} {}\n", g,
           engine.group(g).stats().snapshots.load(std::memory_order_relaxed));
    }
    header(out, "paygate_snapshot_failures_total", "counter",
           "snapshots that could not be started or written (retried with back-off; journal "
           "segments are kept meanwhile)");
    for (u32 g = 0; g < engine.groups(); ++g) {
      line(out, "paygate_snapshot_failures_total{{group=\"{}\"}} {}\n", g,
           engine.group(g).stats().snapshot_failures.load(std::memory_order_relaxed));
    }
    header(out, "paygate_journal_retention_overrides_total", "counter",
           "journal segments removed although the history store had not read them (it was "
           "more than [history] retention_segments_max behind): rebuild it");
    for (u32 g = 0; g < engine.groups(); ++g) {
      line(out, "paygate_journal_retention_overrides_total{{group=\"{}\"}} {}\n", g,
           engine.group(g).stats().retention_overrides.load(std::memory_order_relaxed));
    }
    header(out, "paygate_history_store_open", "gauge",
           "1 while the history store is open; 0 when it is off or could not be opened yet "
           "(tried again in the background: docs/HISTORY.md)");
    line(out, "paygate_history_store_open {}\n", s.history != nullptr ? 1 : 0);
    if (history::HistoryWorker* history = s.history) {
      header(out, "paygate_history_watermark", "gauge",
             "the last sequence of the group the history store holds every row of");
      for (u32 g = 0; g < history->groups(); ++g)
        line(out, "paygate_history_watermark{{group=\"{}\"}} {}\n", g, history->watermark(g));
      header(out, "paygate_history_lag_commands", "gauge",
             "commands durable in the group's journal and not yet in the history store");
      for (u32 g = 0; g < history->groups(); ++g) {
        const u64 durable = engine.group(g).durable_sequence();
        const u64 watermark = history->watermark(g);
        line(out, "paygate_history_lag_commands{{group=\"{}\"}} {}\n", g,
             durable > watermark ? durable - watermark : 0);
      }
      header(out, "paygate_history_lag_seconds", "gauge",
             "how long the history store has been behind the group's journal (0: caught up)");
      for (u32 g = 0; g < history->groups(); ++g) {
        line(out, "paygate_history_lag_seconds{{group=\"{}\"}} {:.3f}\n", g,
             static_cast<double>(history->behind_ns(g, engine.group(g).durable_sequence())) / 1e9);
      }
      header(out, "paygate_history_rows_total", "counter",
             "rows written to the history store (events, statement lines, annotations)");
      line(out, "paygate_history_rows_total {}\n", history->rows_written());
      header(out, "paygate_history_failures_total", "counter",
             "projection passes that failed (retried; see the log)");
      line(out, "paygate_history_failures_total {}\n", history->failures());
      header(out, "paygate_history_partition_failures_total", "counter",
             "MariaDB: times order_archive's monthly partitions could not be made (logged; "
             "retried a minute later; the rows wait in p_future)");
      line(out, "paygate_history_partition_failures_total {}\n",
           history->store().partition_failures());
      const u64 now = static_cast<u64>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                           std::chrono::system_clock::now().time_since_epoch())
                                           .count());
      if (const auto attention =
              history->store().attention(now - history->config().attention_after_ns);
          attention.ok()) {
        header(out, "paygate_orders_attention", "gauge",
               "orders that need attention (GET /v1/orders?attention=true): processing longer "
               "than [history] attention_after_s, and unresolved exception_checkout");
        line(out, "paygate_orders_attention{{reason=\"processing\"}} {}\n",
             attention.value().processing);
        line(out, "paygate_orders_attention{{reason=\"exception_checkout\"}} {}\n",
             attention.value().exception_checkout);
      }
    }
    if (const publish::KafkaPublisher* k = s.kafka) {
      header(out, "paygate_kafka_watermark", "gauge",
             "the last sequence of the group every message up to which Kafka acknowledged");
      for (u32 g = 0; g < k->groups(); ++g)
        line(out, "paygate_kafka_watermark{{group=\"{}\"}} {}\n", g, k->watermark(g));
      if (history::HistoryWorker* history = s.history) {
        header(out, "paygate_kafka_lag_commands", "gauge",
               "commands in the history store not yet all acknowledged by Kafka");
        for (u32 g = 0; g < k->groups() && g < history->groups(); ++g) {
          const u64 stored = history->watermark(g);
          line(out, "paygate_kafka_lag_commands{{group=\"{}\"}} {}\n", g,
               stored > k->watermark(g) ? stored - k->watermark(g) : 0);
        }
      }
      const auto single = [&](const char* metric, const char* type, const char* help, u64 value) {
        header(out, metric, type, help);
        line(out, "{} {}\n", metric, value);
      };
      single("paygate_kafka_messages_total", "counter", "messages Kafka acknowledged",
             k->messages());
      single("paygate_kafka_delivery_errors_total", "counter",
             "messages not delivered (published again from the watermark)", k->delivery_errors());
      single("paygate_kafka_rewinds_total", "counter",
             "times the publisher went back to its watermarks after a failed delivery",
             k->rewinds());
      single("paygate_kafka_local_errors_total", "counter",
             "failed reads of the history store or writes of the watermark file (retried)",
             k->local_errors());
      single("paygate_kafka_gap_groups", "gauge",
             "groups not published: the history store starts after their Kafka watermark "
             "(docs/KAFKA.md)",
             k->gaps());
      single("paygate_kafka_connected", "gauge",
             "1 once the publisher has found both topics' partitions", k->connected() ? 1 : 0);
    }
    if (const cache::OrderCache* cache = s.order_cache) {
      const cache::OrderCache::Counters& c = cache->counters();
      header(out, "paygate_redis_order_reads_total", "counter",
             "reads of orders that left memory, through Redis, by outcome (docs/REDIS.md)");
      const std::pair<const char*, const std::atomic<u64>*> outcomes[] = {
          {"hit", &c.hits},
          {"loaded", &c.loaded},
          {"waited", &c.waits},
          {"not_found", &c.not_found},
          {"pending", &c.pending}};
      for (const auto& [outcome, value] : outcomes) {
        line(out, "paygate_redis_order_reads_total{{outcome=\"{}\"}} {}\n", outcome,
             value->load(std::memory_order_relaxed));
      }
      const auto count = [&](const char* metric, const char* type, const char* help, u64 value) {
        header(out, metric, type, help);
        line(out, "{} {}\n", metric, value);
      };
      count("paygate_redis_store_loads_total", "counter",
            "history store reads made by a Redis miss's loader (one per key at a time)",
            c.store_reads.load(std::memory_order_relaxed));
      count("paygate_redis_errors_total", "counter", "Redis commands that failed",
            c.errors.load(std::memory_order_relaxed));
      count("paygate_redis_fallbacks_total", "counter",
            "order reads answered from the store directly because Redis failed",
            c.fallbacks.load(std::memory_order_relaxed));
      count("paygate_redis_entry_writes_total", "counter",
            "order entries written (a newer sequence than the entry had)",
            c.writes.load(std::memory_order_relaxed));
      if (const cache::OrderFeed* feed = s.order_feed) {
        header(out, "paygate_redis_feed_sequence", "gauge",
               "the sequence of the group's last order change the feed wrote to Redis");
        for (u32 g = 0; g < feed->groups(); ++g)
          line(out, "paygate_redis_feed_sequence{{group=\"{}\"}} {}\n", g, feed->position(g));
        count("paygate_redis_feed_changes_total", "counter",
              "order changes the feed wrote to Redis", feed->changes());
        count("paygate_redis_feed_failures_total", "counter",
              "feed rounds that failed (Redis or the store; retried with back-off)",
              feed->failures());
      }
    }
    if (webhooks::Deliverer* w = s.webhooks) {
      const webhooks::WebhookCounters& c = w->counters();
      const auto count = [&](const char* metric, const char* help, const std::atomic<u64>& v,
                             const char* type = "counter") {
        header(out, metric, type, help);
        line(out, "{} {}\n", metric, v.load(std::memory_order_relaxed));
      };
      count("paygate_webhook_events_total", "order events read from the history store's outbox",
            c.events);
      count("paygate_webhook_deliveries_made_total",
            "deliveries made of them (one per target: the order's ipn_url or each endpoint)",
            c.made);
      header(out, "paygate_webhook_deliveries_total", "counter",
             "deliveries that ended, by outcome (delivered: a 2xx; failed: the retry period "
             "ended, or the endpoint was deleted)");
      line(out, "paygate_webhook_deliveries_total{{outcome=\"delivered\"}} {}\n",
           c.delivered.load(std::memory_order_relaxed));
      line(out, "paygate_webhook_deliveries_total{{outcome=\"failed\"}} {}\n",
           c.failed.load(std::memory_order_relaxed));
      count("paygate_webhook_attempts_total", "posts sent", c.attempts);
      count("paygate_webhook_attempt_failures_total",
            "attempts without a 2xx (retried with back-off)", c.attempt_failures);
      count("paygate_webhook_refused_addresses_total",
            "attempts refused because the host resolved to a forbidden address",
            c.refused_addresses);
      count("paygate_webhook_pruned_total",
            "delivered and failed deliveries removed past [webhooks] retain_s", c.pruned);
      count("paygate_webhook_store_failures_total", "webhook store reads or writes that failed",
            c.store_failures);
      count("paygate_webhook_in_flight", "attempts in flight", c.in_flight, "gauge");
      if (const auto backlog = w->store().backlog(); backlog.ok()) {
        const auto endpoint_of = [](u64 endpoint) {
          return endpoint == 0 ? std::string("ipn") : id_text(IdKind::webhook_endpoint, endpoint);
        };
        header(out, "paygate_webhook_queue_depth", "gauge",
               "pending deliveries by endpoint (endpoint=\"ipn\": to orders' ipn_urls)");
        for (const auto& b : backlog.value()) {
          line(out, "paygate_webhook_queue_depth{{endpoint=\"{}\"}} {}\n", endpoint_of(b.endpoint),
               b.pending);
        }
        header(out, "paygate_webhook_oldest_pending_seconds", "gauge",
               "age of the oldest pending delivery by endpoint");
        const u64 now = static_cast<u64>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                             std::chrono::system_clock::now().time_since_epoch())
                                             .count());
        for (const auto& b : backlog.value()) {
          line(out, "paygate_webhook_oldest_pending_seconds{{endpoint=\"{}\"}} {:.3f}\n",
               endpoint_of(b.endpoint),
               now > b.oldest_created_ns ? static_cast<double>(now - b.oldest_created_ns) / 1e9
                                         : 0.0);
        }
      }
    }
    header(out, "paygate_clock_offset_seconds", "gauge",
           "the wall clock minus the group's command time: non-zero after a step of the wall "
           "clock, which command time follows at 5% of the time that passes");
    for (u32 g = 0; g < engine.groups(); ++g) {
      line(out, "paygate_clock_offset_seconds{{group=\"{}\"}} {}\n", g,
           -static_cast<double>(
               engine.group(g).stats().clock_offset_ns.load(std::memory_order_relaxed)) /
               1e9);
    }
    header(out, "paygate_clock_jumps_total", "counter",
           "times the wall clock was found more than 1 s from command time");
    for (u32 g = 0; g < engine.groups(); ++g) {
      line(out, "paygate_clock_jumps_total{{group=\"{}\"}} {}\n", g,
           engine.group(g).stats().clock_jumps.load(std::memory_order_relaxed));
    }
    header(out, "paygate_idempotency_window_held_seconds", "gauge",
           "how far back idempotency keys are still remembered (API.md): always the configured "
           "window, since a key is never forgotten inside it (a full table refuses new keys)");
    for (u32 g = 0; g < engine.groups(); ++g) {
      line(out, "paygate_idempotency_window_held_seconds{{group=\"{}\"}} {}\n", g,
           static_cast<double>(engine.group(g).config().ledger.idempotency_window_ns) / 1e9);
    }
    header(out, "paygate_idempotency_keys", "gauge",
           "keys remembered: lane client (Idempotency-Key), lane signature (signed requests "
           "without one)");
    for (u32 g = 0; g < engine.groups(); ++g) {
      const Group::Stats& stats = engine.group(g).stats();
      line(out, "paygate_idempotency_keys{{group=\"{}\",lane=\"client\"}} {}\n", g,
           stats.idempotency_keys.load(std::memory_order_relaxed));
      line(out, "paygate_idempotency_keys{{group=\"{}\",lane=\"signature\"}} {}\n", g,
           stats.signature_keys.load(std::memory_order_relaxed));
    }
    header(out, "paygate_idempotency_keys_capacity", "gauge", "room for remembered keys, by lane");
    for (u32 g = 0; g < engine.groups(); ++g) {
      const LedgerConfig& ledger = engine.group(g).config().ledger;
      line(out, "paygate_idempotency_keys_capacity{{group=\"{}\",lane=\"client\"}} {}\n", g,
           ledger.idempotency_keys_max);
      line(out, "paygate_idempotency_keys_capacity{{group=\"{}\",lane=\"signature\"}} {}\n", g,
           ledger.signature_capacity());
    }
    header(out, "paygate_idempotency_capacity_refusals_total", "counter",
           "keyed requests refused (503 idempotency_capacity) because a key table was full of "
           "keys still inside their window");
    for (u32 g = 0; g < engine.groups(); ++g) {
      line(out, "paygate_idempotency_capacity_refusals_total{{group=\"{}\"}} {}\n", g,
           engine.group(g).stats().key_capacity_refusals.load(std::memory_order_relaxed));
    }
    header(out, "paygate_between_groups_finished_total", "counter",
           "transfers between groups finished after the gateway left them (at start and by the "
           "finisher)");
    line(out, "paygate_between_groups_finished_total {}\n",
         engine.between_groups_at_start().posted + engine.between_groups_at_start().voided +
             engine.between_groups_finished());
    if (const BetweenGroupsFinisher* finisher = engine.finisher()) {
      header(out, "paygate_between_groups_problems_total", "counter",
             "looks of the finisher that left transfers unfinished (logged with the transfer: "
             "event=between_groups_unfinished)");
      line(out, "paygate_between_groups_problems_total {}\n", finisher->problems());
      header(out, "paygate_between_groups_unsettled", "gauge",
             "transfers between groups not yet settled, at the finisher's last look");
      line(out, "paygate_between_groups_unsettled {}\n", finisher->unsettled());
      const u64 oldest = finisher->oldest_unsettled_at_ns();
      const u64 now = static_cast<u64>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                           std::chrono::system_clock::now().time_since_epoch())
                                           .count());
      header(out, "paygate_between_groups_oldest_unsettled_seconds", "gauge",
             "age of the oldest transfer between groups not yet settled (0: none)");
      line(out, "paygate_between_groups_oldest_unsettled_seconds {}\n",
           oldest == 0 || oldest > now ? 0.0 : static_cast<double>(now - oldest) / 1e9);
    }
    header(out, "paygate_group_batch_requests", "histogram",
           "requests taken from the ring at once");
    for (u32 g = 0; g < engine.groups(); ++g) {
      histogram(out, "paygate_group_batch_requests", fmt::format("group=\"{}\"", g),
                engine.group(g).stats().batch_requests, kBatchBounds, 1.0);
    }
    header(out, "paygate_journal_written_bytes_total", "counter",
           "bytes the journal wrote (packed records: docs/JOURNAL.md)");
    for (u32 g = 0; g < engine.groups(); ++g) {
      line(out, "paygate_journal_written_bytes_total{{group=\"{}\"}} {}\n", g,
           engine.group(g).journal_written_bytes());
    }
    header(out, "paygate_journal_segments_total", "counter",
           "journal segments begun, by how: prepared (zero-filled ahead of need) or allocated "
           "(fallocate at roll-over: the first, or none was ready)");
    for (u32 g = 0; g < engine.groups(); ++g) {
      const journal::Writer& journal = engine.group(g).journal();
      const u64 prepared = journal.segments_prepared();
      line(out, "paygate_journal_segments_total{{group=\"{}\",how=\"prepared\"}} {}\n", g,
           prepared);
      line(out, "paygate_journal_segments_total{{group=\"{}\",how=\"allocated\"}} {}\n", g,
           journal.segments_created() - std::min(prepared, journal.segments_created()));
    }
    header(out, "paygate_journal_segment_prepare_failures_total", "counter",
           "preparations of the next journal segment that failed (the roll-over allocated)");
    for (u32 g = 0; g < engine.groups(); ++g) {
      line(out, "paygate_journal_segment_prepare_failures_total{{group=\"{}\"}} {}\n", g,
           engine.group(g).journal().prepare_failures());
    }
    header(out, "paygate_journal_fdatasync_seconds", "histogram", "journal write + fdatasync time");
    for (u32 g = 0; g < engine.groups(); ++g) {
      histogram(out, "paygate_journal_fdatasync_seconds", fmt::format("group=\"{}\"", g),
                engine.group(g).sync_ns(), kLatencyBoundsS, 1e9);
    }
    header(out, "paygate_snapshot_pause_seconds", "histogram",
           "how long each snapshot stopped its group (the fork)");
    for (u32 g = 0; g < engine.groups(); ++g) {
      histogram(out, "paygate_snapshot_pause_seconds", fmt::format("group=\"{}\"", g),
                engine.group(g).snapshot_pause_ns(), kLatencyBoundsS, 1e9);
    }
  }

  if (s.http != nullptr) {
    header(out, "paygate_http_stage_seconds", "histogram",
           "where HTTP requests wait: edge (parse, authenticate, decode, before the first group "
           "step), and per step queued (in the group's ring), durable (in the group until "
           "journaled and released, waiting for journal room included), wake (until an IO "
           "thread takes the answer)");
    for (std::size_t i = 0; i < HttpMetrics::kStageNames.size(); ++i) {
      histogram(out, "paygate_http_stage_seconds",
                fmt::format("stage=\"{}\"", HttpMetrics::kStageNames[i]), s.http->stage(i),
                kLatencyBoundsS, 1e9);
    }
    header(out, "paygate_http_request_duration_seconds", "histogram",
           "HTTP requests by route and status, from parsed to answered");
    for (std::size_t r = 0; r < kRouteCount; ++r) {
      for (std::size_t i = 0; i < HttpMetrics::kStatuses.size(); ++i) {
        const Histogram& h = s.http->latency(static_cast<Route>(r), i);
        if (h.count() == 0) continue;
        histogram(out, "paygate_http_request_duration_seconds",
                  fmt::format("route=\"{}\",status=\"{}\"", route_name(static_cast<Route>(r)),
                              HttpMetrics::kStatuses[i]),
                  h, kLatencyBoundsS, 1e9);
      }
    }
    header(out, "paygate_quota_refusals_total", "counter",
           "requests refused because a merchant reached a quota (422 quota_accounts, "
           "quota_holds, quota_idempotency_keys, quota_orders), by quota");
    for (const auto& [quota, label] :
         {std::pair{Quota::accounts, "accounts"}, std::pair{Quota::holds, "holds"},
          std::pair{Quota::idempotency_keys, "idempotency_keys"},
          std::pair{Quota::orders, "orders"}}) {
      line(out, "paygate_quota_refusals_total{{quota=\"{}\"}} {}\n", label,
           s.http->quota_refusals[static_cast<u32>(quota)].load(std::memory_order_relaxed));
    }
    header(out, "paygate_rate_limited_total", "counter",
           "requests refused by a merchant's rate limit");
    line(out, "paygate_rate_limited_total {}\n",
         s.http->rate_limited.load(std::memory_order_relaxed));
    header(out, "paygate_auth_failures_total", "counter", "requests refused for their credentials");
    line(out, "paygate_auth_failures_total {}\n",
         s.http->auth_failures.load(std::memory_order_relaxed));
    header(out, "paygate_auth_failures_limited_total", "counter",
           "requests turned away (429) because their address failed authentication too often");
    line(out, "paygate_auth_failures_limited_total {}\n", s.auth_limited);
    header(out, "paygate_auth_failure_addresses", "gauge",
           "client addresses whose failed authentications are being counted");
    line(out, "paygate_auth_failure_addresses {}\n", s.auth_addresses);
    header(out, "paygate_http_connections_open", "gauge", "HTTP connections open");
    line(out, "paygate_http_connections_open {}\n",
         s.http->connections_open.load(std::memory_order_relaxed));
    header(out, "paygate_http_connections_refused_total", "counter",
           "connections closed at once: the connection limit was reached");
    line(out, "paygate_http_connections_refused_total {}\n",
         s.http->connections_refused.load(std::memory_order_relaxed));
    header(out, "paygate_accept_failures_total", "counter",
           "accepts that failed (out of files or memory), each followed by a pause "
           "(HTTP and binary listeners)");
    line(out, "paygate_accept_failures_total {}\n",
         s.http->accept_failures.load(std::memory_order_relaxed));
    header(out, "paygate_http_answers_unread_bytes", "gauge",
           "answers rendered and not yet taken by their sockets, over every connection (each "
           "stops taking requests past 1 MiB of its own)");
    line(out, "paygate_http_answers_unread_bytes {}\n",
         s.http->answers_unread_bytes.load(std::memory_order_relaxed));
    header(out, "paygate_http_connections_timed_out_total", "counter",
           "connections closed for being idle or too slow to send a request");
    line(out, "paygate_http_connections_timed_out_total {}\n",
         s.http->connections_timed_out.load(std::memory_order_relaxed));
  }
  header(out, "paygate_signature_replay_cache_refusals_total", "counter",
         "signed requests refused (503 replay_cache_full): the replay cache was full of "
         "signatures that could still be replayed");
  line(out, "paygate_signature_replay_cache_refusals_total {}\n", s.replay_refusals);
  header(out, "paygate_signature_replay_cache_entries", "gauge",
         "signatures remembered by the replay cache");
  line(out, "paygate_signature_replay_cache_entries {}\n", s.replay_entries);
  header(out, "paygate_binary_frames_total", "counter", "binary-protocol frames answered");
  line(out, "paygate_binary_frames_total {}\n", s.binary_frames);
}

}  // namespace paygate::api
