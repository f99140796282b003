// One connection to a Redis server (hiredis, blocking, with timeouts): what the order
// cache (cache/order_cache.h) talks through. It connects on first use and again after
// any failure, so a Redis restart costs the commands sent while it was down, never the
// caller's thread for longer than the timeouts. Scripts are sent by their SHA-1 and
// loaded when the server does not have them (after a restart or a SCRIPT FLUSH).
//
// Threads: one caller at a time (a pool hands connections out, cache/order_cache.h).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "base/types.h"

struct redisContext;
struct redisReply;

namespace paygate::cache {

struct RedisAddress {
  // "host:port" (TCP) or a path starting with '/' (a Unix socket).
  std::string address;
  u64 connect_timeout_ns = 1'000'000'000;
  u64 command_timeout_ns = 1'000'000'000;
};

// Parses "host:port" or "/path"; an error says what is wrong.
Status check_redis_address(std::string_view address);

// A reply, owned (freed with it). Only what the cache needs of it.
class RedisReply {
 public:
  RedisReply() = default;
  explicit RedisReply(redisReply* reply) noexcept : reply_(reply) {}
  ~RedisReply();
  RedisReply(RedisReply&& other) noexcept : reply_(other.reply_) { other.reply_ = nullptr; }
  RedisReply& operator=(RedisReply&& other) noexcept;
  RedisReply(const RedisReply&) = delete;
  RedisReply& operator=(const RedisReply&) = delete;

  bool is_nil() const noexcept;
  bool is_error() const noexcept;
  // A string or status reply's text (an error's message); empty for others.
  std::string_view text() const noexcept;
  bool is_integer() const noexcept;
  long long integer() const noexcept;
  // An array reply's elements (nil for other replies: size 0).
  std::size_t size() const noexcept;
  // Element i of an array reply, as a string (nullopt: nil).
  std::optional<std::string_view> element(std::size_t i) const noexcept;

 private:
  redisReply* reply_ = nullptr;
};

// A Lua script the server runs whole (atomically): sent by its SHA-1.
struct RedisScript {
  explicit RedisScript(std::string body);
  std::string body;
  std::string sha1;  // hex
};

class RedisConnection {
 public:
  explicit RedisConnection(RedisAddress address) : address_(std::move(address)) {}
  ~RedisConnection();
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;

  // Sends one command and returns its reply (an error reply is a reply, not a failed
  // Status: the Status fails when the server cannot be reached or does not answer in
  // time, and the connection is then dropped, to be made again by the next command).
  Result<RedisReply> command(const std::vector<std::string_view>& argv);
  // EVALSHA, loading the script first when the server does not have it.
  Result<RedisReply> run(const RedisScript& script, const std::vector<std::string_view>& keys,
                         const std::vector<std::string_view>& args);
  // Whether the last command failed because no connection could be made (not a
  // command that timed out or was cut on a connection made).
  bool unreachable() const noexcept { return unreachable_; }

 private:
  Status connect();
  void drop() noexcept;

  RedisAddress address_;
  redisContext* context_ = nullptr;
  bool unreachable_ = false;
};

}  // namespace paygate::cache
