#include "api/page_query.h"

#include <charconv>

#include <fmt/format.h>

#include "api/id_text.h"
#include "base/ids.h"

namespace paygate::api {

namespace {

// Decimal digits only (no sign, no spaces), within `max`.
template <typename T>
std::optional<T> decimal(std::string_view text, T max) noexcept {
  if (text.empty() || text.size() > 20) return std::nullopt;
  T value{};
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc{} || end != text.data() + text.size() || value > max) return std::nullopt;
  return value;
}

// Calls visit(name, value) for each name=value of the query part of `target`, until
// one answers a problem.
template <typename Visit>
Problem for_each_parameter(std::string_view target, Visit&& visit) {
  const std::size_t question = target.find('?');
  if (question == std::string_view::npos) return {};
  std::string_view rest = target.substr(question + 1);
  while (!rest.empty()) {
    const std::size_t amp = rest.find('&');
    const std::string_view pair = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view{} : rest.substr(amp + 1);
    if (pair.empty()) continue;  // "a=1&&b=2", a trailing '&': nothing there
    const std::size_t equals = pair.find('=');
    const std::string_view name = pair.substr(0, equals);
    const std::string_view value =
        equals == std::string_view::npos ? std::string_view{} : pair.substr(equals + 1);
    if (Problem problem = visit(name, value); problem.code != ResultCode::ok) return problem;
  }
  return {};
}

Problem refusal(std::string_view name, ResultCode code, std::string_view why) {
  return Problem{code, fmt::format("query parameter \"{}\" {}", name.substr(0, 64), why)};
}

// limit=: once, 1 to `max`.
Problem parse_limit(std::string_view name, std::string_view value, u32 max, bool* seen, u32* out) {
  if (*seen) return refusal(name, ResultCode::invalid_field, "is given twice");
  *seen = true;
  const auto limit = decimal<u32>(value, max);
  if (!limit || *limit == 0) {
    return refusal(name, ResultCode::invalid_field, fmt::format("must be 1 to {}", max));
  }
  *out = *limit;
  return {};
}

// application/x-www-form-urlencoded: %XX and '+' for a space; nullopt if malformed.
std::optional<std::string> form_decoded(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '+') {
      out.push_back(' ');
    } else if (text[i] != '%') {
      out.push_back(text[i]);
    } else {
      u8 byte = 0;
      if (i + 2 >= text.size()) return std::nullopt;
      const auto [end, error] = std::from_chars(text.data() + i + 1, text.data() + i + 3, byte, 16);
      // NUL is in no text field (request_decoder.h).
      if (error != std::errc{} || end != text.data() + i + 3 || byte == 0) return std::nullopt;
      out.push_back(static_cast<char>(byte));
      i += 2;
    }
  }
  return out;
}

}  // namespace

std::optional<Cursor> parse_cursor(std::string_view text) noexcept {
  const std::size_t first = text.find('.');
  if (first == std::string_view::npos) return std::nullopt;
  const std::size_t second = text.find('.', first + 1);
  if (second == std::string_view::npos) return std::nullopt;
  const auto group = decimal<u32>(text.substr(0, first), kGroupMax);
  const auto sequence = decimal<u64>(text.substr(first + 1, second - first - 1), ~u64{0});
  const auto index = decimal<u32>(text.substr(second + 1), ~u32{0});
  if (!group || !sequence || !index) return std::nullopt;
  return Cursor{*group, EventKey{*sequence, *index}};
}

std::string cursor_text(const Cursor& cursor) {
  return fmt::format("{}.{}.{}", cursor.group, cursor.key.sequence, cursor.key.index);
}

namespace {

// min_sequence=: once, a sequence number (docs/API.md, "Freshness").
Problem parse_min_sequence(std::string_view name, std::string_view value, std::optional<u64>* out) {
  if (out->has_value()) return refusal(name, ResultCode::invalid_field, "is given twice");
  *out = decimal<u64>(value, ~u64{0} >> 1);
  if (!*out) return refusal(name, ResultCode::invalid_field, "must be a sequence number");
  return {};
}

}  // namespace

Problem parse_page_query(std::string_view target, PageRoute route, PageQuery* out) {
  *out = PageQuery{};
  const std::string_view cursor_name = route == PageRoute::events ? "after" : "cursor";
  bool seen_limit = false;
  return for_each_parameter(target, [&](std::string_view name, std::string_view value) {
    const auto refuse = [&](ResultCode code, std::string_view why) {
      return refusal(name, code, why);
    };
    if (name == "limit") {
      return parse_limit(name, value, kPageMax, &seen_limit, &out->limit);
    } else if (name == cursor_name) {
      if (out->cursor) return refuse(ResultCode::invalid_cursor, "is given twice");
      out->cursor = parse_cursor(value);
      if (!out->cursor) {
        return refuse(ResultCode::invalid_cursor, "is not a cursor this API gave out");
      }
    } else if (name == "group" && route == PageRoute::events) {
      if (out->group) return refuse(ResultCode::invalid_field, "is given twice");
      out->group = decimal<u32>(value, kGroupMax);
      if (!out->group) return refuse(ResultCode::invalid_field, "must be a group number");
    } else if (name == "min_sequence") {
      return parse_min_sequence(name, value, &out->min_sequence);
    } else {
      return refuse(ResultCode::invalid_field, "is not known here");
    }
    return Problem{};
  });
}

