// A small blocking HTTP/1.1 client over one keep-alive connection, for the tests and
// the load generator: requests can be pipelined (send several, then read the
// answers in order). Loopback use only; not a general-purpose client.
#pragma once

#include <optional>
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

// One whole response at the front of some bytes, seen in place: nullopt until all of
// it has arrived. Content-Length framing only (what paygate sends).
struct ResponseFrame {
  unsigned status = 0;
  std::string_view head;  // header lines after the status line, "\r\n"-separated
  std::string_view body;
  std::size_t size = 0;  // bytes of the whole response
};
std::optional<ResponseFrame> split_response(std::string_view bytes);

// Appends the text of one request (with Host and, for POST or a body, Content-Length).
void append_request(std::string& out, std::string_view host, std::string_view method,
                    std::string_view target, const std::vector<std::string>& headers,
                    std::string_view body);

class HttpClient {
 public:
  HttpClient(std::string host, u16 port) : host_(std::move(host)), port_(port) {}
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  bool connect();
  bool connected() const noexcept { return fd_ >= 0; }
  void close();
  // Sends end of stream (the server has all our requests) and keeps reading.
  void shutdown_send();

  // Writes one request (connecting first if needed). Headers are "Name: value" lines.
  bool send(std::string_view method, std::string_view target,
            const std::vector<std::string>& headers = {}, std::string_view body = {});
  // Writes raw bytes (tests of malformed or slow requests).
  bool send_raw(std::string_view bytes);
  // Reads the next answer; status 0 if the connection closed first or timeout_ms passed.
  HttpResponse receive(int timeout_ms = 10'000);

  // The raw side, for a load generator that handles many answers at once: fill()
  // waits for more bytes (false if none came in time or the connection closed);
  // buffered() is what has arrived and not been consume()d.
  bool fill(int timeout_ms);
  std::string_view buffered() const noexcept { return in_; }
  void consume(std::size_t bytes) { in_.erase(0, bytes); }

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
