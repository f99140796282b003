#include "ledger/types.h"

namespace paygate {

std::string_view name(AccountKind kind) noexcept {
  switch (kind) {
    case AccountKind::merchant:
      return "merchant";
    case AccountKind::user:
      return "user";
    case AccountKind::system:
      return "system";
  }
  return "unknown";
}

std::string_view name(TransferStatus status) noexcept {
  switch (status) {
    case TransferStatus::posted:
      return "posted";
    case TransferStatus::pending:
      return "pending";
    case TransferStatus::voided:
      return "voided";
    case TransferStatus::expired:
      return "expired";
  }
  return "unknown";
}

}  // namespace paygate
