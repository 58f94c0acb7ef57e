// ImageInfo rendered the way qemu-img info renders QEMU's ImageInfo: the human text of
// bdrv_image_info_dump, on top of the library's renderer (keel/info_json.h, keel/report.h).
// Shared by `keel info` and `keel io -c info`.
#pragma once

#include <string>

#include "keel/image.h"

namespace keel::cli {

// qemu-img info's human text for one image (ends with a newline).
// "disk size: unavailable" unless `local`.
std::string image_info_human(const ImageInfo& info, bool local = true);

// One row of QEMU's snapshot table (bdrv_snapshot_dump); header row if `sn` is null. No newline.
std::string snapshot_row(const SnapshotInfo* sn);

}  // namespace keel::cli
