#include "webhooks/deliverer.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <functional>
#include <optional>
#include <random>
#include <unordered_map>
#include <unordered_set>

#include <fmt/format.h>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "api/crypto.h"
#include "base/log.h"
#include "base/thread.h"
#include "webhooks/target_url.h"

namespace paygate::webhooks {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {
u64 wall_ns() {
  return static_cast<u64>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count());
}
constexpr u32 kEventsPerRead = 500;
constexpr u32 kEventReadsPerRound = 4;
}  // namespace

std::string Deliverer::signature(const std::vector<std::string>& secrets, u64 t,
                                 std::string_view body) {
  const std::string stamp = std::to_string(t);
  std::string out = "t=" + stamp;
  for (const std::string& secret : secrets) {
    out += ",v1=";
    out += api::to_hex(api::hmac_sha256(secret, {stamp, ".", body}));
  }
  return out;
}

// The worker's state, all on its one thread (the io_context's).
struct Deliverer::Engine {
  explicit Engine(Deliverer& owner)
      : d(owner), tick(io), resolvers(kResolverThreads), tls(asio::ssl::context::tls_client) {}
  // (Lookups queued are dropped; one in getaddrinfo is waited for.)
  ~Engine() {
    resolvers.stop();
    resolvers.join();
  }

  Deliverer& d;
  WebhookCounters& counters() noexcept { return d.counters_; }
  asio::io_context io;
  asio::steady_timer tick;
  // Name lookups block (getaddrinfo): they run on threads of their own, so that a slow
  // name server holds only its lookups, and each attempt's deadline covers its lookup.
  asio::thread_pool resolvers;
  std::mt19937_64 random{std::random_device{}()};
  u64 endpoints_version = 0;
  bool endpoints_loaded = false;
  std::unordered_map<u64, std::vector<Endpoint>> endpoints_by_merchant;
  std::unordered_map<u64, Endpoint> endpoints_by_id;
  std::unordered_map<u32, Cursor> cursors;  // by group
  bool cursors_loaded = false;
  // Attempts in flight: by delivery, by (order, target) (an order's next event to a
  // target waits, whatever brought the earlier one back: a resend), by target and by
  // merchant (the limits). An outcome stays "in flight" until recorded, so that due()
  // cannot hand the same delivery out twice.
  std::unordered_set<u64> in_flight;
  std::unordered_set<std::string> in_flight_orders;
  std::unordered_map<std::string, u32> per_target;
  std::unordered_map<u64, u32> per_merchant;
  // Name lookups on their way, per merchant: at most kLookupsPerMerchant, so that one
  // merchant's slow name server holds few of the lookup threads; the rest wait their
  // turn (within their attempts' deadlines).
  struct Lookups {
    u32 running = 0;
    std::deque<std::function<void()>> waiting;
  };
  std::unordered_map<u64, Lookups> lookups;
  // A lookup of `merchant`'s ended: the next one waiting starts.
  void lookup_done(u64 merchant) {
    const auto it = lookups.find(merchant);
    if (it == lookups.end()) return;
    --it->second.running;
    if (!it->second.waiting.empty()) {
      std::function<void()> next = std::move(it->second.waiting.front());
      it->second.waiting.pop_front();
      asio::post(io, std::move(next));
    } else if (it->second.running == 0) {
      lookups.erase(it);
    }
  }
  struct Finished {
    Outcome outcome;
    Delivery delivery;  // its key fields (no body)
  };
  std::vector<Finished> finished;
  // The client side of https: the system's trusted roots (and [webhooks] ca_file),
  // TLS 1.2 and later, the peer's certificate verified.
  asio::ssl::context tls;
  // Kept-alive connections by origin ("host:port"), http and https apart, each with
  // when it was put back; at most kIdleMax in all, none older than kIdleNs.
  template <typename Stream>
  struct Idle {
    std::unique_ptr<Stream> stream;
    u64 since_ns = 0;
  };
  template <typename Stream>
  using Pool = std::unordered_map<std::string, std::vector<Idle<Stream>>>;
  Pool<beast::tcp_stream> idle_plain;
  Pool<beast::ssl_stream<beast::tcp_stream>> idle_tls;
  std::size_t idle_count = 0;
  template <typename Stream>
  Pool<Stream>& idle() {
    if constexpr (std::is_same_v<Stream, beast::tcp_stream>) {
      return idle_plain;
    } else {
      return idle_tls;
    }
  }
  template <typename Stream>
  std::unique_ptr<Stream> take_idle(const std::string& origin) {
    Pool<Stream>& pool = idle<Stream>();
    const auto it = pool.find(origin);
    if (it == pool.end()) return nullptr;
    std::unique_ptr<Stream> out = std::move(it->second.back().stream);
    it->second.pop_back();
    if (it->second.empty()) pool.erase(it);
    --idle_count;
    return out;
  }
  template <typename Stream>
  void put_idle(const std::string& origin, std::unique_ptr<Stream> stream) {
    if (idle_count >= kIdleMax || stopping) return;  // closed as it goes
    idle<Stream>()[origin].push_back({std::move(stream), steady_ns()});
    ++idle_count;
  }
  template <typename Stream>
  void prune(Pool<Stream>& pool, u64 now) {
    for (auto it = pool.begin(); it != pool.end();) {
      auto& list = it->second;
      const auto old = std::remove_if(list.begin(), list.end(), [&](const Idle<Stream>& i) {
        return now - i.since_ns > kIdleNs;
      });
      idle_count -= static_cast<std::size_t>(list.end() - old);
      list.erase(old, list.end());
      it = list.empty() ? pool.erase(it) : std::next(it);
    }
  }

