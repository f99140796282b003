// loadgen: drives a running paygate over HTTP or the binary protocol and reports
// throughput and latency. By default it starts its own `paygate serve` on 127.0.0.1
// with a fresh data directory on the real disk (--data-dir), sets up a merchant and
// funded accounts, runs the load, and stops the server.
//
// Modes:
//   http-batch     POST /v1/batch, --ops-per-request transfers for one merchant each
//                  (the seeds' benchmark shape: 20)
//   http-transfer  POST /v1/transfers, one transfer per request
//   binary         binary-protocol frames of --ops-per-request transfers
//
// Every connection is one thread keeping --depth requests pipelined. A run stops
// after --seconds or --requests, whichever comes first; progress once a second on
// stderr; its line: requests_per_sec=… ops_per_sec=… p50_us=… p99_us=…. --runs N
// repeats on a fresh server and ends with a line of the medians.
//
//   ./build/bench/loadgen --mode http-batch --connections 32 --depth 4 --seconds 5
#include <CLI/CLI.hpp>

#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "api/binary_client.h"
#include "api/http_client.h"
#include "api/id_text.h"
#include "api/server_test_support.h"
#include "base/histogram.h"

namespace paygate {
namespace {

using Clock = std::chrono::steady_clock;
using api::HttpClient;
using api::HttpResponse;

u64 now_ns() {
  return static_cast<u64>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
          .count());
}

struct Options {
  std::string mode = "http-batch";
  u32 connections = 32;
  u32 depth = 4;
  u32 ops_per_request = 20;
  u32 accounts = 1'000;
  double seconds = 5;
  u64 requests = 0;  // 0: no bound but time
  std::string data_dir = "loadgen-data";
  u32 groups = 1;
  u32 runs = 1;             // fresh server each; medians printed after
  std::string server_toml;  // more of the server's TOML config, e.g. "[group]\n…"
  bool minimal = false;     // http-batch: ask for compact answers (Prefer: return=minimal)
};

struct Totals {
  std::atomic<u64> requests{0};
  std::atomic<u64> ops{0};
  std::atomic<u64> failures{0};
  Histogram latency_ns;
};

std::string text_field(const std::string& body, std::string_view field) {
  const std::string key = "\"" + std::string(field) + "\":\"";
  const std::size_t at = body.find(key);
  if (at == std::string::npos) return {};
  const std::size_t start = at + key.size();
  return body.substr(start, body.find('"', start) - start);
}

struct Setup {
  std::string merchant_id, secret, token;
  std::vector<std::string> sources;  // funded user accounts
  std::string sink;                  // the hot merchant account
  std::vector<u64> source_ids;
  u64 sink_id = 0;
};

bool set_up(HttpClient& admin_client, const std::string& admin_token, u32 accounts, Setup* s) {
  const std::vector<std::string> admin = {"Authorization: Bearer " + admin_token,
                                          "Content-Type: application/json"};
  HttpResponse r = admin_client.request("POST", "/v1/merchants", admin, R"({"name":"loadgen"})");
  if (r.status != 201) return false;
  s->merchant_id = text_field(r.body, "id");
  s->secret = text_field(r.body, "secret");
  s->token = api::testing::make_jwt(s->merchant_id, s->secret, std::time(nullptr) + 3600);
  r = admin_client.request("POST", "/v1/accounts", admin, R"({"currency":"USD","kind":"system"})");
  const std::string bank = text_field(r.body, "id");
  const auto open = [&] {
    const HttpResponse a = admin_client.request(
        "POST", "/v1/accounts", admin, R"({"currency":"USD","owner":")" + s->merchant_id + "\"}");
    return text_field(a.body, "id");
  };
  s->sink = open();
  s->sink_id = *api::parse_id(api::IdKind::account, s->sink);
  for (u32 i = 0; i < accounts; ++i) {
    s->sources.push_back(open());
    s->source_ids.push_back(*api::parse_id(api::IdKind::account, s->sources.back()));
    const HttpResponse f = admin_client.request(
        "POST", "/v1/transfers", admin,
        R"({"debit_account":")" + bank + R"(","credit_account":")" + s->sources.back() +
            R"(","amount":4000000000000000,"currency":"USD"})");
    if (f.status != 201) return false;
  }
  return !s->sink.empty() && s->sink_id != 0;
}

// CPU time a process has used so far (user + system), in seconds; 0 if unknown.
double cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), {});
  // Fields after the command name (which may hold spaces) start after the last ')'.
  const std::size_t close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream fields(stat.substr(close + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14 || i == 15) ticks += std::stod(field);  // utime, stime
  }
  return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// The sink account's balance, or -1 if it cannot be read.
