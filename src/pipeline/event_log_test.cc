#include "pipeline/event_log.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "base/ids.h"
#include "ledger/ledger.h"

namespace paygate {
namespace {

constexpr IdPrefix kPrefix{0, 1};
constexpr u32 kCapacity = 8192;  // the smallest allowed (kBatchMax rounded up)
constexpr u32 kAccounts = 64;

u64 account(u64 serial) {
  return make_id(kPrefix, serial);
}

LedgerEvent created(u64 sequence, u64 serial) {
  LedgerEvent e;
  e.sequence = sequence;
  e.id = account(serial);
  e.kind = LedgerEventKind::account_created;
  return e;
}

LedgerEvent moved(u64 sequence, u64 debit_serial, u64 credit_serial, u64 amount) {
  LedgerEvent e;
  e.sequence = sequence;
  e.id = make_id(kPrefix, 1000 + sequence);
  e.debit_account_id = AccountId{account(debit_serial)};
  e.credit_account_id = AccountId{account(credit_serial)};
  e.amount = amount;
  e.kind = LedgerEventKind::transfer_posted;
  return e;
}

std::vector<LedgerEvent> read_all_after(const EventLog& log, std::optional<EventKey> after,
                                        u32 page_size, EventPage* last_page = nullptr) {
  std::vector<LedgerEvent> all;
  std::vector<LedgerEvent> out(page_size);
  for (;;) {
    const EventPage page = log.read_after(after, out);
    if (last_page != nullptr) *last_page = page;
    if (page.expired) return all;
    all.insert(all.end(), out.begin(), out.begin() + page.count);
    if (!page.more) return all;
    after = key_of(out[page.count - 1]);
  }
}

TEST(EventLog, NumbersEventsWithinTheirSequenceAndPagesInOrder) {
  EventLog log(kCapacity, kAccounts);
  log.append(created(1, 1));
  log.append(created(2, 2));
  log.append(moved(3, 1, 2, 10));
  log.append(moved(3, 2, 1, 4));  // two events of one command (an expiry, then the command)
  log.append(moved(4, 1, 2, 1));

  const std::vector<LedgerEvent> all = read_all_after(log, std::nullopt, 2);
  ASSERT_EQ(all.size(), 5u);
  EXPECT_EQ(key_of(all[2]), (EventKey{3, 0}));
  EXPECT_EQ(key_of(all[3]), (EventKey{3, 1}));
  EXPECT_EQ(key_of(all[4]), (EventKey{4, 0}));
  EXPECT_EQ(all[3].amount, 4u);

  const std::vector<LedgerEvent> after = read_all_after(log, EventKey{3, 0}, 10);
  ASSERT_EQ(after.size(), 2u);
  EXPECT_EQ(key_of(after[0]), (EventKey{3, 1}));
  // After the newest: nothing yet, and nothing is lost.
  std::vector<LedgerEvent> out(4);
  const EventPage tail = log.read_after(EventKey{4, 0}, out);
  EXPECT_EQ(tail.count, 0u);
  EXPECT_FALSE(tail.more);
  EXPECT_FALSE(tail.expired);
}

TEST(EventLog, AccountStatementsRunNewestFirstToTheCreation) {
  EventLog log(kCapacity, kAccounts);
  log.append(created(1, 1));
  log.append(created(2, 2));
  log.append(created(3, 3));
  for (u64 s = 4; s < 14; ++s)
    log.append(moved(s, s % 2 == 0 ? 1 : 3, 2, s));

  std::vector<LedgerEvent> out(3);
  EventPage page = log.read_account(account(2), std::nullopt, out);
  ASSERT_EQ(page.count, 3u);
  EXPECT_TRUE(page.more);
  EXPECT_EQ(out[0].sequence, 13u);
  EXPECT_EQ(out[2].sequence, 11u);
  std::vector<u64> seen;
  std::optional<EventKey> cursor;
  do {
    page = log.read_account(account(1), cursor, out);
    ASSERT_FALSE(page.expired || page.unknown);
    for (u32 i = 0; i < page.count; ++i)
      seen.push_back(out[i].sequence);
    if (page.count > 0) cursor = key_of(out[page.count - 1]);
  } while (page.more);
  EXPECT_EQ(seen, (std::vector<u64>{12, 10, 8, 6, 4}));
  EXPECT_TRUE(page.complete);

  // A cursor that names another account's event, or no event at all.
  EXPECT_TRUE(log.read_account(account(1), EventKey{13, 0}, out).unknown);
  EXPECT_TRUE(log.read_account(account(1), EventKey{12, 5}, out).unknown);
  EXPECT_TRUE(log.read_account(account(1), EventKey{2, 0}, out).unknown);  // a creation
  // An account with no movements: an empty, complete statement.
  log.append(created(14, 4));
  page = log.read_account(account(4), std::nullopt, out);
  EXPECT_EQ(page.count, 0u);
  EXPECT_TRUE(page.complete);
}

TEST(EventLog, RewindTakesBackEventsAndChains) {
  EventLog log(kCapacity, kAccounts);
  log.append(created(1, 1));
  log.append(created(2, 2));
  log.append(moved(3, 1, 2, 5));
  const u64 mark = log.mark();
  log.append(moved(4, 1, 2, 6));
  log.append(moved(5, 2, 1, 7));
  log.rewind(mark);
  log.append(moved(4, 2, 1, 8));  // the same sequence again, once the batch failed

  const std::vector<LedgerEvent> all = read_all_after(log, std::nullopt, 10);
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all[3].amount, 8u);
  EXPECT_EQ(all[3].index, 0u);
  std::vector<LedgerEvent> out(10);
  const EventPage page = log.read_account(account(1), std::nullopt, out);
  ASSERT_EQ(page.count, 2u);
  EXPECT_EQ(out[0].amount, 8u);
  EXPECT_EQ(out[1].amount, 5u);
  EXPECT_TRUE(page.complete);
}

TEST(EventLog, EventsPushedOutOrBeforeTheSnapshotAreExpiredNotSkipped) {
  EventLog log(kCapacity, kAccounts);
  log.start_after(100);  // recovered from a snapshot at sequence 100
  std::vector<LedgerEvent> out(4);
  EXPECT_TRUE(log.read_after(EventKey{99, 0}, out).expired);
  EXPECT_TRUE(log.read_after(EventKey{100, 0}, out).expired);  // 100 may have had more events
  EXPECT_FALSE(log.read_after(EventKey{100, ~u32{0}}, out).expired);

  log.append(moved(101, 1, 2, 1));  // accounts made before the snapshot
  EventPage page = log.read_account(account(1), std::nullopt, out);
  EXPECT_EQ(page.count, 1u);
  EXPECT_FALSE(page.more);
  EXPECT_FALSE(page.complete) << "its older lines are not held";

  // Fill past the capacity: the first events leave.
  for (u64 s = 102; s < 102 + kCapacity; ++s)
    log.append(moved(s, 1, 2, 1));
  EXPECT_EQ(log.held(), kCapacity);
  EXPECT_TRUE(log.read_after(EventKey{100, ~u32{0}}, out).expired);
  // The cursor of the event that just left still works: what follows it is held.
  page = log.read_after(EventKey{101, 0}, out);
  EXPECT_FALSE(page.expired);
  EXPECT_EQ(out[0].sequence, 102u);
  page = log.read_after(EventKey{102, 0}, out);
  EXPECT_FALSE(page.expired);
  EXPECT_EQ(out[0].sequence, 103u);
  const std::vector<LedgerEvent> all = read_all_after(log, std::nullopt, 1000);
  ASSERT_EQ(all.size(), kCapacity);
  EXPECT_EQ(all.front().sequence, 102u);
  EXPECT_EQ(all.back().sequence, 101u + kCapacity);

  // A statement walks back to the oldest held line, then says it is not complete.
  std::vector<LedgerEvent> big(kCapacity + 10);
  page = log.read_account(account(2), std::nullopt, big);
  EXPECT_EQ(page.count, kCapacity);
  EXPECT_FALSE(page.complete);
  EXPECT_TRUE(log.read_account(account(2), EventKey{101, 0}, out).expired);
}

// Random appends, failed batches and reads against a plain list of every event.
TEST(EventLog, MatchesAReferenceUnderRandomAppendsAndRewinds) {
  std::mt19937_64 random(20261122);
  EventLog log(kCapacity, kAccounts);
  std::vector<LedgerEvent> reference;  // every event ever kept, in order
  u64 sequence = 1;
  for (u64 a = 1; a <= 8; ++a)
    log.append(created(sequence, a)), reference.push_back(created(sequence++, a));
  for (reference.back().index = 0; reference.size() < 3 * kCapacity;) {
    const u64 mark = log.mark();
    const std::size_t reference_mark = reference.size();
    const u32 events = 1 + static_cast<u32>(random() % 40);
    for (u32 i = 0; i < events; ++i) {
      const u64 debit = 1 + random() % 8;
      const u64 credit = 1 + (debit + random() % 7) % 8;
      LedgerEvent e = moved(sequence, debit, credit, 1 + random() % 100);
      log.append(e);
      e.index = reference.back().sequence == sequence ? reference.back().index + 1 : 0;
      reference.push_back(e);
      if (random() % 3 == 0) ++sequence;
    }
    ++sequence;
    if (random() % 4 == 0) {  // the batch failed
      log.rewind(mark);
      reference.resize(reference_mark);
    }
  }
  const std::size_t held = std::min<std::size_t>(reference.size(), kCapacity);
  const std::vector<LedgerEvent> all = read_all_after(log, std::nullopt, 777);
  ASSERT_EQ(all.size(), held);
  for (std::size_t i = 0; i < held; ++i) {
    const LedgerEvent& want = reference[reference.size() - held + i];
    ASSERT_EQ(key_of(all[i]), key_of(want)) << i;
    ASSERT_EQ(all[i].amount, want.amount) << i;
  }
  // Each account's statement is its held events, newest first.
  std::vector<LedgerEvent> out(kCapacity);
  for (u64 a = 1; a <= 8; ++a) {
    const EventPage page = log.read_account(account(a), std::nullopt, out);
    std::vector<EventKey> want;
    for (std::size_t i = reference.size(); i-- > reference.size() - held;) {
      const LedgerEvent& e = reference[i];
      if (e.debit_account_id.value == account(a) || e.credit_account_id.value == account(a)) {
        want.push_back(key_of(e));
      }
    }
    ASSERT_EQ(page.count, want.size()) << a;
    for (u32 i = 0; i < page.count; ++i)
      ASSERT_EQ(key_of(out[i]), want[i]) << a << " " << i;
    EXPECT_FALSE(page.complete);  // the creations were pushed out long ago
  }
}

}  // namespace
}  // namespace paygate
