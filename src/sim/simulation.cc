#include "sim/simulation.h"

#include <fmt/format.h>

#include <fcntl.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <vector>

#include "base/assert.h"
#include "base/ids.h"
#include "base/log.h"
#include "journal/format.h"
#include "journal/reader.h"
#include "pipeline/carry.h"
#include "pipeline/clock.h"
#include "pipeline/engine.h"
#include "sim/log_check.h"
#include "sim/sim_storage.h"

namespace paygate::sim {

std::string SeedReport::line() const {
  return fmt::format(
      "seed={} groups={} steps={} requests={} acknowledged={} crashes={} restarts={} torn={} "
      "lost_writes={} injected_errors={} corruptions_detected={} flips_unsynced={} repairs={} "
      "snapshots={} clock_jumps={} orders={} trace={:016x}",
      seed, groups, steps, requests, acknowledged, crashes, restarts, torn_writes, lost_writes,
      injected_errors, corruptions_detected, flips_unsynced, repairs, snapshots, clock_jumps,
      orders, trace);
}

namespace {

constexpr Currency kCurrencies[] = {Currency::from("USD"), Currency::from("EUR")};
constexpr u64 kStartWallNs = 1'800'000'000ull * kNanosPerSecond;  // 2027

// A request the simulator made, and what became of it. Its completion runs inside a
// group's step() or flush_journal(), on the simulator's thread.
struct Submitted final : Completion {
  u32 group = 0;
  RequestKind kind = RequestKind::commands;
  std::vector<Command> commands;
  std::vector<CommandResult> results;
  Command claim;
  CommandResult claim_result;
  bool claimed = false;
  IdempotencyKey batch_key{};
  // Set for the steps of a transfer between groups: the machine that submitted it.
  CarryBetweenGroups* carry = nullptr;
  // A retry of acknowledged_[*retry_of]; changed: with other content.
  std::optional<std::size_t> retry_of;
  bool changed = false;
  bool done = false;
  Outcome outcome;
  // What it says about its commands (journal annotations): texts that name the
  // request's tag, so that the log check can tell whose they are.
  std::vector<std::string> said;
  std::vector<journal::Annotation> annotations;

  Request request() {
    Request r;
    r.kind = kind;
    r.count = static_cast<u32>(commands.size());
    r.commands = commands.data();
    r.results = results.data();
    r.batch_key = batch_key;
    if (claimed) {
      r.claim = &claim;
      r.claim_result = &claim_result;
    }
    r.completion = this;
    r.annotations = annotations.data();
    r.annotation_count = static_cast<u32>(annotations.size());
    return r;
  }
  void complete(const Outcome& o) noexcept override {
    outcome = o;
    done = true;
  }
};

// A transfer between groups the simulator carries itself, as the edge does.
struct Carry {
  CarryBetweenGroups machine;
  std::unique_ptr<Submitted> step;  // the step in flight (its commands live in machine)
};

class Simulation {
 public:
  explicit Simulation(const SimulationOptions& options)
      : options_(options),
        random_(options.seed * 0x9E3779B97F4A7C15ull + 1),
        storage_(options.seed ^ 0xD1B54A32D192ED03ull),
        clock_(kStartWallNs) {
    report_.seed = options.seed;
  }

  // The engine goes first: draining, it completes requests that live in this object.
  ~Simulation() { engine_.reset(); }
  Simulation(const Simulation&) = delete;
  Simulation& operator=(const Simulation&) = delete;

  SeedReport run() {
    configure();
    std::filesystem::create_directories(options_.dir / "archive");
    storage_.on_unlink(
        [this](const std::string& path, const std::string& durable) { archive(path, durable); });
    open_engine(/*after_crash=*/false);
    for (u32 step = 0; step < options_.steps; ++step) {
      ++report_.steps;
      act();
      settle_completions();
      if (storage_.dead() || any_group_failed()) crash();
    }
    finish();
    report_.injected_errors = storage_.injected_errors();
    return report_;
  }

 private:
  // ------------------------------------------------------------------ setup

  u64 pick(u64 n) { return n == 0 ? 0 : random_() % n; }
  bool chance(u32 percent) { return pick(100) < percent; }
  void trace(u64 value) { report_.trace = (report_.trace ^ value) * 0x100000001B3ull; }

