// The gateway's own measurements, and the Prometheus text page (/metrics) that
// shows them together with every group's.
#pragma once

#include <array>
#include <atomic>
#include <string>
#include <string_view>

#include "base/histogram.h"
#include "base/types.h"
#include "ledger/owner_quotas.h"

namespace paygate {
class Engine;
}
namespace paygate::history {
class HistoryWorker;
}
namespace paygate::publish {
class KafkaPublisher;
}  // namespace paygate::publish
namespace paygate::cache {
class OrderCache;
class OrderFeed;
}  // namespace paygate::cache
namespace paygate::webhooks {
class Deliverer;
}

namespace paygate::api {

enum class Route : u8 {
  healthz,
  readyz,
  metrics,
  merchants_create,
  merchants_get,
  merchants_keys,
  merchants_quotas_get,
  merchants_quotas_set,
  merchants_risk_get,
  merchants_risk_set,
  accounts_create,
  accounts_get,
  accounts_entries,
  transfers_create,
  transfers_get,
  transfers_post,
  transfers_void,
  batch,
  events,
  users_create,
  users_get,
  users_keys,
  providers_create,
  providers_get,
  providers_keys,
  withdrawals_create,
  withdrawals_get,
  withdrawals_result,
  orders_create,
  orders_list,
  orders_get,
  orders_checkout,
  orders_result,
  orders_resolve,
  orders_cancel,
  orders_refunds,
  webhook_endpoints_create,
  webhook_endpoints_list,
  webhook_endpoints_get,
  webhook_endpoints_update,
  webhook_endpoints_delete,
  webhook_endpoints_rotate,
  webhook_deliveries_list,
  webhook_deliveries_get,
  webhook_deliveries_resend,
  unknown,
};
inline constexpr std::size_t kRouteCount = static_cast<std::size_t>(Route::unknown) + 1;
std::string_view route_name(Route route) noexcept;

class HttpMetrics {
 public:
  static constexpr std::array<unsigned, 15> kStatuses = {200, 201, 400, 401, 403, 404, 405, 409,
                                                         413, 415, 422, 429, 501, 503, 500};

  void record(Route route, unsigned status, u64 latency_ns) noexcept {
    latency_[static_cast<std::size_t>(route)][slot(status)].record(latency_ns);
  }
  const Histogram& latency(Route route, std::size_t status_slot) const noexcept {
    return latency_[static_cast<std::size_t>(route)][status_slot];
  }

  // Where a request's time goes (paygate_http_stage_seconds): the edge's work before
  // its first group step (parse, authenticate, decode); then, for each step, its wait
  // in the group's ring, its time in the group until durable and released (waiting
  // for room in the journal's stage included), and the wait for an IO thread to take
  // the answer.
  enum class Stage : u8 { edge, queued, durable, wake };
  static constexpr std::array<std::string_view, 4> kStageNames = {"edge", "queued", "durable",
                                                                  "wake"};
  void record_stage(Stage stage, u64 ns) noexcept {
    stages_[static_cast<std::size_t>(stage)].record(ns);
  }
  const Histogram& stage(std::size_t index) const noexcept { return stages_[index]; }

  // Requests answered with a quota's refusal (ledger/owner_quotas.h), by Quota.
  void count_refusal(ResultCode code) noexcept {
    for (u32 q = 0; q < kQuotaKinds; ++q) {
      if (code == quota_refusal(static_cast<Quota>(q))) {
        quota_refusals[q].fetch_add(1, std::memory_order_relaxed);
      }
    }
  }
  std::array<std::atomic<u64>, kQuotaKinds> quota_refusals{};
  std::atomic<u64> rate_limited{0};
  std::atomic<u64> auth_failures{0};
  std::atomic<u64> connections_open{0};
  std::atomic<u64> connections_refused{0};
  std::atomic<u64> accept_failures{0};  // both listeners: out of files or memory
  std::atomic<u64> connections_timed_out{0};
  // Answers rendered and not yet taken by their sockets, over every connection (each
  // stops taking requests past 1 MiB of its own).
  std::atomic<u64> answers_unread_bytes{0};

 private:
  static std::size_t slot(unsigned status) noexcept {
    for (std::size_t i = 0; i + 1 < kStatuses.size(); ++i) {
      if (kStatuses[i] == status) return i;
    }
    return kStatuses.size() - 1;  // anything else is counted as 500
  }
  std::array<std::array<Histogram, kStatuses.size()>, kRouteCount> latency_;
  std::array<Histogram, kStageNames.size()> stages_;
};

struct MetricsSources {
  Engine* engine = nullptr;
  history::HistoryWorker* history = nullptr;       // null: no history store
  webhooks::Deliverer* webhooks = nullptr;         // null: webhooks off
  const publish::KafkaPublisher* kafka = nullptr;  // null: no publishing
  const cache::OrderCache* order_cache = nullptr;  // null: no Redis
  const cache::OrderFeed* order_feed = nullptr;    // null: no feed
  const HttpMetrics* http = nullptr;
  u64 replay_refusals = 0;
  u64 replay_entries = 0;
  u64 auth_limited = 0;    // requests turned away for their address's failures
  u64 auth_addresses = 0;  // addresses whose failures are followed
  u64 merchants = 0;
  u64 binary_frames = 0;
  bool ready = false;
};

// Appends the whole Prometheus text exposition (version 0.0.4) to `out`.
void render_metrics(const MetricsSources& sources, std::string& out);

}  // namespace paygate::api
