// ImageInfo rendered the way qemu-img info renders QEMU's ImageInfo: the human text of
// bdrv_image_info_dump, on top of the library's one JSON renderer (src/report/image_info_json.h).
// Shared by `keel info` and `keel io -c info`.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "keel/image.h"
#include "report/image_info_json.h"

namespace keel::cli {

// The JSON objects come from the library's renderer (the C API's keel_info_json uses it too).
using ::keel::report::format_specific_json;
using ::keel::report::image_info_json;

// qemu-img info's human text for one image (ends with a newline).
// "disk size: unavailable" unless `local`.
std::string image_info_human(const ImageInfo& info, bool local = true);

// One row of QEMU's snapshot table (bdrv_snapshot_dump); header row if `sn` is null. No newline.
std::string snapshot_row(const SnapshotInfo* sn);

}  // namespace keel::cli