  void configure() {
    report_.groups = 1 + static_cast<u32>(pick(3));
    config_.data_dir = options_.dir / "data";
    config_.region = 0;
    config_.groups = report_.groups;
    config_.between_groups_retry_ns = 0;  // inline: the simulator looks when it wants
    GroupConfig& g = config_.group;
    g.ledger.accounts_max = 256;
    g.ledger.pending_max = 128;
    g.ledger.recent_transfers_max = 256;
    g.ledger.idempotency_keys_max = static_cast<u32>(24 + pick(41));
    g.ledger.idempotency_window_ns = 60 * kNanosPerSecond;
    g.ledger.signature_keys_max = static_cast<u32>(16 + pick(17));
    g.ledger.signature_window_ns = 120 * kNanosPerSecond;
    g.ring_capacity = 64;
    g.batch_requests_max = static_cast<u32>(1 + pick(16));
    g.release_queue_max = 256;
    g.events_max = kBatchMax;
    g.request_commands_max = 16;
    const u64 record = Group::record_bytes_max(g);
    const u64 segment = (record * (2 + pick(7)) + 4095) / 4096 * 4096;
    g.journal_segment_bytes = segment;
    // Odd seeds: from the seed, not the generator, so that every other draw (and so
    // every earlier seed's run) stays as it was.
    g.journal_prepare_segments = (options_.seed & 1) != 0;
    g.group_commit_bytes_max = record * (1 + pick(4));
    g.tick_interval_ns = 100'000'000;
    g.heartbeat_interval_ns = 10 * kNanosPerSecond;
    g.snapshot_every_commands = chance(20) ? 0 : 20 + pick(200);
    g.snapshots_kept = static_cast<u32>(1 + pick(3));
    g.keep_journal = chance(20);
    g.submit_timeout_ns = 0;
    g.idle_spin = 0;
    g.thread_nice = 0;
    g.clock = &clock_;
    g.storage = &storage_;
    g.drive_inline = true;
    if (chance(35)) {
      faults_ = SimStorage::Faults{.write_error_per_million = static_cast<u32>(pick(30000)),
                                   .sync_error_per_million = static_cast<u32>(pick(30000))};
    }
    storage_.set_faults(faults_);
    accounts_.assign(report_.groups, {});
    holds_.assign(report_.groups, {});
    orders_.assign(report_.groups, {});
  }

  // Segments the group removes (a snapshot covers them) are kept here, as they were
  // durable, so that the checks can replay the whole log from its first command.
  void archive(const std::string& path, const std::string& durable) {
    const std::filesystem::path file(path);
    if (journal::parse_segment_file_name(file.filename().string()) == 0) return;
    // A segment with no command record in it is no part of the log: recovery removes
    // such segments after a torn write (one whose header never became durable, or one
    // that holds nothing but annotations whose commands were lost), and the log may
    // then go on in the segment before it, past this one's first sequence.
    const std::filesystem::path probe = options_.dir / "archive-probe";
    std::filesystem::remove_all(probe);
    std::filesystem::create_directories(probe);
    std::ofstream(probe / file.filename(), std::ios::binary | std::ios::trunc) << durable;
    const u64 records = journal::scan(probe, 0, nullptr).records;
    std::filesystem::remove_all(probe);
    if (records == 0) return;
    const std::filesystem::path dir = options_.dir / "archive" / file.parent_path().filename();
    std::filesystem::create_directories(dir);
    std::ofstream(dir / file.filename(), std::ios::binary | std::ios::trunc) << durable;
  }

  // ------------------------------------------------------------------ the engine

  bool any_group_failed() {
    if (!engine_) return false;
    for (u32 g = 0; g < engine_->groups(); ++g) {
      if (engine_->group(g).failed()) return true;
    }
    return false;
  }

  // Opens the engine (retrying what an injected fault broke), checks what it
  // recovered, and starts it.
  void open_engine(bool after_crash, bool may_need_repair = false) {
    for (u32 attempt = 0;; ++attempt) {
      if (attempt == 20) storage_.set_faults({});
      Result<std::unique_ptr<Engine>> opened = Engine::open(config_);
      if (opened.ok()) {
        engine_ = std::move(opened).value();
        break;
      }
      const Status& why = opened.status();
      if (why.code() == StatusCode::io_error && attempt < 25) {
        storage_.crash({});  // what the failed open wrote may be torn too
        continue;
      }
      // A bit flipped in a never-synced record that the crash kept whole: the group
      // cannot tell it from rot in an acknowledged record, so it refuses to start and
      // names the place; the operator cuts the journal there (docs/SIMULATION.md).
      // Everything acknowledged must survive the cut: the checks below say so.
      if (why.code() == StatusCode::corruption && may_need_repair && repair_journals()) {
        may_need_repair = false;
        continue;
      }
      fail(fmt::format("the engine did not open{}: {}", after_crash ? " after a crash" : "",
                       why.to_string()));
    }
    storage_.set_faults(faults_);
    ++report_.restarts;
    check_recovered();
    engine_->start();
    trace(0xE1);
    settle_completions();
  }

