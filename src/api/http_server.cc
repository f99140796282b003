#include "api/http_server.h"

#include <fmt/format.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include "api/listen.h"

#include <optional>

#include "api/render.h"
#include "base/log.h"

namespace paygate::api {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

std::string_view reason(unsigned status) {
  switch (status) {
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 409:
      return "Conflict";
    case 413:
      return "Payload Too Large";
    case 415:
      return "Unsupported Media Type";
    case 422:
      return "Unprocessable Entity";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    default:
      return "Internal Server Error";
  }
}

std::string_view header(const http::request_parser<http::string_body>::value_type& request,
                        std::string_view name) {
  const auto it = request.find(beast::string_view(name.data(), name.size()));
  if (it == request.end()) return {};
  const auto value = it->value();
  return std::string_view(value.data(), value.size());
}

// One connection: read a request, answer it, repeat. At most one request is being
// answered at a time; later pipelined requests wait in the read buffer.
class Session final : public std::enable_shared_from_this<Session>, public Waker {
 public:
  Session(tcp::socket socket, Service& service, const HttpConfig& config,
          std::shared_ptr<std::atomic<u64>> in_flight)
      : stream_(std::move(socket)),
        service_(service),
        config_(config),
        in_flight_(std::move(in_flight)),
        exchange_(this) {
    service_.metrics().connections_open.fetch_add(1, std::memory_order_relaxed);
  }
  ~Session() { service_.metrics().connections_open.fetch_sub(1, std::memory_order_relaxed); }

  void start() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read(); });
  }

  // A group finished a step: continue on this connection's strand.
  void wake() noexcept override {
    asio::post(stream_.get_executor(), [this] { resumed(); });
  }

 private:
  void read() {
    parser_.emplace();
    parser_->header_limit(config_.header_bytes_max);
    parser_->body_limit(config_.body_bytes_max);
    stream_.expires_after(std::chrono::milliseconds(config_.request_timeout_ms));
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (ec == beast::error::timeout) {
      service_.metrics().connections_timed_out.fetch_add(1, std::memory_order_relaxed);
      return close();
    }
    if (ec == http::error::body_limit) {
      return refuse(413, ResultCode::body_too_large,
                    fmt::format("the body is larger than {} bytes", config_.body_bytes_max));
    }
    if (ec == http::error::header_limit) {
      return refuse(431, ResultCode::invalid_field, "the headers are too large");
    }
    if (ec == http::error::end_of_stream || ec == asio::error::eof ||
        ec == asio::error::connection_reset || ec == asio::error::operation_aborted) {
      return close();
    }
    if (ec) return refuse(400, ResultCode::invalid_field, "malformed HTTP request");

    auto& request = parser_->get();
    keep_alive_ = request.keep_alive();
    const auto method = request.method_string();
    const auto target = request.target();
    const HttpRequestView view{
        .method = std::string_view(method.data(), method.size()),
        .target = std::string_view(target.data(), target.size()),
        .body = request.body(),
        .content_type = header(request, "Content-Type"),
        .idempotency_key = header(request, "Idempotency-Key"),
        .authorization = header(request, "Authorization"),
        .key_id = header(request, "X-Paygate-Key"),
        .timestamp = header(request, "X-Paygate-Timestamp"),
        .signature = header(request, "X-Paygate-Signature"),
    };
    stream_.expires_never();  // answering is our time, not the client's
    if (service_.begin(view, exchange_)) return write();
    hold_ = shared_from_this();
    in_flight_->fetch_add(1, std::memory_order_acq_rel);
  }

  void resumed() {
    if (!service_.resume(exchange_)) return;  // another step: hold_ keeps us alive
    in_flight_->fetch_sub(1, std::memory_order_acq_rel);
    const auto self = std::move(hold_);
    write();
  }

  // An answer to a request that could not be parsed; the connection is closed after.
  void refuse(unsigned status, ResultCode code, std::string_view message) {
    exchange_.reply.body.clear();
    exchange_.reply.text = false;
    exchange_.reply.retry_after_s = 0;
    exchange_.reply.status = status;
    render_error(exchange_.reply.body, code, message);
    keep_alive_ = false;
    linger_ = true;
    write();
  }

  // After refusing a request whose body we did not read, keep reading (and dropping)
  // for a moment before closing: closing with unread data would reset the connection,
  // and the client could lose our answer before reading it.
  void linger() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.expires_after(std::chrono::seconds(2));
    drain_.resize(64 * 1024);
    stream_.async_read_some(asio::buffer(drain_),
                            [self = shared_from_this()](beast::error_code ec, std::size_t) {
                              if (ec) return self->close();
                              self->linger();
                            });
  }

  void write() {
    const HttpReply& reply = exchange_.reply;
    out_.clear();
    fmt::format_to(
        std::back_inserter(out_), "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
        reply.status, reason(reply.status),
        reply.text ? "text/plain; version=0.0.4" : "application/json", reply.body.size());
    if (reply.retry_after_s != 0)
      fmt::format_to(std::back_inserter(out_), "Retry-After: {}\r\n", reply.retry_after_s);
    if (!keep_alive_) out_ += "Connection: close\r\n";
    out_ += "\r\n";
    out_ += reply.body;
    stream_.expires_after(std::chrono::milliseconds(config_.request_timeout_ms));
    asio::async_write(stream_, asio::buffer(out_),
                      [self = shared_from_this()](beast::error_code ec, std::size_t) {
                        if (ec) return self->close();
                        if (self->linger_) return self->linger();
                        if (!self->keep_alive_) return self->close();
                        self->read();
                      });
  }

  void close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.close();
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  Service& service_;
  const HttpConfig& config_;
  std::shared_ptr<std::atomic<u64>> in_flight_;
  Exchange exchange_;
  std::string out_;
  bool keep_alive_ = true;
  bool linger_ = false;
  std::string drain_;
  std::shared_ptr<Session> hold_;  // set while a group has our request
};

}  // namespace

