#include "history/projector.h"

#include <fmt/format.h>

#include "base/assert.h"
#include "base/log.h"
#include "snapshot/snapshot.h"

namespace paygate::history {

// Collects the events its ledger makes into the batch, with the statement lines of
// the group's own accounts (balances read from the ledger: events come after the
// change they tell of). Allocation is amortized: this is the projector's ledger,
// not the group's.
class Projector::Sink final : public LedgerEventSink, public OrderObserver {
 public:
  explicit Sink(Projector& projector) : p_(projector) {}

  void append(const LedgerEvent& in) noexcept override {
    std::vector<LedgerEvent>& events = p_.batch_.events;
    LedgerEvent event = in;
    // Its place among its command's events, as the group's event log numbers it (a
    // batch ends with a record, and a command's events never span records).
    event.index =
        !events.empty() && events.back().sequence == in.sequence ? events.back().index + 1 : 0;
    entries_at_.push_back(p_.batch_.entries.size());
    made_at_.push_back(p_.batch_.made.size());
    closed_at_.push_back(p_.batch_.holds_closed.size());
    events.push_back(event);
    if (event.kind == LedgerEventKind::pending_posted ||
        event.kind == LedgerEventKind::pending_voided ||
        event.kind == LedgerEventKind::pending_expired) {
      // (A hold is drawn from an account of its own group.)
      if (const Account* from = p_.ledger_->find_account(event.debit_account_id)) {
        p_.batch_.holds_closed.push_back(Batch::HoldClosed{.sequence = event.sequence,
                                                           .transfer = event.id,
                                                           .owner = from->owner.value,
                                                           .kind = event.kind,
                                                           .at_ns = event.timestamp_ns});
      }
    }
    if (event.kind == LedgerEventKind::transfer_posted ||
        event.kind == LedgerEventKind::transfer_pending) {
      if (const std::optional<Transfer> made = p_.ledger_->find_transfer(TransferId{event.id})) {
        p_.batch_.made.push_back(*made);
      }
    }
    if (event.kind == LedgerEventKind::account_created) return;
    // How the event moved each side (a hold only reserves: held, not the balance).
    i64 debit = 0, credit = 0, held = 0;
    const i64 amount = static_cast<i64>(event.amount);
    switch (event.kind) {
      case LedgerEventKind::transfer_posted:
        debit = -amount;
        credit = amount;
        break;
      case LedgerEventKind::transfer_pending:
        held = amount;
        break;
      case LedgerEventKind::pending_posted:
        debit = -amount;
        credit = amount;
        held = -static_cast<i64>(event.amount + event.released);
        break;
      case LedgerEventKind::pending_voided:
      case LedgerEventKind::pending_expired:
        held = -static_cast<i64>(event.released);
        break;
      case LedgerEventKind::account_created:
        break;
    }
    // Both sides have the line, as the group's statements do (a hold placed, voided or
    // expired moves nothing on the credit side: a line of 0).
    line(event, event.debit_account_id, 0, debit, held);
    line(event, event.credit_account_id, 1, credit, 0);
  }
  u64 mark() const noexcept override { return p_.batch_.events.size(); }
  void rewind(u64 mark) noexcept override {
    if (mark >= p_.batch_.events.size()) return;
    p_.batch_.entries.resize(entries_at_[mark]);
    p_.batch_.made.resize(made_at_[mark]);
    p_.batch_.holds_closed.resize(closed_at_[mark]);
    entries_at_.resize(mark);
    made_at_.resize(mark);
    closed_at_.resize(mark);
    p_.batch_.events.resize(mark);
  }
  // An order's change (order commands are never in atomic batches: nothing to rewind).
  void order_changed(const Order& order, Stamp at, bool made) noexcept override {
    p_.batch_.orders.push_back(OrderChange{
        .sequence = at.sequence, .at_ns = at.timestamp_ns, .created = made, .order = order});
  }
  // A final order leaves memory (as the group's ledger lets it go, at the same command).
  void order_left(const Order& order, Stamp at) noexcept override {
    p_.batch_.orders_left.push_back(Batch::OrderLeft{
        .sequence = at.sequence, .id = order.id, .created_ns = order.created_at_ns});
  }
  void flushed() noexcept {  // the batch was written
    entries_at_.clear();
    made_at_.clear();
    closed_at_.clear();
  }

