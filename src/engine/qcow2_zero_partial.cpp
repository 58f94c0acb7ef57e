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
#include <algorithm>
#include <vector>

#include "engine/qcow2_image.h"

namespace keel {

using namespace format;

Status Qcow2Image::zero_partial_cluster(uint64_t offset, uint64_t length, bool may_unmap) {
  const Status unsupported(Code::kUnsupported, "partial", ENOTSUP);
  if (has_external_data()) return unsupported;  // an external data file keeps its bytes
  if (ext_l2_) return zero_partial_subclusters(offset, length);
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

// Extended L2, as QEMU 7.2: its block layer cuts a write-zeroes at the subcluster size (qcow2's
// pwrite_zeroes_alignment) into an unaligned head, an aligned middle and an unaligned tail.
// The middle's subclusters become zero subclusters (zero bit set, allocation bit cleared; the
// host cluster stays), except in a compressed cluster; a head or tail zeroes its whole
// subcluster when the rest of that subcluster reads as zeros and it is not allocated
// (qcow2_co_pwrite_zeroes); anything else is written as zeros. Safety as above: a bitmap
// change is an ordinary L2 change of the write-back path, and zeroing a subcluster whose rest
// reads as zeros reads the same as writing the zeros.
Status Qcow2Image::zero_partial_subclusters(uint64_t offset, uint64_t length) {
  const uint64_t gc = offset >> cbits_, start = gc * cs_, end = offset + length;
  const uint64_t up = (offset + sc_size_ - 1) / sc_size_ * sc_size_;
  const uint64_t down = end == size_ ? end : end / sc_size_ * sc_size_;  // QEMU: no tail at the disk's end
  const uint64_t head_end = offset % sc_size_ ? std::min(end, up) : offset;
  const uint64_t mid_end = std::max(head_end, down);
  auto write_zeros = [&](uint64_t from, uint64_t to) {
    std::vector<uint8_t> zeros(to - from, 0);
    return write_chunk(from, zeros);
  };
  auto unaligned = [&](uint64_t from, uint64_t to) -> Status {
    const uint64_t sc0 = from / sc_size_ * sc_size_;
    KEEL_ASSIGN(bool before, reads_as_zeros(sc0, from - sc0));
    KEEL_ASSIGN(bool after, reads_as_zeros(to, sc0 + sc_size_ - to));
    Status st = before && after ? zero_subcluster_bits(gc, (sc0 - start) / sc_size_, 1, true)
                                : Status(Code::kUnsupported, "partial", ENOTSUP);
    return st.code() == Code::kUnsupported ? write_zeros(from, to) : st;
  };
  if (head_end > offset) KEEL_TRY(unaligned(offset, head_end));
  if (mid_end > head_end) {
    const uint64_t first = (head_end - start) / sc_size_;
    const uint64_t count = (mid_end - head_end + sc_size_ - 1) / sc_size_;
    Status st = zero_subcluster_bits(gc, first, count, false);
    KEEL_TRY(st.code() == Code::kUnsupported ? write_zeros(head_end, mid_end) : st);
  }
  if (end > mid_end) KEEL_TRY(unaligned(mid_end, end));
  return Status::ok();
}

Result<bool> Qcow2Image::reads_as_zeros(uint64_t offset, uint64_t length) {
  const uint64_t to = std::min(offset + length, size_);
  for (uint64_t pos = offset; pos < to;) {
    KEEL_ASSIGN(Extent e, block_status(pos, to - pos));
    if (!e.zero || e.length == 0) return false;
    pos += e.length;
  }
  return true;
}

Status Qcow2Image::zero_subcluster_bits(uint64_t gc, uint64_t first, uint64_t count, bool unless_allocated) {
  MutexLock lk(mu_);
  if (latched_) return latched_error();
  KEEL_TRY(prefetch_l2(gc));
  // No allocating write of this cluster may be under way: it sets the entry's bitmap from the
  // mapping it started with, and would undo these bits. From here mu_ is held to set_l2.
  inflight_cv_.wait(mu_, [&] {
    mu_.assert_held();
    return !inflight_.count(gc);
  });
  KEEL_ASSIGN(Mapping m, lookup(gc));
  if (m.type == ClusterType::kCompressed) return Status(Code::kUnsupported, "compressed", ENOTSUP);
  const uint64_t bits = (count >= 32 ? kAllAllocated : ((1ull << count) - 1)) << first;
  if (unless_allocated && (m.bitmap & bits)) return Status(Code::kUnsupported, "allocated", ENOTSUP);
  const uint64_t bitmap = (m.bitmap | (bits << 32)) & ~bits;
  if (bitmap == m.bitmap) return Status::ok();
  KEEL_ASSIGN(L2Ref t, writable_l2(gc));
  set_l2(t.get(), gc, m.entry, bitmap);
  return Status::ok();
}

}  // namespace keel
