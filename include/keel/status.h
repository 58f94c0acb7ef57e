// Status and Result<T>: how every expected failure in libkeel is reported. No exceptions cross
// the library boundary; every fallible call returns one of these and the caller must look.
#pragma once

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

namespace keel {

enum class Code {
  kOk = 0,
  // An I/O call on a file failed (EIO, ENOSPC, EDQUOT, short count...). errno() says which.
  kIo,
  // Bytes read from an image violate the format: a field out of range, a misaligned or
  // out-of-file offset, overlapping metadata. The message names the field, offset and value.
  kCorrupt,
  // A valid image uses something Keel does not implement (unknown incompatible bit, encryption).
  kUnsupported,
  // The caller asked for something impossible: offset past the end, bad option value.
  kInvalidArgument,
  // A write to an image opened read-only, or latched read-only after a failed metadata write.
  kReadOnly,
  // Another process holds a conflicting lock on the image.
  kBusy,
  // A named thing (file, snapshot, export) does not exist.
  kNotFound,
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string message, int err = 0)
      : code_(code), errno_(err), message_(std::move(message)) {}

  static Status ok() { return {}; }
  bool is_ok() const { return code_ == Code::kOk; }
  explicit operator bool() const { return is_ok(); }
  Code code() const { return code_; }
  // The errno that best describes the failure (EIO for corruption, EINVAL for bad arguments...).
  int err() const;
  const std::string& message() const { return message_; }

  // Returns this status with `context` prepended ("context: message").
  Status with_context(const std::string& context) const;

 private:
  Code code_ = Code::kOk;
  int errno_ = 0;
  std::string message_;
};

// The error side of a Result, made by error(): `return error(corrupt("..."));`.
class Unexpected {
 public:
  explicit Unexpected(Status s) : status_(std::move(s)) {}
  const Status& status() const& { return status_; }
  Status&& status() && { return std::move(status_); }

 private:
  Status status_;
};

inline Unexpected error(Status s) { return Unexpected(std::move(s)); }

// Result<T>: a T, or the Status of why there is none. The subset of std::expected's interface
// libkeel uses (has_value, *, ->, value, error, value_or), in libkeel's own type so that the
// public headers carry no third-party types. Asking a failed Result for its value, or a
// successful one for its error, is a bug in the caller: it aborts with the message.
template <typename T>
class [[nodiscard]] Result {
  static_assert(!std::is_reference_v<T> && !std::is_same_v<std::remove_cv_t<T>, Status>,
                "Result<T> needs a non-reference value type other than Status");

 public:
  using value_type = T;
  using error_type = Status;

  Result() requires std::is_default_constructible_v<T> : v_(std::in_place_index<0>) {}
  // From anything a T can be made from (implicit, as returning a T from a Result<T> function).
  template <typename U = T>
    requires(std::is_constructible_v<T, U &&> && !std::is_same_v<std::remove_cvref_t<U>, Result> &&
             !std::is_same_v<std::remove_cvref_t<U>, Unexpected>)
  Result(U&& value) : v_(std::in_place_index<0>, std::forward<U>(value)) {}  // NOLINT
  Result(Unexpected e) : v_(std::in_place_index<1>, std::move(e).status()) {}  // NOLINT
  // From a Result of a convertible type (Result<unique_ptr<Derived>> to Result<unique_ptr<Base>>).
  template <typename U>
    requires(!std::is_same_v<U, T> && std::is_constructible_v<T, U &&>)
  Result(Result<U>&& other)  // NOLINT
      : v_(other.has_value() ? Storage(std::in_place_index<0>, std::move(*other))
                             : Storage(std::in_place_index<1>, std::move(other).error())) {}

  bool has_value() const { return v_.index() == 0; }
  explicit operator bool() const { return has_value(); }

  T& value() & { return check_value(), *std::get_if<0>(&v_); }
  const T& value() const& { return check_value(), *std::get_if<0>(&v_); }
  T&& value() && { return check_value(), std::move(*std::get_if<0>(&v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  template <typename U>
  T value_or(U&& fallback) const& {
    return has_value() ? *std::get_if<0>(&v_) : static_cast<T>(std::forward<U>(fallback));
  }
  template <typename U>
  T value_or(U&& fallback) && {
    return has_value() ? std::move(*std::get_if<0>(&v_)) : static_cast<T>(std::forward<U>(fallback));
  }

  Status& error() & { return check_error(), *std::get_if<1>(&v_); }
  const Status& error() const& { return check_error(), *std::get_if<1>(&v_); }
  Status&& error() && { return check_error(), std::move(*std::get_if<1>(&v_)); }

 private:
  using Storage = std::variant<T, Status>;
  void check_value() const {
    if (!has_value()) misuse("value() of a failed Result", std::get_if<1>(&v_)->message());
  }
  void check_error() const {
    if (has_value()) misuse("error() of a successful Result", "");
  }
  [[noreturn]] static void misuse(const char* what, const std::string& message) {
    std::fprintf(stderr, "keel: %s %s\n", what, message.c_str());
    std::abort();
  }
  Storage v_;
};

Status io_error(int err, const std::string& what);
Status corrupt(const std::string& what);
Status invalid(const std::string& what);
Status unsupported(const std::string& what);

}  // namespace keel

#define KEEL_CONCAT_INNER(a, b) a##b
#define KEEL_CONCAT(a, b) KEEL_CONCAT_INNER(a, b)

// Returns the Status from the enclosing function if `expr` failed.
#define KEEL_TRY(expr)                              \
  do {                                              \
    ::keel::Status keel_status_ = (expr);           \
    if (!keel_status_.is_ok()) return keel_status_; \
  } while (0)

// For functions returning Result<T>: propagate a failed Status as an unexpected value.
#define KEEL_TRY_R(expr)                                            \
  do {                                                              \
    ::keel::Status keel_status_ = (expr);                           \
    if (!keel_status_.is_ok()) return ::keel::error(keel_status_);  \
  } while (0)

// `KEEL_ASSIGN(auto x, result_expr);` — unwraps a Result or returns its error (as Status, which
// converts into both Status and Result<U> returns through KEEL_RETURN_ERR).
#define KEEL_ASSIGN(lhs, rexpr) KEEL_ASSIGN_IMPL(KEEL_CONCAT(keel_r_, __LINE__), lhs, rexpr)
#define KEEL_ASSIGN_IMPL(tmp, lhs, rexpr)                 \
  auto tmp = (rexpr);                                     \
  if (!tmp) return ::keel::detail::propagate(tmp.error()); \
  lhs = std::move(*tmp)

namespace keel::detail {
// Converts to either Status or Result<T> so KEEL_ASSIGN works in both kinds of function.
struct Propagate {
  Status status;
  operator Status() const { return status; }  // NOLINT(google-explicit-constructor)
  template <typename T>
  operator Result<T>() const {  // NOLINT(google-explicit-constructor)
    return Unexpected(status);
  }
};
inline Propagate propagate(const Status& s) { return Propagate{s}; }
}  // namespace keel::detail
