// What the group tests share: a request waited on by one thread (Call), and a fixture
// that opens groups in a temporary directory with small capacities.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "base/temp_dir.h"
#include "ledger/ledger_test_support.h"
#include "pipeline/group.h"

namespace paygate::testing {

inline constexpr Currency kUsdCurrency = Currency::from("USD");

// A request and everything it points at, waited on by one thread.
struct Call {
  std::vector<Command> commands;
  std::vector<CommandResult> results;
  WaitableCompletion completion;
  Account account{};
  Transfer transfer{};

  Request request(RequestKind kind = RequestKind::commands, IdempotencyKey key = {}) {
    results.assign(commands.size(), CommandResult{});
    return Request{.kind = kind,
                   .count = static_cast<u32>(commands.size()),
                   .commands = commands.data(),
                   .results = results.data(),
                   .batch_key = key,
                   .completion = &completion};
  }
};

class GroupTest : public ::testing::Test {
 protected:
  GroupConfig config() {
    GroupConfig c;
    c.dir = dir_.path() / "group-0000";
    c.ledger = LedgerConfig{.prefix = {0, 0},
                            .accounts_max = 1024,
                            .pending_max = 1024,
                            .recent_transfers_max = 1024,
                            .idempotency_keys_max = 1024};
    c.journal_segment_bytes = 2u << 20;
    c.group_commit_bytes_max = 1u << 20;
    c.ring_capacity = 1024;
    c.snapshot_every_commands = 0;
    c.idle_spin = 100;
    return c;
  }
  std::unique_ptr<Group> open(const GroupConfig& c) {
    Result<std::unique_ptr<Group>> opened = Group::open(c);
    EXPECT_TRUE(opened.ok()) << opened.status().to_string();
    if (!opened.ok()) return nullptr;
    std::unique_ptr<Group> group = std::move(opened).value();
    group->start();
    return group;
  }
  // Why a group would not open ("" if it did: it is closed again).
  static std::string open_error(const GroupConfig& c) {
    const Result<std::unique_ptr<Group>> opened = Group::open(c);
    return opened.ok() ? std::string() : opened.status().to_string();
  }
  // Submits and waits; the request must be accepted.
  const Outcome& run(Group& group, Call& call, RequestKind kind = RequestKind::commands,
                     IdempotencyKey key = {}) {
    const ResultCode accepted = group.submit(call.request(kind, key));
    EXPECT_EQ(accepted, ResultCode::ok);
    return call.completion.wait();
  }
  CommandResult one(Group& group, const Command& command) {
    Call call;
    call.commands = {command};
    const Outcome& outcome = run(group, call);
    EXPECT_EQ(outcome.status, ResultCode::ok);
    EXPECT_GE(group.durable_sequence(), outcome.first_sequence);  // durable before answered
    return call.results[0];
  }
  AccountId open_account(Group& group, AccountKind kind = AccountKind::user) {
    const CommandResult r =
        one(group, Command::make_create_account(MerchantId{1}, kUsdCurrency, kind));
    EXPECT_EQ(r.code, ResultCode::ok);
    return AccountId{r.id};
  }
  AccountId funded(Group& group, u64 amount) {
    const AccountId bank = open_account(group, AccountKind::system);
    const AccountId account = open_account(group);
    EXPECT_EQ(one(group, Command::make_transfer(bank, account, amount, kUsdCurrency)).code,
              ResultCode::ok);
    return account;
  }
  Account lookup(Group& group, AccountId id) {
    Call call;
    Request r{.kind = RequestKind::lookup_account, .lookup_id = id.value};
    r.account_out = &call.account;
    r.completion = &call.completion;
    EXPECT_EQ(group.submit(r), ResultCode::ok);
    EXPECT_TRUE(call.completion.wait().found);
    return call.account;
  }
  // One page of events (read_events) or of an account's statement (read_entries).
  std::vector<LedgerEvent> read(Group& group, RequestKind kind, std::optional<EventKey> cursor,
                                u32 limit, EventPage* page, AccountId account = {}) {
    Call call;
    std::vector<LedgerEvent> out(limit);
    Request r{.kind = kind, .count = limit, .lookup_id = account.value};
    r.events_out = out.data();
    r.cursor = cursor;
    r.completion = &call.completion;
    EXPECT_EQ(group.submit(r), ResultCode::ok);
    *page = call.completion.wait().page;
    out.resize(page->count);
    return out;
  }
  std::optional<Transfer> lookup(Group& group, TransferId id) {
    Call call;
    Request r{.kind = RequestKind::lookup_transfer, .lookup_id = id.value};
    r.transfer_out = &call.transfer;
    r.completion = &call.completion;
    EXPECT_EQ(group.submit(r), ResultCode::ok);
    if (!call.completion.wait().found) return std::nullopt;
    return call.transfer;
  }

  TempDir dir_;
};

}  // namespace paygate::testing
