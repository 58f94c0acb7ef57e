// Internal snapshots (create, delete, apply) of a qcow2 image; the table-switching helpers
// (new L1, new snapshot table) are shared with resize (qcow2_resize.cpp).
//
// Ordering: refcounts go up (durably) before any new reference is published; a reference is
// removed (durably) before refcounts go down. Publishing is one small header write inside one
// sector ({nb_snapshots, snapshots_offset} or {l1_size, l1_table_offset}), synced. On v3 images
// the dirty bit is set for the duration, so an interrupted operation is repaired on the next
// read-write open (the COPIED flags and refcounts between the steps need not match).
#include <fmt/format.h>

#include <ctime>

#include "engine/qcow2_image.h"
#include "format/endian.h"
#include "keel/limits.h"

namespace keel {

using namespace format;

const SnapshotEntry* Qcow2Image::find_snapshot(const std::string& key) const {
  for (const auto& e : snapshots_)
    if (e.id == key) return &e;
  for (const auto& e : snapshots_)
    if (e.name == key) return &e;
  return nullptr;
}

Status Qcow2Image::set_dirty_bit(bool dirty) {
  if (header_.version < 3) return Status::ok();
  uint64_t v = dirty ? (header_.incompatible | kIncompatDirty) : (header_.incompatible & ~kIncompatDirty);
  if (v == header_.incompatible) return Status::ok();
  uint8_t b[8];
  put_be64(b, v);
  KEEL_TRY(write_header_field(kOffsetIncompatible, b));
  KEEL_TRY(latch(file_->sync()));
  header_.incompatible = v;
  return Status::ok();
}

Status Qcow2Image::tree_refcounts(const std::vector<uint64_t>& l1, int64_t delta) {
  for (uint64_t l1e : l1) {
    uint64_t off = l1e & kOffsetMask;
    if (!off) continue;
    if (off % cs_) return mark_corrupt(fmt::format("L2 table offset {:#x} is not cluster aligned", off));
    std::vector<uint64_t> words;
    {
      KEEL_ASSIGN(L2Ref t, load_l2(off));
      words = t->words;  // refcount changes may evict the table from the cache
    }
    for (uint64_t i = 0; i < l2_entries_; ++i) {
      uint64_t e = words[i * l2_words_];
      ClusterType type = classify_l2(e, ext_l2_);
      if (type == ClusterType::kCompressed) {
        CompressedDescriptor d = decode_compressed(e, cbits_);
        for (uint64_t c = d.host_offset / cs_; c <= (d.host_offset + d.size - 1) / cs_; ++c)
          KEEL_TRY(change_refcount(c, delta));
      } else if ((type == ClusterType::kNormal || type == ClusterType::kZeroAlloc) && (e & kOffsetMask) &&
                 !has_external_data()) {
        KEEL_TRY(change_refcount((e & kOffsetMask) / cs_, delta));
      }
    }
    KEEL_TRY(change_refcount(off / cs_, delta));
  }
  return Status::ok();
}

Status Qcow2Image::recompute_copied() {
  for (uint64_t i = 0; i < l1_.size(); ++i) {
    uint64_t off = l1_[i] & kOffsetMask;
    if (!off) continue;
    KEEL_ASSIGN(uint64_t rc, get_refcount(off / cs_));
    uint64_t want = rc == 1 ? (off | kCopied) : off;
    if (l1_[i] != want) {
      l1_[i] = want;
      l1_dirty_.insert(i);
    }
    std::vector<uint64_t> words;
    {
      KEEL_ASSIGN(L2Ref t, load_l2(off));
      words = t->words;
    }
    bool changed = false;
    for (uint64_t j = 0; j < l2_entries_; ++j) {
      uint64_t& e = words[j * l2_words_];
      ClusterType type = classify_l2(e, ext_l2_);
      if (type != ClusterType::kNormal && type != ClusterType::kZeroAlloc) continue;
      if (has_external_data()) continue;  // data-file clusters are implicitly COPIED
      uint64_t host = e & kOffsetMask;
      if (!host) continue;
      KEEL_ASSIGN(uint64_t drc, get_refcount(host / cs_));
      uint64_t ne = drc == 1 ? (e | kCopied) : (e & ~kCopied);
      if (ne != e) {
        e = ne;
        changed = true;
      }
    }
    if (changed) {
      KEEL_ASSIGN(L2Ref t, load_l2(off));
      t->words = std::move(words);
      l2_cache_.mark_all_dirty(*t);
    }
  }
  return Status::ok();
}

Status Qcow2Image::write_snapshot_table(const std::vector<SnapshotEntry>& entries) {
  std::vector<uint8_t> bytes = encode_snapshot_table(entries, header_.version);
  const uint64_t table_bytes = bytes.size();
  if (bytes.size() > limits::kMaxSnapshotTableBytes) return invalid("snapshot table would exceed 64 MiB");
  uint64_t new_off = 0;
  if (!entries.empty()) {
    uint64_t clusters = (bytes.size() + cs_ - 1) / cs_;
    KEEL_ASSIGN(new_off, alloc_clusters(clusters));
    bytes.resize(clusters * cs_, 0);
    KEEL_TRY(metadata_write(new_off, bytes, "snapshot_table"));
  }
  KEEL_TRY(write_dirty_refblocks());
  KEEL_TRY(latch(file_->sync()));
  uint8_t hb[12];
  put_be32(hb, static_cast<uint32_t>(entries.size()));
  put_be64(hb + 4, new_off);
  KEEL_TRY(write_header_field(kOffsetSnapshots, hb));
  KEEL_TRY(latch(file_->sync()));
  uint64_t old_off = header_.snapshots_offset;
  uint64_t old_clusters = header_.nb_snapshots ? (snapshot_table_bytes_ + cs_ - 1) / cs_ : 0;
  header_.nb_snapshots = static_cast<uint32_t>(entries.size());
  header_.snapshots_offset = new_off;
  snapshots_ = entries;
  snapshot_table_bytes_ = table_bytes;
  for (uint64_t c = 0; c < old_clusters; ++c) KEEL_TRY(change_refcount(old_off / cs_ + c, -1));
  return rebuild_metadata_map();  // the snapshot table, the snapshots' L1 and L2 tables moved
}

Status Qcow2Image::write_new_l1(const std::vector<uint64_t>& l1) {
  if (l1.size() * 8 > limits::kMaxL1Bytes) return invalid("L1 table would exceed 32 MiB");
  uint64_t clusters = (l1.size() * 8 + cs_ - 1) / cs_;
  uint64_t off = 0;
  if (clusters) {
    KEEL_ASSIGN(off, alloc_clusters(clusters));
    std::vector<uint8_t> b(clusters * cs_, 0);
    for (size_t i = 0; i < l1.size(); ++i) put_be64(&b[i * 8], l1[i]);
    KEEL_TRY(metadata_write(off, b, "l1"));
  }
  KEEL_TRY(write_dirty_refblocks());
  KEEL_TRY(latch(file_->sync()));
  uint8_t hb[12];
  put_be32(hb, static_cast<uint32_t>(l1.size()));
  put_be64(hb + 4, off);
  notify(Event::kL1Update);
  KEEL_TRY(write_header_field(kOffsetL1Size, hb));
  KEEL_TRY(latch(file_->sync()));
  uint64_t old_off = l1_offset_, old_clusters = (l1_.size() * 8 + cs_ - 1) / cs_;
  l1_offset_ = off;
  header_.l1_table_offset = off;
  header_.l1_size = static_cast<uint32_t>(l1.size());
  l1_ = l1;
  l1_dirty_.clear();
  for (uint64_t c = 0; c < old_clusters && old_off; ++c) KEEL_TRY(change_refcount(old_off / cs_ + c, -1));
  return rebuild_metadata_map();  // the active L1 table and its L2 tables changed
}

Result<std::vector<uint64_t>> read_l1_table(BlockFile& f, uint64_t off, uint32_t n) {
  std::vector<uint8_t> b(uint64_t(n) * 8);
  if (!b.empty()) KEEL_TRY_R(f.read_at(off, b));
  std::vector<uint64_t> l1(n);
  for (uint32_t i = 0; i < n; ++i) l1[i] = get_be64(&b[i * 8]);
  return l1;
}

Status Qcow2Image::snapshot_create(const std::string& name) {
  if (read_only_) return Status(Code::kReadOnly, "image is opened read-only", EPERM);
  if (has_external_data()) return unsupported("internal snapshots are not supported with an external data file");
  // Empty names are allowed, as in QEMU (the on-disk name length is 16 bits; qemu-img cuts
  // names to 255 bytes before they get here).
  if (name.size() > 1024) return invalid("snapshot name must be at most 1024 bytes");
  {
    MutexLock lk(mu_);
    if (snapshots_.size() >= limits::kMaxSnapshots) return invalid("too many snapshots");
  }
  KEEL_TRY(flush());
  std::lock_guard<std::mutex> fl(flush_mu_);
  ExclusiveGate g(gate_);
  ExclusiveGate dg(data_gate_);
  MutexLock lk(mu_);
  KEEL_TRY(set_dirty_bit(true));
  // The snapshot's L1: a copy of the active one in fresh clusters.
  uint64_t l1_clusters = (l1_.size() * 8 + cs_ - 1) / cs_;
  uint64_t copy_off = 0;
  if (l1_clusters) {
    KEEL_ASSIGN(copy_off, alloc_clusters(l1_clusters));
    std::vector<uint8_t> b(l1_clusters * cs_, 0);
    for (size_t i = 0; i < l1_.size(); ++i) put_be64(&b[i * 8], l1_[i] & ~kCopied);
    KEEL_TRY(metadata_write(copy_off, b, "snapshot_l1"));
  }
  KEEL_TRY(tree_refcounts(l1_, +1));
  KEEL_TRY(recompute_copied());
  KEEL_TRY(flush_metadata());
  SnapshotEntry e;
  uint64_t max_id = 0;
  for (const auto& s : snapshots_) max_id = std::max<uint64_t>(max_id, std::strtoull(s.id.c_str(), nullptr, 10));
  e.id = std::to_string(max_id + 1);
  e.name = name;
  struct timespec ts {};
  clock_gettime(CLOCK_REALTIME, &ts);
  e.date_sec = static_cast<uint32_t>(ts.tv_sec);
  e.date_nsec = static_cast<uint32_t>(ts.tv_nsec / 1000 * 1000);  // qemu-img: microseconds
  e.l1_table_offset = copy_off;
  e.l1_size = static_cast<uint32_t>(l1_.size());
  e.disk_size = size_;
  // What qemu-img records: icount 0, and the 24 bytes of extra data (vm_state_size_large,
  // disk_size, icount) on v2 images too.
  e.icount = 0;
  e.extra.assign(24, 0);
  auto entries = snapshots_;
  entries.push_back(e);
  KEEL_TRY(write_snapshot_table(entries));
  KEEL_TRY(write_dirty_refblocks());
  KEEL_TRY(latch(file_->sync()));
  return set_dirty_bit(false);
}

Status Qcow2Image::snapshot_delete(const std::string& key) {
  if (read_only_) return Status(Code::kReadOnly, "image is opened read-only", EPERM);
  KEEL_TRY(flush());
  std::lock_guard<std::mutex> fl(flush_mu_);
  ExclusiveGate g(gate_);
  ExclusiveGate dg(data_gate_);
  MutexLock lk(mu_);
  const SnapshotEntry* s = find_snapshot(key);
  if (!s) return Status(Code::kNotFound, fmt::format("Can't find the snapshot '{}'", key), ENOENT);
  SnapshotEntry victim = *s;
  KEEL_ASSIGN(auto snap_l1, read_l1_table(*file_, victim.l1_table_offset, victim.l1_size));
  KEEL_TRY(set_dirty_bit(true));
  std::vector<SnapshotEntry> entries;
  for (const auto& e : snapshots_)
    if (&e != s) entries.push_back(e);
  KEEL_TRY(write_snapshot_table(entries));  // unpublished: only leaks from here on
  KEEL_TRY(tree_refcounts(snap_l1, -1));
  uint64_t l1_clusters = (uint64_t(victim.l1_size) * 8 + cs_ - 1) / cs_;
  for (uint64_t c = 0; c < l1_clusters; ++c) KEEL_TRY(change_refcount(victim.l1_table_offset / cs_ + c, -1));
  KEEL_TRY(recompute_copied());
  KEEL_TRY(flush_metadata());
  return set_dirty_bit(false);
}

Status Qcow2Image::snapshot_apply(const std::string& key) {
  if (read_only_) return Status(Code::kReadOnly, "image is opened read-only", EPERM);
  KEEL_TRY(flush());
  std::lock_guard<std::mutex> fl(flush_mu_);
  ExclusiveGate g(gate_);
  ExclusiveGate dg(data_gate_);
  MutexLock lk(mu_);
  const SnapshotEntry* s = find_snapshot(key);
  if (!s) return Status(Code::kNotFound, fmt::format("Can't find the snapshot '{}'", key), ENOENT);
  KEEL_TRY(bitmaps_before_apply());  // enabled bitmaps: the whole disk is about to change
  s = find_snapshot(key);
  SnapshotEntry snap = *s;
  KEEL_ASSIGN(auto snap_l1, read_l1_table(*file_, snap.l1_table_offset, snap.l1_size));
  for (uint64_t e : snap_l1)
    if ((e & kOffsetMask) % cs_)
      return mark_corrupt(fmt::format("snapshot '{}' has a misaligned L1 entry {:#x}", key, e));
  KEEL_TRY(set_dirty_bit(true));
  KEEL_TRY(tree_refcounts(snap_l1, +1));
  std::vector<uint64_t> old_l1 = l1_;
  std::vector<uint64_t> new_l1 = snap_l1;
  for (auto& e : new_l1) e &= ~kCopied;
  uint64_t new_size = snap.disk_size ? snap.disk_size : size_;
  Header probe = header_;
  new_l1.resize(std::max<uint64_t>(new_l1.size(), probe.l1_entries_for(new_size)), 0);
  KEEL_TRY(write_new_l1(new_l1));  // publishes the snapshot's tree as the active one
  KEEL_TRY(tree_refcounts(old_l1, -1));
  KEEL_TRY(recompute_copied());
  if (new_size != size_) {
    uint8_t b[8];
    put_be64(b, new_size);
    KEEL_TRY(write_header_field(24, b));
    KEEL_TRY(latch(file_->sync()));
    size_ = new_size;
    header_.size = new_size;
  }
  KEEL_TRY(flush_metadata());
  return set_dirty_bit(false);
}

}  // namespace keel
