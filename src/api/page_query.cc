#include "api/page_query.h"

#include <charconv>

#include <fmt/format.h>

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

Problem parse_page_query(std::string_view target, PageRoute route, PageQuery* out) {
  *out = PageQuery{};
  const std::size_t question = target.find('?');
  if (question == std::string_view::npos) return {};
  std::string_view rest = target.substr(question + 1);
  const std::string_view cursor_name = route == PageRoute::events ? "after" : "cursor";
  bool seen_limit = false;
  while (!rest.empty()) {
    const std::size_t amp = rest.find('&');
    const std::string_view pair = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view{} : rest.substr(amp + 1);
    if (pair.empty()) continue;  // "a=1&&b=2", a trailing '&': nothing there
    const std::size_t equals = pair.find('=');
    const std::string_view name = pair.substr(0, equals);
    const std::string_view value =
        equals == std::string_view::npos ? std::string_view{} : pair.substr(equals + 1);
    const auto refuse = [&](ResultCode code, std::string_view why) {
      return Problem{code, fmt::format("query parameter \"{}\" {}", name.substr(0, 64), why)};
    };
    if (name == "limit") {
      if (seen_limit) return refuse(ResultCode::invalid_field, "is given twice");
      seen_limit = true;
      const auto limit = decimal<u32>(value, kPageMax);
      if (!limit || *limit == 0) {
        return refuse(ResultCode::invalid_field, fmt::format("must be 1 to {}", kPageMax));
      }
      out->limit = *limit;
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
    } else {
      return refuse(ResultCode::invalid_field, "is not known here");
    }
  }
  return {};
}

}  // namespace paygate::api
