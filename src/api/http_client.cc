#include "api/http_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/beast/core/string.hpp>
#include <cerrno>
#include <charconv>
#include <chrono>

namespace paygate::api {

std::string HttpResponse::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (key == name) return value;
  }
  return {};
}

HttpClient::~HttpClient() {
  close();
}

bool HttpClient::connect() {
  close();
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return false;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port_);
  if (::inet_pton(AF_INET, host_.c_str(), &address.sin_addr) != 1 ||
      ::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    close();
    return false;
  }
  const int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return true;
}

void HttpClient::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  in_.clear();
}

void HttpClient::shutdown_send() {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_WR);
}

bool HttpClient::send_raw(std::string_view bytes) {
  if (fd_ < 0 && !connect()) return false;
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      // The server may have answered and stopped reading (e.g. 413): keep the socket
      // so that the answer can still be read.
      return false;
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

void append_request(std::string& out, std::string_view host, std::string_view method,
                    std::string_view target, const std::vector<std::string>& headers,
                    std::string_view body) {
  out.append(method).append(" ").append(target).append(" HTTP/1.1\r\nHost: ").append(host);
  out.append("\r\n");
  for (const std::string& header : headers)
    out.append(header).append("\r\n");
  if (!body.empty() || method == "POST") {
    out.append("Content-Length: ").append(std::to_string(body.size())).append("\r\n");
  }
  out.append("\r\n").append(body);
}

bool HttpClient::send(std::string_view method, std::string_view target,
                      const std::vector<std::string>& headers, std::string_view body) {
  out_.clear();
  append_request(out_, host_, method, target, headers, body);
  return send_raw(out_);
}

namespace {

// Calls visit(name, value) for each "Name: value" line of a response head.
template <typename Visit>
void for_each_header(std::string_view head, Visit visit) {
  while (!head.empty()) {
    const std::size_t end = head.find("\r\n");
    const std::string_view line = head.substr(0, end);
    const std::size_t colon = line.find(':');
    if (colon != std::string_view::npos) {
      std::string_view value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ')
        value.remove_prefix(1);
      visit(line.substr(0, colon), value);
    }
    head.remove_prefix(end == std::string_view::npos ? head.size() : end + 2);
  }
}

}  // namespace

std::optional<ResponseFrame> split_response(std::string_view bytes) {
  const std::size_t header_end = bytes.find("\r\n\r\n");
  if (header_end == std::string_view::npos) return std::nullopt;
  ResponseFrame frame;
  std::string_view head = bytes.substr(0, header_end);
  const std::size_t line_end = head.find("\r\n");
  const std::string_view status_line = head.substr(0, line_end);
  if (status_line.size() >= 12) {
    std::from_chars(status_line.data() + 9, status_line.data() + 12, frame.status);
  }
  frame.head = line_end == std::string_view::npos ? std::string_view{} : head.substr(line_end + 2);
  std::size_t content_length = 0;
  for_each_header(frame.head, [&](std::string_view name, std::string_view value) {
    if (boost::beast::iequals({name.data(), name.size()}, "content-length")) {
      std::from_chars(value.data(), value.data() + value.size(), content_length);
    }
  });
  if (bytes.size() < header_end + 4 + content_length) return std::nullopt;
  frame.body = bytes.substr(header_end + 4, content_length);
  frame.size = header_end + 4 + content_length;
  return frame;
}

bool HttpClient::fill(int timeout_ms) {
  pollfd poll_fd{.fd = fd_, .events = POLLIN, .revents = 0};
  if (fd_ < 0 || timeout_ms <= 0 || ::poll(&poll_fd, 1, timeout_ms) <= 0) {
    close();
    return false;
  }
  char buffer[1 << 16];
  const ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
  if (n <= 0) {
    close();
    return false;
  }
  in_.append(buffer, static_cast<std::size_t>(n));
  return true;
}

HttpResponse HttpClient::receive(int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    if (const auto frame = split_response(in_)) {
      HttpResponse response;
      response.status = frame->status;
      for_each_header(frame->head, [&](std::string_view name, std::string_view value) {
        std::string lower(name);
        for (char& c : lower)
          c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        response.headers.emplace_back(std::move(lower), std::string(value));
      });
      response.body = std::string(frame->body);
      consume(frame->size);
      if (response.header("connection") == "close") close();
      return response;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (!fill(static_cast<int>(left))) return HttpResponse{};
  }
}

}  // namespace paygate::api
