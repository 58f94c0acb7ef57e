// The qcow2 metadata layer: L2 and refcount caches, cluster allocation, refcount-structure
// growth, and the one ordered write-back path (flush_metadata). See qcow2_image.h for the
// ordering rules; docs/architecture.md explains why they give the integrity contract.
#include <fmt/format.h>

#include <algorithm>
#include <optional>

#include "engine/qcow2_image.h"
#include "format/endian.h"
#include "keel/limits.h"

namespace keel {

using namespace format;

namespace {
constexpr uint64_t kL2CacheBytes = limits::kDefaultL2CacheBytes;
constexpr uint64_t kRefblockCacheBytes = limits::kDefaultRefcountCacheBytes;
}  // namespace

Status Qcow2Image::latch(Status s) {
  if (!s.is_ok() && !latched_) {
    latched_ = true;
    latch_reason_ = s.message();
  }
  return s;
}

Status Qcow2Image::mark_corrupt(const std::string& why) {
  Status err = corrupt(why);
  if (read_only_ || latched_) return err;
  latched_ = true;
  latch_reason_ = "image marked corrupt: " + why;
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

Result<L2Ref> Qcow2Image::load_l2(uint64_t l2_offset) {
  if (L2Ref t = l2_cache_.find(l2_offset)) return t;
  notify(Event::kL2Load);
  auto t = std::make_shared<L2Table>();
  l2_cache_.recycle_into(t->words);
  t->words.resize(cs_ / 8);
  KEEL_TRY_R(file_->read_at(l2_offset, {reinterpret_cast<uint8_t*>(t->words.data()), cs_}));
  for (auto& w : t->words) w = get_be64(reinterpret_cast<const uint8_t*>(&w));
  if (auto it = l2_loading_.find(l2_offset); it != l2_loading_.end()) it->second = true;
  return l2_cache_.insert(l2_offset, std::move(t));
}

Status Qcow2Image::prefetch_l2(std::unique_lock<std::mutex>& lk, uint64_t gc) {
  const uint64_t l1i = gc / l2_entries_;
  if (l1i >= l1_.size()) return Status::ok();
  const uint64_t l2off = l1_[l1i] & kOffsetMask;
  if (l2off == 0 || l2off % cs_ != 0 || l2_cache_.contains(l2off)) return Status::ok();
  if (l2_loading_.count(l2off)) {
    l2_loading_cv_.wait(lk, [&] { return !l2_loading_.count(l2off); });
    return Status::ok();
  }
  l2_loading_[l2off] = false;
  auto t = std::make_shared<L2Table>();
  l2_cache_.recycle_into(t->words);
  lk.unlock();
  t->words.resize(cs_ / 8);
  notify(Event::kL2Load);
  Status st = file_->read_at(l2off, {reinterpret_cast<uint8_t*>(t->words.data()), cs_});
  for (auto& w : t->words) w = get_be64(reinterpret_cast<const uint8_t*>(&w));
  lk.lock();
  const bool raced = l2_loading_[l2off];
  l2_loading_.erase(l2off);
  l2_loading_cv_.notify_all();
  if (!st.is_ok()) return st;
  if (raced || l2_cache_.contains(l2off)) return Status::ok();
  if (l1i >= l1_.size() || (l1_[l1i] & kOffsetMask) != l2off) return Status::ok();
  l2_cache_.insert(l2off, std::move(t));
  return Status::ok();
}

Result<Mapping> Qcow2Image::lookup(uint64_t gc) {
  Mapping m;
  uint64_t l1i = gc / l2_entries_, l2i = gc % l2_entries_;
  if (l1i >= l1_.size()) return m;
  uint64_t l2off = l1_[l1i] & kOffsetMask;
  if (l2off == 0) return m;
  if (l2off % cs_ != 0)
    return error(mark_corrupt(fmt::format("L2 table offset {:#x} in L1 entry {} is not cluster aligned", l2off, l1i)));
  KEEL_ASSIGN(L2Ref t, load_l2(l2off));
  m.entry = t->words[l2i * l2_words_];
  if (ext_l2_) m.bitmap = t->words[l2i * 2 + 1];
  m.type = classify_l2(m.entry, ext_l2_);
  const uint64_t guest = gc * cs_;
  switch (m.type) {
    case ClusterType::kNormal:
    case ClusterType::kZeroAlloc:
      if (m.host() % cs_ != 0)
        return error(mark_corrupt(fmt::format("L2 entry {:#x} for guest offset {:#x} has a misaligned host offset",
                                              m.entry, guest)));
      if (m.type == ClusterType::kNormal && m.host() == 0 && !has_external_data())
        return error(mark_corrupt(fmt::format("L2 entry {:#x} for guest offset {:#x} points at the header",
                                              m.entry, guest)));
      if (has_external_data() && m.host() != guest && header_.data_file_raw())
        return error(mark_corrupt(fmt::format("L2 entry {:#x} for guest offset {:#x} does not match the raw data file",
                                              m.entry, guest)));
      break;
    case ClusterType::kCompressed:
      if (has_external_data())
        return error(mark_corrupt(fmt::format("compressed cluster at guest offset {:#x} in an image with a data file", guest)));
      if (ext_l2_ && m.bitmap != 0)
        return error(mark_corrupt(fmt::format("compressed cluster at guest offset {:#x} has a subcluster bitmap {:#x}",
                                              guest, m.bitmap)));
      break;
    default:
      break;
  }
  if (header_.version < 3 && m.type != ClusterType::kCompressed && (m.entry & kZeroFlag))
    return error(mark_corrupt(fmt::format("zero cluster entry at guest offset {:#x} in a version 2 image", guest)));
  if (ext_l2_ && m.type != ClusterType::kCompressed) {
    uint64_t alloc = m.bitmap & kAllAllocated, zero = m.bitmap >> 32;
    if (alloc & zero)
      return error(mark_corrupt(fmt::format("subcluster bitmap {:#x} at guest offset {:#x} is both allocated and zero",
                                            m.bitmap, guest)));
    if (alloc && m.type == ClusterType::kUnallocated)
      return error(mark_corrupt(fmt::format("subcluster bitmap {:#x} at guest offset {:#x} has no host cluster",
                                            m.bitmap, guest)));
  }
  return m;
}

Result<L2Ref> Qcow2Image::writable_l2(uint64_t gc) {
  uint64_t l1i = gc / l2_entries_;
  if (l1i >= l1_.size()) return error(invalid(fmt::format("guest cluster {} is beyond the L1 table", gc)));
  uint64_t e = l1_[l1i];
  uint64_t off = e & kOffsetMask;
  if (off && (e & kCopied)) return load_l2(off);
  KEEL_ASSIGN(uint64_t noff, alloc_clusters(1, "L2 table"));
  auto t = std::make_shared<L2Table>();
  meta_map_.add(MetaKind::kActiveL2, noff, cs_);
  if (off) {
    meta_map_.remove(MetaKind::kActiveL2, off, cs_);
    KEEL_ASSIGN(L2Ref old, load_l2(off));
    t->words = old->words;  // copy-on-write of a shared table: references stay counted
    defer_free(off);
  } else {
    l2_cache_.recycle_into(t->words);
    t->words.assign(cs_ / 8, 0);
  }
  t->fresh = true;
  if (auto it = l2_loading_.find(noff); it != l2_loading_.end()) it->second = true;
  L2Ref p = l2_cache_.insert(noff, std::move(t));
  l2_cache_.mark_all_dirty(*p);
  p->fresh = true;
  l1_[l1i] = noff | kCopied;
  l1_dirty_.insert(l1i);
  return p;
}

void Qcow2Image::set_l2(L2Table* t, uint64_t gc, uint64_t entry, uint64_t bitmap) {
  uint64_t l2i = gc % l2_entries_;
  t->words[l2i * l2_words_] = entry;
  if (ext_l2_) t->words[l2i * 2 + 1] = bitmap;
  l2_cache_.mark_dirty(*t, l2i * l2_words_ * 8, l2_words_ * 8);
}

Result<RefBlockRef> Qcow2Image::load_refblock(uint64_t rt, bool create) {
  for (int attempt = 0; attempt < 3; ++attempt) {
    uint64_t off = rt < reftable_.size() ? (reftable_[rt] & ~kReftableReserved) : 0;
    if (off) {
      if (RefBlockRef b = rb_cache_.find(rt)) return b;
      notify(Event::kRefblockLoad);
      auto b = std::make_shared<RefBlock>();
      rb_cache_.recycle_into(b->bytes);
      b->bytes.resize(cs_);
      KEEL_TRY_R(file_->read_at(off, b->bytes));
      return rb_cache_.insert(rt, std::move(b));
    }
    if (!create) return RefBlockRef();
    KEEL_TRY_R(create_refblock(rt));
  }
  return error(corrupt(fmt::format("could not create refcount block {}", rt)));
}

Result<uint64_t> Qcow2Image::get_refcount(uint64_t ci) {
  KEEL_ASSIGN(RefBlockRef b, load_refblock(ci / rb_entries_, false));
  if (!b) return uint64_t{0};
  return format::get_refcount(b->bytes, ci % rb_entries_, rc_bits_);
}

Status Qcow2Image::change_refcount(uint64_t ci, int64_t delta) {
  // A decrement needs no new refcount block: a cluster no block covers has refcount 0.
  KEEL_ASSIGN(RefBlockRef b, load_refblock(ci / rb_entries_, delta > 0));
  uint64_t v = b ? format::get_refcount(b->bytes, ci % rb_entries_, rc_bits_) : 0;
  if (delta < 0 && v < uint64_t(-delta))
    return mark_corrupt(fmt::format("refcount of cluster {} would drop below zero (is {})", ci, v));
  if (delta > 0 && refcount_max(rc_bits_) - v < uint64_t(delta))
    return invalid(fmt::format("refcount of cluster {} would overflow {} bits", ci, rc_bits_));
  if (!b) return Status::ok();  // delta 0 on an uncovered cluster
  uint64_t nv = v + delta;
  format::set_refcount(b->bytes, ci % rb_entries_, rc_bits_, nv);
  const uint64_t bit = (ci % rb_entries_) * rc_bits_;
  rb_cache_.mark_dirty(*b, bit / 8, std::max<uint64_t>(1, rc_bits_ / 8));
  if (nv == 0 && ci < free_hint_) free_hint_ = ci;
  // A freed cluster may next be handed out for normal data: compressed packing must not
  // continue into it (that would share a COPIED data cluster and overwrite its bytes).
  if (nv == 0 && compressed_cursor_ % cs_ != 0 && compressed_cursor_ / cs_ == ci) compressed_cursor_ = 0;
  return Status::ok();
}

Result<uint64_t> Qcow2Image::alloc_clusters(uint64_t count, const char* what) {
  const uint64_t max_cluster = limits::kMaxHostOffset / cs_;
  // A restart follows the creation of refcount blocks (or a larger refcount table) for the run
  // found; a long run may need several, so the bound grows with the number of ranges it spans.
  const uint64_t max_restarts = 8 + 2 * (count / rb_entries_ + 1);
  for (uint64_t restart = 0; restart < max_restarts; ++restart) {
    uint64_t start = free_hint_, run = 0;
    for (uint64_t i = free_hint_;; ++i) {
      if (i + count > max_cluster) return error(io_error(ENOSPC, "qcow2 host offsets exhausted"));
      KEEL_ASSIGN(uint64_t rc, get_refcount(i));
      if (rc == 0) {
        if (run == 0) start = i;
        if (++run == count) break;
      } else {
        run = 0;
        // Every cluster below free_hint_ is in use: step over the used ones at its front, or
        // each allocation would rescan the whole image.
        if (i == free_hint_) free_hint_ = i + 1;
      }
    }
    // Make sure refcount blocks exist; creating one may take clusters from the run.
    bool retry = false;
    for (uint64_t rt = start / rb_entries_; rt <= (start + count - 1) / rb_entries_; ++rt) {
      if (rt >= reftable_.size() || (reftable_[rt] & ~kReftableReserved) == 0) {
        KEEL_TRY_R(create_refblock(rt));
        retry = true;
      }
    }
    if (retry) continue;
    KEEL_TRY_R(alloc_guard(start, count, what));
    for (uint64_t i = start; i < start + count; ++i) KEEL_TRY_R(change_refcount(i, +1));
    if (start == free_hint_) free_hint_ = start + count;
    last_alloc_fresh_ = start * cs_ >= zero_from_;
    zero_from_ = std::max(zero_from_, (start + count) * cs_);
    notify(Event::kClusterAlloc);
    return start * cs_;
  }
  return error(corrupt("cluster allocation did not converge"));
}

Result<uint64_t> Qcow2Image::alloc_bytes(uint64_t bytes) {
  uint64_t used = compressed_cursor_ % cs_;
  bool full = false;
  if (compressed_cursor_ != 0 && used != 0 && used + bytes <= cs_) {
    KEEL_ASSIGN(uint64_t rc, get_refcount(compressed_cursor_ / cs_));
    full = rc >= refcount_max(rc_bits_);  // narrow refcounts: start a new cluster
  }
  if (compressed_cursor_ == 0 || used == 0 || used + bytes > cs_ || full) {
    KEEL_ASSIGN(uint64_t off, alloc_clusters(1));
    compressed_cursor_ = off;
  } else {
    KEEL_TRY_R(change_refcount(compressed_cursor_ / cs_, +1));
  }
  uint64_t at = compressed_cursor_;
  compressed_cursor_ += bytes;
  return at;
}

Result<std::optional<uint64_t>> Qcow2Image::free_covered_cluster() {
  const uint64_t covered_end = reftable_.size() * rb_entries_;
  for (uint64_t i = free_hint_; i < covered_end;) {
    const uint64_t rt = i / rb_entries_;
    if ((reftable_[rt] & ~kReftableReserved) == 0) {
      i = (rt + 1) * rb_entries_;
      continue;
    }
    KEEL_ASSIGN(uint64_t rc, get_refcount(i));
    if (rc == 0) return std::optional<uint64_t>(i);
    ++i;
  }
  return std::optional<uint64_t>();
}

Status Qcow2Image::create_refblock(uint64_t rt) {
  if (rt >= reftable_.size()) return grow_reftable(rt);
  // On a sound image every metadata cluster has a refcount, so a range without a refcount block
  // holds none: a new (empty) block for a range that does would declare that metadata free.
  KEEL_TRY(overlap_guard(rt * rb_entries_ * cs_, rb_entries_ * cs_, 0));
  // Like QEMU, the block goes into the lowest free cluster that an existing block already
  // covers; that block, with the new block's refcount, is written and synced before the link.
  // Only when no covered cluster is free does the block describe itself, in the first cluster
  // of its own (empty) range. (Self-placing every block would split each free run at every
  // range boundary, so a run longer than one range could never be allocated.)
  KEEL_ASSIGN(std::optional<uint64_t> covered, free_covered_cluster());
  auto b = std::make_shared<RefBlock>();
  b->bytes.assign(cs_, 0);
  uint64_t off = rt * rb_entries_ * cs_;
  notify(Event::kRefblockAlloc);
  KEEL_TRY(alloc_guard(covered ? *covered : off / cs_, 1, "refcount block"));
  if (covered) {
    off = *covered * cs_;
    KEEL_TRY(change_refcount(*covered, +1));
    const uint64_t holder_rt = *covered / rb_entries_;
    KEEL_ASSIGN(RefBlockRef holder, load_refblock(holder_rt, false));
    KEEL_TRY(metadata_write(reftable_[holder_rt] & ~kReftableReserved, holder->bytes, "refblock"));
    rb_cache_.mark_clean(*holder);
  } else {
    format::set_refcount(b->bytes, 0, rc_bits_, 1);
  }
  KEEL_TRY(metadata_write(off, b->bytes, "refblock"));
  KEEL_TRY(latch(file_->sync()));
  uint8_t e[8];
  put_be64(e, off);
  notify(Event::kReftableUpdate);
  KEEL_TRY(metadata_write(header_.refcount_table_offset + rt * 8, e, "reftable"));
  KEEL_TRY(latch(file_->sync()));
  reftable_[rt] = off;
  meta_map_.add(MetaKind::kRefcountBlock, off, cs_);
  rb_cache_.insert(rt, std::move(b));
  return Status::ok();
}

Status Qcow2Image::grow_reftable(uint64_t needed) {
  const uint64_t per_cluster = cs_ / 8;
  const uint64_t old_n = reftable_.size();
  // A corrupt entry can name a cluster near 2^56: refuse before sizing a table for it.
  if (needed >= limits::kMaxReftableBytes / 8)
    return io_error(ENOSPC, fmt::format("refcount table would exceed {} bytes", limits::kMaxReftableBytes));
  uint64_t want = std::max<uint64_t>(needed + 1, old_n + old_n / 2);
  want = (want + per_cluster - 1) / per_cluster * per_cluster;
  const uint64_t area = old_n * rb_entries_;  // first cluster no refcount block covers
  uint64_t m = 1, rt_clusters = 0;
  for (int i = 0; i < 64; ++i) {
    rt_clusters = want / per_cluster;
    m = 1;
    while (m * rb_entries_ < m + rt_clusters) ++m;
    uint64_t last = area + m + rt_clusters - 1;
    if (last / rb_entries_ < want) break;
    want += per_cluster;
  }
  if (want * 8 > limits::kMaxReftableBytes)
    return io_error(ENOSPC, fmt::format("refcount table would exceed {} bytes", limits::kMaxReftableBytes));
  std::vector<uint64_t> table = reftable_;
  table.resize(want, 0);
  std::vector<RefBlockRef> blocks;
  for (uint64_t j = 0; j < m; ++j) {
    table[old_n + j] = (area + j) * cs_;
    auto b = std::make_shared<RefBlock>();
    b->bytes.assign(cs_, 0);
    blocks.push_back(std::move(b));
  }
  // Every cluster of the new area (blocks + table) gets refcount 1 in the block covering it.
  for (uint64_t c = area; c < area + m + rt_clusters; ++c)
    format::set_refcount(blocks[(c - area) / rb_entries_]->bytes, (c - area) % rb_entries_, rc_bits_, 1);
  KEEL_TRY(alloc_guard(area, m + rt_clusters, "refcount block"));
  notify(Event::kReftableGrow);
  for (uint64_t j = 0; j < m; ++j) KEEL_TRY(metadata_write((area + j) * cs_, blocks[j]->bytes, "refblock"));
  std::vector<uint8_t> tb(want * 8);
  for (uint64_t i = 0; i < want; ++i) put_be64(&tb[i * 8], table[i]);
  const uint64_t new_off = (area + m) * cs_;
  KEEL_TRY(metadata_write(new_off, tb, "reftable"));
  KEEL_TRY(latch(file_->sync()));
  uint8_t hb[12];
  put_be64(hb, new_off);
  put_be32(hb + 8, static_cast<uint32_t>(rt_clusters));
  KEEL_TRY(write_header_field(kOffsetReftable, hb));
  KEEL_TRY(latch(file_->sync()));
  const uint64_t old_off = header_.refcount_table_offset;
  const uint64_t old_clusters = header_.refcount_table_clusters;
  header_.refcount_table_offset = new_off;
  header_.refcount_table_clusters = static_cast<uint32_t>(rt_clusters);
  meta_map_.remove(MetaKind::kRefcountTable, old_off, reftable_.size() * 8);
  meta_map_.add(MetaKind::kRefcountTable, new_off, want * 8);
  reftable_ = std::move(table);
  for (uint64_t j = 0; j < m; ++j) {
    meta_map_.add(MetaKind::kRefcountBlock, (area + j) * cs_, cs_);
    rb_cache_.insert(old_n + j, std::move(blocks[j]));
  }
  // The switch is durable, so the old table's clusters can be freed at once.
  for (uint64_t c = 0; c < old_clusters; ++c) KEEL_TRY(change_refcount(old_off / cs_ + c, -1));
  return Status::ok();
}

void Qcow2Image::defer_free(uint64_t entry) { pending_free_.push_back(entry); }

Status Qcow2Image::write_l2_table(uint64_t offset, const L2Table& t) {
  std::vector<uint8_t> b(cs_);
  for (size_t i = 0; i < t.words.size(); ++i) put_be64(&b[i * 8], t.words[i]);
  return write_table_sectors(offset, t, b, "l2");
}

Status Qcow2Image::write_table_sectors(uint64_t offset, const CachedTableState& t, std::span<const uint8_t> bytes,
                                       const char* what) {
  if (t.fresh) return metadata_write(offset, bytes, what);
  // Only the sectors that changed, each run widened to the file's alignment (O_DIRECT would
  // otherwise read-modify-write); the bytes around a change are what the file already holds.
  const uint64_t align = std::max<uint64_t>(512, file_->alignment());
  uint64_t done_to = 0;
  for (auto [first, end] : TableCache<L2Table>::dirty_runs(t, cs_)) {
    first = std::max(first / align * align, done_to);
    end = std::min<uint64_t>((end + align - 1) / align * align, cs_);
    if (first >= end) continue;
    KEEL_TRY(metadata_write(offset + first, bytes.subspan(first, end - first), what));
    done_to = end;
  }
  return Status::ok();
}

Status Qcow2Image::sync_file(BlockFile& f, std::unique_lock<std::mutex>* lk) {
  if (lk) lk->unlock();
  Status st = f.sync();
  if (lk) lk->lock();
  return latch(st);
}

Status Qcow2Image::flush_metadata(std::unique_lock<std::mutex>* lk) {
  // REQUIRES: gate_ exclusive, flush_mu_ held, mu_ held (see the header for `lk`).
  if (latched_) return Status(Code::kReadOnly, "image is read-only after an error: " + latch_reason_, EIO);
  // Phase 1: refcounts and unlinked L2 tables, then one sync that also covers guest data.
  KEEL_TRY(write_dirty_refblocks());
  bool fresh_any = false;
  Status st;
  l2_cache_.for_each([&](uint64_t off, L2Table& t) {
    if (!st.is_ok() || !t.fresh || !t.dirty) return;
    if (!fresh_any) notify(Event::kL2Alloc);
    fresh_any = true;
    st = write_l2_table(off, t);
    if (st.is_ok()) {
      l2_cache_.mark_clean(t);
      t.fresh = true;  // its link is not durable until phase 2
    }
  });
  KEEL_TRY(st);
  notify(Event::kFlushData);
  if (data_ != file_.get()) KEEL_TRY(sync_file(*data_, lk));
  KEEL_TRY(sync_file(*file_, lk));
  freed_unsynced_ = false;

  // Phase 2: links — changed L2 tables and L1 entries.
  bool linked = false;
  l2_cache_.for_each([&](uint64_t off, L2Table& t) {
    if (!st.is_ok() || t.fresh || !t.dirty) return;
    if (!linked) notify(Event::kL2Update);
    linked = true;
    st = write_l2_table(off, t);
    if (st.is_ok()) l2_cache_.mark_clean(t);
  });
  KEEL_TRY(st);
  if (!l1_dirty_.empty()) {
    notify(Event::kL1Update);
    linked = true;
    std::set<uint64_t> sectors;
    for (uint64_t i : l1_dirty_) sectors.insert(i * 8 / 512);
    for (uint64_t s : sectors) {
      uint64_t first = s * 64, last = std::min<uint64_t>(first + 64, l1_.size());
      std::vector<uint8_t> b((last - first) * 8);
      for (uint64_t i = first; i < last; ++i) put_be64(&b[(i - first) * 8], l1_[i]);
      KEEL_TRY(metadata_write(l1_offset_ + first * 8, b, "l1"));
    }
    l1_dirty_.clear();
  }
  if (linked) {
    notify(Event::kFlushMeta);
    KEEL_TRY(sync_file(*file_, lk));
  }
  l2_cache_.for_each([](uint64_t, L2Table& t) { t.fresh = false; });

  // Phase 3: the unlinks are durable; drop the references (written by the next phase 1).
  // In-place overwrites must be done with any cluster freed here before it can be reused.
  std::optional<ExclusiveGate> quiet;
  if (lk && !pending_free_.empty()) {
    lk->unlock();
    quiet.emplace(data_gate_);
    lk->lock();
  }
  if (!pending_free_.empty()) notify(Event::kClusterFree);
  std::vector<uint64_t> frees;
  frees.swap(pending_free_);
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

Status Qcow2Image::write_dirty_refblocks() {
  bool announced = false;
  Status st;
  rb_cache_.for_each([&](uint64_t rt, RefBlock& b) {
    if (!st.is_ok() || !b.dirty) return;
    if (!announced) notify(Event::kRefblockUpdate);
    announced = true;
    st = write_table_sectors(reftable_[rt] & ~kReftableReserved, b, b.bytes, "refblock");
    if (st.is_ok()) rb_cache_.mark_clean(b);
  });
  return st;
}

}  // namespace keel
