// Overlap protection of a qcow2 image: the metadata map is built at open and kept current as
// metadata moves; every cluster allocation and every write (guest data or metadata) is checked
// against it first. A hit means the image was already damaged (a refcount says a metadata
// cluster is free, an L2 entry points into metadata): the image is marked corrupt with QEMU's
// message, the request fails with EIO, and no metadata byte changes.
#include <fmt/format.h>

#include "engine/qcow2_image.h"
#include "format/endian.h"

namespace keel {

using namespace format;

Status Qcow2Image::rebuild_metadata_map() {
  meta_map_.reset(cbits_);
  meta_map_.add(MetaKind::kMainHeader, 0, cs_);
  // The LUKS region (header, key material) is protected like the header.
  if (header_.crypto_length) meta_map_.add(MetaKind::kMainHeader, header_.crypto_offset, header_.crypto_length);
  if (snapshot_name_.empty()) meta_map_.add(MetaKind::kActiveL1, l1_offset_, l1_.size() * 8);
  meta_map_.add(MetaKind::kRefcountTable, header_.refcount_table_offset, reftable_.size() * 8);
  for (uint64_t e : reftable_)
    if (e & ~kReftableReserved) meta_map_.add(MetaKind::kRefcountBlock, e & ~kReftableReserved, cs_);
  for (uint64_t e : l1_)
    if (e & kOffsetMask) meta_map_.add(MetaKind::kActiveL2, e & kOffsetMask, cs_);
  if (!snapshots_.empty()) meta_map_.add(MetaKind::kSnapshotTable, header_.snapshots_offset, snapshot_table_bytes_);
  for (const auto& s : snapshots_) {
    meta_map_.add(MetaKind::kInactiveL1, s.l1_table_offset, uint64_t(s.l1_size) * 8);
    if (!(overlap_mask_ & kind_bit(MetaKind::kInactiveL2)) || s.l1_size == 0) continue;
    auto l1 = read_l1_table(*file_, s.l1_table_offset, s.l1_size);
    // Without it the map would miss the snapshot's L2 tables: no more writes (the operation
    // that moved the metadata reports the error, as G6 wants).
    if (!l1) return latch(l1.error());
    for (uint64_t e : *l1)
      if (e & kOffsetMask) meta_map_.add(MetaKind::kInactiveL2, e & kOffsetMask, cs_);
  }
  if (header_.bitmaps && !bitmap_dir_.empty())
    meta_map_.add(MetaKind::kBitmapDirectory, header_.bitmaps->directory_offset, header_.bitmaps->directory_size);
  for (const auto& b : bitmap_dir_) meta_map_.add(MetaKind::kBitmapTable, b.table_offset, uint64_t(b.table_size) * 8);
  return Status::ok();
}

Status Qcow2Image::overlap_guard(uint64_t offset, uint64_t length, uint32_t ignore) {
  std::optional<MetaKind> hit = meta_map_.overlap(offset, length, overlap_mask_ & ~ignore);
  if (!hit) return Status::ok();
  return mark_corrupt(fmt::format("Preventing invalid write on metadata (overlaps with {})", meta_kind_message(*hit)));
}

Status Qcow2Image::alloc_guard(uint64_t first, uint64_t count, const char* what) {
  // QEMU refuses an L2 table or refcount block at offset 0 by name; any other metadata cluster
  // is caught when the new structure or the guest data would be written over it.
  if (first == 0 && what && overlap_mask_ != 0)
    return mark_corrupt(fmt::format("Preventing invalid allocation of {} at offset 0", what));
  return overlap_guard(first * cs_, count * cs_, 0);
}

}  // namespace keel
