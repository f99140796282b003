#include "api/binary_server.h"

#include <fmt/format.h>

#include <boost/asio.hpp>
#include "api/listen.h"

#include <algorithm>
#include <deque>
#include <vector>

#include "api/binary_protocol.h"
#include "api/crypto.h"

namespace paygate::api {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using binary::FrameHeader;
using binary::FrameType;
using boost::system::error_code;

struct BinaryServer::Impl {
  Impl(Service& s, OwnerIndex& o, std::string token, const BinaryConfig& c, IoRuntime& io,
       std::shared_ptr<std::atomic<u64>> flight)
      : service(s),
        owners(o),
        admin_token(std::move(token)),
        config(c),
        runtime(io),
        context(io.context()),
        acceptor(io.context()),
        accepting(
            acceptor, [&io] { return asio::any_io_executor(asio::make_strand(io.next_context())); },
            [this](tcp::socket socket) { take(std::move(socket)); }, &s.metrics().accept_failures),
        in_flight(std::move(flight)) {}

  void take(tcp::socket socket);

  Service& service;
  OwnerIndex& owners;
  const std::string admin_token;
  const BinaryConfig config;
  IoRuntime& runtime;
  asio::io_context& context;  // the listener's
  tcp::acceptor acceptor;
  AcceptLoop accepting;
  std::shared_ptr<std::atomic<u64>> in_flight;
  std::atomic<u32> connections{0};
};

namespace {

class Connection;

// One frame in flight: its commands, results, and the group's completion.
struct Slot final : Completion {
  void complete(const Outcome& outcome) noexcept override;

  Connection* connection = nullptr;
  FrameHeader header;
  std::vector<binary::WireCommand> wire_commands;  // as read
  std::vector<Command> commands;                   // decoded
  std::vector<CommandResult> results;
  std::vector<binary::WireResult> wire_results;  // as written
  Outcome outcome;
};

class Connection final : public std::enable_shared_from_this<Connection> {
 public:
  Connection(tcp::socket socket, BinaryServer::Impl& server)
      : socket_(std::move(socket)), server_(server), timer_(socket_.get_executor()) {
    slots_.resize(server.config.window);
    for (Slot& slot : slots_) {
      slot.connection = this;
      free_.push_back(&slot);
    }
    server_.connections.fetch_add(1, std::memory_order_relaxed);
  }
  ~Connection() { server_.connections.fetch_sub(1, std::memory_order_relaxed); }

  void start() { read_header(); }

  // Group thread → this connection's strand.
  void answered(Slot* slot) {
    asio::post(socket_.get_executor(), [this, slot] {
      record_owners(*slot);
      slot->header.type = FrameType::results;
      slot->header.status = static_cast<u16>(slot->outcome.status);
      queue_answer(slot);
      server_.in_flight->fetch_sub(1, std::memory_order_acq_rel);
      holds_.pop_back();  // one fewer reason to stay alive; the write holds us too
    });
  }

 private:
  void arm_idle_timer() {
    timer_.expires_after(std::chrono::milliseconds(server_.config.idle_timeout_ms));
    timer_.async_wait([weak = weak_from_this()](error_code ec) {
      if (ec) return;
      if (auto self = weak.lock()) self->close();
    });
  }

  void read_header() {
    if (free_.empty()) {
      reading_paused_ = true;  // resumed when an answer frees a slot
      return;
    }
    arm_idle_timer();
    asio::async_read(socket_, asio::buffer(header_bytes_),
                     [self = shared_from_this()](error_code ec, std::size_t) {
                       if (ec) return self->close();
                       self->on_header();
                     });
  }

  void on_header() {
    const FrameHeader header = binary::read_header(header_bytes_);
    const ResultCode code = binary::check_request_header(header);
    if (code != ResultCode::ok) return refuse(header.request_id, code);
    if (header.type == FrameType::hello) {
      token_.resize(header.count);
      asio::async_read(socket_, asio::buffer(token_),
                       [self = shared_from_this(), header](error_code ec, std::size_t) {
                         if (ec) return self->close();
                         self->on_hello(header);
                       });
      return;
    }
    if (!authenticated_) return refuse(header.request_id, ResultCode::missing_credentials);
    Slot* slot = free_.back();
    free_.pop_back();
    slot->header = header;
    slot->wire_commands.resize(header.count);
    asio::async_read(socket_,
                     asio::buffer(static_cast<void*>(slot->wire_commands.data()),
                                  slot->wire_commands.size() * sizeof(binary::WireCommand)),
                     [self = shared_from_this(), slot](error_code ec, std::size_t) {
                       if (ec) return self->close();
                       self->on_commands(slot);
                     });
  }

  void on_hello(const FrameHeader& header) {
    FrameHeader answer{};
    answer.length = binary::kHeaderBytes;
    answer.request_id = header.request_id;
    if (!equal_constant_time(token_, server_.admin_token)) {
      return refuse(header.request_id, ResultCode::invalid_credentials);
    }
    authenticated_ = true;
    answer.type = FrameType::hello_ok;
    hello_answer_ = answer;
    write_raw(&hello_answer_);
    read_header();
  }

