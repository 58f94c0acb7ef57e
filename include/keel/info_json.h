// qemu-img info's JSON text for an image (or a backing chain), from the same renderer that
// `keel info --output=json` prints with: QEMU's field names, key order and layout, so programs
// that parse qemu-img's output parse this too.
#pragma once

#include <span>
#include <string>

#include "keel/image.h"

namespace keel {

// `qemu-img info --output=json` of one image, without the trailing newline.
// Pure function of `info` (no I/O); thread-safe.
std::string info_json(const ImageInfo& info);

// `qemu-img info --backing-chain --output=json`: a JSON array of the chain, top image first.
std::string info_json(std::span<const ImageInfo> chain);

}  // namespace keel
