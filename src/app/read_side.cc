#include "app/read_side.h"

#include <algorithm>
#include <chrono>
#include <utility>
#include <vector>

#include "api/render.h"
#include "base/assert.h"
#include "base/clock.h"
#include "base/log.h"

namespace paygate {

namespace {
constexpr u64 kReopenIntervalMaxNs = 300 * kNanosPerSecond;
}  // namespace

ReadSide::ReadSide(const ReadSideConfig& config, const std::filesystem::path& data_dir,
                   Engine& engine, api::Service& service, const api::MerchantRegistry& merchants)
    : config_(config), engine_(engine), service_(service), merchants_(merchants) {
  if (config_.history.store.file.empty()) config_.history.store.file = data_dir / "history.sqlite";
  if (config_.webhooks.file.empty()) config_.webhooks.file = data_dir / "webhooks.sqlite";
  if (config_.kafka.watermark_file.empty())
    config_.kafka.watermark_file = data_dir / "kafka.watermarks";
}

ReadSide::~ReadSide() {
  stop_opening();
  stop();
}

void ReadSide::open() {
  if (!config_.history.enabled) {
    if (config_.webhooks.enabled) {
      PG_LOG_WARN(
          "event=webhooks_off message=\"webhooks need the history store ([history] enabled)\"");
    }
    if (!config_.kafka.brokers.empty()) {
      PG_LOG_WARN(
          "event=kafka_off message=\"Kafka publishing needs the history store ([history] "
          "enabled)\"");
    }
    if (!config_.redis.redis.address.empty()) {
      PG_LOG_WARN(
          "event=redis_off message=\"Redis order reads need the history store ([history] "
          "enabled)\"");
    }
    return;
  }
  Result<std::unique_ptr<history::HistoryWorker>> opened =
      history::HistoryWorker::open(config_.history, engine_);
  // A store that cannot be reached yet (MariaDB starting after paygate) is tried
  // again, a second apart, for open_retry_s; a refusal (settings, schema) is not.
  for (const u64 until = steady_ns() + config_.history.open_retry_ns;
       !opened.ok() && opened.status().code() == StatusCode::io_error && steady_ns() < until;) {
    PG_LOG_WARN("event=history_open_retry message=\"{}\"", opened.status().message());
    std::this_thread::sleep_for(std::chrono::seconds(1));
    opened = history::HistoryWorker::open(config_.history, engine_);
  }
  if (opened.ok()) {
    start(std::move(opened).value());
    return;
  }
  // The ledger serves without it: history is a projection, rebuilt from the journal.
  // Retention keeps each group's journal for it meanwhile (within
  // retention_segments_max), so that the store, once open, catches up.
  held_ = std::make_unique<std::atomic<u64>[]>(engine_.groups());
  for (u32 g = 0; g < engine_.groups(); ++g) {
    held_[g].store(history::unknown_reader_floor(engine_.group(g).config().dir),
                   std::memory_order_relaxed);
  }
  hold_journals();
  const bool again = config_.history.reopen_interval_ns != 0;
  PG_LOG_ERROR(
      "event=history_failed message=\"the history store is off until it can be opened ({}; "
      "journal retention holds each group's segments for it, up to retention_segments_max): "
      "{}\"",
      again ? "tried again in the background" : "at the next start", opened.status().message());
  if (again) opener_ = std::thread([this] { keep_opening(); });
}

void ReadSide::hold_journals() {
  for (u32 g = 0; g < engine_.groups(); ++g)
    engine_.group(g).set_retention_floor(&held_[g], config_.history.retention_segments_max);
}

void ReadSide::keep_opening() {
  u64 wait_ns = config_.history.reopen_interval_ns;
  for (u32 tries = 1;; ++tries) {
    {
      std::unique_lock lock(mutex_);
      if (wake_.wait_for(lock, std::chrono::nanoseconds(wait_ns), [&] { return stopping_; })) {
        return;
      }
    }
    Result<std::unique_ptr<history::HistoryWorker>> opened =
        history::HistoryWorker::open(config_.history, engine_);
    if (opened.ok()) {
      std::lock_guard lock(mutex_);
      if (stopping_) {
        // Stopping meanwhile: the worker, never started, closes with `opened`, and the
        // groups' retention, which it pointed at its own floors, goes back to ours.
        hold_journals();
        return;
      }
      PG_LOG_INFO("event=history_reopened tries={}", tries);
      start(std::move(opened).value());
      return;
    }
    wait_ns = std::min(std::max(wait_ns * 2, wait_ns), kReopenIntervalMaxNs);
    PG_LOG_WARN("event=history_reopen_failed tries={} next_in_s={} message=\"{}\"", tries,
                wait_ns / kNanosPerSecond, opened.status().message());
  }
}

void ReadSide::start(std::unique_ptr<history::HistoryWorker> history) {
  history_ = std::move(history);
  history_->start();
  start_webhooks();
  start_kafka();
  start_redis();
  // Last: once the service sees the store (paygate_history_store_open 1), what reads
  // it is attached too.
  service_.attach_history(history_.get());
}

void ReadSide::start_webhooks() {
  // Webhooks read the history store's outbox: on only with it (docs/WEBHOOKS.md).
  if (!config_.webhooks.enabled) return;
  std::vector<u64> journals_at;
  for (u32 g = 0; g < engine_.groups(); ++g)
    journals_at.push_back(engine_.group(g).durable_sequence());
  Result<std::unique_ptr<webhooks::Deliverer>> opened = webhooks::Deliverer::open(
      config_.webhooks, history_->store(), journals_at,
      [this](const history::OrderEventRow& event, const history::OrderRow* texts) {
        return service_.webhook_event_body(event, texts);
      },
      [this](u64 merchant, u64 now_s) {
        const api::MerchantRef m = merchants_.find(merchant);
        return m != nullptr ? m->signing_secrets(now_s) : std::vector<std::string>{};
      });
  if (!opened.ok()) {
    PG_LOG_ERROR("event=webhooks_failed message=\"webhooks are off until this is fixed: {}\"",
                 opened.status().message());
    return;
  }
  deliverer_ = std::move(opened).value();
  service_.attach_webhooks(deliverer_.get());
  deliverer_->start();
}

void ReadSide::start_kafka() {
  // Kafka is fed from the history store (docs/KAFKA.md): on only with it.
  if (config_.kafka.brokers.empty()) return;
  Result<std::unique_ptr<publish::KafkaPublisher>> opened = publish::KafkaPublisher::open(
      config_.kafka, config_.history.store, engine_.groups(),
      publish::KafkaRenderers{
          .event = [](u32 group, const LedgerEvent& e, std::string& key,
                      std::string& value) { api::render_event_message(key, value, group, e); },
          .order_change =
              [](u32 group, const history::OrderChangeRow& change, std::string& key,
                 std::string& value) {
                api::render_order_change_message(key, value, group, change);
              }});
  if (!opened.ok()) {
    PG_LOG_ERROR("event=kafka_failed message=\"Kafka publishing is off until this is fixed: {}\"",
                 opened.status().message());
    return;
  }
  kafka_ = std::move(opened).value();
  service_.attach_kafka(kafka_.get());
  kafka_->start();
}

void ReadSide::start_redis() {
  // Orders read through Redis, fed from the history store (docs/REDIS.md): on only
  // with it. A Redis that cannot be reached now is not a failure: reads go to the
  // store until it can.
  if (config_.redis.redis.address.empty()) return;
  Result<std::unique_ptr<cache::OrderCache>> opened = cache::OrderCache::open(config_.redis);
  PG_ASSERT(opened.ok());  // (its settings were checked with the configuration's)
  order_cache_ = std::move(opened).value();
  if (config_.feed.enabled) {
    Result<std::unique_ptr<cache::OrderFeed>> feed = cache::OrderFeed::open(
        config_.feed, *order_cache_, config_.history.store, engine_.groups());
    if (!feed.ok()) {
      PG_LOG_ERROR(
          "event=order_feed_failed message=\"the order feed is off until this is fixed: {}\"",
          feed.status().message());
    } else {
      order_feed_ = std::move(feed).value();
      order_feed_->start();
    }
  }
  service_.attach_order_cache(order_cache_.get(), order_feed_.get());
  PG_LOG_INFO("event=redis_on address={} feed={}", config_.redis.redis.address,
              order_feed_ != nullptr);
}

void ReadSide::stop_opening() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (opener_.joinable()) opener_.join();
}

void ReadSide::stop() {
  // (Stopped, not detached: the service keeps pointers to them, and the server's
  // last answers may still read them.)
  if (deliverer_) deliverer_->stop();
  if (kafka_) kafka_->stop();
  if (order_feed_) order_feed_->stop();
  if (history_) history_->stop();
}

}  // namespace paygate
