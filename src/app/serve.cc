#include "app/serve.h"

#include <fmt/format.h>
#include <signal.h>
#include <sys/stat.h>

#include <toml++/toml.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <limits>
#include <thread>

#include "api/auth.h"
#include "api/binary_server.h"
#include "api/crypto.h"
#include "api/http_server.h"
#include "api/merchants.h"
#include "api/owner_index.h"
#include "api/service.h"
#include "base/durable_file.h"
#include "base/log.h"
#include "pipeline/engine.h"

namespace paygate {
namespace {

struct Settings {
  api::HttpConfig http;
  api::BinaryConfig binary;
  api::ServiceConfig service;
  api::AuthConfig auth;
  EngineConfig engine = served_engine_defaults();
  u64 drain_timeout_ms = 10'000;

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
    return engine;
  }
};

bool split_address(const std::string& text, std::string* host, u16* port, std::string* error) {
  const std::size_t colon = text.rfind(':');
  unsigned value = 0;
  if (colon == std::string::npos || std::sscanf(text.c_str() + colon + 1, "%u", &value) != 1 ||
      value > 65535) {
    *error = fmt::format("\"{}\" is not HOST:PORT", text);
    return false;
  }
  *host = text.substr(0, colon);
  *port = static_cast<u16>(value);
  return true;
}

// Reads the TOML file into settings. Every key must be known: a misspelt key is an
// error, not a silent default.
bool apply_config_file(const std::filesystem::path& file, Settings* s, std::string* error) {
  toml::table root;
  try {
    root = toml::parse_file(file.string());
  } catch (const toml::parse_error& e) {
    *error = fmt::format("{}: {}", file.string(), e.description());
    return false;
  }
  LedgerConfig& ledger = s->engine.group.ledger;
  GroupConfig& group = s->engine.group;
  u64 window_s = ledger.idempotency_window_ns / kNanosPerSecond;
  u64 tick_ms = group.tick_interval_ns / 1'000'000;
  u64 sync_gap_us = group.journal_sync_gap_ns / 1'000;
  u64 sync_gap_quiet_us = group.journal_sync_gap_quiet_ns / 1'000;
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
      {"auth", "window_s", unsigned_into(&s->auth.window_s)},
      {"auth", "replay_cache_max", unsigned_into(&s->auth.replay_cache_max)},
      {"ledger", "accounts_max", unsigned_into(&ledger.accounts_max)},
      {"ledger", "pending_max", unsigned_into(&ledger.pending_max)},
      {"ledger", "recent_transfers_max", unsigned_into(&ledger.recent_transfers_max)},
      {"ledger", "idempotency_keys_max", unsigned_into(&ledger.idempotency_keys_max)},
      {"ledger", "idempotency_window_s", unsigned_into(&window_s)},
      {"ledger", "signature_keys_max", unsigned_into(&ledger.signature_keys_max, 1)},
      {"group", "ring_capacity", unsigned_into(&group.ring_capacity)},
      {"group", "events_max", unsigned_into(&group.events_max)},
      {"group", "tick_interval_ms", unsigned_into(&tick_ms)},
      {"group", "snapshot_every_commands", unsigned_into(&group.snapshot_every_commands)},
      {"group", "snapshots_kept", unsigned_into(&group.snapshots_kept)},
      {"group", "journal_segment_bytes", unsigned_into(&group.journal_segment_bytes)},
      {"group", "journal_sync_gap_us", unsigned_into(&sync_gap_us)},
      {"group", "journal_sync_gap_commands", unsigned_into(&group.journal_sync_gap_commands)},
      {"group", "journal_sync_gap_quiet_us", unsigned_into(&sync_gap_quiet_us)},
      {"server", "drain_timeout_ms", unsigned_into(&s->drain_timeout_ms)},
  };
  for (const auto& [section_name, section] : root) {
    const toml::table* table = section.as_table();
    if (table == nullptr) {
      *error = fmt::format("{}: \"{}\" must be a [section]", file.string(), section_name.str());
      return false;
    }
    for (const auto& [key_name, value] : *table) {
      const Key* key = nullptr;
      for (const Key& k : keys) {
        if (section_name.str() == k.section && key_name.str() == k.name) key = &k;
      }
      if (key == nullptr) {
        *error = fmt::format("{}: unknown setting {}.{}", file.string(), section_name.str(),
                             key_name.str());
        return false;
      }
      if (!key->set(value)) {
        *error = fmt::format("{}: {}.{} must be a positive number", file.string(),
                             section_name.str(), key_name.str());
        return false;
      }
    }
  }
  ledger.idempotency_window_ns = window_s * kNanosPerSecond;
  // The ledger keeps signatures for twice the most the timestamp check allows
  // (LedgerConfig::signature_window_ns, fixed so that journals stay comparable).
  if (s->auth.window_s == 0 || 2 * s->auth.window_s * kNanosPerSecond > ledger.signature_window_ns) {
    *error = fmt::format("{}: auth.window_s must be 1 to {}", file.string(),
                         ledger.signature_window_ns / kNanosPerSecond / 2);
    return false;
  }
  group.tick_interval_ns = tick_ms * 1'000'000;
  group.journal_sync_gap_ns = sync_gap_us * 1'000;
  group.journal_sync_gap_quiet_ns = sync_gap_quiet_us * 1'000;
  return true;
}

