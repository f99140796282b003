#include "api/service.h"

#include <fmt/format.h>
#include <boost/beast/core/string.hpp>

#include <charconv>
#include <chrono>
#include <cstring>

#include "api/http_status.h"
#include "api/id_text.h"
#include "api/json_writer.h"
#include "api/render.h"
#include "base/hash.h"
#include "base/log.h"

namespace paygate::api {
namespace {

constexpr u32 kNoHold = ~u32{0};  // a batch operation that names no hold (op_hold_)

// Whether a Prefer header (RFC 7240) asks for return=minimal: one of its
// comma-separated preferences, parameters after ';' aside, is the token `return`
// (any case) with the value `minimal`, spaces allowed around '='. A substring search
// took "return=minimalist" and missed "Return = minimal".
bool prefers_return_minimal(std::string_view prefer) {
  const auto trim = [](std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
      s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
      s.remove_suffix(1);
    return s;
  };
  const auto same = [](std::string_view a, std::string_view b) {
    return boost::beast::iequals({a.data(), a.size()}, {b.data(), b.size()});
  };
  while (!prefer.empty()) {
    const std::size_t comma = prefer.find(',');
    std::string_view preference = prefer.substr(0, comma);
    prefer = comma == std::string_view::npos ? std::string_view{} : prefer.substr(comma + 1);
    preference = preference.substr(0, preference.find(';'));
    const std::size_t equals = preference.find('=');
    if (equals == std::string_view::npos) continue;
    std::string_view value = trim(preference.substr(equals + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
      value = value.substr(1, value.size() - 2);
    }
    if (same(trim(preference.substr(0, equals)), "return") && same(value, "minimal")) return true;
  }
  return false;
}

// One decoder per IO thread, reused for every request it parses.
RequestDecoder& decoder() {
  thread_local RequestDecoder instance;
  return instance;
}

u64 wall_seconds() {
  return static_cast<u64>(std::chrono::duration_cast<std::chrono::seconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count());
}

// Splits "/v1/accounts/acc_…/entries?x=y" into path segments after "/v1".
struct Path {
  std::string_view parts[4];
  std::size_t count = 0;
  bool v1 = false;
};

Path split_path(std::string_view target) {
  Path path;
  target = target.substr(0, target.find('?'));
  if (target.substr(0, 4) != "/v1/") return path;
  path.v1 = true;
  target.remove_prefix(4);
  while (!target.empty() && path.count < std::size(path.parts)) {
    const std::size_t slash = target.find('/');
    path.parts[path.count++] = target.substr(0, slash);
    if (slash == std::string_view::npos) return path;
    target.remove_prefix(slash + 1);
  }
  if (!target.empty()) path.count = std::size(path.parts) + 1;  // too deep: no route
  return path;
}

bool valid_idempotency_key(std::string_view key) {
  if (key.empty() || key.size() > 255) return false;
  for (const char c : key) {
    if (c < 0x21 || c > 0x7E) return false;  // visible ASCII only
  }
  return true;
}

}  // namespace

Service::Service(MerchantRegistry& merchants, Authenticator& auth, OwnerIndex& owners,
                 ServiceConfig config)
    : merchants_(merchants),
      auth_(auth),
      owners_(owners),
      config_(std::move(config)),
      metrics_(std::make_unique<HttpMetrics>()) {}

void Service::index_owners(Engine& engine, OwnerIndex& owners) {
  for (u32 g = 0; g < engine.groups(); ++g) {
    const Ledger& ledger = engine.group(g).ledger();
    for (u64 serial = 1; serial <= ledger.account_count(); ++serial) {
      const Account* account =
          ledger.find_account(AccountId{make_id(ledger.config().prefix, serial)});
      PG_ASSERT(account != nullptr);
      owners.set(account->id.value, account->owner.value);
    }
  }
}

u64 Service::now_ns() const noexcept {
  return static_cast<u64>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                              std::chrono::steady_clock::now().time_since_epoch())
                              .count());
}

void Service::render_metrics_page(std::string& out) const {
  render_metrics(MetricsSources{.engine = engine_.load(std::memory_order_acquire),
                                .http = metrics_.get(),
                                .replay_refusals = auth_.replay_cache_refusals(),
                                .replay_entries = auth_.replay_cache_size(),
                                .merchants = merchants_.size(),
                                .binary_frames = binary_frames_.load(std::memory_order_relaxed),
                                .ready = ready()},
                 out);
}

bool Service::finish(Exchange& ex, unsigned status) {
  ex.reply.status = status;
  metrics_->record(ex.route_, status, now_ns() - ex.started_ns_);
  return true;
}

bool Service::fail(Exchange& ex, ResultCode code, std::string_view message) {
  ex.reply.body.clear();
  ex.reply.text = false;
  ex.reply.minimal = false;
  if (code == ResultCode::idempotency_capacity && ex.group_ != nullptr) {
    ex.reply.retry_after_s = key_room_in_s(*ex.group_);
  }
  render_error(ex.reply.body, code, message);
  return finish(ex, http_status(code));
}

// Until a full key table of `group` has room again: when its oldest key leaves the
// window (whole seconds, at least 1).
u32 Service::key_room_in_s(const Group& group) const {
  const u64 room_at = std::max(group.stats().idempotency_room_at_ns.load(std::memory_order_relaxed),
                               group.stats().signature_room_at_ns.load(std::memory_order_relaxed));
  const u64 now = static_cast<u64>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                       std::chrono::system_clock::now().time_since_epoch())
                                       .count());
  if (room_at <= now) return 1;
  return static_cast<u32>(std::min<u64>((room_at - now + kNanosPerSecond - 1) / kNanosPerSecond,
                                        ~u32{0}));
}

bool Service::fail_problem(Exchange& ex, const Problem& problem) {
  return fail(ex, problem.code, problem.message);
}

// Hands a request to its group. True when answered at once (refused).
//
// The first request that runs commands also takes the request's key, so that one key
// names one request whatever endpoint or group it reaches (docs/API.md, idempotency).
// The key lives in its home group (key_home): a single command that runs there
// carries the key itself (as does an atomic batch, under its batch key); anything else
// takes it with a claim (Command::make_claim) over the whole request's fingerprint —
// opening the request when it runs in the home group, or as a step of its own before
// it otherwise, after which the commands carry a key derived from it (move_key).
bool Service::submit(Exchange& ex, const Request& request, bool last_step) {
  const bool runs_commands =
      request.kind == RequestKind::commands || request.kind == RequestKind::atomic;
  if (ex.key_.empty() || ex.key_taken_ || !runs_commands) {
    return submit_to_group(ex, request, last_step);
  }
  ex.key_taken_ = true;
  Group& home = key_home(ex);
  if (&home == ex.group_ && carries_key(ex, request)) return submit_to_group(ex, request, last_step);
  ex.claim_ = Command::make_claim(ex.key_, request_fingerprint(ex), 0, ex.key_lane_);
  if (&home == ex.group_ && request.kind == RequestKind::commands && request.count < kBatchMax) {
    ex.claim_.claim.covers = request.count;
    Request claimed = request;
    claimed.claim = &ex.claim_;
    claimed.claim_result = &ex.claim_result_;
    ex.claim_step_ = Exchange::ClaimStep::prepended;
    return submit_to_group(ex, claimed, last_step);
  }
  ex.stashed_ = request;
  ex.stashed_group_ = ex.group_;
  ex.stashed_last_step_ = last_step;
  ex.claim_step_ = Exchange::ClaimStep::separate;
  ex.group_ = &home;
  return submit_to_group(ex,
                         Request{.kind = RequestKind::commands,
                                 .count = 1,
                                 .commands = &ex.claim_,
                                 .results = &ex.claim_result_,
                                 .completion = &ex},
                         /*last_step=*/false);
}

