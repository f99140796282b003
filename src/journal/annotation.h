// Annotations: text a request carried that the ledger does not keep (a transfer's
// reference and metadata, an order's description and URLs), journaled just before the
// commands it belongs to so that history can have it (format.h, docs/JOURNAL.md).
// Replay ignores them: they change no state.
#pragma once

#include <string_view>

#include "base/types.h"

namespace paygate::journal {

// What an annotation holds. Readers pass kinds they do not know on untouched.
enum class AnnotationKind : u16 {
  reference = 1,     // a transfer's reference
  metadata = 2,      // a transfer's or an order's metadata: a minified JSON object
  description = 3,   // an order's description
  ipn_url = 4,       // an order's ipn_url
  callback_url = 5,  // an order's callback_url
  merchant_ref = 6,  // an order's merchant_ref
  destination = 7,   // a withdrawal's destination
  provider_ref = 8,  // a provider's reference, with an order's or a withdrawal's result
  reason = 9,        // a refund's reason
};

// An annotation as a writer is given it: `command` counts from the first command it
// may name (the group: the request's first command), so the caller need not know
// sequences. The text must outlive the encoding.
struct Annotation {
  u32 command = 0;
  AnnotationKind kind = AnnotationKind::reference;
  std::string_view text;
};
// An annotation as read: the sequence of its command.
struct AnnotationView {
  u64 sequence = 0;
  AnnotationKind kind = AnnotationKind::reference;
  std::string_view text;
};

}  // namespace paygate::journal
