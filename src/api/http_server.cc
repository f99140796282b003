#include "api/http_server.h"

#include <fmt/format.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include "api/listen.h"

#include <algorithm>
#include <charconv>
#include <optional>

#include "api/http_request.h"
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

class Session;

// One request of a connection's pipeline: the parsed message, which the exchange's
// views point into, and the exchange answering it. Reused request after request.
struct Slot final : Waker {
  explicit Slot(Session* s) : session(s), exchange(this) {}
  void wake() noexcept override;

  enum class State : u8 { free, waiting, answered };
  Session* session;
  RequestArena arena;                   // the parser's memory; reset when it is
  std::optional<RequestParser> parser;  // destroyed, after the answer is rendered
  Exchange exchange;
  std::atomic<bool> woken{false};  // a group finished a step; set on the group thread
  State state = State::free;
  bool keep_alive = true;
  bool refused = false;  // an answer to bytes we could not parse: linger, then close
};

// One connection. Pipelined requests are read together and answered in order: up
// to `pipeline_max` of them are with the groups at once, so the ledger sees one
// connection's requests in the order they were sent, and their answers leave in one
// write. A request that needs several group steps (a lookup, then a command) holds
// back the requests after it until its last step is submitted, so a connection's
// requests reach each group in order.
//
// Threads: everything but Slot::wake() runs on the connection's strand. Group
// threads set a slot's `woken` flag and post one wake-up per burst of completions.
class Session final : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, Service& service, const HttpConfig& config,
          std::shared_ptr<std::atomic<u64>> in_flight)
      : socket_(std::move(socket)),
        timer_(socket_.get_executor()),
        service_(service),
        config_(config),
        in_flight_(std::move(in_flight)) {
    slots_.reserve(config_.pipeline_max);
    beast::error_code ec;
    const tcp::endpoint peer = socket_.remote_endpoint(ec);
    if (!ec) client_ = peer.address().to_string();
    service_.metrics().connections_open.fetch_add(1, std::memory_order_relaxed);
  }
  ~Session() {
    service_.metrics().connections_open.fetch_sub(1, std::memory_order_relaxed);
    service_.metrics().answers_unread_bytes.fetch_sub(accounted_, std::memory_order_relaxed);
  }

  void start() {
    asio::dispatch(socket_.get_executor(), [self = shared_from_this()] {
      self->progress();
      self->watch();
      self->read();
    });
  }

  // Group thread: one wake-up in flight at a time; it looks at every waiting slot.
  void wake() noexcept {
    if (wake_posted_.exchange(true, std::memory_order_acq_rel)) return;
    asio::post(socket_.get_executor(), [self = shared_from_this()] { self->on_wake(); });
  }

 private:
  static constexpr std::size_t kReadChunk = 64 * 1024;
  // Answers rendered but not yet written; beyond this, stop taking requests from a
  // client that sends without reading.
  static constexpr std::size_t kPendingOutMax = 1u << 20;
  // Buffers larger than this are freed once used rather than kept for the next request
  // (docs/OPERATING.md, memory per connection).
  static constexpr std::size_t kKeptBufferBytes = 16u << 10;

  // REQUIRES: index < 2 * pipeline_max (head_ stays below pipeline_max).
  Slot& slot_at(u32 index) {
    const u32 i = index % config_.pipeline_max;
    while (slots_.size() <= i)
      slots_.push_back(std::make_unique<Slot>(this));
    return *slots_[i];
  }

  void progress() { last_progress_ = std::chrono::steady_clock::now(); }

  // The deadline: a whole request must arrive within request_timeout_ms of the last
  // progress (a request read, an answer written). Time a group has our request is
  // ours, not the client's.
  void watch() {
    timer_.expires_at(last_progress_ + std::chrono::milliseconds(config_.request_timeout_ms));
    timer_.async_wait([weak = weak_from_this()](beast::error_code ec) {
      if (ec) return;
      const auto self = weak.lock();
      if (!self || self->closed_) return;
      if (self->waiting_ > 0) self->progress();
      if (std::chrono::steady_clock::now() - self->last_progress_ >=
          std::chrono::milliseconds(self->config_.request_timeout_ms)) {
        self->service_.metrics().connections_timed_out.fetch_add(1, std::memory_order_relaxed);
        return self->close();
      }
      self->watch();
    });
  }

  void read() {
    if (reading_ || read_closed_ || closed_) return;
    reading_ = true;
    socket_.async_read_some(buffer_.prepare(kReadChunk),
                            [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                              self->reading_ = false;
                              if (ec) return self->on_read_error(ec);
                              self->buffer_.commit(n);
                              self->parse();
                            });
  }

  void on_read_error(beast::error_code ec) {
    read_closed_ = true;
    if (ec == asio::error::operation_aborted || ec == asio::error::connection_reset) {
      return close();
    }
    // End of stream: answer what was asked, then close.
    if (used_ == 0 && !writing_) close();
  }

  // No request starts while an earlier one of this connection still has to submit
  // another step, nor while the client leaves a megabyte of answers unread: what waits
  // to be rendered into the socket and what is being written, together (counting only
  // the first let a client that never reads hold two megabytes and more).
  bool may_begin() {
    if (used_ == config_.pipeline_max || unread() >= kPendingOutMax) return false;
    for (u32 i = 0; i < used_; ++i) {
      const Slot& slot = slot_at(head_ + i);
      if (slot.state == Slot::State::waiting && !slot.exchange.in_last_step()) return false;
    }
    return true;
  }

  // Takes every whole request in the buffer that may begin; reads when it needs more.
  void parse() {
    while (!stop_parsing_ && may_begin()) {
      Slot& slot = slot_at(head_ + used_);
      if (!slot.parser) {
        const ArenaAllocator<char> allocator(&slot.arena);
        slot.parser.emplace(std::piecewise_construct, std::make_tuple(allocator),
                            std::make_tuple(allocator));
        slot.parser->header_limit(config_.header_bytes_max);
        slot.parser->body_limit(config_.body_bytes_max);
        // The header first, on its own: its framing is checked before a byte of the
        // body is taken (framing_problem); then the body in as few calls as it comes.
        slot.parser->eager(false);
      }
      beast::error_code ec;
      while (!slot.parser->is_done() && buffer_.size() > 0) {
        const bool had_header = slot.parser->is_header_done();
        buffer_.consume(slot.parser->put(buffer_.data(), ec));
        if (ec == http::error::need_more) {
          ec = {};
          break;
        }
        if (ec) break;
        if (!had_header && slot.parser->is_header_done()) {
          if (const char* problem = framing_problem(slot.parser->get())) {
            return refuse_framing(slot, problem);
          }
          slot.parser->eager(true);
        }
      }
      if (ec) return refuse(slot, ec);
      if (!slot.parser->is_done()) {
        if (read_closed_ && used_ == 0 && !writing_) return close();
        return read();
      }
      ++used_;
      progress();
      begin(slot);
    }
  }

  void begin(Slot& slot) {
    auto& request = slot.parser->get();
    slot.keep_alive = request.keep_alive();
    slot.refused = false;
    if (!slot.keep_alive) stop_parsing_ = true;
    HttpRequestView view;
    view.method = view_of(request.method_string());
    view.target = view_of(request.target());
    view.body = request.body();
    view.client = client_;
    read_headers(request, &view);
    if (service_.begin(view, slot.exchange)) {
      slot.state = Slot::State::answered;
      return flush();
    }
    slot.state = Slot::State::waiting;
    if (waiting_++ == 0) hold_ = shared_from_this();
    in_flight_->fetch_add(1, std::memory_order_acq_rel);
  }

  void on_wake() {
    const auto self = shared_from_this();  // hold_ may be released below
    wake_posted_.exchange(false, std::memory_order_acq_rel);
    for (u32 i = 0; i < used_; ++i) {
      Slot& slot = slot_at(head_ + i);
      if (slot.state != Slot::State::waiting ||
          !slot.woken.exchange(false, std::memory_order_acquire)) {
        continue;
      }
      if (!service_.resume(slot.exchange)) continue;  // another step
      slot.state = Slot::State::answered;
      in_flight_->fetch_sub(1, std::memory_order_acq_rel);
      if (--waiting_ == 0) hold_.reset();
    }
    flush();
    parse();
  }

  void refuse_framing(Slot& slot, const char* problem) {
    refuse_with(
        slot, 400, ResultCode::invalid_field,
        fmt::format("the request's framing is ambiguous: {}; the connection is closed", problem));
  }

  // An answer to bytes that are not a request we can take; the connection is closed
  // after it.
  void refuse(Slot& slot, beast::error_code ec) {
    if (ec == http::error::body_limit) {
      return refuse_with(slot, 413, ResultCode::body_too_large,
                         fmt::format("the body is larger than {} bytes", config_.body_bytes_max));
    }
    if (ec == http::error::header_limit) {
      return refuse_with(slot, 431, ResultCode::invalid_field, "the headers are too large");
    }
    refuse_with(slot, 400, ResultCode::invalid_field, "malformed HTTP request");
  }

  void refuse_with(Slot& slot, unsigned status, ResultCode code, std::string_view message) {
    HttpReply& reply = slot.exchange.reply;
    reply.body.clear();
    reply.text = false;
    reply.retry_after_s = 0;
    reply.minimal = false;
    reply.status = status;
    render_error(reply.body, code, message);
    slot.keep_alive = false;
    slot.refused = true;
    slot.state = Slot::State::answered;
    stop_parsing_ = true;
    ++used_;
    flush();
  }

  // Renders the answered requests at the head of the pipeline, in order, and frees
  // their slots; writes them unless a write is under way (its completion will).
  void flush() {
    while (used_ > 0) {
      Slot& slot = slot_at(head_);
      if (slot.state != Slot::State::answered) break;
      render(slot);
      slot.exchange.release_large_buffers(kKeptBufferBytes);
      if (!slot.keep_alive) {
        close_after_write_ = true;
        linger_ = slot.refused;
      }
      slot.state = Slot::State::free;
      slot.parser.reset();
      slot.arena.reset();
      head_ = (head_ + 1) % config_.pipeline_max;
      --used_;
    }
    write();
    account();
  }

  // Answers rendered and not yet taken by the socket: waiting to be written, and being
  // written.
  std::size_t unread() const noexcept { return pending_out_.size() + (writing_ ? out_.size() : 0); }
  // Keeps paygate_http_answers_unread_bytes, the sum of every connection's unread().
  void account() noexcept {
    const std::size_t now = unread();
    if (now == accounted_) return;
    std::atomic<u64>& total = service_.metrics().answers_unread_bytes;
    if (now > accounted_) {
      total.fetch_add(now - accounted_, std::memory_order_relaxed);
    } else {
      total.fetch_sub(accounted_ - now, std::memory_order_relaxed);
    }
    accounted_ = now;
  }

  void render(const Slot& slot) {
    const HttpReply& reply = slot.exchange.reply;
    std::string& out = pending_out_;
    // Appended piece by piece: this runs for every answer, and formatting through
    // fmt's back_inserter grew the string a character at a time.
    const auto decimal = [&out](u64 value) {
      char digits[24];
      out.append(digits, std::to_chars(digits, digits + sizeof digits, value).ptr);
    };
    out += "HTTP/1.1 ";
    decimal(reply.status);
    out += ' ';
    out += reason(reply.status);
    out += reply.text ? "\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: "
                      : "\r\nContent-Type: application/json\r\nContent-Length: ";
    decimal(reply.body.size());
    out += "\r\n";
    if (reply.retry_after_s != 0) {
      out += "Retry-After: ";
      decimal(reply.retry_after_s);
      out += "\r\n";
    }
    if (reply.minimal) out += "Preference-Applied: return=minimal\r\n";
    if (!slot.keep_alive) out += "Connection: close\r\n";
    out += "\r\n";
    out += reply.body;
  }

  void write() {
    if (writing_ || closed_) return;
    if (pending_out_.empty()) {
      if (close_after_write_ && used_ == 0) {
        if (linger_) return linger();
        return close();
      }
      if (read_closed_ && used_ == 0) return close();
      return;
    }
    writing_ = true;
    out_.swap(pending_out_);
    pending_out_.clear();
    asio::async_write(socket_, asio::buffer(out_),
                      [self = shared_from_this()](beast::error_code ec, std::size_t) {
                        self->writing_ = false;
                        // What a burst of large answers grew is not kept for the life of
                        // the connection (it becomes pending_out_ at the next write).
                        if (self->out_.capacity() > kKeptBufferBytes)
                          std::string().swap(self->out_);
                        if (ec) {
                          self->account();
                          return self->close();
                        }
                        self->progress();
                        self->write();
                        self->account();
                        self->parse();  // it may have waited for answers to be read
                      });
  }

  // After refusing a request whose body we did not read, keep reading (and dropping)
  // for a moment before closing: closing with unread data would reset the connection,
  // and the client could lose our answer before reading it.
  void linger() {
    beast::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_send, ignored);
    timer_.cancel();
    timer_.expires_after(std::chrono::seconds(2));
    timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (!ec) self->close();
    });
    drain_.resize(64 * 1024);
    discard();
  }

  void discard() {
    socket_.async_read_some(asio::buffer(drain_),
                            [self = shared_from_this()](beast::error_code ec, std::size_t) {
                              if (ec) return self->close();
                              self->discard();
                            });
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    stop_parsing_ = true;
    beast::error_code ignored;
    timer_.cancel();
    socket_.shutdown(tcp::socket::shutdown_send, ignored);
    socket_.close(ignored);
  }

  tcp::socket socket_;
  asio::steady_timer timer_;
  beast::flat_buffer buffer_;
  Service& service_;
  const HttpConfig& config_;
  std::shared_ptr<std::atomic<u64>> in_flight_;
  std::vector<std::unique_ptr<Slot>> slots_;  // a ring of pipeline_max, made as needed
  u32 head_ = 0;                              // the oldest request not yet answered (ring index)
  u32 used_ = 0;                              // requests taken and not yet answered, from head_
  u32 waiting_ = 0;                           // of those, the ones a group has
  std::atomic<bool> wake_posted_{false};
  std::string client_;         // the peer's address
  std::string out_;            // being written
  std::string pending_out_;    // answers rendered while a write was under way
  std::size_t accounted_ = 0;  // this connection's part of answers_unread_bytes
  bool reading_ = false;
  bool writing_ = false;
  bool read_closed_ = false;  // the client sent end of stream
  bool stop_parsing_ = false;
  bool close_after_write_ = false;
  bool linger_ = false;
  bool closed_ = false;
  std::chrono::steady_clock::time_point last_progress_;
  std::string drain_;
  std::shared_ptr<Session> hold_;  // set while a group has one of our requests
};

