// Status helpers.
#include "keel/status.h"

#include <cstring>

namespace keel {

int Status::err() const {
  if (errno_ != 0) return errno_;
  switch (code_) {
    case Code::kOk: return 0;
    case Code::kIo: return EIO;
    case Code::kCorrupt: return EIO;
    case Code::kUnsupported: return ENOTSUP;
    case Code::kInvalidArgument: return EINVAL;
    case Code::kReadOnly: return EPERM;
    case Code::kBusy: return EAGAIN;
    case Code::kNotFound: return ENOENT;
  }
  return EIO;
}

Status Status::with_context(const std::string& context) const {
  if (is_ok()) return *this;
  return Status(code_, context + ": " + message_, errno_);
}

Status io_error(int err, const std::string& what) {
  return Status(Code::kIo, what + ": " + std::strerror(err), err);
}
Status corrupt(const std::string& what) { return Status(Code::kCorrupt, what, EIO); }
Status invalid(const std::string& what) { return Status(Code::kInvalidArgument, what, EINVAL); }
Status unsupported(const std::string& what) { return Status(Code::kUnsupported, what, ENOTSUP); }

}  // namespace keel
