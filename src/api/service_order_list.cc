// Orders read from the history store (docs/API.md, "Listing orders"; docs/HISTORY.md):
// pages of a merchant's orders, and an order that has left the engine's memory. The
// store follows the journal a little behind; a read says which sequence of its group
// it reflects (as_of_sequence), and ?min_sequence= waits, bounded, for one seen before.
#include <fmt/format.h>

#include "api/id_text.h"
#include "api/render.h"
#include "api/service.h"
#include "base/log.h"

namespace paygate::api {

namespace {

// How long ?min_sequence= waits for the store before answering history_behind.
constexpr u64 kHistoryWaitNs = 5 * kNanosPerSecond;

OrderCreate said_of(history::OrderRow& row) {
  OrderCreate said;
  said.merchant_ref = std::move(row.merchant_ref);
  said.description = std::move(row.description);
  said.metadata = std::move(row.metadata);
  said.ipn_url = std::move(row.ipn_url);
  said.callback_url = std::move(row.callback_url);
  return said;
}

}  // namespace

bool Service::list_orders(Exchange& ex) {
  OrderListQuery& q = ex.order_list_;
  history::HistoryWorker* history = history_.load(std::memory_order_acquire);
  std::optional<u32> group;  // the one group read (one merchant's orders)
  if (ex.step_ == 0) {
    if (Problem problem = parse_order_list_query(ex.view_.target, &q); !problem.ok()) {
      return fail(ex, problem.code, problem.message);
    }
    if (history == nullptr) {
      return fail(ex, ResultCode::not_implemented,
                  "listing orders reads the history store, which is off here ([history] "
                  "enabled = false); read one order with GET /v1/orders/{id}");
    }
    // A merchant lists its own orders (or a sub-merchant's); an operator anyone's.
    if (!ex.principal_.is_operator && !q.merchant) q.merchant = ex.principal_.merchant->id;
  }
  if (q.merchant) {
    const MerchantRef merchant = merchants_.find(*q.merchant);
    if (merchant == nullptr || !visible_owner(ex, *q.merchant)) {
      return fail(ex, ResultCode::merchant_not_found, "no such merchant");
    }
    group = merchant->group;
  }
  if (ex.step_ == 0 && q.min_sequence) {
    if (!group) {
      return fail(ex, ResultCode::invalid_field,
                  "min_sequence is a sequence of one group: list one merchant's orders "
                  "(merchant=) to wait for it");
    }
    if (history->wait_async(*group, *q.min_sequence, kHistoryWaitNs, &ex)) {
      ex.last_step_ = true;
      return false;  // resumed when the store has it, or when the wait ends
    }
  }
  const u64 as_of = group ? history->watermark(*group) : 0;  // before the read: it reflects this
  if (q.min_sequence && group && as_of < *q.min_sequence) {
    ex.reply.retry_after_s = 1;
    return fail(ex, ResultCode::history_behind,
                fmt::format("the history store of group {} is at sequence {}, not yet {}; retry",
                            *group, as_of, *q.min_sequence));
  }
  if (group && !history->projecting(*group)) {
    return fail(ex, ResultCode::not_durable,
                "the history store does not follow this merchant's group now (logged); retry "
                "later");
  }
  const history::OrderQuery query{
      .merchant = q.merchant.value_or(0),
      .status = q.status,
      .created_from_ns = q.created_from_s.value_or(0) * kNanosPerSecond,
      .created_to_ns = q.created_to_s ? *q.created_to_s * kNanosPerSecond : ~u64{0} >> 1,
      .merchant_ref = q.merchant_ref,
      .after_order = q.cursor,
      .limit = q.limit + 1,  // one more: whether there is a next page
  };
  Result<std::optional<std::vector<history::OrderRow>>> read = history->store().orders(query);
  if (!read.ok()) {
    PG_LOG_ERROR("event=history_read_failed message=\"{}\"", read.status().message());
    return fail(ex, ResultCode::not_durable, "the history store cannot be read now; retry");
  }
  if (!read.value()) {
    return fail(ex, ResultCode::invalid_cursor,
                "cursor is not an order of this list (give the next_cursor of the page before)");
  }
  std::vector<history::OrderRow>& rows = *read.value();
  const bool more = rows.size() > q.limit;
  if (more) rows.resize(q.limit);
  std::vector<ListedOrder> listed;
  listed.reserve(rows.size());
  for (history::OrderRow& row : rows) {
    ListedOrder& o = listed.emplace_back();
    o.order = row.order;
    o.signature = order_signature(row.order);
    o.provider = row.order.provider_account.value != 0
                     ? owners_.owner(row.order.provider_account.value).value_or(0)
                     : 0;
    o.said = said_of(row);
  }
  render_order_list(ex.reply.body, listed, more, as_of);
  return finish(ex, 200);
}

std::optional<bool> Service::order_from_history(Exchange& ex) {
  history::HistoryWorker* history = history_.load(std::memory_order_acquire);
  if (history == nullptr) return std::nullopt;
  const u32 group = id_prefix(ex.path_id_).group;
  if (group >= history->groups()) return std::nullopt;
  const u64 as_of = history->watermark(group);
  Result<std::optional<history::OrderRow>> read = history->store().order(ex.path_id_);
  if (!read.ok()) {
    PG_LOG_ERROR("event=history_read_failed message=\"{}\"", read.status().message());
    return fail(ex, ResultCode::not_durable, "the history store cannot be read now; retry");
  }
  if (!read.value()) return std::nullopt;  // not (yet) there: order_archived
  history::OrderRow& row = *read.value();
  if (!visible_order(ex, row.order)) return fail(ex, ResultCode::order_not_found, "no such order");
  const u64 provider = row.order.provider_account.value != 0
                           ? owners_.owner(row.order.provider_account.value).value_or(0)
                           : 0;
  const OrderCreate said = said_of(row);
  render_order(ex.reply.body, row.order, order_signature(row.order), provider, &said,
               std::max<u64>(as_of, row.updated_sequence));
  return finish(ex, 200);
}

}  // namespace paygate::api
