// The Kafka publisher (docs/KAFKA.md): one thread that publishes every ledger event
// and every order change the history store holds to Kafka, at least once, in each
// group's order, and resumes after a restart from a durable watermark.
//
// It reads the store, not the journal: the store keeps every event for good, so a
// Kafka cluster that is down for any time costs lag, never data, and never holds the
// ledger or the journal's retention back (the store is the buffer; the journal waits
// only for the store, docs/HISTORY.md).
//
// Messages: topic `<prefix>ledger` (one per ledger event, key: the account it is
// about) and `<prefix>orders` (one per order change, key: the order); partition: the
// group modulo the topic's partitions (counted once per process), so that a group's
// messages keep their order; headers `group`, `sequence`, `index`, `prev_sequence`,
// `prev_index` (decimal: the group's previous row in the topic, 0 0 for its first) and
// `type`. The producer is idempotent and gap-less (acks=all, no local timeout by
// default): no duplicate, reordering or hole inside one producer's life; after a
// restart, a failed delivery or a fatal error it publishes again from its watermark.
// A consumer keeps a message when its prev is the last row it kept of that group and
// topic, and drops it otherwise: that keeps every row once, in order, whatever came
// twice.
//
// Watermark: per group, the last sequence every message up to which Kafka has
// acknowledged; written durably to a small file at most every `watermark_interval`.
//
// Threads: open/start/stop from one thread; the counters from any.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "base/status.h"
#include "history/store.h"

struct rd_kafka_s;
struct rd_kafka_topic_s;
struct rd_kafka_message_s;

namespace paygate::publish {

struct KafkaConfig {
  std::string brokers;  // bootstrap servers, host:port,...; empty: no publishing
  std::string topic_prefix = "paygate.";
  std::filesystem::path watermark_file;  // default: <data dir>/kafka.watermarks
  u32 batch_rows = 20'000;               // rows read from the store per group and round
  u64 poll_interval_ns = 20'000'000;     // how often it looks for more when idle
  u64 watermark_interval_ns = 200'000'000;
  // How long librdkafka tries one message (retrying, a broker down) before it gives up
  // (0: for ever): the publisher then goes back to its watermark and publishes again
  // from there. A timeout may leave a hole that later messages pass (librdkafka's
  // INTRODUCTION.md, "Message timeout considerations"): the prev headers tell.
  u32 message_timeout_ms = 0;
  u32 linger_ms = 5;
  u64 stop_flush_ns = 5'000'000'000;  // how long stop() waits for what is in flight
  int thread_nice = 10;
};

// How a message reads: its key and value. Called on the publisher's thread.
struct KafkaRenderers {
  std::function<void(u32 group, const LedgerEvent& event, std::string& key, std::string& value)>
      event;
  std::function<void(u32 group, const history::OrderChangeRow& change, std::string& key,
                     std::string& value)>
      order_change;
};

class KafkaPublisher {
 public:
  // Opens a reading connection of its own to the history store `store_config`
  // (Store::open_reader: the store must exist), reads the watermark file (none:
  // every group from its first row) and makes the producer. Fails on a configuration
  // librdkafka refuses or an unreadable watermark file; a cluster that cannot be
  // reached is not a failure (it is retried).
  static Result<std::unique_ptr<KafkaPublisher>> open(const KafkaConfig& config,
                                                      const history::StoreConfig& store_config,
                                                      u32 groups, KafkaRenderers renderers);
  ~KafkaPublisher();
  KafkaPublisher(const KafkaPublisher&) = delete;
  KafkaPublisher& operator=(const KafkaPublisher&) = delete;

  void start();
  // Stops reading, waits up to stop_flush for what is in flight, writes the watermark.
  void stop();
  // For tests: stops as a crash would, after the last watermark written and with what
  // is in flight dropped (what reached Kafka is published again after a restart).
  void stop_abruptly();

  u32 groups() const noexcept { return static_cast<u32>(groups_.size()); }
  // Every message of group g up to this sequence is acknowledged (any thread).
  u64 watermark(u32 g) const noexcept {
    return groups_[g]->acknowledged.load(std::memory_order_acquire);
  }
  // ... and is written in the watermark file.
  u64 durable_watermark(u32 g) const noexcept {
    return groups_[g]->durable.load(std::memory_order_acquire);
  }
  u64 messages() const noexcept { return messages_.load(std::memory_order_relaxed); }
  // Messages handed to librdkafka (acknowledged or not yet), and tries to reach the
  // cluster: for tests that wait on them.
  u64 produced() const noexcept { return produced_.load(std::memory_order_relaxed); }
  u64 connect_attempts() const noexcept {
    return connect_attempts_.load(std::memory_order_relaxed);
  }
  u64 delivery_errors() const noexcept { return delivery_errors_.load(std::memory_order_relaxed); }
  u64 rewinds() const noexcept { return rewinds_.load(std::memory_order_relaxed); }
  u64 local_errors() const noexcept { return local_errors_.load(std::memory_order_relaxed); }
  // Whether it knows both topics' partitions (it has reached the cluster once).
  bool connected() const noexcept { return connected_.load(std::memory_order_relaxed); }
  // Groups it stopped publishing because the store starts after their watermark
  // (rows between are in no store: an operator must decide, docs/KAFKA.md).
  u64 gaps() const noexcept { return gaps_.load(std::memory_order_relaxed); }

