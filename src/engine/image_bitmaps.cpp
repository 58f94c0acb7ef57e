// Image's persistent-bitmap operations for formats without bitmaps (raw), and the helpers shared
// by every format: BitmapData::dirty and Image::bitmap_merge_from.
#include <fmt/format.h>

#include "keel/image.h"

namespace keel {

namespace {
Status no_bitmaps(const std::string& format) {
  return Status(Code::kUnsupported, fmt::format("Format {} does not support persistent bitmaps", format), ENOTSUP);
}
Status not_found(const std::string& name) {
  return Status(Code::kNotFound, fmt::format("Dirty bitmap '{}' not found", name), ENOENT);
}
}  // namespace

bool BitmapData::dirty(uint64_t offset, uint64_t length) const {
  if (length == 0 || granularity == 0 || offset >= virtual_size) return false;
  uint64_t last = std::min(offset + length, virtual_size) - 1;
  for (uint64_t i = offset / granularity; i <= last / granularity; ++i)
    if (test(i)) return true;
  return false;
}

Status Image::bitmap_add(const std::string&, uint32_t, bool) { return no_bitmaps(format()); }
Status Image::bitmap_remove(const std::string& name) { return not_found(name); }
Status Image::bitmap_clear(const std::string& name) { return not_found(name); }
Status Image::bitmap_enable(const std::string& name) { return not_found(name); }
Status Image::bitmap_disable(const std::string& name) { return not_found(name); }
Result<BitmapData> Image::bitmap_read(const std::string& name) { return error(not_found(name)); }
Status Image::bitmap_merge(const std::string& target, const BitmapData&) { return not_found(target); }

Status Image::bitmap_merge_from(const std::string& target, Image& source, const std::string& source_name) {
  KEEL_ASSIGN(BitmapData data, source.bitmap_read(source_name));
  return bitmap_merge(target, data);
}

}  // namespace keel