  // The operator's repair of a journal whose end is corrupt: zero from the bad record
  // to the end of its segment, remove the segments after it. True if one was cut.
  bool repair_journals() {
    storage_.set_faults({});
    bool repaired = false;
    for (u32 g = 0; g < report_.groups; ++g) {
      const std::filesystem::path dir = Engine::group_dir(config_.data_dir, g);
      const journal::ScanReport scanned =
          journal::scan(dir, 0, [](const journal::Record&) { return true; });
      if (scanned.end != journal::LogEnd::corrupt) continue;
      const u64 size = std::filesystem::file_size(scanned.file);
      const int fd = storage_.open(scanned.file.c_str(), O_WRONLY | O_CLOEXEC, 0);
      PG_ASSERT(fd >= 0);
      const std::string zeros(size - scanned.offset, '\0');
      PG_ASSERT(
          storage_.pwrite_all(fd, zeros.data(), zeros.size(), static_cast<off_t>(scanned.offset)));
      PG_ASSERT(storage_.fdatasync(fd) == 0);
      storage_.close(fd);
      for (const auto& file : journal::list_segments(dir)) {
        if (file.filename() > scanned.file.filename()) {
          PG_ASSERT(storage_.unlink(file.c_str()) == 0);
        }
      }
      PG_ASSERT(storage_.sync_directory(dir.c_str()) == 0);
      ++report_.repairs;
      repaired = true;
      if (options_.verbose) {
        fmt::print(stderr, "seed {}: the journal of group {} cut at {} offset {}\n", options_.seed,
                   g, scanned.file.string(), scanned.offset);
      }
    }
    storage_.set_faults(faults_);
    return repaired;
  }

  void close_engine() {
    engine_.reset();  // drains: answers what it took, then stops
    // Every step answered ok is durable and must be checked, but no machine moves on:
    // the engine is gone (the finisher or the next start finishes their holds).
    for (auto& carry : carries_) {
      if (carry->step && carry->step->done) answered(*carry->step);
    }
    carries_.clear();
    settle_completions();
    PG_ASSERT(in_flight_.empty());
  }

  void crash() {
    storage_.die_after(0);
    close_engine();
    // Now and then a bit flips in what survives of the never-synced writes.
    const SimStorage::CrashReport crash =
        storage_.crash({.flip_unsynced_per_million = chance(10) ? 1'000'000u : 0u});
    ++report_.crashes;
    report_.flips_unsynced += crash.flipped_bits;
    report_.torn_writes += crash.torn_writes;
    report_.lost_writes += crash.unsynced_writes - crash.surviving_writes + crash.torn_writes;
    trace(0xC0 ^ crash.surviving_writes ^ (crash.surviving_changes << 20));
    if (options_.verbose) {
      fmt::print(stderr, "seed {} step {}: crash: {} of {} unsynced writes kept ({} torn)\n",
                 options_.seed, report_.steps, crash.surviving_writes, crash.unsynced_writes,
                 crash.torn_writes);
    }
    if (crash.flipped_bits == 0 && chance(15)) flip_acknowledged_bit();
    open_engine(/*after_crash=*/true, /*may_need_repair=*/crash.flipped_bits != 0);
  }

  // Bit rot in a record that was synced: the group must refuse to open (naming the
  // file), never replay around it or take it for a torn tail; restored, it opens.
  void flip_acknowledged_bit() {
    const u32 g = static_cast<u32>(pick(report_.groups));
    const std::filesystem::path dir = Engine::group_dir(config_.data_dir, g);
    std::vector<std::pair<std::filesystem::path, u64>> spans;  // segment, valid bytes
    std::map<std::filesystem::path, u64> last_record;          // segment → its offset
    journal::ScanReport scanned = journal::scan(dir, 0, [&](const journal::Record& record) {
      last_record[*record.file] = record.offset;
      return true;
    });
    if (!scanned.ok()) fail("the log is corrupt right after a crash: " + scanned.message);
    for (const journal::SegmentSummary& segment : scanned.segments) {
      if (segment.records > 0) spans.emplace_back(segment.file, segment.end_offset);
    }
    if (spans.empty()) return;
    const auto& [file, end] = spans[pick(spans.size())];
    // Anywhere in the valid records; or, half the time, in the header of a segment's
    // last record, where damage can look like a write that stopped early.
    const auto last = last_record.find(file);
    const u64 offset = chance(50) && last != last_record.end()
                           ? last->second + pick(sizeof(journal::RecordHeader))
                           : pick(end);
    const u32 bit = static_cast<u32>(pick(8));
    storage_.flip_durable_bit(file, offset, bit);
    storage_.set_faults({});  // the open must fail for the flip, not for a fault
    Result<std::unique_ptr<Engine>> opened = Engine::open(config_);
    storage_.set_faults(faults_);
    if (opened.ok()) {
      fail(
          fmt::format("bit {} of byte {} of {} flipped (inside its valid records) and the "
                      "engine opened anyway",
                      bit, offset, file.string()));
    }
    if (opened.status().code() != StatusCode::corruption &&
        opened.status().code() != StatusCode::invalid_config) {
      fail("a flipped bit was refused as " + opened.status().to_string() + ", not as corruption");
    }
    ++report_.corruptions_detected;
    storage_.flip_durable_bit(file, offset, bit);
    trace(0xF1 ^ offset);
  }

