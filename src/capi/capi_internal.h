// Shared by the C API's files (src/capi): the handle behind keel_image and the conversion of a
// keel::Status into the caller's keel_error.
#pragma once

#include <memory>
#include <string>

#include "keel/image.h"
#include "keel/keel.h"
#include "keel/status.h"

struct keel_image {
  std::unique_ptr<keel::Image> image;
  // The caller's logger (keel_open_options.log), kept here so the engine's callback can reach it.
  keel_log_fn log = nullptr;
  void* log_context = nullptr;
};

namespace keel::capi {

// Fills `error` (when not null) from `s` and returns its code; KEEL_OK for an ok status.
keel_status report(const Status& s, keel_error* error);
// The same for failures that have no Status: a null argument, an allocation failure.
keel_status report(keel_status code, int err, const std::string& message, keel_error* error);

}  // namespace keel::capi

// Every C entry point runs its body inside this, so no C++ exception (std::bad_alloc from a
// std::string or vector) ever crosses the C boundary.
#define KEEL_CAPI_GUARD(error, body)                                               \
  try {                                                                            \
    body                                                                           \
  } catch (const std::bad_alloc&) {                                                \
    return ::keel::capi::report(KEEL_E_NO_MEMORY, ENOMEM, "Out of memory", error); \
  } catch (const std::exception& e) {                                              \
    return ::keel::capi::report(KEEL_E_IO, EIO, e.what(), error);                  \
  }