Problem parse_read_query(std::string_view target, std::optional<u64>* min_sequence) {
  *min_sequence = std::nullopt;
  return for_each_parameter(target, [&](std::string_view name, std::string_view value) {
    if (name == "min_sequence") return parse_min_sequence(name, value, min_sequence);
    return refusal(name, ResultCode::invalid_field, "is not known here");
  });
}

Problem parse_order_list_query(std::string_view target, OrderListQuery* out) {
  *out = OrderListQuery{};
  bool seen_limit = false;
  return for_each_parameter(target, [&](std::string_view name, std::string_view value) {
    const auto refuse = [&](ResultCode code, std::string_view why) {
      return refusal(name, code, why);
    };
    // Each parameter once: a second would be a guess at which one was meant.
    const auto once = [&](auto& field) {
      return field.has_value() ? refuse(ResultCode::invalid_field, "is given twice") : Problem{};
    };
    const auto seconds = [&](std::optional<u64>& field) {
      if (Problem p = once(field); !p.ok()) return p;
      field = decimal<u64>(value, u64{1} << 33);  // Unix seconds, past year 2200
      if (!field) return refuse(ResultCode::invalid_field, "must be a time in Unix seconds");
      return Problem{};
    };
    if (name == "limit") {
      return parse_limit(name, value, kOrderPageMax, &seen_limit, &out->limit);
    } else if (name == "status") {
      if (Problem p = once(out->status); !p.ok()) return p;
      for (u8 s = 1; s <= static_cast<u8>(OrderStatus::exception_checkout); ++s) {
        if (paygate::name(static_cast<OrderStatus>(s)) == value)
          out->status = static_cast<OrderStatus>(s);
      }
      if (!out->status) return refuse(ResultCode::invalid_field, "is not an order status");
    } else if (name == "created_from") {
      return seconds(out->created_from_s);
    } else if (name == "created_to") {
      return seconds(out->created_to_s);
    } else if (name == "merchant_ref") {
      if (Problem p = once(out->merchant_ref); !p.ok()) return p;
      out->merchant_ref = form_decoded(value);
      if (!out->merchant_ref || out->merchant_ref->empty()) {
        return refuse(ResultCode::invalid_field, "must be a form-encoded, non-empty text");
      }
    } else if (name == "merchant") {
      if (Problem p = once(out->merchant); !p.ok()) return p;
      out->merchant = parse_any_principal_id(value);
      if (!out->merchant) return refuse(ResultCode::invalid_field, "is not a principal's id");
    } else if (name == "cursor") {
      if (out->cursor) return refuse(ResultCode::invalid_cursor, "is given twice");
      out->cursor = parse_id(IdKind::order, value);
      if (!out->cursor) return refuse(ResultCode::invalid_cursor, "is not an order's id");
    } else if (name == "attention") {
      if (value != "true" && value != "false") {
        return refuse(ResultCode::invalid_field, "must be true or false");
      }
      out->attention = value == "true";
    } else if (name == "min_sequence") {
      return parse_min_sequence(name, value, &out->min_sequence);
    } else {
      return refuse(ResultCode::invalid_field, "is not known here");
    }
    return Problem{};
  });
}

Problem parse_delivery_list_query(std::string_view target, DeliveryListQuery* out) {
  *out = DeliveryListQuery{};
  bool seen_limit = false;
  return for_each_parameter(target, [&](std::string_view name, std::string_view value) {
    const auto refuse = [&](ResultCode code, std::string_view why) {
      return refusal(name, code, why);
    };
    const auto id = [&](std::optional<u64>& field, IdKind kind, ResultCode code) {
      if (field) return refuse(code, "is given twice");
      field = parse_id(kind, value);
      if (!field) return refuse(code, fmt::format("is not an id {}…", id_prefix_text(kind)));
      return Problem{};
    };
    if (name == "limit") return parse_limit(name, value, kOrderPageMax, &seen_limit, &out->limit);
    if (name == "endpoint")
      return id(out->endpoint, IdKind::webhook_endpoint, ResultCode::invalid_field);
    if (name == "order" || name == "withdrawal") {
      if (out->order) {
        return refuse(ResultCode::invalid_field, out->withdrawal == (name == "withdrawal")
                                                     ? "is given twice"
                                                     : "order and withdrawal: one at most");
      }
      out->withdrawal = name == "withdrawal";
      return id(out->order, out->withdrawal ? IdKind::withdrawal : IdKind::order,
                ResultCode::invalid_field);
    }
    if (name == "cursor")
      return id(out->cursor, IdKind::webhook_delivery, ResultCode::invalid_cursor);
    if (name == "status") {
      if (out->status) return refuse(ResultCode::invalid_field, "is given twice");
      if (value != "pending" && value != "delivered" && value != "failed") {
        return refuse(ResultCode::invalid_field, "must be pending, delivered or failed");
      }
      out->status = std::string(value);
      return Problem{};
    }
    if (name == "merchant") {
      if (out->merchant) return refuse(ResultCode::invalid_field, "is given twice");
      out->merchant = parse_any_principal_id(value);
      if (!out->merchant) return refuse(ResultCode::invalid_field, "is not a principal's id");
      return Problem{};
    }
    return refuse(ResultCode::invalid_field, "is not known here");
  });
}

}  // namespace paygate::api
