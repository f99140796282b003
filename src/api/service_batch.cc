// The batch route: up to 8,190 operations, atomic in one group or not (then run as
// segments in order, across groups). Step 0 decodes and checks every operation at the
// edge; then run_batch carries the operations to their groups, in order.
#include "api/service.h"

#include <fmt/format.h>
#include <boost/beast/core/string.hpp>

#include <charconv>
#include <cstring>

#include "api/http_status.h"
#include "api/id_text.h"
#include "api/json_writer.h"
#include "api/render.h"
#include "api/service_internal.h"

namespace paygate::api {

using detail::decoder;

namespace {

constexpr u32 kNoHold = ~u32{0};  // a batch operation that names no hold (op_hold_)

// Whether a Prefer header (RFC 7240) asks for return=minimal: one of its
// comma-separated preferences, parameters after ';' aside, is the token `return`
// (any case) with the value `minimal`, spaces allowed around '='. A substring search
// took "return=minimalist" and missed "Return = minimal".
bool prefers_return_minimal(std::string_view prefer) {
  const auto trim = [](std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
      s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
      s.remove_suffix(1);
    return s;
  };
  const auto same = [](std::string_view a, std::string_view b) {
    return boost::beast::iequals({a.data(), a.size()}, {b.data(), b.size()});
  };
  while (!prefer.empty()) {
    const std::size_t comma = prefer.find(',');
    std::string_view preference = prefer.substr(0, comma);
    prefer = comma == std::string_view::npos ? std::string_view{} : prefer.substr(comma + 1);
    preference = preference.substr(0, preference.find(';'));
    const std::size_t equals = preference.find('=');
    if (equals == std::string_view::npos) continue;
    std::string_view value = trim(preference.substr(equals + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
      value = value.substr(1, value.size() - 2);
    }
    if (same(trim(preference.substr(0, equals)), "return") && same(value, "minimal")) return true;
  }
  return false;
}

}  // namespace

bool Service::batch(Exchange& ex) {
  if (ex.batch_running_) return run_batch(ex);
  BatchRequest& b = ex.batch_;
  const Problem problem = decoder().batch(ex.view_.body, &b);
  if (!problem.ok()) return fail_problem(ex, problem);
  ex.op_refused_.assign(b.count, ResultCode::ok);
  ex.op_group_.assign(b.count, nullptr);
  ex.op_crosses_.assign(b.count, 0);
  Group* first_group = nullptr;
  for (u32 i = 0; i < b.count; ++i) {
    const BatchOperation& op = b.operations[i];
    u64 route_id = op.transfer_id;
    if (op.op == BatchOp::transfer) {
      route_id = op.transfer.debit_account_id;
      ResultCode refused = check_transfer_accounts(ex, op.transfer);
      // An immediate transfer between groups runs in a non-atomic batch; a two-phase
      // one is sent on its own (its credit account is checked first, and a hold not
      // yet numbered must never be carried to the other group).
      if (refused == ResultCode::cross_group_transfer && !b.atomic && !op.transfer.pending) {
        ex.op_crosses_[i] = 1;
        refused = ResultCode::ok;
      }
      ex.op_refused_[i] = refused;
    }
    Group* group = engine().route(route_id);
    if (group == nullptr) {
      ex.op_refused_[i] = op.op == BatchOp::transfer ? ResultCode::debit_account_not_found
                                                     : ResultCode::transfer_not_found;
      continue;
    }
    ex.op_group_[i] = group;
    if (first_group == nullptr) first_group = group;
    if (b.atomic && group != first_group) {
      return fail(ex, ResultCode::cross_group_transfer,
                  fmt::format("operations[{}] is in another group than the first; an atomic "
                              "batch runs in one group",
                              i));
    }
  }
  return run_batch(ex);
}

// The ledger command of operation i of a batch.
Command Service::batch_command(const Exchange& ex, u32 i) {
  const BatchRequest& b = ex.batch_;
  const BatchOperation& op = b.operations[i];
  Command command = op.op == BatchOp::transfer ? transfer_command(op.transfer)
                    : op.op == BatchOp::post
                        ? Command::make_post(TransferId{op.transfer_id}, op.amount)
                        : Command::make_void(TransferId{op.transfer_id});
  if (op.op == BatchOp::transfer && ex.op_crosses_[i] != 0) command.flags |= kTransferBetweenGroups;
  if (!b.atomic && !ex.key_.empty() && ex.key_lane_ == KeyLane::client) {
    // Each operation of a batch is its own idempotent command, keyed by position, so
    // that a retry answers each as before. (The request's claim holds the key itself.
    // A signature needs no such keys: its claim refuses any replay whole.)
    command.with_key(IdempotencyKey{mix64(ex.key_.lo + (u64{i} + 1) * 0x9E3779B97F4A7C15ull),
                                    mix64(ex.key_.hi ^ i)});
  }
  return command;
}

bool Service::batch_reply(Exchange& ex) {
  const BatchRequest& b = ex.batch_;
  if (b.atomic && (ex.outcome_.atomic == ResultCode::idempotency_key_reused ||
                   ex.outcome_.atomic == ResultCode::idempotency_capacity)) {
    // The key names another request, or finds no room: that is about the request, not
    // its operations.
    return fail(ex, ex.outcome_.atomic, describe(ex.outcome_.atomic));
  }
  std::string& out = ex.reply.body;
  out.clear();
  // Prefer: return=minimal (RFC 7240) answers each operation with its status and the
  // transfer's id, or its error code: the compact form for clients that send many.
  const bool minimal = prefers_return_minimal(ex.view_.prefer);
  ex.reply.minimal = minimal;
  if (minimal) out.reserve(32 + std::size_t{b.count} * 48);
  bool atomic_failed = false;
  u32 failed_op = 0;
  ResultCode failed_code = ResultCode::ok;
  out += R"({"results":[)";
  u32 next_hold = 0;
  for (u32 i = 0; i < b.count; ++i) {
    const BatchOperation& op = b.operations[i];
    const Transfer* hold = op.op == BatchOp::transfer ? nullptr : &ex.transfers_[next_hold++];
    ResultCode code = ex.op_refused_[i];
    u64 id = 0;
    if (code == ResultCode::ok) {
      const CommandResult& result = ex.op_results_[i];
      code = result.code;
      id = result.id;
    }
    if (b.atomic && code != ResultCode::ok && code != ResultCode::atomic_batch_failed &&
        !atomic_failed) {
      atomic_failed = true;
      failed_op = i;
      failed_code = code;
    }
    // {"status":…,"body":…}, each body rendered straight into the answer.
    if (i != 0) out += ',';
    const unsigned status = code != ResultCode::ok       ? http_status(code)
                            : op.op == BatchOp::transfer ? 201u
                                                         : 200u;
    if (minimal) {
      // {"status":201,"id":"trf_…"} or {"status":422,"code":"…"}
      char text[kIdTextSize + 40];
      char* at = text;
      const auto put = [&at](std::string_view piece) {
        std::memcpy(at, piece.data(), piece.size());
        at += piece.size();
      };
      put(R"({"status":)");
      at = std::to_chars(at, text + sizeof text, status).ptr;
      if (code == ResultCode::ok) {
        put(R"(,"id":")");
        format_id(IdKind::transfer, id, at);
        at += kIdTextSize;
        put(R"("})");
        out.append(text, at);
      } else {
        put(R"(,"code":")");
        out.append(text, at);
        out += name(code);
        out += R"("})";
      }
      continue;
    }
    JsonWriter(out).begin_object().key("status").unsigned_number(status).key("body");
    if (code != ResultCode::ok) {
      render_error(out, code, describe(code));
    } else if (op.op == BatchOp::transfer) {
      render_new_transfer(out, id, op.transfer, ex.op_crosses_[i] != 0);
    } else {
      const bool post = op.op == BatchOp::post;
      render_closed_hold(out, *hold, post, op.amount != 0 ? op.amount : hold->amount);
    }
    out += '}';
  }
  out += "]";
  if (atomic_failed) {
    fmt::format_to(std::back_inserter(out),
                   R"(,"error":{{"code":"atomic_batch_failed","message":"operations[{}]: {}"}}}})",
                   failed_op, name(failed_code));
    return finish(ex, http_status(ResultCode::atomic_batch_failed));
  }
  out += "}";
  return finish(ex, 200);
}

