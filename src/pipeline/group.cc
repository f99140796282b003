#include "pipeline/group.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstring>

#include <fmt/format.h>

#include "base/assert.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/thread.h"
#include "journal/reader.h"

namespace paygate {
namespace {

// A request this large is worth waking the group for even while the journal syncs:
// applying it takes longer than the wake-up costs, and can overlap the sync.
constexpr u32 kWakeAtOnceCommands = 256;

bool is_commands(const Request& r) noexcept {
  return r.kind == RequestKind::commands;
}
// The commands a request puts in the log: its own, and the claim before them.
u32 logged_count(const Request& r) noexcept {
  return r.count + (r.claim != nullptr ? 1 : 0);
}
// Requests that read state and take no place in the log.
bool is_lookup(const Request& r) noexcept {
  return r.kind == RequestKind::lookup_account || r.kind == RequestKind::lookup_transfer ||
         r.kind == RequestKind::read_events || r.kind == RequestKind::read_entries ||
         r.kind == RequestKind::read_unsettled || r.kind == RequestKind::lookup_quota ||
         r.kind == RequestKind::lookup_order;
}
bool is_read(const Request& r) noexcept {
  return r.kind == RequestKind::read_events || r.kind == RequestKind::read_entries;
}

std::span<const journal::Annotation> annotations_of(const Request& r) noexcept {
  return {r.annotations, r.annotation_count};
}

// A claim covers commands of its own request only. The journal joins requests into one
// record, and replay applies a record in one call, so a claim that reached past its
// request would take the next request's commands down on replay but not live.
bool claims_within(const Request& r) noexcept {
  if (r.claim != nullptr) {
    if (r.kind != RequestKind::commands || r.claim_result == nullptr ||
        r.claim->kind != CommandKind::claim || r.claim->claim.covers != r.count) {
      return false;
    }
  }
  for (u32 i = 0; i < r.count; ++i) {
    const Command& command = r.commands[i];
    if (command.kind == CommandKind::claim && command.claim.covers > r.count - i - 1) return false;
  }
  return true;
}

}  // namespace

Group::Group(const GroupConfig& config)
    : config_(config),
      clock_(config.clock != nullptr ? config.clock : &SystemClock::instance()),
      snapshotter_(config.dir, 1u << 20, config.storage, config.drive_inline),
      ring_(config.ring_capacity),
      release_(config.release_queue_max),
      scratch_results_(kBatchMax) {}

u32 Group::record_bytes_max(const GroupConfig& config) noexcept {
  return journal::record_bytes_max(journal::RecordType::atomic, config.request_commands_max);
}

Result<std::unique_ptr<Group>> Group::open(const GroupConfig& config) {
  if (config.request_commands_max < 2 || config.request_commands_max > kBatchMax) {
    return Status::invalid_config(fmt::format("group.request_commands_max must be 2 to {}, not {}",
                                              kBatchMax, config.request_commands_max));
  }
  // The stage takes the largest record whole, and a segment two of them.
  const u32 record_max = record_bytes_max(config);
  const auto too_small = [&](const char* name, u64 least) {
    return Status::invalid_config(
        fmt::format("group.{} must be at least {} (a journal record takes up to {} bytes)", name,
                    least, record_max));
  };
  if (config.group_commit_bytes_max < record_max) {
    return too_small("group_commit_bytes_max", record_max);
  }
  if (config.journal_segment_bytes < 2 * u64{record_max}) {
    return too_small("journal_segment_bytes", 2 * u64{record_max});
  }
  std::unique_ptr<Group> group(new Group(config));
  if (Status recovered = group->recover(); !recovered.ok()) return recovered;
  return group;
}

Group::~Group() {
  stop();
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

// ---------------------------------------------------------------------------
// Lifecycle and submission

void Group::start() {
  PG_ASSERT(!thread_.joinable());
  accepting_.store(true, std::memory_order_release);
  if (config_.drive_inline) return;  // the owner turns it: step(), flush_journal()
  journal_->start();
  thread_ = std::thread([this] { run(); });
}

// Answers a lookup request into its outputs; true when every id was found. An id
// not found leaves its output zeroed.
bool Group::lookup(const Request& r) noexcept {
  const bool many = r.lookup_ids != nullptr;
  const u32 count = many ? r.count : 1;
  bool all_found = true;
  for (u32 i = 0; i < count; ++i) {
    const u64 id = many ? r.lookup_ids[i] : r.lookup_id;
    if (r.kind == RequestKind::lookup_account) {
      const Account* account = ledger_->find_account(AccountId{id});
      if (r.account_out != nullptr) r.account_out[i] = account ? *account : Account{};
      all_found = all_found && account != nullptr;
    } else {
      const auto transfer = ledger_->find_transfer(TransferId{id});
      if (r.transfer_out != nullptr) r.transfer_out[i] = transfer ? *transfer : Transfer{};
      all_found = all_found && transfer.has_value();
    }
  }
  return all_found;
}

EventPage Group::read(const Request& r) noexcept {
  const std::span<LedgerEvent> out(r.events_out, r.count);
  if (r.kind == RequestKind::read_events) {
    // A cursor past every sequence used was never handed out (only durable events
    // are shown, and a restart keeps those): refuse it rather than wait on it forever.
    if (r.cursor && r.cursor->sequence > ledger_->last_stamp().sequence) {
      EventPage ahead;
      ahead.unknown = true;
      return ahead;
    }
    return events_->read_after(r.cursor, out);
  }
  if (ledger_->find_account(AccountId{r.lookup_id}) == nullptr) {
    EventPage unknown;
    unknown.unknown = true;
    return unknown;
  }
  return events_->read_account(r.lookup_id, r.cursor, out);
}

void Group::stop() {
  accepting_.store(false, std::memory_order_seq_cst);
  wake_.notify_all();
  space_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (config_.drive_inline && journal_) {
    // What the group thread would have done before it ended: take and answer all.
    for (;;) {
      const bool took = step();
      const bool flushed = flush_journal();
      if (!took && !flushed) break;
    }
    if (journal_->failed() && !failed()) fail_pending();
    PG_ASSERT(release_count_ == 0 && ring_.claimed() == next_read_);
  }
  if (journal_) journal_->stop();
}

ResultCode Group::submit(const Request& request) noexcept {
  // Reads and lookups take no place in the log, so nothing can be said about them.
  if (is_lookup(request) && request.annotation_count != 0) return ResultCode::invalid_command;
  if (request.kind == RequestKind::read_unsettled) {
    if (request.completion == nullptr || request.transfer_out == nullptr ||
        request.channel_numbers_out == nullptr || request.count == 0) {
      return ResultCode::invalid_command;
    }
  } else if (is_read(request)) {
    if (request.completion == nullptr || request.events_out == nullptr) {
      return ResultCode::invalid_command;
    }
    if (request.count == 0) return ResultCode::batch_empty;
    if (request.count > kBatchMax) return ResultCode::batch_too_large;
  } else if (is_lookup(request)) {
    if (request.completion == nullptr) return ResultCode::invalid_command;
    if (request.kind == RequestKind::lookup_quota &&
        (request.quota_out == nullptr || request.quota_defaults_out == nullptr)) {
      return ResultCode::invalid_command;
    }
    if (request.kind == RequestKind::lookup_order && request.order_out == nullptr) {
      return ResultCode::invalid_command;
    }
    if (request.lookup_ids != nullptr && request.count == 0) return ResultCode::batch_empty;
    if (request.lookup_ids != nullptr && request.count > kBatchMax) {
      return ResultCode::batch_too_large;
    }
  } else {
    if (request.count == 0) return ResultCode::batch_empty;
    if (logged_count(request) > config_.request_commands_max) return ResultCode::batch_too_large;
    if (request.commands == nullptr || request.results == nullptr ||
        request.completion == nullptr) {
      return ResultCode::invalid_command;
    }
    if (!claims_within(request)) return ResultCode::invalid_command;
    if (const ResultCode code = check_annotations(request); code != ResultCode::ok) return code;
    // An order copied out after its step: one order command, on its own (a claim of the
    // request's signature may open it: the order is copied out whether it held or not).
    if (request.order_out != nullptr &&
        (request.kind != RequestKind::commands || request.count != 1 ||
         !OrderBook::is_order_command(request.commands[0].kind))) {
      return ResultCode::invalid_command;
    }
  }
  // Counted from before the accepting check to after publish: stop() waits for it.
  submitting_.fetch_add(1, std::memory_order_seq_cst);
  const ResultCode code = enqueue(request);
  submitting_.fetch_sub(1, std::memory_order_seq_cst);
  if (code != ResultCode::ok) return code;
  // While the journal syncs, small requests need not wake the group: what it would
  // stage now waits for the next sync anyway, and the journal's notify when this sync
  // ends wakes the group, which then takes them (docs/PIPELINE.md). Under load this
  // spares most of the producers' system calls. Reads and lookups are answered at
  // once, and a large request wakes the group so that applying it overlaps the sync.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (is_lookup(request) || request.count >= kWakeAtOnceCommands || !journal_->syncing()) {
    wake_.notify_all();
  }
  return code;
}

ResultCode Group::check_annotations(const Request& request) const noexcept {
  if (request.annotation_count == 0) return ResultCode::ok;
  if (request.annotations == nullptr) return ResultCode::invalid_command;
  const u32 record_max = record_bytes_max(config_);
  u32 last = 0;
  for (const journal::Annotation& a : annotations_of(request)) {
    // Named commands of its own, in order (the reader checks the order on disk).
    if (a.command >= request.count || a.command < last || static_cast<u16>(a.kind) == 0) {
      return ResultCode::invalid_command;
    }
    last = a.command;
    if (!journal::annotation_fits(a.text.size(), record_max)) return ResultCode::batch_too_large;
  }
  // The whole request must fit a batch's share of the stage (take_batch_bytes).
  const u64 bytes =
      journal::annotation_records_bytes(annotations_of(request), record_max) +
      journal::record_bytes_max(request.kind == RequestKind::atomic ? journal::RecordType::atomic
                                                                    : journal::RecordType::commands,
                                logged_count(request));
  return bytes <= config_.group_commit_bytes_max / 2 ? ResultCode::ok : ResultCode::batch_too_large;
}

ResultCode Group::enqueue(const Request& request) noexcept {
  if (!accepting_.load(std::memory_order_seq_cst)) return ResultCode::shutting_down;
  u64 sequence = 0;
  if (!ring_.try_claim(&sequence)) {
    if (config_.drive_inline) {
      // Only this thread could make room, and it is here.
      stats_.overloaded.fetch_add(1, std::memory_order_relaxed);
      return ResultCode::overloaded;
    }
    // Back-pressure: wait for room, but not forever.
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::nanoseconds(config_.submit_timeout_ns);
    for (u32 spins = 0;; ++spins) {
      if (!accepting_.load(std::memory_order_acquire)) return ResultCode::shutting_down;
      if (ring_.try_claim(&sequence)) break;
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) {
        stats_.overloaded.fetch_add(1, std::memory_order_relaxed);
        return ResultCode::overloaded;
      }
      if (spins < 64) continue;
      const u32 epoch = space_.prepare_wait();
      if (ring_.try_claim(&sequence)) {
        space_.cancel_wait();
        break;
      }
      space_.wait(epoch, static_cast<u64>(std::chrono::nanoseconds(deadline - now).count()));
    }
  }
  ring_.slot(sequence) = request;
  ring_.publish(sequence);
  return ResultCode::ok;
}

