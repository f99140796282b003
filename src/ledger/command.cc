#include "ledger/command.h"

#include "base/hash.h"

namespace paygate {

u64 content_hash(const Command& command) noexcept {
  Hasher hasher;
  hasher.add(static_cast<u64>(command.kind)).add(command.flags).add(command.extra_hash);
  switch (command.kind) {
    case CommandKind::create_account:
      hasher.add(command.create_account.owner.value)
          .add(command.create_account.currency.code)
          .add(static_cast<u64>(command.create_account.kind));
      break;
    case CommandKind::transfer:
      hasher.add(command.transfer.debit_account_id.value)
          .add(command.transfer.credit_account_id.value)
          .add(command.transfer.amount)
          .add(command.transfer.currency.code)
          .add(command.transfer.timeout_s);
      break;
    case CommandKind::post_pending:
    case CommandKind::void_pending:
      hasher.add(command.pending.transfer_id.value).add(command.pending.amount);
      break;
    case CommandKind::tick:
      break;
  }
  return hasher.value();
}

}  // namespace paygate
