// The persistent dirty bitmaps an export serves as qemu:dirty-bitmap:NAME contexts (keel serve
// -B NAME), looked up and checked once when the server starts, as qemu-nbd 7.2 does:
//   - a name is looked up in the image, then down its backing chain ("Bitmap 'x' is not found");
//   - a bitmap marked in-use (a crash while it was tracking) is refused ("Bitmap 'x' is
//     inconsistent and cannot be used");
//   - a disabled bitmap is served as it is; an enabled one on a writable image keeps tracking
//     the writes made through the server, and every BLOCK_STATUS reads its current bits;
//   - the bitmaps get ids in the reverse order of the -B options (qemu-nbd prepends each -B to
//     its list), and a name given twice is served twice.
// Bitmaps that cannot change while served (disabled, read-only layer or export) are read once.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "keel/image.h"
#include "keel/status.h"

namespace keel::nbd {

class ExportBitmaps {
 public:
  // `names` in the order of the -B options. The layers of `image` must outlive the result.
  static Result<std::shared_ptr<const ExportBitmaps>> open(Image& image,
                                                           const std::vector<std::string>& names,
                                                           bool read_only_export);

  // The served bitmap names, index i having context id kMetaIdDirtyBitmap + i.
  std::vector<std::string> names() const;
  size_t size() const { return entries_.size(); }
  // The bits of bitmap `index` now. Thread-safe.
  Result<std::shared_ptr<const BitmapData>> read(size_t index) const;

 private:
  struct Entry {
    std::string name;
    Image* layer = nullptr;            // the layer of the chain that holds the bitmap
    std::shared_ptr<const BitmapData> frozen;  // the bits, when they cannot change while served
  };
  std::vector<Entry> entries_;
};

}  // namespace keel::nbd
