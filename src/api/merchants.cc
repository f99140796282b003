#include "api/merchants.h"

#include <fmt/format.h>
#include <simdjson.h>

#include <algorithm>
#include <ctime>

#include "api/crypto.h"
#include "api/id_text.h"
#include "api/json_writer.h"
#include "base/assert.h"
#include "base/durable_file.h"
#include "base/ids.h"

namespace paygate::api {

bool TokenBucket::take(u64 now_ns, double rate_per_s, double burst, u32* retry_after_s) noexcept {
  std::lock_guard lock(mutex_);
  if (tokens_ < 0) {
    tokens_ = burst;
    last_ns_ = now_ns;
  }
  if (now_ns > last_ns_) {
    tokens_ = std::min(burst, tokens_ + rate_per_s * static_cast<double>(now_ns - last_ns_) / 1e9);
    last_ns_ = now_ns;
  }
  if (tokens_ >= 1.0) {
    tokens_ -= 1.0;
    return true;
  }
  const double wait_s = (1.0 - tokens_) / rate_per_s;
  *retry_after_s = static_cast<u32>(wait_s) + 1;  // whole seconds, rounded up
  return false;
}

Result<std::unique_ptr<MerchantRegistry>> MerchantRegistry::open(const std::filesystem::path& file,
                                                                 u32 region, u32 groups) {
  PG_ASSERT(groups >= 1 && groups <= kGroupMax + 1 && region <= kRegionMax);
  std::unique_ptr<MerchantRegistry> registry(new MerchantRegistry(file, region, groups));
  if (Status loaded = registry->load(); !loaded.ok()) return loaded;
  return registry;
}

MerchantRef MerchantRegistry::find(u64 id) const {
  std::shared_lock lock(mutex_);
  const auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : it->second;
}

MerchantRef MerchantRegistry::find_by_key(std::string_view key_id) const {
  std::shared_lock lock(mutex_);
  const auto it = by_key_.find(std::string(key_id));
  return it == by_key_.end() ? nullptr : it->second;
}

bool MerchantRegistry::can_see(u64 viewer, u64 owner) const {
  // The common case, a merchant's own account, needs no walk and so no lock (every
  // transfer asks twice).
  if (owner == viewer && owner != 0) return true;
  std::shared_lock lock(mutex_);
  // The tree is bounded by the number of merchants; walking up from the owner finds
  // the viewer if it is an ancestor.
  for (std::size_t depth = 0; owner != 0 && depth <= by_id_.size(); ++depth) {
    if (owner == viewer) return true;
    const auto it = by_id_.find(owner);
    if (it == by_id_.end()) return false;
    owner = it->second->parent_id;
  }
  return false;
}

std::size_t MerchantRegistry::size() const {
  std::shared_lock lock(mutex_);
  return by_id_.size();
}

bool MerchantRegistry::replay(const IdempotencyKey& key, u64 content_hash, StoredReply* reply,
                              ResultCode* code) const {
  if (key.empty()) return false;
  const auto it = replies_.find(key);
  if (it == replies_.end()) return false;
  *code =
      it->second.content_hash == content_hash ? ResultCode::ok : ResultCode::idempotency_key_reused;
  if (*code == ResultCode::ok) *reply = it->second;
  return true;
}

void MerchantRegistry::store_reply(const IdempotencyKey& key, u64 content_hash, StoredReply reply) {
  PG_ASSERT(reply.body.find("\"secret\"") == std::string::npos);  // a secret is shown once
  reply.content_hash = content_hash;
  replies_[key] = std::move(reply);
}

namespace {

// A stored reply written by an older paygate may hold the secret it showed: cut the
// field out (render_merchant writes it after key_id). True if there was one.
bool redact_secret(std::string& body) {
  const std::size_t at = body.find(",\"secret\":\"");
  if (at == std::string::npos) return false;
  const std::size_t end = body.find('"', at + 11);
  if (end == std::string::npos) return false;
  body.erase(at, end + 1 - at);
  return true;
}

}  // namespace

void MerchantRegistry::index(MerchantRef merchant) {
  by_key_[merchant->key_id] = merchant;
  // (Found after its grace too; the authenticator asks secret_of(), which says no.)
  if (!merchant->previous_key_id.empty()) by_key_[merchant->previous_key_id] = merchant;
  by_id_[merchant->id] = std::move(merchant);
}

ResultCode MerchantRegistry::create(const MerchantCreate& request, PrincipalKind kind,
                                    const IdempotencyKey& key, u64 content_hash,
                                    const Render& render, StoredReply* reply, Status* failure,
                                    u64* created_id) {
  std::unique_lock lock(mutex_);
  if (created_id != nullptr) *created_id = 0;
  ResultCode code = ResultCode::ok;
  if (replay(key, content_hash, reply, &code)) return code;
  PG_ASSERT(request.parent_id == 0 || kind == PrincipalKind::merchant);
  // A provider's onboarding under this key is still on its way (its reply is stored
  // when it ends): a second request must not make a second provider.
  if (!key.empty() && onboarding_.contains(key)) return ResultCode::overloaded;
  auto merchant = std::make_shared<Merchant>();
  merchant->kind = kind;
  if (request.parent_id != 0) {
    // Only a merchant has sub-merchants.
    const auto parent = by_id_.find(request.parent_id);
    if (parent == by_id_.end() || parent->second->kind != PrincipalKind::merchant) {
      return ResultCode::merchant_not_found;
    }
    merchant->group = parent->second->group;
    merchant->region = parent->second->region;
  } else {
    merchant->group = static_cast<u32>(top_level_count_ % groups_);
    merchant->region = request.has_region ? request.region : region_;
  }
  if (merchant->region != region_) return ResultCode::invalid_field;  // another deployment's
  if (next_serial_ >= (u64{1} << kPrincipalKindShift)) return ResultCode::ids_exhausted;
  merchant->id = make_id(IdPrefix{merchant->region, merchant->group}, next_serial_) |
                 principal_kind_bits(kind);
  merchant->name = request.name;
  merchant->parent_id = request.parent_id;
  merchant->key_id = "key_" + random_hex(12);
  merchant->secret = "sk_" + random_hex(32);
  merchant->created_at_s = static_cast<u64>(std::time(nullptr));
  *reply = render(*merchant, /*with_secret=*/true);
  reply->content_hash = content_hash;

  // Change, write, and put back on failure: what is not durable was not done.
  const auto saved_replies = replies_;
  index(merchant);
  ++next_serial_;
  if (request.parent_id == 0) ++top_level_count_;
  if (!key.empty() && kind != PrincipalKind::provider) {
    store_reply(key, content_hash, render(*merchant, /*with_secret=*/false));
  }
  if (!key.empty() && kind == PrincipalKind::provider) onboarding_.insert(key);
  if (Status saved = save(); !saved.ok()) {
    *failure = std::move(saved);
    by_id_.erase(merchant->id);
    by_key_.erase(merchant->key_id);
    --next_serial_;
    if (request.parent_id == 0) --top_level_count_;
    replies_ = saved_replies;
    onboarding_.erase(key);
    return ResultCode::not_durable;
  }
  if (created_id != nullptr) *created_id = merchant->id;
  return ResultCode::ok;
}

ResultCode MerchantRegistry::set_clearing_accounts(u64 id, std::vector<u64> by_group,
                                                   Currency currency, const IdempotencyKey& key,
                                                   u64 content_hash, const Render& render,
                                                   StoredReply* reply, Status* failure) {
  std::unique_lock lock(mutex_);
  const auto it = by_id_.find(id);
  if (it == by_id_.end() || it->second->kind != PrincipalKind::provider) {
    return ResultCode::merchant_not_found;
  }
  const MerchantRef old = it->second;
  PG_ASSERT(old->group < by_group.size() && by_group[old->group] != 0);
  auto provider = std::make_shared<Merchant>(*old);
  provider->clearing_account = by_group[old->group];
  provider->clearing_by_group = std::move(by_group);
  provider->clearing_currency = currency;
  *reply = render(*provider, /*with_secret=*/true);
  reply->content_hash = content_hash;
  index(provider);
  if (!key.empty()) {
    store_reply(key, content_hash, render(*provider, /*with_secret=*/false));
    onboarding_.erase(key);
  }
  if (Status saved = save(); !saved.ok()) {
    *failure = std::move(saved);
    index(old);
    if (!key.empty()) replies_.erase(key);
    return ResultCode::not_durable;
  }
  return ResultCode::ok;
}

void MerchantRegistry::abandon_onboarding(const IdempotencyKey& key) {
  std::unique_lock lock(mutex_);
  onboarding_.erase(key);
}

MerchantRef MerchantRegistry::default_provider(Currency currency) const {
  std::shared_lock lock(mutex_);
  // Oldest by serial: the region and group above it in an id say nothing of age.
  const auto serial = [](u64 id) { return id_serial(id) & ((u64{1} << kPrincipalKindShift) - 1); };
  MerchantRef oldest;
  for (const auto& [id, principal] : by_id_) {
    if (principal->kind == PrincipalKind::provider && principal->clearing_account != 0 &&
        principal->clearing_currency == currency &&
        (oldest == nullptr || serial(id) < serial(oldest->id))) {
      oldest = principal;
    }
  }
  return oldest;
}

ResultCode MerchantRegistry::rotate_key(u64 id, u64 grace_s, const IdempotencyKey& key,
                                        u64 content_hash, const Render& render, StoredReply* reply,
                                        Status* failure) {
  std::unique_lock lock(mutex_);
  ResultCode code = ResultCode::ok;
  if (replay(key, content_hash, reply, &code)) return code;
  const auto it = by_id_.find(id);
  if (it == by_id_.end()) return ResultCode::merchant_not_found;
  const MerchantRef old = it->second;
  auto rotated = std::make_shared<Merchant>(*old);
  rotated->key_id = "key_" + random_hex(12);
  rotated->secret = "sk_" + random_hex(32);
  rotated->previous_key_id.clear();
  rotated->previous_secret.clear();
  rotated->previous_until_s = 0;
  if (grace_s > 0) {
    rotated->previous_key_id = old->key_id;
    rotated->previous_secret = old->secret;
    rotated->previous_until_s = static_cast<u64>(std::time(nullptr)) + grace_s;
  }
  *reply = render(*rotated, /*with_secret=*/true);
  reply->content_hash = content_hash;

  by_key_.erase(old->key_id);
  if (!old->previous_key_id.empty()) by_key_.erase(old->previous_key_id);
  index(rotated);
  if (!key.empty()) store_reply(key, content_hash, render(*rotated, /*with_secret=*/false));
  if (Status saved = save(); !saved.ok()) {
    *failure = std::move(saved);
    by_key_.erase(rotated->key_id);
    if (!rotated->previous_key_id.empty()) by_key_.erase(rotated->previous_key_id);
    index(old);
    if (!key.empty()) replies_.erase(key);
    return ResultCode::not_durable;
  }
  return ResultCode::ok;
}

ResultCode MerchantRegistry::set_risk(u64 id, const RiskSet& request, RiskRules* rules,
                                      Status* failure) {
  std::unique_lock lock(mutex_);
  const auto it = by_id_.find(id);
  if (it == by_id_.end() || it->second->kind != PrincipalKind::merchant) {
    return ResultCode::merchant_not_found;
  }
  const MerchantRef old = it->second;
  auto changed = std::make_shared<Merchant>(*old);  // readers keep the record they hold
  if (request.has_max_amount) changed->risk.max_amount = request.max_amount;
  if (request.has_payer_velocity) {
    changed->risk.max_checkouts_per_payer_per_minute = request.max_checkouts_per_payer_per_minute;
  }
  if (request.has_blocked_payers) changed->risk.blocked_payers = request.blocked_payers;
  *rules = changed->risk;
  index(changed);
  if (Status saved = save(); !saved.ok()) {
    *failure = std::move(saved);
    index(old);
    return ResultCode::not_durable;
  }
  return ResultCode::ok;
}

Status MerchantRegistry::save() const {
  std::string text;
  JsonWriter json(text);
  json.begin_object().key("version").number(1);
  json.key("next_serial").unsigned_number(next_serial_);
  json.key("top_level").unsigned_number(top_level_count_);
  json.key("merchants").begin_array();
  // In serial order, so the file is stable and diffable.
  std::vector<MerchantRef> merchants;
  for (const auto& [id, merchant] : by_id_)
    merchants.push_back(merchant);
  std::sort(merchants.begin(), merchants.end(),
            [](const MerchantRef& a, const MerchantRef& b) { return a->id < b->id; });
  for (const MerchantRef& m : merchants) {
    json.begin_object();
    json.key("id").unsigned_number(m->id);
    json.key("name").string(m->name);
    json.key("parent_id").unsigned_number(m->parent_id);
    json.key("region").unsigned_number(m->region);
    json.key("group").unsigned_number(m->group);
    json.key("key_id").string(m->key_id);
    json.key("secret").string(m->secret);
    json.key("created_at").unsigned_number(m->created_at_s);
    if (!m->previous_key_id.empty()) {
      json.key("previous_key_id").string(m->previous_key_id);
      json.key("previous_secret").string(m->previous_secret);
      json.key("previous_until").unsigned_number(m->previous_until_s);
    }
    // Merchants, as every file before users and providers, have neither.
    if (m->kind != PrincipalKind::merchant)
      json.key("kind").unsigned_number(static_cast<u8>(m->kind));
    if (m->clearing_account != 0) {
      json.key("clearing_account").unsigned_number(m->clearing_account);
      json.key("clearing_currency").unsigned_number(m->clearing_currency.code);
    }
    if (!m->clearing_by_group.empty()) {
      json.key("clearing_accounts").begin_array();
      for (const u64 account : m->clearing_by_group)
        json.unsigned_number(account);
      json.end_array();
    }
    if (m->risk.any()) {
      json.key("risk").begin_object();
      json.key("max_amount").unsigned_number(m->risk.max_amount);
      json.key("max_checkouts_per_payer_per_minute")
          .unsigned_number(m->risk.max_checkouts_per_payer_per_minute);
      json.key("blocked_payers").begin_array();
      for (const u64 payer : m->risk.blocked_payers)
        json.unsigned_number(payer);
      json.end_array().end_object();
    }
    json.end_object();
  }
  json.end_array();
  json.key("replies").begin_array();
  for (const auto& [key, stored] : replies_) {
    json.begin_object();
    json.key("key_lo").unsigned_number(key.lo);
    json.key("key_hi").unsigned_number(key.hi);
    json.key("hash").unsigned_number(stored.content_hash);
    json.key("status").unsigned_number(stored.status);
    json.key("body").string(stored.body);
    json.end_object();
  }
  json.end_array().end_object();
  text += '\n';
  return write_file_durably(file_, text, 0600);
}

Status MerchantRegistry::load() {
  bool scrubbed = false;
  const Result<std::string> read = read_file(file_);
  if (!read.ok()) {
    // No file yet: no merchants.
    return read.status().code() == StatusCode::not_found ? Status::success() : read.status();
  }
  const std::string* text = &read.value();
  const auto fail = [&](std::string_view what) {
    return Status::corruption(fmt::format("{}: {}", file_.string(), what));
  };
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (parser.parse(*text).get(root) != simdjson::SUCCESS) return fail("not valid JSON");
  u64 version = 0;
  simdjson::dom::array merchants, replies;
  if (root["version"].get_uint64().get(version) || version != 1 ||
      root["next_serial"].get_uint64().get(next_serial_) ||
      root["top_level"].get_uint64().get(top_level_count_) ||
      root["merchants"].get_array().get(merchants) || root["replies"].get_array().get(replies)) {
    return fail("missing or malformed header fields");
  }
  for (const auto entry : merchants) {
    auto m = std::make_shared<Merchant>();
    std::string_view name, key_id, secret;
    u64 region = 0, group = 0;
    if (entry["id"].get_uint64().get(m->id) || entry["name"].get_string().get(name) ||
        entry["parent_id"].get_uint64().get(m->parent_id) ||
        entry["region"].get_uint64().get(region) || entry["group"].get_uint64().get(group) ||
        entry["key_id"].get_string().get(key_id) || entry["secret"].get_string().get(secret) ||
        entry["created_at"].get_uint64().get(m->created_at_s)) {
      return fail("a merchant entry is malformed");
    }
    if (group >= groups_) {
      return Status::invalid_config(
          fmt::format("{}: merchant {} is in group {}, but only {} groups are configured",
                      file_.string(), id_text(IdKind::merchant, m->id), group, groups_));
    }
    u64 kind = 0, clearing_currency = 0;
    if (entry["kind"].get_uint64().get(kind) == simdjson::SUCCESS) {
      m->kind = static_cast<PrincipalKind>(kind);
    }
    if (kind > static_cast<u8>(PrincipalKind::provider) || principal_kind(m->id) != m->kind) {
      return fail("a principal's kind does not match its id");
    }
    if (entry["clearing_account"].get_uint64().get(m->clearing_account) == simdjson::SUCCESS &&
        (m->kind != PrincipalKind::provider ||
         entry["clearing_currency"].get_uint64().get(clearing_currency) ||
         !Currency{static_cast<u32>(clearing_currency)}.valid())) {
      return fail("a provider's clearing currency is malformed");
    }
    m->clearing_currency = Currency{static_cast<u32>(clearing_currency)};
    // One per group since per-group clearing accounts; files before have only the one.
    if (simdjson::dom::array accounts;
        entry["clearing_accounts"].get_array().get(accounts) == simdjson::SUCCESS) {
      for (const auto account : accounts) {
        u64 id = 0;
        // The account of group g, made in this region, at index g.
        if (account.get_uint64().get(id) || id == 0 ||
            id_prefix(id).group != m->clearing_by_group.size() || id_prefix(id).region != region) {
          return fail("a provider's clearing accounts are malformed");
        }
        m->clearing_by_group.push_back(id);
      }
      if (group >= m->clearing_by_group.size() ||
          m->clearing_by_group[group] != m->clearing_account) {
        return fail("a provider's clearing accounts do not include its clearing account");
      }
    }
    if (simdjson::dom::element risk_field; entry["risk"].get(risk_field) == simdjson::SUCCESS) {
      simdjson::dom::object risk;
      if (risk_field.get_object().get(risk)) return fail("a merchant's risk rules are malformed");
      u64 velocity = 0;
      simdjson::dom::array blocked;
      if (risk["max_amount"].get_uint64().get(m->risk.max_amount) ||
          risk["max_checkouts_per_payer_per_minute"].get_uint64().get(velocity) ||
          velocity > ~u32{0} || risk["blocked_payers"].get_array().get(blocked)) {
        return fail("a merchant's risk rules are malformed");
      }
      m->risk.max_checkouts_per_payer_per_minute = static_cast<u32>(velocity);
      for (const auto payer : blocked) {
        u64 id = 0;
        if (payer.get_uint64().get(id)) return fail("a merchant's blocked payer is malformed");
        m->risk.blocked_payers.push_back(id);
      }
      std::sort(m->risk.blocked_payers.begin(), m->risk.blocked_payers.end());
      if (m->risk.max_amount > kAmountMax || velocity > 1'000'000 ||
          m->risk.blocked_payers.size() > kBlockedPayersMax) {
        return fail("a merchant's risk rules are out of range");
      }
    }
    if (std::string_view previous_key, previous_secret;
        entry["previous_key_id"].get_string().get(previous_key) == simdjson::SUCCESS) {
      if (entry["previous_secret"].get_string().get(previous_secret) ||
          entry["previous_until"].get_uint64().get(m->previous_until_s)) {
        return fail("a merchant's previous key is malformed");
      }
      // Kept only while it works: one past its grace is dropped.
      if (m->previous_until_s > static_cast<u64>(std::time(nullptr))) {
        m->previous_key_id = previous_key;
        m->previous_secret = previous_secret;
      } else {
        m->previous_until_s = 0;
      }
    }
    m->name = name;
    m->key_id = key_id;
    m->secret = secret;
    m->region = static_cast<u32>(region);
    m->group = static_cast<u32>(group);
    index(std::move(m));
  }
  for (const auto entry : replies) {
    IdempotencyKey key;
    StoredReply stored;
    u64 status = 0;
    std::string_view body;
    if (entry["key_lo"].get_uint64().get(key.lo) || entry["key_hi"].get_uint64().get(key.hi) ||
        entry["hash"].get_uint64().get(stored.content_hash) ||
        entry["status"].get_uint64().get(status) || entry["body"].get_string().get(body)) {
      return fail("a stored reply is malformed");
    }
    stored.status = static_cast<u16>(status);
    stored.body = body;
    scrubbed = redact_secret(stored.body) || scrubbed;  // older files kept secrets there
    replies_[key] = std::move(stored);
  }
  // A secret found in a stored reply leaves the file now, not at the next change.
  if (scrubbed) return save();
  return Status::success();
}

}  // namespace paygate::api