  void finish() {
    // The end of the seed: no more faults; everything left unsettled is finished at
    // the next start, and after that nothing is unsettled anywhere.
    storage_.set_faults({});
    faults_ = {};
    storage_.live_on();
    if (storage_.dead() || any_group_failed()) crash();
    close_engine();
    open_engine(false);
    for (u32 round = 0; round < 4; ++round)
      pump_all();
    if (report_.groups > 1) {
      engine_->look_for_unsettled();
      engine_->look_for_unsettled();
    }
    close_engine();
    open_engine(false);
    check_settled(*engine_, kCurrencies);
    close_engine();
  }

  // ------------------------------------------------------------------ checks

  // What recovery must give, for each group, before it takes a request.
  void check_recovered() {
    for (u32 g = 0; g < engine_->groups(); ++g) {
      Group& group = engine_->group(g);
      if (Status s = group.ledger().check_invariants(); !s.ok()) {
        fail(fmt::format("group {} recovered breaking an invariant: {}", g, s.to_string()));
      }
      report_.snapshots += group.recovery().snapshot_sequence != 0 ? 1 : 0;
      check_log(g, group);
    }
  }

  // The whole log against what recovery built and what was acknowledged
  // (sim/log_check.h).
  void check_log(u32 g, Group& group) {
    const std::filesystem::path live = Engine::group_dir(config_.data_dir, g);
    const LogCheck check{.group = g,
                         .live = live,
                         .archived = options_.dir / "archive" / live.filename(),
                         .scratch = options_.dir / "whole-log"};
    std::vector<const Acknowledged*> mine;
    for (const Acknowledged& acked : acknowledged_) {
      if (acked.group == g) mine.push_back(&acked);
    }
    trace(check_whole_log(check, group, mine, tags_[g]));
  }

  // ------------------------------------------------------------------ completions

  void settle_completions() {
    bool moved = true;
    while (moved) {
      moved = false;
      for (auto it = in_flight_.begin(); it != in_flight_.end();) {
        Submitted& s = **it;
        if (!s.done) {
          ++it;
          continue;
        }
        answered(s);
        it = in_flight_.erase(it);
        moved = true;
      }
      for (auto it = carries_.begin(); it != carries_.end();) {
        Carry& carry = **it;
        if (carry.step && carry.step->done) {
          answered(*carry.step);
          carry.machine.on_done(carry.step->outcome);
          carry.step.reset();
          moved = true;
          if (!carry.machine.done() && engine_) submit_carry_step(carry);
        }
        if (carry.machine.done() || !carry.step) {
          if (carry.machine.done()) trace(0xCA ^ static_cast<u64>(carry.machine.status()));
          it = carry.machine.done() ? carries_.erase(it) : std::next(it);
        } else {
          ++it;
        }
      }
    }
  }

  void answered(Submitted& s) {
    trace(static_cast<u64>(s.outcome.status) << 32 | s.outcome.first_sequence);
    if (s.outcome.status != ResultCode::ok) return;
    Acknowledged acked;
    acked.group = s.group;
    acked.first_sequence = s.outcome.first_sequence;
    if (s.claimed) {
      acked.logged.push_back(s.claim);
      acked.results.push_back(s.claim_result);
    }
    if (s.carry) {
      // A carry's step: its commands live in the machine until on_done(). Its look-up
      // step logs nothing.
      const Request r = s.carry->request(nullptr);
      if (r.kind != RequestKind::commands && r.kind != RequestKind::atomic) return;
      s.commands.assign(r.commands, r.commands + r.count);
      s.results.assign(r.results, r.results + r.count);
    }
    if (s.outcome.first_sequence == 0) fail("an acknowledged request has no sequence");
    ++report_.acknowledged;
    for (std::size_t i = 0; i < s.commands.size(); ++i) {
      acked.logged.push_back(s.commands[i]);
      acked.results.push_back(s.results[i]);
      trace(static_cast<u64>(s.results[i].code) ^ (s.results[i].id << 8));
    }
    acked.commands = s.commands;
    for (const journal::Annotation& a : s.annotations)
      acked.said.emplace_back(a.command + (s.claimed ? 1 : 0), std::string(a.text));
    acked.acknowledged_at_ns = clock_.monotonic_ns();
    acked.wall_jumps = report_.clock_jumps;
    acked.restarts = report_.restarts;
    acked.keyed_retry_candidate = !s.carry && !s.claimed && !s.retry_of &&
                                  s.kind == RequestKind::commands && !s.commands.empty() &&
                                  !s.commands[0].key.empty();
    learn(s);
    check_retry(s);
    acknowledged_.push_back(std::move(acked));
  }

