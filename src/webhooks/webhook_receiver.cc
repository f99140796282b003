// webhook_receiver: the other end of webhook delivery, for the webhook tests and the
// delivery benchmark (docs/WEBHOOKS.md). It listens on 127.0.0.1, checks the signature
// of every event POSTed to it, and can misbehave on request (fail the first attempts of
// each event, answer late, reset connections) so that retries and timeouts are tested
// against a real socket. Each request leaves one JSON line in --log, written and
// flushed before the answer goes out: a test that has seen an answer (or a retry) can
// rely on the line being in the file already. With --tls-cert and --tls-key it serves
// HTTPS instead, on the same port, for testing delivery over TLS.
//
//   webhook_receiver --log FILE [--port P] [--secret S]... [--tolerance-s N]
//                    [--fail-first N] [--delay-ms D] [--reset-every K] [--threads N]
//                    [--tls-cert FILE --tls-key FILE]
//
// Prints `listening <port>` once it accepts, and runs until SIGTERM or SIGINT.
#include <fmt/format.h>
#include <simdjson.h>
#include <CLI/CLI.hpp>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "api/crypto.h"

namespace paygate::webhooks {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using Request = http::request<http::string_body>;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

constexpr std::size_t kBodyLimit = 1 << 20;
constexpr char kSignatureHeader[] = "X-Paygate-Signature";
// How long a TLS handshake, or the close_notify exchange at the end, may take.
constexpr std::chrono::seconds kTlsTimeout{10};

struct Options {
  int port = 0;
  int threads = 2;
  std::vector<std::string> secrets;
  i64 tolerance_s = 300;
  u64 fail_first = 0;
  u64 delay_ms = 0;
  u64 reset_every = 0;
  std::string log_file;
  std::string tls_cert, tls_key;  // PEM files; both empty: plain HTTP
};

// What one request was and how it was answered: one line of the log.
struct Record {
  std::string id, type, object;
  u64 sequence = 0;
  u64 attempt = 0;
  unsigned answered = 0;  // the status sent; 0 when the connection was reset instead
  bool sig_ok = false;
  u64 signatures = 0;
  i64 t = 0;
};

// `t=<unix s>,v1=<hex>[,v1=<hex>...]`. The t text is kept as sent, since that is what
// was signed; unknown keys are skipped so that a future scheme does not break us.
struct SignatureHeader {
  std::string_view t_text;
  std::optional<i64> t;
  std::vector<std::string_view> v1;
};

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

SignatureHeader parse_signature(std::string_view header) {
  SignatureHeader out;
  while (!header.empty()) {
    const std::size_t comma = header.find(',');
    const std::string_view item = trim(header.substr(0, comma));
    header = comma == std::string_view::npos ? std::string_view{} : header.substr(comma + 1);
    const std::size_t eq = item.find('=');
    if (eq == std::string_view::npos) continue;
    const std::string_view key = item.substr(0, eq), value = item.substr(eq + 1);
    if (key == "t" && !out.t) {
      i64 t = 0;
      const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), t);
      // A negative time is no time; refusing it also keeps |now - t| from overflowing.
      if (ec == std::errc{} && end == value.data() + value.size() && t >= 0) {
        out.t = t;
        out.t_text = value;
      }
    } else if (key == "v1") {
      out.v1.push_back(value);
    }
  }
  return out;
}

// Fills id, type, object and sequence; false (id left "") unless the body is a JSON
// object with a string id. The other fields are logged when present, never required.
bool parse_event(simdjson::dom::parser& parser, const std::string& body, Record* r) {
  simdjson::dom::element doc;
  std::string_view text;
  if (parser.parse(body).get(doc) || doc["id"].get_string().get(text)) return false;
  r->id = text;
  if (!doc["type"].get_string().get(text)) r->type = text;
  if (!doc.at_pointer("/data/object/id").get_string().get(text)) r->object = text;
  u64 sequence = 0;
  if (!doc["sequence"].get_uint64().get(sequence)) r->sequence = sequence;
  return true;
}

void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (const char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
    } else {
      out += c;
    }
  }
  out += '"';
}

// The state shared by every connection: options, attempts per event, the log.
class Receiver {
 public:
  Receiver(Options options, std::FILE* log) : options_(std::move(options)), log_(log) {}

  const Options& options() const { return options_; }

