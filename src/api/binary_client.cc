#include "api/binary_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace paygate::api::binary {

Client::~Client() {
  close();
}

void Client::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool Client::write_all(const void* data, std::size_t size) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  while (size > 0) {
    const ssize_t n = ::send(fd_, bytes, size, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    bytes += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

bool Client::read_all(void* data, std::size_t size) {
  auto* bytes = static_cast<unsigned char*>(data);
  while (size > 0) {
    const ssize_t n = ::recv(fd_, bytes, size, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    bytes += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

bool Client::connect(const std::string& host, u16 port, const std::string& admin_token,
                     std::string* error) {
  close();
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  if (fd_ < 0 || ::inet_pton(AF_INET, host.c_str(), &address.sin_addr) != 1 ||
      ::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    *error = std::string("connect: ") + std::strerror(errno);
    close();
    return false;
  }
  const int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  FrameHeader hello;
  hello.type = FrameType::hello;
  hello.count = static_cast<u32>(admin_token.size());
  hello.length = static_cast<u32>(kHeaderBytes + admin_token.size());
  Answer answer;
  if (!write_all(&hello, sizeof hello) || !write_all(admin_token.data(), admin_token.size()) ||
      !receive(&answer) || answer.header.type != FrameType::hello_ok) {
    *error = "hello refused: " + std::string(name(static_cast<ResultCode>(answer.header.status)));
    close();
    return false;
  }
  return true;
}

bool Client::send(u32 request_id, u32 group, std::span<const Command> commands, bool atomic,
                  IdempotencyKey key) {
  FrameHeader header;
  header.type = atomic ? FrameType::atomic : FrameType::commands;
  header.request_id = request_id;
  header.group = group;
  header.count = static_cast<u32>(commands.size());
  header.length = static_cast<u32>(kHeaderBytes + commands.size() * sizeof(WireCommand));
  header.key = key;
  out_.resize(header.length);
  std::memcpy(out_.data(), &header, sizeof header);
  encode_commands(commands, out_.data() + kHeaderBytes);
  return fd_ >= 0 && write_all(out_.data(), out_.size());
}

bool Client::receive(Answer* answer) {
  if (fd_ < 0 || !read_all(&answer->header, sizeof answer->header)) return false;
  const FrameHeader& h = answer->header;
  if (h.length != kHeaderBytes + u64{h.count} * sizeof(WireResult) || h.count > kBatchMax) {
    return false;
  }
  wire_results_.resize(h.count);
  if (!read_all(static_cast<void*>(wire_results_.data()), h.count * sizeof(WireResult))) {
    return false;
  }
  answer->results.resize(h.count);
  for (u32 i = 0; i < h.count; ++i)
    answer->results[i] = decode(wire_results_[i]);
  return true;
}

}  // namespace paygate::api::binary