  // Accounts and holds that now exist for sure, for the workload to use.
  void learn(const Submitted& s) {
    if (s.carry) return;
    const bool all_or_none = s.kind == RequestKind::atomic && s.outcome.atomic != ResultCode::ok;
    if (all_or_none) return;
    if (s.claimed && !s.claim_result.ok()) return;
    for (std::size_t i = 0; i < s.commands.size(); ++i) {
      const Command& c = s.commands[i];
      const CommandResult& r = s.results[i];
      if (!r.ok()) continue;
      if (c.kind == CommandKind::create_account) {
        accounts_[s.group].push_back(Known{AccountId{r.id}, c.create_account.currency,
                                           (c.flags & kAccountAllowNegative) != 0});
      } else if (c.kind == CommandKind::transfer && (c.flags & kTransferPending) != 0 &&
                 (c.flags & kTransferBetweenGroups) == 0 && holds_[s.group].size() < 64) {
        holds_[s.group].push_back(TransferId{r.id});
      } else if (c.kind == CommandKind::order_create) {
        ++report_.orders;
        if (orders_[s.group].size() < 64) {
          orders_[s.group].push_back({r.id, c.order_create.amount});
        }
      }
    }
  }

  // A retry of an acknowledged keyed request, inside its window, answers as the first
  // did; the same key with other content is refused; a signature is never taken twice.
  void check_retry(const Submitted& s) {
    if (!s.retry_of) return;
    const Acknowledged& first = acknowledged_[*s.retry_of];
    const u64 window = std::min(config_.group.ledger.idempotency_window_ns,
                                config_.group.ledger.signature_window_ns);
    // Command time follows the time that passes, so a key stays for its whole window
    // while the group runs. At a start it takes the wall clock (how long the process
    // was down is unknown): after a step of the wall clock, a restart before command
    // time has caught up ages the keys by what was left of the step
    // (docs/SIMULATION.md). Only that case is not checked.
    const bool restarted_after_a_step =
        first.restarts != report_.restarts && report_.clock_jumps != 0;
    const bool inside = clock_.monotonic_ns() - first.acknowledged_at_ns < window / 4 &&
                        first.wall_jumps == report_.clock_jumps && !restarted_after_a_step;
    if (!inside) return;
    for (std::size_t i = 0; i < s.commands.size(); ++i) {
      const CommandResult& was = first.results[i];
      const CommandResult& now = s.results[i];
      if (s.commands[i].key.empty()) continue;  // not keyed: done again, as asked
      if (was.code == ResultCode::idempotency_capacity) continue;  // never remembered
      // A request refused before it was taken (a malformed one) leaves no signature:
      // the same bytes are refused the same way again.
      const bool signed_lane = s.commands[i].key_lane == KeyLane::signature;
      if (signed_lane && !was.ok() && now.code == was.code) continue;
      if (!signed_lane && s.changed && !was.ok()) continue;  // perhaps never kept
      ResultCode want = was.code;
      if (signed_lane) {
        want = ResultCode::signature_replayed;
      } else if (s.changed) {
        want = ResultCode::idempotency_key_reused;
      }
      const bool same =
          now.code == want &&
          (want != was.code || (now.id == was.id && now.channel_number == was.channel_number));
      if (!same) {
        fail(
            fmt::format("a retry of key {:x}{:x} (sequence {}) answered {} (id {}), the "
                        "first answer was {} (id {}), expected {}",
                        s.commands[i].key.hi, s.commands[i].key.lo, first.first_sequence + i,
                        name(now.code), now.id, name(was.code), was.id, name(want)));
      }
    }
  }

  // ------------------------------------------------------------------ the workload

  struct Known {
    AccountId id;
    Currency currency;
    bool funding = false;
  };

  void act() {
    const u64 roll = pick(1000);
    trace(roll);
    if (roll < 60) return create_accounts();
    if (roll < 230) return transfers();
    if (roll < 260) return orders();
    if (roll < 330) return holds();
    if (roll < 390) return post_or_void();
    if (roll < 430) return atomic_batch();
    if (roll < 460) return claimed();
    if (roll < 520) return retry();
    if (roll < 570) return carry();
    if (roll < 760) return turn_some();
    if (roll < 880) return flush_some();
    if (roll < 950) return clock_.advance((1 + pick(3000)) * 1'000'000);
    if (roll < 960) return jump_clock();
    if (roll < 970) {
      if (report_.groups > 1) engine_->look_for_unsettled();
      return;
    }
    if (roll < 982) return crash();
    if (roll < 994) return storage_.die_after(1 + pick(30));
    close_engine();
    open_engine(false);
  }

