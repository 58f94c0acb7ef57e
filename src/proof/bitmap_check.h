// The checker's bitmap oracle (part of G5: "bitmaps read as before the crash"): the persistent
// dirty bitmaps an image lists after a crash against the BitmapModel (proof/bitmap_model.h).
#pragma once

#include <cstdint>
#include <vector>

#include "keel/image.h"
#include "proof/checker.h"
#include "proof/guest_model.h"

namespace keel::proof {

// Checks the bitmaps of `img` (opened after the crash, before any write to it): every listed name
// is one the operations allow and every bitmap that must exist is listed, with its granularity
// and (once settled) its enabled flag; every consistent one (not in-use) has a bit set for every
// granule of every write it must have seen, and for every sector `observed` (per sector, the
// version read back; kUnknownVersion where unknown) shows as the data of a write it tracked.
void check_bitmaps(Image& img, const GuestModel& model, const std::vector<uint32_t>& observed, StateVerdict& v,
                   uint32_t max_details);

}  // namespace keel::proof
