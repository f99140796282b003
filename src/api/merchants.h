// The principals the gateway knows — merchants, users (payers) and providers (banks,
// card processors; api/id_text.h, PrincipalKind): ids, the tree of parents and
// sub-merchants, API keys, the group each one's accounts live in, and a provider's
// clearing account. One registry for all three, because they authenticate alike.
//
// Durable: every change rewrites DATA_DIR/merchants.json (mode 0600) through a
// temporary file, fsync and rename before it is acknowledged (base/durable_file.h).
// Onboarding and key rotation are rare operator actions, so a whole-file rewrite is
// the simple and safe choice. Secrets are kept in that file in clear, because
// HMAC verification needs them; docs/API.md says how to protect the file.
//
// Thread-safe: readers (every request) share a lock; changes take it exclusively.
#pragma once

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "api/id_text.h"
#include "api/request_decoder.h"
#include "base/result_code.h"
#include "base/status.h"
#include "base/types.h"
#include "ledger/command.h"

namespace paygate::api {

// Per-merchant token bucket (docs/API.md, rate limits). Shared by every version of
// a merchant's record, so rotating a key does not refill it.
class TokenBucket {
 public:
  // Takes one token if there is one; otherwise says in how many whole seconds one
  // will be there.
  bool take(u64 now_ns, double rate_per_s, double burst, u32* retry_after_s) noexcept;

 private:
  std::mutex mutex_;
  double tokens_ = -1;  // < 0: not yet used (starts full)
  u64 last_ns_ = 0;
};

// A merchant's risk rules (docs/ORDERS.md, "Risk rules"): set by operators, checked
// by the gateway at each checkout of the merchant's orders. 0 or empty: no such rule.
struct RiskRules {
  u64 max_amount = 0;
  u32 max_checkouts_per_payer_per_minute = 0;
  std::vector<u64> blocked_payers;  // principal ids, sorted
  bool any() const noexcept {
    return max_amount != 0 || max_checkouts_per_payer_per_minute != 0 || !blocked_payers.empty();
  }
  bool blocks(u64 payer) const noexcept {
    return std::binary_search(blocked_payers.begin(), blocked_payers.end(), payer);
  }
};

// One principal (the name is the first kind's; `kind` says which).
struct Merchant {
  u64 id = 0;
  PrincipalKind kind = PrincipalKind::merchant;
  std::string name;
  u64 parent_id = 0;
  u32 region = 0;
  u32 group = 0;
  std::string key_id;
  std::string secret;
  u64 created_at_s = 0;
  // A provider: its clearing account (0 until its onboarding made it) and currency.
  // clearing_account is the one in the provider's own group (withdrawals are held
  // toward it); clearing_by_group holds one per group (index: group), so that an
  // order's money never leaves the order's group (docs/ORDERS.md, "Providers").
  u64 clearing_account = 0;
  Currency clearing_currency;
  std::vector<u64> clearing_by_group;
  // The provider's clearing account in `g`: 0 where it has none (onboarded by a server
  // that made only one, or a group added since).
  u64 clearing_account_in(u32 g) const noexcept {
    if (g < clearing_by_group.size()) return clearing_by_group[g];
    return g == group ? clearing_account : 0;
  }
  RiskRules risk;
  std::shared_ptr<TokenBucket> bucket = std::make_shared<TokenBucket>();
  // The key before the last rotation: it still authenticates, and still signs
  // webhooks beside the new one, until previous_until_s (docs/API.md, key rotation).
  std::string previous_key_id, previous_secret;
  u64 previous_until_s = 0;
  bool previous_valid(u64 now_s) const noexcept {
    return !previous_secret.empty() && now_s < previous_until_s;
  }
  // The secret that goes with `key_id` at now_s: the current key's, or the previous
  // one's during its grace; empty for neither.
  std::string_view secret_of(std::string_view presented, u64 now_s) const noexcept {
    if (presented == key_id) return secret;
    if (presented == previous_key_id && previous_valid(now_s)) return previous_secret;
    return {};
  }
  // What signs its webhooks at now_s: the current secret, then the previous one in grace.
  std::vector<std::string> signing_secrets(u64 now_s) const {
    std::vector<std::string> out{secret};
    if (previous_valid(now_s)) out.push_back(previous_secret);
    return out;
  }
};

using MerchantRef = std::shared_ptr<const Merchant>;

// What an idempotent operator call answered, kept so a retry gets the same answer.
struct StoredReply {
  u64 content_hash = 0;
  u16 status = 0;
  std::string body;
};

class MerchantRegistry {
 public:
  // Loads the file if it exists. `groups` is the number of groups merchants are spread
  // over; merchants already placed in a group beyond it refuse the open.
  static Result<std::unique_ptr<MerchantRegistry>> open(const std::filesystem::path& file,
                                                        u32 region, u32 groups);