  void jump_clock() {
    ++report_.clock_jumps;
    const u64 now = clock_.now_ns();
    const u64 by = (1 + pick(300)) * kNanosPerSecond;
    clock_.set(chance(50) ? now + by : now - by);
  }

  void turn_some() {
    const u32 g = static_cast<u32>(pick(report_.groups));
    for (u64 n = 1 + pick(3); n > 0; --n)
      (void)engine_->group(g).step();
  }
  void flush_some() {
    const u32 g = static_cast<u32>(pick(report_.groups));
    (void)engine_->group(g).flush_journal();
  }
  void pump_all() {
    for (u32 g = 0; g < report_.groups; ++g) {
      for (u32 n = 0; n < 8; ++n) {
        const bool took = engine_->group(g).step();
        const bool flushed = engine_->group(g).flush_journal();
        if (!took && !flushed) break;
      }
    }
    settle_completions();
  }

  IdempotencyKey fresh_key() { return IdempotencyKey{++next_key_, options_.seed}; }

  std::unique_ptr<Submitted> request(u32 g, RequestKind kind = RequestKind::commands) {
    auto s = std::make_unique<Submitted>();
    s->group = g;
    s->kind = kind;
    return s;
  }

  void submit(std::unique_ptr<Submitted> s) {
    if (!s->retry_of) {
      // Every command of a request carries the request's tag (extra_hash: hashed with
      // a key, otherwise ignored by the ledger), so the log shows which commands came
      // together: a request is in the log whole, or not at all. A retry keeps the tag.
      const u64 tag = (++next_tag_) << 1;  // even: a changed retry's flipped tag is odd
      for (Command& c : s->commands)
        c.extra_hash = tag;
      if (s->claimed) s->claim.extra_hash = tag;  // the claim's fingerprint
      tags_[s->group][tag] = static_cast<u32>(s->commands.size() + (s->claimed ? 1 : 0));
      if (!s->commands.empty() && chance(50)) annotate(*s, tag);
    }
    s->results.assign(s->commands.size(), CommandResult{});
    const ResultCode taken = engine_->group(s->group).submit(s->request());
    trace(static_cast<u64>(taken) << 48 | s->commands.size());
    if (taken != ResultCode::ok) return;  // overloaded: the ring is full; not taken
    ++report_.requests;
    in_flight_.push_back(std::move(s));
  }

  // Annotations on the request's first and last commands, of lengths up to a few
  // hundred bytes (records of the simulator's small groups split them).
  void annotate(Submitted& s, u64 tag) {
    const u32 last = static_cast<u32>(s.commands.size() - 1);
    for (const u32 command : last == 0 ? std::vector<u32>{0} : std::vector<u32>{0, last}) {
      s.said.push_back(annotation_text(tag, chance(20) ? 300 + pick(400) : pick(100)));
      s.annotations.push_back({command, journal::AnnotationKind::reference, {}});
    }
    for (std::size_t i = 0; i < s.said.size(); ++i)
      s.annotations[i].text = s.said[i];  // once said no longer moves
  }

  const Known* any_account(u32 g, std::optional<Currency> currency = std::nullopt,
                           bool funding = false) {
    std::vector<const Known*> fit;
    for (const Known& k : accounts_[g]) {
      if ((!currency || k.currency == *currency) && (!funding || k.funding)) fit.push_back(&k);
    }
    return fit.empty() ? nullptr : fit[pick(fit.size())];
  }

  void maybe_key(Command& c) {
    const u64 r = pick(10);
    if (r < 4) c.with_key(fresh_key());
    if (r == 4) c.with_key(fresh_key(), KeyLane::signature);
  }

  Command a_transfer(u32 g) {
    const Known* debit = any_account(g);
    if (!debit)
      return Command::make_create_account(MerchantId{1}, kCurrencies[0], AccountKind::merchant);
    const Known* credit =
        any_account(g, chance(95) ? std::optional(debit->currency) : std::nullopt);
    const u64 amount = chance(5) ? 0 : 1 + pick(debit->funding ? 5000 : 800);
    Command c = Command::make_transfer(debit->id, credit ? credit->id : AccountId{1}, amount,
                                       debit->currency);
    maybe_key(c);
    return c;
  }

