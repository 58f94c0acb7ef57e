// Resize (grow, shrink) and make_empty of a qcow2 image: the operations that change which guest
// clusters exist.
//
// Ordering. Growing writes a larger L1 table into fresh clusters and switches {l1_size,
// l1_table_offset} in one 12-byte header write (write_new_l1, synced before and after), then
// the size field. Shrinking and emptying unmap guest clusters through the ordinary write-back
// path (flush_metadata): L2 and L1 entries are set to 0 in memory, written in phase 2 and
// synced; the clusters they referenced lose those references in phase 3. Then a sync makes the
// decrements durable, and only then is the free tail of the file cut off, so the truncate
// removes nothing a durable refcount still counts.
#include <fmt/format.h>

#include <algorithm>

#include "engine/qcow2_image.h"
#include "format/endian.h"
#include "keel/limits.h"

namespace keel {

using namespace format;

namespace {
// True if the mapping holds a reference on a host cluster of the qcow2 file.
bool references_host(const Mapping& m, bool external_data) {
  if (m.type == ClusterType::kCompressed) return true;
  return (m.type == ClusterType::kNormal || m.type == ClusterType::kZeroAlloc) && m.host() != 0 && !external_data;
}
}  // namespace

Status Qcow2Image::unmap_from(uint64_t first_gc) {
  // The L2 table holding first_gc, when first_gc is not its first entry: entry by entry (the
  // table is copied first if a snapshot shares it).
  const uint64_t partial_l1 = first_gc / l2_entries_;
  if (first_gc % l2_entries_ != 0 && partial_l1 < l1_.size() && (l1_[partial_l1] & kOffsetMask)) {
    for (uint64_t gc = first_gc; gc < (partial_l1 + 1) * l2_entries_; ++gc) {
      KEEL_ASSIGN(Mapping m, lookup(gc));
      if (m.entry == 0 && m.bitmap == 0) continue;
      KEEL_ASSIGN(L2Ref t, writable_l2(gc));
      set_l2(t.get(), gc, 0, 0);
      if (references_host(m, has_external_data())) defer_free(m.entry);
    }
  }
  // Whole tables: the L1 entry goes, and with it this tree's reference on the table and on
  // every cluster the table references (whether or not a snapshot shares the table).
  for (uint64_t i = (first_gc + l2_entries_ - 1) / l2_entries_; i < l1_.size(); ++i) {
    const uint64_t off = l1_[i] & kOffsetMask;
    if (!off) continue;
    for (uint64_t gc = i * l2_entries_; gc < (i + 1) * l2_entries_; ++gc) {
      KEEL_ASSIGN(Mapping m, lookup(gc));  // validates the entry before its cluster is freed
      if (references_host(m, has_external_data())) defer_free(m.entry);
    }
    l1_[i] = 0;
    l1_dirty_.insert(i);
    meta_map_.remove(MetaKind::kActiveL2, off, cs_);
    defer_free(off);
  }
  return Status::ok();
}

Status Qcow2Image::trim_file_tail() {
  KEEL_ASSIGN(uint64_t file_size, file_->size());
  uint64_t used_end = 0;  // one past the last cluster with a nonzero refcount
  for (uint64_t rt = 0; rt < reftable_.size(); ++rt) {
    if ((reftable_[rt] & ~kReftableReserved) == 0) continue;
    KEEL_ASSIGN(RefBlockRef b, load_refblock(rt, false));
    for (uint64_t i = rb_entries_; i-- > 0;) {
      if (format::get_refcount(b->bytes, i, rc_bits_) != 0) {
        used_end = std::max(used_end, rt * rb_entries_ + i + 1);
        break;
      }
    }
  }
  const uint64_t keep = used_end * cs_;
  if (keep == 0 || keep >= file_size) return Status::ok();
  return latch(file_->truncate(keep));
}

Status Qcow2Image::make_empty() {
  if (read_only_) return Status(Code::kReadOnly, "image is opened read-only", EPERM);
  KEEL_TRY(before_write());
  KEEL_TRY(flush());
  std::lock_guard<std::mutex> fl(flush_mu_);
  ExclusiveGate g(gate_);
  ExclusiveGate dg(data_gate_);
  MutexLock lk(mu_);
  KEEL_TRY(unmap_from(0));
  KEEL_TRY(flush_metadata());
  KEEL_TRY(latch(file_->sync()));
  freed_unsynced_ = false;
  return trim_file_tail();
}

Status Qcow2Image::resize(uint64_t new_size, bool shrink) {
  if (read_only_) return Status(Code::kReadOnly, "image is opened read-only", EPERM);
  if (new_size > limits::kMaxVirtualSize) return invalid(fmt::format("size {} is too large", new_size));
  if (new_size < size_ && !shrink) return invalid("Use the --shrink option to perform a shrink operation.");
  {
    MutexLock lk(mu_);
    if (header_.version < 3 && !snapshots_.empty()) return unsupported("Can't resize a v2 image which has snapshots");
  }
  const uint64_t old_size = size_;
  const bool shrinking = new_size < old_size;
  // Like QEMU (bdrv_co_truncate): growing over a backing file longer than the old size must
  // not make the backing file's data visible, so the new area is zeroed. v2 has no zero
  // clusters, and QEMU refuses.
  const bool zero_new = new_size > old_size && backing_ && backing_->size() > old_size;
  if (zero_new && version() < 3)
    return Status(Code::kUnsupported, "Failed to zero out new clusters: Operation not supported", ENOTSUP);
  KEEL_TRY(before_write());
  if (shrinking) {
    // The partial last cluster keeps its head; its tail is zeroed (qemu-img leaves it).
    uint64_t tail = new_size % cs_ ? std::min<uint64_t>(cs_ - new_size % cs_, old_size - new_size) : 0;
    if (tail) KEEL_TRY(write_zeroes(new_size, tail, ZeroFlags{}));
  }
  {
    std::lock_guard<std::mutex> fl(flush_mu_);
    ExclusiveGate g(gate_);
    ExclusiveGate dg(data_gate_);
    MutexLock lk(mu_);
    // Everything written before the resize made durable with the gates held: write_new_l1 below
    // writes the L1 table in memory whole, so no writer may link a table the file lacks between
    // this flush and it (a flush() before taking the gates let one in).
    KEEL_TRY(flush_metadata());
    KEEL_TRY(bitmaps_before_resize());  // persistent bitmaps in use until stored at the new size
    if (shrinking) {
      // Like QEMU: the clusters past the end are deallocated (not zeroed) and the L2 tables
      // past it dropped, so a later grow shows unallocated clusters. Snapshots keep their data.
      KEEL_TRY(unmap_from((new_size + cs_ - 1) / cs_));
      KEEL_TRY(flush_metadata());
    }
    uint64_t need = header_.l1_entries_for(new_size);
    if (need > l1_.size()) {
      std::vector<uint64_t> l1 = l1_;
      l1.resize(need, 0);
      KEEL_TRY(write_new_l1(l1));
    }
  }
  if (zero_new) {
    // Zero clusters past the old end, explicit zeros in the old last cluster's tail; made
    // durable before the size switch exposes them.
    SharedGate g(gate_);
    const uint64_t zero_start = (old_size + cs_ - 1) / cs_ * cs_;
    if (zero_start > old_size) {
      std::vector<uint8_t> zeros(std::min(zero_start, new_size) - old_size, 0);
      KEEL_TRY(write_chunk(old_size, zeros));
    }
    for (uint64_t gc = zero_start / cs_; gc < (new_size + cs_ - 1) / cs_; ++gc) {
      Status st = zero_or_discard_cluster(gc, false, false);
      if (st.code() == Code::kUnsupported) {  // an external data file: explicit zeros
        std::vector<uint8_t> zeros(std::min<uint64_t>(cs_, new_size - gc * cs_), 0);
        st = write_chunk(gc * cs_, zeros);
      }
      KEEL_TRY(st);
    }
  }
  if (zero_new) KEEL_TRY(flush());
  std::lock_guard<std::mutex> fl(flush_mu_);
  ExclusiveGate g(gate_);
  ExclusiveGate dg(data_gate_);
  MutexLock lk(mu_);
  if (header_.data_file_raw()) KEEL_TRY(data_->truncate(new_size));
  uint8_t b[8];
  put_be64(b, new_size);
  KEEL_TRY(write_header_field(24, b));
  KEEL_TRY(latch(file_->sync()));
  size_ = new_size;
  header_.size = new_size;
  KEEL_TRY(bitmaps_after_resize(new_size));
  KEEL_TRY(flush_metadata());
  if (!shrinking) return Status::ok();
  KEEL_TRY(latch(file_->sync()));
  freed_unsynced_ = false;
  return trim_file_tail();
}

}  // namespace keel