// ---------------------------------------------------------------------------
// The group thread

void Group::run() {
  if (config_.thread_nice != 0) set_thread_nice(config_.thread_nice);
  for (;;) {
    if (turn()) continue;
    // Stopped, every accepted request taken and answered: done. Producers that got
    // past the accepting check are counted in submitting_, so none is left behind.
    if (!accepting_.load(std::memory_order_seq_cst) &&
        submitting_.load(std::memory_order_seq_cst) == 0 && ring_.claimed() == next_read_ &&
        release_count_ == 0) {
      break;
    }
    idle_wait(release_count_ == release_.size());
  }
}

// One turn of the loop: answer what is durable, then take a batch; or, idle, log a
// tick or start a snapshot when due. True when a batch was taken.
bool Group::turn() {
  release_durable();
  poll_snapshot();
  if (journal_->failed() && !failed()) fail_pending();

  const u64 room = release_.size() - release_count_;
  u32 count = room == 0 ? 0
                        : ring_.available(next_read_, static_cast<u32>(std::min<u64>(
                                                          config_.batch_requests_max, room)));
  if (count > 0) {
    if (failed()) {
      refuse_batch(count);
      return true;
    }
    u64 bytes = 0;
    count = take_batch_bytes(count, &bytes);
    process(count, bytes);
    return true;
  }
  if (room != 0 && !failed() && accepting_.load(std::memory_order_relaxed)) {
    inject_tick();
    maybe_snapshot();
  }
  return false;
}

