// The metadata writer: every metadata write (checked against what it would overlap), the
// latch after a failed write, the corrupt bit, and flush_metadata, the one ordered write-back
// path (see qcow2_image.h and docs/architecture.md, "The metadata write-back path").
#include <fmt/format.h>

#include <algorithm>
#include <optional>

#include "engine/qcow2_image.h"
#include "format/endian.h"
#include "keel/limits.h"

namespace keel {

using namespace format;

namespace {

// The changed sectors of a table, each run widened to the file's alignment (O_DIRECT would
// otherwise read-modify-write; the bytes around a change are what the file already holds) and
// clipped so that no byte is written twice: what write_table_sectors writes and what a flush's
// cut copies.
std::vector<std::pair<uint64_t, uint64_t>> aligned_dirty_runs(const CachedTableState& t, uint64_t entry_bytes,
                                                             uint64_t file_alignment) {
  const uint64_t align = std::max<uint64_t>(512, file_alignment);
  std::vector<std::pair<uint64_t, uint64_t>> runs;
  uint64_t done_to = 0;
  for (auto [first, end] : TableCache<L2Table>::dirty_runs(t, entry_bytes)) {
    first = std::max(first / align * align, done_to);
    end = std::min<uint64_t>((end + align - 1) / align * align, entry_bytes);
    if (first >= end) continue;
    runs.emplace_back(first, end);
    done_to = end;
  }
  return runs;
}

}  // namespace

Status Qcow2Image::latch(Status s) {
  if (!s.is_ok() && !latched_) {
    latch_cause_ = s;
    latched_ = true;
  }
  return s;
}

Status Qcow2Image::latched_error(Code code) const {
  int err = latch_cause_.err();
  return Status(code, "image is read-only after an error: " + latch_cause_.message(), err ? err : EIO);
}

Status Qcow2Image::mark_corrupt(const std::string& why) {
  Status err = corrupt(why);
  if (read_only_ || latched_) return err;
  latch_cause_ = Status(Code::kCorrupt, "image marked corrupt: " + why, EIO);
  latched_ = true;
  if (on_corruption_) on_corruption_(why);
  if (header_.version >= 3) {
    header_.incompatible |= kIncompatCorrupt;
    uint8_t b[8];
    put_be64(b, header_.incompatible);
    notify(Event::kHeaderUpdate);
    if (file_->write_at(kOffsetIncompatible, b).is_ok()) (void)file_->sync();
  }
  return err;
}

// Every metadata write goes through the overlap check first (qcow2_overlap.cpp): it may land
// only on clusters that hold nothing or hold the kind of structure being written.
Status Qcow2Image::metadata_write(uint64_t offset, std::span<const uint8_t> bytes, const char* what) {
  const std::string_view w = what;
  uint32_t ignore = 0;
  if (w == "header") ignore = kind_bit(MetaKind::kMainHeader);
  else if (w == "l1") ignore = kind_bit(MetaKind::kActiveL1);
  else if (w == "l2") ignore = kind_bit(MetaKind::kActiveL2) | kind_bit(MetaKind::kInactiveL2);
  else if (w == "refblock") ignore = kind_bit(MetaKind::kRefcountBlock);
  else if (w == "reftable") ignore = kind_bit(MetaKind::kRefcountTable);
  else if (w == "snapshot_table") ignore = kind_bit(MetaKind::kSnapshotTable);
  else if (w == "snapshot_l1") ignore = kind_bit(MetaKind::kInactiveL1);
  else if (w == "bitmap_table") ignore = kind_bit(MetaKind::kBitmapTable);
  else if (w == "bitmap_directory") ignore = kind_bit(MetaKind::kBitmapDirectory);
  KEEL_TRY(overlap_guard(offset, bytes.size(), ignore));
  zero_from_ = std::max<uint64_t>(zero_from_, offset + bytes.size());
  return latch(file_->write_at(offset, bytes));
}

Status Qcow2Image::write_header_field(uint64_t offset, std::span<const uint8_t> bytes) {
  notify(Event::kHeaderUpdate);
  return metadata_write(offset, bytes, "header");
}

Status Qcow2Image::write_l2_table(uint64_t offset, const L2Table& t) {
  std::vector<uint8_t> b(cs_);
  for (size_t i = 0; i < t.words.size(); ++i) put_be64(&b[i * 8], t.words[i]);
  return write_table_sectors(offset, t, b, "l2");
}

Status Qcow2Image::write_table_sectors(uint64_t offset, const CachedTableState& t, std::span<const uint8_t> bytes,
                                       const char* what) {
  if (t.fresh) return metadata_write(offset, bytes, what);
  for (auto [first, end] : aligned_dirty_runs(t, cs_, file_->alignment()))
    KEEL_TRY(metadata_write(offset + first, bytes.subspan(first, end - first), what));
  return Status::ok();
}

Status Qcow2Image::sync_file(BlockFile& f, bool unlocked) {
  if (!unlocked) return latch(f.sync());
  mu_.unlock();
  Status st = f.sync();
  mu_.lock();
  return latch(st);
}

Status Qcow2Image::flush_metadata(DowngradableGate* hold) {
  const bool unlocked = hold != nullptr;  // the guest flush releases mu_ around its syncs
  // REQUIRES: gate_ exclusive, flush_mu_ held, mu_ held (see the header for `lk`).
  if (latched_) return latched_error();
  // Phase 1: refcounts and unlinked L2 tables, then one sync that also covers guest data.
  KEEL_TRY(write_dirty_refblocks());
  bool fresh_any = false;
  Status st;
  std::vector<L2Ref> fresh;
  l2_cache_.for_each([&](uint64_t off, L2Table& t) {
    mu_.assert_held();
    if (!st.is_ok() || !t.fresh || !t.dirty) return;
    if (!fresh_any) notify(Event::kL2Alloc);
    fresh_any = true;
    st = write_l2_table(off, t);
    if (st.is_ok()) {
      l2_cache_.mark_clean(t);
      t.fresh = true;  // its link is not durable until phase 2
      fresh.push_back(l2_cache_.find(off));
    }
  });
  KEEL_TRY(st);
  // The cut. Every allocating write that completed before this flush took the gate has its data
  // written and its entry in a cached table; what is dirty now is exactly what this flush links.
  // The guest flush lets allocating writes in from here: what they change in the caches (new
  // refcounts, entries, fresh tables, L1 entries, deferred frees) is the next flush's, and none
  // of it reaches the file before that flush's phase 1 except refcount increments (written by
  // phase 3 below or a refcount-structure growth), which can only leak. Phase 2 writes the
  // cut's copies, so a link set after the cut (to data the phase-1 sync may not cover) is never
  // written by this flush. Structural operations and other flushes still wait (they enter the
  // gate exclusive).
  LinkCut cut = take_link_cut();
  cut.fresh = std::move(fresh);
  // A flush with many tables to link (the dirty-metadata bound forced it, not a guest's flush
  // after a few writes) lets writers in only once its links are written, as before the cut:
  // letting them in earlier only grows the next epoch's tables in memory while this one is
  // written (keel serve under 4k random writes over 1 TiB: peak RSS 56 -> 72 MiB).
  if (hold && cut.tables.size() * cs_ <= limits::kMaxDirtyMetadataBytes / 4) hold->downgrade();
  st = write_link_cut(cut, hold);
  if (!st.is_ok()) {
    restore_link_cut(cut);
    return st;
  }
  std::vector<uint64_t> frees = std::move(cut.frees);

  // Phase 3: the unlinks are durable; drop the references (written by the next phase 1).
  // In-place overwrites must be done with any cluster freed here before it can be reused.
  std::optional<ExclusiveGate> quiet;
  if (unlocked && !frees.empty()) {
    mu_.unlock();
    quiet.emplace(data_gate_);
    mu_.lock();
  }
  if (!frees.empty()) notify(Event::kClusterFree);
  for (uint64_t e : frees) {
    if (e & kCompressed) {
      CompressedDescriptor d = decode_compressed(e, cbits_);
      for (uint64_t c = d.host_offset / cs_; c <= (d.host_offset + d.size - 1) / cs_; ++c)
        KEEL_TRY(change_refcount(c, -1));
      continue;
    }
    uint64_t off = e & kOffsetMask;
    KEEL_TRY(change_refcount(off / cs_, -1));
    KEEL_ASSIGN(uint64_t rc, get_refcount(off / cs_));
    if (rc == 0) {
      L2Ref t = l2_cache_.find(off);
      if (t && !t->dirty) l2_cache_.erase(off);
      if (auto it = l2_loading_.find(off); it != l2_loading_.end()) it->second = true;
    }
  }
  // Write the decrements now; the next sync (next flush, or close) makes them durable. Until
  // then a crash can only leak these clusters.
  const bool any = rb_cache_.dirty_bytes() != 0;
  KEEL_TRY(write_dirty_refblocks());
  if (any) freed_unsynced_ = true;
  return Status::ok();
}

Qcow2Image::LinkCut Qcow2Image::take_link_cut() {
  LinkCut cut;
  // Only the dirty runs are copied (what write_table_sectors would write), not whole tables: a
  // random write touches one sector of a table.
  l2_cache_.for_each([&](uint64_t off, L2Table& t) {
    mu_.assert_held();
    if (t.fresh || !t.dirty) return;
    for (auto [first, end] : aligned_dirty_runs(t, cs_, file_->alignment())) {
      LinkCut::Run r;
      r.offset = off + first;
      r.bytes.resize(end - first);
      for (uint64_t w = first / 8; w < end / 8; ++w) put_be64(&r.bytes[w * 8 - first], t.words[w]);
      cut.runs.push_back(std::move(r));
    }
    LinkCut::Table c;
    c.table = l2_cache_.find(off);
    c.sectors.dirty = true;
    c.sectors.dirty_sectors = t.dirty_sectors;
    l2_cache_.mark_clean(t);
    cut.tables.push_back(std::move(c));
  });
  cut_bytes_.store(cut.tables.size() * cs_, std::memory_order_relaxed);
  cut.l1_indices.assign(l1_dirty_.begin(), l1_dirty_.end());
  std::set<uint64_t> sectors;
  for (uint64_t i : l1_dirty_) sectors.insert(i * 8 / 512);
  for (uint64_t s : sectors) {
    uint64_t first = s * 64, last = std::min<uint64_t>(first + 64, l1_.size());
    std::vector<uint8_t> b((last - first) * 8);
    for (uint64_t i = first; i < last; ++i) put_be64(&b[(i - first) * 8], l1_[i]);
    cut.l1_sectors.emplace_back(l1_offset_ + first * 8, std::move(b));
  }
  l1_dirty_.clear();
  cut.frees.swap(pending_free_);
  return cut;
}

Status Qcow2Image::write_link_cut(LinkCut& cut, DowngradableGate* hold) {
  const bool unlocked = hold != nullptr;
  notify(Event::kFlushData);
  if (data_ != file_.get()) KEEL_TRY(sync_file(*data_, unlocked));
  KEEL_TRY(sync_file(*file_, unlocked));
  freed_unsynced_ = false;

  // Phase 2: links — the cut's changed L2 tables and L1 entries.
  bool linked = false;
  for (const LinkCut::Run& r : cut.runs) {
    if (!linked) notify(Event::kL2Update);
    linked = true;
    KEEL_TRY(metadata_write(r.offset, r.bytes, "l2"));
  }
  if (!cut.l1_sectors.empty()) {
    notify(Event::kL1Update);
    linked = true;
    for (const auto& [offset, bytes] : cut.l1_sectors) KEEL_TRY(metadata_write(offset, bytes, "l1"));
  }
  // Every link is written: the tables phase 1 wrote whole are ordinary linked tables from now
  // on (a failed sync below latches the image, so nothing is written after it). Tables made
  // after the cut stay fresh: the next flush's phase 1 writes them whole.
  for (const L2Ref& t : cut.fresh) t->fresh = false;
  cut.fresh.clear();
  cut.tables.clear();  // unpins them: their entries are in the file
  cut.runs.clear();
  cut_bytes_.store(0, std::memory_order_relaxed);
  cut.l1_indices.clear();
  if (hold) hold->downgrade();  // at the latest here (a no-op if the cut already did)
  if (linked) {
    notify(Event::kFlushMeta);
    KEEL_TRY(sync_file(*file_, unlocked));
  }
  return Status::ok();
}

void Qcow2Image::restore_link_cut(LinkCut& cut) {
  for (const LinkCut::Table& c : cut.tables)
    for (auto [first, end] : TableCache<L2Table>::dirty_runs(c.sectors, cs_))
      l2_cache_.mark_dirty(*c.table, first, end - first);
  cut_bytes_.store(0, std::memory_order_relaxed);
  l1_dirty_.insert(cut.l1_indices.begin(), cut.l1_indices.end());
  pending_free_.insert(pending_free_.end(), cut.frees.begin(), cut.frees.end());
}

Status Qcow2Image::write_dirty_refblocks() {
  bool announced = false;
  Status st;
  rb_cache_.for_each([&](uint64_t rt, RefBlock& b) {
    mu_.assert_held();
    if (!st.is_ok() || !b.dirty) return;
    if (!announced) notify(Event::kRefblockUpdate);
    announced = true;
    st = write_table_sectors(reftable_[rt] & ~kReftableReserved, b, b.bytes, "refblock");
    if (st.is_ok()) rb_cache_.mark_clean(b);
  });
  return st;
}

}  // namespace keel
