// keel_info_json: ImageInfo rendered with qemu-img info's JSON field names.
// (The keel command renders the same fields in src/cli/info_format.cpp, with the human layout
// beside it; moving that renderer into the library so both share it is issue 18's layering step.)
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <nlohmann/json.hpp>

#include "capi/capi_internal.h"

namespace {

nlohmann::ordered_json info_json(const keel::ImageInfo& info) {
  nlohmann::ordered_json j;
  j["filename"] = info.filename;
  j["format"] = info.format;
  j["virtual-size"] = info.virtual_size;
  j["actual-size"] = info.actual_size;
  if (info.cluster_size != 0) j["cluster-size"] = info.cluster_size;
  if (!info.backing_filename.empty()) {
    j["backing-filename"] = info.backing_filename;
    j["full-backing-filename"] = info.full_backing_filename;
    if (!info.backing_format.empty()) j["backing-filename-format"] = info.backing_format;
  }
  if (!info.snapshots.empty()) {
    auto list = nlohmann::ordered_json::array();
    for (const auto& s : info.snapshots) {
      nlohmann::ordered_json e;
      e["id"] = s.id;
      e["name"] = s.name;
      e["vm-state-size"] = s.vm_state_size;
      e["date-sec"] = s.date_sec;
      e["date-nsec"] = s.date_nsec;
      e["vm-clock-sec"] = s.vm_clock_nsec / 1000000000u;
      e["vm-clock-nsec"] = s.vm_clock_nsec % 1000000000u;
      if (s.icount != UINT64_MAX) e["icount"] = s.icount;
      list.push_back(e);
    }
    j["snapshots"] = list;
  }
  if (info.format == "qcow2") {
    nlohmann::ordered_json data;
    data["compat"] = info.compat.empty() ? "1.1" : info.compat;
    if (info.compat != "0.10") {
      data["lazy-refcounts"] = info.lazy_refcounts;
      data["corrupt"] = info.corrupt;
      if (!info.bitmaps.empty()) {
        auto list = nlohmann::ordered_json::array();
        for (const auto& b : info.bitmaps)
          list.push_back({{"flags", b.flags}, {"name", b.name}, {"granularity", b.granularity}});
        data["bitmaps"] = list;
      }
      if (!info.data_file.empty()) {
        data["data-file"] = info.data_file;
        data["data-file-raw"] = info.data_file_raw;
      }
      data["extended-l2"] = info.extended_l2;
    }
    data["refcount-bits"] = info.refcount_bits;
    data["compression-type"] = info.compression_type.empty() ? "zlib" : info.compression_type;
    j["format-specific"] = {{"type", "qcow2"}, {"data", data}};
  }
  j["dirty-flag"] = info.dirty;
  return j;
}

}  // namespace

extern "C" keel_status keel_info_json(keel_image* image, char** json, keel_error* error) {
  KEEL_CAPI_GUARD(error, {
    if (json) *json = nullptr;
    if (!image || !json)
      return keel::capi::report(KEEL_E_INVALID_ARGUMENT, EINVAL, "image and json must not be NULL", error);
    std::string text = info_json(image->image->info()).dump(4);
    char* out = static_cast<char*>(std::malloc(text.size() + 1));
    if (!out) return keel::capi::report(KEEL_E_NO_MEMORY, ENOMEM, "Out of memory", error);
    std::memcpy(out, text.c_str(), text.size() + 1);
    *json = out;
    return keel::capi::report(keel::Status::ok(), error);
  })
}
