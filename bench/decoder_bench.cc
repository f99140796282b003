// decoder_bench: the HTTP edge's JSON decoding alone, one thread, no IO.
//
// Decodes the load generator's request bodies with RequestDecoder, as the gateway
// does on its IO threads:
//   batch20   POST /v1/batch with 20 transfers (the seeds' shape, loadgen (a))
//   transfer  POST /v1/transfers, one transfer (loadgen (b))
// Baseline, in the same run: simdjson's DOM parse of the same body and nothing
// else (no field checks, no ids, no copies), the floor a DOM-based decoder stands
// on. Each line reports the median of the runs in ns per body.
//
//   ./build/bench/decoder_bench [--bodies 200000] [--runs 5] [--quick]
#include <simdjson.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "api/id_text.h"
#include "api/request_decoder.h"

namespace paygate {
namespace {

using Clock = std::chrono::steady_clock;

std::string transfer_fields(u64 from) {
  return R"("debit_account":")" + api::id_text(api::IdKind::account, from) +
         R"(","credit_account":")" + api::id_text(api::IdKind::account, 1) +
         R"(","amount":1,"currency":"USD")";
}

std::string batch_body(u32 operations) {
  std::string body = R"({"operations":[)";
  for (u32 i = 0; i < operations; ++i) {
    body += i == 0 ? "" : ",";
    body += R"({"op":"transfer",)" + transfer_fields(100 + i) + "}";
  }
  return body + "]}";
}

template <typename Decode>
double median_ns_per_body(u32 runs, u64 bodies, Decode&& decode) {
  std::vector<double> ns;
  for (u32 run = 0; run < runs; ++run) {
    const auto start = Clock::now();
    for (u64 i = 0; i < bodies; ++i) {
      if (!decode()) {
        std::fprintf(stderr, "decoder_bench: a body was refused\n");
        std::exit(1);
      }
    }
    ns.push_back(std::chrono::duration<double, std::nano>(Clock::now() - start).count() /
                 static_cast<double>(bodies));
  }
  std::sort(ns.begin(), ns.end());
  return ns[ns.size() / 2];
}

void report(const char* name, std::size_t bytes, double ns, double baseline_ns) {
  std::printf("%-9s bytes=%zu ns_per_body=%.0f dom_parse_only_ns=%.0f ratio=%.2f\n", name, bytes,
              ns, baseline_ns, ns / baseline_ns);
}

}  // namespace
}  // namespace paygate

int main(int argc, char** argv) {
  using namespace paygate;
  u64 bodies = 200'000;
  u32 runs = 5;
  bool quick = false;
  CLI::App app{"decoder_bench: JSON request decoding at the HTTP edge"};
  app.add_option("--bodies", bodies, "bodies decoded per run")->capture_default_str();
  app.add_option("--runs", runs, "runs; medians reported")->capture_default_str();
  app.add_flag("--quick", quick, "a short run that checks the benchmark still works");
  CLI11_PARSE(app, argc, argv);
  if (quick) {
    bodies = 2'000;
    runs = 1;
  }
  if (bodies == 0 || runs == 0) return 2;

  api::RequestDecoder decoder;
  simdjson::dom::parser dom;
  const auto dom_only = [&dom](const std::string& body) {
    return [&dom, &body] {
      simdjson::dom::element root;
      return dom.parse(body).get(root) == simdjson::SUCCESS;
    };
  };

  const std::string batch = batch_body(20);
  api::BatchRequest request;
  const double batch_ns = median_ns_per_body(
      runs, bodies, [&] { return decoder.batch(batch, &request).ok() && request.count == 20; });
  report("batch20", batch.size(), batch_ns, median_ns_per_body(runs, bodies, dom_only(batch)));

  const std::string transfer = "{" + transfer_fields(100) + "}";
  api::TransferCreate one;
  const double transfer_ns = median_ns_per_body(runs, bodies, [&] {
    return decoder.transfer_create(transfer, &one).ok() && one.amount == 1;
  });
  report("transfer", transfer.size(), transfer_ns,
         median_ns_per_body(runs, bodies, dom_only(transfer)));
  std::printf("decoder_bench ok\n");
  return 0;
}
