// The binary protocol for internal high-throughput clients (docs/BINARY_PROTOCOL.md):
// length-prefixed frames over TCP, each a batch of ledger commands for one group,
// pipelined (many frames in flight; answers carry the request id, and may come back
// in another order than sent when frames go to different groups).
//
//   frame   = header (40 bytes, little-endian) payload
//   hello   : payload = the admin token (count bytes); answered hello_ok or error
//   commands: payload = count × Command (64 bytes, ledger/command.h), each on its own
//   atomic  : the same, all or none, under the header's idempotency key
//   results : payload = count × CommandResult (16 bytes), status = the frame's outcome
//   error   : no payload; status says why; the server closes the connection after it
//
// The first frame on a connection must be hello. Commands are the ledger's own
// layout, so a client must be built from the same version of paygate; `version`
// changes whenever that layout does.
#pragma once

#include <cstring>
#include <span>
#include <string_view>

#include "base/result_code.h"
#include "ledger/command.h"
#include "ledger/ledger.h"

namespace paygate::api::binary {

inline constexpr u16 kVersion = 1;

enum class FrameType : u8 {
  hello = 1,
  hello_ok = 2,
  commands = 3,
  atomic = 4,
  results = 5,
  error = 6,
};

struct FrameHeader {
  u32 length = 0;  // the whole frame, header included
  u16 version = kVersion;
  FrameType type = FrameType::commands;
  u8 reserved0 = 0;
  u32 request_id = 0;  // chosen by the client, echoed in the answer
  u32 group = 0;       // commands / atomic: the group that runs them
  u32 count = 0;       // payload items (commands, results, or token bytes)
  u16 status = 0;      // answers: a ResultCode for the whole frame
  u16 reserved1 = 0;
  IdempotencyKey key;  // atomic: the batch's key (zero: none)
};
static_assert(sizeof(FrameHeader) == 40);
static_assert(std::is_trivially_copyable_v<FrameHeader>);

inline constexpr std::size_t kHeaderBytes = sizeof(FrameHeader);
inline constexpr std::size_t kTokenBytesMax = 256;
inline constexpr std::size_t kFrameBytesMax =
    kHeaderBytes + std::size_t{kBatchMax} * sizeof(Command);

// Checks a header as read from a client: ok, or why the frame is refused
// (invalid_command: malformed; batch_empty / batch_too_large: count).
ResultCode check_request_header(const FrameHeader& header) noexcept;

// Reads a header from the first kHeaderBytes of `bytes` (the caller has them).
inline FrameHeader read_header(const unsigned char* bytes) noexcept {
  FrameHeader header;
  std::memcpy(&header, bytes, sizeof header);
  return header;
}

// A whole request frame: its header checked and its payload the right size. For the
// fuzzer and the server alike.
struct DecodedFrame {
  ResultCode code = ResultCode::ok;
  FrameHeader header;
  std::span<const unsigned char> payload;  // aliasing the input; valid while it lives
  std::string_view token;                  // hello
};
DecodedFrame decode_request(std::span<const unsigned char> frame) noexcept;

// Copies a commands payload into aligned Commands (`out` has header.count of them).
inline void copy_commands(std::span<const unsigned char> payload, Command* out) noexcept {
  std::memcpy(static_cast<void*>(out), payload.data(), payload.size());
}

}  // namespace paygate::api::binary
