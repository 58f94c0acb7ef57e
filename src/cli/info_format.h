// ImageInfo rendered the way qemu-img info renders QEMU's ImageInfo: the JSON object (QEMU's
// field names; key order comes from qemu_json) and the human text of bdrv_image_info_dump.
// Shared by `keel info` and `keel io -c info`.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "keel/image.h"

namespace keel::cli {

// The "format-specific" object ({"type": "qcow2", "data": {...}}), or nullopt for raw.
std::optional<nlohmann::ordered_json> format_specific_json(const ImageInfo& info);

// The full info object of one image. `local` false (an NBD export, which QEMU asks neither for
// its disk size nor its dirty flag): no actual-size and no dirty-flag.
nlohmann::ordered_json image_info_json(const ImageInfo& info, bool local = true);

// qemu-img info's human text for one image (ends with a newline); "disk size: unavailable"
// unless `local`.
std::string image_info_human(const ImageInfo& info, bool local = true);

// One row of QEMU's snapshot table (bdrv_snapshot_dump); header row if `sn` is null. No newline.
std::string snapshot_row(const SnapshotInfo* sn);

}  // namespace keel::cli
