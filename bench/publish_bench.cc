// publish_bench: how fast the Kafka publisher (docs/KAFKA.md) publishes the history
// store's rows to librdkafka's mock cluster (three brokers in this process, on
// 127.0.0.1, topics replicated three times).
//
// A store is filled with --events ledger events over --groups groups (one event per
// command; an order change every --order-every commands), then each round a fresh
// publisher (no watermark file) on a fresh cluster publishes all of it, timed from
// start until every group's watermark is acknowledged. The messages are the server's
// own (api::render_event_message, render_order_change_message). As a baseline in the
// same run, the same rows are read from the store and rendered without Kafka.
// Prints the median of --rounds rounds.
//
//   ./build/bench/publish_bench [--events 1000000] [--groups 2] [--rounds 3] [--linger-ms 5]
//        [--batch-rows 20000] [--quick]
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "api/render.h"
#include "base/log.h"
#include "base/temp_dir.h"
#include "progress.h"
#include "publish/kafka_publisher.h"
#include "publish/kafka_test_support.h"

namespace paygate {
namespace {

struct Options {
  u64 events = 1'000'000;
  u32 groups = 2;
  u32 order_every = 10;
  u32 rounds = 3;
  u32 linger_ms = publish::KafkaConfig{}.linger_ms;
  u32 batch_rows = publish::KafkaConfig{}.batch_rows;
};

publish::KafkaRenderers server_renderers() {
  return publish::KafkaRenderers{
      .event = [](u32 group, const LedgerEvent& e, std::string& key,
                  std::string& value) { api::render_event_message(key, value, group, e); },
      .order_change =
          [](u32 group, const history::OrderChangeRow& c, std::string& key, std::string& value) {
            api::render_order_change_message(key, value, group, c);
          }};
}

// Rows per group: `commands` commands of one transfer each, an order made every
// order_every commands. Returns the rows written.
u64 fill(history::Store& store, const Options& o, u64 commands) {
  u64 rows = 0;
  constexpr u64 kPerBatch = 50'000;
  for (u32 g = 0; g < o.groups; ++g) {
    for (u64 from = 1; from <= commands; from += kPerBatch) {
      const u64 to = std::min(commands, from + kPerBatch - 1);
      history::Batch batch;
      batch.group = g;
      batch.after = from - 1;
      batch.watermark = to;
      for (u64 s = from; s <= to; ++s) {
        LedgerEvent e;
        e.sequence = s;
        e.kind = LedgerEventKind::transfer_posted;
        e.id = (u64{g} << 48) | s;
        e.debit_account_id = AccountId{(u64{g} << 48) | (1 + s % 1000)};
        e.credit_account_id = AccountId{(u64{g} << 48) | (1 + (s * 7) % 1000)};
        e.amount = 1 + s % 500;
        e.currency = Currency::from("USD");
        e.timestamp_ns = 1'700'000'000'000'000'000 + s * 1000;
        batch.events.push_back(e);
        if (s % o.order_every == 0) {
          Order order;
          order.id = (u64{g} << 48) | s;
          order.merchant = (u64{1} << 46) | 5;
          order.amount = 100;
          order.currency = Currency::from("USD");
          batch.orders.push_back(history::OrderChange{
              .sequence = s, .at_ns = e.timestamp_ns, .created = true, .order = order});
        }
      }
      rows += batch.events.size() + batch.orders.size();
      if (Status written = store.write(batch); !written.ok()) {
        std::fprintf(stderr, "publish_bench: %s\n", written.to_string().c_str());
        std::exit(1);
      }
    }
  }
  return rows;
}

// Reads and renders every row as the publisher does, without Kafka: the baseline.
double read_only_seconds(history::Store& store, const Options& o, u64 commands) {
  const auto started = std::chrono::steady_clock::now();
  const publish::KafkaRenderers render = server_renderers();
  std::string key, value;
  u64 checksum = 0;
  for (u32 g = 0; g < o.groups; ++g) {
    std::optional<EventKey> after;
    for (;;) {
      const auto events = store.events(g, after, 20'000, commands);
      if (!events.ok() || events.value().empty()) break;
      for (const LedgerEvent& e : events.value()) {
        key.clear();
        value.clear();
        render.event(g, e, key, value);
        checksum += value.size();
      }
      after = key_of(events.value().back());
    }
    std::optional<EventKey> changes_after;
    for (;;) {
      const auto changes = store.order_changes(g, changes_after, 20'000, commands);
      if (!changes.ok() || changes.value().empty()) break;
      for (const history::OrderChangeRow& c : changes.value()) {
        key.clear();
        value.clear();
        render.order_change(g, c, key, value);
        checksum += value.size();
      }
      changes_after = EventKey{changes.value().back().sequence, changes.value().back().n};
    }
  }
  if (checksum == 0) std::fprintf(stderr, "publish_bench: nothing read\n");
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
}

int run(const Options& o) {
  TempDir dir("paygate-publish-bench");
  auto opened = history::Store::open(dir.path() / "history.sqlite");
  if (!opened.ok()) {
    std::fprintf(stderr, "publish_bench: %s\n", opened.status().to_string().c_str());
    return 1;
  }
  history::Store& store = *opened.value();
  const u64 commands = o.events / o.groups;
  const u64 rows = fill(store, o, commands);
  std::printf("publish_bench: %llu rows (%llu events, the rest order changes) in %u groups\n",
              static_cast<unsigned long long>(rows),
              static_cast<unsigned long long>(commands * o.groups), o.groups);
  std::vector<double> publish_rates, read_rates;
  for (u32 round = 0; round < o.rounds; ++round) {
    const double read_s = read_only_seconds(store, o, commands);
    publish::testing::MockCluster cluster({"bench.ledger", "bench.orders"},
                                          static_cast<std::int32_t>(o.groups));
    publish::KafkaConfig config;
    config.brokers = cluster.brokers();
    config.topic_prefix = "bench.";
    config.watermark_file = dir.path() / "kafka.watermarks";
    config.poll_interval_ns = 1'000'000;
    config.linger_ms = o.linger_ms;
    config.batch_rows = o.batch_rows;
    config.thread_nice = 0;
    std::filesystem::remove(config.watermark_file);
    auto publisher = publish::KafkaPublisher::open(config, {.file = dir.path() / "history.sqlite"},
                                                   o.groups, server_renderers());
    if (!publisher.ok()) {
      std::fprintf(stderr, "publish_bench: %s\n", publisher.status().to_string().c_str());
      return 1;
    }
    publish::KafkaPublisher& p = *publisher.value();
    const auto started = std::chrono::steady_clock::now();
    p.start();
    const auto done = [&] {
      for (u32 g = 0; g < o.groups; ++g) {
        if (p.watermark(g) < commands) return false;
      }
      return true;
    };
    {
      Progress progress([&](int second) {
        std::fprintf(stderr, "publish_bench: round %u, %ds: %llu messages acknowledged\n",
                     round + 1, second, static_cast<unsigned long long>(p.messages()));
      });
      // Bounded: a round that takes ten minutes is a broken one.
      const auto deadline = started + std::chrono::minutes(10);
      while (!done() && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    if (!done()) {
      std::fprintf(stderr, "publish_bench: round %u did not finish in 10 minutes\n", round + 1);
      return 1;
    }
    p.stop();
    publish_rates.push_back(static_cast<double>(rows) / seconds);
    read_rates.push_back(static_cast<double>(rows) / read_s);
    std::printf(
        "round %u: published %.0f rows/s (%.2f s), read+render only %.0f rows/s, "
        "ratio %.2f, rewinds %llu\n",
        round + 1, publish_rates.back(), seconds, read_rates.back(),
        publish_rates.back() / read_rates.back(), static_cast<unsigned long long>(p.rewinds()));
  }
  std::sort(publish_rates.begin(), publish_rates.end());
  std::sort(read_rates.begin(), read_rates.end());
  std::printf(
      "publish_bench rows=%llu groups=%u published_rows_per_sec=%.0f "
      "read_render_rows_per_sec=%.0f (medians of %u)\n",
      static_cast<unsigned long long>(rows), o.groups, publish_rates[publish_rates.size() / 2],
      read_rates[read_rates.size() / 2], o.rounds);
  std::printf("publish_bench ok\n");
  return 0;
}

}  // namespace
}  // namespace paygate

int main(int argc, char** argv) {
  paygate::Options o;
  bool quick = false;
  CLI::App app{"publish_bench: the Kafka publisher's rows per second to a mock cluster"};
  app.add_option("--events", o.events, "ledger events in the store, over all groups");
  app.add_option("--groups", o.groups, "groups")->check(CLI::Range(1u, 64u));
  app.add_option("--order-every", o.order_every, "an order change every N commands")
      ->check(CLI::Range(1u, 1'000'000u));
  app.add_option("--rounds", o.rounds, "rounds (the median is printed)")
      ->check(CLI::Range(1u, 99u));
  app.add_option("--linger-ms", o.linger_ms, "[kafka] linger_ms");
  app.add_option("--batch-rows", o.batch_rows, "[kafka] batch_rows")
      ->check(CLI::Range(1u, 1'000'000u));
  app.add_flag("--quick", quick, "a small run (the test suite's)");
  CLI11_PARSE(app, argc, argv);
  if (quick) {
    o.events = 20'000;
    o.rounds = 1;
  }
  if (o.events < o.groups) o.events = o.groups;
  paygate::set_log_level(spdlog::level::warn);
  return paygate::run(o);
}