  u64 last_expire_ns = 0;
  u64 last_prune_ns = 0;
  bool prune_more = false;  // the last prune removed a whole batch
  u64 last_failure_log_ns = 0;
  bool round_posted = false;
  bool sendable_backlog = false;  // the last launch had more to send than slots
  bool stopping = false;

  static u64 steady_ns() {
    return static_cast<u64>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                std::chrono::steady_clock::now().time_since_epoch())
                                .count());
  }

  void schedule_tick() {
    tick.expires_after(std::chrono::nanoseconds(d.config_.poll_interval_ns));
    tick.async_wait([this](beast::error_code ec) {
      if (ec || stopping) return;
      round();
      schedule_tick();
    });
  }
  // A round soon (an attempt ended and slots are free), once however many ask.
  void round_soon() {
    if (round_posted || stopping) return;
    round_posted = true;
    asio::post(io, [this] {
      round_posted = false;
      if (!stopping) round();
    });
  }

  void round() {
    record();
    // Events become deliveries only with the endpoints known as they are now (a
    // failed load would make them to no one), and attempts start only then (one to an
    // endpoint not known would fail as deleted).
    if (!reload_endpoints()) return;
    read_events();
    const u64 now = wall_ns();
    if (now - last_expire_ns > kNanosPerSecond) {
      last_expire_ns = now;
      const Result<u64> expired =
          d.store_->expire(now, std::vector<u64>(in_flight.begin(), in_flight.end()));
      if (expired.ok()) {
        d.counters_.failed.fetch_add(expired.value(), std::memory_order_relaxed);
      } else {
        store_failed(expired.status());
      }
      prune(idle_plain, steady_ns());
      prune(idle_tls, steady_ns());
    }
    prune_deliveries(now);
    launch(now);
  }

  // Final deliveries older than [webhooks] retain_s leave the store: a batch a second
  // while there are more, else a look every minute (or half retain_s, when shorter);
  // each batch is one short transaction on this thread, so attempts go on between.
  void prune_deliveries(u64 now) {
    if (d.config_.retain_ns == 0 || now < d.config_.retain_ns) return;
    const u64 idle_every = std::min<u64>(60 * kNanosPerSecond, d.config_.retain_ns / 2);
    if (now - last_prune_ns < (prune_more ? std::min(kNanosPerSecond, idle_every) : idle_every)) {
      return;
    }
    last_prune_ns = now;
    const Result<u64> pruned = d.store_->prune(now - d.config_.retain_ns, kPruneBatch);
    if (!pruned.ok()) {
      prune_more = false;
      return store_failed(pruned.status());
    }
    prune_more = pruned.value() == kPruneBatch;
    d.counters_.pruned.fetch_add(pruned.value(), std::memory_order_relaxed);
  }
  static constexpr u32 kPruneBatch = 2'000;

  void store_failed(const Status& s) {
    d.counters_.store_failures.fetch_add(1, std::memory_order_relaxed);
    // Logged at most once a second: a store that keeps failing fails every round.
    const u64 now = steady_ns();
    if (now - last_failure_log_ns < kNanosPerSecond) return;
    last_failure_log_ns = now;
    PG_LOG_ERROR("event=webhook_store_failed error=\"{}\"", s.to_string());
  }

  static std::string order_target(const Delivery& delivery) {
    // (An order's id and a withdrawal's can be the same number.)
    return fmt::format("{}|{}|{}", delivery.type.starts_with("withdrawal.") ? 'w' : 'o',
                       delivery.order_id, delivery.target);
  }

  void record() {
    if (finished.empty()) return;
    std::vector<Outcome> outcomes;
    outcomes.reserve(finished.size());
    for (const Finished& f : finished)
      outcomes.push_back(f.outcome);
    if (Status s = d.store_->record(outcomes); !s.ok()) {
      // Not recorded: they stay in flight and the record is tried again next round
      // (nothing is sent meanwhile that could overtake them).
      store_failed(s);
      return;
    }
    for (const Finished& f : finished) {
      in_flight.erase(f.outcome.id);
      in_flight_orders.erase(order_target(f.delivery));
      if (--per_target[f.delivery.target] == 0) per_target.erase(f.delivery.target);
      if (--per_merchant[f.delivery.merchant] == 0) per_merchant.erase(f.delivery.merchant);
      if (f.outcome.delivered) {
        d.counters_.delivered.fetch_add(1, std::memory_order_relaxed);
      } else {
        d.counters_.attempt_failures.fetch_add(1, std::memory_order_relaxed);
        // (As the store decides, but for a resend meanwhile.)
        if (f.outcome.next_attempt_ns == 0 || f.outcome.at_ns >= f.delivery.give_up_ns) {
          d.counters_.failed.fetch_add(1, std::memory_order_relaxed);
        }
      }
    }
    d.counters_.in_flight.store(in_flight.size(), std::memory_order_relaxed);
    finished.clear();
  }

  bool reload_endpoints() {
    const u64 version = d.endpoints_version_.load(std::memory_order_acquire);
    if (endpoints_loaded && version == endpoints_version) return true;
    Result<std::vector<Endpoint>> all = d.store_->endpoints(0);
    if (!all.ok()) {
      store_failed(all.status());
      return false;
    }
    endpoints_version = version;
    endpoints_loaded = true;
    endpoints_by_merchant.clear();
    endpoints_by_id.clear();
    for (Endpoint& e : all.value()) {
      endpoints_by_merchant[e.merchant].push_back(e);
      endpoints_by_id.emplace(e.id, std::move(e));
    }
    return true;
  }

  // Turns each group's new outbox events into deliveries, written with the group's
  // cursor after them — unless the last launch found more deliveries it could send
  // than it had slots for: a backlog is made into deliveries as they are sent, not all
  // at once (the outbox is the queue; a burst of writes here is a burst on the disk the
  // journals sync on). Deliveries no slot could take now — to a busy target or
  // merchant, a disabled endpoint, behind an earlier event of their order — do not
  // count, so they hold no one else's events back.
  void read_events() {
    if (sendable_backlog) return;
    if (!cursors_loaded) {
      Result<std::vector<Cursor>> stored = d.store_->cursors();
      if (!stored.ok()) return store_failed(stored.status());
      for (const Cursor& c : stored.value())
        cursors[c.group] = c;
      cursors_loaded = true;
    }
    Result<std::vector<history::Store::Watermark>> groups = d.history_.watermarks();
    if (!groups.ok()) return store_failed(groups.status());
    for (const history::Store::Watermark& w : groups.value()) {
      Cursor& at = cursors.try_emplace(w.group, Cursor{.group = w.group}).first->second;
      for (u32 reads = 0; reads < kEventReadsPerRound; ++reads) {
        // The endpoints as they are, with no change under way (Deliverer::EndpointChange),
        // before the events are read, and still so after they are judged: else this
        // stretch waits for the next round.
        if (d.endpoint_changes_.load(std::memory_order_acquire) != 0) return;
        if (!reload_endpoints()) return;
        Result<std::vector<history::OrderEventRow>> events =
            d.history_.order_events(w.group, at.sequence, at.n, kEventsPerRead);
        if (!events.ok()) return store_failed(events.status());
        if (events.value().empty()) break;
        std::vector<NewDelivery> made;
        if (Status s = deliveries_of(events.value(), &made); !s.ok()) return store_failed(s);
        if (d.endpoint_changes_.load(std::memory_order_acquire) != 0 ||
            d.endpoints_version_.load(std::memory_order_acquire) != endpoints_version) {
          return;
        }
        const history::OrderEventRow& last = events.value().back();
        const Cursor next{.group = w.group, .sequence = last.sequence, .n = last.n};
        if (Status s = d.store_->enqueue(made, next); !s.ok()) return store_failed(s);
        at = next;
        d.counters_.events.fetch_add(events.value().size(), std::memory_order_relaxed);
        d.counters_.made.fetch_add(made.size(), std::memory_order_relaxed);
        if (events.value().size() < kEventsPerRead) break;
      }
    }
  }

  // Each event's deliveries: to its order's ipn_url, else to each endpoint of its
  // recipient (the order's merchant, the withdrawn account's owner) that wants its type.
  Status deliveries_of(const std::vector<history::OrderEventRow>& events,
                       std::vector<NewDelivery>* made) {
    const u64 now = wall_ns();
    for (const history::OrderEventRow& e : events) {
      const history::OrderRow* texts = e.order_row ? &*e.order_row : nullptr;
      std::vector<std::pair<u64, std::string>> targets;  // (endpoint, url)
      if (texts != nullptr && !texts->ipn_url.empty()) {
        targets.emplace_back(0, texts->ipn_url);
      } else if (const auto it = endpoints_by_merchant.find(e.recipient);
                 it != endpoints_by_merchant.end()) {
        for (const Endpoint& endpoint : it->second) {
          // As the endpoint was when the event happened: one disabled since gets a
          // delivery that waits until it is enabled again.
          if (endpoint.receives(e.type, e.at_ns)) targets.emplace_back(endpoint.id, endpoint.url);
        }
      }
      if (targets.empty()) continue;
      const std::string body = d.render_(e, texts);
      for (auto& [endpoint, url] : targets) {
        made->push_back(NewDelivery{.event = history::order_event_id(e.group, e.sequence, e.n),
                                    .type = e.type,
                                    .order_id = e.object_id,
                                    .merchant = e.recipient,
                                    .endpoint = endpoint,
                                    .url = std::move(url),
                                    .body = body,
                                    .created_ns = now,
                                    .give_up_ns = now + d.config_.retry_period_ns});
      }
    }
    return Status::success();
  }

  void launch(u64 now) {
    if (in_flight.size() >= d.config_.concurrency) {
      sendable_backlog = true;
      return;
    }
    std::vector<std::string> busy;
    for (const auto& [target, n] : per_target) {
      if (n >= d.config_.per_target) busy.push_back(target);
    }
    std::vector<u64> busy_merchants;
    for (const auto& [merchant, n] : per_merchant) {
      if (n >= d.config_.per_merchant) busy_merchants.push_back(merchant);
    }
    // (Those in flight, and the events after them of their orders, are not due.)
    const u32 room = d.config_.concurrency - static_cast<u32>(in_flight.size());
    Result<std::vector<Delivery>> due = d.store_->due(
        now, std::vector<u64>(in_flight.begin(), in_flight.end()), busy, busy_merchants, room);
    if (!due.ok()) return store_failed(due.status());
    sendable_backlog = due.value().size() >= room;
    for (Delivery& delivery : due.value()) {
      if (in_flight.size() >= d.config_.concurrency) break;
      if (in_flight.contains(delivery.id) || in_flight_orders.contains(order_target(delivery))) {
        continue;
      }
      u32& target_n = per_target[delivery.target];
      u32& merchant_n = per_merchant[delivery.merchant];
      if (target_n >= d.config_.per_target || merchant_n >= d.config_.per_merchant) continue;
      ++target_n;
      ++merchant_n;
      in_flight.insert(delivery.id);
      in_flight_orders.insert(order_target(delivery));
      start_attempt(std::move(delivery));
    }
    // (Counts at zero left by the loop's look-ups go.)
    std::erase_if(per_target, [](const auto& p) { return p.second == 0; });
    std::erase_if(per_merchant, [](const auto& p) { return p.second == 0; });
    d.counters_.in_flight.store(in_flight.size(), std::memory_order_relaxed);
  }

  std::vector<std::string> secrets_of(const Delivery& delivery, u64 now_s) {
    if (delivery.endpoint == 0) return d.secrets_(delivery.merchant, now_s);
    const auto it = endpoints_by_id.find(delivery.endpoint);
    if (it == endpoints_by_id.end()) return {};
    std::vector<std::string> out{it->second.secret};
    if (!it->second.previous_secret.empty() && now_s < it->second.previous_until_s) {
      out.push_back(it->second.previous_secret);
    }
    return out;
  }

  // When to try again: full jitter over an exponential bound (base << attempts-1, at
  // most retry_max). The store fails it past its give-up time.
  u64 next_attempt(const Delivery& delivery, u64 now) {
    const u32 doublings = std::min<u32>(delivery.attempts, 62);
    const u64 base = d.config_.retry_base_ns;
    const u64 cap =
        base > (d.config_.retry_max_ns >> doublings) ? d.config_.retry_max_ns : base << doublings;
    const u64 wait = std::uniform_int_distribution<u64>(
        kNanosPerSecond / 1000, std::max<u64>(cap, kNanosPerSecond / 1000))(random);
    return now + wait;
  }

  // An attempt's end. `permanent`: no attempt can do better (no retry).
  void finish(Delivery& delivery, u32 status, std::string error, bool permanent = false) {
    const u64 now = wall_ns();
    const bool delivered = error.empty() && status >= 200 && status < 300;
    if (!delivered && error.empty()) error = fmt::format("answered {}", status);
    delivery.body.clear();
    const u64 next = delivered || permanent ? 0 : next_attempt(delivery, now);
    finished.push_back(
        Finished{.outcome = Outcome{.id = delivery.id,
                                    .delivered = delivered,
                                    .http_status = status,
                                    .error = delivered ? std::string() : std::move(error),
                                    .at_ns = now,
                                    .next_attempt_ns = next,
                                    .url = delivery.url},
                 .delivery = std::move(delivery)});
    if (stopping) return;
    if (finished.size() >= 32 || finished.size() * 2 >= in_flight.size()) round_soon();
  }

  void start_attempt(Delivery delivery);

  static constexpr std::size_t kResolverThreads = 16;
  static constexpr u32 kLookupsPerMerchant = 4;
  static constexpr std::size_t kIdleMax = 256;
  static constexpr u64 kIdleNs = 30 * kNanosPerSecond;
};

