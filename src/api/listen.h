// Opening a listening TCP socket, shared by the HTTP and binary servers.
#pragma once

#include <fmt/format.h>
#include <boost/asio.hpp>

#include <string>

#include "base/types.h"

namespace paygate::api {

// Binds `acceptor` to address:port and listens; false with `error` on failure.
inline bool open_listener(boost::asio::ip::tcp::acceptor& acceptor, const std::string& address,
                          u16 port, std::string* error) {
  boost::system::error_code ec;
  const auto ip = boost::asio::ip::make_address(address, ec);
  if (ec) {
    *error = fmt::format("bad listen address {}: {}", address, ec.message());
    return false;
  }
  const boost::asio::ip::tcp::endpoint endpoint(ip, port);
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(boost::asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(boost::asio::socket_base::max_listen_connections, ec);
  if (ec) {
    *error = fmt::format("cannot listen on {}:{}: {}", address, port, ec.message());
    return false;
  }
  return true;
}

}  // namespace paygate::api