bool Group::step() {
  PG_ASSERT(config_.drive_inline);
  return turn();
}

bool Group::flush_journal() {
  PG_ASSERT(config_.drive_inline);
  const bool flushed = journal_->flush();
  release_durable();
  if (journal_->failed() && !failed()) fail_pending();
  return flushed;
}

bool Group::has_work(bool waiting_for_room) const noexcept {
  if (release_count_ > 0 && release_[release_head_].durable_at <= journal_->durable_sequence()) {
    return true;
  }
  if (journal_->failed() != failed()) return true;
  if (waiting_for_room) return false;  // only the journal can help
  return ring_.available(next_read_, 1) > 0 || !accepting_.load(std::memory_order_acquire);
}

// Spin a little (a request may be moments away), then sleep until a producer or the
// journal wakes us, or the next tick or snapshot check is due.
void Group::idle_wait(bool waiting_for_room) {
  for (u32 i = 0; i < config_.idle_spin; ++i) {
    if (has_work(waiting_for_room)) return;
    __builtin_ia32_pause();
  }
  const u32 epoch = wake_.prepare_wait();
  if (has_work(waiting_for_room)) {
    wake_.cancel_wait();
    return;
  }
  wake_.wait(epoch, snapshotter_.running() || !accepting_.load(std::memory_order_relaxed)
                        ? 5'000'000
                        : config_.tick_interval_ns);
}

