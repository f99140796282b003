#include "app/journal_tool.h"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <memory>
#include <vector>

#include <fmt/format.h>

#include "journal/reader.h"
#include "snapshot/snapshot.h"

namespace paygate {
namespace {

std::string utc(u64 ns) {
  const std::time_t seconds = static_cast<std::time_t>(ns / kNanosPerSecond);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char text[40];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &tm);
  return fmt::format("{}.{:06}Z", text, (ns % kNanosPerSecond) / 1000);
}

LedgerConfig config_of(const journal::SegmentHeader& h) {
  LedgerConfig config{.prefix = {h.region, h.group},
                      .accounts_max = h.accounts_max,
                      .pending_max = h.pending_max,
                      .recent_transfers_max = h.recent_transfers_max,
                      .idempotency_keys_max = h.idempotency_keys_max,
                      .idempotency_window_ns = h.idempotency_window_ns,
                      // A journal from before the signature table has no signature keys:
                      // the defaults replay it the same.
                      .signature_keys_max = h.signature_keys_max,
                      .signature_window_ns = h.signature_window_ns != 0
                                                 ? h.signature_window_ns
                                                 : LedgerConfig{}.signature_window_ns};
  // The order book's settings (a journal from before orders holds none). The number of
  // groups is not recorded: transfers between groups replay as refused (docs/JOURNAL.md).
  if (h.orders_max != 0) {
    config.orders_max = h.orders_max;
    config.order_final_retained_ns = u64{h.order_final_retained_s} * kNanosPerSecond;
  }
  return config;
}

const char* kind_name(journal::AnnotationKind kind) {
  switch (kind) {
    case journal::AnnotationKind::reference:
      return "reference";
    case journal::AnnotationKind::metadata:
      return "metadata";
    case journal::AnnotationKind::description:
      return "description";
    case journal::AnnotationKind::ipn_url:
      return "ipn_url";
    case journal::AnnotationKind::callback_url:
      return "callback_url";
    case journal::AnnotationKind::merchant_ref:
      return "merchant_ref";
    case journal::AnnotationKind::destination:
      return "destination";
    case journal::AnnotationKind::provider_ref:
      return "provider_ref";
    case journal::AnnotationKind::reason:
      return "reason";
  }
  return "unknown";
}

const char* type_name(journal::RecordType type) {
  switch (type) {
    case journal::RecordType::segment_header:
      return "segment_header";
    case journal::RecordType::commands:
      return "commands";
    case journal::RecordType::atomic:
      return "atomic";
    case journal::RecordType::annotations:
      return "annotations";
  }
  return "unknown";
}

}  // namespace