namespace {

template <bool kTls>
using StreamOf = std::conditional_t<kTls, beast::ssl_stream<beast::tcp_stream>, beast::tcp_stream>;

// One post of one delivery: resolve (checking every address), connect or reuse a
// kept-alive connection (https: TLS, the server's certificate checked against the
// host name), send, read the answer (up to a limit), and report. The deadline covers
// it all, the name lookup included.
template <bool kTls>
class Attempt : public std::enable_shared_from_this<Attempt<kTls>> {
 public:
  using Engine = Deliverer::Engine;
  using Stream = StreamOf<kTls>;
  Attempt(Engine& engine, Delivery delivery, TargetUrl url, std::vector<std::string> secrets,
          const WebhookConfig& config)
      : engine_(engine),
        delivery_(std::move(delivery)),
        url_(std::move(url)),
        secrets_(std::move(secrets)),
        config_(config),
        deadline_(std::chrono::steady_clock::now() + std::chrono::nanoseconds(config.timeout_ns)),
        timer_(engine.io),
        origin_(fmt::format("{}:{}", url_.host, url_.port)) {}

  void start() {
    timer_.expires_at(deadline_);
    timer_.async_wait([self = this->shared_from_this()](beast::error_code ec) {
      if (!ec) self->done(0, "timed out");
    });
    stream_ = engine_.template take_idle<Stream>(origin_);
    if (stream_ != nullptr && unsolicited_bytes()) stream_.reset();  // not to be trusted
    if (stream_ != nullptr) {
      reused_ = true;
      return send();
    }
    resolve();
  }