// How many of the next `available` requests to take so their records fit the stage
// comfortably; at least one.
u32 Group::take_batch_bytes(u32 available, u64* bytes) const noexcept {
  const u64 budget = config_.group_commit_bytes_max / 2;
  u64 total = 0;
  u32 merged = 0;  // commands in the commands record being built
  u32 taken = 0;
  for (; taken < available; ++taken) {
    const Request& r = ring_.read(next_read_ + taken);
    u64 extra = 0;
    if (is_commands(r)) {
      // Joins the previous record while that stays under the command limit.
      const u32 logged = logged_count(r);
      if (merged > 0 && merged + logged <= config_.request_commands_max) {
        extra = journal::record_bytes_max(journal::RecordType::commands, merged + logged) -
                journal::record_bytes_max(journal::RecordType::commands, merged);
        merged += logged;
      } else {
        extra = journal::record_bytes_max(journal::RecordType::commands, logged);
        merged = logged;
      }
    } else if (r.kind == RequestKind::atomic) {
      extra = journal::record_bytes_max(journal::RecordType::atomic, r.count);
      merged = 0;
    }
    if (r.annotation_count > 0) {
      extra += journal::annotation_records_bytes(annotations_of(r), record_bytes_max(config_));
    }
    if (taken > 0 && total + extra > budget) break;
    total += extra;
  }
  *bytes = total;
  return taken;
}

void Group::process(u32 count, u64 record_bytes) {
  const u64 commands_in_batch = [&] {
    u64 n = 0;
    for (u32 i = 0; i < count; ++i) {
      const Request& r = ring_.read(next_read_ + i);
      if (!is_lookup(r)) n += logged_count(r);
    }
    return n;
  }();
  PG_ASSERT(count > 0 && count <= config_.batch_requests_max);
  const u64 taken_ns = steady_ns();  // for the edge's stage timings only
  const Stamp first = sequencer_->stamp(commands_in_batch);
  publish_clock_stats();
  // The batch continues the log: its first command right after the last applied.
  PG_ASSERT(first.sequence == ledger_->last_stamp().sequence + 1 ||
            ledger_->last_stamp().sequence == 0);
  PG_ASSERT(first.timestamp_ns >= ledger_->last_stamp().timestamp_ns);
  if (record_bytes > 0) journal_batch(count, record_bytes, first);
  apply_batch(count, first, taken_ns);
  PG_ASSERT(commands_in_batch == 0 ||
            ledger_->last_stamp().sequence == first.sequence + commands_in_batch - 1);
  next_read_ += count;
  ring_.release(next_read_);
  space_.notify_all();
  stats_.requests.fetch_add(count, std::memory_order_relaxed);
  stats_.commands.fetch_add(commands_in_batch, std::memory_order_relaxed);
  stats_.batch_requests.record(count);
}

unsigned char* Group::reserve_stage(u64 bytes) noexcept {
  PG_ASSERT(bytes > 0 && bytes <= config_.group_commit_bytes_max);  // one batch fits the stage
  for (;;) {
    if (unsigned char* out = journal_->reserve(static_cast<u32>(bytes))) return out;
    if (journal_->failed()) return nullptr;
    if (config_.drive_inline) {
      // No writer thread to wait for: this thread empties the stage itself.
      journal_->flush();
      continue;
    }
    // The stage is full: the writer empties it when its current sync is done.
    release_durable();
    const u32 epoch = wake_.prepare_wait();
    if (journal_->staged_bytes() + bytes <= config_.group_commit_bytes_max || journal_->failed()) {
      wake_.cancel_wait();
      continue;
    }
    wake_.wait(epoch, 1'000'000);
  }
}