  // Decides the answer to one request and logs it; returns the status to send, or 0
  // for "reset the connection". `too_large`: the body passed the limit and is cut.
  unsigned handle(const Request& request, simdjson::dom::parser& json, bool too_large) {
    Record r;
    const u64 n = requests_.fetch_add(1, std::memory_order_relaxed) + 1;
    const auto header = request[kSignatureHeader];
    const SignatureHeader sig = parse_signature(std::string_view(header.data(), header.size()));
    r.signatures = sig.v1.size();
    r.t = sig.t.value_or(0);
    r.sig_ok = signature_ok(sig, request.body());
    const bool parsed = !too_large && parse_event(json, request.body(), &r);
    if (parsed) r.attempt = next_attempt(r.id);

    if (options_.reset_every != 0 && n % options_.reset_every == 0) {
      r.answered = 0;
    } else if (too_large) {
      r.answered = 413;
    } else if (request.method() != http::verb::post) {
      r.answered = 405;
    } else if (!parsed || !r.sig_ok) {
      r.answered = 400;
    } else if (r.attempt <= options_.fail_first) {
      r.answered = 500;
    } else {
      r.answered = 200;
    }
    write_log(r);
    return r.answered;
  }

 private:
  bool signature_ok(const SignatureHeader& sig, std::string_view body) const {
    if (options_.secrets.empty()) return true;
    if (!sig.t) return false;
    const i64 now = std::chrono::duration_cast<std::chrono::seconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count();
    const i64 skew = *sig.t > now ? *sig.t - now : now - *sig.t;
    if (skew > options_.tolerance_s) return false;
    // Every secret against every v1, without stopping at the first match: during a
    // rotation the sender signs with old and new secrets, and we may hold either.
    bool ok = false;
    for (const std::string& secret : options_.secrets) {
      const std::string expected = api::to_hex(api::hmac_sha256(secret, {sig.t_text, ".", body}));
      for (const std::string_view v1 : sig.v1)
        ok |= api::equal_constant_time(expected, v1);
    }
    return ok;
  }

  u64 next_attempt(const std::string& id) {
    const std::lock_guard lock(attempts_mutex_);
    return ++attempts_[id];
  }

  void write_log(const Record& r) {
    std::string line = "{\"id\":";
    append_json_string(line, r.id);
    line += ",\"type\":";
    append_json_string(line, r.type);
    line += ",\"object\":";
    append_json_string(line, r.object);
    line += fmt::format(
        ",\"sequence\":{},\"attempt\":{},\"answered\":{},\"sig_ok\":{},\"signatures\":{},"
        "\"t\":{}}}\n",
        r.sequence, r.attempt, r.answered, r.sig_ok, r.signatures, r.t);
    // Whole lines under the mutex, flushed at once: tests read the file while we run.
    const std::lock_guard lock(log_mutex_);
    if (std::fwrite(line.data(), 1, line.size(), log_) != line.size() || std::fflush(log_) != 0) {
      std::fprintf(stderr, "webhook_receiver: cannot write the log\n");
    }
  }

  const Options options_;
  std::FILE* const log_;
  std::atomic<u64> requests_{0};  // across connections, for --reset-every
  std::mutex attempts_mutex_;
  std::unordered_map<std::string, u64> attempts_;
  std::mutex log_mutex_;
};

// The TCP socket under a session's stream, for shutdown, close and SO_LINGER.
tcp::socket& socket_of(tcp::socket& stream) {
  return stream;
}
tcp::socket& socket_of(TlsStream& stream) {
  return beast::get_lowest_layer(stream).socket();
}

// One connection: read a request, decide, (wait,) answer, and again while the client
// keeps the connection alive. Everything runs on the socket's strand, so a session's
// own steps never overlap, and a delayed answer holds a timer, not a thread. `Stream`
// is a tcp::socket for plain HTTP or a TlsStream for HTTPS; only the start (the TLS
// handshake) and the clean end (close_notify) differ.
template <class Stream>
class Session : public std::enable_shared_from_this<Session<Stream>> {
  static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;

 public:
  Session(Stream stream, Receiver& receiver)
      : stream_(std::move(stream)), timer_(stream_.get_executor()), receiver_(receiver) {}

