// Recovery of a group (Group::recover): the journal's identity checked first, the
// newest good snapshot, every journal record after it, a torn tail cleared (or the
// start refused), then the writer opened where the log ends.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstring>

#include <fmt/format.h>

#include "base/assert.h"
#include "base/log.h"
#include "journal/reader.h"
#include "pipeline/group.h"

namespace paygate {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Zeroes [from, to) of a file and syncs it: the bytes of a torn write are cleared so
// that later appends never sit next to stale ones.
Status clear_range(Storage& storage, const std::filesystem::path& file, u64 from, u64 to) {
  const int fd = storage.open(file.c_str(), O_RDWR | O_CLOEXEC, 0);
  if (fd < 0) {
    return Status::io_error(fmt::format("cannot open {}: {}", file.string(), std::strerror(errno)));
  }
  static const unsigned char kZeros[65536] = {};
  bool ok = true;
  for (u64 at = from; at < to && ok;) {
    const u64 n = std::min<u64>(sizeof kZeros, to - at);
    ok = storage.pwrite_all(fd, kZeros, n, static_cast<off_t>(at));
    at += n;
  }
  ok = ok && storage.fdatasync(fd) == 0;
  Status cleared;
  if (!ok) {
    cleared =
        Status::io_error(fmt::format("cannot clear {}: {}", file.string(), std::strerror(errno)));
  }
  storage.close(fd);
  return cleared;
}

// Makes a directory's entries (files removed or added) durable.
Status sync_directory(Storage& storage, const std::filesystem::path& dir) {
  if (const int error = storage.sync_directory(dir.c_str()); error != 0) {
    return Status::io_error(
        fmt::format("cannot sync directory {}: {}", dir.string(), std::strerror(error)));
  }
  return Status::success();
}

}  // namespace

// ---------------------------------------------------------------------------
// Recovery: newest good snapshot, then every journal record after it.

Status Group::configuration_mismatch(const journal::SegmentHeader& written) const {
  return Status::invalid_config(fmt::format(
      "journal in {} was written for another ledger configuration (group {}.{}, accounts_max {}, "
      "pending_max {}, recent_transfers_max {}, idempotency_keys_max {}, idempotency_window_s {}, "
      "signature_keys_max {}, orders_max {}, final_retained_s {}); start with the "
      "configuration it was created with",
      config_.dir.string(), written.region, written.group, written.accounts_max,
      written.pending_max, written.recent_transfers_max, written.idempotency_keys_max,
      written.idempotency_window_ns / kNanosPerSecond, written.signature_keys_max,
      written.orders_max, written.order_final_retained_s));
}

