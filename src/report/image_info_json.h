// ImageInfo as QEMU's ImageInfo JSON object: the one renderer behind `keel info --output=json`,
// `keel io -c info`'s format-specific block, the public keel::info_json (keel/info_json.h) and the
// C API's keel_info_json. Field names and presence rules are qemu-img 7.2's; key order is
// applied by qemu_json (QDict order), so insertion order here does not matter for the text.
#pragma once

#include <optional>

#include <nlohmann/json.hpp>

#include "keel/image.h"

namespace keel::report {

// The "format-specific" object ({"type": "qcow2", "data": {...}}), or nullopt for raw.
std::optional<nlohmann::ordered_json> format_specific_json(const ImageInfo& info);

// The full info object of one image. "full-backing-filename" is the backing name resolved
// against info.filename with keel::resolve_relative (the rule the engine opens with). `local`
// false (an NBD export, which QEMU asks neither for its disk size nor its dirty flag): no
// actual-size and no dirty-flag.
nlohmann::ordered_json image_info_json(const ImageInfo& info, bool local = true);

}  // namespace keel::report