// The group that keeps a request's key: a merchant's own (its accounts, and its
// sub-merchants', are all there), or for an operator one the key itself picks.
Group& Service::key_home(const Exchange& ex) const {
  const u32 groups = engine().groups();
  if (ex.principal_.merchant != nullptr && ex.principal_.merchant->group < groups) {
    return engine().group(ex.principal_.merchant->group);
  }
  return engine().group(static_cast<u32>(mix64(ex.key_.lo ^ ex.key_.hi) % groups));
}

// Whether the request takes its key itself: one command keyed with it, or an atomic
// batch under it.
bool Service::carries_key(const Exchange& ex, const Request& request) {
  if (request.kind == RequestKind::atomic) {
    return ex.key_lane_ == KeyLane::client && request.batch_key == ex.key_;
  }
  return request.count == 1 && request.commands[0].key == ex.key_ &&
         request.commands[0].key_lane == ex.key_lane_;
}

// What the request is, for its claim: its route and every command it will run (keys
// aside), so that a retry matches and any other request does not.
u64 Service::request_fingerprint(const Exchange& ex) const {
  Hasher hasher(static_cast<u64>(ex.route_) + 1);
  if (ex.route_ == Route::batch) {
    const BatchRequest& b = ex.batch_;
    hasher.add(b.atomic ? 1 : 0).add(b.count);
    for (u32 i = 0; i < b.count; ++i)
      hasher.add(content_hash(batch_command(ex, i)));
  } else {
    for (const Command& command : ex.commands_)
      hasher.add(content_hash(command));
  }
  return hasher.value();
}

// After a separate claim took the key, the waiting request's commands carry a key
// derived from it (a client's retry then finds them answered), or none for a
// signature (the claim refuses any replay whole).
void Service::move_key(Exchange& ex) {
  IdempotencyKey moved{};
  if (ex.key_lane_ == KeyLane::client) {
    moved = IdempotencyKey{mix64(ex.key_.lo ^ 0x4D4F564544ull), mix64(ex.key_.hi + 1)};
    if (moved.empty()) moved.lo = 1;
  }
  if (ex.stashed_.kind == RequestKind::atomic && ex.stashed_.batch_key == ex.key_) {
    ex.stashed_.batch_key = moved;
  }
  for (Command& command : ex.commands_) {
    if (command.key == ex.key_ && command.key_lane == ex.key_lane_) {
      command.with_key(moved, KeyLane::client);
    }
  }
}

// The claim did not hold: nothing of the request ran.
bool Service::fail_claim(Exchange& ex, ResultCode code) {
  switch (code) {
    case ResultCode::signature_replayed:
    case ResultCode::idempotency_key_reused:
    case ResultCode::idempotency_capacity:
      return fail(ex, code, describe(code));
    default:
      return fail(ex, ResultCode::not_durable, "the request's key could not be taken; retry");
  }
}

bool Service::submit_to_group(Exchange& ex, const Request& request, bool last_step) {
  ex.last_step_ = last_step;
  const ResultCode code = ex.group_->submit(request);
  if (code == ResultCode::ok) return false;
  return fail(ex, code,
              code == ResultCode::overloaded ? "the group is overloaded; retry shortly"
                                             : "the request could not be taken");
}

// Submits ex.commands_[0], whose result lands in ex.results_[0].
bool Service::submit_one(Exchange& ex, bool last_step) {
  return submit(ex,
                Request{.kind = RequestKind::commands,
                        .count = 1,
                        .commands = ex.commands_.data(),
                        .results = ex.results_.data(),
                        .completion = &ex},
                last_step);
}

bool Service::begin(const HttpRequestView& request, Exchange& ex) {
  ex.view_ = request;
  ex.step_ = 0;
  ex.last_step_ = true;
  ex.started_ns_ = now_ns();
  ex.route_ = Route::unknown;
  ex.reply.body.clear();
  ex.reply.text = false;
  ex.reply.retry_after_s = 0;
  ex.reply.minimal = false;
  ex.principal_ = Principal{};
  ex.key_ = IdempotencyKey{};
  ex.key_lane_ = KeyLane::client;
  ex.key_taken_ = false;
  ex.claim_step_ = Exchange::ClaimStep::none;
  ex.group_ = nullptr;
  ex.batch_running_ = false;
  return dispatch(ex);
}