struct HttpServer::Impl {
  explicit Impl(asio::io_context& io) : context(io), acceptor(io) {}

  void accept(Service& service, const HttpConfig& config,
              const std::shared_ptr<std::atomic<u64>>& in_flight) {
    acceptor.async_accept(asio::make_strand(context), [this, &service, &config, in_flight](
                                                          beast::error_code ec,
                                                          tcp::socket socket) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
      if (!ec) {
        HttpMetrics& metrics = service.metrics();
        if (metrics.connections_open.load(std::memory_order_relaxed) >= config.connections_max) {
          metrics.connections_refused.fetch_add(1, std::memory_order_relaxed);
          static constexpr std::string_view kBusy =
              "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
              "Content-Length: 71\r\nConnection: close\r\n\r\n"
              R"({"error":{"code":"overloaded","message":"too many connections, retry"}})";
          static_assert(kBusy.size() - kBusy.find("\r\n\r\n") - 4 == 71);
          beast::error_code ignored;
          asio::write(socket, asio::buffer(kBusy), ignored);
          socket.close(ignored);
        } else {
          socket.set_option(tcp::no_delay(true), ec);
          std::make_shared<Session>(std::move(socket), service, config, in_flight)->start();
        }
      }
      accept(service, config, in_flight);
    });
  }

  asio::io_context& context;
  tcp::acceptor acceptor;
};

HttpServer::HttpServer(Service& service, HttpConfig config, IoRuntime& runtime)
    : impl_(std::make_unique<Impl>(runtime.context())),
      service_(service),
      config_(std::move(config)),
      in_flight_(std::make_shared<std::atomic<u64>>(0)) {}

HttpServer::~HttpServer() = default;

bool HttpServer::listen(std::string* error) {
  tcp::acceptor& acceptor = impl_->acceptor;
  if (!open_listener(acceptor, config_.address, config_.port, error)) return false;
  port_ = acceptor.local_endpoint().port();
  impl_->accept(service_, config_, in_flight_);
  return true;
}

void HttpServer::close() {
  asio::post(impl_->context, [impl = impl_.get()] {
    beast::error_code ignored;
    impl->acceptor.close(ignored);
  });
}

IoRuntime::IoRuntime(u32 threads)
    : threads_count_(threads),
      context_(std::make_unique<asio::io_context>(static_cast<int>(threads))) {}

IoRuntime::~IoRuntime() {
  stop();
}

void IoRuntime::start() {
  for (u32 i = 0; i < threads_count_; ++i) {
    threads_.emplace_back([this] {
      // Keep running when there is nothing to do yet (before the first accept).
      auto guard = asio::make_work_guard(*context_);
      context_->run();
    });
  }
}

void IoRuntime::stop() {
  context_->stop();
  for (auto& thread : threads_)
    thread.join();
  threads_.clear();
}

}  // namespace paygate::api
