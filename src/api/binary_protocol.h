// The binary protocol for internal high-throughput clients (docs/BINARY_PROTOCOL.md):
// length-prefixed frames over TCP, each a batch of ledger commands for one group,
// pipelined (many frames in flight; answers carry the request id, and may come back
// in another order than sent when frames go to different groups).
//
//   frame   = header (40 bytes, little-endian) payload
//   hello   : payload = the admin token (count bytes); answered hello_ok or error
//   commands: payload = count × 64-byte commands (journal/command_layout.h), each on
//             its own
//   atomic  : the same, all or none, under the header's idempotency key
//   results : payload = count × 16-byte results (WireResult), status = the frame's
//             outcome
//   error   : no payload; status says why; the server closes the connection after it
//
// The first frame on a connection must be hello. Commands travel in the layout the
// journal gives them (version 1 of both), and results in WireResult's; encode and
// decode translate from and to the ledger's in-memory types, which may change without
// a new protocol version. `version` changes only when these layouts do.
#pragma once

#include <cstddef>
#include <cstring>
#include <span>
#include <string_view>

#include "base/result_code.h"
#include "journal/command_layout.h"
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
using WireCommand = journal::CommandLayout;
static_assert(sizeof(WireCommand) == 64);

// A result as the protocol carries it.
struct WireResult {
  u16 code;  // a ResultCode
  u16 reserved;
  u32 channel_number;
  u64 id;
};
static_assert(sizeof(WireResult) == 16);
static_assert(offsetof(WireResult, channel_number) == 4 && offsetof(WireResult, id) == 8);

inline WireResult encode(const CommandResult& r) noexcept {
  return WireResult{static_cast<u16>(r.code), 0, r.channel_number, r.id};
}
inline CommandResult decode(const WireResult& w) noexcept {
  return CommandResult{
      .code = static_cast<ResultCode>(w.code), .channel_number = w.channel_number, .id = w.id};
}

inline constexpr std::size_t kFrameBytesMax =
    kHeaderBytes + std::size_t{kBatchMax} * sizeof(WireCommand);

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

// Decodes a commands payload into the ledger's Commands (`out` has room for
// payload.size() / sizeof(WireCommand) of them).
inline void decode_commands(std::span<const unsigned char> payload, Command* out) noexcept {
  for (std::size_t i = 0; i < payload.size() / sizeof(WireCommand); ++i) {
    WireCommand wire;
    std::memcpy(wire.words, payload.data() + i * sizeof wire, sizeof wire);
    out[i] = journal::decode(wire);
  }
}
// Encodes commands as a payload (`out` has commands.size() * sizeof(WireCommand) bytes).
inline void encode_commands(std::span<const Command> commands, unsigned char* out) noexcept {
  for (const Command& command : commands) {
    const WireCommand wire = journal::encode(command);
    std::memcpy(out, wire.words, sizeof wire);
    out += sizeof wire;
  }
}

}  // namespace paygate::api::binary