void Slot::wake() noexcept {
  woken.store(true, std::memory_order_release);
  session->wake();
}

}  // namespace

struct HttpServer::Impl {
  Impl(IoRuntime& io, Service& service, const HttpConfig& config,
       const std::shared_ptr<std::atomic<u64>>& in_flight)
      : runtime(io),
        acceptor(io.context()),
        accepting(
            acceptor, [&io] { return asio::any_io_executor(asio::make_strand(io.next_context())); },
            [&service, &config, in_flight](tcp::socket socket) {
              take(std::move(socket), service, config, in_flight);
            },
            &service.metrics().accept_failures) {}

  static void take(tcp::socket socket, Service& service, const HttpConfig& config,
                   const std::shared_ptr<std::atomic<u64>>& in_flight) {
    HttpMetrics& metrics = service.metrics();
    beast::error_code ec;
    if (metrics.connections_open.load(std::memory_order_relaxed) >= config.connections_max) {
      metrics.connections_refused.fetch_add(1, std::memory_order_relaxed);
      static constexpr std::string_view kBusy =
          "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
          "Content-Length: 71\r\nConnection: close\r\n\r\n"
          R"({"error":{"code":"overloaded","message":"too many connections, retry"}})";
      static_assert(kBusy.size() - kBusy.find("\r\n\r\n") - 4 == 71);
      asio::write(socket, asio::buffer(kBusy), ec);
      socket.close(ec);
      return;
    }
    socket.set_option(tcp::no_delay(true), ec);
    std::make_shared<Session>(std::move(socket), service, config, in_flight)->start();
  }