  void create_accounts() {
    const u32 g = static_cast<u32>(pick(report_.groups));
    auto s = request(g);
    for (u64 n = 1 + pick(4); n > 0; --n) {
      const bool funding = accounts_[g].empty() || chance(25);
      Command c = Command::make_create_account(MerchantId{1 + pick(3)}, kCurrencies[pick(2)],
                                               funding ? AccountKind::merchant : AccountKind::user,
                                               funding ? kAccountAllowNegative : 0);
      if (chance(20)) c.with_key(fresh_key());
      s->commands.push_back(c);
    }
    submit(std::move(s));
  }

  void transfers() {
    const u32 g = static_cast<u32>(pick(report_.groups));
    auto s = request(g);
    for (u64 n = 1 + pick(4); n > 0; --n)
      s->commands.push_back(a_transfer(g));
    submit(std::move(s));
  }

  // Orders (docs/ORDERS.md): made on a funding (merchant) account, then any step on one
  // the workload knows: a checkout by each method (now and then refused by a risk
  // rule), the provider's result, a cancel, a refund, a resolution.
  void orders() {
    const u32 g = static_cast<u32>(pick(report_.groups));
    auto s = request(g);
    Command c;
    if (orders_[g].empty() || chance(30)) {
      const Known* shop = any_account(g, std::nullopt, /*funding=*/true);
      if (!shop) return create_accounts();
      c = Command::make_order_create(shop->id, 1 + pick(500), shop->currency,
                                     static_cast<u32>(1 + pick(30)), chance(50) ? 1 + pick(40) : 0);
    } else {
      const u64 order = orders_[g][pick(orders_[g].size())].first;
      const Known* other = any_account(g);  // a payer's wallet, or a provider's account
      const AccountId account = other != nullptr ? other->id : AccountId{1};
      const u8 outcome = static_cast<u8>(1 + pick(2));
      switch (pick(8)) {
        case 0:
          c = Command::make_order(
              CommandKind::order_checkout, order, account, 0,
              checkout_action(OrderMethod::wallet,
                              chance(15) ? RiskRule::payer_velocity : RiskRule::none));
          break;
        case 1:
          c = Command::make_order(CommandKind::order_checkout, order, account, 0,
                                  checkout_action(OrderMethod::external));
          break;
        case 2:
          c = Command::make_order(CommandKind::order_checkout, order, account, 0,
                                  checkout_action(OrderMethod::balance));
          break;
        case 3:
        case 4:
          c = Command::make_order(CommandKind::order_result, order, {}, 0, outcome);
          break;
        case 5:
          c = Command::make_order(CommandKind::order_cancel, order);
          break;
        case 6:
          c = Command::make_order(CommandKind::order_refund, order, {},
                                  chance(50) ? 0 : 1 + pick(300));
          break;
        default:
          c = Command::make_order(CommandKind::order_resolve, order, {}, 0, outcome);
          break;
      }
    }
    maybe_key(c);
    s->commands.push_back(c);
    submit(std::move(s));
  }

  void holds() {
    const u32 g = static_cast<u32>(pick(report_.groups));
    const Known* debit = any_account(g);
    const Known* credit = debit ? any_account(g, debit->currency) : nullptr;
    if (!credit) return create_accounts();
    auto s = request(g);
    Command c = Command::make_hold(debit->id, credit->id, 1 + pick(600), debit->currency,
                                   static_cast<u32>(chance(20) ? 0 : 1 + pick(8)));
    maybe_key(c);
    s->commands.push_back(c);
    submit(std::move(s));
  }

  void post_or_void() {
    const u32 g = static_cast<u32>(pick(report_.groups));
    if (holds_[g].empty()) return holds();
    const std::size_t at = pick(holds_[g].size());
    const TransferId hold = holds_[g][at];
    auto s = request(g);
    Command c = chance(60) ? Command::make_post(hold, chance(30) ? 1 + pick(300) : 0)
                           : Command::make_void(hold);
    maybe_key(c);
    s->commands.push_back(c);
    holds_[g].erase(holds_[g].begin() + static_cast<std::ptrdiff_t>(at));
    submit(std::move(s));
  }

  void atomic_batch() {
    const u32 g = static_cast<u32>(pick(report_.groups));
    auto s = request(g, RequestKind::atomic);
    if (chance(70)) s->batch_key = fresh_key();
    for (u64 n = 2 + pick(4); n > 0; --n) {
      Command c = a_transfer(g);
      c.key = {};
      c.key_lane = KeyLane::client;
      s->commands.push_back(c);
    }
    submit(std::move(s));
  }