 private:
  beast::tcp_stream& tcp() { return beast::get_lowest_layer(*stream_); }

  // Whether an idle connection holds bytes no request asked for (the receiver answered
  // twice, or late): read as the next delivery's answer they could mark it delivered.
  bool unsolicited_bytes() {
    beast::error_code ec;
    const std::size_t waiting = tcp().socket().available(ec);
    if (ec || waiting > 0) return true;
    if constexpr (kTls) {
      if (SSL_pending(stream_->native_handle()) > 0) return true;
    }
    return false;
  }

  void resolve() {
    reused_ = false;
    // Few lookups per merchant at once: its slow name server must not hold the threads
    // every merchant's lookups need. Past that, this attempt waits its turn.
    Engine::Lookups& lookups = engine_.lookups[delivery_.merchant];
    if (lookups.running >= Engine::kLookupsPerMerchant) {
      lookups.waiting.push_back([self = this->shared_from_this()] {
        if (self->finished_) {  // timed out while it waited: its turn goes on
          ++self->engine_.lookups[self->delivery_.merchant].running;
          return self->engine_.lookup_done(self->delivery_.merchant);
        }
        self->resolve();
      });
      return;
    }
    ++lookups.running;
    asio::post(engine_.resolvers, [self = this->shared_from_this()] {
      std::string why;
      std::vector<tcp::endpoint> found;
      // An attempt that timed out while its lookup waited for a thread needs none.
      if (!self->abandoned_.load(std::memory_order_acquire)) {
        found = resolve_host(self->url_.host, self->url_.port, &why);
      }
      asio::post(self->engine_.io, [self, found = std::move(found), why = std::move(why)] {
        self->engine_.lookup_done(self->delivery_.merchant);
        self->resolved(found, why);
      });
    });
  }

