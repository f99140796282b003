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
//   http-order     order cycles, three requests each: the merchant creates an order
//                  (POST /v1/orders), checks it out through a provider (method
//                  external), the provider reports success (which moves the money);
//                  --depth cycles in flight per connection; ops are whole cycles
//                  (its line also says order_cycles_per_sec)
//
// Operations: by default each moves 1 from a random funded account to the one hot
// merchant account (the sink). --pending makes each a hold instead (a reservation
// on its debit account: with --accounts 1 every one checks and reserves on one hot
// balance, bench/compare's hot merchant). --one-account-per-request debits one
// account for all of a request's operations (a merchant's batch). --random-pairs
// moves between two random funded accounts (the ledger-benchmark shape); --ops
// bounds the operations of a binary run, its last frame carrying what is left.
// Every run ends by checking that the accounts credited hold exactly the operations
// answered.
//
// Every connection is one thread keeping --depth requests pipelined. A run stops
// after --seconds or --requests, whichever comes first; progress once a second on
// stderr; its line: requests_per_sec=… ops_per_sec=… p50_us=… p99_us=… max_us=…
// over_2s=… (requests answered after more than 2 s, wrk's timeouts), and a line of
// fairness: the slowest and fastest connection's requests against the mean. --runs N
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
#include <memory>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "api/binary_client.h"
#include "api/http_client.h"
#include "api/id_text.h"
#include "api/server_test_support.h"
#include "latency.h"
#include "progress.h"

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
  bool pending = false;     // each operation a hold (pending transfer)
  bool one_account_per_request = false;  // a request's operations all debit one account
  bool random_pairs = false;             // credit a random funded account, not the sink
  u64 ops = 0;                           // binary: at most this many operations (0: no bound)
  std::string server_metrics;            // where to save the server's /metrics after a run
};

struct Totals {
  explicit Totals(u32 connections) : answers(connections) {}

  std::atomic<u64> ops{0};
  std::atomic<u64> failures{0};
  std::atomic<u64> ops_unclaimed{0};  // --ops: operations no frame has taken yet
  LatencyRecord answers;

  // A request answered on the worker `seed` (1-based) after `ns`.
  void answered(u32 seed, u64 ns) { answers.answered(seed - 1, ns); }
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
  std::string provider_id, provider_token, clearing;  // http-order
  std::vector<std::string> sources;                   // funded user accounts
  std::string sink;                                   // the hot merchant account
  std::vector<u64> source_ids;
  u64 sink_id = 0;
};

// Each source account's starting balance: 10,000 of them stay within the bank's i64.
constexpr u64 kFunding = 100'000'000'000'000;

// Opens `count` accounts for the merchant, pipelined 64 at a time (10,000 of them
// one by one, each durable, took seconds).
bool open_accounts(HttpClient& admin_client, const std::vector<std::string>& admin,
                   const std::string& merchant_id, u32 count, std::vector<std::string>* out) {
  const std::string body = R"({"currency":"USD","owner":")" + merchant_id + "\"}";
  for (u32 done = 0; done < count;) {
    const u32 chunk = std::min(count - done, 64u);
    for (u32 i = 0; i < chunk; ++i)
      if (!admin_client.send("POST", "/v1/accounts", admin, body)) return false;
    for (u32 i = 0; i < chunk; ++i) {
      const HttpResponse a = admin_client.receive();
      if (a.status != 201) {
        std::fprintf(stderr, "loadgen: opening an account failed: %u %.300s\n", a.status,
                     a.body.c_str());
        return false;
      }
      out->push_back(text_field(a.body, "id"));
    }
    done += chunk;
  }
  return true;
}

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
  std::vector<std::string> opened;
  if (!open_accounts(admin_client, admin, s->merchant_id, accounts + 1, &opened)) return false;
  s->sink = opened[0];
  s->sink_id = *api::parse_id(api::IdKind::account, s->sink);
  s->sources.assign(opened.begin() + 1, opened.end());
  for (const std::string& source : s->sources)
    s->source_ids.push_back(*api::parse_id(api::IdKind::account, source));
  // Funded from the bank, a batch at a time.
  for (u32 first = 0; first < accounts; first += kBatchMax) {
    std::string batch = R"({"atomic":true,"operations":[)";
    for (u32 i = first; i < std::min(accounts, first + kBatchMax); ++i) {
      batch += (i == first ? "" : ",");
      batch += R"({"op":"transfer","debit_account":")" + bank + R"(","credit_account":")" +
               s->sources[i] + R"(","amount":)" + std::to_string(kFunding) +
               R"(,"currency":"USD"})";
    }
    batch += "]}";
    const HttpResponse f = admin_client.request("POST", "/v1/batch", admin, batch);
    if (f.status != 200 || f.body.find("\"error\"") != std::string::npos) {
      std::fprintf(stderr, "loadgen: funding failed: %u %.300s\n", f.status, f.body.c_str());
      return false;
    }
  }
  // A provider for order checkouts (its clearing account pays the orders).
  r = admin_client.request("POST", "/v1/providers", admin, R"({"name":"loadgen-bank"})");
  if (r.status != 201) return false;
  s->provider_id = text_field(r.body, "id");
  s->clearing = text_field(r.body, "clearing_account");
  s->provider_token = api::testing::make_jwt(s->provider_id, text_field(r.body, "secret"),
                                             std::time(nullptr) + 3600);
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

