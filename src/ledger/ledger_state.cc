// The ledger's state as a whole, apart from applying commands (ledger.cc): its digest,
// saving and loading it (a snapshot's content, docs/SNAPSHOT.md), and checking every
// invariant from scratch. None of it is on the hot path; all of it reads the same
// members, so it lives with the class.
#include <algorithm>
#include <vector>

#include <fmt/format.h>

#include "ledger/ledger.h"

namespace paygate {

// ---------------------------------------------------------------------------
// Digest and invariants

namespace {

void hash_transfer(Hasher& hasher, const Transfer& t) {
  hasher.add(t.id.value)
      .add(t.debit_account_id.value)
      .add(t.credit_account_id.value)
      .add(t.amount)
      .add(t.posted_amount)
      .add(t.created_at_ns)
      .add(t.expires_at_ns)
      .add(t.currency.code)
      .add(static_cast<u64>(t.status))
      .add(t.flags)
      .add(static_cast<u64>(t.refused));
}

}  // namespace

u64 Ledger::state_digest() const {
  Hasher hasher;
  hasher.add(prefix_bits_).add(last_stamp_.sequence).add(last_stamp_.timestamp_ns);
  hasher.add(account_count_).add(next_transfer_serial_);
  for (u32 i = 0; i < account_count_; ++i) {
    const Account& a = accounts_[i];
    hasher.add(a.id.value)
        .add(a.owner.value)
        .add(a.debits_pending)
        .add(a.debits_posted)
        .add(a.credits_pending)
        .add(a.credits_posted)
        .add(a.updated_seq)
        .add(a.currency.code)
        .add(static_cast<u64>(a.kind))
        .add(a.flags)
        .add(a.clearing_group);
  }

  const std::size_t open = sorted_pending_ids();
  hasher.add(open);
  for (std::size_t i = 0; i < open; ++i) {
    hash_transfer(hasher, pending_[*pending_index_.find(digest_scratch_[i])]);
  }

  const u64 window = recent_mask_ + 1;
  const u64 first = next_transfer_serial_ > window ? next_transfer_serial_ - window : 1;
  for (u64 serial = first; serial < next_transfer_serial_; ++serial) {
    hash_transfer(hasher, recent_[serial & recent_mask_]);
  }

  const auto hash_record = [&](const IdempotencyRecord& r) {
    hasher.add(r.key.lo)
        .add(r.key.hi)
        .add(r.content_hash)
        .add(r.created_at_ns)
        .add(r.result_id)
        .add(r.first_account_id)
        .add(static_cast<u64>(r.code))
        .add(r.failed_index)
        .add(r.channel_number)
        .add(r.owner);
  };
  idempotency_.for_each_live(last_stamp_.timestamp_ns, hash_record);
  hasher.add(u64{0x5349474E});  // "SIGN": where one table ends and the other begins
  signatures_.for_each_live(last_stamp_.timestamp_ns, hash_record);
  channels_.hash_into(hasher);
  hasher.add(u64{0x51554F5441});  // "QUOTA": limits (usage is derived from the above)
  // (The orders limit only when one is set: states from before it hash as they did.)
  const auto hash_limits = [&](const QuotaLimits& limits) {
    for (u32 q = 0; q < kQuotaKinds; ++q) {
      if (q != static_cast<u32>(Quota::orders) || limits.limit[q] != kQuotaGroupDefault) {
        hasher.add(limits.limit[q]);
      }
    }
  };
  hash_limits(quotas_.defaults());
  for (const OwnerQuota& entry : limited_owners()) {
    hasher.add(entry.owner);
    hash_limits(entry.limits);
  }
  hasher.add(u64{0x4F52444552});  // "ORDER"
  orders_.hash_into(hasher);
  return hasher.value();
}

std::vector<OwnerQuota> Ledger::limited_owners() const {
  std::vector<OwnerQuota> limited;
  quotas_.for_each([&](const OwnerQuota& entry) {
    if (!entry.limits.all_default()) limited.push_back(entry);
  });
  std::sort(limited.begin(), limited.end(),
            [](const OwnerQuota& a, const OwnerQuota& b) { return a.owner < b.owner; });
  return limited;
}

bool Ledger::count_usage(OwnerQuotas& into) const noexcept {
  into.clear_usage();
  for (u32 i = 0; i < account_count_; ++i) {
    const u64 owner = accounts_[i].owner.value;
    if (owner == 0) continue;
    OwnerQuota* entry = into.find_or_add(owner);
    if (entry == nullptr) return false;
    into.add(*entry, Quota::accounts);
  }
  bool counted = true;
  pending_index_.for_each([&](u64, u32 slot) {
    const Transfer& hold = pending_[slot];
    const u64 owner = owner_of(hold.debit_account_id);
    if (!hold.two_phase() || owner == 0) return;
    if (OwnerQuota* entry = into.find_or_add(owner)) {
      into.add(*entry, Quota::holds);
    } else {
      counted = false;
    }
  });
  idempotency_.for_each_held([&](const IdempotencyRecord& record) {
    if (record.owner == 0) return;
    if (OwnerQuota* entry = into.find_or_add(record.owner)) {
      into.add(*entry, Quota::idempotency_keys);
    } else {
      counted = false;
    }
  });
  orders_.for_each([&](const Order& order) {
    if (OwnerQuota* entry = into.find_or_add(order.merchant)) {
      into.add(*entry, Quota::orders);
    } else {
      counted = false;
    }
  });
  return counted;
}

std::size_t Ledger::sorted_pending_ids() const noexcept {
  std::size_t open = 0;
  pending_index_.for_each([&](u64 id, u32) { digest_scratch_[open++] = id; });
  std::sort(digest_scratch_.data(), digest_scratch_.data() + open);
  return open;
}

// ---------------------------------------------------------------------------
// Save and load (the layout is in docs/SNAPSHOT.md)

namespace {

// 2: transfers between groups (channels, clearing accounts). 3: the table of
// signatures (KeyLane::signature) and its configuration. 4: key records name their
// owner (64 bytes, not 56), and the quota limits follow the channels. 5: the orders
// follow the limits (orders/order_book.h). 6: the quota limits have the orders limit
// (a reserved zero before). Versions 2 to 5 are still read (no signatures in 2; keys
// of no owner and no limits in 2 and 3; no orders before 5; no orders limit before
// 6); version 1 states are refused, and docs/SNAPSHOT.md says what recovery then does.
constexpr u64 kStateMagic = tag8("PGLEDGR6");
constexpr u64 kStateMagicV5 = tag8("PGLEDGR5");
constexpr u64 kStateMagicV4 = tag8("PGLEDGR4");
constexpr u64 kStateMagicV3 = tag8("PGLEDGR3");
constexpr u64 kStateMagicV2 = tag8("PGLEDGR2");
constexpr std::size_t kRecordBytesV3 = 56;  // an IdempotencyRecord without its owner
constexpr u64 kStateEndMagic = tag8("PGLEDEND");

struct SavedConfig {
  u32 region, group;
  u32 accounts_max, pending_max, recent_transfers_max, idempotency_keys_max;
  u64 idempotency_window_ns;

