// Orders read from the history store (docs/API.md, "Orders"; docs/HISTORY.md):
// pages of a merchant's orders, and an order that has left the engine's memory. The
// store follows the journal a little behind; a read says which sequence of its group
// it reflects (as_of_sequence), and ?min_sequence= waits, bounded, for one seen before.
#include <fmt/format.h>

#include "api/crypto.h"
#include "api/id_text.h"
#include "api/render.h"
#include "api/service.h"
#include "api/service_internal.h"
#include "base/log.h"

namespace paygate::api {

namespace {

// What the order's request said, as the caller may see it: the merchant side (and
// operators) all of it; the payer and the provider what the order is (merchant_ref,
// description), not the merchant's metadata nor where it is told and sends the payer.
OrderCreate said_of(history::OrderRow& row, bool merchant_side = true) {
  OrderCreate said;
  said.merchant_ref = std::move(row.merchant_ref);
  said.description = std::move(row.description);
  if (merchant_side) {
    said.metadata = std::move(row.metadata);
    said.ipn_url = std::move(row.ipn_url);
    said.callback_url = std::move(row.callback_url);
  }
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
                  "enabled = false) or not open yet (tried again in the background: "
                  "docs/HISTORY.md); read one order with GET /v1/orders/{id}");
    }
    if (q.attention && !ex.principal_.is_operator) {
      return fail(ex, ResultCode::operator_only,
                  "the orders that need attention are listed for operators");
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
  for (u32 g = 0; g < history->groups(); ++g) {
    if ((!group || g == *group) && !history->projecting(g)) {
      return fail(ex, ResultCode::not_durable,
                  fmt::format("the history store does not follow group {} now (logged); retry "
                              "later",
                              g));
    }
  }
  std::vector<u64>& wanted = ex.history_wanted_;
  if (ex.step_ == 0) {
    if (q.min_sequence && !group) {
      return fail(ex, ResultCode::invalid_field,
                  "min_sequence is a sequence of one group: list one merchant's orders "
                  "(merchant=) to wait for it");
    }
    // Read your writes: the list reflects at least every order acknowledged before it
    // was asked for (what each group read has made durable by now), and min_sequence.
    wanted.assign(engine().groups(), 0);
    for (u32 g = 0; g < engine().groups(); ++g) {
      if (group && g != *group) continue;
      wanted[g] =
          std::max(engine().group(g).durable_sequence(), group ? q.min_sequence.value_or(0) : 0);
    }
    ex.history_wait_until_ns_ = now_ns() + history->config().read_wait_ns;
  }
  // One group at a time, all within the one bound.
  const u64 now = now_ns();
  ex.last_step_ = true;  // (before the wait: the worker may resume it at once)
  for (u32 g = 0; g < wanted.size() && now < ex.history_wait_until_ns_; ++g) {
    if (history->wait_async(g, wanted[g], ex.history_wait_until_ns_ - now, &ex)) {
      return false;  // resumed when the store has it, or when the wait ends
    }
  }
  const u64 as_of = group ? history->watermark(*group) : 0;  // before the read: it reflects this
  // Not reached: min_sequence is strict; the implicit wait of one merchant's list
  // answers what the store has (as_of_sequence says how far); a list of every group
  // has no single sequence to say that with, so it is refused too.
  for (u32 g = 0; g < wanted.size(); ++g) {
    const bool strict = !group || (q.min_sequence && history->watermark(g) < *q.min_sequence);
    if (history->watermark(g) < wanted[g] && strict) {
      ex.reply.retry_after_s = 1;
      return fail(ex, ResultCode::history_behind,
                  fmt::format("the history store of group {} is at sequence {}, not yet {}; "
                              "retry",
                              g, history->watermark(g), wanted[g]));
    }
  }
  const history::OrderQuery query{
      .merchant = q.merchant.value_or(0),
      .status = q.status,
      .created_from_ns = q.created_from_s.value_or(0) * kNanosPerSecond,
      .created_to_ns = q.created_to_s ? *q.created_to_s * kNanosPerSecond : ~u64{0} >> 1,
      .merchant_ref = q.merchant_ref,
      .after_order = q.cursor,
      .limit = q.limit + 1,  // one more: whether there is a next page
      .attention_before_ns =
          q.attention ? std::optional<u64>(detail::wall_ns() - history->config().attention_after_ns)
                      : std::nullopt,
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

bool Service::answer_held_order(Exchange& ex) {
  const Order& o = ex.order_;
  // What its request said (merchant_ref, description, …) is in the history store.
  std::optional<history::OrderRow> row;
  history::HistoryWorker* history = history_.load(std::memory_order_acquire);
  const u32 group = id_prefix(o.id).group;
  if (history != nullptr && group < history->groups()) {
    Result<std::optional<history::OrderRow>> read = history->store().order(o.id);
    if (!read.ok()) {
      // The order is the group's: answered, without the texts.
      PG_LOG_ERROR("event=history_read_failed message=\"{}\"", read.status().message());
    } else if (read.value()) {
      row = std::move(read).value();
    } else if (ex.step_ == 1 && wait_for_store(ex, group, history->config().texts_wait_ns)) {
      return false;  // not there yet: resumed at step 2
    }
  }
  const OrderCreate said = row ? said_of(*row, sees_ipn(ex, o)) : OrderCreate{};
  const std::optional<u64> provider =
      o.provider_account.value != 0 ? owners_.owner(o.provider_account.value) : std::nullopt;
  const std::optional<IpnState> ipn =
      is_final(o.status) && sees_ipn(ex, o) ? order_ipn(o.id) : std::nullopt;
  render_order(ex.reply.body, o, order_signature(o), provider.value_or(0), row ? &said : nullptr, 0,
               {}, ipn ? &*ipn : nullptr);
  return finish(ex, 200);
}

std::optional<bool> Service::order_from_history(Exchange& ex) {
  history::HistoryWorker* history = history_.load(std::memory_order_acquire);
  if (history == nullptr) return std::nullopt;
  const u32 group = id_prefix(ex.path_id_).group;
  if (group >= history->groups()) return std::nullopt;
  const u64 as_of = history->watermark(group);
  bool pending = false;
  Result<std::optional<history::OrderRow>> read =
      archived_order_row(*history, ex.path_id_, pending);
  if (pending) {
    ex.reply.retry_after_s = 1;
    return fail(ex, ResultCode::order_loading,
                "another request is loading the order from the history store into Redis; retry");
  }
  if (!read.ok()) {
    PG_LOG_ERROR("event=history_read_failed message=\"{}\"", read.status().message());
    return fail(ex, ResultCode::not_durable, "the history store cannot be read now; retry");
  }
  if (!read.value()) return std::nullopt;  // not (yet) there: order_archived
  history::OrderRow& row = *read.value();
  if (!visible_order(ex, row.order)) return fail(ex, ResultCode::order_not_found, "no such order");
  if (!is_final(row.order.status)) {
    // Left memory, so final: the store has not caught up with it (it is behind or
    // stuck: see paygate_history_lag_seconds).
    ex.reply.retry_after_s = 1;
    return fail(ex, ResultCode::history_behind,
                "the order has left memory but the history store has not caught up with it; "
                "retry");
  }
  const u64 provider = row.order.provider_account.value != 0
                           ? owners_.owner(row.order.provider_account.value).value_or(0)
                           : 0;
  const OrderCreate said = said_of(row, sees_ipn(ex, row.order));
  const std::optional<IpnState> ipn =
      sees_ipn(ex, row.order) ? order_ipn(row.order.id) : std::nullopt;
  render_order(ex.reply.body, row.order, order_signature(row.order), provider, &said,
               std::max<u64>(as_of, row.updated_sequence), {}, ipn ? &*ipn : nullptr);
  return finish(ex, 200);
}

Result<std::optional<history::OrderRow>> Service::archived_order_row(
    history::HistoryWorker& history, u64 id, bool& pending) {
  cache::OrderCache* cache = order_cache_.load(std::memory_order_acquire);
  const auto from_store = [&] { return history.store().order(id); };
  if (cache == nullptr) return from_store();
  // A loaded row becomes the entry when nothing can change it later unseen: the feed
  // writes every later change (a newer sequence replaces it), or else the store had
  // reached what the group had made durable, which holds the order's last change (an
  // order leaves memory final, and changes no more). Otherwise (feed off, store
  // behind) the entry lives a second, for the readers waiting on this load.
  const u32 group = id_prefix(id).group;
  const bool fed = order_feed_.load(std::memory_order_acquire) != nullptr;
  const u64 durable = engine().group(group).durable_sequence();
  Result<cache::OrderCache::Read> cached =
      cache->order(id, [&](bool& keep) -> Result<std::optional<history::OrderRow>> {
        keep = fed || history.watermark(group) >= durable;
        return from_store();
      });
  if (!cached.ok()) {
    // Redis cannot be used (or the load failed): the store answers (Redis is a cache).
    cache->count_fallback();
    return from_store();
  }
  cache::OrderCache::Read& read = cached.value();
  pending = read.outcome == cache::OrderCache::Outcome::pending;
  if (!read.row) return std::optional<history::OrderRow>();
  if (!is_final(read.row->order.status)) {
    // Loaded while the store was behind the order's last change, which the feed (off,
    // or behind) has not written since: the store may have it now.
    Result<std::optional<history::OrderRow>> now = from_store();
    if (now.ok() && now.value() && is_final(now.value()->order.status)) {
      (void)cache->put(*now.value());
    }
    return now;
  }
  return std::move(read.row);
}

// The payer's way back to the merchant after a final checkout: the callback_url with
// order_id, status and t (the order's final time, so a retry answers the same) and a
// signature over "redirect:" and exactly those three as they stand, keyed with the
// merchant's API secret (docs/ORDERS.md, "Redirects"). Empty when it cannot be signed.
std::string Service::redirect_url(const Order& o, std::string_view callback_url) const {
  const MerchantRef merchant = merchants_.find(o.merchant);
  if (merchant == nullptr || merchant->secret.empty() || o.finished_at_ns == 0) return {};
  const std::string signed_part =
      fmt::format("order_id={}&status={}&t={}", id_text(IdKind::order, o.id), name(o.status),
                  o.finished_at_ns / kNanosPerSecond);
  // (The prefix keeps this message apart from every other the secret signs.)
  const std::string signature = to_hex(hmac_sha256(merchant->secret, {"redirect:", signed_part}));
  // The parameters go before a fragment, after any query the URL has.
  const std::size_t fragment = std::min(callback_url.find('#'), callback_url.size());
  const std::string_view base = callback_url.substr(0, fragment);
  return fmt::format("{}{}{}&signature={}{}", base,
                     base.find('?') == std::string_view::npos ? '?' : '&', signed_part, signature,
                     callback_url.substr(fragment));
}

bool Service::answer_order(Exchange& ex) {
  const Order& o = ex.order_;
  const u64 provider =
      o.provider_account.value != 0 ? owners_.owner(o.provider_account.value).value_or(0) : 0;
  std::string redirect;
  history::HistoryWorker* history = history_.load(std::memory_order_acquire);
  const u32 group = id_prefix(o.id).group;
  // Only the checkout that makes the order final has a payer to send back: a wallet's
  // (a retry of a provider's checkout answers as the first did, without).
  const bool paid_now = ex.route_ == Route::orders_checkout && o.method == OrderMethod::wallet &&
                        o.status == OrderStatus::success && o.finished_at_ns != 0;
  if (paid_now && o.has_callback_url != 0 && history != nullptr && group < history->groups()) {
    // The URL is the store's (journaled with the order's creation, which the store may
    // not have reached yet: then wait, once and bounded, for what the group has made
    // durable, which holds the creation).
    Result<std::optional<history::OrderRow>> row = history->store().order(o.id);
    if (row.ok() && row.value() && !row.value()->callback_url.empty()) {
      redirect = redirect_url(o, row.value()->callback_url);
    } else if (!ex.redirect_waited_) {
      ex.redirect_waited_ = true;
      if (wait_for_store(ex, group, history->config().redirect_wait_ns)) return false;
      return answer_order(ex);  // nothing to wait for: read again, once
    }
    if (redirect.empty()) {
      // The checkout happened: it is answered, without the URL.
      PG_LOG_WARN(
          "event=redirect_url_unknown order={} message=\"the history store does not "
          "have the order's callback_url yet\"",
          id_text(IdKind::order, o.id));
    }
  }
  render_order(ex.reply.body, o, order_signature(o), provider, nullptr, 0, redirect);
  return finish(ex, 200);
}

}  // namespace paygate::api
