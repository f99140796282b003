// A small blocking client for the binary protocol (binary_protocol.h), used by the
// load generator and the tests. Pipelining is the caller's: send() several frames,
// then receive() their answers (in completion order; match them by request id).
#pragma once

#include <span>
#include <string>
#include <vector>

#include "api/binary_protocol.h"

namespace paygate::api::binary {

struct Answer {
  FrameHeader header;                  // type results or error; status; request_id
  std::vector<CommandResult> results;  // header.count of them
};

class Client {
 public:
  Client() = default;
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Connects and says hello; false with `error` on failure.
  bool connect(const std::string& host, u16 port, const std::string& admin_token,
               std::string* error);
  bool send(u32 request_id, u32 group, std::span<const Command> commands, bool atomic = false,
            IdempotencyKey key = {});
  // Blocks for the next answer; false if the connection closed.
  bool receive(Answer* answer);
  void close();

 private:
  bool write_all(const void* data, std::size_t size);
  bool read_all(void* data, std::size_t size);

  int fd_ = -1;
  std::vector<unsigned char> out_;
  std::vector<WireResult> wire_results_;  // an answer as read
};

}  // namespace paygate::api::binary
