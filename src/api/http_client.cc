#include "api/http_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

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

bool HttpClient::send(std::string_view method, std::string_view target,
                      const std::vector<std::string>& headers, std::string_view body) {
  out_.clear();
  out_.append(method).append(" ").append(target).append(" HTTP/1.1\r\nHost: ").append(host_);
  out_.append("\r\n");
  for (const std::string& header : headers)
    out_.append(header).append("\r\n");
  if (!body.empty() || method == "POST") {
    out_.append("Content-Length: ").append(std::to_string(body.size())).append("\r\n");
  }
  out_.append("\r\n").append(body);
  return send_raw(out_);
}

HttpResponse HttpClient::receive(int timeout_ms) {
  HttpResponse response;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  std::size_t header_end = std::string::npos;
  std::size_t content_length = 0;
  for (;;) {
    if (header_end == std::string::npos) {
      header_end = in_.find("\r\n\r\n");
      if (header_end != std::string::npos) {
        // Status line and headers.
        std::string_view head(in_.data(), header_end);
        const std::size_t line_end = head.find("\r\n");
        const std::string_view status_line = head.substr(0, line_end);
        if (status_line.size() >= 12) {
          std::from_chars(status_line.data() + 9, status_line.data() + 12, response.status);
        }
        head.remove_prefix(line_end == std::string_view::npos ? head.size() : line_end + 2);
        while (!head.empty()) {
          const std::size_t end = head.find("\r\n");
          const std::string_view line = head.substr(0, end);
          const std::size_t colon = line.find(':');
          if (colon != std::string_view::npos) {
            std::string name(line.substr(0, colon));
            for (char& c : name)
              c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            std::string_view value = line.substr(colon + 1);
            while (!value.empty() && value.front() == ' ')
              value.remove_prefix(1);
            response.headers.emplace_back(std::move(name), std::string(value));
          }
          head.remove_prefix(end == std::string_view::npos ? head.size() : end + 2);
        }
        const std::string length = response.header("content-length");
        std::from_chars(length.data(), length.data() + length.size(), content_length);
      }
    }
    if (header_end != std::string::npos && in_.size() >= header_end + 4 + content_length) {
      response.body = in_.substr(header_end + 4, content_length);
      in_.erase(0, header_end + 4 + content_length);
      if (response.header("connection") == "close") close();
      return response;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    pollfd poll_fd{.fd = fd_, .events = POLLIN, .revents = 0};
    if (fd_ < 0 || left <= 0 || ::poll(&poll_fd, 1, static_cast<int>(left)) <= 0) {
      close();
      return HttpResponse{};
    }
    char buffer[1 << 16];
    const ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
    if (n <= 0) {
      close();
      return HttpResponse{};
    }
    in_.append(buffer, static_cast<std::size_t>(n));
  }
}

}  // namespace paygate::api