  static SavedConfig of(const LedgerConfig& c) {
    return {c.prefix.region,        c.prefix.group,         c.accounts_max,         c.pending_max,
            c.recent_transfers_max, c.idempotency_keys_max, c.idempotency_window_ns};
  }
  bool operator==(const SavedConfig&) const = default;
};
static_assert(sizeof(SavedConfig) == 32);

// Version 3: after SavedConfig.
struct SavedSignatureConfig {
  u32 signature_keys_max;
  u32 reserved;
  u64 signature_window_ns;

  static SavedSignatureConfig of(const LedgerConfig& c) {
    return {c.signature_capacity(), 0, c.signature_window_ns};
  }
  bool operator==(const SavedSignatureConfig&) const = default;
};
static_assert(sizeof(SavedSignatureConfig) == 16);

template <typename T>
void put(StateSink& sink, const T& value) noexcept {
  static_assert(std::is_trivially_copyable_v<T>);
  sink.write(&value, sizeof value);
}

template <typename T>
bool get(StateSource& source, T* value) noexcept {
  static_assert(std::is_trivially_copyable_v<T>);
  return source.read(value, sizeof *value);
}

}  // namespace

void Ledger::save(StateSink& sink) const noexcept {
  put(sink, kStateMagic);
  put(sink, SavedConfig::of(config_));
  put(sink, SavedSignatureConfig::of(config_));
  put(sink, last_stamp_);
  put(sink, u64{account_count_});
  sink.write(accounts_.data(), sizeof(Account) * account_count_);
  put(sink, next_transfer_serial_);

  const std::size_t open = sorted_pending_ids();
  put(sink, u64{open});
  for (std::size_t i = 0; i < open; ++i)
    put(sink, pending_[*pending_index_.find(digest_scratch_[i])]);

  const u64 window = recent_mask_ + 1;
  const u64 first = next_transfer_serial_ > window ? next_transfer_serial_ - window : 1;
  put(sink, next_transfer_serial_ - first);
  for (u64 serial = first; serial < next_transfer_serial_; ++serial) {
    put(sink, recent_[serial & recent_mask_]);
  }

  for (const IdempotencyWindow* keys : {&idempotency_, &signatures_}) {
    u64 live = 0;
    keys->for_each_live(last_stamp_.timestamp_ns, [&](const IdempotencyRecord&) { ++live; });
    put(sink, live);
    keys->for_each_live(last_stamp_.timestamp_ns,
                        [&](const IdempotencyRecord& record) { put(sink, record); });
  }

  // Channels: those of groups that have used one (a state may be loaded by a ledger
  // configured with more groups).
  u32 channel_groups = 0;
  for (u32 g = 0; g < channels_.groups(); ++g) {
    const GroupChannels::Outbound& out = channels_.outbound()[g];
    bool used = out.next != 0;
    for (u32 i = 0; i < kChannelWindow && !used; ++i)
      used = channels_.inbound()[std::size_t{g} * kChannelWindow + i].used != 0;
    if (used) channel_groups = g + 1;
  }
  put(sink, u64{channel_groups});
  sink.write(channels_.outbound().data(), sizeof(GroupChannels::Outbound) * channel_groups);
  sink.write(channels_.outbound_open().data(), sizeof(u64) * kChannelWindow * channel_groups);
  sink.write(channels_.inbound().data(),
             sizeof(GroupChannels::Inbound) * kChannelWindow * channel_groups);

  // Version 4: the quota limits (the usage is recounted on load). No allocation here
  // (a forked child saves): the entries are written in slot order, the digest sorts.
  put(sink, quotas_.defaults());
  u64 limited = 0;
  quotas_.for_each([&](const OwnerQuota& entry) { limited += entry.limits.all_default() ? 0 : 1; });
  put(sink, limited);
  quotas_.for_each([&](const OwnerQuota& entry) {
    if (entry.limits.all_default()) return;
    put(sink, entry.owner);
    put(sink, entry.limits);
  });
  // Version 5: the orders held.
  orders_.save([&](const auto& value) { put(sink, value); });
  put(sink, kStateEndMagic);
}

Status Ledger::load(StateSource& source) {
  PG_ASSERT(last_stamp_.sequence == 0 && account_count_ == 0 && next_transfer_serial_ == 1);
  const auto fail = [](std::string why) { return Status::corruption(std::move(why)); };
  u64 magic = 0;
  if (!get(source, &magic) ||
      (magic != kStateMagic && magic != kStateMagicV5 && magic != kStateMagicV4 &&
       magic != kStateMagicV3 && magic != kStateMagicV2)) {
    return fail("not a ledger state (bad magic)");
  }
  const bool has_signatures = magic != kStateMagicV2;
  const bool has_quotas = magic == kStateMagic || magic == kStateMagicV5 || magic == kStateMagicV4;
  const bool has_orders = magic == kStateMagic || magic == kStateMagicV5;
  // Before 6 the orders limit was a reserved zero: no limit of its own.
  const auto orders_limit_of_old = [&](QuotaLimits& limits) {
    if (magic != kStateMagic) limits.limit[static_cast<u32>(Quota::orders)] = kQuotaGroupDefault;
  };
  SavedConfig saved{};
  if (!get(source, &saved)) return fail("truncated configuration");
  if (!(saved == SavedConfig::of(config_))) {
    return Status::invalid_config(fmt::format(
        "saved with a different configuration (group {}.{}, accounts_max {}, pending_max {}, "
        "recent_transfers_max {}, idempotency_keys_max {}, window {} ns)",
        saved.region, saved.group, saved.accounts_max, saved.pending_max,
        saved.recent_transfers_max, saved.idempotency_keys_max, saved.idempotency_window_ns));
  }
  if (has_signatures) {
    SavedSignatureConfig saved_signatures{};
    if (!get(source, &saved_signatures)) return fail("truncated configuration");
    if (!(saved_signatures == SavedSignatureConfig::of(config_))) {
      return Status::invalid_config(fmt::format(
          "saved with a different configuration (signature_keys_max {}, signature window {} ns)",
          saved_signatures.signature_keys_max, saved_signatures.signature_window_ns));
    }
  }
  if (!get(source, &last_stamp_)) return fail("truncated stamp");

  u64 accounts = 0;
  if (!get(source, &accounts) || accounts > config_.accounts_max) return fail("bad account count");
  if (!source.read(accounts_.data(), sizeof(Account) * accounts)) return fail("truncated accounts");
  account_count_ = static_cast<u32>(accounts);
  if (!get(source, &next_transfer_serial_) || next_transfer_serial_ == 0 ||
      next_transfer_serial_ > kSerialMax + 1) {
    return fail("bad transfer serial");
  }

  u64 open = 0;
  if (!get(source, &open) || open > config_.pending_max) return fail("bad hold count");
  std::vector<std::pair<std::pair<u64, u64>, u32>> expiring;  // ((expires, id), slot)
  for (u64 i = 0; i < open; ++i) {
    Transfer hold{};
    if (!get(source, &hold)) return fail("truncated holds");
    if (hold.status != TransferStatus::pending || !issued_here(hold.id.value) ||
        pending_slot(hold.id) != nullptr) {
      return fail(fmt::format("bad hold {}", hold.id.value));
    }
    const u32 slot = free_slots_[--free_top_];
    pending_[slot] = hold;
    pending_index_.insert(hold.id.value, slot);
    if (hold.expires_at_ns != 0) expiring.push_back({{hold.expires_at_ns, hold.id.value}, slot});
  }
  // Lanes need their holds in expiry order; the timeout is what separates lanes.
  std::sort(expiring.begin(), expiring.end());
  for (const auto& [key, slot] : expiring) {
    const Transfer& hold = pending_[slot];
    const u64 timeout_ns = hold.expires_at_ns - hold.created_at_ns;
    if (hold.expires_at_ns <= hold.created_at_ns || timeout_ns % kNanosPerSecond != 0 ||
        timeout_ns / kNanosPerSecond > ~u32{0}) {
      return fail(fmt::format("bad timeout on hold {}", hold.id.value));
    }
    expiry_.push(slot, hold.expires_at_ns, hold.id.value,
                 static_cast<u32>(timeout_ns / kNanosPerSecond));
  }

  u64 recent = 0;
  if (!get(source, &recent) || recent > recent_mask_ + 1 || recent >= next_transfer_serial_) {
    return fail("bad recent count");
  }
  for (u64 serial = next_transfer_serial_ - recent; serial < next_transfer_serial_; ++serial) {
    Transfer& slot = recent_[serial & recent_mask_];
    if (!get(source, &slot) || slot.id.value != make_id(config_.prefix, serial)) {
      return fail(fmt::format("bad recent transfer at serial {}", serial));
    }
  }

  for (IdempotencyWindow* window : {&idempotency_, &signatures_}) {
    if (window == &signatures_ && !has_signatures) break;
    u64 records = 0;
    if (!get(source, &records) || records > window->capacity()) {
      return fail("bad idempotency count");
    }
    u64 previous_ns = 0;
    for (u64 i = 0; i < records; ++i) {
      IdempotencyRecord record{};
      const bool read = has_quotas ? get(source, &record) : source.read(&record, kRecordBytesV3);
      if (!read || record.key.empty() || record.created_at_ns < previous_ns ||
          record.created_at_ns > last_stamp_.timestamp_ns ||
          last_stamp_.timestamp_ns - record.created_at_ns >= window->window_ns() ||
          window->find(record.key, record.created_at_ns) != nullptr) {
        return fail("bad idempotency record");
      }
      previous_ns = record.created_at_ns;
      window->insert(record);
    }
  }

  u64 channel_groups = 0;
  if (!get(source, &channel_groups) || channel_groups > channels_.groups()) {
    return Status::invalid_config(
        fmt::format("state has channels to {} groups; this ledger is configured for {}",
                    channel_groups, channels_.groups()));
  }
  if (!source.read(channels_.outbound().data(), sizeof(GroupChannels::Outbound) * channel_groups) ||
      !source.read(channels_.outbound_open().data(),
                   sizeof(u64) * kChannelWindow * channel_groups) ||
      !source.read(channels_.inbound().data(),
                   sizeof(GroupChannels::Inbound) * kChannelWindow * channel_groups)) {
    return fail("truncated channels");
  }
  if (has_quotas) {
    u64 limited = 0;
    if (!get(source, &quotas_.defaults())) return fail("bad quota limits");
    orders_limit_of_old(quotas_.defaults());
    if (!quotas_.defaults().valid() || !get(source, &limited) || limited > quotas_.capacity()) {
      return fail("bad quota limits");
    }
    for (u64 i = 0; i < limited; ++i) {
      u64 owner = 0;
      QuotaLimits limits;
      if (!get(source, &owner) || !get(source, &limits)) return fail("bad quota limits");
      orders_limit_of_old(limits);
      if (!limits.valid() || owner == 0 || limits.all_default() || quotas_.find(owner) != nullptr) {
        return fail("bad quota limits");
      }
      OwnerQuota* entry = quotas_.find_or_add(owner);
      PG_ASSERT(entry != nullptr);  // fewer than capacity, all distinct
      entry->limits = limits;
    }
  }
  for (u32 i = 0; i < account_count_; ++i) {
    const Account& account = accounts_[i];
    if ((account.flags & kAccountClearing) == 0) continue;
    const u64 key = clearing_key(account.clearing_group, account.currency);
    if (clearing_index_.find(key) != nullptr || clearing_index_.size() == kClearingAccountsMax) {
      return fail(fmt::format("bad clearing account {}", account.id.value));
    }
    clearing_index_.insert(key, i);
  }
  if (has_orders) {
    OrderBook::SavedConfig saved_orders{};
    if (!get(source, &saved_orders)) return fail("truncated orders");
    if (!(saved_orders == orders_.saved_config())) {
      return Status::invalid_config(
          fmt::format("saved with a different configuration (orders_max {}, final_retained {} ns)",
                      saved_orders.orders_max, saved_orders.final_retained_ns));
    }
    u64 next_order_serial = 0, next_retain_serial = 0, orders = 0;
    if (!get(source, &next_order_serial) || !get(source, &next_retain_serial) ||
        !get(source, &orders) || orders > orders_.config().orders_max) {
      return Status::invalid_config("the state holds more orders than orders_max, or is damaged");
    }
    std::vector<Order> held(orders);
    if (orders != 0 && !source.read(held.data(), sizeof(Order) * orders)) {
      return fail("truncated orders");
    }
    if (Status loaded =
            orders_.load(next_order_serial, next_retain_serial, held, last_stamp_.timestamp_ns);
        !loaded.ok()) {
      return loaded;
    }
  }
  if (!get(source, &magic) || magic != kStateEndMagic) return fail("bad end marker");
  if (!count_usage(quotas_)) {
    return Status::invalid_config(fmt::format(
        "the state has more merchants than owners_max ({}) can count", config_.owners_max));
  }

  if (Status invariants = check_invariants(); !invariants.ok()) {
    return invariants.with_context("after load");
  }
  return Status::success();
}

Status Ledger::check_invariants() const {
  Status report;
  const auto fail = [&](std::string message) {
    if (report.ok()) report = Status::corruption("invariant broken: " + std::move(message));
  };

  // Per-account pending sums from the open holds themselves.
  std::vector<u128> held_by(account_count_, 0);
  std::vector<u128> incoming_for(account_count_, 0);
  u128 held_total = 0;
  u32 open = 0;
  u32 with_timeout = 0;
  u32 between_groups = 0;
  pending_index_.for_each([&](u64 id, u32 slot) {
    ++open;
    const Transfer& hold = pending_[slot];
    if (hold.id.value != id) return fail(fmt::format("pending slot {} holds id {}", slot, id));
    if (hold.status != TransferStatus::pending) {
      return fail(fmt::format("open hold {} has status {}", id, name(hold.status)));
    }
    if (hold.expires_at_ns != 0) {
      ++with_timeout;
      if (!expiry_.contains(slot)) fail(fmt::format("hold {} is not in the expiry queue", id));
      if (hold.expires_at_ns <= last_stamp_.timestamp_ns) {
        fail(fmt::format("hold {} is open after its expiry", id));
      }
    }
    const Account* debit = account_at(hold.debit_account_id);
    const Account* credit = credit_side(hold);
    if (debit == nullptr || credit == nullptr) {
      return fail(fmt::format("hold {} names an unknown account", id));
    }
    // (An open refund between groups keeps its order there instead.)
    if (!hold.order_refund() &&
        (hold.posted_amount > hold.amount || (hold.posted_amount != 0 && !hold.on_channel()))) {
      fail(fmt::format("open hold {} has a posted amount", id));
    }
    if (hold.on_channel()) {
      ++between_groups;
      if (hold.expires_at_ns != 0) fail(fmt::format("hold {} on its channel can expire", id));
    }
    held_by[id_serial(debit->id.value) - 1] += hold.amount;
    incoming_for[id_serial(credit->id.value) - 1] += hold.amount;
    held_total += hold.amount;
  });
  if (open != pending_count()) fail("pending index size differs from the pool's use");
  if (expiry_.size() != with_timeout) fail("expiry queue size differs from holds with timeouts");
  if (!expiry_.consistent()) fail("expiry queue lanes, heap or index broken");

  u128 debits_posted = 0, credits_posted = 0, debits_pending = 0, credits_pending = 0;
  for (u32 i = 0; i < account_count_; ++i) {
    const Account& a = accounts_[i];
    if (a.id.value != make_id(config_.prefix, u64{i} + 1)) {
      fail(fmt::format("account at index {} has id {}", i, a.id.value));
    }
    if (u128{a.debits_posted} + a.debits_pending > kAmountMax ||
        u128{a.credits_posted} + a.credits_pending > kAmountMax) {
      fail(fmt::format("account {} debits or credits above the limit", a.id.value));
    }
    if (a.restricted() && u128{a.debits_posted} + a.debits_pending > a.credits_posted) {
      fail(fmt::format("restricted account {} below zero", a.id.value));
    }
    if (held_by[i] != a.debits_pending) {
      fail(fmt::format("account {} debits_pending differs from its open holds", a.id.value));
    }
    if (incoming_for[i] != a.credits_pending) {
      fail(fmt::format("account {} credits_pending differs from its open holds", a.id.value));
    }
    debits_posted += a.debits_posted;
    credits_posted += a.credits_posted;
    debits_pending += a.debits_pending;
    credits_pending += a.credits_pending;
  }
  if (debits_posted != credits_posted) fail("total posted debits differ from posted credits");
  if (debits_pending != credits_pending) fail("total pending debits differ from pending credits");
  if (debits_pending != held_total) fail("held differs from the sum of open holds");
  if (!idempotency_.consistent()) fail("idempotency window index broken");
  if (!signatures_.consistent()) fail("signature window index broken");
  if (idempotency_.size() > idempotency_.capacity() ||
      signatures_.size() > signatures_.capacity()) {
    fail("a key table holds more than its capacity");
  }
  // Quota usage, recounted: every count the ledger keeps as it goes.
  {
    OwnerQuotas recount(quotas_.capacity());
    if (!count_usage(recount)) fail("more merchants than the quota table holds");
    quotas_.for_each([&](const OwnerQuota& entry) {
      const OwnerQuota* counted = recount.find(entry.owner);
      for (u32 q = 0; q < kQuotaKinds; ++q) {
        const u32 expected = counted == nullptr ? 0 : counted->used[q];
        if (entry.used[q] != expected) {
          fail(fmt::format("merchant {} quota {} counts {}, recounted {}", entry.owner, q,
                           entry.used[q], expected));
        }
      }
    });
    recount.for_each([&](const OwnerQuota& counted) {
      if (!OwnerQuotas::idle(counted) && quotas_.find(counted.owner) == nullptr) {
        fail(fmt::format("merchant {} uses quota but has no entry", counted.owner));
      }
    });
  }

  // Every hold between groups is open on its channel, and every open channel number
  // names such a hold.
  if (!channels_.consistent()) fail("channel windows broken");
  u32 unsettled = 0;
  channels_.for_each_unsettled([&](u32 peer, u32 number, u64 id) {
    ++unsettled;
    const u32* slot = pending_slot(TransferId{id});
    if (slot == nullptr || !pending_[*slot].on_channel() ||
        id_prefix(pending_[*slot].credit_account_id.value).group != peer) {
      fail(fmt::format("channel {} number {} names {}, no hold to that group", peer, number, id));
    }
  });
  if (unsettled != between_groups) fail("holds on channels differ from the channels' count");
  u32 clearing = 0;
  for (u32 i = 0; i < account_count_; ++i) {
    const Account& a = accounts_[i];
    if ((a.flags & kAccountClearing) == 0) continue;
    ++clearing;
    const u32* index = clearing_index_.find(clearing_key(a.clearing_group, a.currency));
    if (index == nullptr || *index != i || a.kind != AccountKind::system) {
      fail(fmt::format("clearing account {} not indexed", a.id.value));
    }
  }
  if (clearing != clearing_index_.size()) fail("clearing index names other accounts");
  if (report.ok()) report = orders_.check_invariants(last_stamp_.timestamp_ns);
  // An order's hold is open exactly while its balance order is processing, one hold
  // per order, and holds what the order says: the order's account toward its
  // provider, the whole amount, in its currency, with no timeout and no other flag.
  u32 order_holds = 0;
  // Between groups, an order's money is a payment to an order elsewhere or a refund of
  // one here; a refund on its way still counts on its order's amount_refunded.
  std::vector<std::pair<u64, u64>> refunding;  // (order, amount)
  pending_index_.for_each([&](u64, u32 slot) {
    const Transfer& hold = pending_[slot];
    if (hold.pays_order() &&
        (hold.flags != (kTransferBetweenGroups | kTransferOrder) || hold.expires_at_ns != 0)) {
      fail(fmt::format("payment {} of an order elsewhere is not an immediate hold", hold.id.value));
    }
    if (hold.order_refund()) {
      if (hold.flags != (kTransferBetweenGroups | kTransferOrderRefund) ||
          hold.expires_at_ns != 0 || !issued_here(hold.refunded_order())) {
        fail(fmt::format("refund {} between groups names no order of this group", hold.id.value));
      }
      const Order* o = orders_.find(hold.refunded_order());
      if (o != nullptr &&
          (hold.debit_account_id != o->account || hold.credit_account_id != o->payer_account)) {
        fail(fmt::format("refund {} between groups is not its order's", hold.id.value));
      }
      refunding.emplace_back(hold.refunded_order(), hold.amount);
    }
    order_holds += hold.order_hold() && !hold.between_groups();
  });
  std::sort(refunding.begin(), refunding.end());
  for (std::size_t i = 0; i < refunding.size();) {
    const u64 order_id = refunding[i].first;
    u64 sum = 0;
    for (; i < refunding.size() && refunding[i].first == order_id; ++i)
      sum += refunding[i].second;
    const Order* o = orders_.find(order_id);
    if (o != nullptr && (o->method != OrderMethod::wallet || o->amount_refunded < sum)) {
      fail(fmt::format("order {} has more refunds on their way than it counts", order_id));
    }
  }
  std::vector<u64> claimed;
  orders_.for_each([&](const Order& o) {
    if (o.method != OrderMethod::balance || o.status != OrderStatus::processing) return;
    claimed.push_back(o.hold_id.value);
    const u32* slot = pending_slot(o.hold_id);
    const Transfer* hold = slot == nullptr ? nullptr : &pending_[*slot];
    if (hold == nullptr || hold->flags != kTransferOrder || hold->expires_at_ns != 0 ||
        hold->amount != o.amount || hold->currency != o.currency ||
        hold->debit_account_id != o.account || hold->credit_account_id != o.provider_account) {
      fail(fmt::format("order {} is processing without its hold", o.id));
    }
  });
  std::sort(claimed.begin(), claimed.end());
  if (std::adjacent_find(claimed.begin(), claimed.end()) != claimed.end()) {
    fail("two orders name one hold");
  }
  // Each claimed hold is an order hold and none is claimed twice: equal counts mean
  // every order hold is claimed.
  if (order_holds != claimed.size()) fail("order holds without a processing order");
  return report;
}

}  // namespace paygate
