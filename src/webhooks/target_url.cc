#include "webhooks/target_url.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>

namespace paygate::webhooks {

std::optional<TargetUrl> parse_target_url(std::string_view url, std::string* why) {
  const auto refuse = [&](const char* reason) {
    *why = reason;
    return std::optional<TargetUrl>();
  };
  if (url.size() > 2048) return refuse("a url is at most 2048 characters");
  for (const char c : url) {
    if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f) {
      return refuse("a url has no spaces, controls or non-ASCII characters");
    }
  }
  TargetUrl out;
  if (url.starts_with("https://")) {
    out.https = true;
    url.remove_prefix(8);
  } else if (url.starts_with("http://")) {
    url.remove_prefix(7);
  } else {
    return refuse("only http:// and https:// urls");
  }
  if (url.find('#') != std::string_view::npos) return refuse("a url has no #fragment");
  const std::size_t path_at = url.find_first_of("/?");
  std::string_view authority = url.substr(0, path_at);
  out.target = path_at == std::string_view::npos ? "/" : std::string(url.substr(path_at));
  if (out.target.front() == '?') out.target.insert(out.target.begin(), '/');
  if (authority.find('@') != std::string_view::npos) return refuse("a url has no user info");
  std::string_view port_text;
  if (authority.starts_with('[')) {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) return refuse("an IPv6 host needs its ]");
    out.host = std::string(authority.substr(1, close - 1));
    const std::string_view rest = authority.substr(close + 1);
    if (!rest.empty() && !rest.starts_with(':')) return refuse("malformed host");
    if (!rest.empty()) port_text = rest.substr(1);
  } else {
    const std::size_t colon = authority.find(':');
    out.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port_text = authority.substr(colon + 1);
  }
  if (out.host.empty()) return refuse("a url needs a host");
  out.port = out.https ? 443 : 80;
  if (!port_text.empty()) {
    unsigned port = 0;
    const auto [end, ec] =
        std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (ec != std::errc() || end != port_text.data() + port_text.size() || port == 0 ||
        port > 65535) {
      return refuse("malformed port");
    }
    out.port = static_cast<u16>(port);
  }
  return out;
}

namespace {
bool v4_allowed(const boost::asio::ip::address_v4& a) noexcept {
  const u32 v = a.to_uint();
  const auto in = [v](u32 net, int bits) {
    return bits == 0 || (v >> (32 - bits)) == (net >> (32 - bits));
  };
  return !(in(0x00000000, 8) ||   // "this" network, 0.0.0.0
           in(0x0A000000, 8) ||   // 10/8
           in(0x64400000, 10) ||  // 100.64/10, shared (carrier-grade NAT)
           in(0x7F000000, 8) ||   // loopback
           in(0xA9FE0000, 16) ||  // 169.254/16, link-local: metadata services
           in(0xAC100000, 12) ||  // 172.16/12
           in(0xC0000000, 24) ||  // 192.0.0/24, protocol assignments
           in(0xC0000200, 24) ||  // 192.0.2/24, documentation
           in(0xC0A80000, 16) ||  // 192.168/16
           in(0xC6120000, 15) ||  // 198.18/15, benchmarking
           in(0xC6336400, 24) ||  // 198.51.100/24, documentation
           in(0xCB007100, 24) ||  // 203.0.113/24, documentation
           in(0xE0000000, 4) ||   // multicast
           in(0xF0000000, 4));    // reserved, broadcast
}
}  // namespace

bool address_allowed(const boost::asio::ip::address& address, bool allow_private) noexcept {
  if (allow_private) return true;
  if (address.is_v4()) return v4_allowed(address.to_v4());
  const boost::asio::ip::address_v6 a = address.to_v6();
  if (a.is_v4_mapped()) {
    return v4_allowed(boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, a));
  }
  const auto bytes = a.to_bytes();
  if (bytes[0] == 0x20 && bytes[1] == 0x02) {
    // 2002::/16 (6to4) carries an IPv4 address in its next four bytes: judged by it.
    return v4_allowed(boost::asio::ip::address_v4(
        boost::asio::ip::address_v4::bytes_type{bytes[2], bytes[3], bytes[4], bytes[5]}));
  }
  const bool unique_local = (bytes[0] & 0xfe) == 0xfc;  // fc00::/7
  const bool nat64 = bytes[0] == 0x00 && bytes[1] == 0x64 && bytes[2] == 0xff && bytes[3] == 0x9b;
  return !(a.is_loopback() || a.is_unspecified() || a.is_link_local() || a.is_site_local() ||
           a.is_multicast() || a.is_v4_compatible() || unique_local || nat64);
}

std::optional<boost::asio::ip::address> literal_address(const std::string& host) {
  boost::system::error_code not_literal;
  const boost::asio::ip::address address = boost::asio::ip::make_address(host, not_literal);
  if (!not_literal) return address;
  // The IPv4 spellings that getaddrinfo (inet_aton) reads without asking a name server:
  // 2130706433, 0x7f000001, 127.1, 0177.0.0.1 are all 127.0.0.1.
  in_addr v4{};
  if (::inet_aton(host.c_str(), &v4) != 0) return boost::asio::ip::address_v4(ntohl(v4.s_addr));
  return std::nullopt;
}

std::vector<boost::asio::ip::tcp::endpoint> resolve_host(const std::string& host, u16 port,
                                                         std::string* why) {
  namespace ip = boost::asio::ip;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
  std::vector<ip::tcp::endpoint> out;
  if (rc != 0) {
    *why = ::gai_strerror(rc);
    return out;
  }
  for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
    if (a->ai_family == AF_INET) {
      sockaddr_in in{};
      std::memcpy(&in, a->ai_addr, sizeof in);
      out.emplace_back(ip::address_v4(ntohl(in.sin_addr.s_addr)), port);
    } else if (a->ai_family == AF_INET6) {
      sockaddr_in6 in6{};
      std::memcpy(&in6, a->ai_addr, sizeof in6);
      ip::address_v6::bytes_type bytes;
      std::memcpy(bytes.data(), in6.sin6_addr.s6_addr, bytes.size());
      out.emplace_back(ip::address_v6(bytes, in6.sin6_scope_id), port);
    }
  }
  ::freeaddrinfo(found);
  if (out.empty()) *why = "no address";
  return out;
}

std::vector<boost::asio::ip::tcp::endpoint> resolve_host_within(const std::string& host, u16 port,
                                                                u32 timeout_ms, std::string* why) {
  struct Shared {
    std::mutex mutex;
    std::condition_variable done;
    bool ready = false;
    std::vector<boost::asio::ip::tcp::endpoint> found;
    std::string why;
  };
  auto shared = std::make_shared<Shared>();
  std::thread([shared, host, port] {
    std::string reason;
    std::vector<boost::asio::ip::tcp::endpoint> found = resolve_host(host, port, &reason);
    std::lock_guard lock(shared->mutex);
    shared->found = std::move(found);
    shared->why = std::move(reason);
    shared->ready = true;
    shared->done.notify_all();
  }).detach();
  std::unique_lock lock(shared->mutex);
  if (!shared->done.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                             [&] { return shared->ready; })) {
    *why = "the lookup took too long";
    return {};
  }
  *why = shared->why;
  return shared->found;
}

}  // namespace paygate::webhooks
