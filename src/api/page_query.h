// The query strings of the paged reads (docs/API.md, events and statements):
//   GET /v1/events?group=<n>&after=<cursor>&limit=<n>&min_sequence=<n>
//   GET /v1/accounts/{id}/entries?cursor=<cursor>&limit=<n>&min_sequence=<n>
// A cursor is "<group>.<sequence>.<index>" in decimal: where an event sits in its
// group's stream (pipeline/event_log.h). Clients treat it as opaque.
//
// Strict, like the JSON decoder: an unknown or repeated parameter, an empty or
// malformed value, or a limit outside 1..kPageMax is refused, never guessed at.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "api/request_decoder.h"
#include "base/types.h"
#include "orders/order_book.h"
#include "pipeline/event_log.h"

namespace paygate::api {

inline constexpr u32 kPageDefault = 100;
inline constexpr u32 kPageMax = 1000;
inline constexpr u32 kOrderPageMax = 100;  // orders are read from the history store

struct Cursor {
  u32 group = 0;
  EventKey key;
  constexpr bool operator==(const Cursor&) const noexcept = default;
};

struct PageQuery {
  u32 limit = kPageDefault;
  std::optional<u32> group;  // events only
  std::optional<Cursor> cursor;
  std::optional<u64> min_sequence;  // wait for the history store to reach it (bounded)
};

enum class PageRoute : u8 {
  events,   // group, after, limit
  entries,  // cursor, limit
};

// Parses the query part of `target` (everything after '?'; none is fine).
Problem parse_page_query(std::string_view target, PageRoute route, PageQuery* out);

// GET /v1/transfers/{id}?min_sequence=<n> and GET /v1/orders/{id}?min_sequence=<n>:
// the one parameter a read of one object takes (any other is refused).
Problem parse_read_query(std::string_view target, std::optional<u64>* min_sequence);

// GET /v1/orders?status=&created_from=&created_to=&merchant_ref=&merchant=&limit=&cursor=
//               &min_sequence= (docs/API.md, "Orders"). Times are Unix seconds;
// the cursor is the last order of the page before ("ord_…"); merchant_ref is
// form-encoded (%XX, '+' a space).
struct OrderListQuery {
  u32 limit = kPageDefault;
  std::optional<OrderStatus> status;
  std::optional<u64> created_from_s, created_to_s;
  std::optional<std::string> merchant_ref;
  std::optional<u64> merchant;  // a principal's id
  std::optional<u64> cursor;    // an order's id
  std::optional<u64> min_sequence;
  bool attention = false;  // attention=true: operators' list of orders that need it
};
Problem parse_order_list_query(std::string_view target, OrderListQuery* out);

// GET /v1/webhook_deliveries?endpoint=&status=&order=&merchant=&limit=&cursor=
// (docs/WEBHOOKS.md): newest first; the cursor is the last delivery of the page before.
struct DeliveryListQuery {
  u32 limit = kPageDefault;
  std::optional<u64> endpoint;        // "whe_…"
  std::optional<std::string> status;  // pending, delivered, failed
  std::optional<u64> order;           // "ord_…", or "wdr_…" (withdrawal=)
  bool withdrawal = false;            // order names a withdrawal
  std::optional<u64> merchant;        // a principal's id
  std::optional<u64> cursor;          // "whd_…"
};
Problem parse_delivery_list_query(std::string_view target, DeliveryListQuery* out);

std::optional<Cursor> parse_cursor(std::string_view text) noexcept;
std::string cursor_text(const Cursor& cursor);

}  // namespace paygate::api
