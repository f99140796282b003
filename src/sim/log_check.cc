#include "sim/log_check.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "journal/format.h"
#include "journal/reader.h"
#include "ledger/ledger.h"

namespace paygate::sim {
namespace {

// No request half in the log: the commands of one tag come in runs of the
// request's length (or a multiple: a retry taken in the same batch).
void check_whole_requests(u32 g, const std::map<u64, std::pair<Command, CommandResult>>& log,
                          const std::map<u64, u32>& sizes) {
  u64 tag = 0;
  u64 run = 0;
  u64 run_start = 0;
  const auto end_run = [&] {
    const auto size = sizes.find(tag);
    if (size != sizes.end() && run % size->second != 0) {
      fail(
          fmt::format("group {}: a request of {} commands is in the log with only {} of them "
                      "(from sequence {})",
                      g, size->second, run, run_start));
    }
  };
  for (const auto& [sequence, entry] : log) {
    // (A group's own deliver carries no tag: an order's names its payer there.)
    const u64 entry_tag = entry.first.kind == CommandKind::deliver ? 0 : entry.first.extra_hash;
    if (entry_tag == tag && run != 0) {
      ++run;
      continue;
    }
    end_run();
    tag = entry_tag;
    run = 1;
    run_start = sequence;
  }
  end_run();
}

}  // namespace

// The whole log (archived segments, then the live ones) replayed from its first
// command into a fresh ledger: the same state as recovery made (snapshot + tail),
// and every acknowledged request in it, at its sequence, with its answers.
u64 check_whole_log(const LogCheck& check, const Group& group,
                    std::span<const Acknowledged* const> acknowledged,
                    const std::map<u64, u32>& request_sizes) {
  const u32 g = check.group;
  const std::filesystem::path& live = check.live;
  const std::filesystem::path& archived = check.archived;
  const std::filesystem::path& whole = check.scratch;
  std::filesystem::remove_all(whole);
  std::filesystem::create_directories(whole);
  const std::vector<std::filesystem::path> segments = journal::list_segments(live);
  const u64 first_live =
      segments.empty() ? ~u64{0}
                       : journal::parse_segment_file_name(segments.front().filename().string());
  if (std::filesystem::exists(archived)) {
    for (const auto& file : journal::list_segments(archived)) {
      if (journal::parse_segment_file_name(file.filename().string()) < first_live) {
        std::filesystem::copy_file(file, whole / file.filename());
      }
    }
  }
  for (const auto& file : segments)
    std::filesystem::copy_file(file, whole / file.filename());

  LedgerConfig ledger_config = group.config().ledger;
  Ledger fresh(ledger_config);
  std::map<u64, std::pair<Command, CommandResult>> log;
  std::map<u64, std::vector<std::string>> said;  // annotations by sequence
  std::vector<CommandResult> results;
  u64 expected = 1;
  std::string gap;
  journal::ScanReport scanned = journal::scan(whole, 1, [&](const journal::Record& record) {
    if (record.header->sequence != expected) {
      gap = fmt::format("the log of group {} jumps from sequence {} to {}", g, expected,
                        record.header->sequence);
      return false;
    }
    results.assign(record.commands.size(), CommandResult{});
    if (record.header->type == journal::RecordType::atomic) {
      (void)fresh.apply_atomic(record.first_stamp(), record.commands, record.batch_key, results);
    } else {
      fresh.apply_batch(record.first_stamp(), record.commands, results);
    }
    for (std::size_t i = 0; i < record.commands.size(); ++i)
      log[expected + i] = {record.commands[i], results[i]};
    for (const journal::AnnotationView& a : record.annotations)
      said[a.sequence].emplace_back(a.text);
    expected = record.next_sequence();
    return true;
  });
  if (!gap.empty()) fail(gap);
  if (!scanned.ok()) fail(fmt::format("group {}: the whole log: {}", g, scanned.message));
  if (scanned.end != journal::LogEnd::clean) {
    fail(fmt::format("group {}: recovery left a torn tail: {}", g, scanned.message));
  }
  if (expected != group.recovery().next_sequence) {
    fail(fmt::format("group {}: the log ends before {} but recovery continues at {}", g, expected,
                     group.recovery().next_sequence));
  }
  if (fresh.state_digest() != group.ledger().state_digest()) {
    fail(
        fmt::format("group {}: replaying the whole log gives another state than recovery "
                    "(snapshot {} + journal)",
                    g, group.recovery().snapshot_sequence));
  }
  check_whole_requests(g, log, request_sizes);
  for (const auto& [sequence, texts] : said) {
    const u64 tag = log.at(sequence).first.extra_hash;
    for (const std::string& text : texts) {
      if (!text.starts_with(annotation_text(tag, 0))) {
        fail(fmt::format("group {}: sequence {} is annotated \"{}...\", not with its own tag {:x}",
                         g, sequence, text.substr(0, 24), tag));
      }
    }
  }
  for (const Acknowledged* each : acknowledged) {
    const Acknowledged& acked = *each;
    for (std::size_t i = 0; i < acked.logged.size(); ++i) {
      const u64 sequence = acked.first_sequence + i;
      const auto it = log.find(sequence);
      if (it == log.end()) {
        fail(fmt::format("group {}: an acknowledged command (sequence {}) is not in the log", g,
                         sequence));
      }
      if (std::memcmp(&it->second.first, &acked.logged[i], sizeof(Command)) != 0) {
        fail(
            fmt::format("group {}: sequence {} holds another command than the one "
                        "acknowledged there",
                        g, sequence));
      }
      for (const auto& [index, text] : acked.said) {
        const auto found = said.find(acked.first_sequence + index);
        if (index == i &&
            (found == said.end() ||
             std::find(found->second.begin(), found->second.end(), text) == found->second.end())) {
          fail(
              fmt::format("group {}: sequence {} was acknowledged with an annotation the log "
                          "does not hold",
                          g, sequence));
        }
      }
      if (!(it->second.second == acked.results[i])) {
        fail(
            fmt::format("group {}: sequence {} was answered {} (id {}) but replays as {} "
                        "(id {})",
                        g, sequence, name(acked.results[i].code), acked.results[i].id,
                        name(it->second.second.code), it->second.second.id));
      }
    }
  }
  std::filesystem::remove_all(whole);
  return fresh.state_digest();
}

std::string annotation_text(u64 tag, std::size_t padding) {
  return fmt::format("tag-{:x}-", tag) + std::string(padding, 'p');
}

void check_settled(Engine& engine, std::span<const Currency> currencies) {
  for (u32 g = 0; g < engine.groups(); ++g) {
    u64 unsettled = 0;
    engine.group(g).ledger().for_each_unsettled([&](const Transfer&, u32) { ++unsettled; });
    if (unsettled != 0) {
      fail(
          fmt::format("group {}: {} transfers between groups still unsettled after a "
                      "clean start and the finisher",
                      g, unsettled));
    }
  }
  // Between two groups, what one's clearing account sent the other received.
  for (u32 a = 0; a < engine.groups(); ++a) {
    for (u32 b = a + 1; b < engine.groups(); ++b) {
      for (Currency currency : currencies) {
        const Account* ab = engine.group(a).ledger().find_clearing_account(b, currency);
        const Account* ba = engine.group(b).ledger().find_clearing_account(a, currency);
        const i64 sum = (ab ? ab->balance() : 0) + (ba ? ba->balance() : 0);
        if (sum != 0) {
          fail(
              fmt::format("groups {} and {} disagree on {} cents of what crossed between "
                          "them",
                          a, b, sum));
        }
      }
    }
  }
}

}  // namespace paygate::sim
