// HTTP/1.1 on Boost.Beast: keep-alive and pipelining (a connection's requests
// reach the groups in the order sent, up to pipeline_max at once, and are answered
// in that order, several answers per write), several IO threads, and the protections of
// docs/API.md: a connection limit, header and body limits, and a deadline for each
// request (a client that sends too slowly, or idles too long, is disconnected).
//
// Threads: `io_threads` run one io_context; each connection lives on its own strand,
// so its handlers never run at once. Group threads only post to that strand.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "api/service.h"
#include "base/status.h"
#include "base/types.h"

namespace boost::asio {
class io_context;
}

namespace paygate::api {

struct HttpConfig {
  std::string address = "127.0.0.1";
  u16 port = 8080;     // 0: any free port (tests)
  u32 io_threads = 0;  // 0: the caller picks (paygate serve: the cores the groups leave)
  u32 connections_max = 10'000;
  u64 body_bytes_max = 4u << 20;  // a batch of 8,190 transfers fits
  u32 header_bytes_max = 16u << 10;
  // Pipelined requests of one connection taken at once (answered in order).
  u32 pipeline_max = 64;
  // A whole request (headers and body) must arrive within this long of the
  // previous answer (or of connecting): bounds idle keep-alive connections and
  // slow senders alike.
  u32 request_timeout_ms = 30'000;
};

class IoRuntime;

class HttpServer {
 public:
  HttpServer(Service& service, HttpConfig config, IoRuntime& runtime);
  ~HttpServer();

  // Binds and starts accepting; false with `error` if the address cannot be bound.
  Status listen();
  u16 port() const noexcept { return port_; }
  // Stops accepting new connections (those open carry on until answered).
  void close();
  // Requests handed to a group and not answered yet.
  u64 in_flight() const noexcept { return in_flight_->load(std::memory_order_acquire); }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  Service& service_;
  HttpConfig config_;
  u16 port_ = 0;
  std::shared_ptr<std::atomic<u64>> in_flight_;
};

// The IO threads of a server: one io_context each, and each connection on one of
// them for its life (handed out in turn), so the threads share no scheduler queue and
// no lock. With one io_context run by several threads, a second HTTP IO thread made
// the gateway slower on this project's 2 cores (docs/BENCHMARKS.md).
class IoRuntime {
 public:
  explicit IoRuntime(u32 threads);
  ~IoRuntime();
  void start();
  void stop();
  // For the listener and its timers.
  boost::asio::io_context& context() noexcept { return *contexts_[0]; }
  // The IO thread a new connection lives on: each in turn. Called from the
  // listener's handler only (one at a time).
  boost::asio::io_context& next_context() noexcept {
    return *contexts_[next_++ % contexts_.size()];
  }

 private:
  std::vector<std::unique_ptr<boost::asio::io_context>> contexts_;
  std::vector<std::thread> threads_;
  std::size_t next_ = 0;
};

}  // namespace paygate::api