// A number field of an account, or -1 if it cannot be read.
i64 account_field(HttpClient& admin_client, const std::string& admin_token,
                  const std::string& account, std::string_view field) {
  const HttpResponse r = admin_client.request("GET", "/v1/accounts/" + account,
                                              {"Authorization: Bearer " + admin_token}, "");
  const std::string key = "\"" + std::string(field) + "\":";
  const std::size_t at = r.body.find(key);
  if (r.status != 200 || at == std::string::npos) return -1;
  i64 value = -1;
  std::from_chars(r.body.data() + at + key.size(), r.body.data() + r.body.size(), value);
  return value;
}

// What the run's operations credited, which must be 1 for each one answered: the
// sink's posted credits (for holds, its pending credits), or with --random-pairs the
// same over every funded account, less their funding.
i64 credited(const Options& o, HttpClient& admin_client, const std::string& admin_token,
             const Setup& s) {
  const std::string_view field = o.pending ? "credits_pending" : "credits_posted";
  if (!o.random_pairs) return account_field(admin_client, admin_token, s.sink, field);
  i64 total = 0;
  for (const std::string& source : s.sources) {
    const i64 value = account_field(admin_client, admin_token, source, field);
    if (value < 0) return -1;
    total += value - (o.pending ? 0 : static_cast<i64>(kFunding));
  }
  return total;
}

std::string transfer_json(const std::string& from, const std::string& to, bool pending) {
  return R"({"debit_account":")" + from + R"(","credit_account":")" + to +
         R"(","amount":1,"currency":"USD")" + (pending ? R"(,"pending":true)" : "");
}

// Picks each operation's accounts: (debit, credit) as indexes into the sources, the
// credit being kSink for the hot merchant account.
constexpr u32 kSink = ~0u;
struct Pick {
  const Options& o;
  const Setup& s;
  std::mt19937& random;
  u32 request_debit = 0;

  void new_request() { request_debit = static_cast<u32>(random() % s.sources.size()); }
  std::pair<u32, u32> next() {
    const u32 n = static_cast<u32>(s.sources.size());
    const u32 debit = o.one_account_per_request ? request_debit : static_cast<u32>(random() % n);
    if (!o.random_pairs) return {debit, kSink};
    return {debit, (debit + 1 + static_cast<u32>(random() % (n - 1))) % n};  // another one
  }
};

// One connection's loop over HTTP: keep `depth` requests in flight. The load
// generator shares the server's cores, so it spends as little as it can: requests
// are written up front (prepared_count of them, picked at random), the answers that
// arrive together are handled together, and their replacements leave in one send.
void http_worker(const Options& o, const Setup& s, u16 port, u64 deadline_ns, u64 request_cap,
                 u32 seed, Totals* totals) {
  // Requests written up front: about 5,000 operations' worth, at least 8 (the time to
  // write them counts in the run).
  const u32 prepared_count = std::clamp(5120 / std::max(o.ops_per_request, 1u), 8u, 256u);
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
  std::vector<std::string> prepared(prepared_count);
  Pick pick{o, s, random};
  for (std::string& request : prepared) {
    if (health) {
      api::append_request(request, "127.0.0.1", "GET", "/healthz", headers, "");
      continue;
    }
    std::string body = batch ? R"({"operations":[)" : "";
    pick.new_request();
    for (u32 i = 0; i < ops; ++i) {
      const auto [debit, credit] = pick.next();
      const std::string& from = s.sources[debit];
      const std::string& to = credit == kSink ? s.sink : s.sources[credit];
      if (batch) {
        body += (i ? "," : "");
        body += R"({"op":"transfer",)" + transfer_json(from, to, o.pending).substr(1) + "}";
      } else {
        body += transfer_json(from, to, o.pending) + "}";
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
    out += prepared[random() % prepared_count];
    sent_at[sent++ % o.depth] = now_ns();
  };
  // request_cap bounds this connection's requests (it was once compared with the
  // run's total, which stopped every connection at its share of the cap).
  for (u32 i = 0; i < o.depth && (request_cap == 0 || sent < request_cap); ++i)
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
      totals->answered(seed, now - sent_at[answered++ % o.depth]);
      // Only the status here: every operation's own answer is checked at the end, in
      // one read of the sink's balance (sink_credited).
      const bool ok = r->status == (batch || health ? 200u : 201u);
      if (!ok) totals->failures.fetch_add(1);
      totals->ops.fetch_add(ops, std::memory_order_relaxed);
      if (now < deadline_ns && (request_cap == 0 || sent < request_cap)) queue_one();
    }
    client.consume(used);
    if (!out.empty() && !client.send_raw(out)) {
      totals->failures.fetch_add(1);
      return;
    }
  }
}

