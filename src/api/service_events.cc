// Routes of the event feed and of statements: reads of the recent events a group holds
// (docs/API.md, "Events and statements").
#include "api/service.h"

#include <fmt/format.h>

#include "api/render.h"
#include "api/service_internal.h"
#include "base/log.h"

namespace paygate::api {

namespace {

// A merchant's read scans this many events for each one it may see at most, so that a
// page in a busy group is not mostly empty (operators see everything: no scan).
constexpr u32 kMerchantScanPerEvent = 4;
constexpr u32 kMerchantScanMin = 1000;

Request read_request(Exchange& completion, RequestKind kind, u32 count, LedgerEvent* out,
                     std::optional<EventKey> cursor, u64 account = 0) {
  Request request{.kind = kind, .count = count, .lookup_id = account};
  request.completion = &completion;
  request.events_out = out;
  request.cursor = cursor;
  return request;
}

std::optional<EventKey> cursor_key(const std::optional<Cursor>& cursor) {
  return cursor ? std::optional(cursor->key) : std::nullopt;
}

}  // namespace

bool Service::read_events(Exchange& ex) {
  PageQuery& q = ex.page_;
  const bool is_operator = ex.principal_.is_operator;
  if (ex.step_ == 0) {
    const Problem problem = parse_page_query(ex.view_.target, PageRoute::events, &q);
    if (!problem.ok()) return fail_problem(ex, problem);
    // A merchant's events are in its group (its sub-merchants share it).
    const u32 own = is_operator ? 0 : ex.principal_.merchant->group;
    if (!is_operator && q.group && *q.group != own) {
      return fail(ex, ResultCode::operator_only, "merchants read their own group's events");
    }
    const u32 group = is_operator ? q.group.value_or(q.cursor ? q.cursor->group : 0) : own;
    if (q.cursor && q.cursor->group != group) {
      return fail(ex, ResultCode::invalid_cursor, "the cursor is from another group's stream");
    }
    if (group >= engine().groups()) {
      return fail(ex, ResultCode::invalid_field, "group is beyond the configured groups");
    }
    if (const std::optional<bool> waited = await_min_sequence(ex, group, q.min_sequence)) {
      return *waited;
    }
    ex.group_ = &engine().group(group);
    const u32 scan =
        is_operator
            ? q.limit
            : std::min(kBatchMax, std::max(kMerchantScanMin, q.limit * kMerchantScanPerEvent));
    ex.events_.resize(scan);
    return submit(ex, read_request(ex, RequestKind::read_events, scan, ex.events_.data(),
                                   cursor_key(q.cursor)));
  }
  EventPage page = ex.outcome_.page;
  if (page.expired) {
    // Older than the group holds: the history store has them, if it reaches this far.
    history::HistoryWorker* history = history_.load(std::memory_order_acquire);
    const u32 group = ex.group_->config().ledger.prefix.group;
    // Read before the store is: a store that catches up meanwhile still says more.
    const bool store_behind =
        history != nullptr && history->watermark(group) < ex.group_->durable_sequence();
    Result<std::vector<LedgerEvent>> stored =
        history != nullptr && history->projecting(group) && q.cursor &&
                history->first_sequence(group) != 0 &&
                q.cursor->key.sequence + 1 >= history->first_sequence(group)
            ? history->store().events(group, cursor_key(q.cursor),
                                      static_cast<u32>(ex.events_.size()))
            : Result<std::vector<LedgerEvent>>(Status::not_found("no store"));
    if (!stored.ok()) {
      if (stored.status().code() != StatusCode::not_found) {
        PG_LOG_ERROR("event=history_read_failed message=\"{}\"", stored.status().message());
        return fail(ex, ResultCode::not_durable, "the history store cannot be read now; retry");
      }
      return fail(ex, ResultCode::cursor_expired,
                  "the events after this cursor are no longer held; start again without one "
                  "(docs/API.md, events)");
    }
    const std::vector<LedgerEvent>& events = stored.value();
    std::copy(events.begin(), events.end(), ex.events_.begin());
    page = EventPage{.count = static_cast<u32>(events.size()),
                     // A full page, or the store is behind what the group holds: read on.
                     .more = events.size() == ex.events_.size() || store_behind};
  }
  if (page.unknown) {
    return fail(ex, ResultCode::invalid_cursor, "the cursor is ahead of this group's stream");
  }
  // Keep what the caller may see, up to the limit; the next page starts after the
  // last event looked at (so a merchant's empty page still moves its cursor on).
  std::optional<EventKey> next = cursor_key(q.cursor);
  u32 kept = 0, looked = 0;
  for (; looked < page.count && kept < q.limit; ++looked) {
    const LedgerEvent e = ex.events_[looked];
    next = key_of(e);
    // A creation carries its owner: the owner index may not have the account yet
    // (it is filled when the creation is answered, which can come after this read).
    const bool visible = is_operator || (e.kind == LedgerEventKind::account_created
                                             ? visible_owner(ex, e.owner.value)
                                             : visible_account(ex, e.debit_account_id.value) ||
                                                   visible_account(ex, e.credit_account_id.value));
    if (visible) ex.events_[kept++] = e;
  }
  render_events(ex.reply.body, ex.group_->config().ledger.prefix.group,
                std::span(ex.events_.data(), kept), next, page.more || looked < page.count);
  return finish(ex, 200);
}

bool Service::read_entries(Exchange& ex) {
  PageQuery& q = ex.page_;
  const u32 group = id_prefix(ex.path_id_).group;
  if (ex.step_ == 0) {
    if (!visible_account(ex, ex.path_id_)) {
      return fail(ex, ResultCode::account_not_found, "no such account");
    }
    const Problem problem = parse_page_query(ex.view_.target, PageRoute::entries, &q);
    if (!problem.ok()) return fail_problem(ex, problem);
    if (q.cursor && q.cursor->group != group) {
      return fail(ex, ResultCode::invalid_cursor, "the cursor is not from this account's group");
    }
    if (const std::optional<bool> waited = await_min_sequence(ex, group, q.min_sequence)) {
      return *waited;
    }
    ex.events_.resize(q.limit);
    return submit(ex, read_request(ex, RequestKind::read_entries, q.limit, ex.events_.data(),
                                   cursor_key(q.cursor), ex.path_id_));
  }
  EventPage page = ex.outcome_.page;
  if (page.unknown && !page.expired) {
    return q.cursor ? fail(ex, ResultCode::invalid_cursor, "the cursor is not this account's")
                    : fail(ex, ResultCode::account_not_found, "no such account");
  }
  // Lines older than the group holds come from the history store: after the page's
  // oldest (or before an expired cursor), once the store reaches down to there.
  if (page.expired || (!page.more && !page.complete)) {
    // Before the page's oldest line, else before the cursor (its older lines may have
    // left memory while the cursor's did not), else from the newest.
    const std::optional<EventKey> before = !page.expired && page.count > 0
                                               ? std::optional(key_of(ex.events_[page.count - 1]))
                                               : cursor_key(q.cursor);
    const std::optional<bool> served =
        from_history(ex, group, before, page.expired ? 0 : page.count, &page);
    if (!served)
      return fail(ex, ResultCode::not_durable, "the history store cannot be read now; retry");
    if (!*served) {
      if (page.expired) {
        return fail(ex, ResultCode::cursor_expired,
                    "the lines before this cursor are no longer held (docs/API.md, statements)");
      }
    }
  }
  render_entries(ex.reply.body, group, ex.path_id_, std::span(ex.events_.data(), page.count),
                 page.more, page.complete);
  return finish(ex, 200);
}

// The statement's lines before `before` from the history store, after the `held`
// lines the group gave (ex.events_): false when the store cannot give them (none, or
// it has not yet reached the lines the group no longer holds: the page stays as it
// is); nothing when reading it failed.
std::optional<bool> Service::from_history(Exchange& ex, u32 group, std::optional<EventKey> before,
                                          u32 held, EventPage* page) {
  history::HistoryWorker* history = history_.load(std::memory_order_acquire);
  if (history == nullptr || group >= history->groups() || !history->projecting(group)) {
    return false;
  }
  // The store must hold every line before the page's oldest (the group holds the rest).
  const u64 needed = before ? before->sequence : ex.group_->durable_sequence();
  if (history->watermark(group) < needed) return false;
  const u32 want = ex.page_.limit - held;
  // One more than asked says whether more follow (a full page asks for just that one).
  Result<std::vector<LedgerEvent>> stored =
      history->store().account_events(group, ex.path_id_, before, want + 1);
  if (!stored.ok()) {
    PG_LOG_ERROR("event=history_read_failed message=\"{}\"", stored.status().message());
    return std::nullopt;
  }
  std::vector<LedgerEvent>& lines = stored.value();
  const bool more = lines.size() > want;
  if (lines.size() > want) lines.resize(want);
  ex.events_.resize(held + lines.size());
  std::copy(lines.begin(), lines.end(), ex.events_.begin() + held);
  page->count = held + static_cast<u32>(lines.size());
  page->more = more;
  page->expired = false;
  page->unknown = false;
  // The whole history: nothing more, and the store's history of the group is whole.
  page->complete = !more && history->first_sequence(group) == 1;
  return true;
}

std::optional<bool> Service::await_min_sequence(Exchange& ex, u32 group,
                                                std::optional<u64> min_sequence) {
  if (!min_sequence || group >= engine().groups()) return std::nullopt;
  // (The message names only what the caller sent: how far another merchant's group
  // has gone is not the caller's to learn.)
  const auto behind = [&] {
    ex.reply.retry_after_s = 1;
    return fail(
        ex, ResultCode::history_behind,
        fmt::format("sequence {} of group {} is not reached yet; retry", *min_sequence, group));
  };
  history::HistoryWorker* history = history_.load(std::memory_order_acquire);
  if (history == nullptr || group >= history->groups()) {
    // No store: what is read is the group's memory, which holds all it made durable.
    if (engine().group(group).durable_sequence() >= *min_sequence) return std::nullopt;
    return behind();
  }
  if (!history->projecting(group)) {
    return fail(ex, ResultCode::not_durable,
                "the history store cannot answer for this group now (logged); retry later");
  }
  if (history->watermark(group) >= *min_sequence) return std::nullopt;
  const u64 now = now_ns();
  if (ex.history_wait_until_ns_ == 0)
    ex.history_wait_until_ns_ = now + history->config().read_wait_ns;
  if (now < ex.history_wait_until_ns_) {
    // (Both before the wait: the worker may resume it at once. A step of the group
    // follows, so the connection's next request waits for it: none overtakes.)
    ex.rerun_step_ = true;
    ex.last_step_ = false;
    if (history->wait_async(group, *min_sequence, ex.history_wait_until_ns_ - now, &ex)) {
      return false;
    }
    ex.rerun_step_ = false;
    if (history->watermark(group) >= *min_sequence) return std::nullopt;  // reached meanwhile
  }
  return behind();
}

bool Service::wait_for_store(Exchange& ex, u32 group, u64 timeout_ns) {
  history::HistoryWorker* history = history_.load(std::memory_order_acquire);
  if (history == nullptr || group >= history->groups() || !history->projecting(group) ||
      timeout_ns == 0) {
    return false;
  }
  const u64 durable = engine().group(group).durable_sequence();
  if (history->watermark(group) >= durable) return false;  // it has the rows, or they are none
  ex.last_step_ = true;  // (before the wait: the worker may resume it at once)
  return history->wait_async(group, durable, timeout_ns, &ex);
}

}  // namespace paygate::api
