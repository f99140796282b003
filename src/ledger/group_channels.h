// The bookkeeping that makes a transfer between two groups happen exactly once.
//
// A transfer from an account in group A to one in group B is three logged commands
// (docs/LEDGER.md, "Transfers between groups"):
//   1. in A: hold the amount on the debit account; the hold is numbered on the
//      channel A→B (send)
//   2. in B: credit the account, once per number however often it arrives (arrival,
//      record)
//   3. in A: post the hold if B credited, void it if B refused (settle)
// Each side keeps a window of kChannelWindow numbers per peer group, so memory is
// bounded and nothing depends on time:
//   - A numbers no transfer a window or more past the oldest one still unsettled on
//     that channel, so every unsettled number lies in [oldest, next) and is less than
//     a window ahead of any number B still remembers;
//   - B remembers, per number mod the window, the last number it applied and what
//     came of it. A number it finds there again is a repeat (answer the same); a
//     newer one there means A settled this one long ago (stale: change nothing); an
//     older one means this number is new.
// Numbers are u32 and wrap: they are compared by their difference (serial number
// arithmetic), which is exact while they are less than 2^31 apart — at most two
// windows here.
//
// Thread and memory: as the ledger's (one thread; allocated in the constructor).
#pragma once

#include <cstdint>

#include "base/assert.h"
#include "base/fixed_array.h"
#include "base/hash.h"
#include "base/result_code.h"
#include "base/types.h"

namespace paygate {

inline constexpr u32 kChannelWindow = 8192;
static_assert((kChannelWindow & (kChannelWindow - 1)) == 0);

class GroupChannels {
 public:
  enum class Arrival : u8 {
    fresh,   // never applied: apply it, then record()
    repeat,  // applied before: answer what was recorded
    stale,   // settled by the sender long ago: change nothing
  };

  GroupChannels() = default;
  // Channels to and from `groups` groups (numbered 0 .. groups - 1).
  explicit GroupChannels(u32 groups)
      : groups_(groups),
        out_(groups),
        out_open_(std::size_t{groups} * kChannelWindow),
        in_(std::size_t{groups} * kChannelWindow) {}

  u32 groups() const noexcept { return groups_; }

  // ---- the sending side (this group holds the debit account) ----

  // False when the next number would be a window past the oldest unsettled one.
  bool can_send(u32 peer) const noexcept {
    const Outbound& out = out_[peer];
    return out.next - out.oldest < kChannelWindow;
  }
  // Numbers the transfer `transfer_id` on the channel to `peer`. REQUIRES: can_send.
  u32 send(u32 peer, u64 transfer_id) noexcept {
    PG_ASSERT(can_send(peer) && transfer_id != 0);
    Outbound& out = out_[peer];
    const u32 number = out.next++;
    u64& slot = open_slot(peer, number);
    PG_ASSERT(slot == 0);
    slot = transfer_id;
    return number;
  }
  // The transfer `transfer_id` is number `number` to `peer`, and not yet settled.
  bool is_open(u32 peer, u32 number, u64 transfer_id) const noexcept {
    const Outbound& out = out_[peer];
    return number - out.oldest < out.next - out.oldest &&
           out_open_[index(peer, number)] == transfer_id;
  }
  // REQUIRES: is_open(peer, number, the transfer).
  void settle(u32 peer, u32 number) noexcept {
    u64& slot = open_slot(peer, number);
    PG_ASSERT(slot != 0);
    slot = 0;
    Outbound& out = out_[peer];
    while (out.oldest != out.next && open_slot(peer, out.oldest) == 0)
      ++out.oldest;
  }
  u32 unsettled(u32 peer) const noexcept { return out_[peer].next - out_[peer].oldest; }
  // Every unsettled transfer, by peer and then in number order: visit(peer, number, id).
  template <typename Visit>
  void for_each_unsettled(Visit&& visit) const {
    for (u32 peer = 0; peer < groups_; ++peer) {
      const Outbound& out = out_[peer];
      for (u32 number = out.oldest; number != out.next; ++number) {
        const u64 id = out_open_[index(peer, number)];
        if (id != 0) visit(peer, number, id);
      }
    }
  }

