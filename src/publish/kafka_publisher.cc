#include "publish/kafka_publisher.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "base/assert.h"
#include "base/clock.h"
#include "base/durable_file.h"
#include "base/log.h"
#include "base/thread.h"

namespace paygate::publish {

namespace {

constexpr std::string_view kWatermarkHeader = "paygate-kafka-watermarks 1";

// The numbers of a line, separated by single spaces; nullopt if it is anything else.
std::optional<std::vector<u64>> numbers_of(std::string_view line) {
  std::vector<u64> numbers;
  for (;;) {
    const std::size_t space = std::min(line.find(' '), line.size());
    u64 n = 0;
    const auto parsed = std::from_chars(line.data(), line.data() + space, n);
    if (space == 0 || parsed.ec != std::errc{} || parsed.ptr != line.data() + space) {
      return std::nullopt;  // (an empty number: a space too many, or none at all)
    }
    numbers.push_back(n);
    if (space == line.size()) return numbers;
    line.remove_prefix(space + 1);
  }
}

// A key as the file writes it: "0 0" is none; an index is a u32.
std::optional<std::optional<EventKey>> key_of_file(u64 sequence, u64 index) {
  if (index > ~u32{0} || (sequence == 0 && index != 0)) return std::nullopt;
  if (sequence == 0) return std::optional<EventKey>{};
  return std::optional<EventKey>{EventKey{sequence, static_cast<u32>(index)}};
}

// The later of two keys (none is before every key).
std::optional<EventKey> later(std::optional<EventKey> a, std::optional<EventKey> b) {
  if (!a) return b;
  if (!b) return a;
  return std::max(*a, *b);
}

}  // namespace

// The file (docs/KAFKA.md): the header; "partitions <ledger> <orders>" once they are
// known; a line per group, "<group> <sequence> <ledger sequence> <ledger index>
// <orders sequence> <orders n>": its watermark and the keys of its last row of each
// topic at or before it (0 0: none). A group not named is at 0.
Result<KafkaPublisher::Marks> KafkaPublisher::parse_marks(std::string_view text, u32 groups) {
  Marks marks;
  marks.groups.assign(groups, Mark{});
  std::set<u64> named;
  const auto bad = [] {
    return Status::corruption("the Kafka watermark file is not one paygate writes");
  };
  std::size_t line_end = text.find('\n');
  if (line_end == std::string_view::npos || text.substr(0, line_end) != kWatermarkHeader) {
    return bad();
  }
  text.remove_prefix(line_end + 1);
  while (!text.empty()) {
    line_end = text.find('\n');
    if (line_end == std::string_view::npos) return bad();
    std::string_view line = text.substr(0, line_end);
    text.remove_prefix(line_end + 1);
    const bool partitions = line.starts_with("partitions ");
    if (partitions) line.remove_prefix(std::string_view("partitions ").size());
    const std::optional<std::vector<u64>> n = numbers_of(line);
    if (!n) return bad();
    if (partitions) {
      if (n->size() != 2 || marks.ledger_partitions != 0 || (*n)[0] == 0 || (*n)[1] == 0 ||
          (*n)[0] > 1u << 20 || (*n)[1] > 1u << 20) {
        return bad();
      }
      marks.ledger_partitions = static_cast<std::int32_t>((*n)[0]);
      marks.orders_partitions = static_cast<std::int32_t>((*n)[1]);
      continue;
    }
    if (n->size() != 6 || (*n)[2] > (*n)[1] || (*n)[4] > (*n)[1]) return bad();
    const auto event = key_of_file((*n)[2], (*n)[3]);
    const auto change = key_of_file((*n)[4], (*n)[5]);
    if (!event || !change || !named.insert((*n)[0]).second) return bad();  // (each group once)
    // (A group beyond those configured now is kept out: fewer groups is refused at start.)
    if ((*n)[0] >= groups) continue;
    marks.groups[(*n)[0]] = Mark{.sequence = (*n)[1], .event = *event, .change = *change};
  }
  return marks;
}

namespace {

// Kafka's legal topic names: letters, digits, '.', '_', '-'; at most 249 characters.
bool valid_topic_prefix(std::string_view prefix) noexcept {
  if (prefix.size() > 200) return false;
  return std::all_of(prefix.begin(), prefix.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

}  // namespace

KafkaPublisher::KafkaPublisher(const KafkaConfig& config, KafkaRenderers renderers)
    : config_(config), renderers_(std::move(renderers)) {}

KafkaPublisher::~KafkaPublisher() {
  stop();
  destroy_producer(/*purge=*/true);
}

Result<std::unique_ptr<KafkaPublisher>> KafkaPublisher::open(
    const KafkaConfig& config, const history::StoreConfig& store_config, u32 groups,
    KafkaRenderers renderers) {
  PG_ASSERT(!config.brokers.empty() && !config.watermark_file.empty() && config.batch_rows > 0);
  if (config.message_timeout_ms != 0 && config.message_timeout_ms <= config.linger_ms) {
    return Status::invalid_config("[kafka] message_timeout_ms must be 0 (none) or above linger_ms");
  }
  if (!valid_topic_prefix(config.topic_prefix)) {
    return Status::invalid_config(
        fmt::format("[kafka] topic_prefix \"{}\": at most 200 letters, digits, '.', '_' or '-'",
                    config.topic_prefix));
  }
  std::unique_ptr<KafkaPublisher> p(new KafkaPublisher(config, std::move(renderers)));
  Result<std::unique_ptr<history::Store>> reader = history::Store::open_reader(store_config);
  if (!reader.ok()) return reader.status();
  p->store_ = std::move(reader).value();
  Marks marks;
  marks.groups.assign(groups, Mark{});
  if (Result<std::string> text = read_file(config.watermark_file); text.ok()) {
    Result<Marks> parsed = parse_marks(text.value(), groups);
    if (!parsed.ok()) return parsed.status();
    marks = std::move(parsed).value();
  } else if (text.status().code() != StatusCode::not_found) {
    return text.status();
  }
  // The file's partition counts, if any, are kept: a group stays in its partition.
  p->ledger_partitions_ = marks.ledger_partitions;
  p->orders_partitions_ = marks.orders_partitions;
  for (u32 g = 0; g < groups; ++g) {
    if (Status matches = p->check_mark(g, marks.groups[g]); !matches.ok()) return matches;
    auto group = std::make_unique<Group>();
    group->acknowledged.store(marks.groups[g].sequence, std::memory_order_relaxed);
    group->durable.store(marks.groups[g].sequence, std::memory_order_relaxed);
    p->groups_.push_back(std::move(group));
    p->resume(g, marks.groups[g]);
  }
  p->written_ = std::move(marks);
  p->watermarks_written_ns_ = steady_ns();  // (the interval counts from the start)
  if (Status made = p->make_producer(); !made.ok()) return made;
  PG_LOG_INFO("event=kafka_opened brokers=\"{}\" topic_prefix={} groups={} watermark_file={}",
              config.brokers, config.topic_prefix, groups, config.watermark_file.string());
  return p;
}

Status KafkaPublisher::make_producer() {
  PG_ASSERT(producer_ == nullptr);
  char why[512] = {};
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  const std::pair<const char*, std::string> settings[] = {
      {"bootstrap.servers", config_.brokers},
      // Exactly once per producer's life, in order per partition, acks=all; a batch
      // that fails for good stops the producer (a fatal error) rather than let later
      // ones pass it.
      {"enable.idempotence", "true"},
      {"enable.gapless.guarantee", "true"},
      {"acks", "all"},
      {"message.timeout.ms", std::to_string(config_.message_timeout_ms)},
      {"linger.ms", std::to_string(config_.linger_ms)},
      // The store is the buffer: a queue of this many is enough to keep the cluster
      // busy, and bounds the memory an outage holds.
      {"queue.buffering.max.messages", "200000"},
      {"batch.num.messages", "10000"},
      {"client.id", "paygate"},
  };
  for (const auto& [name, value] : settings) {
    if (rd_kafka_conf_set(conf, name, value.c_str(), why, sizeof why) != RD_KAFKA_CONF_OK) {
      rd_kafka_conf_destroy(conf);
      return Status::invalid_config(fmt::format("Kafka setting {}: {}", name, why));
    }
  }
  rd_kafka_conf_set_opaque(conf, this);
  rd_kafka_conf_set_dr_msg_cb(conf, &KafkaPublisher::on_delivery);
  rd_kafka_conf_set_error_cb(conf, &KafkaPublisher::on_error);
  rd_kafka_conf_set_log_cb(conf, &KafkaPublisher::on_log);
  producer_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof why);
  if (producer_ == nullptr) {
    rd_kafka_conf_destroy(conf);
    return Status::invalid_config(fmt::format("Kafka producer: {}", why));
  }
  ledger_topic_ = rd_kafka_topic_new(producer_, (config_.topic_prefix + "ledger").c_str(), nullptr);
  orders_topic_ = rd_kafka_topic_new(producer_, (config_.topic_prefix + "orders").c_str(), nullptr);
  if (ledger_topic_ == nullptr || orders_topic_ == nullptr) {
    const std::string why_topic = rd_kafka_err2str(rd_kafka_last_error());
    destroy_producer(/*purge=*/true);
    return Status::invalid_config(fmt::format("Kafka topics: {}", why_topic));
  }
  // The partitions are counted once per process (and kept in the file): a new producer
  // after a fatal error keeps each group in its partition, and needs no new count.
  connected_.store(counted_, std::memory_order_relaxed);
  return Status{};
}

void KafkaPublisher::destroy_producer(bool purge) {
  if (producer_ == nullptr) return;
  if (purge) rd_kafka_purge(producer_, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
  // Serves the delivery reports still due (purged ones fail at once) while the rounds
  // they point to exist.
  rd_kafka_flush(producer_, purge ? 1000 : 0);
  if (ledger_topic_ != nullptr) rd_kafka_topic_destroy(ledger_topic_);
  if (orders_topic_ != nullptr) rd_kafka_topic_destroy(orders_topic_);
  rd_kafka_destroy(producer_);
  producer_ = nullptr;
  ledger_topic_ = orders_topic_ = nullptr;
  connected_.store(false, std::memory_order_relaxed);
  // Whatever was in flight is gone with it: published again from the watermarks.
  for (const std::unique_ptr<Group>& g : groups_) {
    for (Round& round : g->rounds) {
      if (round.outstanding != 0) fail(round);
      round.outstanding = 0;
    }
  }
}

Result<KafkaPublisher::Mark> KafkaPublisher::mark_at(u32 g, u64 sequence, const Mark& before) {
  PG_ASSERT(before.sequence <= sequence);
  const Result<history::Store::LastKeys> last = store_->last_keys(g, sequence);
  if (!last.ok()) return last.status();
  // The store holds every row after `before` up to `sequence` (it published them from
  // it; a store that starts later stops the group), but maybe none before: a topic
  // with no row since keeps the earlier mark's key.
  return Mark{.sequence = sequence,
              .event = later(last.value().event, before.event),
              .change = later(last.value().order_change, before.change)};
}

Status KafkaPublisher::check_mark(u32 g, const Mark& mark) {
  if (mark.sequence == 0) return Status{};
  const Result<u64> stored = store_->watermark(g);
  const Result<u64> first = store_->first_sequence(g);
  if (!stored.ok()) return stored.status();
  if (!first.ok()) return first.status();
  // A store behind the mark cannot tell yet; one that starts after it is a gap (found
  // and said when the group is published).
  if (stored.value() < mark.sequence || first.value() > mark.sequence + 1) return Status{};
  const Result<history::Store::LastKeys> last = store_->last_keys(g, mark.sequence);
  if (!last.ok()) return last.status();
  // The store's last rows up to the mark are the file's, where the store holds them.
  const auto expected = [&](const std::optional<EventKey>& key) {
    return key && key->sequence >= first.value() ? key : std::nullopt;
  };
  if (last.value().event != expected(mark.event) ||
      last.value().order_change != expected(mark.change)) {
    return Status::invalid_config(fmt::format(
        "the Kafka watermark file {} does not match the history store at group {} sequence {} "
        "(a file of another data directory?): docs/KAFKA.md",
        config_.watermark_file.string(), g, mark.sequence));
  }
  return Status{};
}

void KafkaPublisher::resume(u32 g, const Mark& mark) {
  Group& group = *groups_[g];
  group.events_after = mark.event;
  group.changes_after = mark.change;
  group.events_through = group.changes_through = mark.sequence;
  group.rounds.clear();
}

bool KafkaPublisher::find_partitions() {
  const auto count = [&](rd_kafka_topic_t* topic) -> std::int32_t {
    const rd_kafka_metadata_t* metadata = nullptr;
    if (rd_kafka_metadata(producer_, 0, topic, &metadata, 2000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return 0;
    }
    std::int32_t partitions = 0;
    if (metadata->topic_cnt == 1 && metadata->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      partitions = metadata->topics[0].partition_cnt;
    }
    rd_kafka_metadata_destroy(metadata);
    return partitions;
  };
  connect_attempts_.fetch_add(1, std::memory_order_relaxed);
  const std::int32_t ledger = count(ledger_topic_);
  const std::int32_t orders = ledger > 0 ? count(orders_topic_) : 0;
  if (ledger <= 0 || orders <= 0) return false;
  if (ledger_partitions_ == 0) {  // first counted: kept from now on (the file says them)
    ledger_partitions_ = ledger;
    orders_partitions_ = orders;
  } else if (ledger != ledger_partitions_ || orders != orders_partitions_) {
    // A group's messages stay in their partition, so that a consumer of one partition
    // keeps following it (docs/KAFKA.md, "Partitions").
    PG_LOG_WARN(
        "event=kafka_partitions_changed ledger_partitions={} orders_partitions={} "
        "kept_ledger={} kept_orders={} message=\"the topics' partition counts differ from the "
        "watermark file's; the file's are kept (docs/KAFKA.md)\"",
        ledger, orders, ledger_partitions_, orders_partitions_);
    if (ledger < ledger_partitions_ || orders < orders_partitions_) {
      PG_LOG_ERROR(
          "event=kafka_partitions_missing message=\"a topic has fewer partitions than "
          "the watermark file's count: messages to the missing ones fail\"");
    }
  }
  PG_LOG_INFO("event=kafka_connected ledger_partitions={} orders_partitions={}", ledger_partitions_,
              orders_partitions_);
  counted_ = true;
  connected_.store(true, std::memory_order_relaxed);
  return true;
}

void KafkaPublisher::start() {
  PG_ASSERT(!thread_.joinable());
  stopping_.store(false, std::memory_order_relaxed);
  abrupt_ = false;
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "paygate-kafka");
    if (config_.thread_nice != 0) set_thread_nice(config_.thread_nice);
    run();
  });
}

void KafkaPublisher::stop() {
  stopping_.store(true, std::memory_order_release);
  if (thread_.joinable()) thread_.join();
}

void KafkaPublisher::stop_abruptly() {
  abrupt_ = true;
  stop();
}

void KafkaPublisher::run() {
  const auto complain = [&](std::string_view what) {
    const u64 now = steady_ns();
    if (now - last_complaint_ns_ < kNanosPerSecond) return;  // once a second at most
    last_complaint_ns_ = now;
    PG_LOG_WARN("event=kafka_behind message=\"{}\"", what);
  };
  const int poll_ms = static_cast<int>(std::max<u64>(1, config_.poll_interval_ns / 1'000'000));
  while (!stopping_.load(std::memory_order_acquire)) {
    if (fatal_) {
      // An idempotent producer that hit a fatal error cannot go on: a new one
      // publishes again from the watermarks.
      if (!failed_) failing_group_ = groups();  // (whose is not known)
      destroy_producer(/*purge=*/true);
      failed_ = true;
      fatal_ = false;
    }
    if (producer_ == nullptr) {
      if (Status made = make_producer(); !made.ok()) {
        complain(made.message());
        std::this_thread::sleep_for(std::chrono::milliseconds(poll_ms));
        continue;
      }
    }
    if (!connected_.load(std::memory_order_relaxed) && !find_partitions()) {
      complain("the Kafka cluster or its topics cannot be reached");
      rd_kafka_poll(producer_, std::max(poll_ms, 200));
      continue;
    }
    if (failed_) rewind();
    bool produced = false;
    const bool waiting = failed_ || steady_ns() < resume_at_ns_;  // (after a rewind: back off)
    for (u32 g = 0;
         g < groups() && !waiting && !failed_ && !stopping_.load(std::memory_order_relaxed); ++g) {
      produced = publish(g) || produced;
    }
    rd_kafka_poll(producer_, produced ? 0 : poll_ms);
    acknowledge();
    write_watermarks(/*force=*/false);
  }
  if (producer_ == nullptr) return;
  if (abrupt_) {
    destroy_producer(/*purge=*/true);
    return;
  }
  rd_kafka_flush(producer_, static_cast<int>(config_.stop_flush_ns / 1'000'000));
  acknowledge();
  write_watermarks(/*force=*/true);
  destroy_producer(/*purge=*/true);
  PG_LOG_INFO("event=kafka_stopped messages={}", messages());
}

bool KafkaPublisher::publish(u32 g) {
  Group& group = *groups_[g];
  const Result<u64> stored = store_->watermark(g);
  if (!stored.ok()) {
    local_errors_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  const u64 top = stored.value();
  if (top <= std::min(group.events_through, group.changes_through) || group.gap) return false;
  if (!group.checked) {
    // A store that starts after the watermark (rebuilt from a journal whose start was
    // removed) lacks rows Kafka never had: publishing on would hide the hole.
    const Result<u64> first = store_->first_sequence(g);
    if (!first.ok()) {
      local_errors_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    group.checked = true;
    const u64 acknowledged = group.acknowledged.load(std::memory_order_relaxed);
    if (acknowledged != 0 && first.value() > acknowledged + 1) {
      group.gap = true;
      gaps_.fetch_add(1, std::memory_order_relaxed);
      PG_LOG_ERROR(
          "event=kafka_gap group={} watermark={} store_first_sequence={} message=\"the history "
          "store starts after what Kafka has: the group is not published (docs/KAFKA.md, "
          "'A store that starts later')\"",
          g, acknowledged, first.value());
      return false;
    }
  }
  Round& round = group.rounds.emplace_back();
  round.group = g;
  bool produced = false;
  // The group's partition keeps its messages in order; each stream is read up to the
  // store's watermark, whole sequences being known only where a read came up short.
  const auto close = [&](bool ok) {
    round.through = std::min(group.events_through, group.changes_through);
    round.open = false;
    if (!ok) fail(round);
    return produced;
  };
  if (group.events_through < top) {
    const Result<std::vector<LedgerEvent>> events =
        store_->events(g, group.events_after, config_.batch_rows, top);
    if (!events.ok()) {
      local_errors_.fetch_add(1, std::memory_order_relaxed);
      return close(true);
    }
    const std::int32_t partition =
        static_cast<std::int32_t>(g % static_cast<u32>(ledger_partitions_));
    for (const LedgerEvent& e : events.value()) {
      key_.clear();
      value_.clear();
      renderers_.event(g, e, key_, value_);
      if (!produce(ledger_topic_, partition, g, key_of(e), group.events_after, name(e.kind),
                   &round)) {
        return close(false);
      }
      group.events_after = key_of(e);
      produced = true;
    }
    const bool whole = events.value().size() < config_.batch_rows;
    group.events_through =
        whole ? top : std::max(group.events_through, events.value().back().sequence - 1);
  }
  if (group.changes_through < top) {
    const Result<std::vector<history::OrderChangeRow>> changes =
        store_->order_changes(g, group.changes_after, config_.batch_rows, top);
    if (!changes.ok()) {
      local_errors_.fetch_add(1, std::memory_order_relaxed);
      return close(true);
    }
    const std::int32_t partition =
        static_cast<std::int32_t>(g % static_cast<u32>(orders_partitions_));
    for (const history::OrderChangeRow& c : changes.value()) {
      key_.clear();
      value_.clear();
      renderers_.order_change(g, c, key_, value_);
      if (!produce(orders_topic_, partition, g, EventKey{c.sequence, c.n}, group.changes_after,
                   name(c.status), &round)) {
        return close(false);
      }
      group.changes_after = EventKey{c.sequence, c.n};
      produced = true;
    }
    const bool whole = changes.value().size() < config_.batch_rows;
    group.changes_through =
        whole ? top : std::max(group.changes_through, changes.value().back().sequence - 1);
  }
  return close(true);
}

bool KafkaPublisher::produce(rd_kafka_topic_t* topic, std::int32_t partition, u32 group,
                             EventKey key, const std::optional<EventKey>& prev,
                             std::string_view type, Round* round) {
  // Decimal texts of the headers, each in its own slot.
  char text[5][24];
  ssize_t size[5];
  const u64 numbers[5] = {group, key.sequence, key.index, prev ? prev->sequence : 0,
                          prev ? prev->index : 0};
  for (int n = 0; n < 5; ++n) {
    size[n] = std::to_chars(std::begin(text[n]), std::end(text[n]), numbers[n]).ptr - text[n];
  }
  for (;;) {
    const rd_kafka_resp_err_t err = rd_kafka_producev(
        producer_, RD_KAFKA_V_RKT(topic), RD_KAFKA_V_PARTITION(partition),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(key_.data(), key_.size()),
        RD_KAFKA_V_VALUE(value_.data(), value_.size()),
        RD_KAFKA_V_HEADER("group", text[0], size[0]),
        RD_KAFKA_V_HEADER("sequence", text[1], size[1]),
        RD_KAFKA_V_HEADER("index", text[2], size[2]),
        RD_KAFKA_V_HEADER("prev_sequence", text[3], size[3]),
        RD_KAFKA_V_HEADER("prev_index", text[4], size[4]),
        RD_KAFKA_V_HEADER("type", type.data(), static_cast<ssize_t>(type.size())),
        RD_KAFKA_V_OPAQUE(round), RD_KAFKA_V_END);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      ++round->outstanding;
      produced_.fetch_add(1, std::memory_order_relaxed);
      return true;
    }
    if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
      delivery_errors_.fetch_add(1, std::memory_order_relaxed);
      PG_LOG_WARN("event=kafka_produce_failed group={} sequence={} message=\"{}\"", group,
                  key.sequence, rd_kafka_err2str(err));
      return false;
    }
    // The producer's queue is full (the cluster is slow or down): wait for room, moving
    // the watermarks on meanwhile. Stop or a failed delivery ends the round.
    rd_kafka_poll(producer_, 10);
    acknowledge();
    write_watermarks(/*force=*/false);
    if (failed_ || fatal_ || stopping_.load(std::memory_order_relaxed)) return false;
  }
}

void KafkaPublisher::acknowledge() {
  for (const std::unique_ptr<Group>& group : groups_) {
    std::deque<Round>& rounds = group->rounds;
    while (!rounds.empty() && !rounds.front().open && rounds.front().outstanding == 0 &&
           !rounds.front().failed) {
      if (rounds.front().through > group->acknowledged.load(std::memory_order_relaxed)) {
        group->acknowledged.store(rounds.front().through, std::memory_order_release);
        // Delivering again past what failed: a later failure starts its back-off anew.
        if (failing_group_ >= groups() || (group.get() == groups_[failing_group_].get() &&
                                           rounds.front().through > failing_watermark_)) {
          rewind_backoff_ns_ = 0;
        }
      }
      rounds.pop_front();
    }
  }
}

void KafkaPublisher::rewind() {
  // Every message in flight reports first (a delivery is tried for message_timeout at
  // most), so that no report points to a round that is gone.
  const auto in_flight = [&] {
    for (const std::unique_ptr<Group>& group : groups_) {
      for (const Round& round : group->rounds) {
        if (round.outstanding != 0) return true;
      }
    }
    return false;
  };
  while (in_flight() && producer_ != nullptr && !fatal_ &&
         !stopping_.load(std::memory_order_relaxed)) {
    rd_kafka_poll(producer_, 100);
    acknowledge();  // the rounds before the failed one still count
    write_watermarks(/*force=*/false);
  }
  if (in_flight()) return;  // stopping, or a fatal error: tried again after
  acknowledge();
  // The last rows at or before each watermark: the file's, where it has them (the store
  // might not: a store that starts later), else the store's.
  std::vector<Mark> marks(groups());
  for (u32 g = 0; g < groups(); ++g) {
    const u64 from = groups_[g]->acknowledged.load(std::memory_order_relaxed);
    if (written_.groups[g].sequence == from) {
      marks[g] = written_.groups[g];
      continue;
    }
    Result<Mark> mark = mark_at(g, from, written_.groups[g]);
    if (!mark.ok()) {
      local_errors_.fetch_add(1, std::memory_order_relaxed);
      return;  // (failed_ stays: tried again next round)
    }
    marks[g] = mark.value();
  }
  for (u32 g = 0; g < groups(); ++g)
    resume(g, marks[g]);
  failed_ = false;
  rewinds_.fetch_add(1, std::memory_order_relaxed);
  // A failure that repeats (a message the cluster refuses for good) is retried less
  // and less often, up to every 30 s; a watermark that moves resets it.
  rewind_backoff_ns_ = std::clamp<u64>(2 * rewind_backoff_ns_, 100'000'000, 30 * kNanosPerSecond);
  resume_at_ns_ = steady_ns() + rewind_backoff_ns_;
  if (const u64 now = steady_ns(); now - last_rewind_log_ns_ >= kNanosPerSecond) {
    last_rewind_log_ns_ = now;  // (once a second at most: a failure that repeats)
    PG_LOG_WARN(
        "event=kafka_rewound group={} watermark={} backoff_ms={} rewinds={} message=\"a delivery "
        "failed: publishing again from the watermarks (consumers keep a message when its prev "
        "headers name the last row they kept)\"",
        failing_group_, failing_watermark_, rewind_backoff_ns_ / 1'000'000, rewinds());
  }
}

void KafkaPublisher::write_watermarks(bool force) {
  const u64 now = steady_ns();
  if (!force && now - watermarks_written_ns_ < config_.watermark_interval_ns) return;
  const bool counted = ledger_partitions_ != written_.ledger_partitions ||
                       orders_partitions_ != written_.orders_partitions;
  bool moved = false;
  for (u32 g = 0; g < groups(); ++g) {
    moved = moved ||
            groups_[g]->acknowledged.load(std::memory_order_relaxed) != written_.groups[g].sequence;
  }
  if (!moved && !counted) return;
  watermarks_written_ns_ = now;
  Marks marks = written_;
  marks.ledger_partitions = ledger_partitions_;
  marks.orders_partitions = orders_partitions_;
  std::string text(kWatermarkHeader);
  text += '\n';
  if (marks.ledger_partitions > 0 && marks.orders_partitions > 0) {
    fmt::format_to(std::back_inserter(text), "partitions {} {}\n", marks.ledger_partitions,
                   marks.orders_partitions);
  }
  for (u32 g = 0; g < groups(); ++g) {
    const u64 acknowledged = groups_[g]->acknowledged.load(std::memory_order_relaxed);
    if (acknowledged != marks.groups[g].sequence) {
      // Its last rows up to there are in the store: it published them from it.
      Result<Mark> mark = mark_at(g, acknowledged, marks.groups[g]);
      if (!mark.ok()) {
        local_errors_.fetch_add(1, std::memory_order_relaxed);
        return;  // tried again at the next interval
      }
      marks.groups[g] = mark.value();
    }
    const Mark& m = marks.groups[g];
    fmt::format_to(std::back_inserter(text), "{} {} {} {} {} {}\n", g, m.sequence,
                   m.event ? m.event->sequence : 0, m.event ? m.event->index : 0,
                   m.change ? m.change->sequence : 0, m.change ? m.change->index : 0);
  }
  if (Status written = write_file_durably(config_.watermark_file, text, 0600); !written.ok()) {
    local_errors_.fetch_add(1, std::memory_order_relaxed);
    PG_LOG_WARN("event=kafka_watermark_failed message=\"{}\"", written.message());
    return;
  }
  written_ = std::move(marks);
  for (u32 g = 0; g < groups(); ++g) {
    groups_[g]->durable.store(written_.groups[g].sequence, std::memory_order_release);
  }
}

void KafkaPublisher::fail(Round& round) {
  if (!failed_) {  // the first failure of this rewind: whose, and where it stood
    failing_group_ = round.group;
    failing_watermark_ = groups_[round.group]->acknowledged.load(std::memory_order_relaxed);
  }
  round.failed = failed_ = true;
}

void KafkaPublisher::delivered(const rd_kafka_message_t* message) {
  auto* round = static_cast<Round*>(message->_private);
  PG_ASSERT(round != nullptr && round->outstanding > 0);
  --round->outstanding;
  if (message->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
    messages_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  fail(*round);
  delivery_errors_.fetch_add(1, std::memory_order_relaxed);
  const u64 now = steady_ns();
  if (now - last_complaint_ns_ >= kNanosPerSecond) {
    last_complaint_ns_ = now;
    PG_LOG_WARN("event=kafka_delivery_failed message=\"{}\"", rd_kafka_err2str(message->err));
  }
}

void KafkaPublisher::on_delivery(rd_kafka_t*, const rd_kafka_message_t* message, void* opaque) {
  static_cast<KafkaPublisher*>(opaque)->delivered(message);
}

void KafkaPublisher::on_error(rd_kafka_t* rk, int error, const char* reason, void* opaque) {
  auto* self = static_cast<KafkaPublisher*>(opaque);
  if (error == RD_KAFKA_RESP_ERR__FATAL) {
    char why[512] = {};
    rd_kafka_fatal_error(rk, why, sizeof why);
    PG_LOG_ERROR("event=kafka_fatal message=\"{}\"", why);
    self->fatal_ = true;
    return;
  }
  // Brokers down, connections refused: librdkafka retries on its own.
  const u64 now = steady_ns();
  if (now - self->last_complaint_ns_ >= kNanosPerSecond) {
    self->last_complaint_ns_ = now;
    PG_LOG_WARN("event=kafka_error code={} message=\"{}\"",
                rd_kafka_err2name(static_cast<rd_kafka_resp_err_t>(error)), reason);
  }
}

void KafkaPublisher::on_log(const rd_kafka_t*, int level, const char* facility, const char* text) {
  // On librdkafka's threads. Syslog levels: 0–3 errors, 4 warnings; the rest is its
  // debugging. At most one line a second (a broker down repeats itself).
  static std::atomic<u64> last_ns{0};
  if (level > 4) return;
  const u64 now = steady_ns();
  u64 last = last_ns.load(std::memory_order_relaxed);
  if (now - last < kNanosPerSecond || !last_ns.compare_exchange_strong(last, now)) return;
  PG_LOG_WARN("event=kafka_log facility={} message=\"{}\"", facility, text);
}

}  // namespace paygate::publish
