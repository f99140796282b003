#include "pipeline/between_groups.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <span>
#include <utility>

#include <fmt/format.h>

#include "base/assert.h"
#include "base/ids.h"
#include "base/log.h"
#include "pipeline/engine.h"

namespace paygate {

std::vector<UnsettledTransfer> unsettled_transfers(Engine& engine) {
  std::vector<UnsettledTransfer> found;
  for (u32 g = 0; g < engine.groups(); ++g) {
    engine.group(g).ledger().for_each_unsettled([&](const Transfer& hold, u32 number) {
      found.push_back(UnsettledTransfer{.group = g, .hold = hold, .channel_number = number});
    });
  }
  return found;
}

BetweenGroupsReport finish_unsettled(Engine& engine, const std::vector<UnsettledTransfer>& found) {
  BetweenGroupsReport report;
  report.unsettled = found.size();
  // One machine per channel (debit group, credit group), up to a batch at a time.
  std::map<std::pair<u32, u32>, std::vector<UnsettledTransfer>> channels;
  for (const UnsettledTransfer& t : found) {
    PG_ASSERT(t.group < engine.groups() && t.hold.on_channel());
    channels[{t.group, id_prefix(t.hold.credit_account_id.value).group}].push_back(t);
  }
  CarryBetweenGroups carry;
  for (const auto& [channel, transfers] : channels) {
    // A request of holds each step: as many as both groups take in one.
    const std::size_t most = std::min(engine.group(channel.first).config().request_commands_max,
                                      engine.group(channel.second).config().request_commands_max);
    for (std::size_t first = 0; first < transfers.size(); first += most) {
      const std::size_t count = std::min<std::size_t>(most, transfers.size() - first);
      carry.begin_numbered(engine, std::span(transfers).subspan(first, count));
      run_to_end(carry);
      if (carry.status() != ResultCode::ok) {
        report.problem = carry.problem();
        continue;
      }
      PG_ASSERT(carry.carried().size() == count);
      for (const CarryBetweenGroups::Carried& carried : carry.carried()) {
        PG_ASSERT(carried.numbered);  // found on a channel: numbered already
        switch (carried.code) {
          case ResultCode::ok:
            ++report.posted;
            break;
          case ResultCode::internal_error:
          case ResultCode::outcome_expired:
          case ResultCode::transfer_not_found:
            report.problem = fmt::format("settling transfer trf_{:016x} in group {}: {}",
                                         carried.hold.value, channel.first, name(carried.code));
            break;
          default:  // the other group's refusal: voided, the money released
            ++report.voided;
        }
      }
    }
  }
  return report;
}

BetweenGroupsFinisher::BetweenGroupsFinisher(Engine& engine, u64 interval_ns)
    : engine_(engine), interval_ns_(interval_ns) {
  if (interval_ns_ != 0) thread_ = std::thread([this] { run(); });
}

BetweenGroupsFinisher::~BetweenGroupsFinisher() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void BetweenGroupsFinisher::run() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    wake_.wait_for(lock, std::chrono::nanoseconds(interval_ns_), [&] { return stopping_; });
    if (stopping_) break;
    lock.unlock();
    look();
    lock.lock();
  }
}

void BetweenGroupsFinisher::look() {
  std::vector<UnsettledTransfer> stuck;
  std::set<std::pair<u64, u32>> now;
  std::vector<Transfer> holds(kBatchMax);
  std::vector<u32> numbers(kBatchMax);
  u64 oldest = 0;
  for (u32 g = 0; g < engine_.groups(); ++g) {
    WaitableCompletion done;
    Request request{.kind = RequestKind::read_unsettled, .count = kBatchMax};
    request.transfer_out = holds.data();
    request.channel_numbers_out = numbers.data();
    request.completion = &done;
    if (engine_.group(g).submit(request) != ResultCode::ok) continue;  // stopping, overloaded
    const Outcome& outcome = wait_for(engine_.group(g), done);
    if (outcome.status != ResultCode::ok) continue;
    for (u32 i = 0; i < outcome.filled; ++i) {
      const std::pair<u64, u32> key{holds[i].id.value, numbers[i]};
      now.insert(key);
      if (oldest == 0 || holds[i].created_at_ns < oldest) oldest = holds[i].created_at_ns;
      if (seen_.count(key) != 0) {
        stuck.push_back(
            UnsettledTransfer{.group = g, .hold = holds[i], .channel_number = numbers[i]});
      }
    }
  }
  unsettled_.store(now.size(), std::memory_order_relaxed);
  oldest_unsettled_at_ns_.store(oldest, std::memory_order_relaxed);
  seen_ = std::move(now);
  if (stuck.empty()) return;
  const BetweenGroupsReport report = finish_unsettled(engine_, stuck);
  finished_.fetch_add(report.posted + report.voided, std::memory_order_relaxed);
  if (!report.problem.empty()) {
    // The money stays held and the next look tries again; say so, with the transfer.
    problems_.fetch_add(1, std::memory_order_relaxed);
    PG_LOG_ERROR(
        "event=between_groups_unfinished stuck={} posted={} voided={} problem=\"{}\" "
        "message=\"the money stays held; the next look tries again\"",
        stuck.size(), report.posted, report.voided, report.problem);
  }
}

}  // namespace paygate