bool Service::dispatch(Exchange& ex) {
  const std::string_view method = ex.view_.method;
  const std::string_view target = ex.view_.target;
  const std::string_view path = target.substr(0, target.find('?'));
  const bool get = method == "GET";
  const bool post = method == "POST";

  if (path == "/healthz" || path == "/readyz" || path == "/metrics") {
    ex.route_ = path == "/healthz"  ? Route::healthz
                : path == "/readyz" ? Route::readyz
                                    : Route::metrics;
    if (!get) return fail(ex, ResultCode::method_not_allowed, "use GET");
    if (ex.route_ == Route::readyz && !ready()) {
      return fail(ex, ResultCode::not_ready, "recovery has not finished");
    }
    if (ex.route_ == Route::metrics) {
      ex.reply.text = true;
      render_metrics_page(ex.reply.body);
    } else {
      ex.reply.body = ex.route_ == Route::healthz ? R"({"status":"ok"})" : R"({"status":"ready"})";
    }
    return finish(ex, 200);
  }

  // Routing: which resource, and is the method one it has.
  const Path p = split_path(target);
  bool method_ok = false;
  if (p.v1 && p.count >= 1) {
    const std::string_view r = p.parts[0];
    const std::size_t n = p.count;
    if (r == "merchants" && n == 1) {
      ex.route_ = Route::merchants_create, method_ok = post;
    } else if (r == "merchants" && n == 2) {
      ex.route_ = Route::merchants_get, method_ok = get;
    } else if (r == "merchants" && n == 3 && p.parts[2] == "keys") {
      ex.route_ = Route::merchants_keys, method_ok = post;
    } else if (r == "accounts" && n == 1) {
      ex.route_ = Route::accounts_create, method_ok = post;
    } else if (r == "accounts" && n == 2) {
      ex.route_ = Route::accounts_get, method_ok = get;
    } else if (r == "accounts" && n == 3 && p.parts[2] == "entries") {
      ex.route_ = Route::accounts_entries, method_ok = get;
    } else if (r == "transfers" && n == 1) {
      ex.route_ = Route::transfers_create, method_ok = post;
    } else if (r == "transfers" && n == 2) {
      ex.route_ = Route::transfers_get, method_ok = get;
    } else if (r == "transfers" && n == 3 && (p.parts[2] == "post" || p.parts[2] == "void")) {
      ex.route_ = p.parts[2] == "post" ? Route::transfers_post : Route::transfers_void;
      method_ok = post;
    } else if (r == "batch" && n == 1) {
      ex.route_ = Route::batch, method_ok = post;
    } else if (r == "events" && n == 1) {
      ex.route_ = Route::events, method_ok = get;
    }
  }
  if (ex.route_ == Route::unknown) return fail(ex, ResultCode::not_found, "no such route");
  if (!method_ok) return fail(ex, ResultCode::method_not_allowed, "method not allowed here");
  if (draining_.load(std::memory_order_acquire)) {
    return fail(ex, ResultCode::shutting_down, "the server is stopping; retry elsewhere or later");
  }
  if (!ready()) return fail(ex, ResultCode::not_ready, "recovery has not finished");

  // Who is calling.
  // Reads are not replay-checked (a poll may repeat a signature); POSTs are.
  const Problem auth = auth_.authenticate(Credentials{.method = ex.view_.method,
                                                      .target = ex.view_.target,
                                                      .body = ex.view_.body,
                                                      .authorization = ex.view_.authorization,
                                                      .key_id = ex.view_.key_id,
                                                      .timestamp = ex.view_.timestamp,
                                                      .signature = ex.view_.signature,
                                                      .check_replay = !get},
                                          wall_seconds(), &ex.principal_);
  if (!auth.ok()) {
    metrics_->auth_failures.fetch_add(1, std::memory_order_relaxed);
    if (auth.code == ResultCode::replay_cache_full) {
      ex.reply.retry_after_s = std::max<u32>(1, auth_.replay_cache_room_in_s(wall_seconds()));
    }
    return fail_problem(ex, auth);
  }
  if (ex.principal_.merchant != nullptr &&
      !ex.principal_.merchant->bucket->take(now_ns(), config_.rate_per_s, config_.rate_burst,
                                            &ex.reply.retry_after_s)) {
    metrics_->rate_limited.fetch_add(1, std::memory_order_relaxed);
    return fail(ex, ResultCode::rate_limited, "rate limit reached; see Retry-After");
  }

  if (post) {
    if (!ex.view_.body.empty() && ex.view_.content_type.substr(0, 16) != "application/json") {
      return fail(ex, ResultCode::unsupported_media_type, "send Content-Type: application/json");
    }
    if (!ex.view_.idempotency_key.empty()) {
      if (!valid_idempotency_key(ex.view_.idempotency_key)) {
        return fail(ex, ResultCode::invalid_idempotency_key,
                    "Idempotency-Key must be 1 to 255 visible ASCII characters");
      }
      ex.key_ = derive_key(ex);
    } else if (ex.principal_.signed_request) {
      // No key: the signature itself is kept by the ledger, so that a captured request
      // replayed after a restart (when the replay cache is empty) moves nothing.
      ex.key_ = derive_signature_key(ex);
      ex.key_lane_ = KeyLane::signature;
    }
  }

  if (p.count >= 2) {
    const IdKind kind = p.parts[0] == "merchants"  ? IdKind::merchant
                        : p.parts[0] == "accounts" ? IdKind::account
                                                   : IdKind::transfer;
    const auto id = parse_id(kind, p.parts[1]);
    // A malformed id names nothing: the same answer as an unknown one.
    const ResultCode unknown = kind == IdKind::merchant  ? ResultCode::merchant_not_found
                               : kind == IdKind::account ? ResultCode::account_not_found
                                                         : ResultCode::transfer_not_found;
    if (!id) return fail(ex, unknown, "no such id");
    ex.path_id_ = *id;
    if (kind != IdKind::merchant) {
      ex.group_ = engine().route(*id);
      if (ex.group_ == nullptr) return fail(ex, unknown, "no such id");
    }
  }
  return step(ex);
}

bool Service::resume(Exchange& ex) {
  if (ex.outcome_.status != ResultCode::ok) {
    return fail(ex, ex.outcome_.status,
                ex.outcome_.status == ResultCode::not_durable
                    ? "the journal could not make this durable; its outcome is unknown, retry "
                      "with the same Idempotency-Key"
                    : "the server is stopping; retry with the same Idempotency-Key");
  }
  if (ex.claim_step_ != Exchange::ClaimStep::none) {
    const bool separate = ex.claim_step_ == Exchange::ClaimStep::separate;
    ex.claim_step_ = Exchange::ClaimStep::none;
    if (!ex.claim_result_.ok()) return fail_claim(ex, ex.claim_result_.code);
    if (separate) {  // the key is taken: now the request itself, where it runs
      move_key(ex);
      ex.group_ = ex.stashed_group_;
      return submit_to_group(ex, ex.stashed_, ex.stashed_last_step_);
    }
  }
  ++ex.step_;
  return step(ex);
}

bool Service::step(Exchange& ex) {
  switch (ex.route_) {
    case Route::merchants_create:
      return create_merchant(ex);
    case Route::merchants_get:
      return get_merchant(ex);
    case Route::merchants_keys:
      return rotate_key(ex);
    case Route::accounts_create:
      return create_account(ex);
    case Route::accounts_get:
      return get_account(ex);
    case Route::transfers_create:
      return create_transfer(ex);
    case Route::transfers_get:
      return get_transfer(ex);
    case Route::transfers_post:
    case Route::transfers_void:
      return pending_action(ex);
    case Route::batch:
      return batch(ex);
    case Route::accounts_entries:
      return read_entries(ex);
    case Route::events:
      return read_events(ex);
    default:
      return fail(ex, ResultCode::not_found, "no such route");
  }
}

IdempotencyKey Service::derive_key(const Exchange& ex) const {
  // Keyed, so that clients cannot aim keys at one slot of the ledger's table;
  // scoped by caller, so that two merchants' keys never meet.
  const u64 scope = ex.principal_.merchant ? ex.principal_.merchant->id : 0;
  char scope_bytes[8];
  std::memcpy(scope_bytes, &scope, sizeof scope);
  const Digest digest = hmac_sha256(config_.idempotency_secret,
                                    {std::string_view(scope_bytes, 8), ex.view_.idempotency_key});
  IdempotencyKey key;
  std::memcpy(&key.lo, digest.data(), 8);
  std::memcpy(&key.hi, digest.data() + 8, 8);
  if (key.empty()) key.lo = 1;
  return key;
}

// A signed request's own key: its signature, scoped by the merchant and keyed like
// derive_key (the signature is already a MAC, but a client must not aim it at one
// slot of the ledger's table either).
IdempotencyKey Service::derive_signature_key(const Exchange& ex) const {
  const u64 scope = ex.principal_.merchant ? ex.principal_.merchant->id : 0;
  char scope_bytes[9] = {'s'};
  std::memcpy(scope_bytes + 1, &scope, sizeof scope);
  const Digest& signature = ex.principal_.signature;
  const Digest digest = hmac_sha256(
      config_.idempotency_secret,
      {std::string_view(scope_bytes, sizeof scope_bytes),
       std::string_view(reinterpret_cast<const char*>(signature.data()), signature.size())});
  IdempotencyKey key;
  std::memcpy(&key.lo, digest.data(), 8);
  std::memcpy(&key.hi, digest.data() + 8, 8);
  if (key.empty()) key.lo = 1;
  return key;
}

