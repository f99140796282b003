// Opening a listening TCP socket and accepting on it, shared by the HTTP and binary
// servers.
#pragma once

#include <fmt/format.h>
#include <boost/asio.hpp>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <functional>
#include <optional>
#include <string>

#include "base/status.h"
#include "base/types.h"

namespace paygate::api {

// Binds `acceptor` to address:port and listens: invalid_config for an address that is
// none, busy for one in use, io_error otherwise.
inline Status open_listener(boost::asio::ip::tcp::acceptor& acceptor, const std::string& address,
                            u16 port) {
  boost::system::error_code ec;
  const auto ip = boost::asio::ip::make_address(address, ec);
  if (ec) {
    return Status::invalid_config(fmt::format("bad listen address {}: {}", address, ec.message()));
  }
  const boost::asio::ip::tcp::endpoint endpoint(ip, port);
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(boost::asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(boost::asio::socket_base::max_listen_connections, ec);
  if (ec) {
    std::string message = fmt::format("cannot listen on {}:{}: {}", address, port, ec.message());
    return ec == boost::asio::error::address_in_use ? Status::busy(std::move(message))
                                                    : Status::io_error(std::move(message));
  }
  return Status::success();
}

// Accepts on an open listener until it is closed. Every connection waiting is taken at
// each wake-up (up to kBurst, then the IO thread's other work gets its turn): one
// accept per turn of the listening thread's queue would leave a thousand connections
// that arrive at once waiting seconds behind the traffic of those already in. When
// the process is out of files or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM), it counts
// the failure and waits kBackoff before trying again, instead of spinning on a
// listener that stays readable (any other failure is treated alike).
class AcceptLoop {
 public:
  static constexpr int kBurst = 128;
  static constexpr std::chrono::milliseconds kBackoff{100};
  // `executor` gives each new connection's executor; `on_socket` takes it.
  AcceptLoop(boost::asio::ip::tcp::acceptor& acceptor,
             std::function<boost::asio::any_io_executor()> executor,
             std::function<void(boost::asio::ip::tcp::socket)> on_socket,
             std::atomic<u64>* failures)
      : acceptor_(acceptor),
        backoff_(acceptor.get_executor()),
        executor_(std::move(executor)),
        on_socket_(std::move(on_socket)),
        failures_(failures) {}

  void start() {
    boost::system::error_code ignored;
    acceptor_.non_blocking(true, ignored);
    wait();
  }
  // On the listener's thread (with closing the acceptor).
  void stop() { backoff_.cancel(); }

 private:
  void wait() {
    acceptor_.async_wait(boost::asio::ip::tcp::acceptor::wait_read,
                         [this](boost::system::error_code ec) {
                           if (ec == boost::asio::error::operation_aborted || !acceptor_.is_open())
                             return;
                           take_waiting();
                         });
  }
  void take_waiting() {
    namespace error = boost::asio::error;
    for (int taken = 0; taken < kBurst; ++taken) {
      boost::system::error_code ec;
      // The next connection's socket is made once and kept until a connection fills
      // it: asking for an executor per try would skip IO threads in the round-robin.
      if (!next_) next_.emplace(executor_());
      acceptor_.accept(*next_, ec);
      if (ec == error::would_block || ec == error::try_again) break;
      if (ec == error::operation_aborted || !acceptor_.is_open()) return;
      // That connection failed before it was taken (Linux reports its pending network
      // error here): the next may be fine.
      if (ec == error::connection_aborted || peer_error(ec.value())) continue;
      if (ec) {  // out of files or memory (or anything else): wait, do not spin
        failures_->fetch_add(1, std::memory_order_relaxed);
        backoff_.expires_after(kBackoff);
        backoff_.async_wait([this](boost::system::error_code waited) {
          if (waited != error::operation_aborted && acceptor_.is_open()) wait();
        });
        return;
      }
      on_socket_(std::move(*next_));
      next_.reset();
    }
    wait();
  }
  // accept(2): errors of the new connection that Linux passes on, to be retried.
  static bool peer_error(int code) noexcept {
    switch (code) {
      case EPROTO:
      case ENOPROTOOPT:
      case ENETDOWN:
      case ENETUNREACH:
      case EHOSTDOWN:
      case EHOSTUNREACH:
      case ENONET:
      case EOPNOTSUPP:
        return true;
      default:
        return false;
    }
  }

  boost::asio::ip::tcp::acceptor& acceptor_;
  boost::asio::steady_timer backoff_;
  std::function<boost::asio::any_io_executor()> executor_;
  std::function<void(boost::asio::ip::tcp::socket)> on_socket_;
  std::atomic<u64>* failures_;
  std::optional<boost::asio::ip::tcp::socket> next_;
};

}  // namespace paygate::api