// Stage 2: the batch's records, in ring order. Consecutive `commands` requests share
// one record (their sequences follow on); an atomic request is a record of its own.
void Group::journal_batch(u32 count, u64 bytes, Stamp first) {
  unsigned char* out = reserve_stage(bytes);
  if (out == nullptr) return;  // the writer failed: fail_pending() answers these
  unsigned char* const start = out;
  u64 sequence = first.sequence;
  u32 i = 0;
  u64 records = 0;
  while (i < count) {
    const Request& r = ring_.read(next_read_ + i);
    if (is_lookup(r)) {
      ++i;
      continue;
    }
    if (r.kind == RequestKind::atomic) {
      out += journal::encode_annotations(out, sequence, sequence, first.timestamp_ns,
                                         annotations_of(r), record_bytes_max(config_), &records);
      journal::RecordEncoder encoder(out, journal::RecordType::atomic, sequence, first.timestamp_ns,
                                     r.count);
      encoder.append_key(r.batch_key);
      encoder.append(std::span(r.commands, r.count));
      out += encoder.finish();
      sequence += r.count;
      ++records;
      ++i;
      continue;
    }
    // A run of commands requests (lookups in between take no place in the log).
    u32 merged = 0;
    u32 end = i;
    while (end < count) {
      const Request& next = ring_.read(next_read_ + end);
      if (is_lookup(next)) {
        ++end;
        continue;
      }
      if (!is_commands(next) || merged + logged_count(next) > config_.request_commands_max) break;
      merged += logged_count(next);
      ++end;
    }
    // What the run's requests say about their commands goes just before the record
    // that holds the commands (journal/format.h).
    u64 command_base = sequence;
    for (u32 j = i; j < end; ++j) {
      const Request& part = ring_.read(next_read_ + j);
      if (!is_commands(part)) continue;
      if (part.claim != nullptr) ++command_base;
      out += journal::encode_annotations(out, sequence, command_base, first.timestamp_ns,
                                         annotations_of(part), record_bytes_max(config_), &records);
      command_base += part.count;
    }
    journal::RecordEncoder encoder(out, journal::RecordType::commands, sequence, first.timestamp_ns,
                                   merged);
    for (u32 j = i; j < end; ++j) {
      const Request& part = ring_.read(next_read_ + j);
      if (!is_commands(part)) continue;
      if (part.claim != nullptr) encoder.append(std::span(part.claim, 1));
      encoder.append(std::span(part.commands, part.count));
    }
    out += encoder.finish();
    sequence += merged;
    ++records;
    i = end;
  }
  // Packed records take at most what was reserved for them, and usually far less;
  // every command of the batch is in them, in order.
  PG_ASSERT(static_cast<u64>(out - start) <= bytes);
  PG_ASSERT(sequence > first.sequence && records > 0);
  journal_->commit(static_cast<u32>(out - start), sequence - 1);
  stats_.records.fetch_add(records, std::memory_order_relaxed);
}

// Stage 3: the ledger, in ring order, each request at its own sequences; then each
// request waits in the release queue for its last command to be durable.
void Group::apply_batch(u32 count, Stamp first, u64 taken_ns) {
  u64 sequence = first.sequence;
  for (u32 i = 0; i < count; ++i) {
    const Request& r = ring_.read(next_read_ + i);
    Outcome outcome;
    outcome.taken_ns = taken_ns;
    switch (r.kind) {
      case RequestKind::commands:
        if (r.claim != nullptr) {
          *r.claim_result =
              ledger_->apply_claimed(Stamp{sequence, first.timestamp_ns}, *r.claim,
                                     std::span(r.commands, r.count), std::span(r.results, r.count));
        } else {
          ledger_->apply_batch(Stamp{sequence, first.timestamp_ns}, std::span(r.commands, r.count),
                               std::span(r.results, r.count));
        }
        if (r.order_out != nullptr) {
          // The order as the step left it (a create's: the one it made, if any).
          const Command& c = r.commands[0];
          const u64 id = c.kind == CommandKind::order_create ? r.results[0].id : c.order.order_id;
          const Order* order = id == 0 ? nullptr : ledger_->find_order(id);
          outcome.found = order != nullptr;
          outcome.archived = order == nullptr && ledger_->order_archived(id);
          *r.order_out = order != nullptr ? *order : Order{};
        }
        break;
      case RequestKind::atomic:
        outcome.atomic = ledger_->apply_atomic(Stamp{sequence, first.timestamp_ns},
                                               std::span(r.commands, r.count), r.batch_key,
                                               std::span(r.results, r.count));
        break;
      case RequestKind::lookup_account:
      case RequestKind::lookup_transfer:
        outcome.found = lookup(r);
        break;
      case RequestKind::read_events:
      case RequestKind::read_entries:
        outcome.page = read(r);
        break;
      case RequestKind::lookup_quota: {
        const OwnerQuota* entry = ledger_->find_quota(MerchantId{r.lookup_id});
        outcome.found = entry != nullptr;
        *r.quota_out = entry != nullptr ? *entry : OwnerQuota{};
        r.quota_out->owner = r.lookup_id;
        *r.quota_defaults_out = ledger_->quotas().defaults();
        break;
      }
      case RequestKind::lookup_order: {
        const Order* order = ledger_->find_order(r.lookup_id);
        outcome.found = order != nullptr;
        outcome.archived = order == nullptr && ledger_->order_archived(r.lookup_id);
        *r.order_out = order != nullptr ? *order : Order{};
        break;
      }
      case RequestKind::read_unsettled:
        ledger_->for_each_unsettled([&](const Transfer& hold, u32 number) {
          if (outcome.filled == r.count) return;
          r.transfer_out[outcome.filled] = hold;
          r.channel_numbers_out[outcome.filled] = number;
          ++outcome.filled;
        });
        break;
    }
    if (!is_lookup(r)) {
      outcome.first_sequence = sequence;
      sequence += logged_count(r);
      // The ledger ran this request's commands at exactly the sequences logged for them.
      PG_ASSERT(ledger_->last_stamp().sequence == sequence - 1);
    }
    // A lookup saw everything applied so far: it waits for all of that to be durable.
    push_release(Pending{r.completion, sequence - 1, outcome});
  }
  publish_key_stats();
}