bool Service::visible_account(const Exchange& ex, u64 account_id) const {
  // Operators see every account, the ledger's clearing accounts too (which the owner
  // index does not list); the group's lookup then says whether it exists.
  if (ex.principal_.is_operator) return true;
  const auto owner = owners_.owner(account_id);
  return owner && visible_owner(ex, *owner);
}

// Operators see every account; a merchant its own and its sub-merchants' (an
// account without an owner is an operator's).
bool Service::visible_owner(const Exchange& ex, u64 owner) const {
  if (ex.principal_.is_operator) return true;
  return owner != 0 && merchants_.can_see(ex.principal_.merchant->id, owner);
}

// Both accounts are the caller's to move (unknown ones are not), and in one group.
ResultCode Service::check_transfer_accounts(const Exchange& ex, const TransferCreate& t) const {
  // An id of another region or of a group beyond ours names nothing here.
  Group* debit_group = engine().route(t.debit_account_id);
  Group* credit_group = engine().route(t.credit_account_id);
  if (debit_group == nullptr || !visible_account(ex, t.debit_account_id)) {
    return ResultCode::debit_account_not_found;
  }
  if (credit_group == nullptr || !visible_account(ex, t.credit_account_id)) {
    return ResultCode::credit_account_not_found;
  }
  if (debit_group != credit_group) {
    return ResultCode::cross_group_transfer;
  }
  return ResultCode::ok;
}

// The ledger command for a transfer request (immediate or hold), with the
// fingerprint of what the ledger does not keep.
Command Service::transfer_command(const TransferCreate& t) {
  const AccountId debit{t.debit_account_id}, credit{t.credit_account_id};
  Command command = t.pending ? Command::make_hold(debit, credit, t.amount, t.currency, t.timeout_s)
                              : Command::make_transfer(debit, credit, t.amount, t.currency);
  command.with_extra_hash(t.extra_hash);
  return command;  // by name, so it is built where the caller wants it
}

// Who may act on a hold the caller can see (docs/API.md, security model): posting
// captures the debit account's money, so only its owner's side (or an operator) posts;
// either side may void, which only gives the money back.
ResultCode Service::may_act_on_hold(const Exchange& ex, const Transfer& hold, bool post) const {
  if (!visible_transfer(ex, hold)) return ResultCode::transfer_not_found;
  if (post && !visible_account(ex, hold.debit_account_id.value)) {
    return ResultCode::post_not_allowed;
  }
  return ResultCode::ok;
}

bool Service::visible_transfer(const Exchange& ex, const Transfer& transfer) const {
  return visible_account(ex, transfer.debit_account_id.value) ||
         visible_account(ex, transfer.credit_account_id.value);
}

// ---- merchants (operators) ----

bool Service::create_merchant(Exchange& ex) {
  if (!ex.principal_.is_operator) return fail(ex, ResultCode::operator_only, "operators only");
  MerchantCreate request;
  const Problem problem = decoder().merchant_create(ex.view_.body, &request);
  if (!problem.ok()) return fail_problem(ex, problem);
  StoredReply reply;
  std::string error;
  const u64 content = Hasher{}.add_bytes(ex.view_.body).add(1).value();
  const ResultCode code = merchants_.create(
      request, ex.key_, content,
      [](const Merchant& m) {
        StoredReply r{.content_hash = 0, .status = 201, .body = {}};
        render_merchant(r.body, m, true);
        return r;
      },
      &reply, &error);
  if (code == ResultCode::invalid_field) return fail(ex, code, "region is not this deployment's");
  if (code != ResultCode::ok) return fail(ex, code, error.empty() ? name(code) : error);
  ex.reply.body = reply.body;
  return finish(ex, reply.status);
}

bool Service::get_merchant(Exchange& ex) {
  const MerchantRef merchant = merchants_.find(ex.path_id_);
  if (merchant == nullptr || (!ex.principal_.is_operator &&
                              !merchants_.can_see(ex.principal_.merchant->id, merchant->id))) {
    return fail(ex, ResultCode::merchant_not_found, "no such merchant");
  }
  render_merchant(ex.reply.body, *merchant, false);
  return finish(ex, 200);
}

bool Service::rotate_key(Exchange& ex) {
  if (!ex.principal_.is_operator) return fail(ex, ResultCode::operator_only, "operators only");
  const Problem problem = decoder().void_pending(ex.view_.body);  // {} or nothing
  if (!problem.ok()) return fail_problem(ex, problem);
  StoredReply reply;
  std::string error;
  const u64 content = Hasher{}.add(ex.path_id_).add(2).value();
  const ResultCode code = merchants_.rotate_key(
      ex.path_id_, ex.key_, content,
      [](const Merchant& m) {
        StoredReply r{.content_hash = 0, .status = 201, .body = {}};
        render_merchant(r.body, m, true);
        return r;
      },
      &reply, &error);
  if (code != ResultCode::ok) return fail(ex, code, error.empty() ? name(code) : error);
  ex.reply.body = reply.body;
  return finish(ex, reply.status);
}

// ---- accounts ----

bool Service::create_account(Exchange& ex) {
  AccountCreate& r = ex.account_create_;
  if (ex.step_ == 0) {
    const Problem problem = decoder().account_create(ex.view_.body, &r);
    if (!problem.ok()) return fail_problem(ex, problem);
    const bool is_operator = ex.principal_.is_operator;
    if (!is_operator && (r.kind == AccountKind::system || r.allow_negative || r.has_group)) {
      return fail(ex, ResultCode::operator_only,
                  "only operators open system or allow_negative accounts or choose a group");
    }
    u32 group = r.has_group ? r.group : 0;
    if (r.owner_id == 0 && !is_operator) r.owner_id = ex.principal_.merchant->id;
    if (r.owner_id != 0) {
      const MerchantRef owner = merchants_.find(r.owner_id);
      if (owner == nullptr ||
          (!is_operator && !merchants_.can_see(ex.principal_.merchant->id, owner->id))) {
        return fail(ex, ResultCode::merchant_not_found, "no such merchant");
      }
      if (r.has_group && r.group != owner->group) {
        return fail(ex, ResultCode::invalid_field, "an owned account lives in its owner's group");
      }
      group = owner->group;
    }
    if (group >= engine().groups()) {
      return fail(ex, ResultCode::invalid_field, "group is beyond the configured groups");
    }
    ex.group_ = &engine().group(group);
    ex.commands_.resize(1);
    ex.results_.resize(1);
    ex.commands_[0] = Command::make_create_account(MerchantId{r.owner_id}, r.currency, r.kind,
                                                   r.allow_negative ? kAccountAllowNegative : 0)
                          .with_key(ex.key_, ex.key_lane_);
    return submit_one(ex);
  }
  const CommandResult result = ex.results_[0];
  if (!result.ok()) return fail(ex, result.code, describe(result.code));
  owners_.set(result.id, r.owner_id);
  render_new_account(ex.reply.body, result.id, r, r.owner_id);
  return finish(ex, 201);
}

bool Service::get_account(Exchange& ex) {
  if (ex.step_ == 0) {
    if (!visible_account(ex, ex.path_id_)) {
      return fail(ex, ResultCode::account_not_found, "no such account");
    }
    Request request{.kind = RequestKind::lookup_account, .lookup_id = ex.path_id_};
    request.account_out = &ex.account_;
    request.completion = &ex;
    return submit(ex, request);
  }
  if (!ex.outcome_.found) return fail(ex, ResultCode::account_not_found, "no such account");
  render_account(ex.reply.body, ex.account_);
  return finish(ex, 200);
}