 private:
  void line(const LedgerEvent& event, AccountId id, u8 side, i64 amount, i64 held) {
    // Accounts of other groups (a clearing account's counterpart) have no line here.
    const Account* account = p_.ledger_->find_account(id);
    if (account == nullptr) return;
    p_.batch_.entries.push_back(EntryRow{.account = id.value,
                                         .sequence = event.sequence,
                                         .index = event.index,
                                         .side = side,
                                         .transfer = event.id,
                                         .kind = event.kind,
                                         .amount = amount,
                                         .held = held,
                                         .balance = account->balance(),
                                         .available = account->available(),
                                         .at_ns = event.timestamp_ns});
  }

  Projector& p_;
  std::vector<std::size_t> entries_at_;  // entries before each event of the batch
  std::vector<std::size_t> made_at_;     // transfers made before each event
  std::vector<std::size_t> closed_at_;   // holds closed before each event
};

Projector::Projector(const ProjectorConfig& config, Store& store)
    : config_(config), store_(store) {}

Projector::~Projector() = default;

Result<std::unique_ptr<Projector>> Projector::open(const ProjectorConfig& config, Store& store) {
  std::unique_ptr<Projector> p(new Projector(config, store));
  Result<u64> watermark = store.watermark(config.group);
  if (!watermark.ok()) return watermark.status();
  Result<u64> first = store.first_sequence(config.group);
  if (!first.ok()) return first.status();
  p->watermark_ = watermark.value();
  p->first_sequence_ = first.value();

  // The ledger at the watermark: a snapshot at or before it, then the journal.
  const std::vector<std::filesystem::path> segments = journal::list_segments(config.dir);
  const u64 journal_first =
      segments.empty() ? 1 : journal::parse_segment_file_name(segments.front().filename().string());
  const u64 at_most = p->watermark_ != 0 ? p->watermark_ : ~u64{0};
  snapshot::LoadResult loaded;
  if (p->watermark_ != 0 || journal_first > 1) {
    loaded = snapshot::load_newest(
        config.dir, [&] { return std::make_unique<Ledger>(config.ledger); }, at_most);
  }
  if (loaded.ledger != nullptr && loaded.sequence + 1 >= journal_first) {
    p->ledger_ = std::move(loaded.ledger);
  } else if (journal_first == 1) {
    p->ledger_ = std::make_unique<Ledger>(config.ledger);
  } else {
    return Status::corruption(fmt::format(
        "history of group {}: the store is at sequence {}, but the journal starts at {} and no "
        "snapshot at or before it loads: rebuild the store",
        config.group, p->watermark_, journal_first));
  }
  const u64 start = p->ledger_->last_stamp().sequence;
  if (p->watermark_ == 0) {
    // Nothing of the group yet: history starts where the ledger does.
    p->watermark_ = start;
    if (start > 0) {
      PG_LOG_WARN(
          "event=history_starts_late group={} sequence={} message=\"the journal before it is "
          "gone: the store's history of this group starts after it\"",
          config.group, start + 1);
    }
  }
  p->applied_ = start;
  p->sink_ = std::make_unique<Sink>(*p);
  // Up to the watermark: replayed, not written.
  if (start < p->watermark_) {
    Result<u64> replayed = p->catch_up(p->watermark_);
    if (!replayed.ok()) return replayed.status();
    if (p->applied_ != p->watermark_) {
      return Status::corruption(
          fmt::format("history of group {}: the store is at sequence {} but the journal ends at {}",
                      config.group, p->watermark_, p->applied_));
    }
  }
  // The orders it holds now that the store has no row of (its history began here, or
  // the store kept no orders then) get one, as they are now.
  std::vector<Order> held;
  p->ledger_->orders().for_each([&](const Order& o) { held.push_back(o); });
  if (Status s = store.backfill_orders(config.group, p->watermark_, held); !s.ok()) return s;
  p->ledger_->set_event_sink(p->sink_.get());
  p->ledger_->set_order_observer(p->sink_.get());
  return p;
}

Result<u64> Projector::catch_up(u64 durable) {
  // A batch whose write failed is written again as it was before any more is read:
  // its COMMIT may have been done all the same (the answer lost with the connection),
  // and only the very same batch's end tells that apart (flush()).
  if (unwritten_ && applied_ > watermark_) {
    const u64 at = watermark_;
    if (Status s = flush(); !s.ok()) return s;
    return watermark_ - at;
  }
  // Retention may have removed the segment the last scan ended in, once every command
  // in it was projected: the next is found from the sequence.
  if (next_ && !std::filesystem::exists(next_->file)) next_.reset();
  const u64 before = applied_;
  const bool writing = applied_ >= watermark_;  // else replaying up to the watermark
  std::string error;
  const journal::ScanReport report = journal::scan(
      config_.dir, applied_ + 1,
      [&](const journal::Record& record) {
        if (record.next_sequence() - 1 > durable) return false;  // not known to be on disk
        if (record.header->sequence != applied_ + 1) {
          error = fmt::format("journal resumes at sequence {}, after {}", record.header->sequence,
                              applied_);
          return false;
        }
        results_.resize(record.commands.size());
        if (record.header->type == journal::RecordType::atomic) {
          (void)ledger_->apply_atomic(record.first_stamp(), record.commands, record.batch_key,
                                      results_);
        } else {
          ledger_->apply_batch(record.first_stamp(), record.commands, results_);
        }
        if (writing) {
          for (const journal::AnnotationView& a : record.annotations)
            batch_.annotations.push_back({a.sequence, a.kind, std::string(a.text)});
        }
        applied_ = record.next_sequence() - 1;
        next_ = journal::ScanStart{*record.file, record.offset + record.header->length,
                                   record.next_sequence()};
        if (writing && batch_.events.size() + batch_.annotations.size() + batch_.orders.size() +
                               batch_.orders_left.size() >=
                           config_.batch_events) {
          if (Status s = flush(); !s.ok()) error = s.message();
          // One transaction per call: the worker publishes the watermark and answers
          // the reads waiting for it between calls, and comes back at once.
          return false;
        }
        return true;
      },
      next_ ? &*next_ : nullptr);
  if (!error.empty()) return Status::io_error(error);
  if (report.end == journal::LogEnd::corrupt && next_ && !std::filesystem::exists(next_->file)) {
    next_.reset();  // removed as the scan began: the next call finds its way by sequence
    return applied_ - before;
  }
  if (report.end == journal::LogEnd::corrupt && applied_ < durable) {
    return Status::corruption(report.message);
  }
  if (writing) {
    if (Status s = flush(); !s.ok()) return s;
  }
  return applied_ - before;
}

Status Projector::flush() {
  if (applied_ == watermark_) return Status::success();
  batch_.group = config_.group;
  batch_.after = watermark_;
  batch_.watermark = applied_;
  if (Status s = store_.write(batch_); !s.ok()) {
    // A write reported failed may have committed all the same (SQLite can report a
    // COMMIT failed after it happened; MariaDB's answer can be lost with the
    // connection), or another writer wrote this very stretch: a store already at this
    // batch's end holds it, and history goes on from there rather than being refused
    // for good.
    const Result<u64> stored = store_.watermark(config_.group);
    if (!stored.ok() || stored.value() != applied_) {
      unwritten_ = true;
      return s;
    }
  }
  unwritten_ = false;
  if (first_sequence_ == 0) first_sequence_ = watermark_ + 1;
  watermark_ = applied_;
  sink_->flushed();
  batch_.clear();
  return Status::success();
}

}  // namespace paygate::history