// A batch runs as a sequence of segments, in operation order, so that it has the
// effect of its operations one after another: a run of operations in one group (its
// holds looked up first, then its commands in one request), or one transfer between
// groups (its three steps). A batch in one group, and every atomic one, is a single
// segment. Each operation's result is kept in op_results_. If a step cannot be taken
// (503), the batch answers that, and the operations already applied stay applied: a
// retry with the same Idempotency-Key answers them the same and applies the rest.
bool Service::run_batch(Exchange& ex) {
  const BatchRequest& b = ex.batch_;
  if (!ex.batch_running_) {
    ex.batch_running_ = true;
    ex.op_results_.assign(b.count, CommandResult{});
    ex.op_hold_.resize(b.count);
    u32 holds = 0;
    for (u32 i = 0; i < b.count; ++i)
      ex.op_hold_[i] = b.operations[i].op == BatchOp::transfer ? kNoHold : holds++;
    ex.transfers_.assign(holds, Transfer{});
    ex.segment_end_ = 0;
    return next_segment(ex);
  }
  const u32 begin = ex.segment_begin_, end = ex.segment_end_;
  switch (ex.segment_stage_) {
    case Exchange::SegmentStage::lookup:
      for (u32 i = begin; i < end; ++i) {
        if (ex.op_hold_[i] == kNoHold || ex.op_refused_[i] != ResultCode::ok) continue;
        const Transfer& hold = ex.transfers_[ex.op_hold_[i]];
        ex.op_refused_[i] = hold.id.empty()
                                ? ResultCode::transfer_not_found
                                : may_act_on_hold(ex, hold, b.operations[i].op == BatchOp::post);
      }
      return submit_segment(ex);
    case Exchange::SegmentStage::commands: {
      u32 next = 0;
      for (u32 i = begin; i < end; ++i) {
        if (ex.op_refused_[i] == ResultCode::ok) ex.op_results_[i] = ex.results_[next++];
      }
      return next_segment(ex);
    }
    case Exchange::SegmentStage::between_groups: {
      // Its carry is done (resume drove it): the operation answers as the transfer ended.
      const CarryBetweenGroups& carry = ex.carry_;
      if (carry.status() != ResultCode::ok) {
        if (const std::optional<bool> failed = fail_carried(ex)) return *failed;
      }
      ex.op_results_[begin] =
          CommandResult{.code = carry.carried()[0].code, .id = carry.carried()[0].hold.value};
      return next_segment(ex);
    }
  }
  return fail(ex, ResultCode::not_durable, "the batch lost its place");
}

