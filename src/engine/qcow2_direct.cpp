// Qcow2Image::map_direct: resolves a guest request to host ranges for an event loop's own I/O,
// using only what is already in memory (see Image::map_direct in include/keel/image.h).
//
// Safety argument. A range is handed out only if the engine itself would read it from, or write
// it to, the same host bytes without touching metadata: a normal cluster (every touched
// subcluster allocated with extended L2), and for writes one with the COPIED flag (refcount 1),
// not under an allocating write (inflight_). The ticket holds data_gate_ shared, as the engine's
// own in-place overwrites do, and every operation that frees a cluster or changes who owns it
// takes data_gate_ exclusive (flush phase 3, the only place freed clusters become reusable;
// snapshots; resize; amend; bitmaps); other writers' frees are deferred to that phase. So the
// mapping stays valid until the ticket is released, and direct I/O goes on while a flush syncs.
// A write is checked against the metadata map like any guest write (a hit marks the image
// corrupt; the engine path then reports it).
// Non-blocking: mu_ and data_gate_ are only tried; an L2 table not in the cache is a miss.
// Reads of zero clusters, and of unallocated ones without a backing file, map to zero ranges:
// no I/O at all, so a sparse image's holes never take a thread hop.
#include "engine/qcow2_image.h"

namespace keel {

using namespace format;

std::optional<DirectIo> Qcow2Image::map_direct(uint64_t offset, uint64_t length, bool write) {
  if (length == 0 || offset > size_ || length > size_ - offset) return std::nullopt;
  if (observer_) return std::nullopt;  // tests observe every data event via the engine path
  if (encrypted()) return std::nullopt;  // data must pass through the cipher (qcow2_crypt.cpp)
  const int fd = data_->native_fd();
  if (fd < 0) return std::nullopt;
  const uint32_t align = data_->alignment();
  if (offset % align != 0 || length % align != 0) return std::nullopt;
  if (write && (read_only_ || writethrough_ || track_writes_.load())) return std::nullopt;

  DirectIo io;
  io.set_alignment(align);
  if (!data_gate_.try_enter_shared()) return std::nullopt;
  io.hold(&data_gate_);  // from here on, io's destructor leaves the gate on every return

  if (!mu_.try_lock()) return std::nullopt;
  MutexLock lk(mu_, std::adopt_lock);
  if (closed_) return std::nullopt;
  if (write && (latched_ || autoclear_pending_)) return std::nullopt;
  for (uint64_t pos = 0; pos < length;) {
    const uint64_t off = offset + pos;
    const uint64_t gc = off >> cbits_, in = off & (cs_ - 1);
    const uint64_t n = std::min<uint64_t>(length - pos, cs_ - in);
    const uint64_t l1i = gc / l2_entries_, l2i = gc % l2_entries_;
    if (l1i >= l1_.size()) return std::nullopt;
    const uint64_t l2off = l1_[l1i] & kOffsetMask;
    if (l2off == 0 && zero_read_ok(write, ClusterType::kUnallocated)) {
      if (!io.add_zeros(n)) return std::nullopt;
      pos += n;
      continue;
    }
    if (l2off == 0 || l2off % cs_ != 0) return std::nullopt;
    L2Ref t = l2_cache_.find(l2off);
    if (!t) return std::nullopt;  // a miss: loading it would block
    Mapping m;
    m.entry = t->words[l2i * l2_words_];
    if (ext_l2_) m.bitmap = t->words[l2i * 2 + 1];
    m.type = classify_l2(m.entry, ext_l2_);
    if (zero_read_ok(write, m.type)) {
      if (!io.add_zeros(n)) return std::nullopt;
      pos += n;
      continue;
    }
    // The engine's own checks (lookup) reject odd entries; leave those to it.
    if (m.type != ClusterType::kNormal || m.host() % cs_ != 0) return std::nullopt;
    if (has_external_data() ? (header_.data_file_raw() && m.host() != gc * cs_) : m.host() == 0)
      return std::nullopt;
    if (write) {
      if (inflight_.count(gc) || !in_place_ok(m, in, n)) return std::nullopt;
      if (!data_guard(m.host() + in, n).is_ok()) return std::nullopt;
    } else if (ext_l2_) {
      const uint64_t first = in / sc_size_, last = (in + n - 1) / sc_size_;
      const uint64_t need = (last - first + 1 >= 64 ? ~0ull : ((1ull << (last - first + 1)) - 1)) << first;
      if ((m.bitmap & need) != need) return std::nullopt;
    }
    if (!io.add(fd, m.host() + in, n)) return std::nullopt;
    pos += n;
  }
  return io;
}

// A read of a cluster of this type returns zeros without I/O, exactly as the engine's read does:
// zero clusters always; unallocated ones when there is no backing file to read through. Extended
// L2 (per-subcluster states) and external data files are left to the engine.
bool Qcow2Image::zero_read_ok(bool write, ClusterType type) const {
  if (write || ext_l2_ || has_external_data()) return false;
  if (type == ClusterType::kZeroPlain || type == ClusterType::kZeroAlloc) return true;
  return type == ClusterType::kUnallocated && !backing_;
}

}  // namespace keel
