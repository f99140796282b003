// Webhook deliveries per second (docs/WEBHOOKS.md; docs/BENCHMARKS.md, "Webhooks"):
// the delivery worker as the server runs it — reading the history store's outbox,
// making deliveries in webhooks.sqlite, posting each signed over kept-alive
// connections to the repo's receiver (src/webhooks/webhook_receiver.cc, which checks
// every signature and logs every request) on 127.0.0.1, recording each outcome —
// from the first event read to the last delivery recorded.
//
// The outbox is filled first (N orders that reached success, each with an ipn_url),
// as the projector would have; then the worker starts and the clock runs until every
// delivery is recorded delivered. Runs are repeated; the median is reported.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "base/temp_dir.h"
#include "history/sqlite_store.h"
#include "progress.h"
#include "webhooks/deliverer.h"

namespace paygate {
namespace {

// The receiver, started with its port read from its first line.
struct Receiver {
  pid_t pid = -1;
  int port = 0;
  Receiver(const std::string& binary, const std::filesystem::path& log, int threads) {
    int out[2];
    if (::pipe(out) != 0) return;
    pid = ::fork();
    if (pid == 0) {
      ::dup2(out[1], STDOUT_FILENO);
      ::close(out[0]);
      ::close(out[1]);
      const std::string t = std::to_string(threads);
      ::execl(binary.c_str(), binary.c_str(), "--log", log.c_str(), "--threads", t.c_str(),
              "--secret", "sk_bench", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(out[1]);
    std::string line;
    char c = 0;
    while (::read(out[0], &c, 1) == 1 && c != '\n')
      line += c;
    ::close(out[0]);
    if (line.starts_with("listening ")) port = std::stoi(line.substr(10));
  }
  ~Receiver() {
    if (pid > 0) {
      ::kill(pid, SIGTERM);
      ::waitpid(pid, nullptr, 0);
    }
  }
};

// N orders that reached success, each created with `ipn_url`, in the outbox.
bool fill(history::SqliteStore& store, u64 orders, const std::string& ipn_url) {
  constexpr u64 kPerBatch = 5000;
  u64 sequence = 0;
  for (u64 first = 0; first < orders; first += kPerBatch) {
    history::Batch batch;
    batch.group = 0;
    batch.after = sequence;
    for (u64 i = first; i < std::min(orders, first + kPerBatch); ++i) {
      Order o;
      o.id = i + 1;
      o.merchant = 7;
      o.account = AccountId{100};
      o.amount = 300;
      o.currency = Currency::from("USD");
      o.created_at_ns = 1'700'000'000 * kNanosPerSecond + i;
      o.expires_at_ns = o.created_at_ns + 900 * kNanosPerSecond;
      ++sequence;  // the creation, with its texts
      o.status = OrderStatus::created;
      batch.orders.push_back(
          {.sequence = sequence, .at_ns = o.created_at_ns, .created = true, .order = o});
      batch.annotations.push_back({.sequence = sequence,
                                   .kind = journal::AnnotationKind::merchant_ref,
                                   .text = fmt::format("cart-{}", i)});
      batch.annotations.push_back(
          {.sequence = sequence, .kind = journal::AnnotationKind::ipn_url, .text = ipn_url});
      ++sequence;  // paid
      o.status = OrderStatus::success;
      o.method = OrderMethod::wallet;
      o.finished_at_ns = o.created_at_ns + 1;
      batch.orders.push_back(
          {.sequence = sequence, .at_ns = o.finished_at_ns, .created = false, .order = o});
    }
    batch.watermark = sequence;
    if (Status s = store.write(batch); !s.ok()) {
      fmt::print(stderr, "webhook_bench: {}\n", s.to_string());
      return false;
    }
  }
  return true;
}

int run(int argc, char** argv) {
  CLI::App app{"webhook deliveries per second to a local receiver"};
  u64 orders = 20'000;
  int runs = 3;
  u32 concurrency = 64;
  u32 per_target = 64;
  int receiver_threads = 1;
  bool quick = false;
  std::string receiver = WEBHOOK_RECEIVER_PATH;
  app.add_option("--orders", orders, "events (one delivery each) per run");
  app.add_option("--runs", runs, "runs (the median is reported)");
  app.add_option("--concurrency", concurrency, "[webhooks] concurrency");
  app.add_option("--per-target", per_target, "[webhooks] per_target (one origin here)");
  app.add_option("--receiver-threads", receiver_threads, "the receiver's IO threads");
  app.add_option("--receiver", receiver, "the webhook_receiver binary");
  app.add_flag("--quick", quick, "a short run that must deliver everything (ctest)");
  CLI11_PARSE(app, argc, argv);
  if (quick) {
    orders = 500;
    runs = 1;
  }
  std::vector<double> rates;
  for (int r = 0; r < runs; ++r) {
    TempDir dir;
    Receiver sink(receiver, dir.path() / "receiver.log", receiver_threads);
    if (sink.port == 0) {
      fmt::print(stderr, "webhook_bench: the receiver did not start ({})\n", receiver);
      return 1;
    }
    auto store = history::SqliteStore::open(dir.path() / "history.sqlite");
    if (!store.ok()) return 1;
    // The webhook store first, so that it starts at the (empty) outbox's head.
    webhooks::WebhookConfig config;
    config.file = dir.path() / "webhooks.sqlite";
    config.allow_private = true;
    config.concurrency = concurrency;
    config.per_target = per_target;
    config.per_merchant = concurrency;
    config.poll_interval_ns = 5'000'000;
    auto deliverer = webhooks::Deliverer::open(
        config, *store.value(), {0},
        [](const history::OrderEventRow& e, const history::OrderRow*) {
          return fmt::format(
              R"({{"id":"{}","object":"event","type":"{}","created":{},"group":0,"sequence":{},)"
              R"("data":{{"object":{{"id":"ord_{:016x}","object":"order","status":"success",)"
              R"("amount":300,"currency":"USD"}}}}}})",
              history::order_event_id(e.group, e.sequence, e.n), e.type, e.at_ns / kNanosPerSecond,
              e.sequence, e.order.id);
        },
        [](u64, u64) { return std::vector<std::string>{"sk_bench"}; });
    if (!deliverer.ok()) {
      fmt::print(stderr, "webhook_bench: {}\n", deliverer.status().to_string());
      return 1;
    }
    if (!fill(*store.value(), orders, fmt::format("http://127.0.0.1:{}/ipn", sink.port))) return 1;
    const webhooks::WebhookCounters& c = deliverer.value()->counters();
    const auto started = std::chrono::steady_clock::now();
    Progress progress([&](int second) {
      fmt::print(stderr, "webhook_bench: run {} second {}: delivered {} of {}\n", r + 1, second,
                 c.delivered.load(), orders);
    });
    deliverer.value()->start();
    const auto deadline = started + std::chrono::seconds(120 + orders / 200);
    while (c.delivered.load() < orders && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    progress.stop();
    deliverer.value()->stop();
    if (c.delivered.load() < orders) {
      fmt::print(stderr, "webhook_bench: only {} of {} delivered in {:.1f} s\n", c.delivered.load(),
                 orders, seconds);
      return 1;
    }
    const double rate = static_cast<double>(orders) / seconds;
    rates.push_back(rate);
    fmt::print("run={} deliveries={} seconds={:.3f} deliveries_per_sec={:.0f} attempts={}\n", r + 1,
               orders, seconds, rate, c.attempts.load());
  }
  std::sort(rates.begin(), rates.end());
  fmt::print("median_deliveries_per_sec={:.0f} concurrency={} per_target={} orders={} runs={}\n",
             rates[rates.size() / 2], concurrency, per_target, orders, runs);
  fmt::print("webhook_bench ok\n");
  return 0;
}

}  // namespace
}  // namespace paygate

int main(int argc, char** argv) {
  return paygate::run(argc, argv);
}