// ---- transfers ----

bool Service::create_transfer(Exchange& ex) {
  TransferCreate& r = ex.transfer_;
  if (ex.step_ == 0) {
    const Problem problem = decoder().transfer_create(ex.view_.body, &r);
    if (!problem.ok()) return fail_problem(ex, problem);
    const ResultCode refused = check_transfer_accounts(ex, r);
    const bool between_groups = refused == ResultCode::cross_group_transfer;
    if (refused != ResultCode::ok && !between_groups) return fail(ex, refused, describe(refused));
    ex.between_groups_ = between_groups;
    ex.commands_.resize(1);
    ex.results_.resize(1);
    if (between_groups && r.pending) {
      // A two-phase hold between groups stays in the debit account's group until it
      // is posted; the credit account is checked now, so that a hold is not made for
      // an account that could never take it.
      ex.group_ = engine().route(r.credit_account_id);
      Request request{.kind = RequestKind::lookup_account, .lookup_id = r.credit_account_id};
      request.account_out = &ex.account_;
      request.completion = &ex;
      return submit(ex, request, /*last_step=*/false);
    }
    return submit_transfer(ex, /*last_step=*/!between_groups);
  }
  if (ex.between_groups_) return transfer_between_groups(ex);
  const CommandResult result = ex.results_[0];
  if (!result.ok()) return fail(ex, result.code, describe(result.code));
  render_new_transfer(ex.reply.body, result.id, r);
  return finish(ex, 201);
}

// The ledger command of a transfer request, in the debit account's group.
bool Service::submit_transfer(Exchange& ex, bool last_step) {
  const TransferCreate& r = ex.transfer_;
  ex.group_ = engine().route(r.debit_account_id);
  Command command = transfer_command(r).with_key(ex.key_, ex.key_lane_);
  if (ex.between_groups_) command.flags |= kTransferBetweenGroups;
  ex.commands_[0] = command;
  return submit_one(ex, last_step);
}

// A transfer between groups after its first step. Immediate: the hold is made and
// numbered (step 1), and carry_request takes it on. Two-phase: the credit
// account was looked up (step 1), then the hold made (step 2), to be carried on when
// it is posted (pending_action).
bool Service::transfer_between_groups(Exchange& ex) {
  const TransferCreate& r = ex.transfer_;
  if (r.pending) {
    if (ex.step_ == 1) {
      const Account& credit = ex.account_;
      if (!ex.outcome_.found || (credit.flags & kAccountClearing) != 0) {
        return fail(ex, ResultCode::credit_account_not_found,
                    describe(ResultCode::credit_account_not_found));
      }
      if (credit.currency != r.currency) {
        return fail(ex, ResultCode::currency_mismatch, describe(ResultCode::currency_mismatch));
      }
      return submit_transfer(ex, /*last_step=*/true);
    }
    const CommandResult result = ex.results_[0];
    if (!result.ok()) return fail(ex, result.code, describe(result.code));
    render_new_transfer(ex.reply.body, result.id, r, /*between_groups=*/true);
    return finish(ex, 201);
  }
  const std::optional<bool> answered =
      carry_request(ex, ex.step_ - 1, r.credit_account_id, r.amount, r.currency);
  if (answered) return *answered;
  render_new_transfer(ex.reply.body, ex.between_.id, r, /*between_groups=*/true);
  return finish(ex, 201);
}

// Steps 2 and 3 of a transfer between groups (docs/LEDGER.md), once the command that
// numbered its hold on the channel (an immediate transfer, or the post of a two-phase
// one) has answered ok in ex.results_[0]: stage 0 sends the credit to the other
// group, stage 1 the settlement back; settled_code() then reads the outcome. A retry
// with the same Idempotency-Key gets the same numbered hold from the ledger and
// carries the same steps again; repeating them changes nothing. If a step cannot be
// taken (the server stops, a group is overloaded), the engine's finisher or the next
// start finishes it (pipeline/between_groups.h).
bool Service::carry_between_groups(Exchange& ex, u32 stage, u64 credit_account, u64 amount,
                                   Currency currency, bool last_step) {
  const CommandResult result = ex.results_[0];
  if (stage == 0) {  // the hold is numbered, durably
    // Only a command that numbers a hold leads here: an immediate transfer between
    // groups, or the post of a two-phase one. (A two-phase hold just made is not
    // numbered, and a credit carried for it would be money from nowhere.)
    PG_ASSERT(result.ok() && (ex.commands_[0].kind == CommandKind::post_pending ||
                              (ex.commands_[0].kind == CommandKind::transfer &&
                               (ex.commands_[0].flags & kTransferPending) == 0)));
    ex.between_ = result;
    ex.group_ = engine().route(credit_account);
    ex.commands_[0] = Command::make_deliver(TransferId{result.id}, AccountId{credit_account},
                                            amount, currency, result.channel_number);
    return submit_one(ex, /*last_step=*/false);
  }
  // The other group answered: settle.
  ex.group_ = engine().route(ex.between_.id);
  ex.commands_[0] =
      Command::make_settle(TransferId{ex.between_.id}, ex.between_.channel_number, result.code);
  return submit_one(ex, last_step);
}

// What the settlement in ex.results_[0] comes to: ok (posted), the other group's
// refusal (voided), or outcome_expired. A settle the ledger refuses as malformed
// (invalid_command) cannot come from a correct gateway: internal_error (500), logged;
// the money stays held and the engine's finisher settles it.
ResultCode Service::settled_code(const Exchange& ex) {
  const ResultCode code = ex.results_[0].code;
  if (code != ResultCode::invalid_command) return code;
  PG_LOG_ERROR(
      "event=settle_refused transfer={} channel_number={} message=\"the ledger refused a "
      "settlement as malformed; the money stays held and the finisher settles it\"",
      id_text(IdKind::transfer, ex.between_.id), ex.between_.channel_number);
  return ResultCode::internal_error;
}

// A request that is one transfer between groups, after the command that numbered its
// hold (stage 0) and each step after. Returns whether it answered, or nothing once the
// transfer is settled and posted, for the caller to answer.
std::optional<bool> Service::carry_request(Exchange& ex, u32 stage, u64 credit_account, u64 amount,
                                           Currency currency) {
  if (stage == 0 && !ex.results_[0].ok()) {
    return fail(ex, ex.results_[0].code, describe(ex.results_[0].code));
  }
  if (stage < 2) return carry_between_groups(ex, stage, credit_account, amount, currency);
  const ResultCode code = settled_code(ex);
  if (code == ResultCode::ok) return std::nullopt;
  switch (code) {
    case ResultCode::internal_error:
      return fail(ex, code,
                  "the transfer between groups could not be settled (a fault of the gateway, "
                  "logged); the money stays held, the engine settles it shortly, and a retry "
                  "with the same Idempotency-Key answers its outcome");
    case ResultCode::outcome_expired:
      return fail(ex, code, describe(code));
    default:
      return fail(ex, code,
                  fmt::format("the other group refused the credit ({}); the transfer {} "
                              "was voided and the money released",
                              describe(code), id_text(IdKind::transfer, ex.between_.id)));
  }
}