  void resolved(const std::vector<tcp::endpoint>& found, const std::string& why) {
    if (finished_) return;  // timed out meanwhile
    if (found.empty()) return done(0, "cannot resolve the host: " + why);
    // Every address the name has must be allowed (a name with one private address
    // among public ones could be made to reach it), and only these are connected to
    // (no second lookup that could answer otherwise). The merchant is told only that
    // it is refused; the log says where it pointed.
    for (const tcp::endpoint& endpoint : found) {
      if (!address_allowed(endpoint.address(), config_.allow_private)) {
        engine_.counters().refused_addresses.fetch_add(1, std::memory_order_relaxed);
        PG_LOG_WARN("event=webhook_address_refused delivery={} host={} address={}", delivery_.id,
                    url_.host, endpoint.address().to_string());
        return done(0,
                    "the host resolves to a forbidden address (loopback, private, "
                    "link-local or reserved)");
      }
    }
    if constexpr (kTls) {
      stream_ = std::make_unique<Stream>(engine_.io, engine_.tls);
      // The certificate must name the host (OpenSSL checks it during the handshake); a
      // name also goes as SNI (an address literal does not, RFC 6066).
      SSL* ssl = stream_->native_handle();
      beast::error_code not_ip;
      (void)asio::ip::make_address(url_.host, not_ip);
      const bool named =
          not_ip ? SSL_set_tlsext_host_name(ssl, url_.host.c_str()) == 1 &&
                       SSL_set1_host(ssl, url_.host.c_str()) == 1
                 : X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), url_.host.c_str()) == 1;
      if (!named) return done(0, "cannot set the TLS server name");
    } else {
      stream_ = std::make_unique<Stream>(engine_.io);
    }
    tcp().expires_at(deadline_);
    tcp().async_connect(
        found, [self = this->shared_from_this()](beast::error_code error, const tcp::endpoint&) {
          if (self->finished_) return;
          if (error) return self->done(0, "cannot connect: " + error.message());
          self->handshake();
        });
  }

  void handshake() {
    if constexpr (kTls) {
      stream_->async_handshake(asio::ssl::stream_base::client,
                               [self = this->shared_from_this()](beast::error_code error) {
                                 if (self->finished_) return;
                                 if (error) return self->done(0, "TLS: " + error.message());
                                 self->send();
                               });
    } else {
      send();
    }
  }

  void send() {
    // Signed now, as it goes (t is the time of sending, for the receiver's tolerance).
    request_ = {};
    request_.method(http::verb::post);
    request_.target(url_.target);
    request_.version(11);
    const bool default_port = url_.port == (kTls ? 443 : 80);
    const std::string host =
        url_.host.find(':') != std::string::npos ? "[" + url_.host + "]" : url_.host;
    request_.set(http::field::host, default_port ? host : fmt::format("{}:{}", host, url_.port));
    request_.set(http::field::user_agent, "paygate-webhooks/1");
    request_.set(http::field::content_type, "application/json");
    request_.set("X-Paygate-Event-Id", delivery_.event);
    request_.set("X-Paygate-Delivery-Id", fmt::format("whd_{:016x}", delivery_.id));
    request_.set(
        "X-Paygate-Signature",
        Deliverer::signature(secrets_, static_cast<u64>(std::time(nullptr)), delivery_.body));
    request_.body() = delivery_.body;
    request_.keep_alive(true);
    request_.prepare_payload();
    tcp().expires_at(deadline_);
    engine_.counters().attempts.fetch_add(1, std::memory_order_relaxed);
    http::async_write(*stream_, request_,
                      [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                        if (self->finished_) return;
                        if (ec) return self->failed_on_the_way(ec);
                        self->read();
                      });
  }

  void read() {
    parser_.emplace();
    parser_->body_limit(config_.response_limit);
    http::async_read(*stream_, buffer_, *parser_,
                     [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                       if (self->finished_) return;
                       self->answered(ec);
                     });
  }

  void failed_on_the_way(beast::error_code ec) {
    // A kept-alive connection the receiver had closed meanwhile: once more, anew (the
    // receiver may have seen it: at least once is the promise).
    if (reused_ && !(parser_ && parser_->got_some())) {
      stream_.reset();
      engine_.counters().attempts.fetch_sub(1, std::memory_order_relaxed);
      return resolve();
    }
    done(0, ec == beast::error::timeout ? std::string("timed out")
                                        : "connection failed: " + ec.message());
  }

  void answered(beast::error_code ec) {
    if (ec && !(parser_->is_header_done() && ec == http::error::body_limit)) {
      return failed_on_the_way(ec);
    }
    const unsigned status = parser_->get().result_int();
    if (!ec && status >= 100 && status < 200) return read();  // interim: the answer follows
    // A complete answer, nothing after it, on a connection the receiver keeps open:
    // kept for the next (anything else closes it: a stale answer must never be read
    // as another delivery's).
    if (!ec && parser_->get().keep_alive() && buffer_.size() == 0) {
      tcp().expires_never();
      engine_.template put_idle<Stream>(origin_, std::move(stream_));
    }
    done(status, {});
  }

  void done(u32 status, std::string error) {
    if (finished_) return;
    finished_ = true;
    abandoned_.store(true, std::memory_order_release);
    timer_.cancel();
    if (stream_) {
      beast::error_code ignored;
      tcp().socket().shutdown(tcp::socket::shutdown_both, ignored);
      tcp().close();
    }
    engine_.finish(delivery_, status, std::move(error));
  }

  Engine& engine_;
  Delivery delivery_;
  TargetUrl url_;
  std::vector<std::string> secrets_;
  const WebhookConfig& config_;
  std::chrono::steady_clock::time_point deadline_;
  asio::steady_timer timer_;
  std::string origin_;
  http::request<http::string_body> request_;
  std::unique_ptr<Stream> stream_;
  beast::flat_buffer buffer_;
  std::optional<http::response_parser<http::string_body>> parser_;
  bool reused_ = false;
  bool finished_ = false;
  std::atomic<bool> abandoned_{false};  // finished: read by a lookup thread
};

}  // namespace