  // Plain HTTP reads at once; TLS shakes hands first, within kTlsTimeout. A failed
  // handshake is no request, so it leaves no log line: the connection just closes.
  void start() {
    if constexpr (kTls) {
      beast::get_lowest_layer(stream_).expires_after(kTlsTimeout);
      stream_.async_handshake(ssl::stream_base::server,
                              [self = this->shared_from_this()](beast::error_code ec) {
                                if (ec) return self->close();
                                // No timeout on requests, as for plain HTTP.
                                beast::get_lowest_layer(self->stream_).expires_never();
                                self->read();
                              });
    } else {
      read();
    }
  }

 private:
  void read() {
    parser_.emplace();
    parser_->body_limit(kBodyLimit);
    http::async_read(stream_, buffer_, *parser_,
                     [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                       self->on_read(ec);
                     });
  }

  void on_read(beast::error_code ec) {
    const bool too_large = ec == http::error::body_limit;
    // end_of_stream is the client closing between requests; any other error leaves
    // nothing to answer.
    if (ec && !too_large) return close();
    const Request& request = parser_->get();
    const unsigned status = receiver_.handle(request, json_, too_large);
    if (status == 0) return reset();

    response_ = {};
    response_.version(11);
    response_.result(status);
    response_.set(http::field::content_type, "text/plain");
    const auto reason = http::obsolete_reason(response_.result());
    response_.body() =
        status == 200 ? std::string("ok") : std::string(reason.data(), reason.size());
    // After a cut body the rest of it is still in flight: the connection is done.
    response_.keep_alive(!too_large && request.keep_alive());
    response_.prepare_payload();
    if (receiver_.options().delay_ms == 0) return write();
    timer_.expires_after(std::chrono::milliseconds(receiver_.options().delay_ms));
    timer_.async_wait([self = this->shared_from_this()](beast::error_code) { self->write(); });
  }

  void write() {
    http::async_write(stream_, response_,
                      [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                        if (ec) return self->close();
                        if (!self->response_.keep_alive()) return self->finish();
                        self->read();
                      });
  }

  // The answer said the connection is done. Over TLS, say so in TLS too (close_notify)
  // before the FIN, within kTlsTimeout since the peer need not answer it.
  void finish() {
    if constexpr (kTls) {
      beast::get_lowest_layer(stream_).expires_after(kTlsTimeout);
      stream_.async_shutdown(
          [self = this->shared_from_this()](beast::error_code) { self->close(); });
    } else {
      close();
    }
  }

  // FIN and close, under TLS too: after an error there is no TLS left to speak.
  void close() {
    beast::error_code ignored;
    socket_of(stream_).shutdown(tcp::socket::shutdown_send, ignored);
    socket_of(stream_).close(ignored);
  }

  // SO_LINGER {1, 0} makes close() send RST instead of FIN: the sender sees a reset,
  // as from a receiver that crashed mid-request, not a clean close. Under TLS the TCP
  // socket is reset all the same, with no close_notify.
  void reset() {
    beast::error_code ignored;
    socket_of(stream_).set_option(asio::socket_base::linger(true, 0), ignored);
    socket_of(stream_).close(ignored);
  }

  Stream stream_;
  asio::steady_timer timer_;
  Receiver& receiver_;
  beast::flat_buffer buffer_;  // kept between requests: it may hold the next one
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> response_;
  simdjson::dom::parser json_;  // reused, so its buffers are allocated once
};

// Accepts until the acceptor closes, each connection on its own strand. When accept
// fails (out of files, say) it waits a moment rather than spin on a ready listener.
// With a TLS context every connection is HTTPS, without one plain HTTP.
class Listener {
 public:
  Listener(asio::io_context& ioc, tcp::acceptor& acceptor, Receiver& receiver, ssl::context* tls)
      : ioc_(ioc), acceptor_(acceptor), backoff_(ioc), receiver_(receiver), tls_(tls) {}

  void accept() {
    acceptor_.async_accept(asio::make_strand(ioc_), [this](beast::error_code ec, tcp::socket s) {
      if (ec == asio::error::operation_aborted) return;
      if (ec) {
        backoff_.expires_after(std::chrono::milliseconds(50));
        backoff_.async_wait([this](beast::error_code) { accept(); });
        return;
      }
      beast::error_code ignored;
      s.set_option(tcp::no_delay(true), ignored);  // small answers, reused connections
      if (tls_ != nullptr) {
        std::make_shared<Session<TlsStream>>(TlsStream(std::move(s), *tls_), receiver_)->start();
      } else {
        std::make_shared<Session<tcp::socket>>(std::move(s), receiver_)->start();
      }
      accept();
    });
  }

