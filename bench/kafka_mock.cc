// kafka_mock: librdkafka's mock cluster as a process of its own, for measuring the
// server with Kafka publishing on (docs/BENCHMARKS.md): three brokers on 127.0.0.1,
// topics <prefix>ledger and <prefix>orders made with --partitions partitions. Prints
// "kafka_mock brokers=<bootstrap servers>" and serves until --seconds pass or it is
// stopped (SIGTERM, SIGINT); every second, on stderr, that it is alive.
//
//   ./build/bench/kafka_mock [--prefix paygate.] [--partitions 4] [--seconds 600]
#include <CLI/CLI.hpp>

#include <signal.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "publish/kafka_test_support.h"

int main(int argc, char** argv) {
  std::string prefix = "paygate.";
  std::int32_t partitions = 4;
  int seconds = 600;
  CLI::App app{"kafka_mock: librdkafka's mock cluster (three brokers on 127.0.0.1)"};
  app.add_option("--prefix", prefix, "topic prefix (topics <prefix>ledger, <prefix>orders)");
  app.add_option("--partitions", partitions, "partitions per topic")->check(CLI::Range(1, 1024));
  app.add_option("--seconds", seconds, "how long it serves at most")->check(CLI::Range(1, 86400));
  CLI11_PARSE(app, argc, argv);
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);  // before librdkafka's threads start
  paygate::publish::testing::MockCluster cluster({prefix + "ledger", prefix + "orders"},
                                                 partitions);
  std::printf("kafka_mock brokers=%s\n", cluster.brokers().c_str());
  std::fflush(stdout);
  for (int second = 1; second <= seconds; ++second) {
    const timespec one{1, 0};
    if (sigtimedwait(&stop, nullptr, &one) > 0) break;
    std::fprintf(stderr, "kafka_mock: %ds serving\n", second);
  }
  return 0;
}
