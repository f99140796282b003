#include "cache/redis.h"

#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <sys/time.h>

#include <charconv>

#include "base/assert.h"

namespace paygate::cache {
namespace {

timeval to_timeval(u64 ns) noexcept {
  return timeval{.tv_sec = static_cast<time_t>(ns / 1'000'000'000),
                 .tv_usec = static_cast<suseconds_t>(ns % 1'000'000'000 / 1000)};
}

std::string sha1_hex(std::string_view text) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  const int done = EVP_Digest(text.data(), text.size(), digest, &size, EVP_sha1(), nullptr);
  PG_ASSERT(done == 1);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < size; ++i) {
    hex += kHex[digest[i] >> 4];
    hex += kHex[digest[i] & 15];
  }
  return hex;
}

struct HostPort {
  std::string host;
  int port = 0;
};

std::optional<HostPort> host_port(std::string_view address) {
  const std::size_t colon = address.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return std::nullopt;
  const std::string_view digits = address.substr(colon + 1);
  int port = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
  if (ec != std::errc() || end != digits.data() + digits.size() || port < 1 || port > 65535) {
    return std::nullopt;
  }
  return HostPort{std::string(address.substr(0, colon)), port};
}

}  // namespace

Status check_redis_address(std::string_view address) {
  if (!address.empty() && address.front() == '/') return Status::success();
  if (!host_port(address)) {
    return Status::invalid_config(
        "a Redis address is host:port (port 1-65535) or the path of a Unix socket");
  }
  return Status::success();
}

RedisReply::~RedisReply() {
  if (reply_ != nullptr) freeReplyObject(reply_);
}

RedisReply& RedisReply::operator=(RedisReply&& other) noexcept {
  if (this != &other) {
    if (reply_ != nullptr) freeReplyObject(reply_);
    reply_ = other.reply_;
    other.reply_ = nullptr;
  }
  return *this;
}

bool RedisReply::is_nil() const noexcept {
  return reply_ == nullptr || reply_->type == REDIS_REPLY_NIL;
}
bool RedisReply::is_error() const noexcept {
  return reply_ != nullptr && reply_->type == REDIS_REPLY_ERROR;
}
std::string_view RedisReply::text() const noexcept {
  if (reply_ == nullptr) return {};
  switch (reply_->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
      return {reply_->str, reply_->len};
    default:
      return {};
  }
}
bool RedisReply::is_integer() const noexcept {
  return reply_ != nullptr && reply_->type == REDIS_REPLY_INTEGER;
}
long long RedisReply::integer() const noexcept {
  return is_integer() ? reply_->integer : 0;
}
std::size_t RedisReply::size() const noexcept {
  return reply_ != nullptr && reply_->type == REDIS_REPLY_ARRAY ? reply_->elements : 0;
}
std::optional<std::string_view> RedisReply::element(std::size_t i) const noexcept {
  if (i >= size()) return std::nullopt;
  const redisReply* e = reply_->element[i];
  if (e->type != REDIS_REPLY_STRING && e->type != REDIS_REPLY_STATUS) return std::nullopt;
  return std::string_view(e->str, e->len);
}

RedisScript::RedisScript(std::string text) : body(std::move(text)), sha1(sha1_hex(body)) {}

RedisConnection::~RedisConnection() {
  drop();
}

void RedisConnection::drop() noexcept {
  if (context_ != nullptr) redisFree(context_);
  context_ = nullptr;
}

Status RedisConnection::connect() {
  const timeval connect_timeout = to_timeval(address_.connect_timeout_ns);
  const std::string& a = address_.address;
  if (!a.empty() && a.front() == '/') {
    context_ = redisConnectUnixWithTimeout(a.c_str(), connect_timeout);
  } else {
    const std::optional<HostPort> hp = host_port(a);
    if (!hp) return Status::invalid_config("bad Redis address " + a);
    context_ = redisConnectWithTimeout(hp->host.c_str(), hp->port, connect_timeout);
  }
  if (context_ == nullptr) return Status::io_error("cannot make a Redis connection (memory)");
  if (context_->err != 0) {
    Status failed = Status::io_error("cannot connect to Redis at " + a + ": " + context_->errstr);
    drop();
    return failed;
  }
  if (redisSetTimeout(context_, to_timeval(address_.command_timeout_ns)) != REDIS_OK) {
    drop();
    return Status::io_error("cannot set the Redis command timeout");
  }
  return Status::success();
}

Result<RedisReply> RedisConnection::command(const std::vector<std::string_view>& argv) {
  unreachable_ = false;
  if (context_ == nullptr) {
    if (Status connected = connect(); !connected.ok()) {
      unreachable_ = true;
      return connected;
    }
  }
  std::vector<const char*> parts;
  std::vector<std::size_t> sizes;
  parts.reserve(argv.size());
  sizes.reserve(argv.size());
  for (const std::string_view arg : argv) {
    parts.push_back(arg.data());
    sizes.push_back(arg.size());
  }
  auto* reply = static_cast<redisReply*>(
      redisCommandArgv(context_, static_cast<int>(argv.size()), parts.data(), sizes.data()));
  if (reply == nullptr) {
    // The connection is unusable after any failure (hiredis): make a new one next time.
    Status failed = Status::io_error(std::string("Redis did not answer: ") + context_->errstr);
    drop();
    return failed;
  }
  return RedisReply(reply);
}

Result<RedisReply> RedisConnection::run(const RedisScript& script,
                                        const std::vector<std::string_view>& keys,
                                        const std::vector<std::string_view>& args) {
  const std::string key_count = std::to_string(keys.size());
  std::vector<std::string_view> argv;
  argv.reserve(3 + keys.size() + args.size());
  argv.push_back("EVALSHA");
  argv.push_back(script.sha1);
  argv.push_back(key_count);
  argv.insert(argv.end(), keys.begin(), keys.end());
  argv.insert(argv.end(), args.begin(), args.end());
  Result<RedisReply> reply = command(argv);
  if (!reply.ok() || !reply.value().is_error() || !reply.value().text().starts_with("NOSCRIPT")) {
    return reply;
  }
  // Not loaded (a new or restarted server): EVAL sends the body and leaves it loaded.
  argv[0] = "EVAL";
  argv[1] = script.body;
  return command(argv);
}

}  // namespace paygate::cache
