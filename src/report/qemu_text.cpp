// The public text renderings of keel/report.h, on top of the QEMU layouts in qemu_json.cpp and
// info's format-specific object in image_info_json.cpp.
#include "keel/report.h"

#include <nlohmann/json.hpp>

#include "report/image_info_json.h"
#include "report/qemu_json.h"

namespace keel {

std::string check_json(const CheckResult& r, const std::string& filename) {
  nlohmann::ordered_json j;
  j["filename"] = filename;
  j["format"] = "qcow2";
  j["check-errors"] = r.check_errors;
  auto opt = [&](const char* key, uint64_t v) {
    if (v) j[key] = v;
  };
  opt("image-end-offset", r.image_end_offset);
  opt("corruptions", r.corruptions);
  opt("leaks", r.leaks);
  opt("corruptions-fixed", r.corruptions_fixed);
  opt("leaks-fixed", r.leaks_fixed);
  opt("total-clusters", r.total_clusters);
  opt("allocated-clusters", r.allocated_clusters);
  opt("fragmented-clusters", r.fragmented_clusters);
  opt("compressed-clusters", r.compressed_clusters);
  return report::qemu_json(j);
}

std::string measure_json(uint64_t required_bytes, uint64_t fully_allocated_bytes,
                         std::optional<uint64_t> bitmaps_bytes) {
  nlohmann::ordered_json j;
  if (bitmaps_bytes) j["bitmaps"] = *bitmaps_bytes;
  j["required"] = required_bytes;
  j["fully-allocated"] = fully_allocated_bytes;
  return report::qemu_json(j);
}

std::string format_specific_text(const ImageInfo& info, int indent_level) {
  auto spec = report::format_specific_json(info);
  if (!spec) return {};
  return report::qemu_human_dump((*spec)["data"], indent_level);
}

}  // namespace keel
