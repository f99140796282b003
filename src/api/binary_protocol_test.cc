// The binary protocol's payloads in their own layouts (docs/BINARY_PROTOCOL.md).
#include "api/binary_protocol.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

namespace paygate::api::binary {
namespace {

TEST(BinaryProtocol, ResultsRoundTripInTheirWireLayout) {
  const CommandResult result{
      .code = ResultCode::insufficient_funds, .channel_number = 77, .id = 0x0123456789ABCDEF};
  const WireResult wire = encode(result);
  unsigned char bytes[16];
  std::memcpy(bytes, &wire, sizeof bytes);
  EXPECT_EQ(bytes[0], 21);  // insufficient_funds, little-endian
  EXPECT_EQ(bytes[2] | bytes[3], 0);
  EXPECT_EQ(bytes[4], 77);
  EXPECT_EQ(bytes[8], 0xEF);
  EXPECT_EQ(bytes[15], 0x01);
  EXPECT_EQ(decode(wire), result);
}

TEST(BinaryProtocol, CommandsRoundTripThroughAPayload) {
  const std::vector<Command> commands = {
      Command::make_create_account(MerchantId{5}, Currency::from("EUR"), AccountKind::merchant),
      Command::make_transfer(AccountId{1}, AccountId{2}, 300, Currency::from("EUR"))
          .with_key({7, 8}),
      Command::make_void(TransferId{9}),
  };
  std::vector<unsigned char> payload(commands.size() * sizeof(WireCommand));
  encode_commands(commands, payload.data());
  std::vector<Command> back(commands.size());
  decode_commands(payload, back.data());
  EXPECT_EQ(back, commands);
}

}  // namespace
}  // namespace paygate::api::binary