 private:
  // The messages produced in one round of a group: they acknowledge `through` once
  // every one of them is (and every earlier round's).
  struct Round {
    u32 group = 0;
    u64 through = 0;
    u64 outstanding = 0;
    bool open = true;     // still producing: not done even at outstanding 0
    bool failed = false;  // a message of it was not delivered
  };
  struct Group {
    std::atomic<u64> acknowledged{0};
    std::atomic<u64> durable{0};
    // Publisher thread:
    // The last row produced of each topic (none: the group's first comes next): the
    // next read continues after it, and the next message names it as its prev.
    std::optional<EventKey> events_after, changes_after;
    u64 events_through = 0, changes_through = 0;  // read whole up to here
    std::deque<Round> rounds;  // stable addresses: a message's opaque is its round
    bool checked = false;      // its store's first sequence was compared with the watermark
    bool gap = false;          // ... and it starts after it: not published
  };

  KafkaPublisher(const KafkaConfig& config, KafkaRenderers renderers);
  Status make_producer();
  void destroy_producer(bool purge);
  bool find_partitions();
  // A group's acknowledged watermark and the keys of its last row of each topic at or
  // before it (the prev of the next message), as the watermark file keeps them.
  struct Mark {
    u64 sequence = 0;
    std::optional<EventKey> event = std::nullopt, change = std::nullopt;
  };
  struct Marks {
    std::int32_t ledger_partitions = 0, orders_partitions = 0;  // 0: not counted yet
    std::vector<Mark> groups;
  };
  static Result<Marks> parse_marks(std::string_view text, u32 groups);
  // Group g's mark at `sequence`, from the store and its mark `before` (at or before
  // `sequence`).
  Result<Mark> mark_at(u32 g, u64 sequence, const Mark& before);
  // Fails when the store holds rows up to the mark and its last ones are not the mark's
  // (a watermark file of another store).
  Status check_mark(u32 g, const Mark& mark);
  // Sets group g's cursors after every row up to the mark.
  void resume(u32 g, const Mark& mark);
  void run();
  // Reads and produces one round of group g; true when it produced anything.
  bool publish(u32 g);
  bool produce(rd_kafka_topic_s* topic, std::int32_t partition, u32 group, EventKey key,
               const std::optional<EventKey>& prev, std::string_view type, Round* round);
  void acknowledge();       // moves each group's watermark past its finished rounds
  void fail(Round& round);  // a message of it was not delivered: rewind
  void rewind();            // after a failed delivery: from each watermark again
  void write_watermarks(bool force);
  void delivered(const rd_kafka_message_s* message);
  static void on_delivery(rd_kafka_s* rk, const rd_kafka_message_s* message, void* opaque);
  static void on_error(rd_kafka_s* rk, int error, const char* reason, void* opaque);
  static void on_log(const rd_kafka_s* rk, int level, const char* facility, const char* text);

  KafkaConfig config_;
  std::unique_ptr<history::Store> store_;  // a reader of its own
  KafkaRenderers renderers_;
  std::vector<std::unique_ptr<Group>> groups_;
  rd_kafka_s* producer_ = nullptr;
  rd_kafka_topic_s* ledger_topic_ = nullptr;
  rd_kafka_topic_s* orders_topic_ = nullptr;
  std::int32_t ledger_partitions_ = 0, orders_partitions_ = 0;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  bool abrupt_ = false;
  bool failed_ = false;        // a delivery failed: rewind before producing more
  bool fatal_ = false;         // the producer cannot go on: make a new one
  u64 rewind_backoff_ns_ = 0;  // after a rewind, the wait before producing again
  u64 resume_at_ns_ = 0;       // (steady clock) doubling while rewinds repeat
  u32 failing_group_ = 0;      // the first failure since the last rewind: its group
                               // (groups(): not known),
  u64 failing_watermark_ = 0;  // and the group's watermark then (past it, no back-off)
  u64 last_rewind_log_ns_ = 0;
  u64 watermarks_written_ns_ = 0;
  u64 last_complaint_ns_ = 0;
  std::string key_, value_;  // reused for each message
  Marks written_;            // what the file says
  bool counted_ = false;     // the partitions were counted (or checked) by this process
  std::atomic<bool> connected_{false};
  std::atomic<u64> messages_{0};
  std::atomic<u64> produced_{0};
  std::atomic<u64> connect_attempts_{0};
  std::atomic<u64> gaps_{0};
  std::atomic<u64> delivery_errors_{0};
  std::atomic<u64> rewinds_{0};
  std::atomic<u64> local_errors_{0};
};

}  // namespace paygate::publish
