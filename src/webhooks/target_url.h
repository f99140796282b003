// Where a webhook may be sent (docs/WEBHOOKS.md, "Safety"): an http or https URL whose
// host does not resolve to this machine or to a private network (SSRF: a merchant
// must not make paygate post into the network it runs in), checked at registration
// and again at every send, against the addresses the send then connects to.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <vector>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "base/types.h"

namespace paygate::webhooks {

struct TargetUrl {
  bool https = false;
  std::string host;    // as written (brackets of an IPv6 literal removed)
  u16 port = 0;        // the scheme's when not written
  std::string target;  // path and query ("/" when empty)
};

// nullopt when `url` is not an absolute http(s) URL without user info or fragment,
// at most 2,048 characters, with a host; *why says what is wrong.
std::optional<TargetUrl> parse_target_url(std::string_view url, std::string* why);

// Whether an address may be posted to: not loopback, unspecified, private (10/8,
// 172.16/12, 192.168/16, fc00::/7), shared (100.64/10), link-local (169.254/16 — the
// cloud metadata services — fe80::/10), multicast or reserved, checked through
// IPv4-mapped IPv6 too. `allow_private` (tests, local setups) lets all through.
bool address_allowed(const boost::asio::ip::address& address, bool allow_private) noexcept;

// The address `host` names without a name server: an IP literal, or one of the other
// IPv4 spellings that getaddrinfo reads as one (2130706433, 0x7f000001, 127.1); else
// nullopt (a name).
std::optional<boost::asio::ip::address> literal_address(const std::string& host);

// The addresses of host:port (getaddrinfo: blocks), or none and *why.
std::vector<boost::asio::ip::tcp::endpoint> resolve_host(const std::string& host, u16 port,
                                                         std::string* why);
// The same, waiting at most `timeout_ms` (the lookup goes on in a thread of its own,
// and its late answer is dropped): for a caller that must not block long.
std::vector<boost::asio::ip::tcp::endpoint> resolve_host_within(const std::string& host, u16 port,
                                                                u32 timeout_ms, std::string* why);

}  // namespace paygate::webhooks