// How far command time is from the wall clock, and a log line when a step of the wall
// clock (more than 1 s) is first seen: command time then moves toward it at 5 % of the
// time that passes (Sequencer), so holds and keys do not all expire at once.
void Group::publish_clock_stats() noexcept {
  const i64 offset = sequencer_->offset_ns();
  stats_.clock_offset_ns.store(offset, std::memory_order_relaxed);
  const u64 jumps = sequencer_->jumps();
  if (jumps == stats_.clock_jumps.load(std::memory_order_relaxed)) return;
  stats_.clock_jumps.store(jumps, std::memory_order_relaxed);
  PG_LOG_WARN(
      "event=clock_jump group={} wall_minus_command_ms={} message=\"the wall clock stepped; "
      "command time "
      "follows the time that passes and moves toward it at {}% of that\"",
      config_.ledger.prefix.group, -offset / 1'000'000, 100 / Sequencer::kSlewDivisor);
}

// The key tables' fill for /metrics and Retry-After, and one log line per burst of
// idempotency_capacity refusals (at most one per 10 s, with the count since the last).
void Group::publish_key_stats() noexcept {
  const u64 now = ledger_->last_stamp().timestamp_ns;
  stats_.idempotency_keys.store(ledger_->idempotency_records(), std::memory_order_relaxed);
  stats_.signature_keys.store(ledger_->signature_records(), std::memory_order_relaxed);
  const u64 client_room = ledger_->key_room_at_ns(KeyLane::client);
  const u64 signature_room = ledger_->key_room_at_ns(KeyLane::signature);
  stats_.idempotency_room_at_ns.store(client_room > now ? client_room : 0,
                                      std::memory_order_relaxed);
  stats_.signature_room_at_ns.store(signature_room > now ? signature_room : 0,
                                    std::memory_order_relaxed);
  const u64 refusals = ledger_->key_capacity_refusals();
  if (refusals == stats_.key_capacity_refusals.load(std::memory_order_relaxed)) return;
  stats_.key_capacity_refusals.store(refusals, std::memory_order_relaxed);
  const u64 steady = static_cast<u64>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                          std::chrono::steady_clock::now().time_since_epoch())
                                          .count());
  if (refusals_logged_at_ns_ != 0 && steady - refusals_logged_at_ns_ < 10 * kNanosPerSecond) return;
  PG_LOG_WARN(
      "event=idempotency_capacity group={} refused={} idempotency_keys={} idempotency_keys_max={} "
      "signature_keys={} signature_keys_max={} room_in_s={}",
      config_.ledger.prefix.group, refusals - refusals_logged_, ledger_->idempotency_records(),
      config_.ledger.idempotency_keys_max, ledger_->signature_records(),
      config_.ledger.signature_capacity(),
      (std::max(client_room, signature_room) -
       std::min(now, std::max(client_room, signature_room))) /
          kNanosPerSecond);
  refusals_logged_ = refusals;
  refusals_logged_at_ns_ = steady;
}

void Group::push_release(const Pending& pending) noexcept {
  PG_ASSERT(!queue_full());
  // Answers leave in order: each waits for no less of the log than the one before.
  PG_ASSERT(release_count_ == 0 ||
            release_[(release_head_ + release_count_ - 1) % release_.size()].durable_at <=
                pending.durable_at);
  PG_ASSERT(pending.completion != nullptr);
  release_[(release_head_ + release_count_) % release_.size()] = pending;
  ++release_count_;
}

