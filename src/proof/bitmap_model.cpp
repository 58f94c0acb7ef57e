// BitmapModel (see bitmap_model.h).
#include "proof/bitmap_model.h"

#include "proof/pattern.h"

namespace keel::proof {

void BitmapModel::add(const std::string& name, uint32_t granularity, bool enabled, bool certain) {
  if (!certain) {
    // A crash from now on may or may not have it; it starts empty and tracks nothing until the
    // add returns (the workload issues nothing meanwhile).
    bitmaps_[name] = Bitmap{granularity, false, enabled, false, {}, {}};
    return;
  }
  auto it = bitmaps_.find(name);
  if (it == bitmaps_.end()) return;
  it->second.must_exist = true;
  it->second.tracking = enabled;
}

void BitmapModel::remove(const std::string& name, bool certain) {
  auto it = bitmaps_.find(name);
  if (it == bitmaps_.end()) return;
  if (certain) {
    bitmaps_.erase(it);
  } else {
    it->second.must_exist = false;
    it->second.tracking = false;
  }
}

void BitmapModel::disable(const std::string& name, bool certain) {
  auto it = bitmaps_.find(name);
  if (it == bitmaps_.end()) return;
  it->second.tracking = false;
  it->second.auto_flag = certain ? std::optional<bool>(false) : std::nullopt;
}

void BitmapModel::merge(const std::string& target, const std::string& source, bool certain) {
  if (!certain) return;  // until it completes, the target may be as it was
  auto t = bitmaps_.find(target);
  auto s = bitmaps_.find(source);
  if (t == bitmaps_.end() || s == bitmaps_.end() || t == s) return;
  t->second.required.insert(t->second.required.end(), s->second.required.begin(), s->second.required.end());
  t->second.versions.insert(s->second.versions.begin(), s->second.versions.end());
}

void BitmapModel::guest_write(uint64_t offset, uint64_t length, uint32_t version, bool certain) {
  if (length == 0) return;
  for (auto& [name, b] : bitmaps_) {
    if (!b.tracking) continue;
    if (!certain && version >= kFirstWriteVersion) b.versions.insert(version);
    if (certain) b.required.emplace_back(offset, length);
  }
}

}  // namespace keel::proof
