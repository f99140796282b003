// For tests of the Kafka publisher: librdkafka's mock cluster (brokers in the test's
// process, on 127.0.0.1) and a consumer that follows docs/KAFKA.md's rule — keep a
// message when its prev headers name the last row kept of its group and topic, drop
// it otherwise — and checks that what it kept is exactly the rows expected, in order.
#pragma once

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "base/assert.h"
#include "base/types.h"

namespace paygate::publish::testing {

// A row's key in its group: (sequence, index).
using RowKey = std::pair<u64, u32>;
// Per group, the rows a topic must carry, in order.
using ExpectedRows = std::map<u32, std::vector<RowKey>>;

// Three brokers; each topic made with `partitions` partitions replicated on all three,
// broker 1 leading every partition (so that taking it down stops every delivery).
class MockCluster {
 public:
  MockCluster(const std::vector<std::string>& topics, std::int32_t partitions)
      : partitions_(partitions) {
    char why[256];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "0", why, sizeof why);
    host_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof why);
    PG_ASSERT(host_ != nullptr);
    cluster_ = rd_kafka_mock_cluster_new(host_, 3);
    PG_ASSERT(cluster_ != nullptr);
    for (const std::string& topic : topics) {
      PG_ASSERT(rd_kafka_mock_topic_create(cluster_, topic.c_str(), partitions, 3) ==
                RD_KAFKA_RESP_ERR_NO_ERROR);
      for (std::int32_t p = 0; p < partitions; ++p) {
        rd_kafka_mock_partition_set_leader(cluster_, topic.c_str(), p, 1);
      }
    }
  }
  ~MockCluster() {
    rd_kafka_mock_cluster_destroy(cluster_);
    rd_kafka_destroy(host_);
  }
  MockCluster(const MockCluster&) = delete;
  MockCluster& operator=(const MockCluster&) = delete;

  std::string brokers() const { return rd_kafka_mock_cluster_bootstraps(cluster_); }
  std::int32_t partitions() const { return partitions_; }
  void set_down(std::int32_t broker) { rd_kafka_mock_broker_set_down(cluster_, broker); }
  void set_up(std::int32_t broker) { rd_kafka_mock_broker_set_up(cluster_, broker); }
  // The next `count` Produce requests (to any broker) fail with `error`.
  void fail_produce(std::size_t count, rd_kafka_resp_err_t error) {
    constexpr int16_t kProduce = 0;  // the Produce API's key
    std::vector<rd_kafka_resp_err_t> errors(count, error);
    rd_kafka_mock_push_request_errors_array(cluster_, kProduce, count, errors.data());
  }

 private:
  std::int32_t partitions_;
  rd_kafka_t* host_ = nullptr;
  rd_kafka_mock_cluster_t* cluster_ = nullptr;
};

class CheckingConsumer {
 public:
  // Reads every partition of `expected`'s topics from the start.
  CheckingConsumer(const MockCluster& cluster, std::map<std::string, ExpectedRows> expected)
      : expected_(std::move(expected)), partitions_(cluster.partitions()) {
    char why[256];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    for (const auto& [k, v] :
         {std::pair<const char*, std::string>{"bootstrap.servers", cluster.brokers()},
          {"group.id", "paygate-test"},
          {"enable.auto.commit", "false"},
          {"log_level", "0"}}) {
      PG_ASSERT(rd_kafka_conf_set(conf, k, v.c_str(), why, sizeof why) == RD_KAFKA_CONF_OK);
    }
    consumer_ = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof why);
    PG_ASSERT(consumer_ != nullptr);
    rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(8);
    for (const auto& [topic, rows] : expected_) {
      for (std::int32_t p = 0; p < partitions_; ++p) {
        rd_kafka_topic_partition_list_add(list, topic.c_str(), p)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
      }
    }
    PG_ASSERT(rd_kafka_assign(consumer_, list) == RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(list);
  }
  ~CheckingConsumer() {
    rd_kafka_consumer_close(consumer_);
    rd_kafka_destroy(consumer_);
  }
  CheckingConsumer(const CheckingConsumer&) = delete;
  CheckingConsumer& operator=(const CheckingConsumer&) = delete;

  // Reads until every expected row has come, or 60 s pass; true when all came.
  bool read_all() {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      rd_kafka_message_t* m = rd_kafka_consumer_poll(consumer_, 100);
      if (m == nullptr) continue;
      if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) take(m);
      rd_kafka_message_destroy(m);
    }
    return done();
  }

  u64 duplicates = 0;  // dropped by the rule (came twice, or after a hole, then again)
  u64 received = 0;
  std::vector<std::string> problems;  // a kept row that is not the next expected, wrong partitions
  // Each message's value as it first came, per topic.
  std::map<std::string, std::vector<std::string>> values;

  std::string first_problem() const { return problems.empty() ? "" : problems.front(); }
  // A consumer that kept, before the expected rows, a row with this key (the default:
  // none, 0 0).
  void start_after(const std::string& topic, u32 group, RowKey key) { start_[topic][group] = key; }

 private:
  bool done() const {
    for (const auto& [topic, groups] : expected_) {
      for (const auto& [g, rows] : groups) {
        const auto t = next_.find(topic);
        if (rows.empty()) continue;
        if (t == next_.end() || !t->second.contains(g) || t->second.at(g) < rows.size()) {
          return false;
        }
      }
    }
    return true;
  }
  static u64 header(rd_kafka_message_t* m, const char* name) {
    rd_kafka_headers_t* headers = nullptr;
    const void* value = nullptr;
    std::size_t size = 0;
    if (rd_kafka_message_headers(m, &headers) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_header_get_last(headers, name, &value, &size) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return ~u64{0};
    }
    return std::stoull(std::string(static_cast<const char*>(value), size));
  }
  void take(rd_kafka_message_t* m) {
    ++received;
    const std::string topic = rd_kafka_topic_name(m->rkt);
    const u32 g = static_cast<u32>(header(m, "group"));
    const RowKey key{header(m, "sequence"), static_cast<u32>(header(m, "index"))};
    const auto rows_of = expected_.at(topic).find(g);
    if (rows_of == expected_.at(topic).end() ||
        m->partition != static_cast<std::int32_t>(g % static_cast<u32>(partitions_))) {
      problems.push_back(fmt::format("{}: group {} in partition {}", topic, g, m->partition));
      return;
    }
    const std::vector<RowKey>& rows = rows_of->second;
    std::size_t& next = next_[topic][g];
    const RowKey prev{header(m, "prev_sequence"), static_cast<u32>(header(m, "prev_index"))};
    const RowKey last_kept = next != 0 ? rows[next - 1] : start_[topic][g];
    if (prev != last_kept) {
      ++duplicates;
      return;
    }
    if (next < rows.size() && key == rows[next]) {
      ++next;
      values[topic].emplace_back(static_cast<const char*>(m->payload), m->len);
      return;
    }
    problems.push_back(fmt::format("{} group {}: ({}, {}) follows ({}, {}) where ({}, {}) should",
                                   topic, g, key.first, key.second, prev.first, prev.second,
                                   next < rows.size() ? rows[next].first : 0,
                                   next < rows.size() ? rows[next].second : 0));
  }

  std::map<std::string, ExpectedRows> expected_;
  std::int32_t partitions_;
  rd_kafka_t* consumer_ = nullptr;
  std::map<std::string, std::map<u32, std::size_t>> next_;
  std::map<std::string, std::map<u32, RowKey>> start_;
};

}  // namespace paygate::publish::testing