// Stage 4: answer every request whose commands are durable, in order.
void Group::release_durable() noexcept {
  const u64 durable = journal_->durable_sequence();
  u64 now = 0;
  if (release_count_ > 0 && release_[release_head_].durable_at <= durable) {
    const u64 durable_at = journal_->durable_at_ns();
    now = steady_ns();
    stats_.release_delay_ns.record(now - std::min(now, durable_at));
  }
  while (release_count_ > 0) {
    Pending& pending = release_[release_head_];
    if (pending.durable_at > durable) break;
    // Acknowledged means durable: nothing is answered ok past the journal's point.
    PG_ASSERT(pending.durable_at <= journal_->durable_sequence());
    pending.outcome.released_ns = now;
    pending.completion->complete(pending.outcome);
    release_head_ = (release_head_ + 1) % release_.size();
    --release_count_;
  }
}

// The journal failed: nothing more is acknowledged. What is durable was released
// above; everything else is answered not_durable, now and from here on.
void Group::fail_pending() noexcept {
  failed_.store(true, std::memory_order_release);
  PG_LOG_ERROR("event=journal_failed group={} durable_sequence={} error=\"{}\"",
               config_.ledger.prefix.group, journal_->durable_sequence(),
               journal_->failure().to_string());
  release_durable();
  while (release_count_ > 0) {
    Pending& pending = release_[release_head_];
    pending.outcome.status = ResultCode::not_durable;
    pending.completion->complete(pending.outcome);
    release_head_ = (release_head_ + 1) % release_.size();
    --release_count_;
    stats_.not_durable.fetch_add(1, std::memory_order_relaxed);
  }
}

void Group::refuse_batch(u32 count) noexcept {
  for (u32 i = 0; i < count; ++i) {
    const Request& r = ring_.read(next_read_ + i);
    Outcome outcome;
    outcome.status = ResultCode::not_durable;
    r.completion->complete(outcome);
  }
  stats_.not_durable.fetch_add(count, std::memory_order_relaxed);
  next_read_ += count;
  ring_.release(next_read_);
  space_.notify_all();
}

// When idle: a tick moves time on in the log, so holds expire on time and old
// idempotency keys leave, and the same happens on replay.
void Group::inject_tick() {
  const u64 now = sequencer_->now();
  publish_clock_stats();
  // Idle since the last command logged, or since the group opened if none was.
  const u64 since_last = now - std::max(ledger_->last_stamp().timestamp_ns, opened_at_ns_);
  const u64 next_expiry = ledger_->next_expiry_ns();
  const bool hold_due = next_expiry != 0 && next_expiry <= now;
  const bool due = (hold_due && since_last >= config_.tick_interval_ns) ||
                   since_last >= config_.heartbeat_interval_ns;
  if (!due || queue_full()) return;
  static const Command kTick = Command::make_tick();
  const Stamp stamp = sequencer_->stamp(1);
  PG_ASSERT(stamp.sequence == ledger_->last_stamp().sequence + 1 ||
            ledger_->last_stamp().sequence == 0);
  unsigned char* out = reserve_stage(journal::record_bytes_max(journal::RecordType::commands, 1));
  if (out == nullptr) return;
  const u32 bytes = journal::encode_record(out, journal::RecordType::commands, stamp.sequence,
                                           stamp.timestamp_ns, std::span(&kTick, 1));
  journal_->commit(bytes, stamp.sequence);
  (void)ledger_->apply(stamp, kTick);
  stats_.ticks.fetch_add(1, std::memory_order_relaxed);
  stats_.records.fetch_add(1, std::memory_order_relaxed);
  stats_.commands.fetch_add(1, std::memory_order_relaxed);
}

namespace {
constexpr u64 kSnapshotBackoffFirstNs = kNanosPerSecond;
constexpr u64 kSnapshotBackoffMaxNs = 300 * kNanosPerSecond;
}  // namespace

void Group::maybe_snapshot() {
  if (config_.snapshot_every_commands == 0 || snapshotter_.running()) return;
  const u64 applied = ledger_->last_stamp().sequence;
  if (applied - last_snapshot_sequence_ < config_.snapshot_every_commands) return;
  if (snapshot_backoff_ns_ != 0 && clock_->monotonic_ns() < snapshot_retry_at_ns_) return;
  if (!config_.snapshot_fork_fails && snapshotter_.start(*ledger_)) {
    last_snapshot_sequence_ = applied;
    PG_LOG_INFO("event=snapshot_started group={} sequence={} pause_us={:.1f}",
                config_.ledger.prefix.group, applied,
                static_cast<double>(snapshotter_.last_pause_ns()) / 1e3);
    return;
  }
  const int error = config_.snapshot_fork_fails ? EAGAIN : errno;
  snapshot_failed(fmt::format("fork: {}", std::strerror(error)));
}