void Deliverer::Engine::start_attempt(Delivery delivery) {
  // An endpoint's deliveries go where it points now (its URL may have changed).
  if (delivery.endpoint != 0) {
    const auto it = endpoints_by_id.find(delivery.endpoint);
    if (it == endpoints_by_id.end()) return finish(delivery, 0, "endpoint deleted", true);
    delivery.url = it->second.url;
  }
  std::string why;
  std::optional<TargetUrl> url = parse_target_url(delivery.url, &why);
  if (!url) return finish(delivery, 0, "malformed url: " + why, true);
  std::vector<std::string> secrets = secrets_of(delivery, static_cast<u64>(std::time(nullptr)));
  if (secrets.empty()) return finish(delivery, 0, "no secret to sign with", true);
  if (url->https) {
    std::make_shared<Attempt<true>>(*this, std::move(delivery), std::move(*url), std::move(secrets),
                                    d.config_)
        ->start();
  } else {
    std::make_shared<Attempt<false>>(*this, std::move(delivery), std::move(*url),
                                     std::move(secrets), d.config_)
        ->start();
  }
}

Deliverer::Deliverer(const WebhookConfig& config, history::Store& history, RenderEvent render,
                     MerchantSecrets secrets)
    : config_(config),
      history_(history),
      render_(std::move(render)),
      secrets_(std::move(secrets)) {}