int journal_verify(const std::filesystem::path& dir) {
  const auto started = std::chrono::steady_clock::now();
  // First pass: the log itself.
  u64 last_progress = 0;
  journal::ScanReport report = journal::scan(dir, 0, [&](const journal::Record& record) {
    if (record.header->sequence - last_progress >= 10'000'000) {
      last_progress = record.header->sequence;
      std::fprintf(stderr, "verify: checked through sequence %llu\n",
                   static_cast<unsigned long long>(record.next_sequence() - 1));
    }
    return true;
  });
  std::printf("journal %s\n", dir.string().c_str());
  for (const auto& segment : report.segments) {
    std::printf("  segment %s first_sequence=%llu records=%llu end_offset=%llu\n",
                segment.file.filename().string().c_str(),
                static_cast<unsigned long long>(segment.first_sequence),
                static_cast<unsigned long long>(segment.records),
                static_cast<unsigned long long>(segment.end_offset));
  }
  std::printf(
      "records=%llu commands=%llu annotations=%llu first_sequence=%llu next_sequence=%llu end=%s\n",
      static_cast<unsigned long long>(report.records),
      static_cast<unsigned long long>(report.commands),
      static_cast<unsigned long long>(report.annotations),
      static_cast<unsigned long long>(report.first_sequence),
      static_cast<unsigned long long>(report.next_sequence), journal::name(report.end));
  if (!report.message.empty()) std::printf("%s\n", report.message.c_str());
  if (report.end == journal::LogEnd::corrupt) return 2;
  if (!report.has_identity) {
    std::printf("empty journal\n");
    return report.end == journal::LogEnd::torn_tail ? 1 : 0;
  }

  // Second pass: replay, from the start if the log has it, else from a snapshot.
  const LedgerConfig config = config_of(report.identity);
  std::printf(
      "ledger region=%u group=%u accounts_max=%u pending_max=%u recent_transfers_max=%u "
      "idempotency_keys_max=%u\n",
      config.prefix.region, config.prefix.group, config.accounts_max, config.pending_max,
      config.recent_transfers_max, config.idempotency_keys_max);
  std::unique_ptr<Ledger> ledger;
  u64 from = 1;
  if (report.first_sequence != 1) {
    snapshot::LoadResult loaded =
        snapshot::load_newest(dir, [&] { return std::make_unique<Ledger>(config); });
    for (const auto& skipped : loaded.skipped)
      std::printf("snapshot skipped: %s\n", skipped.c_str());
    if (!loaded.ledger) {
      std::printf("cannot replay: the journal starts at %llu and no snapshot loads\n",
                  static_cast<unsigned long long>(report.first_sequence));
      return 2;
    }
    ledger = std::move(loaded.ledger);
    from = loaded.sequence + 1;
    std::printf("replaying from snapshot %s (sequence %llu)\n",
                loaded.file.filename().string().c_str(),
                static_cast<unsigned long long>(loaded.sequence));
  } else {
    ledger = std::make_unique<Ledger>(config);
  }
  std::vector<CommandResult> results(kBatchMax);
  u64 replayed = 0;
  const journal::ScanReport replay = journal::scan(dir, from, [&](const journal::Record& record) {
    if (record.header->type == journal::RecordType::atomic) {
      (void)ledger->apply_atomic(record.first_stamp(), record.commands, record.batch_key, results);
    } else {
      ledger->apply_batch(record.first_stamp(), record.commands, results);
    }
    replayed += record.commands.size();
    return true;
  });
  const Status invariants = ledger->check_invariants();
  std::printf("replayed=%llu accounts=%u open_holds=%u digest=%016llx invariants=%s seconds=%.3f\n",
              static_cast<unsigned long long>(replayed), ledger->account_count(),
              ledger->pending_count(), static_cast<unsigned long long>(ledger->state_digest()),
              invariants.ok() ? "hold" : invariants.message().c_str(),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  if (!invariants.ok() || replay.end == journal::LogEnd::corrupt) return 2;
  return report.end == journal::LogEnd::torn_tail ? 1 : 0;
}

int journal_dump(const std::filesystem::path& dir, u64 from, u64 limit) {
  u64 printed = 0;
  const journal::ScanReport report = journal::scan(dir, from, [&](const journal::Record& record) {
    if (printed++ >= limit) return false;
    const journal::RecordHeader& h = *record.header;
    std::printf(
        "record sequence=%llu count=%u type=%s version=%u time=%s file=%s offset=%llu length=%u\n",
        static_cast<unsigned long long>(h.sequence), h.count, type_name(h.type), h.version,
        utc(h.timestamp_ns).c_str(), record.file->filename().string().c_str(),
        static_cast<unsigned long long>(record.offset), h.length);
    if (h.type == journal::RecordType::atomic) {
      std::printf("  atomic key=%016llx%016llx\n",
                  static_cast<unsigned long long>(record.batch_key.hi),
                  static_cast<unsigned long long>(record.batch_key.lo));
    }
    std::size_t said = 0;  // annotations printed (they come in sequence order)
    for (std::size_t i = 0; i < record.commands.size(); ++i) {
      std::printf("  %llu %s\n", static_cast<unsigned long long>(h.sequence + i),
                  describe(record.commands[i]).c_str());
      for (;
           said < record.annotations.size() && record.annotations[said].sequence == h.sequence + i;
           ++said) {
        const journal::AnnotationView& a = record.annotations[said];
        std::printf("    %s\n", fmt::format("{}={:?}", kind_name(a.kind), a.text).c_str());
      }
    }
    return true;
  });
  if (report.end != journal::LogEnd::clean)
    std::printf("%s: %s\n", journal::name(report.end), report.message.c_str());
  return report.end == journal::LogEnd::corrupt ? 2 : 0;
}

}  // namespace paygate
