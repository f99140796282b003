// The server's read side (docs/HISTORY.md): the history store's worker and what reads
// its store — webhook delivery, the Kafka publisher, order reads through Redis —
// started together once the store opens.
//
// The ledger never waits for it. A store that cannot be opened at start (a MariaDB
// server down, a full disk) leaves the ledger serving without history; retention
// keeps each group's journal for the store meanwhile (within retention_segments_max),
// and a background thread tries to open it again, from reopen_interval_s doubling up
// to five minutes, until it opens: then the whole read side starts and catches up,
// with no restart.
#pragma once

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <memory>
#include <mutex>
#include <thread>

#include "api/merchants.h"
#include "api/service.h"
#include "cache/order_cache.h"
#include "cache/order_feed.h"
#include "history/worker.h"
#include "pipeline/engine.h"
#include "publish/kafka_publisher.h"
#include "webhooks/deliverer.h"

namespace paygate {

struct ReadSideConfig {
  history::HistoryConfig history;    // file: <data dir>/history.sqlite unless set
  webhooks::WebhookConfig webhooks;  // file: <data dir>/webhooks.sqlite unless set
  publish::KafkaConfig kafka;        // watermark_file: <data dir>/kafka.watermarks unless set
  cache::OrderCacheConfig redis;     // [redis] address empty or absent: no cache
  cache::OrderFeedConfig feed;
};

class ReadSide {
 public:
  ReadSide(const ReadSideConfig& config, const std::filesystem::path& data_dir, Engine& engine,
           api::Service& service, const api::MerchantRegistry& merchants);
  ~ReadSide();
  ReadSide(const ReadSide&) = delete;
  ReadSide& operator=(const ReadSide&) = delete;

  // Before the groups take work: opens the store (trying an unreachable one again for
  // open_retry_s) and starts what reads it, or, if it cannot, holds the journal for it
  // and goes on trying in the background.
  void open();
  // Stops trying to open the store (call before the engine stops: nothing starts after).
  // An opening under way is waited for: as long as a start's would take (a MariaDB
  // connect timeout, each group's projector reading up to where its store stood).
  void stop_opening();
  // After the engine stopped: stops every worker.
  void stop();

 private:
  // Starts the worker and each reader of its store, and hands them to the service.
  void start(std::unique_ptr<history::HistoryWorker> history);
  void start_webhooks();
  void start_kafka();
  void start_redis();
  void keep_opening();  // the background thread
  // Points each group's retention at held_ (which must be filled).
  void hold_journals();

  ReadSideConfig config_;
  Engine& engine_;
  api::Service& service_;
  const api::MerchantRegistry& merchants_;
  // Retention's floors while the store is not open (the journal from the oldest
  // snapshot on disk at start on, for the store's next opening).
  std::unique_ptr<std::atomic<u64>[]> held_;

  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread opener_;

  std::unique_ptr<history::HistoryWorker> history_;
  std::unique_ptr<webhooks::Deliverer> deliverer_;
  std::unique_ptr<publish::KafkaPublisher> kafka_;
  std::unique_ptr<cache::OrderCache> order_cache_;
  std::unique_ptr<cache::OrderFeed> order_feed_;
};

}  // namespace paygate