// Whether operation `from` or a later one still has a command to run.
bool Service::more_after(const Exchange& ex, u32 from) {
  for (u32 i = from; i < ex.batch_.count; ++i) {
    if (ex.op_refused_[i] == ResultCode::ok) return true;
  }
  return false;
}

bool Service::next_segment(Exchange& ex) {
  const BatchRequest& b = ex.batch_;
  u32 begin = ex.segment_end_;
  while (begin < b.count && ex.op_refused_[begin] != ResultCode::ok)
    ++begin;
  if (begin == b.count) {
    if (const std::optional<bool> refused = fail_atomic_refused(ex)) return *refused;
    return batch_reply(ex);  // every operation answered
  }
  ex.segment_begin_ = begin;
  Group* group = ex.op_group_[begin];
  ex.group_ = group;
  if (ex.op_crosses_[begin] != 0) {
    ex.segment_end_ = begin + 1;
    ex.segment_stage_ = Exchange::SegmentStage::between_groups;
    ex.annotations_.clear();
    annotate_transfer(ex, 0, b.operations[begin].transfer);
    return start_carry(ex, batch_command(ex, begin), /*last=*/!more_after(ex, begin + 1));
  }
  u32 end = begin + 1;
  while (end < b.count && (ex.op_refused_[end] != ResultCode::ok ||
                           (ex.op_group_[end] == group && ex.op_crosses_[end] == 0))) {
    ++end;
  }
  ex.segment_end_ = end;
  // The segment's holds, which are consecutive in transfers_.
  ex.lookup_ids_.clear();
  u32 first_hold = kNoHold;
  for (u32 i = begin; i < end; ++i) {
    if (ex.op_hold_[i] == kNoHold) continue;
    if (first_hold == kNoHold) first_hold = ex.op_hold_[i];
    ex.lookup_ids_.push_back(b.operations[i].transfer_id);
  }
  if (ex.lookup_ids_.empty()) return submit_segment(ex);
  ex.segment_stage_ = Exchange::SegmentStage::lookup;
  Request request{.kind = RequestKind::lookup_transfer,
                  .count = static_cast<u32>(ex.lookup_ids_.size())};
  request.lookup_ids = ex.lookup_ids_.data();
  request.transfer_out = ex.transfers_.data() + first_hold;
  request.completion = &ex;
  return submit(ex, request, /*last_step=*/false);
}