bool Service::get_transfer(Exchange& ex) {
  if (ex.step_ == 0) {
    ex.transfers_.resize(1);
    Request request{.kind = RequestKind::lookup_transfer, .lookup_id = ex.path_id_};
    request.transfer_out = ex.transfers_.data();
    request.completion = &ex;
    return submit(ex, request);
  }
  if (!ex.outcome_.found || !visible_transfer(ex, ex.transfers_[0])) {
    return fail(ex, ResultCode::transfer_not_found, "no such transfer");
  }
  render_transfer(ex.reply.body, ex.transfers_[0]);
  return finish(ex, 200);
}

// Post or void: look the hold up (is it yours? what does it hold?), then act.
bool Service::pending_action(Exchange& ex) {
  const bool post = ex.route_ == Route::transfers_post;
  if (ex.step_ == 0) {
    const Problem problem = post ? decoder().post_pending(ex.view_.body, &ex.pending_)
                                 : decoder().void_pending(ex.view_.body);
    if (!problem.ok()) return fail_problem(ex, problem);
    if (!post) ex.pending_ = PendingAction{};
    ex.transfers_.resize(1);
    Request request{.kind = RequestKind::lookup_transfer, .lookup_id = ex.path_id_};
    request.transfer_out = ex.transfers_.data();
    request.completion = &ex;
    return submit(ex, request, /*last_step=*/false);
  }
  const Transfer& hold = ex.transfers_[0];
  const u64 posted_amount = ex.pending_.amount != 0 ? ex.pending_.amount : hold.amount;
  if (ex.step_ == 1) {
    if (!ex.outcome_.found) return fail(ex, ResultCode::transfer_not_found, "no such transfer");
    if (const ResultCode refused = may_act_on_hold(ex, hold, post); refused != ResultCode::ok) {
      return fail(ex, refused, describe(refused));
    }
    ex.commands_.resize(1);
    ex.results_.resize(1);
    const TransferId id{ex.path_id_};
    // Posting a hold between groups carries the credit to the other group (voiding
    // one is local, like any other).
    ex.between_groups_ = post && hold.between_groups();
    ex.commands_[0] =
        (!post                ? Command::make_void(id)
         : ex.between_groups_ ? Command::make_post_between_groups(id, ex.pending_.amount)
                              : Command::make_post(id, ex.pending_.amount))
            .with_key(ex.key_, ex.key_lane_);
    return submit_one(ex, /*last_step=*/!ex.between_groups_);
  }
  if (ex.between_groups_) {
    const std::optional<bool> answered =
        carry_request(ex, ex.step_ - 2, hold.credit_account_id.value, posted_amount, hold.currency);
    if (answered) return *answered;
  } else if (const CommandResult result = ex.results_[0]; !result.ok()) {
    return fail(ex, result.code, describe(result.code));
  }
  render_closed_hold(ex.reply.body, hold, post, posted_amount);
  return finish(ex, 200);
}

// ---- batch ----
//
// Step 0 decodes and checks every operation at the edge; then run_batch carries the
// operations to their groups, in order.

bool Service::batch(Exchange& ex) {
  if (ex.batch_running_) return run_batch(ex);
  BatchRequest& b = ex.batch_;
  const Problem problem = decoder().batch(ex.view_.body, &b);
  if (!problem.ok()) return fail_problem(ex, problem);
  ex.op_refused_.assign(b.count, ResultCode::ok);
  ex.op_group_.assign(b.count, nullptr);
  ex.op_crosses_.assign(b.count, 0);
  Group* first_group = nullptr;
  for (u32 i = 0; i < b.count; ++i) {
    const BatchOperation& op = b.operations[i];
    u64 route_id = op.transfer_id;
    if (op.op == BatchOp::transfer) {
      route_id = op.transfer.debit_account_id;
      ResultCode refused = check_transfer_accounts(ex, op.transfer);
      // An immediate transfer between groups runs in a non-atomic batch; a two-phase
      // one is sent on its own (its credit account is checked first, and a hold not
      // yet numbered must never be carried to the other group).
      if (refused == ResultCode::cross_group_transfer && !b.atomic && !op.transfer.pending) {
        ex.op_crosses_[i] = 1;
        refused = ResultCode::ok;
      }
      ex.op_refused_[i] = refused;
    }
    Group* group = engine().route(route_id);
    if (group == nullptr) {
      ex.op_refused_[i] = op.op == BatchOp::transfer ? ResultCode::debit_account_not_found
                                                     : ResultCode::transfer_not_found;
      continue;
    }
    ex.op_group_[i] = group;
    if (first_group == nullptr) first_group = group;
    if (b.atomic && group != first_group) {
      return fail(ex, ResultCode::cross_group_transfer,
                  fmt::format("operations[{}] is in another group than the first; an atomic "
                              "batch runs in one group",
                              i));
    }
  }
  return run_batch(ex);
}

// The ledger command of operation i of a batch.
Command Service::batch_command(const Exchange& ex, u32 i) {
  const BatchRequest& b = ex.batch_;
  const BatchOperation& op = b.operations[i];
  Command command = op.op == BatchOp::transfer ? transfer_command(op.transfer)
                    : op.op == BatchOp::post
                        ? Command::make_post(TransferId{op.transfer_id}, op.amount)
                        : Command::make_void(TransferId{op.transfer_id});
  if (op.op == BatchOp::transfer && ex.op_crosses_[i] != 0) command.flags |= kTransferBetweenGroups;
  if (!b.atomic && !ex.key_.empty() && ex.key_lane_ == KeyLane::client) {
    // Each operation of a batch is its own idempotent command, keyed by position, so
    // that a retry answers each as before. (The request's claim holds the key itself.
    // A signature needs no such keys: its claim refuses any replay whole.)
    command.with_key(IdempotencyKey{mix64(ex.key_.lo + (u64{i} + 1) * 0x9E3779B97F4A7C15ull),
                                    mix64(ex.key_.hi ^ i)});
  }
  return command;
}

