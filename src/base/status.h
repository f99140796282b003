// What a path that does IO (the journal, snapshots, recovery, files, configuration,
// listening sockets) answers: ok, or a code and a message that says what failed and
// where. Built only by the named factories, so a call site reads the same everywhere:
//
//   if (Status s = write_file_durably(path, text, 0600); !s.ok()) return s;
//   Result<std::unique_ptr<Group>> group = Group::open(config);
//   if (!group.ok()) log(group.status().to_string());
//
// Cheap on success: an ok Status is one null pointer (the code and message are only
// allocated when something failed, which is never on a hot path). Business outcomes of
// commands are not errors and stay ResultCode (base/result_code.h).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "base/assert.h"
#include "base/types.h"

namespace paygate {

enum class StatusCode : u8 {
  ok = 0,
  io_error,        // the system refused a read, write, sync, rename, open, ...
  corruption,      // data on disk is not what was written (a CRC, a count, a layout)
  invalid_config,  // a setting, or data written under another configuration
  not_found,       // a file or directory that was expected
  busy,            // held by someone else (another process's lock, a port in use)
};

constexpr std::string_view name(StatusCode code) noexcept {
  switch (code) {
    case StatusCode::ok:
      return "ok";
    case StatusCode::io_error:
      return "io_error";
    case StatusCode::corruption:
      return "corruption";
    case StatusCode::invalid_config:
      return "invalid_config";
    case StatusCode::not_found:
      return "not_found";
    case StatusCode::busy:
      return "busy";
  }
  return "unknown";
}

class [[nodiscard]] Status {
 public:
  Status() noexcept = default;  // ok
  static Status success() noexcept { return Status(); }
  static Status io_error(std::string message) {
    return Status(StatusCode::io_error, std::move(message));
  }
  static Status corruption(std::string message) {
    return Status(StatusCode::corruption, std::move(message));
  }
  static Status invalid_config(std::string message) {
    return Status(StatusCode::invalid_config, std::move(message));
  }
  static Status not_found(std::string message) {
    return Status(StatusCode::not_found, std::move(message));
  }
  static Status busy(std::string message) { return Status(StatusCode::busy, std::move(message)); }

  Status(const Status& other) : failure_(other.failure_ ? new Failure(*other.failure_) : nullptr) {}
  Status& operator=(const Status& other) {
    if (this != &other) failure_.reset(other.failure_ ? new Failure(*other.failure_) : nullptr);
    return *this;
  }
  Status(Status&&) noexcept = default;
  Status& operator=(Status&&) noexcept = default;

  bool ok() const noexcept { return failure_ == nullptr; }
  StatusCode code() const noexcept { return failure_ ? failure_->code : StatusCode::ok; }
  // What failed, and where; empty when ok.
  const std::string& message() const noexcept {
    static const std::string kNone;
    return failure_ ? failure_->message : kNone;
  }
  // "io_error: cannot open …", or "ok".
  std::string to_string() const {
    if (ok()) return "ok";
    std::string text(name(failure_->code));
    text += ": ";
    text += failure_->message;
    return text;
  }
  // The same failure, its message prefixed with where it happened ("group 2: …").
  Status with_context(std::string_view context) const {
    if (ok()) return *this;
    std::string text(context);
    text += ": ";
    text += failure_->message;
    return Status(failure_->code, std::move(text));
  }

 private:
  struct Failure {
    StatusCode code;
    std::string message;
  };
  Status(StatusCode code, std::string message) : failure_(new Failure{code, std::move(message)}) {
    PG_ASSERT(code != StatusCode::ok);
  }

  std::unique_ptr<Failure> failure_;
};

// A value, or the Status that says why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}         // NOLINT: implicit, like a return value
  Result(Status status) : status_(std::move(status)) {  // NOLINT
    PG_ASSERT(!status_.ok());                           // an ok Result carries a value
  }

  bool ok() const noexcept { return value_.has_value(); }
  const Status& status() const noexcept { return status_; }
  // REQUIRES: ok().
  T& value() & {
    PG_ASSERT(ok());
    return *value_;
  }
  const T& value() const& {
    PG_ASSERT(ok());
    return *value_;
  }
  T&& value() && {
    PG_ASSERT(ok());
    return std::move(*value_);
  }

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace paygate
