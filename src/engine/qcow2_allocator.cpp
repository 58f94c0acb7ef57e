// The allocator: refcounts (cached refcount blocks), runs of free host clusters, packed bytes
// for compressed clusters, and the rare refcount-structure growth (a new refcount block, a
// larger refcount table), each synced on the spot before anything links it.
#include <fmt/format.h>

#include <algorithm>
#include <optional>

#include "engine/qcow2_image.h"
#include "format/endian.h"
#include "keel/limits.h"

namespace keel {

using namespace format;

Result<RefBlockRef> Qcow2Image::load_refblock(uint64_t rt, bool create) {
  for (int attempt = 0; attempt < 3; ++attempt) {
    uint64_t off = rt < reftable_.size() ? (reftable_[rt] & ~kReftableReserved) : 0;
    if (off) {
      if (RefBlockRef b = rb_cache_.find(rt)) return b;
      // QEMU's text (qcow2_get_refcount: printf's %#x prints 0 as "0"); the image latches.
      if (off % cs_ != 0)
        return error(mark_corrupt(fmt::format("Refblock offset {:#x} unaligned (reftable index: {})", off,
                                              rt ? fmt::format("{:#x}", rt) : "0")));
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

}  // namespace keel
