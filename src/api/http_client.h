// A small blocking HTTP/1.1 client over one keep-alive connection, for the tests and
// the load generator: requests can be pipelined (send several, then read the
// answers in order). Loopback use only; not a general-purpose client.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/types.h"

namespace paygate::api {

struct HttpResponse {
  unsigned status = 0;  // 0: the connection failed or closed
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased

  std::string header(std::string_view name) const;
};

class HttpClient {
 public:
  HttpClient(std::string host, u16 port) : host_(std::move(host)), port_(port) {}
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  bool connect();
  bool connected() const noexcept { return fd_ >= 0; }
  void close();

  // Writes one request (connecting first if needed). Headers are "Name: value" lines.
  bool send(std::string_view method, std::string_view target,
            const std::vector<std::string>& headers = {}, std::string_view body = {});
  // Writes raw bytes (tests of malformed or slow requests).
  bool send_raw(std::string_view bytes);
  // Reads the next answer; status 0 if the connection closed first or timeout_ms passed.
  HttpResponse receive(int timeout_ms = 10'000);

  HttpResponse request(std::string_view method, std::string_view target,
                       const std::vector<std::string>& headers = {}, std::string_view body = {}) {
    const bool sent = send(method, target, headers, body);
    if (!sent && !connected()) return {};
    return receive();  // even after a partial send: the server may have answered early
  }

 private:
  std::string host_;
  u16 port_;
  int fd_ = -1;
  std::string in_;   // bytes read and not yet consumed
  std::string out_;  // reused request buffer
};

}  // namespace paygate::api