// One connection's order cycles over HTTP: `depth` cycles in flight, each sending
// its next request when the last one's answer comes (answers come in order). A cycle
// counts once its provider's result is answered; none starts after the deadline, and
// the ones under way are left where they are (the sink's credits count the finished).
void http_order_worker(const Options& o, const Setup& s, u16 port, u64 deadline_ns, u64 request_cap,
                       u32 seed, Totals* totals) {
  HttpClient client("127.0.0.1", port);
  const std::vector<std::string> merchant = {"Authorization: Bearer " + s.token,
                                             "Content-Type: application/json"};
  const std::vector<std::string> provider = {"Authorization: Bearer " + s.provider_token,
                                             "Content-Type: application/json"};
  struct Cycle {
    u32 phase = 0;  // the request on its way: 0 create, 1 checkout, 2 result
    std::string order, signature;
    u64 sent_ns = 0;
  };
  std::vector<Cycle> cycles(o.depth);
  std::vector<u32> in_flight;  // cycles, in the order their requests went
  u64 sent = 0, made = 0;
  std::string out;
  const auto queue = [&](u32 c) {
    Cycle& cycle = cycles[c];
    if (cycle.phase == 0) {
      const std::string body = R"({"merchant_ref":"lg-)" + std::to_string(seed) + "-" +
                               std::to_string(made++) + R"(","amount":1,"currency":"USD",)" +
                               R"("account":")" + s.sink + "\"}";
      api::append_request(out, "127.0.0.1", "POST", "/v1/orders", merchant, body);
    } else if (cycle.phase == 1) {
      const std::string body = R"({"signature":")" + cycle.signature +
                               R"(","method":"external","provider":")" + s.provider_id + "\"}";
      api::append_request(out, "127.0.0.1", "POST", "/v1/orders/" + cycle.order + "/checkout",
                          merchant, body);
    } else {
      api::append_request(out, "127.0.0.1", "POST", "/v1/orders/" + cycle.order + "/result",
                          provider, R"({"result":"success"})");
    }
    cycle.sent_ns = now_ns();
    in_flight.push_back(c);
    ++sent;
  };
  for (u32 c = 0; c < o.depth && (request_cap == 0 || sent < request_cap); ++c)
    queue(c);
  std::size_t answered = 0;
  while (answered < in_flight.size()) {
    if (!out.empty() && !client.send_raw(out)) {
      totals->failures.fetch_add(1);
      return;
    }
    out.clear();
    if (!client.fill(10'000)) {
      totals->failures.fetch_add(1);
      return;
    }
    std::string_view in = client.buffered();
    std::size_t used = 0;
    while (const auto r = api::split_response(in.substr(used))) {
      const u32 c = in_flight[answered++];
      Cycle& cycle = cycles[c];
      const u64 now = now_ns();
      totals->answered(seed, now - cycle.sent_ns);
      const std::string body(r->body);
      used += r->size;
      if (r->status != (cycle.phase == 0 ? 201u : 200u)) {
        std::fprintf(stderr, "loadgen: order step %u answered %u %.300s\n", cycle.phase, r->status,
                     body.c_str());
        totals->failures.fetch_add(1);
        continue;  // this cycle stops here
      }
      if (cycle.phase == 0) {
        cycle.order = text_field(body, "id");
        cycle.signature = text_field(body, "signature");
      }
      if (cycle.phase == 2) totals->ops.fetch_add(1, std::memory_order_relaxed);
      cycle.phase = (cycle.phase + 1) % 3;
      // A cycle under way finishes; a new one starts only before the deadline.
      if ((cycle.phase != 0 || now < deadline_ns) && (request_cap == 0 || sent < request_cap)) {
        queue(c);
      }
    }
    client.consume(used);
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
  Pick pick{o, s, random};
  // With --ops, a frame takes what is left of the run's operations; none left: true,
  // and nothing sent.
  const auto send_one = [&] {
    u64 size = o.ops_per_request;
    if (o.ops != 0) {
      u64 left = totals->ops_unclaimed.load();
      do {
        size = std::min<u64>(left, o.ops_per_request);
      } while (size > 0 && !totals->ops_unclaimed.compare_exchange_weak(left, left - size));
      if (size == 0) return true;
    }
    frame.resize(size);
    pick.new_request();
    for (Command& c : frame) {
      const auto [debit, credit] = pick.next();
      const AccountId from{s.source_ids[debit]};
      const AccountId to{credit == kSink ? s.sink_id : s.source_ids[credit]};
      c = o.pending ? Command::make_hold(from, to, 1, usd, 0)
                    : Command::make_transfer(from, to, 1, usd);
    }
    sent_at[next_id % o.depth] = now_ns();
    ++outstanding;
    return client.send(next_id++, 0, frame);
  };
  for (u32 i = 0; i < o.depth && (request_cap == 0 || next_id < request_cap); ++i)
    if (!send_one()) return;
  api::binary::Answer answer;
  while (outstanding > 0) {
    if (!client.receive(&answer)) {
      totals->failures.fetch_add(1);
      return;
    }
    --outstanding;
    totals->answered(seed, now_ns() - sent_at[answer.header.request_id % o.depth]);
    bool ok = answer.header.status == 0;
    for (const CommandResult& r : answer.results)
      ok = ok && r.ok();
    if (!ok) totals->failures.fetch_add(1);
    totals->ops.fetch_add(answer.results.size(), std::memory_order_relaxed);
    if (now_ns() < deadline_ns && (request_cap == 0 || next_id < request_cap)) {
      if (!send_one()) return;
    }
  }
}

struct RunResult {
  bool ok = false;
  double requests_per_sec = 0, ops_per_sec = 0, p50_us = 0, p99_us = 0, max_us = 0;
  u64 over_2s = 0;  // requests answered after more than 2 s
  double server_us_per_request = 0;
};

// One run against a fresh server.
RunResult run_once(const Options& o) {
  RunResult result;
  std::filesystem::remove_all(o.data_dir);
  api::testing::ServerProcess server;
  std::string config =
      "[limits]\nrate_per_s = 100000000.0\nrate_burst = 100000000.0\n"
      "[binary]\nwindow = 64\n"
      // One merchant takes the whole group here: no per-merchant share of its tables.
      "[quotas]\naccounts = 2147483648\nholds = 2147483648\nidempotency_keys = 2147483648\n"
      "orders = 2147483648\n";
  if (o.pending) {
    // Every hold stays open: room for all the run may make (bounded by --requests or
    // --ops, which run() requires with --pending), up to 16 M holds (1 GiB). A run
    // that makes more fails its holds with pending_transfers_full.
    const u64 holds = o.ops != 0 ? o.ops : o.requests * std::max(o.ops_per_request, 1u);
    const u64 room = std::clamp<u64>(holds + 1024, 1u << 20, 1u << 24);
    config += "[ledger]\npending_max = " + std::to_string(room) + "\n";
  }
  if (o.mode == "http-order") {
    // Room for every order a run keeps: open ones, and final ones for a second.
    config += "[orders]\norders_max = 262144\nfinal_retained_s = 1\n";
  }
  config += o.server_toml;
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

  Totals totals(o.connections);
  totals.ops_unclaimed = o.ops;
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
      } else if (o.mode == "http-order") {
        http_order_worker(o, setup, server.port(), deadline, cap_per_connection, c + 1, &totals);
      } else {
        http_worker(o, setup, server.port(), deadline, cap_per_connection, c + 1, &totals);
      }
    });
  }
  u64 last = 0;
  Progress progress([&](int second) {
    const u64 ops = totals.ops.load();
    std::fprintf(stderr, "progress t=%ds requests=%llu ops=%llu ops_last_s=%llu\n", second,
                 static_cast<unsigned long long>(totals.answers.requests()),
                 static_cast<unsigned long long>(ops), static_cast<unsigned long long>(ops - last));
    last = ops;
  });
  for (auto& w : workers)
    w.join();
  const double elapsed = static_cast<double>(now_ns() - started) / 1e9;
  const double server_cpu = cpu_seconds(server.pid()) - cpu_before;
  progress.stop();
  // Every operation credits 1: the total credited is the count of operations that
  // succeeded, which must be every one answered.
  const i64 total_credited = credited(o, admin, server.admin_token(), setup);
  if (total_credited != static_cast<i64>(totals.ops.load())) {
    std::fprintf(stderr, "loadgen: %lld credited, but %llu operations were answered\n",
                 static_cast<long long>(total_credited),
                 static_cast<unsigned long long>(totals.ops.load()));
    totals.failures.fetch_add(1);
  }
  if (!o.server_metrics.empty()) {
    // The server's own account of the run (stage latencies, group commit sizes), to
    // read beside the client's figures: docs/OPERATING.md names the series.
    const HttpResponse metrics =
        admin.request("GET", "/metrics", {"Authorization: Bearer " + server.admin_token()});
    std::ofstream(o.server_metrics) << metrics.body;
  }
  const int stopped = server.stop();

  const u64 requests = totals.answers.requests();
  result.requests_per_sec = static_cast<double>(requests) / elapsed;
  result.ops_per_sec = static_cast<double>(totals.ops.load()) / elapsed;
  result.p50_us = totals.answers.percentile_us(0.50);
  result.p99_us = totals.answers.percentile_us(0.99);
  result.max_us = totals.answers.max_us();
  result.over_2s = totals.answers.over_timeout();
  // The server's own CPU per request: less noisy than a rate on a shared machine.
  result.server_us_per_request =
      requests == 0 ? 0 : server_cpu * 1e6 / static_cast<double>(requests);
  std::printf(
      "loadgen mode=%s%s connections=%u depth=%u ops_per_request=%u seconds=%.2f failures=%llu "
      "server_exit=%d ops=%llu requests_per_sec=%.0f ops_per_sec=%.0f p50_us=%.0f p99_us=%.0f "
      "server_cpu_us_per_request=%.2f server_cores=%.2f max_us=%.0f over_2s=%llu\n",
      o.mode.c_str(), o.minimal ? " minimal=1" : "", o.connections, o.depth,
      o.mode == "http-transfer" || o.mode == "http-order" ? 1
      : o.mode == "http-health"                           ? 0
                                                          : o.ops_per_request,
      elapsed, static_cast<unsigned long long>(totals.failures.load()), stopped,
      static_cast<unsigned long long>(totals.ops.load()), result.requests_per_sec,
      result.ops_per_sec, result.p50_us, result.p99_us, result.server_us_per_request,
      server_cpu / elapsed, result.max_us, static_cast<unsigned long long>(result.over_2s));
  if (o.mode == "http-order") {
    std::printf("requests_per_cycle=3 order_cycles_per_sec=%.0f\n", result.ops_per_sec);
  }
  std::printf("fairness slowest_connection_share=%.2f fastest_connection_share=%.2f\n",
              totals.answers.slowest_share(), totals.answers.fastest_share());
  if (o.mode == "binary") {
    // The line of TigerBeetle's built-in benchmark, for comparing with it directly:
    // accepted transfers a second and each frame's (batch's) latency.
    std::printf("transfers_per_sec=%.0f batch_p50_ms=%.3f batch_p99_ms=%.3f batch_max_ms=%.3f\n",
                result.ops_per_sec, result.p50_us / 1e3, result.p99_us / 1e3,
                totals.answers.max_us() / 1e3);
  }
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
      o.mode != "binary" && o.mode != "http-order") {
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
  app.add_option("--mode", o.mode, "http-batch | http-transfer | http-health | http-order | binary")
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
  app.add_flag("--pending", o.pending,
               "each operation a hold (reserves on its debit account); needs --requests or --ops");
  app.add_flag("--one-account-per-request", o.one_account_per_request,
               "all of a request's operations debit one random account");
  app.add_flag("--random-pairs", o.random_pairs,
               "credit a random other funded account instead of the sink (needs --accounts 2+)");
  app.add_option("--ops", o.ops, "binary: run at most this many operations (0: no bound)");
  app.add_option("--server-metrics", o.server_metrics,
                 "save the server's /metrics text here after each run (the last run's stays)");
  CLI11_PARSE(app, argc, argv);
  if ((o.pending && o.requests == 0 && o.ops == 0) || (o.random_pairs && o.accounts < 2) ||
      (o.ops != 0 && o.mode != "binary") || o.accounts == 0) {
    std::fprintf(stderr, "loadgen: bad options (see --help)\n");
    return 2;
  }
  if (o.connections == 0 || o.depth == 0 || o.runs == 0 || o.runs > 100 || o.ops_per_request == 0 ||
      o.ops_per_request > paygate::kBatchMax || o.seconds <= 0 || o.seconds > 600) {
    std::fprintf(stderr, "loadgen: bad options\n");
    return 2;
  }
  return paygate::run(o);
}