  // ---- the receiving side (this group holds the credit account) ----

  Arrival arrival(u32 peer, u32 number, ResultCode* recorded) const noexcept {
    const Inbound& slot = in_[index(peer, number)];
    if (slot.used == 0) return Arrival::fresh;
    const auto ahead = static_cast<std::int32_t>(number - slot.number);
    if (ahead == 0) {
      *recorded = slot.code;
      return Arrival::repeat;
    }
    return ahead > 0 ? Arrival::fresh : Arrival::stale;
  }
  // REQUIRES: arrival(peer, number) == fresh.
  void record(u32 peer, u32 number, ResultCode code) noexcept {
    in_[index(peer, number)] = Inbound{.number = number, .code = code, .used = 1};
  }

  // ---- state ----

  void hash_into(Hasher& hasher) const {
    hasher.add(groups_);
    for_each_unsettled([&](u32 peer, u32 number, u64 id) { hasher.add(peer).add(number).add(id); });
    for (u32 peer = 0; peer < groups_; ++peer)
      hasher.add(out_[peer].next).add(out_[peer].oldest);
    for (std::size_t i = 0; i < in_.size(); ++i) {
      const Inbound& slot = in_[i];
      if (slot.used != 0) hasher.add(i).add(slot.number).add(static_cast<u64>(slot.code));
    }
  }

  // The sending windows' own rule: oldest is unsettled (or equal to next), and no
  // slot outside [oldest, next) is in use.
  bool consistent() const noexcept {
    for (u32 peer = 0; peer < groups_; ++peer) {
      const Outbound& out = out_[peer];
      if (out.next - out.oldest > kChannelWindow) return false;
      if (out.oldest != out.next && out_open_[index(peer, out.oldest)] == 0) return false;
      u32 in_use = 0;
      for (u32 i = 0; i < kChannelWindow; ++i)
        in_use += out_open_[std::size_t{peer} * kChannelWindow + i] != 0 ? 1 : 0;
      u32 counted = 0;
      for (u32 number = out.oldest; number != out.next; ++number)
        counted += out_open_[index(peer, number)] != 0 ? 1 : 0;
      if (in_use != counted) return false;
    }
    return true;
  }

  struct Outbound {
    u32 next = 0;    // the number the next transfer gets
    u32 oldest = 0;  // the oldest unsettled number, or next when none is
  };
  struct Inbound {
    u32 number = 0;
    ResultCode code = ResultCode::ok;
    u16 used = 0;
  };
  static_assert(sizeof(Inbound) == 8);

  // Raw state, for save and load: out_[peer], out_open_[peer * window + number % window],
  // in_[peer * window + number % window].
  FixedArray<Outbound>& outbound() noexcept { return out_; }
  FixedArray<u64>& outbound_open() noexcept { return out_open_; }
  FixedArray<Inbound>& inbound() noexcept { return in_; }
  const FixedArray<Outbound>& outbound() const noexcept { return out_; }
  const FixedArray<u64>& outbound_open() const noexcept { return out_open_; }
  const FixedArray<Inbound>& inbound() const noexcept { return in_; }

 private:
  static std::size_t index(u32 peer, u32 number) noexcept {
    return std::size_t{peer} * kChannelWindow + (number & (kChannelWindow - 1));
  }
  u64& open_slot(u32 peer, u32 number) noexcept {
    PG_ASSERT(peer < groups_);
    return out_open_[index(peer, number)];
  }

  u32 groups_ = 0;
  FixedArray<Outbound> out_;
  FixedArray<u64> out_open_;
  FixedArray<Inbound> in_;
};

}  // namespace paygate
