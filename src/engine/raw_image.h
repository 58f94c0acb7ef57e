// RawImage: a raw disk image file; guest offset == file offset.
#pragma once

#include <memory>

#include "keel/image.h"

namespace keel {

Result<std::unique_ptr<Image>> open_raw_image(std::unique_ptr<BlockFile> file, const std::string& path,
                                              const OpenOptions& opts);

}  // namespace keel
