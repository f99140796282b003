#include "api/crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <vector>

#include "base/assert.h"

namespace paygate::api {
namespace {

constexpr char kHex[] = "0123456789abcdef";

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string random_hex(std::size_t bytes) {
  std::vector<unsigned char> raw(bytes);
  PG_ASSERT(RAND_bytes(raw.data(), static_cast<int>(raw.size())) == 1);
  std::string hex;
  hex.reserve(bytes * 2);
  for (const unsigned char b : raw) {
    hex += kHex[b >> 4];
    hex += kHex[b & 0xF];
  }
  return hex;
}

Digest hmac_sha256(std::string_view key, std::initializer_list<std::string_view> parts) noexcept {
  // The one-shot HMAC() needs one buffer; a thread's buffer is reused between calls.
  thread_local std::string message;
  message.clear();
  for (const std::string_view part : parts)
    message += part;
  Digest digest{};
  unsigned int length = 0;
  const unsigned char* result = HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
                                     reinterpret_cast<const unsigned char*>(message.data()),
                                     message.size(), digest.data(), &length);
  PG_ASSERT(result != nullptr && length == digest.size());
  return digest;
}

std::string to_hex(const Digest& digest) {
  std::string hex;
  hex.reserve(digest.size() * 2);
  for (const unsigned char b : digest) {
    hex += kHex[b >> 4];
    hex += kHex[b & 0xF];
  }
  return hex;
}

bool from_hex(std::string_view hex, Digest* out) noexcept {
  if (hex.size() != out->size() * 2) return false;
  for (std::size_t i = 0; i < out->size(); ++i) {
    const int high = hex_value(hex[2 * i]);
    const int low = hex_value(hex[2 * i + 1]);
    if (high < 0 || low < 0) return false;
    (*out)[i] = static_cast<unsigned char>(high << 4 | low);
  }
  return true;
}

bool equal_constant_time(std::string_view a, std::string_view b) noexcept {
  // Lengths are not secret (tokens have a fixed length); contents are.
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

bool equal_constant_time(const Digest& a, const Digest& b) noexcept {
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace paygate::api
