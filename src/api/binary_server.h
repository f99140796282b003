// The binary-protocol listener (binary_protocol.h): frames in, group requests out,
// answers back as each frame's commands become durable. Up to `window` frames per
// connection are in flight at once; beyond that the connection is not read until
// one is answered (back-pressure reaches the client through TCP).
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "api/http_server.h"
#include "api/owner_index.h"
#include "api/service.h"
#include "base/status.h"

namespace paygate::api {

struct BinaryConfig {
  std::string address = "127.0.0.1";
  u16 port = 8081;
  u32 io_threads = 0;  // 0: the caller picks (paygate serve: one per core)
  u32 window = 16;     // frames in flight per connection
  u32 connections_max = 1'000;
  u32 idle_timeout_ms = 60'000;
};

class BinaryServer {
 public:
  BinaryServer(Service& service, OwnerIndex& owners, std::string admin_token, BinaryConfig config,
               IoRuntime& runtime);
  ~BinaryServer();

  Status listen();
  u16 port() const noexcept { return port_; }
  void close();
  u64 in_flight() const noexcept { return in_flight_->load(std::memory_order_acquire); }

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
  BinaryConfig config_;
  u16 port_ = 0;
  std::shared_ptr<std::atomic<u64>> in_flight_;
};

}  // namespace paygate::api
