// Opening a listening TCP socket, shared by the HTTP and binary servers.
#pragma once

#include <fmt/format.h>
#include <boost/asio.hpp>

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

}  // namespace paygate::api