  // One key for a whole request (a non-atomic batch under an Idempotency-Key): a claim
  // logged before its commands.
  void claimed() {
    const u32 g = static_cast<u32>(pick(report_.groups));
    auto s = request(g);
    for (u64 n = 1 + pick(4); n > 0; --n) {
      Command c = a_transfer(g);
      c.key = {};
      c.key_lane = KeyLane::client;
      s->commands.push_back(c);
    }
    // Reusing an earlier claim's key with other content must be refused.
    const IdempotencyKey key =
        !claim_keys_.empty() && chance(25) ? claim_keys_[pick(claim_keys_.size())] : fresh_key();
    claim_keys_.push_back(key);
    s->claimed = true;
    s->claim = Command::make_claim(key, 0, static_cast<u32>(s->commands.size()));
    submit(std::move(s));
  }

  void retry() {
    std::vector<std::size_t> candidates;
    for (std::size_t i = 0; i < acknowledged_.size(); ++i) {
      if (acknowledged_[i].keyed_retry_candidate) candidates.push_back(i);
    }
    if (candidates.empty()) return transfers();
    const std::size_t index = candidates[pick(candidates.size())];
    const Acknowledged& first = acknowledged_[index];
    auto s = request(first.group);
    s->commands = first.commands;
    s->retry_of = index;
    if (chance(25)) {
      s->changed = true;
      for (Command& c : s->commands) {
        if (c.kind == CommandKind::transfer) c.transfer.amount += 1;
        if (c.kind == CommandKind::create_account) c.create_account.owner.value += 7;
        if (c.kind == CommandKind::post_pending) c.pending.amount += 1;
        if (c.kind == CommandKind::void_pending || OrderBook::is_order_command(c.kind)) {
          c.extra_hash ^= 1;  // what the ledger does not keep (a reason, a reference)
        }
      }
    }
    submit(std::move(s));
  }

  void carry() {
    if (report_.groups < 2) return transfers();
    const u32 from = static_cast<u32>(pick(report_.groups));
    const u32 to = (from + 1 + static_cast<u32>(pick(report_.groups - 1))) % report_.groups;
    const Known* debit = any_account(from);
    const Known* credit =
        debit ? any_account(to, chance(95) ? std::optional(debit->currency) : std::nullopt)
              : nullptr;
    if (!credit) return create_accounts();
    Command number = Command::make_transfer(debit->id, credit->id, 1 + pick(700), debit->currency);
    number.flags |= kTransferBetweenGroups;
    if (!orders_[to].empty() && chance(35)) {
      // A wallet here pays an order there (docs/ORDERS.md, "Between groups"): mostly its
      // amount, now and then not (refused there, and the money comes back).
      const auto& [order, amount] = orders_[to][pick(orders_[to].size())];
      number = Command::make_order(CommandKind::order_pay, order, debit->id,
                                   chance(90) ? amount : 1 + pick(500),
                                   checkout_action(OrderMethod::wallet));
    }
    if (chance(40)) number.with_key(fresh_key());
    auto carried = std::make_unique<Carry>();
    carried->machine.begin(*engine_, from, number);
    submit_carry_step(*carried);
    carries_.push_back(std::move(carried));
  }

  void submit_carry_step(Carry& carry) {
    auto step = std::make_unique<Submitted>();
    step->carry = &carry.machine;
    step->group = group_index(carry.machine.group());
    const Request r = carry.machine.request(step.get());
    const ResultCode taken = carry.machine.group().submit(r);
    trace(0xC5 ^ static_cast<u64>(taken));
    if (taken != ResultCode::ok) {
      // Not taken: the machine hears why and stops; the finisher takes the hold on.
      Outcome refused;
      refused.status = taken;
      carry.machine.on_done(refused);
      return;
    }
    ++report_.requests;
    carry.step = std::move(step);
  }

  u32 group_index(const Group& group) {
    for (u32 g = 0; g < engine_->groups(); ++g) {
      if (&engine_->group(g) == &group) return g;
    }
    fail("a carry's step names no group of the engine");
  }

  SimulationOptions options_;
  std::mt19937_64 random_;
  SimStorage storage_;
  ManualClock clock_;
  SimStorage::Faults faults_{};
  EngineConfig config_;
  std::unique_ptr<Engine> engine_;
  std::deque<std::unique_ptr<Submitted>> in_flight_;
  std::vector<std::unique_ptr<Carry>> carries_;
  std::vector<Acknowledged> acknowledged_;
  std::vector<std::vector<Known>> accounts_;
  std::vector<std::vector<TransferId>> holds_;
  // Orders made, by group (the first 64): (id, amount).
  std::vector<std::vector<std::pair<u64, u64>>> orders_;
  std::vector<IdempotencyKey> claim_keys_;
  u64 next_key_ = 0;
  u64 next_tag_ = 0;
  std::map<u32, std::map<u64, u32>> tags_;  // group → request tag → commands logged
  SeedReport report_;
};

}  // namespace

SeedReport simulate(const SimulationOptions& options) {
  Simulation simulation(options);
  return simulation.run();
}

}  // namespace paygate::sim