i64 sink_credited(HttpClient& admin_client, const std::string& admin_token, const Setup& s) {
  const HttpResponse r = admin_client.request("GET", "/v1/accounts/" + s.sink,
                                              {"Authorization: Bearer " + admin_token}, "");
  const std::string key = "\"balance\":";
  const std::size_t at = r.body.find(key);
  if (r.status != 200 || at == std::string::npos) return -1;
  i64 balance = -1;
  std::from_chars(r.body.data() + at + key.size(), r.body.data() + r.body.size(), balance);
  return balance;
}

std::string transfer_json(const std::string& from, const std::string& to) {
  return R"({"debit_account":")" + from + R"(","credit_account":")" + to +
         R"(","amount":1,"currency":"USD")";
}

// One connection's loop over HTTP: keep `depth` requests in flight. The load
// generator shares the server's cores, so it spends as little as it can: requests
// are written up front (kPrepared of them, picked at random), the answers that
// arrive together are handled together, and their replacements leave in one send.
void http_worker(const Options& o, const Setup& s, u16 port, u64 deadline_ns, u64 request_cap,
                 u32 seed, Totals* totals) {
  constexpr u32 kPrepared = 256;
  HttpClient client("127.0.0.1", port);
  std::vector<std::string> headers = {"Authorization: Bearer " + s.token,
                                      "Content-Type: application/json"};
  if (o.minimal) headers.push_back("Prefer: return=minimal");
  std::mt19937 random(seed);
  const bool batch = o.mode == "http-batch";
  // http-health: the floor under every HTTP figure, an exchange that does no work
  // (GET /healthz with the same headers), over the same connections and pipeline.
  const bool health = o.mode == "http-health";
  const u32 ops = batch ? o.ops_per_request : health ? 0 : 1;
  std::vector<std::string> prepared(kPrepared);
  for (std::string& request : prepared) {
    if (health) {
      api::append_request(request, "127.0.0.1", "GET", "/healthz", headers, "");
      continue;
    }
    std::string body = batch ? R"({"operations":[)" : "";
    for (u32 i = 0; i < ops; ++i) {
      const std::string& from = s.sources[random() % s.sources.size()];
      if (batch) {
        body += (i ? "," : "");
        body += R"({"op":"transfer",)" + transfer_json(from, s.sink).substr(1) + "}";
      } else {
        body += transfer_json(from, s.sink) + "}";
      }
    }
    if (batch) body += "]}";
    api::append_request(request, "127.0.0.1", "POST", batch ? "/v1/batch" : "/v1/transfers",
                        headers, body);
  }
  std::vector<u64> sent_at;  // a ring of depth: answers come in order
  sent_at.resize(o.depth);
  u64 sent = 0, answered = 0;
  std::string out;
  const auto queue_one = [&] {
    out += prepared[random() % kPrepared];
    sent_at[sent++ % o.depth] = now_ns();
  };
  for (u32 i = 0; i < o.depth; ++i)
    queue_one();
  if (!client.send_raw(out)) {
    totals->failures.fetch_add(1);
    return;
  }
  while (answered < sent) {
    if (!client.fill(10'000)) {
      totals->failures.fetch_add(1);
      return;
    }
    out.clear();
    std::string_view in = client.buffered();
    std::size_t used = 0;
    while (const auto r = api::split_response(in.substr(used))) {
      used += r->size;
      const u64 now = now_ns();
      totals->latency_ns.record(now - sent_at[answered++ % o.depth]);
      // Only the status here: every operation's own answer is checked at the end, in
      // one read of the sink's balance (sink_credited).
      const bool ok = r->status == (batch || health ? 200u : 201u);
      if (!ok) totals->failures.fetch_add(1);
      totals->ops.fetch_add(ops, std::memory_order_relaxed);
      const u64 done = totals->requests.fetch_add(1, std::memory_order_relaxed) + 1;
      if (now < deadline_ns && (request_cap == 0 || done + o.depth <= request_cap)) queue_one();
    }
    client.consume(used);
    if (!out.empty() && !client.send_raw(out)) {
      totals->failures.fetch_add(1);
      return;
    }
  }
}

void binary_worker(const Options& o, const Setup& s, u16 port, const std::string& token,
                   u64 deadline_ns, u64 request_cap, u32 seed, Totals* totals) {
  api::binary::Client client;
  std::string error;
  if (!client.connect("127.0.0.1", port, token, &error)) {
    std::fprintf(stderr, "loadgen: %s\n", error.c_str());
    totals->failures.fetch_add(1);
    return;
  }
  constexpr Currency usd = Currency::from("USD");
  std::mt19937 random(seed);
  std::vector<Command> frame(o.ops_per_request);
  std::vector<u64> sent_at(o.depth);
  u32 next_id = 0, outstanding = 0;
  const auto send_one = [&] {
    for (Command& c : frame) {
      c = Command::make_transfer(AccountId{s.source_ids[random() % s.source_ids.size()]},
                                 AccountId{s.sink_id}, 1, usd);
    }
    sent_at[next_id % o.depth] = now_ns();
    ++outstanding;
    return client.send(next_id++, 0, frame);
  };
  for (u32 i = 0; i < o.depth; ++i)
    if (!send_one()) return;
  api::binary::Answer answer;
  while (outstanding > 0) {
    if (!client.receive(&answer)) {
      totals->failures.fetch_add(1);
      return;
    }
    --outstanding;
    totals->latency_ns.record(now_ns() - sent_at[answer.header.request_id % o.depth]);
    bool ok = answer.header.status == 0;
    for (const CommandResult& r : answer.results)
      ok = ok && r.ok();
    if (!ok) totals->failures.fetch_add(1);
    totals->ops.fetch_add(answer.results.size(), std::memory_order_relaxed);
    const u64 done = totals->requests.fetch_add(1, std::memory_order_relaxed) + 1;
    if (now_ns() < deadline_ns && (request_cap == 0 || done + o.depth <= request_cap)) {
      if (!send_one()) return;
    }
  }
}

struct RunResult {
  bool ok = false;
  double requests_per_sec = 0, ops_per_sec = 0, p50_us = 0, p99_us = 0;
  double server_us_per_request = 0;
};

// One run against a fresh server.
RunResult run_once(const Options& o) {
  RunResult result;
  std::filesystem::remove_all(o.data_dir);
  api::testing::ServerProcess server;
  const std::string config =
      "[limits]\nrate_per_s = 100000000.0\nrate_burst = 100000000.0\n"
      "[binary]\nwindow = 64\n" +
      o.server_toml;
  std::fprintf(stderr, "loadgen: starting paygate serve in %s\n", o.data_dir.c_str());
  if (!server.start(o.data_dir, config, {"--groups", std::to_string(o.groups)})) {
    std::fprintf(stderr, "loadgen: the server did not start:\n%s\n", server.log().c_str());
    return result;
  }
  HttpClient admin("127.0.0.1", server.port());
  Setup setup;
  if (!set_up(admin, server.admin_token(), o.accounts, &setup)) {
    std::fprintf(stderr, "loadgen: setup failed\n");
    return result;
  }
  std::fprintf(stderr, "loadgen: %u funded accounts; running %s for %.1f s\n", o.accounts,
               o.mode.c_str(), o.seconds);

  Totals totals;
  const double cpu_before = cpu_seconds(server.pid());
  const u64 started = now_ns();
  const u64 deadline = started + static_cast<u64>(o.seconds * 1e9);
  const u64 cap_per_connection = o.requests == 0 ? 0 : std::max<u64>(1, o.requests / o.connections);
  std::vector<std::thread> workers;
  for (u32 c = 0; c < o.connections; ++c) {
    workers.emplace_back([&, c] {
      if (o.mode == "binary") {
        binary_worker(o, setup, server.binary_port(), server.admin_token(), deadline,
                      cap_per_connection, c + 1, &totals);
      } else {
        http_worker(o, setup, server.port(), deadline, cap_per_connection, c + 1, &totals);
      }
    });
  }
  std::atomic<bool> done{false};
  std::thread progress([&] {
    u64 last = 0;
    for (int second = 1; !done.load(); ++second) {
      for (int i = 0; i < 10 && !done.load(); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      const u64 ops = totals.ops.load();
      std::fprintf(stderr, "progress t=%ds requests=%llu ops=%llu ops_last_s=%llu\n", second,
                   static_cast<unsigned long long>(totals.requests.load()),
                   static_cast<unsigned long long>(ops),
                   static_cast<unsigned long long>(ops - last));
      last = ops;
    }
  });
  for (auto& w : workers)
    w.join();
  const double elapsed = static_cast<double>(now_ns() - started) / 1e9;
  const double server_cpu = cpu_seconds(server.pid()) - cpu_before;
  done = true;
  progress.join();
  // Every operation moves 1 to the sink: its balance is the count of operations that
  // succeeded, which must be every one answered.
  const i64 credited = sink_credited(admin, server.admin_token(), setup);
  if (credited != static_cast<i64>(totals.ops.load())) {
    std::fprintf(stderr, "loadgen: the sink holds %lld, but %llu operations were answered\n",
                 static_cast<long long>(credited),
                 static_cast<unsigned long long>(totals.ops.load()));
    totals.failures.fetch_add(1);
  }
  const int stopped = server.stop();

  result.requests_per_sec = static_cast<double>(totals.requests.load()) / elapsed;
  result.ops_per_sec = static_cast<double>(totals.ops.load()) / elapsed;
  result.p50_us = static_cast<double>(totals.latency_ns.percentile(0.50)) / 1e3;
  result.p99_us = static_cast<double>(totals.latency_ns.percentile(0.99)) / 1e3;
  // The server's own CPU per request: less noisy than a rate on a shared machine.
  result.server_us_per_request =
      totals.requests.load() == 0 ? 0 : server_cpu * 1e6 / static_cast<double>(totals.requests);
  std::printf(
      "loadgen mode=%s%s connections=%u depth=%u ops_per_request=%u seconds=%.2f failures=%llu "
      "server_exit=%d requests_per_sec=%.0f ops_per_sec=%.0f p50_us=%.0f p99_us=%.0f "
      "server_cpu_us_per_request=%.2f server_cores=%.2f\n",
      o.mode.c_str(), o.minimal ? " minimal=1" : "", o.connections, o.depth,
      o.mode == "http-transfer" ? 1
      : o.mode == "http-health" ? 0
                                : o.ops_per_request,
      elapsed, static_cast<unsigned long long>(totals.failures.load()), stopped,
      result.requests_per_sec, result.ops_per_sec, result.p50_us, result.p99_us,
      result.server_us_per_request, server_cpu / elapsed);
  std::fflush(stdout);
  std::filesystem::remove_all(o.data_dir);
  result.ok = totals.failures.load() == 0 && stopped == 0;
  return result;
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

// --runs fresh runs, each line printed, then the medians of each figure.
int run(const Options& o) {
  if (o.mode != "http-batch" && o.mode != "http-transfer" && o.mode != "http-health" &&
      o.mode != "binary") {
    std::fprintf(stderr, "loadgen: unknown mode %s\n", o.mode.c_str());
    return 2;
  }
  std::vector<double> requests, ops, p50, p99, cpu;
  bool ok = true;
  for (u32 i = 0; i < o.runs; ++i) {
    std::fprintf(stderr, "loadgen: run %u of %u\n", i + 1, o.runs);
    const RunResult r = run_once(o);
    ok = ok && r.ok;
    if (!r.ok) break;
    requests.push_back(r.requests_per_sec);
    ops.push_back(r.ops_per_sec);
    p50.push_back(r.p50_us);
    p99.push_back(r.p99_us);
    cpu.push_back(r.server_us_per_request);
  }
  if (ok && o.runs > 1) {
    std::printf(
        "loadgen median_of=%u mode=%s requests_per_sec=%.0f ops_per_sec=%.0f p50_us=%.0f "
        "p99_us=%.0f server_cpu_us_per_request=%.2f\n",
        o.runs, o.mode.c_str(), median(requests), median(ops), median(p50), median(p99),
        median(cpu));
  }
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace paygate

int main(int argc, char** argv) {
  paygate::Options o;
  CLI::App app{"loadgen: load for paygate over HTTP or the binary protocol"};
  app.add_option("--mode", o.mode, "http-batch | http-transfer | http-health | binary")
      ->capture_default_str();
  app.add_option("--connections", o.connections, "connections, one thread each")
      ->capture_default_str();
  app.add_option("--depth", o.depth, "requests pipelined per connection")->capture_default_str();
  app.add_option("--ops-per-request", o.ops_per_request, "transfers per batch or frame")
      ->capture_default_str();
  app.add_option("--accounts", o.accounts, "funded source accounts")->capture_default_str();
  app.add_option("--seconds", o.seconds, "run at most this long")->capture_default_str();
  app.add_option("--requests", o.requests, "run at most this many requests (0: no bound)");
  app.add_option("--data-dir", o.data_dir, "the server's data directory (removed after)")
      ->capture_default_str();
  app.add_option("--runs", o.runs, "runs, each on a fresh server; medians after")
      ->capture_default_str();
  app.add_flag("--minimal", o.minimal,
               "http-batch: ask for compact answers (Prefer: return=minimal, docs/API.md)");
  app.add_option("--server-toml", o.server_toml,
                 "appended to the server's TOML config (not [limits] or [binary])");
  CLI11_PARSE(app, argc, argv);
  if (o.connections == 0 || o.depth == 0 || o.runs == 0 || o.runs > 100 || o.ops_per_request == 0 ||
      o.ops_per_request > paygate::kBatchMax || o.seconds <= 0 || o.seconds > 600) {
    std::fprintf(stderr, "loadgen: bad options\n");
    return 2;
  }
  return paygate::run(o);
}
