// keel_info_json: the text `keel info --output=json` prints (qemu-img info's JSON), from the one
// renderer in src/report/image_info_json.cpp.
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "capi/capi_internal.h"
#include "keel/info_json.h"

extern "C" keel_status keel_info_json(keel_image* image, char** json, keel_error* error) {
  KEEL_CAPI_GUARD(error, {
    if (json) *json = nullptr;
    if (!image || !json)
      return keel::capi::report(KEEL_E_INVALID_ARGUMENT, EINVAL, "image and json must not be NULL", error);
    std::string text = keel::info_json(image->image->info());
    char* out = static_cast<char*>(std::malloc(text.size() + 1));
    if (!out) return keel::capi::report(KEEL_E_NO_MEMORY, ENOMEM, "Out of memory", error);
    std::memcpy(out, text.c_str(), text.size() + 1);
    *json = out;
    return keel::capi::report(keel::Status::ok(), error);
  })
}
