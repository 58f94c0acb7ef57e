// Status and Result<T>: how every expected failure in libkeel is reported. No exceptions cross
// the library boundary; every fallible call returns one of these and the caller must look.
#pragma once

#include <cerrno>
#include <string>
#include <utility>

#include <tl/expected.hpp>

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

template <typename T>
using Result = tl::expected<T, Status>;

inline tl::unexpected<Status> error(Status s) { return tl::unexpected<Status>(std::move(s)); }
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
    return tl::unexpected<Status>(status);
  }
};
inline Propagate propagate(const Status& s) { return Propagate{s}; }
}  // namespace keel::detail