Result<std::unique_ptr<Deliverer>> Deliverer::open(const WebhookConfig& config,
                                                   history::Store& history,
                                                   const std::vector<u64>& start_sequences,
                                                   RenderEvent render, MerchantSecrets secrets) {
  PG_ASSERT(config.concurrency > 0 && config.per_target > 0);
  std::unique_ptr<Deliverer> d(
      new Deliverer(config, history, std::move(render), std::move(secrets)));
  Result<std::unique_ptr<WebhookStore>> store = WebhookStore::open(config.file);
  if (!store.ok()) return store.status();
  d->store_ = std::move(store.value());
  // A new webhook store starts where the journals stand now: the events before were
  // the past's (a store deleted, or webhooks turned on), not news to send.
  std::vector<Cursor> start;
  for (u32 g = 0; g < start_sequences.size(); ++g) {
    start.push_back(Cursor{.group = g, .sequence = start_sequences[g], .n = ~u32{0}});
  }
  Result<bool> begun = d->store_->initialize(start);
  if (!begun.ok()) return begun.status();
  if (begun.value()) PG_LOG_INFO("event=webhooks_begun groups={}", start.size());
  d->engine_ = std::make_unique<Engine>(*d);
  asio::ssl::context& tls = d->engine_->tls;
  beast::error_code ec;
  tls.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                  asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                  asio::ssl::context::no_tlsv1_1);
  tls.set_default_verify_paths(ec);
  if (ec) PG_LOG_WARN("event=webhooks_tls_roots message=\"{}\"", ec.message());
  if (!config.ca_file.empty()) {
    tls.load_verify_file(config.ca_file.string(), ec);
    if (ec) {
      return Status::invalid_config(
          fmt::format("[webhooks] ca_file {}: {}", config.ca_file.string(), ec.message()));
    }
  }
  tls.set_verify_mode(asio::ssl::verify_peer);
  return d;
}

Deliverer::~Deliverer() {
  stop();
}

void Deliverer::start() {
  if (thread_.joinable()) return;
  thread_ = std::thread([this] {
    // Optionally below the groups' threads: where CPU is short, deliveries take what
    // the ledger leaves (docs/WEBHOOKS.md, "The ledger first").
    if (config_.nice > 0 && !set_thread_nice(static_cast<int>(std::min<u32>(config_.nice, 19)))) {
      PG_LOG_WARN("event=webhooks_nice_refused nice={}", config_.nice);
    }
    engine_->round();
    engine_->schedule_tick();
    engine_->io.run();
  });
}

void Deliverer::stop() {
  if (!thread_.joinable()) return;
  asio::post(engine_->io, [this] {
    engine_->record();  // what ended is kept; what is in flight is sent again later
    engine_->stopping = true;
    engine_->io.stop();
  });
  thread_.join();
}

}  // namespace paygate::webhooks
