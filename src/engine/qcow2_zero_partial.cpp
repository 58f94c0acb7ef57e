// Write-zeroes of part of a cluster, as QEMU's qcow2_co_pwrite_zeroes does it: when the rest
// of the cluster reads as zeros as well (a zero cluster, or unallocated here over zeros or
// nothing in the backing chain), the whole cluster is zeroed by its L2 entry (v3: the zero
// flag; v2 without a backing file: left unallocated) instead of allocating a data cluster that
// holds zeros. Scripts compare `qemu-img map` after `qemu-io -c 'write -z'`; both tools now
// leave the same map.
//
// Safety: the backing chain is read-only while this image is open, so what it showed for the
// rest of the cluster still holds when the L2 entry changes; the entry changes only if the
// cluster is still of the kind checked here (zero_or_discard_cluster's `only_if`, under mu_),
// so a write that allocated it meanwhile is never zeroed. The content every sector reads is
// zeros before and after for the rest, and zeros for the request: the same as writing zeros.
#include "engine/qcow2_image.h"

namespace keel {

Status Qcow2Image::zero_partial_cluster(uint64_t offset, uint64_t length, bool may_unmap) {
  const Status unsupported(Code::kUnsupported, "partial", ENOTSUP);
  // Extended L2 zeroes subclusters (not done here); an external data file keeps its bytes.
  if (ext_l2_ || has_external_data()) return unsupported;
  if (version() < 3 && backing_) return unsupported;  // no zero flag: the backing would show
  const uint64_t gc = offset >> cbits_;
  const uint64_t start = gc * cs_;
  const uint64_t end = std::min<uint64_t>(start + cs_, size_);
  // Does the rest of the cluster read as zeros where this image allocates nothing?
  bool below_zero = true;
  const uint64_t bsize = backing_ ? backing_->size() : 0;
  const uint64_t ranges[2][2] = {{start, offset}, {offset + length, end}};
  for (const auto& r : ranges) {
    for (uint64_t pos = r[0]; below_zero && pos < std::min(r[1], bsize);) {
      KEEL_ASSIGN(Extent e, backing_->block_status(pos, std::min(r[1], bsize) - pos));
      if (e.data || !e.zero) below_zero = false;
      pos += std::max<uint64_t>(e.length, 1);
    }
  }
  return zero_or_discard_cluster(gc, false, may_unmap, below_zero ? ZeroIf::kZeroOrUnallocated : ZeroIf::kZero);
}

}  // namespace keel
