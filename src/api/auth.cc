#include "api/auth.h"

#include <jwt.h>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <memory>
#include <optional>

#include "api/http_status.h"
#include "api/id_text.h"

namespace paygate::api {
namespace {

Problem refuse(ResultCode code, std::string message) {
  return Problem{code, std::move(message)};
}

struct JwtFree {
  void operator()(jwt_t* jwt) const noexcept { jwt_free(jwt); }
};
using JwtPtr = std::unique_ptr<jwt_t, JwtFree>;

}  // namespace

Problem Authenticator::authenticate(const Credentials& credentials, u64 now_s,
                                    Principal* principal) {
  *principal = Principal{};
  constexpr std::string_view kBearer = "Bearer ";
  if (!credentials.authorization.empty()) {
    if (credentials.authorization.substr(0, kBearer.size()) != kBearer) {
      return refuse(ResultCode::invalid_credentials, "Authorization must be \"Bearer <token>\"");
    }
    const std::string_view token = credentials.authorization.substr(kBearer.size());
    if (!config_.admin_token.empty() && equal_constant_time(token, config_.admin_token)) {
      principal->is_operator = true;
      return {};
    }
    return bearer_token(token, now_s, principal);
  }
  if (!credentials.key_id.empty() || !credentials.signature.empty()) {
    return signed_request(credentials, now_s, principal);
  }
  return refuse(ResultCode::missing_credentials,
                "send a signed request (X-Paygate-Key, -Timestamp, -Signature) or a bearer token");
}

Problem Authenticator::signed_request(const Credentials& c, u64 now_s, Principal* principal) {
  if (c.key_id.empty() || c.timestamp.empty() || c.signature.empty()) {
    return refuse(ResultCode::missing_credentials,
                  "a signed request needs X-Paygate-Key, X-Paygate-Timestamp and "
                  "X-Paygate-Signature");
  }
  // Unix seconds, optionally with a fraction ("1795355278.250"): two identical
  // requests signed within one second would otherwise carry one signature, and the
  // second would be refused as a replay.
  u64 timestamp = 0;
  const char* const begin = c.timestamp.data();
  const char* const finish = begin + c.timestamp.size();
  const auto [end, error] = std::from_chars(begin, finish, timestamp);
  bool well_formed = error == std::errc{} && end != begin;
  if (well_formed && end != finish) {
    const std::string_view fraction(end + 1, static_cast<std::size_t>(finish - end - 1));
    well_formed = *end == '.' && !fraction.empty() && fraction.size() <= 9 &&
                  fraction.find_first_not_of("0123456789") == std::string_view::npos;
  }
  if (!well_formed) {
    return refuse(ResultCode::timestamp_out_of_window,
                  "X-Paygate-Timestamp must be unix seconds (a fraction is allowed)");
  }
  // The timestamp in ns, its fraction too, and the span it stands for at the precision
  // sent (a whole second: 1 s; ".25": 10 ms), for the comparison with the start.
  u64 fraction_ns = 0;
  u64 precision_ns = kNanosPerSecond;
  if (end != finish) {
    const std::string_view digits(end + 1, static_cast<std::size_t>(finish - end - 1));
    for (std::size_t i = 0; i < 9; ++i) {
      fraction_ns = fraction_ns * 10 + (i < digits.size() ? static_cast<u64>(digits[i] - '0') : 0);
      if (i < digits.size()) precision_ns /= 10;
    }
  }
  const u64 skew = timestamp > now_s ? timestamp - now_s : now_s - timestamp;
  if (skew > config_.window_s) {
    return refuse(ResultCode::timestamp_out_of_window,
                  "X-Paygate-Timestamp is more than 300 s from the server's clock");
  }
  // A request that changes state must also be younger than the window by a margin: one
  // signature passes from window_s before its timestamp (a client clock running
  // ahead) to this age after it, and its replay must still find it in the ledger,
  // which keeps it signatures_kept_s from when the first was stamped (1 s for whole-
  // second clocks, and 10 s for the replay's wait before the ledger stamps it).
  constexpr u64 kStampMarginS = 12;
  const u64 age_max_s =
      config_.signatures_kept_s > config_.window_s + kStampMarginS
          ? std::min(config_.window_s, config_.signatures_kept_s - config_.window_s - kStampMarginS)
          : 0;
  if (c.check_replay && now_s > timestamp + age_max_s) {
    return refuse(ResultCode::timestamp_out_of_window,
                  fmt::format("X-Paygate-Timestamp is more than {} s old: a request that changes "
                              "state must be sent within {} s of its timestamp (sign it again)",
                              age_max_s, age_max_s));
  }
  MerchantRef merchant = merchants_.find_by_key(c.key_id);
  Digest sent{};
  const bool hex_ok = from_hex(c.signature, &sent);
  // Compute the MAC even for an unknown key, so timing does not tell keys apart.
  // The key's secret: the merchant's current one, or the one before a rotation while
  // its grace lasts.
  static const std::string kNoSecret(67, 'x');
  const std::string_view secret = merchant ? merchant->secret_of(c.key_id, now_s) : "";
  if (secret.empty()) merchant = nullptr;
  const Digest expected = hmac_sha256(merchant ? secret : std::string_view(kNoSecret),
                                      {c.timestamp, "\n", c.method, "\n", c.target, "\n", c.body});
  if (merchant == nullptr || !hex_ok || !equal_constant_time(sent, expected)) {
    return refuse(ResultCode::invalid_signature, "the signature does not match");
  }
  // Signed wholly before this process started (at the precision sent: a whole-second
  // timestamp of the start's own second passes): it may have been used before a
  // restart, and the replay cache cannot tell. (Within the window of now: no overflow.)
  if (c.check_replay && config_.started_ns != 0 &&
      timestamp * kNanosPerSecond + fraction_ns + precision_ns <= config_.started_ns) {
    return refuse(ResultCode::signature_replayed,
                  "this request was signed before the server's last start, so whether it was "
                  "used before cannot be checked: sign it again (to send a request twice on "
                  "purpose, sign it again and send the same Idempotency-Key; a client clock "
                  "running behind the server's is refused so for as long as it is behind)");
  }
  if (c.check_replay) {
    switch (remember_signature(sent, now_s)) {
      case Remembered::accepted:
        break;
      case Remembered::replayed:
        return refuse(ResultCode::signature_replayed,
                      std::string(describe(ResultCode::signature_replayed)));
      case Remembered::full:
        refusals_.fetch_add(1, std::memory_order_relaxed);
        return refuse(ResultCode::replay_cache_full,
                      "the server remembers as many signatures as it may; retry after Retry-After "
                      "(docs/OPERATING.md, auth.replay_cache_max)");
    }
  }
  principal->merchant = std::move(merchant);
  principal->signed_request = true;
  principal->signature = sent;
  return {};
}

void Authenticator::forget_expired(u64 now_s) {
  // A signature older than twice the window can never pass the timestamp check again.
  while (!seen_order_.empty() && seen_order_.front().first + 2 * config_.window_s < now_s) {
    seen_.erase(seen_order_.front().second);
    seen_order_.pop_front();
  }
}

Authenticator::Remembered Authenticator::remember_signature(const Digest& signature, u64 now_s) {
  std::lock_guard lock(replay_mutex_);
  forget_expired(now_s);
  if (seen_.count(signature) != 0) return Remembered::replayed;
  // Bounded memory, and never forget a signature that could still be replayed: when
  // full, refuse the new request instead (size the cache for the signed-request rate
  // times twice the window).
  if (seen_order_.size() >= config_.replay_cache_max) return Remembered::full;
  seen_.insert(signature);
  seen_order_.emplace_back(now_s, signature);
  return Remembered::accepted;
}

std::size_t Authenticator::replay_cache_size() {
  std::lock_guard lock(replay_mutex_);
  return seen_order_.size();
}

u32 Authenticator::replay_cache_room_in_s(u64 now_s) {
  std::lock_guard lock(replay_mutex_);
  forget_expired(now_s);
  if (seen_order_.size() < config_.replay_cache_max || seen_order_.empty()) return 0;
  // The oldest leaves once it is more than twice the window old.
  const u64 leaves_at = seen_order_.front().first + 2 * config_.window_s + 1;
  return static_cast<u32>(leaves_at > now_s ? leaves_at - now_s : 1);
}

namespace {

// Tokens this IO thread verified recently. A client sends the same token on every
// request until it expires, and verifying it (two libjwt decodes) costs more than
// the rest of a request; a hit still checks expiry, and that the key whose secret
// signed it still works (a rotation ends the old secret's tokens with its grace).
struct VerifiedToken {
  std::string token;
  u64 merchant_id = 0;
  std::string key_id;
  u64 expires_s = 0;
};
constexpr std::size_t kVerifiedTokens = 8;
thread_local std::array<VerifiedToken, kVerifiedTokens> verified_tokens;
thread_local std::size_t verified_next = 0;

}  // namespace

Problem Authenticator::bearer_token(std::string_view token, u64 now_s, Principal* principal) {
  for (const VerifiedToken& v : verified_tokens) {
    if (v.merchant_id == 0 || v.token != token) continue;
    if (v.expires_s <= now_s) break;  // verify again: it answers token_expired
    MerchantRef merchant = merchants_.find(v.merchant_id);
    if (merchant == nullptr || merchant->secret_of(v.key_id, now_s).empty()) break;
    principal->merchant = std::move(merchant);
    return {};
  }
  const std::string text(token);  // libjwt wants a C string
  // First read the claims without trusting them, to learn whose secret signs it;
  // then verify with that secret. Nothing from the first pass is used unverified.
  jwt_t* raw = nullptr;
  if (jwt_decode(&raw, text.c_str(), nullptr, 0) != 0 || raw == nullptr) {
    return refuse(ResultCode::invalid_token,
                  "the bearer token is neither the admin token nor a JWT");
  }
  JwtPtr unverified(raw);
  const char* subject = jwt_get_grant(unverified.get(), "sub");
  const auto merchant_id = subject ? parse_any_principal_id(subject) : std::nullopt;
  MerchantRef merchant = merchant_id ? merchants_.find(*merchant_id) : nullptr;
  if (merchant == nullptr) return refuse(ResultCode::invalid_token, "the token's sub is unknown");

  // Signed with the current secret, or the one before a rotation during its grace.
  const auto verify = [&](const std::string& secret) {
    jwt_t* decoded = nullptr;
    const int rc =
        jwt_decode(&decoded, text.c_str(), reinterpret_cast<const unsigned char*>(secret.data()),
                   static_cast<int>(secret.size()));
    JwtPtr out(decoded);
    if (rc != 0 || out == nullptr || jwt_get_alg(out.get()) != JWT_ALG_HS256) out.reset();
    return out;
  };
  std::string_view signed_by = merchant->key_id;
  JwtPtr checked = verify(merchant->secret);
  if (checked == nullptr && merchant->previous_valid(now_s)) {
    checked = verify(merchant->previous_secret);
    signed_by = merchant->previous_key_id;
  }
  if (checked == nullptr) {
    return refuse(ResultCode::invalid_token, "the token's signature does not verify (HS256)");
  }
  errno = 0;
  const long expires = jwt_get_grant_int(checked.get(), "exp");
  if (errno != 0) return refuse(ResultCode::invalid_token, "the token has no exp claim");
  if (expires <= 0 || static_cast<u64>(expires) <= now_s) {
    return refuse(ResultCode::token_expired, "the token has expired");
  }
  // nbf and iat, when present, and a bounded lifetime (issue: nbf was ignored, and an
  // exp of 2^62 was accepted: a token for ever).
  const auto claim = [&](const char* name) -> std::optional<u64> {
    errno = 0;
    const long value = jwt_get_grant_int(checked.get(), name);
    if (errno != 0) return std::nullopt;  // absent
    return value < 0 ? 0 : static_cast<u64>(value);
  };
  const std::optional<u64> not_before = claim("nbf");
  if (not_before && *not_before > now_s + config_.jwt_leeway_s) {
    return refuse(ResultCode::invalid_token, "the token is not valid yet (nbf)");
  }
  const std::optional<u64> issued = claim("iat");
  if (issued && *issued > now_s + config_.jwt_leeway_s) {
    return refuse(ResultCode::invalid_token, "the token was issued in the future (iat)");
  }
  const u64 from = issued ? *issued : now_s;
  if (static_cast<u64>(expires) > from + config_.jwt_lifetime_max_s) {
    return refuse(ResultCode::invalid_token,
                  fmt::format("the token lives longer than {} s (exp - iat, or exp - now without "
                              "iat); sign shorter-lived tokens",
                              config_.jwt_lifetime_max_s));
  }
  VerifiedToken& slot = verified_tokens[verified_next++ % kVerifiedTokens];
  slot = VerifiedToken{text, merchant->id, std::string(signed_by), static_cast<u64>(expires)};
  principal->merchant = std::move(merchant);
  return {};
}

}  // namespace paygate::api