Status Group::recover() {
  const auto started = std::chrono::steady_clock::now();
  std::error_code ec;
  // The group's directory and files are the server's alone (0700, 0600): every balance
  // is in them.
  if (std::filesystem::create_directories(config_.dir, ec)) {
    std::filesystem::permissions(config_.dir, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::replace, ec);
  }
  lock_fd_ = ::open((config_.dir / "LOCK").c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  if (lock_fd_ < 0 || ::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    return Status::busy(fmt::format("cannot lock {}: {} (is another paygate using it?)",
                                    config_.dir.string(), std::strerror(errno)));
  }

  // A journal written with another ledger configuration is refused before anything of
  // it is replayed (replaying it could take minutes, and its results would be wrong).
  const journal::SegmentHeader identity =
      journal::SegmentHeader::describe(config_.ledger, config_.journal_segment_bytes);
  if (journal::SegmentHeader written{};
      journal::read_identity(config_.dir, &written) && !written.same_ledger(identity)) {
    return configuration_mismatch(written);
  }

  snapshot::LoadResult loaded =
      snapshot::load_newest(config_.dir, [&] { return std::make_unique<Ledger>(config_.ledger); });
  for (const std::string& skipped : loaded.skipped) {
    PG_LOG_WARN("event=snapshot_skipped group={} reason=\"{}\"", config_.ledger.prefix.group,
                skipped);
  }
  recovery_.snapshots_skipped = loaded.skipped;
  recovery_.snapshot_file = loaded.file;
  recovery_.snapshot_sequence = loaded.sequence;
  ledger_ = loaded.ledger ? std::move(loaded.ledger) : std::make_unique<Ledger>(config_.ledger);
  last_snapshot_sequence_ = loaded.sequence;
  // Replay makes the events after the snapshot again; those before it are not held.
  const u32 events_max = std::bit_ceil(std::clamp<u32>(config_.events_max, kBatchMax, 1u << 30));
  events_ = std::make_unique<EventLog>(events_max, config_.ledger.accounts_max);
  events_->start_after(loaded.sequence);
  ledger_->set_event_sink(events_.get());

  const u64 from = loaded.sequence + 1;
  bool first = true;
  std::string replay_error;
  journal::ScanReport report = journal::scan(config_.dir, from, [&](const journal::Record& record) {
    if (first && record.header->sequence != from) {
      replay_error = fmt::format("journal resumes at sequence {} but the snapshot ends at {}",
                                 record.header->sequence, from - 1);
      return false;
    }
    first = false;
    if (record.header->type == journal::RecordType::atomic) {
      (void)ledger_->apply_atomic(record.first_stamp(), record.commands, record.batch_key,
                                  scratch_results_);
    } else {
      ledger_->apply_batch(record.first_stamp(), record.commands, scratch_results_);
    }
    ++recovery_.records_replayed;
    recovery_.commands_replayed += record.commands.size();
    return true;
  });
  if (!replay_error.empty()) return Status::corruption(replay_error);
  if (report.end == journal::LogEnd::corrupt) {
    return Status::corruption(report.message);
  }
  if (report.has_identity && !report.identity.same_ledger(identity)) {
    return configuration_mismatch(report.identity);
  }
  if (report.next_sequence != 0 && report.next_sequence < from) {
    return Status::corruption(fmt::format(
        "journal ends at sequence {}, before the snapshot at {}: journal files are missing",
        report.next_sequence - 1, from - 1));
  }
  if (report.next_sequence == 0 && from > 1 && !journal::list_segments(config_.dir).empty()) {
    return Status::corruption("journal has no records after the snapshot but its files exist");
  }

  // Where appends continue.
  journal::AppendPosition at{{}, 0, report.next_sequence != 0 ? report.next_sequence : from};
  // Replay ended where the log ends: appends continue right after the last command the
  // ledger holds, with nothing skipped and nothing applied twice.
  PG_ASSERT(ledger_->last_stamp().sequence + 1 == at.next_sequence);
  if (report.end == journal::LogEnd::torn_tail) {
    PG_LOG_WARN("event=journal_torn_tail group={} message=\"{}\"", config_.ledger.prefix.group,
                report.message);
    recovery_.torn_tail = report.message;
    // The repair must be whole before anything is appended: a segment left behind
    // would hold stale bytes after the new records' sequences. Any failure refuses
    // to start (and names the file); nothing was appended yet, so a restart retries.
    bool torn_file_deleted = false;
    for (const auto& file : report.delete_files) {
      ec.clear();
      const int injected =
          config_.journal_fault ? config_.journal_fault(journal::FileOp::remove) : 0;
      if (injected != 0) ec = std::error_code(injected, std::generic_category());
      if (injected == 0 && storage().unlink(file.c_str()) != 0 && errno != ENOENT) {
        ec = std::error_code(errno, std::generic_category());
      }
      if (ec) {
        return Status::io_error(fmt::format(
            "cannot remove {} while clearing the journal's torn tail: {}; paygate will not "
            "start until it can",
            file.string(), ec.message()));
      }
      torn_file_deleted = torn_file_deleted || file == report.file;
    }
    if (!torn_file_deleted) {
      if (Status cleared = clear_range(storage(), report.file, report.offset, report.clear_to);
          !cleared.ok()) {
        return cleared;
      }
    }
    if (!report.delete_files.empty()) {
      if (Status synced = sync_directory(storage(), config_.dir); !synced.ok()) return synced;
    }
  }
  // The last segment that still exists, and where its records end.
  for (auto it = report.segments.rbegin(); it != report.segments.rend(); ++it) {
    if (std::filesystem::exists(it->file)) {
      at.file = it->file;
      at.offset = it->end_offset;
      break;
    }
  }

  journal::WriterOptions options{.dir = config_.dir,
                                 .identity = identity,
                                 .segment_bytes = config_.journal_segment_bytes,
                                 .staging_bytes = config_.group_commit_bytes_max,
                                 .record_bytes_max = record_bytes_max(config_),
                                 .durable_event = &wake_,
                                 .thread_nice = config_.thread_nice,
                                 .sync_gap_ns = config_.journal_sync_gap_ns,
                                 .sync_gap_commands = config_.journal_sync_gap_commands,
                                 .sync_gap_quiet_ns = config_.journal_sync_gap_quiet_ns,
                                 .prepare_segments = config_.journal_prepare_segments,
                                 .fault = config_.journal_fault,
                                 .storage = config_.storage};
  Result<std::unique_ptr<journal::Writer>> writer = journal::Writer::open(options, at);
  if (!writer.ok()) return writer.status();
  journal_ = std::move(writer).value();

  PG_ASSERT(at.file.empty() || (at.offset > 0 && at.offset % journal::kRecordAlign == 0));
  // Refusals the replay made again were logged when they happened.
  refusals_logged_ = ledger_->key_capacity_refusals();
  stats_.key_capacity_refusals.store(refusals_logged_, std::memory_order_relaxed);
  sequencer_ =
      std::make_unique<Sequencer>(*clock_, at.next_sequence, ledger_->last_stamp().timestamp_ns);
  opened_at_ns_ = sequencer_->now();
  recovery_.next_sequence = at.next_sequence;
  recovery_.seconds = seconds_since(started);
  if (Status invariants = ledger_->check_invariants(); !invariants.ok()) {
    return invariants.with_context("after recovery");
  }
  PG_LOG_INFO(
      "event=recovered group={} snapshot_sequence={} records={} commands={} next_sequence={} "
      "seconds={:.3f}",
      config_.ledger.prefix.group, recovery_.snapshot_sequence, recovery_.records_replayed,
      recovery_.commands_replayed, recovery_.next_sequence, recovery_.seconds);
  return Status::success();
}

}  // namespace paygate
