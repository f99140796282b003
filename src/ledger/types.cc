#include "ledger/types.h"

#include "ledger/event.h"

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

std::string_view name(LedgerEventKind kind) noexcept {
  switch (kind) {
    case LedgerEventKind::account_created:
      return "account_created";
    case LedgerEventKind::transfer_posted:
      return "transfer_posted";
    case LedgerEventKind::transfer_pending:
      return "transfer_pending";
    case LedgerEventKind::pending_posted:
      return "pending_posted";
    case LedgerEventKind::pending_voided:
      return "pending_voided";
    case LedgerEventKind::pending_expired:
      return "pending_expired";
  }
  return "unknown";
}

}  // namespace paygate