  MerchantRef find(u64 id) const;
  MerchantRef find_by_key(std::string_view key_id) const;
  // True when `owner` is `viewer` or one of its sub-merchants, at any depth.
  bool can_see(u64 viewer, u64 owner) const;
  std::size_t size() const;

  // Creates a merchant: sub-merchants join their parent's group (so a family's
  // accounts can move money among themselves), others are spread round-robin. The
  // reply is rendered by `render` (with the secret, for this answer) and stored under
  // `key` (if not empty) in the same durable write, rendered without it: a secret is
  // shown once, and no stored reply keeps one (a replay answers without it). Returns
  // merchant_not_found for an unknown parent, or not_durable with *failure saying why the write
  // failed (then nothing changed).
  using Render = std::function<StoredReply(const Merchant&, bool with_secret)>;
  //
  // Users and providers (`kind`) have no parent and are spread like top-level
  // merchants. A provider is made without its clearing account, and no reply is
  // stored for it: set_clearing_account() finishes its onboarding.
  // *created_id (if given) is the new principal's id, or 0 when a stored reply answered.
  ResultCode create(const MerchantCreate& request, PrincipalKind kind, const IdempotencyKey& key,
                    u64 content_hash, const Render& render, StoredReply* reply, Status* failure,
                    u64* created_id = nullptr);
  // Records provider `id`'s clearing accounts (`by_group`: one per group, index =
  // group) and stores the onboarding's reply under `key`, in one durable write.
  // merchant_not_found if `id` is no provider. Until then, create() under the same key
  // answers overloaded (the onboarding is on its way); abandon_onboarding() ends that
  // when an account could not be made.
  ResultCode set_clearing_accounts(u64 id, std::vector<u64> by_group, Currency currency,
                                   const IdempotencyKey& key, u64 content_hash,
                                   const Render& render, StoredReply* reply, Status* failure);
  // The provider that takes withdrawals in `currency` when none is named: the oldest
  // one with a clearing account in it; nullptr if none.
  MerchantRef default_provider(Currency currency) const;
  void abandon_onboarding(const IdempotencyKey& key);
  // Replaces the rules `request` gives of merchant `id` (a merchant: merchant_not_found
  // otherwise); *rules is what they are now. Setting the same again changes nothing, so
  // a retry needs no key.
  ResultCode set_risk(u64 id, const RiskSet& request, RiskRules* rules, Status* failure);
  // New key id and secret; the old one keeps working for `grace_s` more seconds (0: it
  // stops at once), and the one before it stops now.
  ResultCode rotate_key(u64 id, u64 grace_s, const IdempotencyKey& key, u64 content_hash,
                        const Render& render, StoredReply* reply, Status* failure);

 private:
  MerchantRegistry(std::filesystem::path file, u32 region, u32 groups)
      : file_(std::move(file)), region_(region), groups_(groups) {}
  Status load();
  Status save() const;  // REQUIRES: mutex_ held exclusively
  // A stored reply for `key`: true if found (then *reply is it, or the mismatch).
  bool replay(const IdempotencyKey& key, u64 content_hash, StoredReply* reply,
              ResultCode* code) const;
  void index(MerchantRef merchant);
  void store_reply(const IdempotencyKey& key, u64 content_hash, StoredReply reply);

  struct KeyHash {
    std::size_t operator()(const IdempotencyKey& k) const noexcept { return k.lo ^ (k.hi << 1); }
  };

  const std::filesystem::path file_;
  const u32 region_;
  const u32 groups_;
  mutable std::shared_mutex mutex_;
  std::unordered_map<u64, MerchantRef> by_id_;
  std::unordered_map<std::string, MerchantRef> by_key_;
  std::unordered_map<IdempotencyKey, StoredReply, KeyHash> replies_;
  // Keys of providers' onboardings on their way (in memory: a crash ends them, inert).
  std::unordered_set<IdempotencyKey, KeyHash> onboarding_;
  u64 next_serial_ = 1;
  u64 top_level_count_ = 0;
};

}  // namespace paygate::api
