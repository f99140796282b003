// libFuzzer target: bytes → a binary-protocol frame (binary_protocol.h). A frame that
// decodes is applied to a small ledger, each command alone or atomically as the
// frame says: arbitrary command bytes must come back as result codes, and the
// ledger's invariants must hold after every frame.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

#include "api/binary_protocol.h"
#include "ledger/ledger.h"

using namespace paygate;
using namespace paygate::api;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static std::unique_ptr<Ledger> ledger;
  static u64 sequence = 0;
  static u64 frames = 0;
  if (!ledger || ++frames % 1024 == 0) {  // start over now and then: capacities are small
    ledger = std::make_unique<Ledger>(LedgerConfig{.prefix = {0, 0},
                                                   .accounts_max = 64,
                                                   .pending_max = 64,
                                                   .recent_transfers_max = 64,
                                                   .idempotency_keys_max = 64,
                                                   .idempotency_window_ns = 1'000'000'000});
    sequence = 0;
  }
  const binary::DecodedFrame frame = binary::decode_request(std::span(data, size));
  if (frame.code != ResultCode::ok || frame.header.type == binary::FrameType::hello) return 0;
  std::vector<Command> commands(frame.header.count);
  binary::decode_commands(frame.payload, commands.data());
  std::vector<CommandResult> results(commands.size());
  const Stamp stamp{sequence + 1, (sequence + 1) * 1'000'000};
  if (frame.header.type == binary::FrameType::atomic) {
    (void)ledger->apply_atomic(stamp, commands, frame.header.key, results);
  } else {
    ledger->apply_batch(stamp, commands, results);
  }
  sequence += commands.size();
  if (!ledger->check_invariants().ok()) std::abort();
  return 0;
}
