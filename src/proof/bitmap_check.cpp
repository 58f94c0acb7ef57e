// The checker's bitmap oracle (see bitmap_check.h).
#include "proof/bitmap_check.h"

#include <algorithm>
#include <sstream>

#include "proof/pattern.h"

namespace keel::proof {
namespace {

bool has_flag(const BitmapInfo& b, const char* flag) {
  return std::find(b.flags.begin(), b.flags.end(), flag) != b.flags.end();
}

std::string range_text(uint64_t offset, uint64_t length) {
  std::ostringstream o;
  o << "[0x" << std::hex << offset << "+0x" << length << ")";
  return o.str();
}

// The first granule of [offset, offset + length) the bitmap does not mark, or -1.
int64_t first_clean(const BitmapData& d, uint64_t offset, uint64_t length) {
  const uint64_t end = std::min(offset + length, d.virtual_size);
  if (d.granularity == 0 || offset >= end) return -1;
  for (uint64_t i = offset / d.granularity; i <= (end - 1) / d.granularity; ++i)
    if (i / 8 >= d.bits.size() || !d.test(i)) return static_cast<int64_t>(i);
  return -1;
}

}  // namespace

void check_bitmaps(Image& img, const GuestModel& model, const std::vector<uint32_t>& observed, StateVerdict& v,
                   uint32_t md) {
  const auto& known = model.bitmaps().bitmaps();
  const std::vector<BitmapInfo> listed = img.info().bitmaps;
  for (const auto& [bitmap_name, b] : known) {
    const std::string& name = bitmap_name;  // clang 14 cannot capture a structured binding
    bool found = std::any_of(listed.begin(), listed.end(), [&](const BitmapInfo& i) { return i.name == name; });
    if (!found && b.must_exist) v.add(Guarantee::kG5, "bitmap '" + name + "' was added and is gone", md);
  }
  for (const BitmapInfo& info : listed) {
    auto it = known.find(info.name);
    if (it == known.end()) {
      v.add(Guarantee::kG5, "bitmap '" + info.name + "' is listed but was never added or its removal completed", md);
      continue;
    }
    const BitmapModel::Bitmap& want = it->second;
    if (info.granularity != want.granularity)
      v.add(Guarantee::kG5, "bitmap '" + info.name + "' has granularity " + std::to_string(info.granularity) +
                                ", added with " + std::to_string(want.granularity), md);
    // In use: a crash while it was tracking left it inconsistent; QEMU and Keel never trust it.
    if (has_flag(info, "in-use")) continue;
    if (want.auto_flag && *want.auto_flag != has_flag(info, "auto"))
      v.add(Guarantee::kG5, "bitmap '" + info.name + "' is " + (has_flag(info, "auto") ? "enabled" : "disabled") +
                                " but its last change made it " + (*want.auto_flag ? "enabled" : "disabled"), md);
    auto data = img.bitmap_read(info.name);
    if (!data) {
      v.add(Guarantee::kG5, "consistent bitmap '" + info.name + "' cannot be read: " + data.error().message(), md);
      continue;
    }
    for (const auto& [offset, length] : want.required) {
      int64_t clean = first_clean(*data, offset, length);
      if (clean >= 0)
        v.add(Guarantee::kG5, "consistent bitmap '" + info.name + "' misses the completed write " +
                                  range_text(offset, length) + " (granule " + std::to_string(clean) + " clean)", md);
    }
    for (uint64_t s = 0; s < observed.size(); ++s) {
      if (observed[s] == kUnknownVersion || !want.versions.count(observed[s])) continue;
      if (first_clean(*data, s * kGuestSector, kGuestSector) >= 0)
        v.add(Guarantee::kG5, "consistent bitmap '" + info.name + "' has guest sector " + std::to_string(s) +
                                  " clean, which reads as v" + std::to_string(observed[s]) + ", written while it tracked", md);
    }
  }
}

}  // namespace keel::proof