// An atomic batch with an operation refused at the edge fails whole, before the ledger:
// answered as one the ledger refused ({results, error}), the others not applied.
std::optional<bool> Service::fail_atomic_refused(Exchange& ex) {
  const BatchRequest& b = ex.batch_;
  if (!b.atomic) return std::nullopt;
  bool refused = false;
  for (u32 i = 0; i < b.count && !refused; ++i)
    refused = ex.op_refused_[i] != ResultCode::ok;
  if (!refused) return std::nullopt;
  for (u32 i = 0; i < b.count; ++i) {
    if (ex.op_refused_[i] == ResultCode::ok) {
      ex.op_results_[i] = CommandResult{.code = ResultCode::atomic_batch_failed};
    }
  }
  // No group ran this batch: what outcome_ holds is a lookup's, or the last request's
  // of this slot (an exchange is reused), never a verdict on this batch's key.
  ex.outcome_.atomic = ResultCode::ok;
  return batch_reply(ex);
}

bool Service::submit_segment(Exchange& ex) {
  const BatchRequest& b = ex.batch_;
  if (const std::optional<bool> refused = fail_atomic_refused(ex)) return *refused;
  u32 count = 0;
  for (u32 i = ex.segment_begin_; i < ex.segment_end_; ++i) {
    count += ex.op_refused_[i] == ResultCode::ok;
  }
  if (count == 0) return next_segment(ex);
  // Each command is built in its place: returned through a temporary and copied in,
  // the copy read back in 16-byte pieces what had just been written in smaller ones,
  // and stalled on it for most of this function's time.
  ex.commands_.resize(count);
  ex.annotations_.clear();
  Command* next = ex.commands_.data();
  for (u32 i = ex.segment_begin_; i < ex.segment_end_; ++i) {
    if (ex.op_refused_[i] != ResultCode::ok) continue;
    if (b.operations[i].op == BatchOp::transfer) {
      annotate_transfer(ex, static_cast<u32>(next - ex.commands_.data()), b.operations[i].transfer);
    }
    ::new (next++) Command(batch_command(ex, i));
  }
  ex.results_.resize(ex.commands_.size());
  ex.segment_stage_ = Exchange::SegmentStage::commands;
  return submit(
      ex,
      with_annotations(
          ex, Request{.kind = b.atomic ? RequestKind::atomic : RequestKind::commands,
                      .count = static_cast<u32>(ex.commands_.size()),
                      .commands = ex.commands_.data(),
                      .results = ex.results_.data(),
                      .batch_key =
                          b.atomic && ex.key_lane_ == KeyLane::client ? ex.key_ : IdempotencyKey{},
                      .completion = &ex}),
      /*last_step=*/!more_after(ex, ex.segment_end_));
}

}  // namespace paygate::api
