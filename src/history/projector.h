// A group's projection into the history store (docs/HISTORY.md): it follows the
// group's journal up to what is durable, replays each record into a ledger of its own
// (the ledger is deterministic, so it makes the very events the group made), and
// writes the events, the transfers with their annotations, and the statement lines
// with running balances to the store, each stretch in one transaction with the
// group's watermark: every (group, sequence) exactly once, whatever crash comes
// between. It never holds the group back: it reads files and takes no lock the group
// takes.
//
// Open: the store's watermark W says where it stands; its ledger starts from the
// newest snapshot at or before W (or empty, when the journal still starts at 1) and
// replays the journal up to W without writing. A store with nothing of the group
// starts where the journal does: from sequence 1 when it has it all, else from the
// newest snapshot (history before it is not there to take; first_sequence says so).
//
// Threads: one caller at a time (the history worker). Memory: a second ledger of the
// group's configuration.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>

#include "base/status.h"
#include "history/store.h"
#include "journal/reader.h"
#include "ledger/ledger.h"

namespace paygate::history {

struct ProjectorConfig {
  std::filesystem::path dir;  // the group's directory
  LedgerConfig ledger;        // the group's
  u32 group = 0;
  // Events, annotations and order rows per transaction, about (whole records; each
  // transfer's two statement lines come on top).
  u64 batch_events = 200'000;
};

class Projector {
 public:
  static Result<std::unique_ptr<Projector>> open(const ProjectorConfig& config, Store& store);
  ~Projector();
  Projector(const Projector&) = delete;
  Projector& operator=(const Projector&) = delete;

  // Projects the journal's commands after the watermark up to `durable` (every one of
  // them is on disk: nothing past it is read), in one transaction of about
  // `batch_events` rows at most (call again while behind). Returns how many commands
  // it projected.
  Result<u64> catch_up(u64 durable);
  // Calls catch_up() until it has nothing more to do (tools and tests).
  Result<u64> catch_up_all(u64 durable) {
    u64 total = 0;
    for (;;) {
      const Result<u64> some = catch_up(durable);
      if (!some.ok() || some.value() == 0) return some.ok() ? Result<u64>(total) : some;
      total += some.value();
    }
  }

  u64 watermark() const noexcept { return watermark_; }
  // The first sequence whose events the store holds for this group (1: all of them).
  u64 first_sequence() const noexcept { return first_sequence_; }
  const Ledger& ledger() const noexcept { return *ledger_; }

 private:
  class Sink;
  Projector(const ProjectorConfig& config, Store& store);
  Status flush();

  ProjectorConfig config_;
  Store& store_;
  std::unique_ptr<Ledger> ledger_;
  std::unique_ptr<Sink> sink_;
  Batch batch_;
  u64 watermark_ = 0;                       // in the store
  u64 first_sequence_ = 0;                  // of the store's history of the group
  u64 applied_ = 0;                         // the ledger's last sequence (>= watermark_)
  bool unwritten_ = false;                  // batch_'s write failed: write it again first
  std::optional<journal::ScanStart> next_;  // where the journal continues after applied_
  std::vector<CommandResult> results_;
};

}  // namespace paygate::history
