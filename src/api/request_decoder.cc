#include "api/request_decoder.h"

#include <fmt/format.h>

#include <algorithm>
#include <initializer_list>

#include "api/id_text.h"
#include "base/hash.h"
#include "base/ids.h"
#include "history/order_events.h"
#include "orders/order_book.h"

namespace paygate::api {
namespace {

using simdjson::dom::element;
using simdjson::dom::element_type;
using simdjson::dom::object;

Problem problem(ResultCode code, std::string message) {
  return Problem{code, std::move(message)};
}

// A field name for a message: shortened, since it comes from the client.
std::string_view shown(std::string_view key) {
  return key.substr(0, 64);
}

Problem amount_of(element value, std::string_view field, u64* out) {
  if (value.type() != element_type::INT64) {
    return problem(ResultCode::invalid_amount,
                   fmt::format("{} must be an integer amount in minor units, 1 to 2^63-1", field));
  }
  const i64 amount = value.get_int64().value_unsafe();
  if (amount <= 0) {
    return problem(ResultCode::invalid_amount, fmt::format("{} must be greater than zero", field));
  }
  *out = static_cast<u64>(amount);
  return {};
}

Problem id_of(element value, std::string_view field, IdKind kind, u64* out) {
  std::string_view text;
  if (value.get_string().get(text) == simdjson::SUCCESS) {
    // A principal's id must also be of its kind ("mer_" with a user's number is none).
    const auto id = kind == IdKind::merchant   ? parse_principal_id(PrincipalKind::merchant, text)
                    : kind == IdKind::provider ? parse_principal_id(PrincipalKind::provider, text)
                    : kind == IdKind::user     ? parse_principal_id(PrincipalKind::user, text)
                                               : parse_id(kind, text);
    if (id) {
      *out = *id;
      return {};
    }
  }
  return problem(
      ResultCode::invalid_field,
      fmt::format("{} must be an id such as \"{}0000000000000001\"", field, id_prefix_text(kind)));
}

Problem string_of(element value, std::string_view field, std::size_t bytes_max, std::string* out) {
  std::string_view text;
  if (value.get_string().get(text) != simdjson::SUCCESS) {
    return problem(ResultCode::invalid_field, fmt::format("{} must be a string", field));
  }
  if (text.size() > bytes_max) {
    return problem(ResultCode::invalid_field,
                   fmt::format("{} must be at most {} bytes", field, bytes_max));
  }
  // No text field holds NUL: texts are journaled as they are (docs/JOURNAL.md,
  // "Annotations"), and without zero bytes no text can hold what would read as a
  // record's length and trailer there (every length has a zero high byte), which
  // could make a torn write after a crash read as corruption.
  if (text.find('\0') != std::string_view::npos) {
    return problem(ResultCode::invalid_field,
                   fmt::format("{} must not contain U+0000 (NUL)", field));
  }
  out->assign(text);
  return {};
}

Problem bool_of(element value, std::string_view field, bool* out) {
  if (value.get_bool().get(*out) != simdjson::SUCCESS) {
    return problem(ResultCode::invalid_field, fmt::format("{} must be true or false", field));
  }
  return {};
}

Problem u32_of(element value, std::string_view field, u32 min, u32 max, u32* out) {
  i64 number = 0;
  if (value.type() != element_type::INT64 || value.get_int64().get(number) != simdjson::SUCCESS ||
      number < min || number > max) {
    return problem(ResultCode::invalid_field,
                   fmt::format("{} must be an integer from {} to {}", field, min, max));
  }
  *out = static_cast<u32>(number);
  return {};
}

Problem currency_of(element value, Currency* out) {
  std::string_view text;
  if (value.get_string().get(text) == simdjson::SUCCESS) {
    *out = Currency::from(text);
    if (out->valid()) return {};
  }
  return problem(ResultCode::invalid_currency,
                 "currency must be an ISO 4217 code of three capital letters, such as \"USD\"");
}

constexpr u32 kUnknownField = ~u32{0};

// Visits every member of an object; `index_of` numbers the fields allowed (below 32)
// and answers kUnknownField for the rest. Unknown and repeated fields are refused.
// Returns the set of fields seen as a bit mask.
template <typename IndexOf, typename Visit>
Problem visit_fields(object members, IndexOf&& index_of, u32* seen, Visit&& visit) {
  *seen = 0;
  for (const auto field : members) {
    const u32 index = index_of(field.key);
    if (index == kUnknownField) {
      return problem(ResultCode::unknown_field,
                     fmt::format("unknown field \"{}\"", shown(field.key)));
    }
    if (*seen & (1u << index)) {
      return problem(ResultCode::invalid_field,
                     fmt::format("field \"{}\" appears twice", shown(field.key)));
    }
    *seen |= 1u << index;
    Problem p = visit(index, field.value);
    if (!p.ok()) return p;
  }
  return {};
}

// The same, with the fields allowed named in a list: a field's index is its place.
template <typename Visit>
Problem visit_fields(object members, std::initializer_list<std::string_view> known, u32* seen,
                     Visit&& visit) {
  const auto index_of = [known](std::string_view key) {
    u32 index = 0;
    for (const std::string_view name : known) {
      if (name == key) return index;
      ++index;
    }
    return kUnknownField;
  };
  return visit_fields(members, index_of, seen, std::forward<Visit>(visit));
}

Problem require(u32 seen, u32 index, std::string_view field) {
  if (seen & (1u << index)) return {};
  return problem(ResultCode::missing_field, fmt::format("{} is required", field));
}

// Fields of a transfer, shared by POST /v1/transfers and the batch's transfer op.
enum TransferField : u32 {
  kDebit,
  kCredit,
  kAmount,
  kCurrency,
  kPending,
  kTimeout,
  kReference,
  kMetadata,
  kOp,  // batch only
};

// An object, kept minified (`scratch` is reused from request to request).
Problem metadata_of(element value, std::string* scratch, std::string* out) {
  if (value.type() != element_type::OBJECT) {
    return problem(ResultCode::invalid_field, "metadata must be an object");
  }
  *scratch = simdjson::minify(value);
  if (scratch->size() > kMetadataBytesMax) {
    return problem(ResultCode::invalid_field,
                   fmt::format("metadata must be at most {} bytes", kMetadataBytesMax));
  }
  *out = *scratch;
  return {};
}

Problem url_of(element value, std::string_view field, std::string* out) {
  Problem p = string_of(value, field, kUrlBytesMax, out);
  if (p.ok() && !out->starts_with("https://") && !out->starts_with("http://")) {
    p = problem(ResultCode::invalid_field, fmt::format("{} must be an http or https URL", field));
  }
  return p;
}

Problem transfer_field(u32 index, element value, TransferCreate* out, std::string* scratch) {
  switch (index) {
    case kDebit:
      return id_of(value, "debit_account", IdKind::account, &out->debit_account_id);
    case kCredit:
      return id_of(value, "credit_account", IdKind::account, &out->credit_account_id);
    case kAmount:
      return amount_of(value, "amount", &out->amount);
    case kCurrency:
      return currency_of(value, &out->currency);
    case kPending:
      return bool_of(value, "pending", &out->pending);
    case kTimeout:
      return u32_of(value, "timeout_s", 1, 366 * 24 * 3600, &out->timeout_s);
    case kReference:
      return string_of(value, "reference", kReferenceBytesMax, &out->reference);
    case kMetadata:
      return metadata_of(value, scratch, &out->metadata);
  }
  return {};
}

// The fingerprint of what the ledger does not keep of a transfer.
constexpr u64 extra_hash_of(std::string_view reference, std::string_view metadata) noexcept {
  return Hasher{}.add_bytes(reference).add(reference.size()).add_bytes(metadata).value();
}

Problem finish_transfer(u32 seen, TransferCreate* out) {
  constexpr u32 kRequired = 1u << kDebit | 1u << kCredit | 1u << kAmount | 1u << kCurrency;
  if ((seen & kRequired) != kRequired) {
    for (const auto& [index, field] :
         {std::pair{kDebit, "debit_account"}, std::pair{kCredit, "credit_account"},
          std::pair{kAmount, "amount"}, std::pair{kCurrency, "currency"}}) {
      Problem p = require(seen, index, field);
      if (!p.ok()) return p;
    }
  }
  if ((seen & (1u << kTimeout)) && !out->pending) {
    return problem(ResultCode::invalid_field, "timeout_s applies only to pending transfers");
  }
  if (out->debit_account_id == out->credit_account_id) {
    return problem(ResultCode::same_account, "debit_account and credit_account must differ");
  }
  // Reference and metadata are not kept by the ledger; their fingerprint makes a retry
  // that changes them a different request for idempotency.
  // Most transfers have neither: their fingerprint is a constant.
  constexpr u64 kNeither = extra_hash_of({}, {});
  out->extra_hash = out->reference.empty() && out->metadata.empty()
                        ? kNeither
                        : extra_hash_of(out->reference, out->metadata);
  return {};
}

// A transfer's field by name, or kUnknownField; `op` only in a batch. Eight of these
// per batch operation: by length first, so each name is compared once, inline.
u32 transfer_field_index(std::string_view key, bool batch) noexcept {
  switch (key.size()) {
    case 2:
      return batch && key == "op" ? kOp : kUnknownField;
    case 6:
      return key == "amount" ? kAmount : kUnknownField;
    case 7:
      return key == "pending" ? kPending : kUnknownField;
    case 8:
      return key == "currency" ? kCurrency : key == "metadata" ? kMetadata : kUnknownField;
    case 9:
      return key == "timeout_s" ? kTimeout : key == "reference" ? kReference : kUnknownField;
    case 13:
      return key == "debit_account" ? kDebit : kUnknownField;
    case 14:
      return key == "credit_account" ? kCredit : kUnknownField;
    default:
      return kUnknownField;
  }
}

}  // namespace

Problem RequestDecoder::parse(std::string_view body, object* root) {
  // simdjson reads up to SIMDJSON_PADDING bytes past the end: parse from a copy
  // with room to spare (the buffer is reused, so this allocates only while growing).
  padded_.reserve(body.size() + simdjson::SIMDJSON_PADDING);
  padded_.assign(body);
  element document;
  const auto error = parser_.parse(padded_.data(), padded_.size(), false).get(document);
  if (error == simdjson::NUMBER_ERROR) {
    // Amounts are the only numbers without a small bound, so a number too large to
    // parse is an amount above 2^63-1 (or a malformed one: 01, 1_000, 0x10).
    return problem(ResultCode::invalid_amount,
                   "a number is out of range or malformed (amounts: JSON integers 1 to 2^63-1)");
  }
  if (error != simdjson::SUCCESS) {
    return problem(ResultCode::invalid_json,
                   fmt::format("the body is not valid JSON ({})", simdjson::error_message(error)));
  }
  if (document.get_object().get(*root) != simdjson::SUCCESS) {
    return problem(ResultCode::invalid_json, "the body must be a JSON object");
  }
  return {};
}

Problem RequestDecoder::merchant_create(std::string_view body, MerchantCreate* out) {
  *out = MerchantCreate{};
  object root;
  Problem p = parse(body, &root);
  if (!p.ok()) return p;
  u32 seen = 0;
  p = visit_fields(root, {"name", "parent_id", "region"}, &seen, [&](u32 index, element value) {
    switch (index) {
      case 0:
        return string_of(value, "name", kNameBytesMax, &out->name);
      case 1:
        return id_of(value, "parent_id", IdKind::merchant, &out->parent_id);
      default:
        out->has_region = true;
        return u32_of(value, "region", 0, kRegionMax, &out->region);
    }
  });
  if (!p.ok()) return p;
  p = require(seen, 0, "name");
  if (p.ok() && out->name.empty()) p = problem(ResultCode::invalid_field, "name must not be empty");
  return p;
}

Problem RequestDecoder::user_create(std::string_view body, MerchantCreate* out) {
  *out = MerchantCreate{};
  if (body.empty()) return {};
  object root;
  Problem p = parse(body, &root);
  if (!p.ok()) return p;
  u32 seen = 0;
  return visit_fields(root, {"name"}, &seen, [&](u32, element value) {
    return string_of(value, "name", kNameBytesMax, &out->name);
  });
}

Problem RequestDecoder::provider_create(std::string_view body, MerchantCreate* out) {
  *out = MerchantCreate{};
  out->currency = Currency::from("USD");
  object root;
  Problem p = parse(body, &root);
  if (!p.ok()) return p;
  u32 seen = 0;
  p = visit_fields(root, {"name", "currency"}, &seen, [&](u32 index, element value) {
    if (index == 0) return string_of(value, "name", kNameBytesMax, &out->name);
    return currency_of(value, &out->currency);
  });
  if (!p.ok()) return p;
  p = require(seen, 0, "name");
  if (p.ok() && out->name.empty()) p = problem(ResultCode::invalid_field, "name must not be empty");
  return p;
}

Problem RequestDecoder::withdrawal_create(std::string_view body, WithdrawalCreate* out) {
  *out = WithdrawalCreate{};
  object root;
  Problem p = parse(body, &root);
  if (!p.ok()) return p;
  u32 seen = 0;
  p = visit_fields(root, {"account", "amount", "currency", "destination", "provider", "timeout_s"},
                   &seen, [&](u32 index, element value) {
                     switch (index) {
                       case 0:
                         return id_of(value, "account", IdKind::account, &out->account_id);
                       case 1:
                         return amount_of(value, "amount", &out->amount);
                       case 2:
                         return currency_of(value, &out->currency);
                       case 3:
                         return string_of(value, "destination", kReferenceBytesMax,
                                          &out->destination);
                       case 4:
                         return id_of(value, "provider", IdKind::provider, &out->provider_id);
                       default:
                         return u32_of(value, "timeout_s", 1, 366 * 24 * 3600, &out->timeout_s);
                     }
                   });
  if (!p.ok()) return p;
  for (const auto& [index, field] : {std::pair<u32, std::string_view>{0, "account"},
                                     {1, "amount"},
                                     {2, "currency"},
                                     {3, "destination"}}) {
    if (p = require(seen, index, field); !p.ok()) return p;
  }
  if (out->destination.empty()) {
    return problem(ResultCode::invalid_field, "destination must not be empty");
  }
  out->extra_hash =
      Hasher{}.add_bytes(out->destination).add(out->provider_id).add(u64{(seen >> 4) & 1}).value();
  return {};
}

Problem RequestDecoder::withdrawal_result(std::string_view body, WithdrawalResult* out) {
  *out = WithdrawalResult{};
  object root;
  Problem p = parse(body, &root);
  if (!p.ok()) return p;
  u32 seen = 0;
  p = visit_fields(root, {"result", "provider_ref"}, &seen, [&](u32 index, element value) {
    if (index == 1) return string_of(value, "provider_ref", kReferenceBytesMax, &out->provider_ref);
    std::string_view result;
    if (value.get_string().get(result) == simdjson::SUCCESS &&
        (result == "success" || result == "failed")) {
      out->success = result == "success";
      return Problem{};
    }
    return problem(ResultCode::invalid_field, "result must be \"success\" or \"failed\"");
  });
  if (!p.ok()) return p;
  return require(seen, 0, "result");
}

Problem RequestDecoder::order_create(std::string_view body, OrderCreate* out) {
  *out = OrderCreate{};
  object root;
  Problem p = parse(body, &root);
  if (!p.ok()) return p;
  u32 seen = 0;
  p = visit_fields(
      root,
      {"merchant_ref", "amount", "currency", "account", "expires_in_s", "ipn_url", "callback_url",
       "description", "metadata"},
      &seen, [&](u32 index, element value) {
        switch (index) {
          case 0:
            return string_of(value, "merchant_ref", kReferenceBytesMax, &out->merchant_ref);
          case 1:
            return amount_of(value, "amount", &out->amount);
          case 2:
            return currency_of(value, &out->currency);
          case 3:
            return id_of(value, "account", IdKind::account, &out->account_id);
          case 4:
            return u32_of(value, "expires_in_s", 1, kOrderExpiresInMaxS, &out->expires_in_s);
          case 5:
            return url_of(value, "ipn_url", &out->ipn_url);
          case 6:
            return url_of(value, "callback_url", &out->callback_url);
          case 7:
            return string_of(value, "description", kReferenceBytesMax, &out->description);
          default:
            return metadata_of(value, &scratch_, &out->metadata);
        }
      });
  if (!p.ok()) return p;
  for (const auto& [index, field] :
       {std::pair<u32, std::string_view>{0, "merchant_ref"}, {1, "amount"}, {2, "currency"}}) {
    if (p = require(seen, index, field); !p.ok()) return p;
  }
  if (out->merchant_ref.empty()) {
    return problem(ResultCode::invalid_field, "merchant_ref must not be empty");
  }
  out->extra_hash = Hasher{}
                        .add_bytes(out->merchant_ref)
                        .add_bytes(out->ipn_url)
                        .add_bytes(out->callback_url)
                        .add_bytes(out->description)
                        .add_bytes(out->metadata)
                        .add(out->account_id)
                        .value();
  return {};
}

Problem RequestDecoder::order_checkout(std::string_view body, OrderStep* out) {
  *out = OrderStep{};
  object root;
  Problem p = parse(body, &root);
  if (!p.ok()) return p;
  u32 seen = 0;
  std::string_view method;
  p = visit_fields(root, {"signature", "method", "payer_account", "provider"}, &seen,
                   [&](u32 index, element value) {
                     switch (index) {
                       case 0:
                         return string_of(value, "signature", 128, &out->signature);
                       case 1:
                         if (value.get_string().get(method) == simdjson::SUCCESS &&
                             (method == "wallet" || method == "balance" || method == "external")) {
                           out->method =
                               static_cast<u8>(method == "wallet"    ? OrderMethod::wallet
                                               : method == "balance" ? OrderMethod::balance
                                                                     : OrderMethod::external);
                           return Problem{};
                         }
                         return problem(ResultCode::invalid_field,
                                        "method must be \"wallet\", \"balance\" or \"external\"");
                       case 2:
                         return id_of(value, "payer_account", IdKind::account, &out->payer_account);
                       default:
                         return id_of(value, "provider", IdKind::provider, &out->provider_id);
                     }
                   });
  if (!p.ok()) return p;
  if (p = require(seen, 0, "signature"); !p.ok()) return p;
  if (p = require(seen, 1, "method"); !p.ok()) return p;
  const auto method_kind = static_cast<OrderMethod>(out->method);
  if (method_kind == OrderMethod::wallet && !(seen & (1u << 2))) {
    return problem(ResultCode::missing_field, "payer_account is required for method wallet");
  }
  if (method_kind == OrderMethod::external && !(seen & (1u << 3))) {
    return problem(ResultCode::missing_field, "provider is required for method external");
  }
  if ((method_kind != OrderMethod::wallet && (seen & (1u << 2))) ||
      (method_kind == OrderMethod::wallet && (seen & (1u << 3)))) {
    return problem(ResultCode::invalid_field,
                   "payer_account goes with method wallet, provider with external or balance");
  }
  return {};
}

Problem RequestDecoder::order_refund(std::string_view body, OrderStep* out) {
  *out = OrderStep{};
  if (body.empty()) return {};
  object root;
  Problem p = parse(body, &root);
  if (!p.ok()) return p;
  u32 seen = 0;
  return visit_fields(root, {"amount", "reason"}, &seen, [&](u32 index, element value) {
    if (index == 0) return amount_of(value, "amount", &out->amount);
    return string_of(value, "reason", kReferenceBytesMax, &out->reason);
  });
}

Problem RequestDecoder::webhook_endpoint(std::string_view body, EndpointBody kind,
                                         WebhookEndpointChange* out) {
  *out = WebhookEndpointChange{};
  if (body.empty() && kind != EndpointBody::create) return {};
  object root;
  Problem p = parse(body, &root);
  if (!p.ok()) return p;
  u32 seen = 0;
  const auto field = [&](u32 index, element value) {
    if (kind == EndpointBody::rotate) {
      u32 grace = 0;
      Problem q = u32_of(value, "grace_period_s", 0, kWebhookGraceMaxS, &grace);
      if (q.ok()) out->grace_period_s = grace;
      return q;
    }
    switch (index) {
      case 0: {
        std::string url;
        Problem q = url_of(value, "url", &url);
        if (q.ok()) out->url = std::move(url);
        return q;
      }
      case 1: {
        simdjson::dom::array events;
        const Problem bad = problem(
            ResultCode::invalid_field,
            "events must be a non-empty array of event types (\"order.success\", …) or \"*\"");
        if (value.get_array().get(events) != simdjson::SUCCESS || events.size() == 0 ||
            events.size() > history::kEventTypesCount + 1) {
          return bad;
        }
        std::vector<std::string> types;
        for (const element e : events) {
          std::string_view type;
          if (e.get_string().get(type) != simdjson::SUCCESS) return bad;
          const bool known = type == "*" || history::known_event_type(type);
          if (!known) {
            return problem(ResultCode::invalid_field,
                           fmt::format("events: no event type \"{}\"; docs/WEBHOOKS.md lists them",
                                       std::string(type.substr(0, 64))));
          }
          if (std::find(types.begin(), types.end(), type) != types.end()) return bad;
          types.emplace_back(type);
        }
        out->events = std::move(types);
        return Problem{};
      }
      default: {
        bool disabled = false;
        Problem q = bool_of(value, "disabled", &disabled);
        if (q.ok()) out->disabled = disabled;
        return q;
      }
    }
  };
  p = kind == EndpointBody::rotate ? visit_fields(root, {"grace_period_s"}, &seen, field)
      : kind == EndpointBody::create
          ? visit_fields(root, {"url", "events"}, &seen, field)
          : visit_fields(root, {"url", "events", "disabled"}, &seen, field);
  if (!p.ok()) return p;
  if (kind == EndpointBody::create) {
    p = require(seen, 0, "url");
    if (p.ok()) p = require(seen, 1, "events");
  }
  return p;
}

Problem RequestDecoder::order_resolve(std::string_view body, OrderStep* out) {
  *out = OrderStep{};
  object root;
  Problem p = parse(body, &root);
  if (!p.ok()) return p;
  u32 seen = 0;
  p = visit_fields(root, {"action"}, &seen, [&](u32, element value) {
    std::string_view action;
    if (value.get_string().get(action) == simdjson::SUCCESS &&
        (action == "accept" || action == "reject")) {
      out->accept = action == "accept";
      return Problem{};
    }
    return problem(ResultCode::invalid_field, "action must be \"accept\" or \"reject\"");
  });
  if (!p.ok()) return p;
  return require(seen, 0, "action");
}

Problem RequestDecoder::account_create(std::string_view body, AccountCreate* out) {
  *out = AccountCreate{};
  object root;
  Problem p = parse(body, &root);
  if (!p.ok()) return p;
  u32 seen = 0;
  p = visit_fields(root, {"currency", "owner", "kind", "allow_negative", "group"}, &seen,
                   [&](u32 index, element value) {
                     switch (index) {
                       case 0:
                         return currency_of(value, &out->currency);
                       case 1: {
                         // A merchant, a user (a wallet) or a provider.
                         std::string_view text;
                         if (value.get_string().get(text) == simdjson::SUCCESS) {
                           if (const auto id = parse_any_principal_id(text)) {
                             out->owner_id = *id;
                             return Problem{};
                           }
                         }
                         return problem(ResultCode::invalid_field,
                                        "owner must be a merchant's, user's or provider's id "
                                        "(\"mer_…\", \"usr_…\", \"prv_…\")");
                       }
                       case 2: {
                         std::string_view kind;
                         if (value.get_string().get(kind) == simdjson::SUCCESS) {
                           if (kind == "merchant") out->kind = AccountKind::merchant;
                           if (kind == "user") out->kind = AccountKind::user;
                           if (kind == "system") out->kind = AccountKind::system;
                           if (kind == "merchant" || kind == "user" || kind == "system")
                             return Problem{};
                         }
                         return problem(ResultCode::invalid_account_kind,
                                        "kind must be \"merchant\", \"user\" or \"system\"");
                       }
                       case 3:
                         return bool_of(value, "allow_negative", &out->allow_negative);
                       default:
                         out->has_group = true;
                         return u32_of(value, "group", 0, kGroupMax, &out->group);
                     }
                   });
  if (!p.ok()) return p;
  return require(seen, 0, "currency");
}

Problem RequestDecoder::transfer_create(std::string_view body, TransferCreate* out) {
  out->reset();
  object root;
  Problem p = parse(body, &root);
  if (!p.ok()) return p;
  u32 seen = 0;
  p = visit_fields(
      root, [](std::string_view key) { return transfer_field_index(key, /*batch=*/false); }, &seen,
      [&](u32 index, element value) { return transfer_field(index, value, out, &scratch_); });
  if (!p.ok()) return p;
  return finish_transfer(seen, out);
}

Problem RequestDecoder::post_pending(std::string_view body, PendingAction* out) {
  *out = PendingAction{};
  if (body.empty()) return {};
  object root;
  Problem p = parse(body, &root);
  if (!p.ok()) return p;
  u32 seen = 0;
  return visit_fields(root, {"amount"}, &seen,
                      [&](u32, element value) { return amount_of(value, "amount", &out->amount); });
}

Problem RequestDecoder::void_pending(std::string_view body) {
  if (body.empty()) return {};
  object root;
  Problem p = parse(body, &root);
  if (!p.ok()) return p;
  u32 seen = 0;
  return visit_fields(root, {}, &seen, [](u32, element) { return Problem{}; });
}

Problem RequestDecoder::quota_set(std::string_view body, QuotaSet* out) {
  *out = QuotaSet{};
  object root;
  Problem p = parse(body, &root);
  if (!p.ok()) return p;
  u32 seen = 0;
  static constexpr std::string_view kFields[] = {"accounts", "holds", "idempotency_keys", "orders"};
  p = visit_fields(root, {kFields[0], kFields[1], kFields[2], kFields[3]}, &seen,
                   [&](u32 index, element value) {
                     if (value.is_null()) {
                       out->limit[index] = kQuotaGroupDefault;
                       return Problem{};
                     }
                     return u32_of(value, kFields[index], 0, kQuotaMax, &out->limit[index]);
                   });
  if (p.ok() && seen == 0) {
    p = problem(ResultCode::missing_field,
                "give at least one of accounts, holds, idempotency_keys, orders (a number, or "
                "null for the group's default)");
  }
  return p;
}

Problem RequestDecoder::risk_set(std::string_view body, RiskSet* out) {
  *out = RiskSet{};
  object root;
  Problem p = parse(body, &root);
  if (!p.ok()) return p;
  u32 seen = 0;
  p = visit_fields(
      root, {"max_amount", "max_checkouts_per_payer_per_minute", "blocked_payers"}, &seen,
      [&](u32 index, element value) {
        const bool none = value.is_null() || (value.type() == element_type::INT64 &&
                                              value.get_int64().value_unsafe() == 0);
        switch (index) {
          case 0:
            out->has_max_amount = true;
            return none ? Problem{} : amount_of(value, "max_amount", &out->max_amount);
          case 1:
            out->has_payer_velocity = true;
            return none ? Problem{}
                        : u32_of(value, "max_checkouts_per_payer_per_minute", 1, 1'000'000,
                                 &out->max_checkouts_per_payer_per_minute);
          default: {
            out->has_blocked_payers = true;
            if (value.is_null()) return Problem{};
            simdjson::dom::array payers;
            if (value.get_array().get(payers) != simdjson::SUCCESS ||
                payers.size() > kBlockedPayersMax) {
              return problem(ResultCode::invalid_field,
                             fmt::format("blocked_payers must be an array of at most {} principal "
                                         "ids (usr_…, mer_…, prv_…)",
                                         kBlockedPayersMax));
            }
            for (const element payer : payers) {
              std::string_view text;
              std::optional<u64> id;
              if (payer.get_string().get(text) == simdjson::SUCCESS)
                id = parse_any_principal_id(text);
              if (!id) {
                return problem(ResultCode::invalid_field,
                               "blocked_payers names principals by id, such as "
                               "\"usr_0000400000000001\"");
              }
              out->blocked_payers.push_back(*id);
            }
            std::sort(out->blocked_payers.begin(), out->blocked_payers.end());
            out->blocked_payers.erase(
                std::unique(out->blocked_payers.begin(), out->blocked_payers.end()),
                out->blocked_payers.end());
            return Problem{};
          }
        }
      });
  if (p.ok() && seen == 0) {
    p = problem(ResultCode::missing_field,
                "give at least one of max_amount, max_checkouts_per_payer_per_minute, "
                "blocked_payers (null for none)");
  }
  return p;
}

Problem RequestDecoder::batch(std::string_view body, BatchRequest* out) {
  out->atomic = false;
  out->count = 0;
  object root;
  Problem p = parse(body, &root);
  if (!p.ok()) return p;
  u32 seen = 0;
  p = visit_fields(root, {"atomic", "operations"}, &seen, [&](u32 index, element value) {
    if (index == 0) return bool_of(value, "atomic", &out->atomic);
    simdjson::dom::array operations;
    if (value.get_array().get(operations) != simdjson::SUCCESS) {
      return problem(ResultCode::invalid_field, "operations must be an array");
    }
    const std::size_t count = operations.size();
    if (count == 0) return problem(ResultCode::batch_empty, "operations must not be empty");
    if (count > kBatchOperationsMax) {
      return problem(ResultCode::batch_too_large,
                     fmt::format("at most {} operations per batch", kBatchOperationsMax));
    }
    if (out->operations.size() < count) out->operations.resize(count);
    for (const element operation : operations) {
      Problem q = decode_operation(operation, &out->operations[out->count]);
      if (!q.ok()) {
        q.message = fmt::format("operations[{}]: {}", out->count, q.message);
        return q;
      }
      ++out->count;
    }
    return Problem{};
  });
  if (!p.ok()) return p;
  return require(seen, 1, "operations");
}

Problem RequestDecoder::decode_operation(element value, BatchOperation* out) {
  object members;
  if (value.get_object().get(members) != simdjson::SUCCESS) {
    return problem(ResultCode::invalid_field, "each operation must be an object");
  }
  // The first "op" decides the fields allowed (a second one is refused as repeated).
  std::string_view op;
  for (const auto field : members) {
    if (field.key == "op") {
      if (field.value.get_string().get(op) != simdjson::SUCCESS) op = {};
      break;
    }
  }
  if (op != "transfer" && op != "post" && op != "void") {
    return problem(ResultCode::invalid_field, "op must be \"transfer\", \"post\" or \"void\"");
  }
  u32 seen = 0;
  if (op == "transfer") {
    out->op = BatchOp::transfer;
    out->transfer.reset();
    Problem p = visit_fields(
        members, [](std::string_view key) { return transfer_field_index(key, /*batch=*/true); },
        &seen,
        [&](u32 index, element field) {
          return index == kOp ? Problem{} : transfer_field(index, field, &out->transfer, &scratch_);
        });
    if (!p.ok()) return p;
    return finish_transfer(seen, &out->transfer);
  }
  out->op = op == "post" ? BatchOp::post : BatchOp::void_;
  out->transfer_id = 0;
  out->amount = 0;
  const bool post = out->op == BatchOp::post;
  Problem p =
      visit_fields(members, {"op", "transfer_id", "amount"}, &seen, [&](u32 index, element field) {
        if (index == 1) {
          return id_of(field, "transfer_id", IdKind::transfer, &out->transfer_id);
        }
        if (index == 2) {
          if (!post) {
            return problem(ResultCode::unknown_field, "amount applies only to post");
          }
          return amount_of(field, "amount", &out->amount);
        }
        return Problem{};
      });
  if (!p.ok()) return p;
  return require(seen, 1, "transfer_id");
}

}  // namespace paygate::api