 private:
  asio::io_context& ioc_;
  tcp::acceptor& acceptor_;
  asio::steady_timer backoff_;
  Receiver& receiver_;
  ssl::context* const tls_;  // null: plain HTTP
};

// The server side of TLS from the PEM files: the certificate chain (leaf first) and
// its private key. Empty on error, after saying why on stderr.
std::optional<ssl::context> make_tls_context(const Options& options) {
  std::optional<ssl::context> tls(std::in_place, ssl::context::tls_server);
  tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                   ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  beast::error_code ec;
  tls->use_certificate_chain_file(options.tls_cert, ec);
  if (ec) {
    std::fprintf(stderr, "webhook_receiver: cannot use %s: %s\n", options.tls_cert.c_str(),
                 ec.message().c_str());
    return std::nullopt;
  }
  tls->use_private_key_file(options.tls_key, ssl::context::pem, ec);
  if (ec) {
    std::fprintf(stderr, "webhook_receiver: cannot use %s: %s\n", options.tls_key.c_str(),
                 ec.message().c_str());
    return std::nullopt;
  }
  return tls;
}

int run(Options options) {
  // Before the io_context too, as sessions hold on to it.
  std::optional<ssl::context> tls;
  if (!options.tls_cert.empty()) {
    tls = make_tls_context(options);
    if (!tls) return 2;
  }
  std::FILE* log = std::fopen(options.log_file.c_str(), "a");
  if (log == nullptr) {
    std::fprintf(stderr, "webhook_receiver: cannot open %s\n", options.log_file.c_str());
    return 2;
  }
  const int threads = options.threads;
  const u16 port = static_cast<u16>(options.port);
  // Declared before the io_context, so it outlives the handlers that refer to it.
  Receiver receiver(std::move(options), log);
  asio::io_context ioc(threads);

  tcp::acceptor acceptor(ioc);
  beast::error_code ec;
  const tcp::endpoint endpoint(asio::ip::make_address_v4("127.0.0.1"), port);
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    std::fprintf(stderr, "webhook_receiver: cannot listen on 127.0.0.1:%u: %s\n", port,
                 ec.message().c_str());
    std::fclose(log);
    return 2;
  }
  // The one line on stdout; tests started with --port 0 learn the port from it.
  fmt::print("listening {}\n", acceptor.local_endpoint().port());
  std::fflush(stdout);

  Listener listener(ioc, acceptor, receiver, tls ? &*tls : nullptr);
  listener.accept();
  asio::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&](beast::error_code, int) { ioc.stop(); });

  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i)
    pool.emplace_back([&] { ioc.run(); });
  ioc.run();
  for (std::thread& t : pool)
    t.join();
  std::fclose(log);
  return 0;
}

}  // namespace
}  // namespace paygate::webhooks

int main(int argc, char** argv) {
  CLI::App app{"webhook_receiver: receives signed webhooks for tests and the benchmark"};
  paygate::webhooks::Options options;
  app.add_option("--log", options.log_file, "append one JSON line per request here")->required();
  app.add_option("--port", options.port, "port on 127.0.0.1 (0: any free one)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  app.add_option("--threads", options.threads, "IO threads")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  app.add_option("--secret", options.secrets,
                 "signing secret; repeat for several (none: signatures not checked)")
      ->allow_extra_args(false);
  app.add_option("--tolerance-s", options.tolerance_s, "most seconds between t= and now")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--fail-first", options.fail_first, "answer 500 to each event's first N attempts")
      ->capture_default_str();
  app.add_option("--delay-ms", options.delay_ms, "wait this long before every answer")
      ->capture_default_str();
  app.add_option("--reset-every", options.reset_every,
                 "reset the connection instead of answering every K-th request (0: never)")
      ->capture_default_str();
  auto* cert = app.add_option("--tls-cert", options.tls_cert,
                              "serve HTTPS with this certificate chain (PEM; needs --tls-key)")
                   ->check(CLI::ExistingFile);
  auto* key = app.add_option("--tls-key", options.tls_key,
                             "the private key of --tls-cert (PEM; needs --tls-cert)")
                  ->check(CLI::ExistingFile);
  cert->needs(key);
  key->needs(cert);
  CLI11_PARSE(app, argc, argv);
  return paygate::webhooks::run(std::move(options));
}
