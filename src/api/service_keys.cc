// Idempotency keys and signatures: which group keeps a request's key, the claims that
// make one key name one request everywhere (docs/API.md, "Idempotency"; docs/LEDGER.md,
// "Claims"), and how keys are derived from the headers.
#include "api/service.h"

#include <cstring>

#include "api/http_status.h"
#include "base/hash.h"

namespace paygate::api {

// Hands a request to its group. True when answered at once (refused).
//
// The first request that runs commands also takes the request's key, so that one key
// names one request whatever endpoint or group it reaches (docs/API.md, idempotency).
// The key lives in its home group (key_home): a single command that runs there
// carries the key itself (as does an atomic batch, under its batch key); anything else
// takes it with a claim (Command::make_claim) over the whole request's fingerprint —
// opening the request when it runs in the home group, or as a step of its own before
// it otherwise, after which the commands carry a key derived from it (move_key).
//
// A signed request with a key has its signature taken too, in the same claim as the
// key, or, where the request carries its key itself, by a claim of the signature alone
// before it (the request keeps its key: a retry from before this claim existed is
// still answered).
bool Service::submit(Exchange& ex, const Request& request, bool last_step) {
  const bool runs_commands =
      request.kind == RequestKind::commands || request.kind == RequestKind::atomic;
  if (ex.key_.empty() || ex.key_taken_ || !runs_commands) {
    return submit_to_group(ex, request, last_step);
  }
  ex.key_taken_ = true;
  Group& home = key_home(ex);
  // A merchant's key counts against its idempotency_keys quota; an operator's does not.
  const MerchantId owner{ex.principal_.merchant != nullptr ? ex.principal_.merchant->id : 0};
  if (&home == ex.group_ && carries_key(ex, request)) {
    if (ex.signature_key_.empty()) return submit_to_group(ex, request, last_step);
    // (A signature's claim compares no content: no fingerprint to compute.)
    ex.claim_ = Command::make_claim(ex.signature_key_, 0, 0, KeyLane::signature, owner);
  } else {
    ex.claim_ = Command::make_claim(ex.key_, request_fingerprint(ex), 0, ex.key_lane_, owner,
                                    ex.signature_key_);
  }
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
  if (ex.claim_.key != ex.key_) return;  // a claim of the signature alone: the key stays
  IdempotencyKey moved{};
  if (ex.key_lane_ == KeyLane::client) {
    moved = IdempotencyKey{mix64(ex.key_.lo ^ 0x4D4F564544ull), mix64(ex.key_.hi + 1)};
    if (moved.empty()) moved.lo = 1;
  }
  if (ex.stashed_.kind == RequestKind::atomic && ex.stashed_.batch_key == ex.key_) {
    ex.stashed_.batch_key = moved;
  }
  // The waiting request's commands are the exchange's own (its vectors, or its carry
  // machine's), written by this thread: not const in truth.
  Command* commands = const_cast<Command*>(ex.stashed_.commands);
  for (u32 i = 0; i < ex.stashed_.count; ++i) {
    if (commands[i].key == ex.key_ && commands[i].key_lane == ex.key_lane_) {
      commands[i].with_key(moved, KeyLane::client);
    }
  }
}

// The claim did not hold: nothing of the request ran.
bool Service::fail_claim(Exchange& ex, ResultCode code) {
  switch (code) {
    case ResultCode::signature_replayed:
    case ResultCode::idempotency_key_reused:
    case ResultCode::idempotency_capacity:
    case ResultCode::quota_idempotency_keys:
    case ResultCode::owners_full:
      return fail(ex, code, describe(code));
    default:
      return fail(ex, ResultCode::not_durable, "the request's key could not be taken; retry");
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

}  // namespace paygate::api
