// `keel convert --bitmaps [--skip-broken-bitmaps]`: the source's persistent dirty bitmaps are
// copied to a qcow2 (v3) target after its data, as qemu-img 7.2 does, with its checks and
// messages. Each function prints qemu-img's message and returns false when it refuses.
#pragma once

#include <vector>

#include "keel/image.h"

namespace keel::cli {

// Before the target is created: one source, a qcow2 v3 one, whose bitmaps are all consistent
// (an in-use one is refused unless skip_broken).
bool check_bitmap_source(const std::vector<Image*>& sources, bool skip_broken);
// Once the target is open: it must store bitmaps (qcow2 v3).
bool check_bitmap_target(Image& target);
// After the copy: each bitmap added to the target (same name, granularity, enabled or not)
// and its bits merged in; an in-use one is skipped with a warning when skip_broken.
bool copy_bitmaps(Image& source, Image& target, bool skip_broken);

}  // namespace keel::cli
