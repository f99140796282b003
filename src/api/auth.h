// Who is calling: the operator (a bearer admin token) or a merchant (a signed request
// or a JWT), per API.md. Verification only; what each caller may do is decided by
// the service.
//
// Signed requests: X-Paygate-Key, X-Paygate-Timestamp (unix seconds, within
// ±window_s of our clock) and X-Paygate-Signature = hex HMAC-SHA256(secret,
// timestamp "\n" METHOD "\n" path-with-query "\n" body), compared in constant time.
// A signature of a request that changes state (not GET or HEAD) is accepted once: a
// replay cache remembers every such signature accepted within twice the window, so a
// captured request cannot be sent again (a client retrying signs again, with a new
// timestamp, and relies on Idempotency-Key). The cache is bounded: when it is full of
// signatures that could still be replayed, new signed requests are refused
// (replay_cache_full) rather than an old signature forgotten. It lives in memory; the
// ledger keeps the signature of a request without an Idempotency-Key durably
// (KeyLane::signature), so a replay after a restart moves nothing either; a request
// with one (whose replay could drop or change the key) is covered across a restart by
// refusing every state-changing request signed before this process started
// (AuthConfig::started_ns).
// Reads (GET, HEAD) are not replay-checked: a client polling twice in a second with
// whole-second timestamps sends the same signature twice, and reading again is safe.
//
// JWT: "Authorization: Bearer <token>", HS256 signed with the merchant's secret,
// claims sub (the merchant id) and exp (required), nbf and iat (honoured when present),
// living at most jwt_lifetime_max_s. Verified by libjwt.
#pragma once

#include <deque>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_set>

#include "api/crypto.h"
#include "api/merchants.h"
#include "api/request_decoder.h"

namespace paygate::api {

struct Credentials {
  std::string_view method;
  std::string_view target;  // path with query, as sent
  std::string_view body;
  std::string_view authorization;  // the whole header
  std::string_view key_id;
  std::string_view timestamp;
  std::string_view signature;
  bool check_replay = true;  // false for reads (GET, HEAD)
};

struct Principal {
  bool is_operator = false;
  MerchantRef merchant;  // set for merchants
  // A signed request: its signature (the key of KeyLane::signature, once scoped).
  bool signed_request = false;
  Digest signature{};

  bool authenticated() const noexcept { return is_operator || merchant != nullptr; }
};

struct AuthConfig {
  std::string admin_token;
  u64 window_s = 300;
  // How long the ledger keeps a signed POST's signature (LedgerConfig::
  // signature_window_ns; at least twice window_s). A POST is refused a little before
  // its timestamp leaves the window on the past side (Authenticator::signed_request).
  u64 signatures_kept_s = 600;
  std::size_t replay_cache_max = 1u << 20;
  // A JWT lives at most this long (exp minus iat, or minus now without iat): a leaked
  // token is a bearer's key until it expires, so it must expire soon.
  u64 jwt_lifetime_max_s = 4 * 3600;
  u64 jwt_leeway_s = 60;  // clock skew allowed on nbf and iat
  // When this process started (Unix ns; 0: not checked). The replay cache holds every
  // signature accepted since then and none before: a POST signed earlier may have been
  // used before a restart (a keyed one's signature is kept nowhere else, and a replay
  // can drop or change its key), so it is refused as a possible replay.
  u64 started_ns = 0;
};

class Authenticator {
 public:
  Authenticator(const MerchantRegistry& merchants, AuthConfig config)
      : merchants_(merchants), config_(std::move(config)) {}

  // ok with *principal set, or why not (missing_credentials, invalid_credentials,
  // invalid_signature, timestamp_out_of_window, signature_replayed, invalid_token,
  // token_expired).
  Problem authenticate(const Credentials& credentials, u64 now_s, Principal* principal);

  // Signed requests refused because the replay cache was full.
  u64 replay_cache_refusals() const noexcept { return refusals_.load(std::memory_order_relaxed); }
  std::size_t replay_cache_size();
  // Seconds until the replay cache has room again (0: it has room now).
  u32 replay_cache_room_in_s(u64 now_s);

 private:
  enum class Remembered : u8 { accepted, replayed, full };
  Problem signed_request(const Credentials& credentials, u64 now_s, Principal* principal);
  Problem bearer_token(std::string_view token, u64 now_s, Principal* principal);
  Remembered remember_signature(const Digest& signature, u64 now_s);
  void forget_expired(u64 now_s);  // REQUIRES: replay_mutex_ held

  struct DigestHash {
    std::size_t operator()(const Digest& d) const noexcept {
      std::size_t h;
      std::memcpy(&h, d.data(), sizeof h);  // a MAC: its bytes are already uniform
      return h;
    }
  };

  const MerchantRegistry& merchants_;
  const AuthConfig config_;
  std::mutex replay_mutex_;
  std::unordered_set<Digest, DigestHash> seen_;
  std::deque<std::pair<u64, Digest>> seen_order_;  // (accepted at, signature), oldest first
  std::atomic<u64> refusals_{0};
};

}  // namespace paygate::api
