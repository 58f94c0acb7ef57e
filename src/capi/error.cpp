// The C API's errors: keel::Code -> keel_status, the message and errno into keel_error, and
// keel_strerror / keel_version.
#include <cerrno>
#include <cstring>
#include <string>

#include "capi/capi_internal.h"
#include "keel/version.h"

namespace keel::capi {
namespace {

keel_status to_c(Code code) {
  switch (code) {
    case Code::kOk: return KEEL_OK;
    case Code::kIo: return KEEL_E_IO;
    case Code::kCorrupt: return KEEL_E_CORRUPT;
    case Code::kUnsupported: return KEEL_E_UNSUPPORTED;
    case Code::kInvalidArgument: return KEEL_E_INVALID_ARGUMENT;
    case Code::kReadOnly: return KEEL_E_READ_ONLY;
    case Code::kBusy: return KEEL_E_BUSY;
    case Code::kNotFound: return KEEL_E_NOT_FOUND;
  }
  return KEEL_E_IO;
}

}  // namespace

keel_status report(keel_status code, int err, const std::string& message, keel_error* error) {
  if (error) {
    error->code = code;
    error->err = err;
    size_t n = message.size() < KEEL_ERROR_MESSAGE_SIZE - 1 ? message.size() : KEEL_ERROR_MESSAGE_SIZE - 1;
    std::memcpy(error->message, message.data(), n);
    error->message[n] = '\0';
  }
  return code;
}

keel_status report(const Status& s, keel_error* error) {
  if (s.is_ok()) return report(KEEL_OK, 0, "", error);
  return report(to_c(s.code()), s.err(), s.message(), error);
}

}  // namespace keel::capi

extern "C" const char* keel_strerror(keel_status code) {
  switch (code) {
    case KEEL_OK: return "Success";
    case KEEL_E_IO: return "I/O error";
    case KEEL_E_CORRUPT: return "Image is corrupt";
    case KEEL_E_UNSUPPORTED: return "Not supported";
    case KEEL_E_INVALID_ARGUMENT: return "Invalid argument";
    case KEEL_E_READ_ONLY: return "Image is read-only";
    case KEEL_E_BUSY: return "Image is locked by another process";
    case KEEL_E_NOT_FOUND: return "Not found";
    case KEEL_E_NO_MEMORY: return "Out of memory";
  }
  return "Unknown error";
}

extern "C" const char* keel_version(void) { return KEEL_VERSION_STRING; }

extern "C" void keel_free(void* p) { std::free(p); }