  IoRuntime& runtime;
  tcp::acceptor acceptor;
  AcceptLoop accepting;
};

HttpServer::HttpServer(Service& service, HttpConfig config, IoRuntime& runtime)
    : service_(service),
      config_(std::move(config)),
      in_flight_(std::make_shared<std::atomic<u64>>(0)) {
  impl_ = std::make_unique<Impl>(runtime, service_, config_, in_flight_);
}

HttpServer::~HttpServer() = default;

Status HttpServer::listen() {
  tcp::acceptor& acceptor = impl_->acceptor;
  if (Status opened = open_listener(acceptor, config_.address, config_.port); !opened.ok()) {
    return opened;
  }
  port_ = acceptor.local_endpoint().port();
  impl_->accepting.start();
  return Status::success();
}

void HttpServer::close() {
  asio::post(impl_->runtime.context(), [impl = impl_.get()] {
    beast::error_code ignored;
    impl->acceptor.close(ignored);
    impl->accepting.stop();
  });
}

IoRuntime::IoRuntime(u32 threads) {
  for (u32 i = 0; i < std::max(threads, 1u); ++i)
    contexts_.push_back(std::make_unique<asio::io_context>(1));
}

IoRuntime::~IoRuntime() {
  stop();
}

void IoRuntime::start() {
  for (auto& context : contexts_) {
    threads_.emplace_back([io = context.get()] {
      // Keep running when there is nothing to do yet (before the first connection).
      auto guard = asio::make_work_guard(*io);
      io->run();
    });
  }
}

void IoRuntime::stop() {
  for (auto& context : contexts_)
    context->stop();
  for (auto& thread : threads_)
    thread.join();
  threads_.clear();
}

}  // namespace paygate::api
