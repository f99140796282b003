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
//
// With --ledger-seconds S it measures instead what delivering costs the ledger: a
// group (journal on this disk, fdatasync per commit) takes the hot-merchant load of
// pipeline_bench (producers keeping windows of 1,024-transfer requests in flight) for
// S seconds, three ways in each run: alone; while the worker delivers a backlog to the
// receiver; while the worker's every attempt fails (the ipn_url's port refuses). It
// reports the ledger's durable commands/s of each and the ratios to "alone" (medians).
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "base/temp_dir.h"
#include "history/store.h"
#include "pipeline/group.h"
#include "progress.h"
#include "webhooks/deliverer.h"

namespace paygate {
namespace {

// The receiver, started with its port read from its first line.
struct Receiver {
  pid_t pid = -1;
  int port = 0;
  // `niceness`: the receiver's (the ledger runs: it stands for servers elsewhere).
  Receiver(const std::string& binary, const std::filesystem::path& log, int threads,
           int niceness = 0) {
    int out[2];
    if (::pipe(out) != 0) return;
    pid = ::fork();
    if (pid == 0) {
      ::dup2(out[1], STDOUT_FILENO);
      ::close(out[0]);
      ::close(out[1]);
      if (niceness > 0) (void)::setpriority(PRIO_PROCESS, 0, niceness);
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
bool fill(history::Store& store, u64 orders, const std::string& ipn_url) {
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

// A delivery worker over `store`, signing with the receiver's secret, rendering a
// small order event; as the server would run it, but for its limits.
Result<std::unique_ptr<webhooks::Deliverer>> open_deliverer(const std::filesystem::path& dir,
                                                            history::Store& store, u32 concurrency,
                                                            u32 per_target, u32 niceness = 0) {
  webhooks::WebhookConfig config;
  config.file = dir / "webhooks.sqlite";
  config.allow_private = true;
  config.concurrency = concurrency;
  config.per_target = per_target;
  config.per_merchant = concurrency;
  config.poll_interval_ns = 5'000'000;
  config.nice = niceness;
  return webhooks::Deliverer::open(
      config, store, {0},
      [](const history::OrderEventRow& e, const history::OrderRow*) {
        return fmt::format(
            R"({{"id":"{}","object":"event","type":"{}","created":{},"group":0,"sequence":{},)"
            R"("data":{{"object":{{"id":"ord_{:016x}","object":"order","status":"success",)"
            R"("amount":300,"currency":"USD"}}}}}})",
            history::order_event_id(e.group, e.sequence, e.n), e.type, e.at_ns / kNanosPerSecond,
            e.sequence, e.order.id);
      },
      [](u64, u64) { return std::vector<std::string>{"sk_bench"}; });
}

constexpr Currency kUsd = Currency::from("USD");

// The ledger under the hot-merchant load for `seconds`: `producers` threads, each with
// `window` requests of `batch` transfers (merchant to users) in flight, waiting on the
// oldest before it sends again. Returns durable commands a second.
double ledger_load(Group& group, AccountId merchant, u32 users, double seconds) {
  constexpr u32 kProducers = 2, kWindow = 16, kBatch = 1024;
  std::atomic<u64> done{0};
  std::atomic<bool> stop{false};
  std::atomic<bool> refusal_told{false};
  std::vector<std::thread> producers;
  const auto started = std::chrono::steady_clock::now();
  for (u32 p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      std::mt19937_64 random(77 + p);
      std::vector<WaitableCompletion> slots(kWindow);
      std::vector<std::vector<Command>> commands(kWindow, std::vector<Command>(kBatch));
      std::vector<std::vector<CommandResult>> results(kWindow, std::vector<CommandResult>(kBatch));
      std::vector<bool> sent(kWindow, false);
      // (Bounded: at most this many requests, whatever the clock says.)
      for (u64 n = 0; n < 10'000'000; ++n) {
        const u32 i = static_cast<u32>(n % kWindow);
        if (sent[i]) {
          // (Counted: the commands the ledger applied; a refusal is not throughput.)
          if (slots[i].wait().status == ResultCode::ok) {
            u64 applied = 0;
            for (const CommandResult& result : results[i])
              applied += result.ok() ? 1 : 0;
            done.fetch_add(applied);
            if (applied != kBatch && !refusal_told.exchange(true)) {
              fmt::print(stderr, "webhook_bench: refused: {}\n",
                         name(std::find_if(results[i].begin(), results[i].end(),
                                           [](const CommandResult& x) { return !x.ok(); })
                                  ->code));
            }
          }
          sent[i] = false;
        }
        if (stop.load(std::memory_order_relaxed)) {
          if (std::none_of(sent.begin(), sent.end(), [](bool b) { return b; })) break;
          continue;
        }
        for (Command& c : commands[i]) {
          const AccountId user{make_id({0, 0}, 3 + random() % users)};
          c = Command::make_transfer(merchant, user, 1 + random() % 100, kUsd);
        }
        slots[i].reset();
        const Request request{.count = kBatch,
                              .commands = commands[i].data(),
                              .results = results[i].data(),
                              .completion = &slots[i]};
        sent[i] = group.submit(request) == ResultCode::ok;
        if (!sent[i]) std::this_thread::yield();  // the ring is full: later
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  const u64 measured = done.load();
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  stop = true;
  for (std::thread& t : producers)
    t.join();
  return static_cast<double>(measured) / elapsed;
}

// A group of a treasury, a funded merchant and `users` accounts.
std::unique_ptr<Group> open_ledger(const std::filesystem::path& dir, u32 users) {
  GroupConfig config;
  config.dir = dir;
  config.ledger = LedgerConfig{.prefix = {0, 0},
                               .accounts_max = users + 16,
                               .pending_max = 1024,
                               .recent_transfers_max = 1u << 16,
                               .idempotency_keys_max = 1024};
  config.snapshot_every_commands = 0;
  Result<std::unique_ptr<Group>> opened = Group::open(config);
  if (!opened.ok()) {
    fmt::print(stderr, "webhook_bench: {}\n", opened.status().to_string());
    return nullptr;
  }
  Group& group = *opened.value();
  group.start();
  std::vector<Command> setup;
  setup.push_back(Command::make_create_account({}, kUsd, AccountKind::system));
  setup.push_back(Command::make_create_account({1}, kUsd, AccountKind::merchant));
  for (u32 i = 0; i < users; ++i)
    setup.push_back(Command::make_create_account({2}, kUsd, AccountKind::user));
  setup.push_back(Command::make_transfer(AccountId{make_id({0, 0}, 1)},
                                         AccountId{make_id({0, 0}, 2)}, u64{1} << 60, kUsd));
  std::vector<CommandResult> results(kBatchMax);
  for (std::size_t at = 0; at < setup.size(); at += kBatchMax) {
    const u32 n = static_cast<u32>(std::min<std::size_t>(kBatchMax, setup.size() - at));
    WaitableCompletion done;
    const Request request{
        .count = n, .commands = setup.data() + at, .results = results.data(), .completion = &done};
    for (u32 tries = 0; group.submit(request) != ResultCode::ok; ++tries) {
      if (tries == 1'000'000) return nullptr;  // (the ring stays full: something is wrong)
      std::this_thread::yield();
    }
    if (done.wait().status != ResultCode::ok) return nullptr;
  }
  return std::move(opened).value();
}

// A port on 127.0.0.1 that nothing listens on (bound, then closed): every connection
// to it is refused.
int refusing_port() {
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor acceptor(
      io, boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0));
  return acceptor.local_endpoint().port();
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// --ledger-seconds: the ledger alone, beside deliveries, beside a refusing endpoint.
int ledger_beside_deliveries(const std::string& receiver, double seconds, int runs, u32 concurrency,
                             u32 per_target, u32 niceness) {
  constexpr u32 kUsers = 10'000;
  const u64 backlog = static_cast<u64>(40'000 * (seconds + 2));  // more than it can send
  std::vector<double> alone, delivering, refused;
  for (int r = 0; r < runs; ++r) {
    TempDir dir;
    std::unique_ptr<Group> group = open_ledger(dir.path() / "group", kUsers);
    if (group == nullptr) return 1;
    const AccountId merchant{make_id({0, 0}, 2)};
    ::sync();
    alone.push_back(ledger_load(*group, merchant, kUsers, seconds));
    fmt::print("run={} cell=alone ledger_ops_per_sec={:.0f}\n", r + 1, alone.back());
    for (const bool dead : {false, true}) {
      TempDir side;
      // (The receiver stands for the merchants' servers, elsewhere: it takes only the
      // CPU the ledger and the worker leave.)
      Receiver sink(receiver, side.path() / "receiver.log", 1, 19);
      if (sink.port == 0) return 1;
      auto store = history::Store::open(side.path() / "history.sqlite");
      if (!store.ok()) return 1;
      auto deliverer =
          open_deliverer(side.path(), *store.value(), concurrency, per_target, niceness);
      if (!deliverer.ok()) return 1;
      const int port = dead ? refusing_port() : sink.port;
      if (!fill(*store.value(), backlog, fmt::format("http://127.0.0.1:{}/ipn", port))) return 1;
      ::sync();  // the backlog's pages written back first: not the ledger's disk's business
      const webhooks::WebhookCounters& c = deliverer.value()->counters();
      deliverer.value()->start();
      const double ops = ledger_load(*group, merchant, kUsers, seconds);
      deliverer.value()->stop();
      (dead ? refused : delivering).push_back(ops);
      fmt::print(
          "run={} cell={} ledger_ops_per_sec={:.0f} ratio={:.3f} deliveries_per_sec={:.0f} "
          "failed_attempts={}\n",
          r + 1, dead ? "refused_endpoint" : "delivering", ops, ops / alone.back(),
          static_cast<double>(c.delivered.load()) / seconds, c.attempt_failures.load());
      if (!dead && c.delivered.load() == 0) {
        fmt::print(stderr, "webhook_bench: nothing was delivered beside the ledger\n");
        return 1;
      }
    }
  }
  const double base = median(alone);
  fmt::print(
      "median ledger_ops_per_sec alone={:.0f} delivering={:.0f} ({:.3f}x) refused_endpoint={:.0f} "
      "({:.3f}x) seconds={} runs={} worker_nice={}\n",
      base, median(delivering), median(delivering) / base, median(refused), median(refused) / base,
      seconds, runs, niceness);
  fmt::print("webhook_bench ok\n");
  return 0;
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
  double ledger_seconds = 0;
  u32 niceness = 0;
  app.add_option("--nice", niceness, "[webhooks] nice: the worker thread's niceness");
  app.add_option("--ledger-seconds", ledger_seconds,
                 "instead: the ledger's throughput for this long, alone and beside deliveries");
  CLI11_PARSE(app, argc, argv);
  if (quick) {
    orders = 500;
    runs = 1;
  }
  if (ledger_seconds > 0) {
    return ledger_beside_deliveries(receiver, std::min(ledger_seconds, 60.0), runs, concurrency,
                                    per_target, niceness);
  }
  std::vector<double> rates;
  for (int r = 0; r < runs; ++r) {
    TempDir dir;
    Receiver sink(receiver, dir.path() / "receiver.log", receiver_threads);
    if (sink.port == 0) {
      fmt::print(stderr, "webhook_bench: the receiver did not start ({})\n", receiver);
      return 1;
    }
    auto store = history::Store::open(dir.path() / "history.sqlite");
    if (!store.ok()) return 1;
    // The webhook store first, so that it starts at the (empty) outbox's head.
    auto deliverer = open_deliverer(dir.path(), *store.value(), concurrency, per_target, niceness);
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
