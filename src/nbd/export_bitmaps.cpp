// The dirty bitmaps an export serves (see export_bitmaps.h).
#include "nbd/export_bitmaps.h"

#include <algorithm>

#include <fmt/format.h>

#include "keel/limits.h"

namespace keel::nbd {
namespace {

bool has_flag(const BitmapInfo& b, const char* flag) {
  return std::find(b.flags.begin(), b.flags.end(), flag) != b.flags.end();
}

}  // namespace

Result<std::shared_ptr<const ExportBitmaps>> ExportBitmaps::open(Image& image,
                                                                 const std::vector<std::string>& names,
                                                                 bool read_only_export) {
  auto out = std::make_shared<ExportBitmaps>();
  for (auto it = names.rbegin(); it != names.rend(); ++it) {
    const std::string& name = *it;
    Entry e;
    e.name = name;
    std::optional<BitmapInfo> found;
    int depth = 0;
    for (Image* layer = &image; layer && !found && depth <= limits::kMaxBackingDepth;
         layer = layer->backing(), ++depth) {
      for (const auto& b : layer->info().bitmaps) {
        if (b.name == name) {
          found = b;
          e.layer = layer;
          break;
        }
      }
    }
    if (!found) return error(Status(Code::kNotFound, fmt::format("Bitmap '{}' is not found", name), ENOENT));
    if (has_flag(*found, "in-use"))
      return error(invalid(fmt::format("Bitmap '{}' is inconsistent and cannot be used", name)));
    const bool live = has_flag(*found, "auto") && !read_only_export && !e.layer->read_only() &&
                      e.layer == &image;
    if (!live) {
      auto bits = e.layer->bitmap_read(name);
      if (!bits) return error(bits.error());
      e.frozen = std::make_shared<const BitmapData>(std::move(*bits));
    }
    out->entries_.push_back(std::move(e));
  }
  return std::shared_ptr<const ExportBitmaps>(std::move(out));
}

std::vector<std::string> ExportBitmaps::names() const {
  std::vector<std::string> out;
  for (const auto& e : entries_) out.push_back(e.name);
  return out;
}

Result<std::shared_ptr<const BitmapData>> ExportBitmaps::read(size_t index) const {
  if (index >= entries_.size()) return error(invalid(fmt::format("no bitmap {}", index)));
  const Entry& e = entries_[index];
  if (e.frozen) return e.frozen;
  KEEL_ASSIGN(BitmapData bits, e.layer->bitmap_read(e.name));
  return std::make_shared<const BitmapData>(std::move(bits));
}

}  // namespace keel::nbd