  void on_commands(Slot* slot) {
    Service& service = server_.service;
    const FrameHeader& h = slot->header;
    slot->commands.resize(h.count);
    binary::decode_commands(
        std::span(reinterpret_cast<const unsigned char*>(slot->wire_commands.data()),
                  slot->wire_commands.size() * sizeof(binary::WireCommand)),
        slot->commands.data());
    slot->results.assign(h.count, CommandResult{});
    ResultCode code = ResultCode::ok;
    Engine* engine = service.accepting() ? service.attached_engine() : nullptr;
    if (engine == nullptr) {
      code = ResultCode::not_ready;
    } else if (h.group >= engine->groups() ||
               std::any_of(slot->commands.begin(), slot->commands.end(), gateway_only)) {
      // Transfers between groups go through the HTTP API, which carries their steps.
      code = ResultCode::invalid_command;
    } else {
      holds_.push_back(shared_from_this());
      server_.in_flight->fetch_add(1, std::memory_order_acq_rel);
      code = engine->group(h.group).submit(
          Request{.kind = h.type == FrameType::atomic ? RequestKind::atomic : RequestKind::commands,
                  .count = h.count,
                  .commands = slot->commands.data(),
                  .results = slot->results.data(),
                  .batch_key = h.key,
                  .completion = slot});
      if (code != ResultCode::ok) {
        holds_.pop_back();
        server_.in_flight->fetch_sub(1, std::memory_order_acq_rel);
      }
    }
    if (code != ResultCode::ok) {
      slot->header.type = FrameType::results;
      slot->header.status = static_cast<u16>(code);
      queue_answer(slot);
    }
    read_header();
  }

  void record_owners(const Slot& slot) {
    if (slot.outcome.status != ResultCode::ok) return;
    for (std::size_t i = 0; i < slot.commands.size(); ++i) {
      const Command& c = slot.commands[i];
      if (c.kind == CommandKind::create_account && slot.results[i].ok()) {
        server_.owners.set(slot.results[i].id, c.create_account.owner.value);
      }
    }
  }

  void queue_answer(Slot* slot) {
    slot->wire_results.resize(slot->results.size());
    for (std::size_t i = 0; i < slot->results.size(); ++i)
      slot->wire_results[i] = binary::encode(slot->results[i]);
    slot->header.length = static_cast<u32>(binary::kHeaderBytes +
                                           slot->wire_results.size() * sizeof(binary::WireResult));
    slot->header.count = static_cast<u32>(slot->results.size());
    slot->header.key = IdempotencyKey{};
    server_.service.count_binary_frame();
    answers_.push_back(slot);
    if (!writing_) write_next();
  }

  void write_next() {
    if (answers_.empty()) {
      writing_ = false;
      return;
    }
    writing_ = true;
    Slot* slot = answers_.front();
    const std::array<asio::const_buffer, 2> buffers = {
        asio::buffer(&slot->header, sizeof(FrameHeader)),
        asio::buffer(static_cast<const void*>(slot->wire_results.data()),
                     slot->wire_results.size() * sizeof(binary::WireResult))};
    asio::async_write(socket_, buffers,
                      [self = shared_from_this(), slot](error_code ec, std::size_t) {
                        self->answers_.pop_front();
                        self->free_.push_back(slot);
                        if (ec) return self->close();
                        if (self->reading_paused_) {
                          self->reading_paused_ = false;
                          self->read_header();
                        }
                        self->write_next();
                      });
  }

  void write_raw(const FrameHeader* header) {
    error_code ignored;
    asio::write(socket_, asio::buffer(header, sizeof *header), ignored);
  }

  void refuse(u32 request_id, ResultCode code) {
    FrameHeader answer{};
    answer.length = binary::kHeaderBytes;
    answer.type = FrameType::error;
    answer.request_id = request_id;
    answer.status = static_cast<u16>(code);
    write_raw(&answer);
    close();
  }

  void close() {
    error_code ignored;
    timer_.cancel();
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
  }

  tcp::socket socket_;
  BinaryServer::Impl& server_;
  asio::steady_timer timer_;
  unsigned char header_bytes_[binary::kHeaderBytes];
  std::string token_;
  bool authenticated_ = false;
  FrameHeader hello_answer_{};
  std::vector<Slot> slots_;
  std::vector<Slot*> free_;
  std::deque<Slot*> answers_;
  bool writing_ = false;
  bool reading_paused_ = false;
  std::vector<std::shared_ptr<Connection>> holds_;  // one per frame a group has
};

void Slot::complete(const Outcome& o) noexcept {
  outcome = o;
  connection->answered(this);
}

}  // namespace

void BinaryServer::Impl::take(tcp::socket socket) {
  error_code ec;
  if (connections.load(std::memory_order_relaxed) >= config.connections_max) {
    socket.close(ec);
    return;
  }
  socket.set_option(tcp::no_delay(true), ec);
  std::make_shared<Connection>(std::move(socket), *this)->start();
}

BinaryServer::BinaryServer(Service& service, OwnerIndex& owners, std::string admin_token,
                           BinaryConfig config, IoRuntime& runtime)
    : config_(std::move(config)), in_flight_(std::make_shared<std::atomic<u64>>(0)) {
  impl_ =
      std::make_unique<Impl>(service, owners, std::move(admin_token), config_, runtime, in_flight_);
}

BinaryServer::~BinaryServer() = default;

Status BinaryServer::listen() {
  tcp::acceptor& acceptor = impl_->acceptor;
  if (Status opened = open_listener(acceptor, config_.address, config_.port); !opened.ok()) {
    return opened;
  }
  port_ = acceptor.local_endpoint().port();
  impl_->accepting.start();
  return Status::success();
}

void BinaryServer::close() {
  asio::post(impl_->context, [impl = impl_.get()] {
    error_code ignored;
    impl->acceptor.close(ignored);
    impl->accepting.stop();
  });
}

}  // namespace paygate::api
