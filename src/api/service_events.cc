// Routes of the event feed and of statements: reads of the recent events a group holds
// (docs/API.md, "Events and statements").
#include "api/service.h"

#include "api/render.h"
#include "api/service_internal.h"

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
    ex.group_ = &engine().group(group);
    const u32 scan =
        is_operator
            ? q.limit
            : std::min(kBatchMax, std::max(kMerchantScanMin, q.limit * kMerchantScanPerEvent));
    ex.events_.resize(scan);
    return submit(ex, read_request(ex, RequestKind::read_events, scan, ex.events_.data(),
                                   cursor_key(q.cursor)));
  }
  const EventPage& page = ex.outcome_.page;
  if (page.expired) {
    return fail(ex, ResultCode::cursor_expired,
                "the events after this cursor are no longer held; start again without one "
                "(docs/API.md, events)");
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
    ex.events_.resize(q.limit);
    return submit(ex, read_request(ex, RequestKind::read_entries, q.limit, ex.events_.data(),
                                   cursor_key(q.cursor), ex.path_id_));
  }
  const EventPage& page = ex.outcome_.page;
  if (page.expired) {
    return fail(ex, ResultCode::cursor_expired,
                "the lines before this cursor are no longer held (docs/API.md, statements)");
  }
  if (page.unknown) {
    return q.cursor ? fail(ex, ResultCode::invalid_cursor, "the cursor is not this account's")
                    : fail(ex, ResultCode::account_not_found, "no such account");
  }
  render_entries(ex.reply.body, group, ex.path_id_, std::span(ex.events_.data(), page.count),
                 page.more, page.complete);
  return finish(ex, 200);
}

}  // namespace paygate::api
