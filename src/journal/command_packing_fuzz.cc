// libFuzzer: unpacking never reads past its input, whatever the bytes; and any
// commands, packed, unpack to themselves.
#include <cstdlib>
#include <cstring>
#include <vector>

#include "journal/command_packing.h"

using paygate::Command;
using paygate::u32;

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, std::size_t size) {
  // As journal bytes: a command count, then the packed commands.
  if (size >= 2) {
    const u32 count = 1 + (u32{data[0]} | u32{data[1]} << 8) % 512;
    std::vector<Command> out(count);
    const std::size_t used =
        paygate::journal::unpack_commands(data + 2, size - 2, count, out.data());
    if (used > size - 2) std::abort();
  }
  // As commands: pack them and unpack them again.
  const std::size_t count = size / sizeof(Command);
  if (count == 0) return 0;
  std::vector<Command> commands(count);
  std::memcpy(static_cast<void*>(commands.data()), data, count * sizeof(Command));
  std::vector<unsigned char> packed(count * paygate::journal::kPackedCommandBytesMax + 8);
  paygate::journal::CommandPacker packer;
  unsigned char* at = packed.data();
  for (const Command& c : commands)
    at = packer.pack(c, at);
  const std::size_t bytes = static_cast<std::size_t>(at - packed.data());
  std::vector<Command> back(count);
  if (paygate::journal::unpack_commands(packed.data(), bytes, static_cast<u32>(count),
                                        back.data()) != bytes) {
    std::abort();
  }
  if (back != commands) std::abort();
  return 0;
}
