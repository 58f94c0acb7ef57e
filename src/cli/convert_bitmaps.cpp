// keel convert --bitmaps (see convert_bitmaps.h).
//
// qemu-img walks the source's bitmaps in reverse directory order (its in-memory list) and the
// target stores new ones after those it already has, in directory order: a fresh target gets
// the source's order, and with -n the first conflict met in reverse order is the one reported,
// after the bitmaps behind it were added. keel adds the same bitmaps in the same order.
#include "cli/convert_bitmaps.h"

#include <algorithm>
#include <string>

#include <fmt/format.h>

#include "cli/command.h"

namespace keel::cli {
namespace {

bool bitmap_capable(Image& img) { return img.format() == "qcow2" && img.info().compat != "0.10"; }

bool bitmap_in_use(const BitmapInfo& b) {
  return std::find(b.flags.begin(), b.flags.end(), "in-use") != b.flags.end();
}

bool bitmap_enabled(const BitmapInfo& b) { return std::find(b.flags.begin(), b.flags.end(), "auto") != b.flags.end(); }

}  // namespace

bool check_bitmap_source(const std::vector<Image*>& sources, bool skip_broken) {
  if (sources.size() > 1) {
    print_error("Copying bitmaps only possible with single source");
    return false;
  }
  if (!bitmap_capable(*sources[0])) {
    print_error("Source lacks bitmap support");
    return false;
  }
  if (skip_broken) return true;
  for (const auto& b : sources[0]->info().bitmaps) {
    if (!bitmap_in_use(b)) continue;
    print_error(fmt::format("Cannot copy inconsistent bitmap '{}'", b.name));
    std::fputs("Try --skip-broken-bitmaps, or use 'qemu-img bitmap --remove' to delete it\n", stderr);
    return false;
  }
  return true;
}

bool check_bitmap_target(Image& target) {
  if (bitmap_capable(target)) return true;
  print_error(fmt::format("Format driver '{}' does not support bitmaps", target.format()));
  return false;
}

bool copy_bitmaps(Image& source, Image& target, bool skip_broken) {
  const auto bitmaps = source.info().bitmaps;
  std::vector<std::string> existing;
  for (const auto& b : target.info().bitmaps) existing.push_back(b.name);
  // Walk in qemu-img's (reverse) order to find what it would add before a conflict stops it.
  size_t first = 0;
  std::string conflict;
  for (size_t i = bitmaps.size(); i-- > 0;) {
    if (skip_broken && bitmap_in_use(bitmaps[i])) continue;
    if (std::find(existing.begin(), existing.end(), bitmaps[i].name) != existing.end()) {
      first = i + 1;
      conflict = bitmaps[i].name;
      break;
    }
  }
  if (skip_broken) {  // qemu-img warns as it meets them, in its order
    for (size_t i = bitmaps.size(); i-- > first;)
      if (bitmap_in_use(bitmaps[i])) print_error(fmt::format("warning: Skipping inconsistent bitmap '{}'", bitmaps[i].name));
  }
  for (size_t i = first; i < bitmaps.size(); ++i) {
    const BitmapInfo& b = bitmaps[i];
    if (skip_broken && bitmap_in_use(b)) continue;
    Status st = target.bitmap_add(b.name, b.granularity, !bitmap_enabled(b));
    if (!st.is_ok()) {
      print_error(fmt::format("Failed to create bitmap {}: {}", b.name, st.message()));
      return false;
    }
    st = target.bitmap_merge_from(b.name, source, b.name);
    if (!st.is_ok()) {
      print_error(fmt::format("Failed to populate bitmap {}: {}", b.name, st.message()));
      return false;
    }
  }
  if (!conflict.empty()) {
    print_error(fmt::format("Failed to create bitmap {}: Bitmap already exists: {}", conflict, conflict));
    return false;
  }
  return true;
}

}  // namespace keel::cli