// A secret kept in the data dir (mode 0600): read it, or make one the first time.
// Returns empty on failure. `created` says whether it was made now.
std::string load_or_create_secret(const std::filesystem::path& file, std::string_view prefix,
                                  bool* created, std::string* error) {
  *created = false;
  if (auto text = read_file(file, error)) {
    while (!text->empty() && (text->back() == '\n' || text->back() == '\r'))
      text->pop_back();
    if (text->empty()) *error = fmt::format("{} is empty", file.string());
    return *text;
  }
  if (!error->empty()) return {};
  std::string secret = std::string(prefix) + api::random_hex(32);
  if (!write_file_durably(file, secret + "\n", 0600, error)) return {};
  *created = true;
  return secret;
}

sigset_t stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

}  // namespace

int run_serve(const ServeOptions& options) {
  // Block the stop signals before any thread starts, so every thread inherits the
  // mask and only the main thread's sigwait() sees them.
  const sigset_t signals = stop_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  Settings s;
  std::string error;
  s.engine.data_dir = options.data_dir;
  s.engine.groups = options.groups;
  if (options.groups == 0 || options.groups > kGroupMax + 1) {
    PG_LOG_ERROR("event=bad_config message=\"--groups must be 1 to {}\"", kGroupMax + 1);
    return 2;
  }
  if (!split_address(options.http, &s.http.address, &s.http.port, &error) ||
      (!options.binary.empty() &&
       !split_address(options.binary, &s.binary.address, &s.binary.port, &error)) ||
      (!options.config_file.empty() && !apply_config_file(options.config_file, &s, &error))) {
    PG_LOG_ERROR("event=bad_config message=\"{}\"", error);
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
  std::error_code ec;
  std::filesystem::create_directories(options.data_dir, ec);
  if (ec) {
    PG_LOG_ERROR("event=bad_data_dir dir={} message=\"{}\"", options.data_dir.string(),
                 ec.message());
    return 2;
  }

  bool created = false;
  s.auth.admin_token = options.admin_token;
  if (s.auth.admin_token.empty()) {
    s.auth.admin_token =
        load_or_create_secret(options.data_dir / "admin_token", "pgadm_", &created, &error);
    if (s.auth.admin_token.empty()) {
      PG_LOG_ERROR("event=admin_token_failed message=\"{}\"", error);
      return 2;
    }
    if (created) {
      std::printf("paygate: admin token (shown once; kept in %s, mode 0600):\n  %s\n",
                  (options.data_dir / "admin_token").c_str(), s.auth.admin_token.c_str());
      std::fflush(stdout);
    }
  }
  s.service.idempotency_secret =
      load_or_create_secret(options.data_dir / "server_key", "", &created, &error);
  if (s.service.idempotency_secret.empty()) {
    PG_LOG_ERROR("event=server_key_failed message=\"{}\"", error);
    return 2;
  }

  auto merchants = api::MerchantRegistry::open(options.data_dir / "merchants.json", s.engine.region,
                                               s.engine.groups, &error);
  if (!merchants) {
    PG_LOG_ERROR("event=merchants_failed message=\"{}\"", error);
    return 2;
  }
  api::Authenticator auth(*merchants, s.auth);
  api::OwnerIndex owners(IdPrefix{s.engine.region, 0}, s.engine.groups,
                         s.engine.group.ledger.accounts_max);
  api::Service service(*merchants, auth, owners, s.service);

  // Listen first: /healthz answers and /readyz says "not yet" while groups recover.
  api::IoRuntime runtime(s.http.io_threads);
  api::HttpServer http(service, s.http, runtime);
  if (!http.listen(&error)) {
    PG_LOG_ERROR("event=listen_failed message=\"{}\"", error);
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
    if (!binary->listen(&error)) {
      PG_LOG_ERROR("event=listen_failed message=\"{}\"", error);
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
  std::unique_ptr<Engine> engine = Engine::open(s.engine, &error);
  if (!engine) {
    PG_LOG_ERROR("event=recovery_failed message=\"{}\"", error);
    runtime.stop();
    if (binary_runtime) binary_runtime->stop();
    return 3;
  }
  api::Service::index_owners(*engine, owners);
  engine->start();
  if (const BetweenGroupsReport& report = engine->between_groups_at_start(); report.unsettled > 0) {
    PG_LOG_INFO("event=between_groups_finished unsettled={} posted={} voided={}", report.unsettled,
                report.posted, report.voided);
    if (!report.problem.empty()) {
      PG_LOG_ERROR("event=between_groups_unfinished message=\"{}\"", report.problem);
    }
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
  engine->stop();  // answers anything still taken, syncs, joins
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