bool Service::batch_reply(Exchange& ex) {
  const BatchRequest& b = ex.batch_;
  if (b.atomic && (ex.outcome_.atomic == ResultCode::idempotency_key_reused ||
                   ex.outcome_.atomic == ResultCode::idempotency_capacity)) {
    // The key names another request, or finds no room: that is about the request, not
    // its operations.
    return fail(ex, ex.outcome_.atomic, describe(ex.outcome_.atomic));
  }
  std::string& out = ex.reply.body;
  out.clear();
  // Prefer: return=minimal (RFC 7240) answers each operation with its status and the
  // transfer's id, or its error code: the compact form for clients that send many.
  const bool minimal = prefers_return_minimal(ex.view_.prefer);
  ex.reply.minimal = minimal;
  if (minimal) out.reserve(32 + std::size_t{b.count} * 48);
  bool atomic_failed = false;
  u32 failed_op = 0;
  ResultCode failed_code = ResultCode::ok;
  out += R"({"results":[)";
  u32 next_hold = 0;
  for (u32 i = 0; i < b.count; ++i) {
    const BatchOperation& op = b.operations[i];
    const Transfer* hold = op.op == BatchOp::transfer ? nullptr : &ex.transfers_[next_hold++];
    ResultCode code = ex.op_refused_[i];
    u64 id = 0;
    if (code == ResultCode::ok) {
      const CommandResult& result = ex.op_results_[i];
      code = result.code;
      id = result.id;
    }
    if (b.atomic && code != ResultCode::ok && code != ResultCode::atomic_batch_failed &&
        !atomic_failed) {
      atomic_failed = true;
      failed_op = i;
      failed_code = code;
    }
    // {"status":…,"body":…}, each body rendered straight into the answer.
    if (i != 0) out += ',';
    const unsigned status = code != ResultCode::ok       ? http_status(code)
                            : op.op == BatchOp::transfer ? 201u
                                                         : 200u;
    if (minimal) {
      // {"status":201,"id":"trf_…"} or {"status":422,"code":"…"}
      char text[kIdTextSize + 40];
      char* at = text;
      const auto put = [&at](std::string_view piece) {
        std::memcpy(at, piece.data(), piece.size());
        at += piece.size();
      };
      put(R"({"status":)");
      at = std::to_chars(at, text + sizeof text, status).ptr;
      if (code == ResultCode::ok) {
        put(R"(,"id":")");
        format_id(IdKind::transfer, id, at);
        at += kIdTextSize;
        put(R"("})");
        out.append(text, at);
      } else {
        put(R"(,"code":")");
        out.append(text, at);
        out += name(code);
        out += R"("})";
      }
      continue;
    }
    JsonWriter(out).begin_object().key("status").unsigned_number(status).key("body");
    if (code != ResultCode::ok) {
      render_error(out, code, describe(code));
    } else if (op.op == BatchOp::transfer) {
      render_new_transfer(out, id, op.transfer, ex.op_crosses_[i] != 0);
    } else {
      const bool post = op.op == BatchOp::post;
      render_closed_hold(out, *hold, post, op.amount != 0 ? op.amount : hold->amount);
    }
    out += '}';
  }
  out += "]";
  if (atomic_failed) {
    fmt::format_to(std::back_inserter(out),
                   R"(,"error":{{"code":"atomic_batch_failed","message":"operations[{}]: {}"}}}})",
                   failed_op, name(failed_code));
    return finish(ex, http_status(ResultCode::atomic_batch_failed));
  }
  out += "}";
  return finish(ex, 200);
}

// A batch runs as a sequence of segments, in operation order, so that it has the
// effect of its operations one after another: a run of operations in one group (its
// holds looked up first, then its commands in one request), or one transfer between
// groups (its three steps). A batch in one group, and every atomic one, is a single
// segment. Each operation's result is kept in op_results_. If a step cannot be taken
// (503), the batch answers that, and the operations already applied stay applied: a
// retry with the same Idempotency-Key answers them the same and applies the rest.
bool Service::run_batch(Exchange& ex) {
  const BatchRequest& b = ex.batch_;
  if (!ex.batch_running_) {
    ex.batch_running_ = true;
    ex.op_results_.assign(b.count, CommandResult{});
    ex.op_hold_.resize(b.count);
    u32 holds = 0;
    for (u32 i = 0; i < b.count; ++i)
      ex.op_hold_[i] = b.operations[i].op == BatchOp::transfer ? kNoHold : holds++;
    ex.transfers_.assign(holds, Transfer{});
    ex.segment_end_ = 0;
    return next_segment(ex);
  }
  const u32 begin = ex.segment_begin_, end = ex.segment_end_;
  switch (ex.segment_stage_) {
    case Exchange::SegmentStage::lookup:
      for (u32 i = begin; i < end; ++i) {
        if (ex.op_hold_[i] == kNoHold || ex.op_refused_[i] != ResultCode::ok) continue;
        const Transfer& hold = ex.transfers_[ex.op_hold_[i]];
        ex.op_refused_[i] =
            hold.id.empty() ? ResultCode::transfer_not_found
                            : may_act_on_hold(ex, hold, b.operations[i].op == BatchOp::post);
      }
      return submit_segment(ex);
    case Exchange::SegmentStage::commands: {
      u32 next = 0;
      for (u32 i = begin; i < end; ++i) {
        if (ex.op_refused_[i] == ResultCode::ok) ex.op_results_[i] = ex.results_[next++];
      }
      return next_segment(ex);
    }
    case Exchange::SegmentStage::hold_between_groups: {
      const TransferCreate& t = b.operations[begin].transfer;
      if (!ex.results_[0].ok()) {
        ex.op_results_[begin] = ex.results_[0];
        return next_segment(ex);
      }
      ex.segment_stage_ = Exchange::SegmentStage::deliver;
      return carry_between_groups(ex, 0, t.credit_account_id, t.amount, t.currency);
    }
    case Exchange::SegmentStage::deliver: {
      const TransferCreate& t = b.operations[begin].transfer;
      ex.segment_stage_ = Exchange::SegmentStage::settle;
      return carry_between_groups(ex, 1, t.credit_account_id, t.amount, t.currency,
                                  /*last_step=*/!more_after(ex, end));
    }
    case Exchange::SegmentStage::settle:
      ex.op_results_[begin] = CommandResult{.code = settled_code(ex), .id = ex.between_.id};
      return next_segment(ex);
  }
  return fail(ex, ResultCode::not_durable, "the batch lost its place");
}

// Whether operation `from` or a later one still has a command to run.
bool Service::more_after(const Exchange& ex, u32 from) {
  for (u32 i = from; i < ex.batch_.count; ++i) {
    if (ex.op_refused_[i] == ResultCode::ok) return true;
  }
  return false;
}

bool Service::next_segment(Exchange& ex) {
  const BatchRequest& b = ex.batch_;
  u32 begin = ex.segment_end_;
  while (begin < b.count && ex.op_refused_[begin] != ResultCode::ok)
    ++begin;
  if (begin == b.count) {
    if (const std::optional<bool> refused = fail_atomic_refused(ex)) return *refused;
    return batch_reply(ex);  // every operation answered
  }
  ex.segment_begin_ = begin;
  Group* group = ex.op_group_[begin];
  ex.group_ = group;
  if (ex.op_crosses_[begin] != 0) {
    ex.segment_end_ = begin + 1;
    ex.segment_stage_ = Exchange::SegmentStage::hold_between_groups;
    ex.commands_.assign(1, batch_command(ex, begin));
    ex.results_.resize(1);
    return submit_one(ex, /*last_step=*/false);
  }
  u32 end = begin + 1;
  while (end < b.count && (ex.op_refused_[end] != ResultCode::ok ||
                           (ex.op_group_[end] == group && ex.op_crosses_[end] == 0))) {
    ++end;
  }
  ex.segment_end_ = end;
  // The segment's holds, which are consecutive in transfers_.
  ex.lookup_ids_.clear();
  u32 first_hold = kNoHold;
  for (u32 i = begin; i < end; ++i) {
    if (ex.op_hold_[i] == kNoHold) continue;
    if (first_hold == kNoHold) first_hold = ex.op_hold_[i];
    ex.lookup_ids_.push_back(b.operations[i].transfer_id);
  }
  if (ex.lookup_ids_.empty()) return submit_segment(ex);
  ex.segment_stage_ = Exchange::SegmentStage::lookup;
  Request request{.kind = RequestKind::lookup_transfer,
                  .count = static_cast<u32>(ex.lookup_ids_.size())};
  request.lookup_ids = ex.lookup_ids_.data();
  request.transfer_out = ex.transfers_.data() + first_hold;
  request.completion = &ex;
  return submit(ex, request, /*last_step=*/false);
}

