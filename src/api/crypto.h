// The few cryptographic operations the gateway needs, on OpenSSL: random secrets,
// HMAC-SHA256, and comparison in constant time.
#pragma once

#include <array>
#include <string>
#include <string_view>

#include "base/types.h"

namespace paygate::api {

using Digest = std::array<unsigned char, 32>;

// `bytes` random bytes from the OS's CSPRNG, as lower-case hex. Aborts if the CSPRNG
// fails: a predictable secret is worse than no start.
std::string random_hex(std::size_t bytes);

// HMAC-SHA256 over the concatenation of `parts`.
Digest hmac_sha256(std::string_view key, std::initializer_list<std::string_view> parts) noexcept;

std::string to_hex(const Digest& digest);

// Decodes 64 hex digits (either case); false if malformed.
bool from_hex(std::string_view hex, Digest* out) noexcept;

// Compares without an early exit, so the time taken says nothing about where the
// first difference is.
bool equal_constant_time(std::string_view a, std::string_view b) noexcept;
bool equal_constant_time(const Digest& a, const Digest& b) noexcept;

}  // namespace paygate::api
