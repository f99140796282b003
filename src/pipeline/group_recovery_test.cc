// A group's recovery and retention: restarts, snapshots and the segments they cover,
// torn tails, corruption, another configuration, failures of the journal and of
// snapshots.
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <random>
#include <thread>

#include "journal/reader.h"
#include "pipeline/group_test_support.h"
#include "snapshot/snapshot.h"

namespace paygate {
namespace {

using testing::Call;
using testing::GroupTest;
using testing::kUsdCurrency;

TEST_F(GroupTest, RestartRecoversTheSameState) {
  u64 digest = 0;
  {
    auto group = open(config());
    const AccountId user = funded(*group, 1000);
    const AccountId shop = open_account(*group);
    for (int i = 0; i < 50; ++i)
      one(*group, Command::make_transfer(user, shop, 3, kUsdCurrency));
    group->stop();
    digest = group->ledger().state_digest();
  }
  auto group = open(config());
  EXPECT_EQ(group->recovery().records_replayed, 54u);
  EXPECT_EQ(group->recovery().next_sequence, 55u);
  group->stop();
  EXPECT_EQ(group->ledger().state_digest(), digest);
}

TEST_F(GroupTest, JournalFailureAnswersNotDurableAndRestartRecovers) {
  GroupConfig c = config();
  std::atomic<bool> broken{false};
  c.journal_fault = [&](journal::FileOp op) {
    return op == journal::FileOp::sync && broken.load() ? EIO : 0;
  };
  std::vector<std::pair<CommandResult, u64>> acknowledged;  // result, sequence
  AccountId user, shop;
  {
    auto group = open(c);
    user = funded(*group, 1000);
    shop = open_account(*group);
    for (int i = 0; i < 10; ++i) {
      Call call;
      call.commands = {Command::make_transfer(user, shop, 1, kUsdCurrency)};
      const Outcome& outcome = run(*group, call);
      ASSERT_EQ(outcome.status, ResultCode::ok);
      acknowledged.emplace_back(call.results[0], outcome.first_sequence);
    }
    broken = true;
    Call failing;
    failing.commands = {Command::make_transfer(user, shop, 1, kUsdCurrency)};
    EXPECT_EQ(run(*group, failing).status, ResultCode::not_durable);
    EXPECT_TRUE(group->failed());
    EXPECT_NE(group->failure().message().find("Input/output error"), std::string::npos)
        << group->failure().to_string();
    // From now on nothing is acknowledged, reads included.
    Call after;
    after.commands = {Command::make_transfer(user, shop, 1, kUsdCurrency)};
    EXPECT_EQ(run(*group, after).status, ResultCode::not_durable);
    Call read;
    Request r{.kind = RequestKind::lookup_account, .lookup_id = shop.value};
    r.account_out = &read.account;
    r.completion = &read.completion;
    ASSERT_EQ(group->submit(r), ResultCode::ok);
    EXPECT_EQ(read.completion.wait().status, ResultCode::not_durable);
    group->stop();
  }
  broken = false;
  auto group = open(c);
  // Everything acknowledged is there; the not_durable payment may or may not be.
  const i64 balance = lookup(*group, shop).balance();
  EXPECT_GE(balance, 10);
  EXPECT_LE(balance, 12);
  group->stop();
  EXPECT_TRUE(group->ledger().check_invariants().ok());
}

// Retention, under conditions the test decides (issue: on a loaded machine group
// commits grew, the packed journal stayed within one segment, and nothing was left to
// remove): the smallest segment a group accepts, and more data than one can hold at
// the densest packing these commands allow; then the rule itself is checked against
// the snapshot that is kept.
TEST_F(GroupTest, SnapshotsAreTakenAndCoveredSegmentsRemoved) {
  GroupConfig c = config();
  c.snapshot_every_commands = 3000;
  c.snapshots_kept = 1;
  c.journal_segment_bytes = 2 * u64{journal::kRecordBytesMax};
  u64 digest = 0;
  u64 last_sequence = 0;
  AccountId shop_account;
  {
    auto group = open(c);
    const AccountId user = funded(*group, 1'000'000'000);
    const AccountId shop = open_account(*group);
    shop_account = shop;
    // 250,000 transfers, each with a random 64-bit hash: packed, a command costs at
    // least the 8 bytes of that word's difference, however records are batched, so
    // the journal takes at least 2 MB: at least two segments of 1.1 MB.
    std::mt19937_64 rng(514);
    for (int round = 0; round < 250; ++round) {
      Call call;
      for (int i = 0; i < 1000; ++i) {
        call.commands.push_back(
            Command::make_transfer(user, shop, 1, kUsdCurrency).with_extra_hash(rng()));
      }
      const Outcome& outcome = run(*group, call);
      ASSERT_EQ(outcome.status, ResultCode::ok);
      last_sequence = outcome.first_sequence + 999;
    }
    // Idle now, the group snapshots what it has not yet (every 3,000 commands): wait,
    // bounded, for a snapshot within 3,000 of the end to be published.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (group->stats().last_snapshot_sequence.load() + c.snapshot_every_commands <
               last_sequence &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ASSERT_GE(group->stats().last_snapshot_sequence.load() + c.snapshot_every_commands,
              last_sequence)
        << "no snapshot near the end was published within 120 s";
    EXPECT_GE(group->stats().snapshots.load(), 2u);
    EXPECT_GE(group->snapshot_pause_ns().count(), 2u);
    group->stop();
    digest = group->ledger().state_digest();
  }
  // One snapshot kept; the segments wholly before it removed, the one holding the
  // first command after it kept.
  const auto snapshots = snapshot::list(c.dir);
  ASSERT_EQ(snapshots.size(), 1u);
  const u64 kept = snapshots.front().first;
  const auto segments = journal::list_segments(c.dir);
  ASSERT_FALSE(segments.empty());
  std::vector<u64> firsts;
  for (const auto& segment : segments)
    firsts.push_back(journal::parse_segment_file_name(segment.filename().string()));
  EXPECT_LE(firsts.front(), kept + 1) << "the segment holding the snapshot's next command is gone";
  if (firsts.size() > 1) {
    EXPECT_GT(firsts[1], kept + 1) << "a segment wholly before the snapshot was kept";
  }
  // The data filled more than the first segment, and the snapshot is past it.
  EXPECT_GE(firsts.front(), 2u) << "the first segment should have been removed";

  auto group = open(c);
  const u64 snapshot_at = group->recovery().snapshot_sequence;
  EXPECT_EQ(snapshot_at, kept);
  EXPECT_LT(group->recovery().commands_replayed, 250000u);
  // Events made again by replay are held; those the snapshot covers are gone, and a
  // reader asking for them is told so rather than handed a gap.
  EventPage page;
  const std::vector<LedgerEvent> held =
      read(*group, RequestKind::read_events, std::nullopt, 10, &page);
  if (snapshot_at < last_sequence) {
    ASSERT_FALSE(held.empty());
    EXPECT_EQ(held.front().sequence, snapshot_at + 1);
  }
  read(*group, RequestKind::read_events, EventKey{snapshot_at - 1, 0}, 10, &page);
  EXPECT_TRUE(page.expired);
  read(*group, RequestKind::read_entries, std::nullopt, 10, &page, shop_account);
  EXPECT_FALSE(page.complete) << "the shop's older lines are behind the snapshot";
  group->stop();
  EXPECT_EQ(group->ledger().state_digest(), digest);
}

// A reader of the journal (the history store) holds retention back: the segments
// after its floor, and the newest snapshot at or before it, stay — up to a bound,
// past which they go (counted), though never what the group itself needs.
TEST_F(GroupTest, AReadersFloorHoldsRetentionUpToABound) {
  GroupConfig c = config();
  c.request_commands_max = 16;  // small records, so small segments: many of them
  c.journal_segment_bytes = 4u << 10;
  c.group_commit_bytes_max = 4u << 10;
  c.snapshot_every_commands = 40;
  c.snapshots_kept = 1;
  std::atomic<u64> floor{0};
  const auto opened_with = [&](u32 segments_max) {
    Result<std::unique_ptr<Group>> opened = Group::open(c);
    EXPECT_TRUE(opened.ok()) << opened.status().to_string();
    std::unique_ptr<Group> group = std::move(opened).value();
    group->set_retention_floor(&floor, segments_max);
    group->start();
    return group;
  };
  const auto first_segment = [&] {
    return journal::parse_segment_file_name(
        journal::list_segments(c.dir).front().filename().string());
  };
  const auto work = [&](Group& group, AccountId bank, AccountId user, u32 commands) {
    const u64 snapshots = group.stats().snapshots.load();
    for (u32 i = 0; i < commands; ++i)
      EXPECT_EQ(one(group, Command::make_transfer(bank, user, 1, kUsdCurrency)).code,
                ResultCode::ok);
    // Bounded wait for a snapshot after this work (each prunes and removes).
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (group.stats().snapshots.load() < snapshots + 2 &&
           std::chrono::steady_clock::now() < deadline) {
      one(group, Command::make_tick());
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    EXPECT_GE(group.stats().snapshots.load(), snapshots + 2);
  };
  AccountId bank, user;
  u64 reader_at = 0;
  {
    auto group = opened_with(1000);
    bank = open_account(*group, AccountKind::system);
    user = open_account(*group);
    // A reader at 0 has read nothing: nothing is removed.
    work(*group, bank, user, 150);
    EXPECT_EQ(first_segment(), 1u);
    // The reader moves past the first snapshots, then stops there.
    const std::vector<std::pair<u64, std::filesystem::path>> snapshots = snapshot::list(c.dir);
    ASSERT_FALSE(snapshots.empty());
    reader_at = snapshots.front().first + 3;  // just past the newest
    floor.store(reader_at);
    work(*group, bank, user, 300);
    EXPECT_LE(first_segment(), reader_at + 1) << "a segment the reader has not read is gone";
    bool resumable = false;
    for (const auto& [sequence, file] : snapshot::list(c.dir))
      resumable = resumable || sequence <= reader_at;
    EXPECT_TRUE(resumable) << "no snapshot at or before the reader's floor";
    EXPECT_EQ(group->stats().retention_overrides.load(), 0u);
    // Only one snapshot beyond the group's own is kept for it.
    EXPECT_LE(snapshot::list(c.dir).size(), 2u);
    group->stop();
  }
  // Past the bound the reader is not waited for; the group recovers as ever.
  auto group = opened_with(3);
  work(*group, bank, user, 200);
  EXPECT_GE(group->stats().retention_overrides.load(), 1u);
  EXPECT_GT(first_segment(), reader_at + 1);
  EXPECT_EQ(snapshot::list(c.dir).size(), 1u);
  const i64 balance = lookup(*group, user).balance();
  group->stop();
  group.reset();
  auto again = open(c);
  EXPECT_EQ(lookup(*again, user).balance(), balance);
  again->stop();
}

// Issue: a failed snapshot fork was silent, so snapshots stopped, segments were never
// removed, and the disk filled unseen. Now: counted, logged, retried with back-off,
// and the group goes on.
TEST_F(GroupTest, FailedSnapshotIsCountedAndRetriedWithBackOff) {
  GroupConfig c = config();
  c.snapshot_every_commands = 100;
  c.snapshot_fork_fails = true;
  auto group = open(c);
  const AccountId user = funded(*group, 1'000'000);
  const AccountId shop = open_account(*group);
  Call call;
  call.commands.assign(200, Command::make_transfer(user, shop, 1, kUsdCurrency));
  ASSERT_EQ(run(*group, call).status, ResultCode::ok);
  // Idle, the group tries; bounded wait for the first failure.
  for (int i = 0; i < 10'000 && group->stats().snapshot_failures.load() == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_EQ(group->stats().snapshot_failures.load(), 1u);
  // The next try waits a second at least: idle loops meanwhile do not retry.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(group->stats().snapshot_failures.load(), 1u);
  EXPECT_EQ(group->stats().snapshots.load(), 0u);
  // The group still serves.
  EXPECT_EQ(one(*group, Command::make_transfer(user, shop, 1, kUsdCurrency)).code, ResultCode::ok);
  group->stop();
}

TEST_F(GroupTest, CorruptJournalRefusesToOpenAndNamesTheSpot) {
  {
    auto group = open(config());
    funded(*group, 100);
    for (int i = 0; i < 20; ++i)
      one(*group, Command::make_tick());
    group->stop();
  }
  const auto file = journal::list_segments(config().dir).at(0);
  const int fd = ::open(file.c_str(), O_RDWR);
  unsigned char byte = 0;
  ASSERT_EQ(::pread(fd, &byte, 1, 700), 1);
  byte ^= 0x20;
  ASSERT_EQ(::pwrite(fd, &byte, 1, 700), 1);
  ::close(fd);
  std::string error;
  error = open_error(config());
  EXPECT_FALSE(error.empty());
  EXPECT_NE(error.find(file.string()), std::string::npos) << error;
  EXPECT_NE(error.find("offset"), std::string::npos) << error;
}

TEST_F(GroupTest, TornTailIsClearedAndAppendsContinue) {
  {
    auto group = open(config());
    const AccountId user = funded(*group, 100);
    const AccountId shop = open_account(*group);
    one(*group, Command::make_transfer(user, shop, 1, kUsdCurrency));
    group->stop();
  }
  // Tear the last record: keep its first 40 bytes, zero the rest.
  journal::ScanReport report;
  std::vector<u64> offsets;
  report = journal::scan(config().dir, 0, [&](const journal::Record& r) {
    offsets.push_back(r.offset);
    return true;
  });
  const auto file = journal::list_segments(config().dir).at(0);
  const int fd = ::open(file.c_str(), O_RDWR);
  const std::vector<unsigned char> zeros(64, 0);
  ASSERT_EQ(::pwrite(fd, zeros.data(), zeros.size(), static_cast<off_t>(offsets.back() + 40)), 64);
  ::close(fd);

  auto group = open(config());
  EXPECT_NE(group->recovery().torn_tail.find("torn"), std::string::npos);
  EXPECT_EQ(group->recovery().next_sequence, offsets.size());  // the last command is gone
  one(*group, Command::make_tick());
  group.reset();  // stops and unlocks the directory
  auto again = open(config());
  EXPECT_TRUE(again->recovery().torn_tail.empty());
  EXPECT_EQ(again->recovery().records_replayed, offsets.size());
}

// Issue: a failed remove while clearing a torn tail was ignored and the repair went
// on. A segment of zeros after the last (a crash after creating it, before its
// header) is the torn tail here; its removal fails, and the group refuses to start.
TEST_F(GroupTest, TornTailThatCannotBeClearedRefusesToStart) {
  {
    auto group = open(config());
    funded(*group, 100);
    group->stop();
  }
  const auto first = journal::list_segments(config().dir).at(0);
  const u64 next =
      journal::scan(config().dir, 0, [](const journal::Record&) { return true; }).next_sequence;
  const std::filesystem::path empty = config().dir / journal::segment_file_name(next);
  std::filesystem::copy_file(first, empty);
  std::filesystem::resize_file(empty, 0);
  std::filesystem::resize_file(empty, 4096);  // zeros: a header never written
  GroupConfig c = config();
  c.journal_fault = [](journal::FileOp op) { return op == journal::FileOp::remove ? EIO : 0; };
  std::string error;
  error = open_error(c);
  EXPECT_FALSE(error.empty());
  EXPECT_NE(error.find("cannot remove"), std::string::npos) << error;
  EXPECT_NE(error.find(empty.filename().string()), std::string::npos) << error;
  EXPECT_TRUE(std::filesystem::exists(empty));
  // Without the fault it is cleared, and the group starts.
  auto group = open(config());
  ASSERT_NE(group, nullptr);
  EXPECT_FALSE(group->recovery().torn_tail.empty());
  EXPECT_FALSE(std::filesystem::exists(empty));
}

// Issue: a journal written with another configuration was replayed before it was
// refused. Here its body is also corrupt: refused for the configuration means the
// identity was checked before any record was read.
TEST_F(GroupTest, AnotherConfigurationIsRefusedBeforeAnythingIsReplayed) {
  {
    auto group = open(config());
    funded(*group, 100);
    for (int i = 0; i < 20; ++i)
      one(*group, Command::make_tick());
    group->stop();
  }
  const auto file = journal::list_segments(config().dir).at(0);
  const int fd = ::open(file.c_str(), O_RDWR);
  unsigned char byte = 0;
  ASSERT_EQ(::pread(fd, &byte, 1, 700), 1);
  byte ^= 0x20;
  ASSERT_EQ(::pwrite(fd, &byte, 1, 700), 1);
  ::close(fd);
  GroupConfig other = config();
  other.ledger.pending_max = 2048;
  std::string error;
  error = open_error(other);
  EXPECT_FALSE(error.empty());
  EXPECT_NE(error.find("another ledger configuration"), std::string::npos) << error;
  EXPECT_NE(error.find("pending_max 1024"), std::string::npos) << error;
}

TEST_F(GroupTest, AnotherConfigurationOrASecondOpenIsRefused) {
  {
    auto group = open(config());
    funded(*group, 100);
    std::string error;
    error = open_error(config());
    EXPECT_FALSE(error.empty());
    EXPECT_NE(error.find("another paygate"), std::string::npos) << error;
    group->stop();
  }
  GroupConfig other = config();
  other.ledger.accounts_max = 2048;
  std::string error;
  error = open_error(other);
  EXPECT_FALSE(error.empty());
  EXPECT_NE(error.find("configuration"), std::string::npos) << error;
  other = config();
  other.ledger.signature_keys_max = 7;
  error = open_error(other);
  EXPECT_FALSE(error.empty());
  EXPECT_NE(error.find("configuration"), std::string::npos) << error;
}

// A request may open with a claim: the claim and the commands it covers are logged
// together and replay the same, whether the claim held or not.
TEST_F(GroupTest, RequestsOpenedByAClaimReplayTheSame) {
  u64 digest = 0;
  AccountId user, shop;
  {
    auto group = open(config());
    user = funded(*group, 100);
    shop = open_account(*group);
    const auto claimed = [&](IdempotencyKey key, u64 fingerprint, u64 amount) {
      Call call;
      call.commands = {Command::make_transfer(user, shop, amount, kUsdCurrency),
                       Command::make_transfer(user, shop, amount, kUsdCurrency)};
      const Command claim = Command::make_claim(key, fingerprint, 2);
      CommandResult claim_result;
      Request r = call.request();
      r.claim = &claim;
      r.claim_result = &claim_result;
      EXPECT_EQ(group->submit(r), ResultCode::ok);
      EXPECT_EQ(call.completion.wait().status, ResultCode::ok);
      return std::pair(claim_result.code, call.results[1].code);
    };
    EXPECT_EQ(claimed({5, 5}, 1, 10), std::pair(ResultCode::ok, ResultCode::ok));
    EXPECT_EQ(claimed({5, 5}, 2, 10),
              std::pair(ResultCode::idempotency_key_reused, ResultCode::idempotency_key_reused));
    EXPECT_EQ(claimed({6, 6}, 1, 5), std::pair(ResultCode::ok, ResultCode::ok));
    EXPECT_EQ(lookup(*group, user).balance(), 100 - 20 - 10);
    group->stop();
    digest = group->ledger().state_digest();
  }
  auto group = open(config());
  EXPECT_EQ(lookup(*group, user).balance(), 70);
  group->stop();
  EXPECT_EQ(group->ledger().state_digest(), digest);
}

// Annotations whose commands never reached the disk were never acknowledged: recovery
// clears them with the torn tail, and the command that next takes their sequence
// carries nothing of theirs.
TEST_F(GroupTest, AnnotationsWithoutTheirCommandsAreClearedAtRecovery) {
  u64 next = 0;
  {
    auto group = open(config());
    open_account(*group);
    group->stop();
    next = group->recovery().next_sequence + 1;
  }
  // As a crash leaves them: the annotations' page written, the commands' page not.
  const journal::ScanReport before = journal::scan(config().dir, 0, nullptr);
  ASSERT_EQ(before.end, journal::LogEnd::clean);
  ASSERT_EQ(before.next_sequence, next);
  const std::vector<journal::Annotation> said{
      {0, journal::AnnotationKind::reference, "from a request never answered"}};
  std::vector<unsigned char> bytes(journal::annotation_records_bytes(said, 4096));
  u64 records = 0;
  journal::encode_annotations(bytes.data(), next, next, 1000, said, 4096, &records);
  {
    const int fd = ::open(before.file.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(before.offset)),
              static_cast<ssize_t>(bytes.size()));
    ::close(fd);
  }
  auto group = open(config());
  EXPECT_NE(group->recovery().torn_tail.find("annotations whose commands were never written"),
            std::string::npos)
      << group->recovery().torn_tail;
  EXPECT_EQ(group->recovery().next_sequence, next);
  EXPECT_EQ(one(*group, Command::make_tick()).code, ResultCode::ok);
  group->stop();
  u64 annotations = 0;
  const journal::ScanReport after = journal::scan(config().dir, 0, [&](const journal::Record& r) {
    annotations += r.annotations.size();
    return true;
  });
  EXPECT_EQ(after.end, journal::LogEnd::clean) << after.message;
  EXPECT_EQ(after.next_sequence, next + 1);
  EXPECT_EQ(annotations, 0u);
}

}  // namespace
}  // namespace paygate
