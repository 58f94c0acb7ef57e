// Guest I/O on a qcow2 image: read, write (in place or allocating, with copy-on-write),
// write-zeroes, discard, compressed writes, block status and flush.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "engine/compress.h"
#include "engine/qcow2_image.h"
#include "format/endian.h"
#include "keel/limits.h"

namespace keel {

using namespace format;

namespace {

// Erases a guest cluster from the in-flight set when an allocating operation ends.
struct InflightGuard {
  std::unordered_set<uint64_t>& set;
  std::condition_variable_any& cv;
  uint64_t gc;
  ~InflightGuard() {
    set.erase(gc);
    cv.notify_all();
  }
};

uint64_t sc_bits(uint64_t first, uint64_t last) {  // bits first..last inclusive
  uint64_t n = last - first + 1;
  return (n >= 64 ? ~0ull : ((1ull << n) - 1)) << first;
}

}  // namespace

Status Qcow2Image::check_request(uint64_t offset, uint64_t length, bool write) const {
  if (write && read_only_) return Status(Code::kReadOnly, "image is opened read-only", EPERM);
  if (offset > size_ || length > size_ - offset)
    return invalid(fmt::format("request [{}, +{}) is past the end of the image ({} bytes)", offset, length, size_));
  return Status::ok();
}

Status Qcow2Image::before_write() {
  // The common case takes no lock: no latch, no header work pending, the dirty metadata within
  // its bound (running counters).
  if (!latched_ && !autoclear_pending_ && dirty_bytes() <= limits::kMaxDirtyMetadataBytes) return Status::ok();
  MutexLock lk(mu_);
  if (latched_) return latched_error();
  if (autoclear_pending_) {
    // The spec: unknown autoclear bits must be cleared before the first write; a bitmaps
    // extension left stale by a program without bitmap support is dropped, as QEMU does.
    if (stale_bitmaps_ext_) KEEL_TRY(drop_stale_bitmaps_extension());
    if (header_.version >= 3 && (header_.autoclear & ~kAutoclearKnown)) {
      header_.autoclear &= kAutoclearKnown;
      uint8_t b[8];
      put_be64(b, header_.autoclear);
      KEEL_TRY(write_header_field(kOffsetAutoclear, b));
      KEEL_TRY(latch(file_->sync()));
    }
    autoclear_pending_ = false;
  }
  bool too_dirty = dirty_bytes() > limits::kMaxDirtyMetadataBytes;
  lk.unlock();
  return too_dirty ? flush() : Status::ok();
}

Status Qcow2Image::grow_ahead(uint64_t end) {
  // Steps of 1/8 of the file, between 1 MiB and 64 MiB, in whole MiB.
  constexpr uint64_t kMiB = 1ull << 20;
  MutexLock g(grow_mu_);
  if (end <= grown_to_) return Status::ok();
  const uint64_t step = std::clamp<uint64_t>(grown_to_ / 8, kMiB, 64 * kMiB);
  const uint64_t target = (end + step + kMiB - 1) / kMiB * kMiB;
  // A failure fails the write that needed the room (G6: an I/O error is never retried as if it
  // had worked); near a full disk the step can fail where one cluster would still fit.
  KEEL_TRY(data_->allocate(grown_to_, target - grown_to_));
  grown_to_ = target;
  return Status::ok();
}

bool Qcow2Image::in_place_ok(const Mapping& m, uint64_t in, uint64_t len) const {
  if (m.type != ClusterType::kNormal || !m.copied()) return false;
  if (!ext_l2_) return true;
  uint64_t need = sc_bits(in / sc_size_, (in + len - 1) / sc_size_);
  return (m.bitmap & need) == need;
}

Status Qcow2Image::read_unallocated(uint64_t guest, std::span<uint8_t> buf) {
  uint64_t bsize = backing_ ? backing_->size() : 0;
  uint64_t from_backing = guest < bsize ? std::min<uint64_t>(buf.size(), bsize - guest) : 0;
  if (from_backing) KEEL_TRY(backing_->read(guest, buf.first(from_backing)));
  std::memset(buf.data() + from_backing, 0, buf.size() - from_backing);
  return Status::ok();
}

Status Qcow2Image::read_compressed(uint64_t entry, uint64_t in, std::span<uint8_t> buf) {
  CompressedDescriptor d = decode_compressed(entry, cbits_);
  if (d.size > 2 * cs_ + 512) return corrupt(fmt::format("compressed cluster descriptor {:#x} is too large", entry));
  std::vector<uint8_t> raw(d.size), out(cs_);
  KEEL_TRY(file_->read_at(d.host_offset, raw));
  KEEL_TRY(decompress_cluster(compression_, raw, out).with_context(
      fmt::format("compressed cluster at host offset {:#x}", d.host_offset)));
  std::memcpy(buf.data(), out.data() + in, buf.size());
  return Status::ok();
}

Status Qcow2Image::read_mapped(const Mapping& m, uint64_t gc, uint64_t in, std::span<uint8_t> buf) {
  const uint64_t guest = gc * cs_ + in;
  if (m.type == ClusterType::kCompressed) return read_compressed(m.entry, in, buf);
  if (ext_l2_) {
    for (uint64_t pos = 0; pos < buf.size();) {
      uint64_t sc = (in + pos) / sc_size_;
      uint64_t n = std::min<uint64_t>(buf.size() - pos, (sc + 1) * sc_size_ - (in + pos));
      auto part = buf.subspan(pos, n);
      if (m.bitmap & (1ull << sc)) {
        notify(Event::kDataRead);
        KEEL_TRY(read_data(m.host() + in + pos, guest + pos, part));
      } else if (m.bitmap & (1ull << (32 + sc))) {
        std::memset(part.data(), 0, n);
      } else {
        KEEL_TRY(read_unallocated(guest + pos, part));
      }
      pos += n;
    }
    return Status::ok();
  }
  switch (m.type) {
    case ClusterType::kUnallocated:
      return read_unallocated(guest, buf);
    case ClusterType::kZeroPlain:
    case ClusterType::kZeroAlloc:
      std::memset(buf.data(), 0, buf.size());
      return Status::ok();
    default:
      notify(Event::kDataRead);
      return read_data(m.host() + in, guest, buf);
  }
}

Status Qcow2Image::read(uint64_t offset, std::span<uint8_t> buf) {
  KEEL_TRY(check_request(offset, buf.size(), false));
  if (buf.empty()) return Status::ok();
  // Every cluster's mapping under one hold of the lock, then the data without it: clusters
  // whose data lies back to back in the file are read with one call, as QEMU does.
  const uint64_t first = offset >> cbits_, last = (offset + buf.size() - 1) >> cbits_;
  // Most reads touch one or two clusters: their mappings stay on the stack (no allocation per
  // request on the read path).
  Mapping inline_maps[4];
  std::vector<Mapping> heap_maps;
  if (last - first + 1 > std::size(inline_maps)) heap_maps.resize(last - first + 1);
  Mapping* maps = heap_maps.empty() ? inline_maps : heap_maps.data();
  {
    MutexLock lk(mu_);
    // prefetch_l2 may release the lock: every table first, then one pass that does not.
    for (uint64_t gc = first; gc <= last; gc += l2_entries_ - gc % l2_entries_) KEEL_TRY(prefetch_l2(gc));
    for (uint64_t gc = first; gc <= last; ++gc) {
      KEEL_ASSIGN(maps[gc - first], lookup(gc));
    }
  }
  uint64_t run_host = 0, run_pos = 0, run_len = 0;  // a pending run of plain data
  auto flush_run = [&]() -> Status {
    if (run_len == 0) return Status::ok();
    notify(Event::kDataRead);
    Status st = read_data(run_host, offset + run_pos, buf.subspan(run_pos, run_len));
    run_len = 0;
    return st;
  };
  for (uint64_t pos = 0; pos < buf.size();) {
    const uint64_t off = offset + pos, gc = off >> cbits_, in = off & (cs_ - 1);
    const uint64_t n = std::min<uint64_t>(buf.size() - pos, cs_ - in);
    const Mapping& m = maps[gc - first];
    if (m.type == ClusterType::kNormal && !ext_l2_) {
      if (run_len && run_host + run_len == m.host() + in) {
        run_len += n;
      } else {
        KEEL_TRY(flush_run());
        run_host = m.host() + in;
        run_pos = pos;
        run_len = n;
      }
    } else {
      KEEL_TRY(flush_run());
      KEEL_TRY(read_mapped(m, gc, in, buf.subspan(pos, n)));
    }
    pos += n;
  }
  return flush_run();
}

Result<bool> Qcow2Image::write_in_place(uint64_t offset, std::span<const uint8_t> buf) {
  struct Piece {
    uint64_t host, pos, len;
  };
  std::vector<Piece> pieces;
  {
    MutexLock lk(mu_);
    if (latched_) return false;  // the metadata path reports it
    const uint64_t first = offset >> cbits_, last = (offset + buf.size() - 1) >> cbits_;
    // prefetch_l2 may release the lock: every table first, then one pass that does not.
    for (uint64_t gc = first; gc <= last; gc += l2_entries_ - gc % l2_entries_) KEEL_TRY_R(prefetch_l2(gc));
    for (uint64_t pos = 0; pos < buf.size();) {
      const uint64_t off = offset + pos, gc = off >> cbits_, in = off & (cs_ - 1);
      const uint64_t n = std::min<uint64_t>(buf.size() - pos, cs_ - in);
      if (inflight_.count(gc)) return false;
      KEEL_ASSIGN(Mapping m, lookup(gc));
      if (!in_place_ok(m, in, n)) return false;
      KEEL_TRY_R(data_guard(m.host() + in, n));
      if (!pieces.empty() && pieces.back().host + pieces.back().len == m.host() + in)
        pieces.back().len += n;
      else
        pieces.push_back({m.host() + in, pos, n});
      pos += n;
    }
  }
  // data_gate_ keeps these clusters ours until the writes are done: nothing frees or shares
  // them meanwhile.
  for (const Piece& p : pieces) {
    notify(Event::kDataWrite);
    KEEL_TRY_R(write_data(p.host, offset + p.pos, buf.subspan(p.pos, p.len)));
  }
  return true;
}

Status Qcow2Image::write(uint64_t offset, std::span<const uint8_t> buf, bool fua) {
  KEEL_TRY(check_request(offset, buf.size(), true));
  if (encrypted() && (offset | buf.size()) % crypto::SectorCipher::kSectorSize)
    return write_unaligned_encrypted(offset, buf, fua);
  KEEL_TRY(before_write());
  bool done = buf.empty();
  if (!done && !track_writes_) {
    SharedGate dg(data_gate_);
    KEEL_ASSIGN(done, write_in_place(offset, buf));
  }
  if (!done) {
    SharedGate g(gate_);
    KEEL_TRY(note_guest_write(offset, buf.size()));
    for (uint64_t pos = 0; pos < buf.size();) {
      uint64_t off = offset + pos;
      if ((off & (cs_ - 1)) == 0 && buf.size() - pos >= 2 * cs_) {
        KEEL_ASSIGN(uint64_t ran, allocating_run(off >> cbits_, buf.subspan(pos, (buf.size() - pos) & ~(cs_ - 1))));
        if (ran) {
          pos += ran;
          continue;
        }
      }
      uint64_t n = std::min<uint64_t>(buf.size() - pos, cs_ - (off & (cs_ - 1)));
      KEEL_TRY(write_chunk(off, buf.subspan(pos, n)));
      pos += n;
    }
  }
  return (fua || writethrough_) ? flush() : Status::ok();
}

Status Qcow2Image::write_chunk(uint64_t off, std::span<const uint8_t> d) {
  uint64_t gc = off >> cbits_, in = off & (cs_ - 1);
  MutexLock lk(mu_);
  if (latched_) return latched_error();
  KEEL_TRY(prefetch_l2(gc));
  if (!inflight_.count(gc)) {
    KEEL_ASSIGN(Mapping m, lookup(gc));
    if (in_place_ok(m, in, d.size())) {
      const uint64_t host = m.host();
      KEEL_TRY(data_guard(host + in, d.size()));
      lk.unlock();
      notify(Event::kDataWrite);
      return write_data(host + in, gc * cs_ + in, d);
    }
  }
  return allocating_write(gc, in, d);
}

Status Qcow2Image::allocating_write(uint64_t gc, uint64_t in, std::span<const uint8_t> d) {
  inflight_cv_.wait(mu_, [&] {
    mu_.assert_held();
    return !inflight_.count(gc);
  });
  if (latched_) return latched_error();
  KEEL_ASSIGN(Mapping m, lookup(gc));
  if (in_place_ok(m, in, d.size())) {  // another writer allocated it meanwhile
    uint64_t host = m.host();
    KEEL_TRY(data_guard(host + in, d.size()));
    mu_.unlock();
    notify(Event::kDataWrite);
    Status st = write_data(host + in, gc * cs_ + in, d);
    mu_.lock();
    return st;
  }
  inflight_.insert(gc);
  InflightGuard guard{inflight_, inflight_cv_, gc};
  const bool external = has_external_data();
  const bool reuse = external || ((m.type == ClusterType::kNormal || m.type == ClusterType::kZeroAlloc) && m.copied());
  uint64_t host = 0;
  // QEMU's order (and so its message when either lands on metadata): the L2 table first, then
  // the data cluster, checked against the metadata map before any byte is written.
  if (auto t = writable_l2(gc); !t) return t.error();
  // A new cluster that lies wholly past zero_from_ has never been written: what the guest does
  // not write of it reads as zeros without being written (a crash leaves a hole, zeros grown
  // ahead, or a shorter file there, and all read as zeros).
  bool fresh = false;
  if (external) {
    host = gc * cs_;
  } else if (reuse) {
    host = m.host();
    KEEL_TRY(data_guard(host, cs_));
  } else {
    KEEL_ASSIGN(host, alloc_clusters(1));
    fresh = last_alloc_fresh_;
  }
  const bool cow_is_zero = m.type == ClusterType::kZeroPlain ||
                           (m.type == ClusterType::kUnallocated && (!backing_ || backing_->size() <= gc * cs_));
  mu_.unlock();

  // Write the data with whatever copy-on-write it needs; the mapping is not changed yet.
  Status st;
  uint64_t bitmap = 0;
  bool full_cow = !ext_l2_ || m.type == ClusterType::kCompressed || (m.type == ClusterType::kNormal && !m.copied());
  if (ext_l2_ && reuse && !external) full_cow = false;
  if (full_cow) {
    // (Encrypted: zeros in the file are not zeros to the guest, so the whole cluster is written.)
    if ((in == 0 && d.size() == cs_) || (fresh && cow_is_zero && !encrypted())) {
      // Writes that extend the file cost the file system more (O_DIRECT ones are serialized,
      // buffered ones pay for delayed allocation page by page): make sure the file already
      // covers the cluster (grown ahead in steps), then write inside it.
      if (fresh) st = grow_ahead(host + cs_);
      notify(Event::kDataWrite);
      if (st.is_ok()) st = write_data(host + in, gc * cs_ + in, d);
    } else {
      std::vector<uint8_t> buf(cs_);
      notify(Event::kCowRead);
      if (in) st = read_mapped(m, gc, 0, std::span<uint8_t>(buf).first(in));
      uint64_t end = in + d.size();
      if (st.is_ok() && end < cs_) st = read_mapped(m, gc, end, std::span<uint8_t>(buf).subspan(end));
      std::memcpy(buf.data() + in, d.data(), d.size());
      if (st.is_ok()) {
        notify(Event::kCowWrite);
        st = write_data(host, gc * cs_, buf);
      }
    }
    bitmap = kAllAllocated;
  } else {
    // Extended L2 into an unallocated or own cluster: only the touched subclusters.
    uint64_t s0 = in / sc_size_, s1 = (in + d.size() - 1) / sc_size_;
    uint64_t start = s0 * sc_size_, end = (s1 + 1) * sc_size_;
    std::vector<uint8_t> buf(end - start);
    if (in > start) {
      notify(Event::kCowRead);
      st = read_mapped(m, gc, start, std::span<uint8_t>(buf).first(in - start));
    }
    uint64_t dend = in + d.size();
    if (st.is_ok() && dend < end) st = read_mapped(m, gc, dend, std::span<uint8_t>(buf).subspan(dend - start));
    std::memcpy(buf.data() + (in - start), d.data(), d.size());
    if (st.is_ok()) {
      notify(Event::kDataWrite);
      st = write_data(host + start, gc * cs_ + start, buf);
    }
    uint64_t bits = sc_bits(s0, s1);
    uint64_t old_alloc = reuse ? (m.bitmap & kAllAllocated) : 0;
    uint64_t old_zero = (m.bitmap >> 32) & ~bits & ~old_alloc;
    bitmap = old_alloc | bits | (old_zero << 32);
  }
  mu_.lock();
  if (!st.is_ok()) {
    if (!reuse) (void)change_refcount(host / cs_, -1);
    return st;
  }
  KEEL_ASSIGN(L2Ref t, writable_l2(gc));
  set_l2(t.get(), gc, host | kCopied, ext_l2_ ? bitmap : 0);
  if (!reuse && (m.type == ClusterType::kNormal || m.type == ClusterType::kZeroAlloc ||
                 m.type == ClusterType::kCompressed))
    defer_free(m.entry);
  return Status::ok();
}

Result<uint64_t> Qcow2Image::allocating_run(uint64_t gc0, std::span<const uint8_t> buf) {
  if (has_external_data()) return uint64_t{0};
  const uint64_t want = buf.size() / cs_;
  MutexLock lk(mu_);
  if (latched_) return error(latched_error());
  // The leading clusters that need a new host cluster: not in flight elsewhere and not owned
  // (an owned cluster is overwritten in place, with no metadata change).
  // prefetch_l2 may release the lock: every table first, then one pass that does not.
  for (uint64_t i = 0; i < want; i += l2_entries_ - (gc0 + i) % l2_entries_) KEEL_TRY_R(prefetch_l2(gc0 + i));
  std::vector<Mapping> old;
  for (uint64_t i = 0; i < want; ++i) {
    const uint64_t gc = gc0 + i;
    if (inflight_.count(gc)) break;
    KEEL_ASSIGN(Mapping m, lookup(gc));
    if ((m.type == ClusterType::kNormal || m.type == ClusterType::kZeroAlloc) && m.copied()) break;
    old.push_back(m);
  }
  const uint64_t n = old.size();
  if (n < 2) return uint64_t{0};
  // L2 tables first, so that the data clusters form one run.
  for (uint64_t i = 0; i < n; ++i) {
    KEEL_ASSIGN(L2Ref t, writable_l2(gc0 + i));
    (void)t;
  }
  KEEL_ASSIGN(uint64_t host, alloc_clusters(n));
  const bool fresh = last_alloc_fresh_;
  for (uint64_t i = 0; i < n; ++i) inflight_.insert(gc0 + i);
  struct RunGuard {
    Qcow2Image& img;
    uint64_t gc0, n;
    ~RunGuard() {
      for (uint64_t i = 0; i < n; ++i) img.inflight_.erase(gc0 + i);
      img.inflight_cv_.notify_all();
    }
  } guard{*this, gc0, n};
  lk.unlock();
  Status st;
  if (fresh) st = grow_ahead(host + n * cs_);
  notify(Event::kDataWrite);
  if (st.is_ok()) st = write_data(host, gc0 * cs_, buf.first(n * cs_));
  lk.lock();
  if (!st.is_ok()) {
    for (uint64_t i = 0; i < n; ++i) (void)change_refcount(host / cs_ + i, -1);
    return error(st);
  }
  for (uint64_t i = 0; i < n; ++i) {
    const uint64_t gc = gc0 + i;
    KEEL_ASSIGN(L2Ref t, writable_l2(gc));
    set_l2(t.get(), gc, (host + i * cs_) | kCopied, ext_l2_ ? kAllAllocated : 0);
    const Mapping& m = old[i];
    if (m.type == ClusterType::kNormal || m.type == ClusterType::kZeroAlloc || m.type == ClusterType::kCompressed)
      defer_free(m.entry);
  }
  return n * cs_;
}

// Zeroes or discards one whole cluster by changing its L2 entry, with QEMU's semantics:
// discard of an unallocated cluster without a backing file is a no-op; otherwise v3 images get a
// ZERO entry (extended L2: every subcluster reads as zero) so the range reads as zeros and not
// from the backing file; v2 images unlink the cluster. A write-zeroes without may_unmap keeps a
// cluster this image owns (ZERO_ALLOC). The cluster an entry stops referencing is freed once
// the new entry is durable.
Status Qcow2Image::zero_or_discard_cluster(uint64_t gc, bool discard, bool may_unmap, ZeroIf only_if) {
  MutexLock lk(mu_);
  inflight_cv_.wait(mu_, [&] {
    mu_.assert_held();
    return !inflight_.count(gc);
  });
  KEEL_ASSIGN(Mapping m, lookup(gc));
  const bool has_host = (m.type == ClusterType::kNormal || m.type == ClusterType::kZeroAlloc) && m.host() != 0;
  const bool own = has_host && m.copied();
  const bool unallocated = m.type == ClusterType::kUnallocated && (!ext_l2_ || m.bitmap == 0);
  const bool zero = m.type == ClusterType::kZeroPlain || m.type == ClusterType::kZeroAlloc;
  if (only_if != ZeroIf::kAny && !(zero || (unallocated && only_if == ZeroIf::kZeroOrUnallocated)))
    return Status(Code::kUnsupported, "partial", ENOTSUP);
  if (has_external_data()) {
    if (!discard) return Status(Code::kUnsupported, "data file: write zeros", ENOTSUP);
    // The data file's range is the guest's own: punching it makes it read as zeros.
    lk.unlock();
    return data_->punch(gc * cs_, std::min<uint64_t>(cs_, size_ - gc * cs_));
  }
  if (discard && unallocated && !backing_) return Status::ok();
  const bool keep = !discard && !may_unmap && own;
  uint64_t entry = 0, bitmap = 0;
  if (ext_l2_) {
    entry = keep ? m.entry : 0;
    bitmap = kAllZero;
  } else if (header_.version >= 3) {
    entry = keep ? (m.entry | kZeroFlag) : kZeroFlag;
  } else {
    if (backing_ && !discard) return Status(Code::kUnsupported, "v2 image with backing: write zeros", ENOTSUP);
    entry = 0;
  }
  const bool free_old = !keep && (m.type == ClusterType::kCompressed || has_host);
  if (entry == m.entry && bitmap == m.bitmap) return Status::ok();
  KEEL_ASSIGN(L2Ref t, writable_l2(gc));
  set_l2(t.get(), gc, entry, bitmap);
  if (free_old) defer_free(m.entry);
  return Status::ok();
}

Status Qcow2Image::write_zeroes(uint64_t offset, uint64_t length, ZeroFlags flags) {
  KEEL_TRY(check_request(offset, length, true));
  bool aligned = offset % cs_ == 0 && (length % cs_ == 0 || offset + length == size_);
  if (flags.fast_only && (!aligned || (version() < 3 && backing_) || has_external_data()))
    return Status(Code::kUnsupported, "fast zeroing is not possible for this range", ENOTSUP);
  if (encrypted() && (offset | length) % crypto::SectorCipher::kSectorSize) {
    std::vector<uint8_t> zeros(length, 0);  // sector read-modify-write through write()
    return write(offset, zeros, flags.fua);
  }
  KEEL_TRY(before_write());
  {
    SharedGate g(gate_);
    KEEL_TRY(note_guest_write(offset, length));
    std::vector<uint8_t> zeros;
    for (uint64_t pos = 0; pos < length;) {
      uint64_t off = offset + pos;
      uint64_t in = off & (cs_ - 1);
      uint64_t n = std::min<uint64_t>(length - pos, cs_ - in);
      bool whole = in == 0 && (n == cs_ || off + n == size_);
      Status st = whole && !has_external_data() ? zero_or_discard_cluster(off >> cbits_, false, flags.may_unmap)
                                                : zero_partial_cluster(off, n, flags.may_unmap);
      if (st.code() == Code::kUnsupported) {
        if (zeros.size() < n) zeros.assign(cs_, 0);
        st = write_chunk(off, std::span<const uint8_t>(zeros).first(n));
      }
      KEEL_TRY(st);
      pos += n;
    }
  }
  return (flags.fua || writethrough_) ? flush() : Status::ok();
}

Status Qcow2Image::discard(uint64_t offset, uint64_t length) {
  KEEL_TRY(check_request(offset, length, true));
  KEEL_TRY(before_write());
  // Advisory: only whole clusters inside the range are discarded.
  uint64_t first = (offset + cs_ - 1) / cs_;
  uint64_t end = offset + length == size_ ? (size_ + cs_ - 1) / cs_ : (offset + length) / cs_;
  {
    SharedGate g(gate_);
    // v2 has no zero flag: a discarded cluster would read the backing file's data again. QEMU
    // (qcow2_co_pdiscard) does nothing there; so does Keel. (The header changes only under the
    // exclusive gate.)
    {
      MutexLock lk(mu_);
      if (header_.version < 3 && !header_.backing_file.empty()) return Status::ok();
    }
    KEEL_TRY(note_guest_write(offset, length));
    for (uint64_t gc = first; gc < end; ++gc) KEEL_TRY(zero_or_discard_cluster(gc, true, true));
  }
  return writethrough_ ? flush() : Status::ok();
}

Status Qcow2Image::write_compressed(uint64_t offset, std::span<const uint8_t> cluster) {
  if (offset % cs_ != 0 || cluster.size() > cs_)
    return invalid("compressed writes must cover one aligned cluster");
  KEEL_TRY(check_request(offset, cluster.size(), true));
  if (encrypted()) return Status(Code::kUnsupported, "Compression can't be used with encryption", ENOTSUP);
  std::vector<uint8_t> padded(cluster.begin(), cluster.end());
  padded.resize(cs_, 0);
  if (has_external_data()) return write(offset, cluster, false);
  KEEL_ASSIGN(auto packed, compress_cluster(compression_, padded));
  if (!packed) return write(offset, cluster, false);
  KEEL_TRY(before_write());
  SharedGate g(gate_);
  KEEL_TRY(note_guest_write(offset, cluster.size()));
  uint64_t gc = offset >> cbits_;
  MutexLock lk(mu_);
  inflight_cv_.wait(mu_, [&] {
    mu_.assert_held();
    return !inflight_.count(gc);
  });
  KEEL_ASSIGN(Mapping m, lookup(gc));
  if (m.type != ClusterType::kUnallocated && m.type != ClusterType::kZeroPlain) {
    lk.unlock();
    return write_chunk(offset, cluster);
  }
  inflight_.insert(gc);
  InflightGuard guard{inflight_, inflight_cv_, gc};
  if (auto t = writable_l2(gc); !t) return t.error();
  KEEL_ASSIGN(uint64_t host, alloc_bytes(packed->size()));
  KEEL_TRY(data_guard(host, packed->size()));
  lk.unlock();
  notify(Event::kCompressedWrite);
  Status st = file_->write_at(host, *packed);
  lk.lock();
  if (!st.is_ok()) return st;  // the bytes stay referenced by nothing but a refcount: a leak
  KEEL_ASSIGN(L2Ref t, writable_l2(gc));
  set_l2(t.get(), gc, encode_compressed(host, packed->size(), cbits_), 0);
  return Status::ok();
}

Status Qcow2Image::flush() {
  if (read_only_) return Status::ok();
  std::lock_guard<std::mutex> fl(flush_mu_);
  DowngradableGate g(gate_);
  MutexLock lk(mu_);
  return flush_metadata(&g);
}

Result<Extent> Qcow2Image::block_status(uint64_t offset, uint64_t max_length) {
  KEEL_TRY_R(check_request(offset, 0, false));
  max_length = std::min(max_length, size_ - offset);
  Extent e;
  e.offset = offset;
  if (max_length == 0) return e;
  // Classify the (sub)cluster at `off`: kind 0 data, 1 zero, 2 unallocated. `host` is the
  // host offset when the piece has one (data, a zero cluster that keeps its allocation, an
  // unallocated subcluster of an allocated cluster); compressed data has none.
  struct Piece {
    int kind;
    std::optional<uint64_t> host;
    bool compressed;
    uint64_t len;
  };
  auto classify = [&](uint64_t off) -> Result<Piece> {
    uint64_t gc = off >> cbits_, in = off & (cs_ - 1);
    Mapping m;
    {
      MutexLock lk(mu_);
      KEEL_TRY_R(prefetch_l2(gc));
      KEEL_ASSIGN(m, lookup(gc));
    }
    if (m.type == ClusterType::kCompressed) return Piece{0, std::nullopt, true, cs_ - in};
    const bool has_host = m.type == ClusterType::kNormal || m.type == ClusterType::kZeroAlloc;
    std::optional<uint64_t> host;
    if (has_host) host = m.host() + in;
    if (ext_l2_) {
      uint64_t sc = in / sc_size_;
      uint64_t len = (sc + 1) * sc_size_ - in;
      if (m.bitmap & (1ull << sc)) return Piece{0, host, false, len};
      if (m.bitmap & (1ull << (32 + sc))) return Piece{1, host, false, len};
      return Piece{2, host, false, len};
    }
    switch (m.type) {
      case ClusterType::kNormal: return Piece{0, host, false, cs_ - in};
      case ClusterType::kZeroPlain:
      case ClusterType::kZeroAlloc: return Piece{1, host, false, cs_ - in};
      default: return Piece{2, std::nullopt, false, cs_ - in};
    }
  };
  KEEL_ASSIGN(Piece first, classify(offset));
  uint64_t len = std::min(first.len, max_length);
  // Extend over following pieces of the same kind (and contiguous host offsets).
  const uint64_t scan_limit = std::min<uint64_t>(max_length, 1ull << 30);
  while (len < scan_limit) {
    KEEL_ASSIGN(Piece p, classify(offset + len));
    if (p.kind != first.kind || p.compressed != first.compressed) break;
    if (p.host.has_value() != first.host.has_value()) break;
    if (first.host && *p.host != *first.host + len) break;
    len = std::min(len + p.len, scan_limit);
  }
  e.length = len;
  e.host_offset = first.host;
  if (first.kind == 0) {
    e.data = true;
    e.depth = 1;
    e.compressed = first.compressed;
    return e;
  }
  if (first.kind == 1) {
    e.zero = true;
    e.depth = 1;
    return e;
  }
  // Unallocated here: ask the backing chain.
  uint64_t bsize = backing_ ? backing_->size() : 0;
  if (offset < bsize) {
    KEEL_ASSIGN(Extent b, backing_->block_status(offset, std::min(len, bsize - offset)));
    b.depth = b.depth ? b.depth + 1 : 0;
    return b;
  }
  e.zero = true;
  e.depth = 0;
  return e;
}

}  // namespace keel