// An atomic batch with an operation refused at the edge fails whole, before the ledger.
std::optional<bool> Service::fail_atomic_refused(Exchange& ex) {
  if (!ex.batch_.atomic) return std::nullopt;
  for (u32 i = 0; i < ex.batch_.count; ++i) {
    if (ex.op_refused_[i] != ResultCode::ok) {
      return fail(ex, ResultCode::atomic_batch_failed,
                  fmt::format("operations[{}]: {}", i, name(ex.op_refused_[i])));
    }
  }
  return std::nullopt;
}

bool Service::submit_segment(Exchange& ex) {
  const BatchRequest& b = ex.batch_;
  if (const std::optional<bool> refused = fail_atomic_refused(ex)) return *refused;
  u32 count = 0;
  for (u32 i = ex.segment_begin_; i < ex.segment_end_; ++i) {
    count += ex.op_refused_[i] == ResultCode::ok;
  }
  if (count == 0) return next_segment(ex);
  // Each command is built in its place: returned through a temporary and copied in,
  // the copy read back in 16-byte pieces what had just been written in smaller ones,
  // and stalled on it for most of this function's time.
  ex.commands_.resize(count);
  Command* next = ex.commands_.data();
  for (u32 i = ex.segment_begin_; i < ex.segment_end_; ++i) {
    if (ex.op_refused_[i] == ResultCode::ok) ::new (next++) Command(batch_command(ex, i));
  }
  ex.results_.resize(ex.commands_.size());
  ex.segment_stage_ = Exchange::SegmentStage::commands;
  return submit(ex,
                Request{.kind = b.atomic ? RequestKind::atomic : RequestKind::commands,
                        .count = static_cast<u32>(ex.commands_.size()),
                        .commands = ex.commands_.data(),
                        .results = ex.results_.data(),
                        .batch_key = b.atomic && ex.key_lane_ == KeyLane::client
                                         ? ex.key_
                                         : IdempotencyKey{},
                        .completion = &ex},
                /*last_step=*/!more_after(ex, ex.segment_end_));
}

// ---- events and statements ----

namespace {

// A merchant's read scans this many events for each one it may see at most, so that a
// page in a busy group is not mostly empty (operators see everything: no scan).
constexpr u32 kMerchantScanPerEvent = 4;
constexpr u32 kMerchantScanMin = 1000;

Request read_request(Exchange& completion, RequestKind kind, u32 count, LedgerEvent* out,
                     std::optional<EventKey> cursor, u64 account = 0) {
  Request request{.kind = kind, .count = count, .lookup_id = account};
  request.completion = &completion;
  request.events_out = out;
  request.cursor = cursor;
  return request;
}

std::optional<EventKey> cursor_key(const std::optional<Cursor>& cursor) {
  return cursor ? std::optional(cursor->key) : std::nullopt;
}

}  // namespace

bool Service::read_events(Exchange& ex) {
  PageQuery& q = ex.page_;
  const bool is_operator = ex.principal_.is_operator;
  if (ex.step_ == 0) {
    const Problem problem = parse_page_query(ex.view_.target, PageRoute::events, &q);
    if (!problem.ok()) return fail_problem(ex, problem);
    // A merchant's events are in its group (its sub-merchants share it).
    const u32 own = is_operator ? 0 : ex.principal_.merchant->group;
    if (!is_operator && q.group && *q.group != own) {
      return fail(ex, ResultCode::operator_only, "merchants read their own group's events");
    }
    const u32 group = is_operator ? q.group.value_or(q.cursor ? q.cursor->group : 0) : own;
    if (q.cursor && q.cursor->group != group) {
      return fail(ex, ResultCode::invalid_cursor, "the cursor is from another group's stream");
    }
    if (group >= engine().groups()) {
      return fail(ex, ResultCode::invalid_field, "group is beyond the configured groups");
    }
    ex.group_ = &engine().group(group);
    const u32 scan =
        is_operator
            ? q.limit
            : std::min(kBatchMax, std::max(kMerchantScanMin, q.limit * kMerchantScanPerEvent));
    ex.events_.resize(scan);
    return submit(ex, read_request(ex, RequestKind::read_events, scan, ex.events_.data(),
                                   cursor_key(q.cursor)));
  }
  const EventPage& page = ex.outcome_.page;
  if (page.expired) {
    return fail(ex, ResultCode::cursor_expired,
                "the events after this cursor are no longer held; start again without one "
                "(docs/API.md, events)");
  }
  if (page.unknown) {
    return fail(ex, ResultCode::invalid_cursor, "the cursor is ahead of this group's stream");
  }
  // Keep what the caller may see, up to the limit; the next page starts after the
  // last event looked at (so a merchant's empty page still moves its cursor on).
  std::optional<EventKey> next = cursor_key(q.cursor);
  u32 kept = 0, looked = 0;
  for (; looked < page.count && kept < q.limit; ++looked) {
    const LedgerEvent e = ex.events_[looked];
    next = key_of(e);
    // A creation carries its owner: the owner index may not have the account yet
    // (it is filled when the creation is answered, which can come after this read).
    const bool visible = is_operator || (e.kind == LedgerEventKind::account_created
                                             ? visible_owner(ex, e.owner.value)
                                             : visible_account(ex, e.debit_account_id.value) ||
                                                   visible_account(ex, e.credit_account_id.value));
    if (visible) ex.events_[kept++] = e;
  }
  render_events(ex.reply.body, ex.group_->config().ledger.prefix.group,
                std::span(ex.events_.data(), kept), next, page.more || looked < page.count);
  return finish(ex, 200);
}

bool Service::read_entries(Exchange& ex) {
  PageQuery& q = ex.page_;
  const u32 group = id_prefix(ex.path_id_).group;
  if (ex.step_ == 0) {
    if (!visible_account(ex, ex.path_id_)) {
      return fail(ex, ResultCode::account_not_found, "no such account");
    }
    const Problem problem = parse_page_query(ex.view_.target, PageRoute::entries, &q);
    if (!problem.ok()) return fail_problem(ex, problem);
    if (q.cursor && q.cursor->group != group) {
      return fail(ex, ResultCode::invalid_cursor, "the cursor is not from this account's group");
    }
    ex.events_.resize(q.limit);
    return submit(ex, read_request(ex, RequestKind::read_entries, q.limit, ex.events_.data(),
                                   cursor_key(q.cursor), ex.path_id_));
  }
  const EventPage& page = ex.outcome_.page;
  if (page.expired) {
    return fail(ex, ResultCode::cursor_expired,
                "the lines before this cursor are no longer held (docs/API.md, statements)");
  }
  if (page.unknown) {
    return q.cursor ? fail(ex, ResultCode::invalid_cursor, "the cursor is not this account's")
                    : fail(ex, ResultCode::account_not_found, "no such account");
  }
  render_entries(ex.reply.body, group, ex.path_id_, std::span(ex.events_.data(), page.count),
                 page.more, page.complete);
  return finish(ex, 200);
}

}  // namespace paygate::api
