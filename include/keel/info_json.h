// qemu-img info's JSON text for an image (or a backing chain), from the same renderer that
// `keel info --output=json` prints with: QEMU's field names, key order and layout, so programs
// that parse qemu-img's output parse this too.
#pragma once

#include <span>
#include <string>

#include "keel/image.h"

namespace keel {

// `qemu-img info --output=json` of one image, without the trailing newline. `local` false: the
// image is an NBD export, which qemu-img asks neither for its disk size nor its dirty flag (no
// "actual-size", no "dirty-flag"). Pure function of its arguments (no I/O); thread-safe.
std::string info_json(const ImageInfo& info, bool local = true);

// `qemu-img info --backing-chain --output=json`: a JSON array of the chain, top image first;
// `top_local` as `local` above for the top image (its backing files are local).
std::string info_json(std::span<const ImageInfo> chain, bool top_local = true);

}  // namespace keel
