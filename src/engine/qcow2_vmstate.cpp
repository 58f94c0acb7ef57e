// The VM state area of a qcow2 image (QEMU's savevm data; qemu-io's read/write -b).
//
// Layout, as QEMU's qcow2_vm_state_offset: the area starts at the first guest offset the
// virtual disk's L1 entries do not cover, l1_entries_for(size) << (cluster_bits + l2_bits), and
// its clusters are mapped through the same L1 and L2 tables as guest clusters. A write there may
// need a larger L1 table: it grows as QEMU's qcow2_grow_l1_table(exact_size=false) does (by
// half, rounded up, until it covers the write; never past 32 MiB: EFBIG).
//
// Ordering. Nothing here is new on disk: the data goes through write_chunk (the allocating-write
// path of guest writes, its links written by the ordinary flush), and the L1 growth is
// write_new_l1, the resize path's (the new table in fresh clusters, synced, then one 12-byte
// header switch, synced). Before that switch every dirty link is flushed (flush_metadata under
// the exclusive gates), so the grown table copies only links already durable. Dirty bitmaps do
// not track the area (QEMU writes it below the block layer's tracking).
#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <climits>

#include "engine/alloc_gate.h"
#include "engine/qcow2_image.h"
#include "keel/limits.h"

namespace keel {

namespace {
// QEMU's bound on a request offset (BDRV_MAX_LENGTH is INT64_MAX aligned down): beyond it the
// block layer returns EIO.
constexpr uint64_t kMaxVmstateEnd = static_cast<uint64_t>(INT64_MAX);
}  // namespace

uint64_t Qcow2Image::vmstate_offset() const {
  // QEMU counts the disk in 512-byte sectors (bs->total_sectors).
  const uint64_t sectors_bytes = (size_ + 511) / 512 * 512;
  const uint64_t per_l1 = cs_ * l2_entries_;  // guest bytes one L1 entry maps
  return (sectors_bytes + per_l1 - 1) / per_l1 * per_l1;
}

Result<uint64_t> Qcow2Image::vmstate_range(uint64_t pos, uint64_t length) const {
  const uint64_t base = vmstate_offset();
  if (pos > kMaxVmstateEnd || length > kMaxVmstateEnd - pos || base > kMaxVmstateEnd - pos - length)
    return error(Status(Code::kInvalidArgument, fmt::format("VM state range [{}, +{}) is past the largest offset", pos, length), EIO));
  return base + pos;
}

Status Qcow2Image::grow_l1_for(uint64_t end) {
  const uint64_t per_l1 = cs_ * l2_entries_;
  const uint64_t need = end / per_l1 + (end % per_l1 != 0);
  {
    MutexLock lk(mu_);
    if (need <= l1_.size()) return Status::ok();
  }
  // QEMU: min_size beyond INT_MAX / 8 entries, or a grown table beyond 32 MiB, is EFBIG.
  const uint64_t max_entries = limits::kMaxL1Bytes / 8;
  if (need > static_cast<uint64_t>(INT_MAX) / 8)
    return Status(Code::kInvalidArgument, "L1 table would exceed 32 MiB", EFBIG);
  std::lock_guard<std::mutex> fl(flush_mu_);
  ExclusiveGate g(gate_);
  ExclusiveGate dg(data_gate_);
  MutexLock lk(mu_);
  if (need <= l1_.size()) return Status::ok();
  uint64_t n = std::max<uint64_t>(l1_.size(), 1);
  while (n < need) n = (n * 3 + 1) / 2;
  if (n > max_entries) return Status(Code::kInvalidArgument, "L1 table would exceed 32 MiB", EFBIG);
  // Every link in memory becomes durable first: the grown table is a copy of l1_, and a link
  // whose table or data the last sync did not cover must not reach the file through it.
  KEEL_TRY(flush_metadata());
  std::vector<uint64_t> l1 = l1_;
  l1.resize(n, 0);
  return write_new_l1(l1);
}

Status Qcow2Image::read_vmstate(uint64_t pos, std::span<uint8_t> buf) {
  KEEL_ASSIGN(uint64_t offset, vmstate_range(pos, buf.size()));
  for (uint64_t done = 0; done < buf.size();) {
    const uint64_t off = offset + done, gc = off >> cbits_, in = off & (cs_ - 1);
    const uint64_t n = std::min<uint64_t>(buf.size() - done, cs_ - in);
    Mapping m;
    {
      MutexLock lk(mu_);
      KEEL_TRY(prefetch_l2(gc));
      KEEL_ASSIGN(m, lookup(gc));
    }
    KEEL_TRY(read_mapped(m, gc, in, buf.subspan(done, n)));
    done += n;
  }
  return Status::ok();
}

Status Qcow2Image::write_vmstate(uint64_t pos, std::span<const uint8_t> buf) {
  if (read_only_) return Status(Code::kReadOnly, "image is opened read-only", EPERM);
  KEEL_ASSIGN(uint64_t offset, vmstate_range(pos, buf.size()));
  if (buf.empty()) return Status::ok();
  if (encrypted() && (offset | buf.size()) % 512)
    return invalid(fmt::format("VM state write [{}, +{}) of an encrypted image is not sector-aligned", pos, buf.size()));
  KEEL_TRY(before_write());
  KEEL_TRY(grow_l1_for(offset + buf.size()));
  {
    SharedGate g(gate_);
    for (uint64_t done = 0; done < buf.size();) {
      const uint64_t off = offset + done;
      const uint64_t n = std::min<uint64_t>(buf.size() - done, cs_ - (off & (cs_ - 1)));
      KEEL_TRY(write_chunk(off, buf.subspan(done, n)));
      done += n;
    }
  }
  return writethrough_ ? flush() : Status::ok();
}

}  // namespace keel