// A snapshot that could not be made: logged and counted, and the next try put off,
// doubling each time. The group goes on (readiness does not change), but segments
// are not removed meanwhile: /metrics and the log say so.
void Group::snapshot_failed(const std::string& why) {
  snapshot_backoff_ns_ = snapshot_backoff_ns_ == 0
                             ? kSnapshotBackoffFirstNs
                             : std::min(2 * snapshot_backoff_ns_, kSnapshotBackoffMaxNs);
  snapshot_retry_at_ns_ = clock_->monotonic_ns() + snapshot_backoff_ns_;
  stats_.snapshot_failures.fetch_add(1, std::memory_order_relaxed);
  PG_LOG_ERROR(
      "event=snapshot_failed group={} reason=\"{}\" failures={} retry_in_s={} "
      "message=\"journal segments are kept until a snapshot succeeds\"",
      config_.ledger.prefix.group, why, stats_.snapshot_failures.load(std::memory_order_relaxed),
      snapshot_backoff_ns_ / kNanosPerSecond);
}

void Group::poll_snapshot() {
  if (!snapshotter_.running()) return;
  std::string message;
  switch (snapshotter_.poll(journal_->durable_sequence(), &message)) {
    case snapshot::Snapshotter::Progress::published: {
      snapshot_backoff_ns_ = 0;
      stats_.snapshots.fetch_add(1, std::memory_order_relaxed);
      stats_.last_snapshot_sequence.store(snapshotter_.last_published(), std::memory_order_relaxed);
      // A reader of the journal behind the snapshots keeps what it still needs.
      const std::atomic<u64>* reader = retention_floor_.load(std::memory_order_acquire);
      const u32 segments_max = retention_segments_max_.load(std::memory_order_relaxed);
      const u64 floor = reader != nullptr ? reader->load(std::memory_order_acquire) : 0;
      const u64 oldest_kept =
          snapshot::prune(config_.dir, std::max<u32>(config_.snapshots_kept, 1), storage(),
                          reader != nullptr ? std::max<u64>(floor, 1) : 0);
      u32 removed = 0;
      if (!config_.keep_journal) {
        const u64 covered = reader != nullptr ? std::min(oldest_kept, floor) : oldest_kept;
        removed = journal::remove_covered_segments(config_.dir, covered, storage());
        if (reader != nullptr && journal::list_segments(config_.dir).size() > segments_max) {
          // Past the bound the reader is not waited for: neither its snapshot nor its
          // segments are kept (what the group itself needs always is).
          const u64 own =
              snapshot::prune(config_.dir, std::max<u32>(config_.snapshots_kept, 1), storage());
          removed += journal::remove_covered_segments(config_.dir, own, storage());
          stats_.retention_overrides.fetch_add(1, std::memory_order_relaxed);
          PG_LOG_WARN(
              "event=retention_override group={} reader_at={} removed_through={} "
              "message=\"a reader of the journal (the history store) is more than {} segments "
              "behind: segments it has not read were removed; rebuild it\"",
              config_.ledger.prefix.group, floor, own, segments_max);
        }
      }
      PG_LOG_INFO("event=snapshot_published group={} message=\"{}\" segments_removed={}",
                  config_.ledger.prefix.group, message, removed);
      break;
    }
    case snapshot::Snapshotter::Progress::failed:
      snapshot_failed(message);
      break;
    default:
      break;
  }
}

const Outcome& wait_for(Group& group, WaitableCompletion& done) {
  if (!group.config().drive_inline) return done.wait();
  while (!done.done()) {
    const bool took = group.step();
    const bool flushed = group.flush_journal();
    // A request in the group is taken, staged, flushed and answered, or refused.
    PG_ASSERT(took || flushed || done.done());
  }
  return done.wait();
}

ResultCode apply_and_wait(Group& group, std::span<const Command> commands,
                          std::vector<CommandResult>& results) {
  results.assign(commands.size(), CommandResult{});
  for (std::size_t first = 0; first < commands.size(); first += kBatchMax) {
    const auto count = static_cast<u32>(std::min<std::size_t>(kBatchMax, commands.size() - first));
    WaitableCompletion done;
    const ResultCode submitted = group.submit(Request{.kind = RequestKind::commands,
                                                      .count = count,
                                                      .commands = commands.data() + first,
                                                      .results = results.data() + first,
                                                      .completion = &done});
    if (submitted != ResultCode::ok) return submitted;
    const Outcome& outcome = wait_for(group, done);
    if (outcome.status != ResultCode::ok) return outcome.status;
  }
  return ResultCode::ok;
}

}  // namespace paygate
