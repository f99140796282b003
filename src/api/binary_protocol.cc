#include "api/binary_protocol.h"

namespace paygate::api::binary {

ResultCode check_request_header(const FrameHeader& h) noexcept {
  if (h.version != kVersion || h.reserved0 != 0 || h.reserved1 != 0 || h.status != 0) {
    return ResultCode::invalid_command;
  }
  if (h.length < kHeaderBytes || h.length > kFrameBytesMax) return ResultCode::invalid_command;
  switch (h.type) {
    case FrameType::hello:
      if (h.count == 0 || h.count > kTokenBytesMax || h.length != kHeaderBytes + h.count ||
          !h.key.empty()) {
        return ResultCode::invalid_command;
      }
      return ResultCode::ok;
    case FrameType::commands:
    case FrameType::atomic:
      if (h.count == 0) return ResultCode::batch_empty;
      if (h.count > kBatchMax) return ResultCode::batch_too_large;
      if (h.length != kHeaderBytes + u64{h.count} * sizeof(WireCommand))
        return ResultCode::invalid_command;
      if (h.type == FrameType::commands && !h.key.empty()) return ResultCode::invalid_command;
      return ResultCode::ok;
    default:
      return ResultCode::invalid_command;
  }
}

DecodedFrame decode_request(std::span<const unsigned char> frame) noexcept {
  DecodedFrame decoded;
  if (frame.size() < kHeaderBytes) {
    decoded.code = ResultCode::invalid_command;
    return decoded;
  }
  decoded.header = read_header(frame.data());
  decoded.code = check_request_header(decoded.header);
  if (decoded.code != ResultCode::ok) return decoded;
  if (frame.size() != decoded.header.length) {
    decoded.code = ResultCode::invalid_command;
    return decoded;
  }
  decoded.payload = frame.subspan(kHeaderBytes);
  if (decoded.header.type == FrameType::hello) {
    decoded.token = std::string_view(reinterpret_cast<const char*>(decoded.payload.data()),
                                     decoded.payload.size());
  }
  return decoded;
}

}  // namespace paygate::api::binary
