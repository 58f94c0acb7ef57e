// keel check: L1 and L2 tables (active and snapshots), the data clusters they reference, and the
// COPIED flags of the active tables.
//
// Every distinct L2 table is read once, in host-offset order; its references count as many times
// as L1 entries point at it (a table shared by the active L1 and a snapshot holds each of its data
// clusters twice). That bounds the work by the file size even for hostile L1 tables.
#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "check/checker.h"
#include "format/endian.h"
#include "format/tables.h"
#include "keel/limits.h"

namespace keel::check {

using namespace format;

namespace {
constexpr uint64_t kMaxBatchBytes = 1ull << 20;  // ours: L2 tables read per request

std::string exceeding(uint64_t offset, uint64_t size) {
  return fmt::format(
      "ERROR: counting reference for region exceeding the end of the file by one cluster or more: "
      "offset 0x{:x} size 0x{:x}",
      offset, size);
}
}  // namespace

Status Checker::load_active_l1() {
  uint64_t bytes = uint64_t(h_.l1_size) * 8;
  if (bytes == 0) return Status::ok();
  if (!g_.range_in_file(h_.l1_table_offset, bytes)) {
    // What lies past the end reads as zeros (unallocated). A repair writes the table anew.
    corruption(exceeding(h_.l1_table_offset, bytes));
    if (fixing()) {
      report(fmt::format("Repairing: the active L1 table at offset 0x{:x} is outside image; it will be rewritten",
                         h_.l1_table_offset));
      relocate_l1_ = true;
    }
  } else if (Owner o = claim(h_.l1_table_offset, bytes, Owner::kActiveL1); o != Owner::kNone) {
    corruption(fmt::format("ERROR active L1 table at offset 0x{:x} overlaps the {}", h_.l1_table_offset,
                           owner_name(o)));
  }
  std::vector<uint8_t> buf(bytes);
  KEEL_TRY(read(h_.l1_table_offset, buf));
  active_l1_.resize(h_.l1_size);
  for (uint64_t i = 0; i < h_.l1_size; ++i) active_l1_[i] = get_be64(&buf[i * 8]);
  return Status::ok();
}

Status Checker::walk_l1_table(std::vector<uint64_t>& l1, bool active, const std::string& where,
                              uint64_t l1_offset) {
  const uint64_t cs = g_.cluster_size;
  const uint64_t span = g_.l2_entries * cs;  // guest bytes behind one L1 entry
  bool dirty = false;
  for (uint64_t j = 0; j < l1.size(); ++j) {
    uint64_t e = l1[j];
    if (e == 0) continue;
    if (e & kL1Reserved) {
      corruption(fmt::format("{} found L1 entry with reserved bits set: {:x}", fix_prefix(), e));
      if (fixing()) {
        e &= ~kL1Reserved;
        l1[j] = e;
        dirty = true;
      }
    }
    uint64_t l2 = e & kOffsetMask;
    if (l2 == 0) {
      if (e != 0) {
        corruption(fmt::format("{} L1 entry {} of the {} has no L2 table but flags {:x}", fix_prefix(), j, where, e));
        if (fixing()) {
          l1[j] = 0;
          dirty = true;
        }
      }
      continue;
    }
    uint64_t c = g_.cluster_of(l2);
    std::string problem;
    bool in_file = g_.range_in_file(l2, cs);
    if (l2 % cs) {
      problem = fmt::format("ERROR l2_offset={:x}: Table is not cluster aligned; L1 entry corrupted", l2);
    } else if (!in_file) {
      problem = exceeding(l2, cs);
    } else if (std::binary_search(not_l2_.begin(), not_l2_.end(), c)) {
      problem = fmt::format("ERROR L1 entry {} of the {} points at offset 0x{:x}, which is guest data of other L2 "
                            "entries, not an L2 table", j, where, l2);
    } else if (Owner o = map_.owner(c); o != Owner::kNone && o != Owner::kL2) {
      problem = fmt::format("ERROR L1 entry {} of the {} points at offset 0x{:x}, which is the {}", j, where, l2,
                            owner_name(o));
    } else if (map_.count(c) >= g_.refcount_max) {
      problem = fmt::format("ERROR: overflow cluster offset=0x{:x}", l2);
    }
    if (!problem.empty()) {
      corruption(problem);
      if (in_file && c < g_.slots) map_.mark_hit_by_invalid(c);
      if (fixing()) {
        l1[j] = 0;
        dirty = true;
        if (active) note_dropped(j * span, span);
        else report(fmt::format("Repairing: dropped L1 entry {} of the {}", j, where));
      }
      continue;
    }
    map_.set_owner(c, Owner::kL2);
    map_.add(c, 1);
    if (active) {
      active_l2_index_.emplace_back(c, static_cast<int64_t>(j));
      if (mode_ != Mode::kAll && (ondisk_.get(c) == 1) != bool(e & kCopied)) {
        ++copied_errors_;
        corruption(fmt::format("ERROR OFLAG_COPIED L2 cluster: l1_index={} l1_entry={:x} refcount={}", j, e,
                               ondisk_.get(c)));
      }
    }
  }
  if (dirty && fixing() && !(active && relocate_l1_)) {
    std::vector<uint8_t> buf(l1.size() * 8);
    for (uint64_t j = 0; j < l1.size(); ++j) put_be64(&buf[j * 8], l1[j]);
    defer_write(l1_offset, std::move(buf));
  }
  return Status::ok();
}

Status Checker::walk_l1_tables() {
  KEEL_TRY(walk_l1_table(active_l1_, true, "active L1 table", h_.l1_table_offset));
  for (const auto& s : snapshots_) {
    if (!s.walk || s.entry.l1_size == 0) continue;
    std::vector<uint8_t> buf(uint64_t(s.entry.l1_size) * 8);
    KEEL_TRY(read(s.entry.l1_table_offset, buf));
    std::vector<uint64_t> l1(s.entry.l1_size);
    for (uint64_t i = 0; i < l1.size(); ++i) l1[i] = get_be64(&buf[i * 8]);
    std::string where = fmt::format("L1 table of snapshot {} ({})", s.entry.id, s.entry.name);
    KEEL_TRY(walk_l1_table(l1, false, where, s.entry.l1_table_offset));
  }
  return Status::ok();
}

void Checker::collect_l2_records() {
  std::sort(active_l2_index_.begin(), active_l2_index_.end());
  l2s_.clear();
  size_t a = 0;
  for (uint64_t c = 0; c < g_.slots; ++c) {
    if (map_.owner(c) != Owner::kL2) continue;
    L2Record r;
    r.cluster = c;
    r.refs = map_.count(c);
    while (a < active_l2_index_.size() && active_l2_index_[a].first < c) ++a;
    for (size_t k = a; k < active_l2_index_.size() && active_l2_index_[k].first == c; ++k) {
      if (r.active_index < 0) r.active_index = active_l2_index_[k].second;
      ++r.active_refs;
    }
    l2s_.push_back(r);
  }
}

Status Checker::scan_l2_tables() {
  const uint64_t cs = g_.cluster_size;
  std::vector<uint8_t> buf;
  size_t i = 0;
  while (i < l2s_.size()) {
    // A run of L2 tables in consecutive clusters is read with one request.
    size_t j = i + 1;
    while (j < l2s_.size() && l2s_[j].cluster == l2s_[j - 1].cluster + 1 && (j - i + 1) * cs <= kMaxBatchBytes) ++j;
    buf.resize((j - i) * cs);
    KEEL_TRY(read(g_.offset_of(l2s_[i].cluster), buf));
    for (size_t k = i; k < j; ++k)
      KEEL_TRY(scan_l2_table(l2s_[k], std::span<uint8_t>(buf).subspan((k - i) * cs, cs)));
    i = j;
    progress(5.0 + 85.0 * static_cast<double>(i) / static_cast<double>(l2s_.size()));
  }
  // A mostly-invalid "L2 table" that sound L2 tables use as guest data is data: the L1 entries
  // pointing at it are the damage. Analyze again with it excluded (once).
  std::sort(suspicious_l2_.begin(), suspicious_l2_.end());
  auto suspicious = [&](uint64_t c) { return std::binary_search(suspicious_l2_.begin(), suspicious_l2_.end(), c); };
  std::vector<uint64_t> data_clusters;
  for (const auto& [src, target] : data_hits_l2_)
    if (!suspicious(src) && suspicious(target)) data_clusters.push_back(target);
  if (!data_clusters.empty() && not_l2_.empty()) {
    std::sort(data_clusters.begin(), data_clusters.end());
    data_clusters.erase(std::unique(data_clusters.begin(), data_clusters.end()), data_clusters.end());
    not_l2_ = std::move(data_clusters);
    restart_ = true;
  }
  return Status::ok();
}

Status Checker::scan_l2_table(const L2Record& r, std::span<uint8_t> table) {
  const uint64_t cs = g_.cluster_size;
  const bool active = r.active_refs > 0;
  const bool check_copied = active && mode_ != Mode::kAll;
  uint64_t next_contiguous = 0;
  bool dirty = false;
  uint64_t nonzero = 0;
  const uint64_t corruptions_before = res_.corruptions, copied_before = copied_errors_;
  for (uint64_t i = 0; i < g_.l2_entries; ++i) {
    uint8_t* p = &table[i * g_.l2_entry_bytes];
    {  // Fast path: unallocated entries (most of a sparse image) need no decoding.
      uint64_t w0, w1 = 0;
      std::memcpy(&w0, p, 8);
      if (g_.ext_l2) std::memcpy(&w1, p + 8, 8);
      if ((w0 | w1) == 0) continue;
    }
    ++nonzero;
    uint64_t e = get_be64(p), bm = g_.ext_l2 ? get_be64(p + 8) : 0;
    const uint64_t old_e = e, old_bm = bm;
    const uint64_t guest = r.active_index >= 0 ? (uint64_t(r.active_index) * g_.l2_entries + i) * cs : UINT64_MAX;
    auto drop_data = [&](uint64_t keep_bitmap) {
      e = 0;
      bm = keep_bitmap;
      if (guest != UINT64_MAX) note_dropped(guest, cs);
    };

    if (e & kCompressed) {
      if (active) {
        res_.allocated_clusters += r.active_refs;
        res_.compressed_clusters += r.active_refs;
        res_.fragmented_clusters += r.active_refs;
      }
      if (e & kCopied) {
        corruption(fmt::format("{}: coffset=0x{:x}: copied flag must never be set for compressed clusters",
                               fix_prefix(), decode_compressed(e & ~kCopied, g_.cluster_bits).host_offset));
        if (fixing()) e &= ~kCopied;
      }
      if (g_.data_file) {
        corruption(fmt::format("ERROR compressed cluster {} with data file, entry=0x{:x}", i, e));
        if (fixing()) drop_data(0);
        goto store;
      }
      if (bm) {
        corruption(fmt::format("{} compressed cluster {} with non-zero subcluster allocation bitmap, entry=0x{:x}",
                               fix_prefix(), i, e));
        if (fixing()) bm = 0;
      }
      {
        CompressedDescriptor d = decode_compressed(e & ~kCopied, g_.cluster_bits);
        std::string problem;
        bool in_file = g_.range_in_file(d.host_offset, d.size);
        if (!in_file) {
          problem = exceeding(d.host_offset, d.size);
        } else if (Owner o = owner_of_range(d.host_offset, d.size); o != Owner::kNone) {
          problem = fmt::format("ERROR compressed cluster at coffset=0x{:x} overlaps the {}", d.host_offset,
                                owner_name(o));
        } else {
          for (uint64_t c = g_.cluster_of(d.host_offset); c <= g_.cluster_of(d.host_offset + d.size - 1); ++c)
            if (map_.count(c) + r.refs > g_.refcount_max) problem = fmt::format("ERROR: overflow cluster offset=0x{:x}", g_.offset_of(c));
        }
        if (!problem.empty()) {
          corruption(problem);
          if (in_file)
            for (uint64_t c = g_.cluster_of(d.host_offset); c <= g_.cluster_of(d.host_offset + d.size - 1); ++c)
              map_.mark_hit_by_invalid(c);
          if (fixing()) drop_data(0);
          goto store;
        }
        for (uint64_t c = g_.cluster_of(d.host_offset); c <= g_.cluster_of(d.host_offset + d.size - 1); ++c)
          map_.add(c, r.refs);
      }
      goto store;
    }

    if (e & kL2Reserved) {
      corruption(fmt::format("{} found l2 entry with reserved bits set: {:x}", fix_prefix(), e));
      if (fixing()) e &= ~kL2Reserved;
    }
    {
      const bool zero_flag = !g_.ext_l2 && (e & kZeroFlag);
      const uint64_t off = e & kOffsetMask;
      if (zero_flag && g_.version < 3) {
        corruption(fmt::format("{} zero cluster flag in a version 2 image: L2 entry {:x} (L2 table 0x{:x} index {})",
                               fix_prefix(), e, g_.offset_of(r.cluster), i));
        if (fixing()) {
          e = 0;  // reads as zeros, or from the backing file
          if (off && guest != UINT64_MAX && !h_.backing_file.empty()) note_dropped(guest, cs);
        }
        goto store;
      }
      const bool allocated = off != 0 || (g_.data_file && (e & kCopied));
      if (!allocated) {
        if (bm & kAllAllocated) {
          corruption(fmt::format("{}: Unallocated cluster has non-zero subcluster allocation map", fix_prefix()));
          if (fixing()) bm &= ~kAllAllocated;
        }
        goto store;
      }
      if (g_.ext_l2 && ((bm >> 32) & bm & kAllAllocated)) {
        corruption(fmt::format("{} offset={:x}: Allocated cluster has corrupted subcluster allocation bitmap",
                               fix_prefix(), off));
        if (fixing()) bm &= ~((bm & kAllAllocated) << 32);  // keep the data, drop the zero flag
      }
      if (active) {
        res_.allocated_clusters += r.active_refs;
        if (next_contiguous && off != next_contiguous) res_.fragmented_clusters += r.active_refs;
        next_contiguous = off + cs;
      }
      const bool has_data = g_.ext_l2 ? (bm & kAllAllocated) != 0 : !zero_flag;
      // A bad entry that holds no data (preallocated zero) becomes a plain zero entry: the guest
      // sees the same zeros. One that holds data is dropped, and the loss reported.
      auto drop = [&] {
        if (!has_data) {
          if (g_.ext_l2) { e = 0; bm &= kAllZero; }
          else e = g_.version >= 3 ? kZeroFlag : 0;
        } else {
          drop_data(bm & kAllZero);
        }
      };
      if (g_.data_file) {
        if (off % cs) {
          corruption(fmt::format("ERROR offset={:x}: Data cluster is not properly aligned; L2 entry corrupted.", off));
          if (fixing()) drop();
        } else if (check_copied && !(e & kCopied)) {
          ++copied_errors_;
          corruption(fmt::format("ERROR OFLAG_COPIED data cluster: l2_entry={:x} refcount=1", e));
        }
        goto store;
      }
      std::string problem;
      const uint64_t c = g_.cluster_of(off);
      const bool in_file = g_.range_in_file(off, cs);
      if (off % cs) {
        problem = has_data ? fmt::format("ERROR offset={:x}: Data cluster is not properly aligned; L2 entry corrupted.", off)
                           : fmt::format("{} offset={:x}: Preallocated cluster is not properly aligned; L2 entry "
                                         "corrupted.", fix_prefix(), off);
      } else if (!in_file) {
        problem = exceeding(off, cs);
      } else if (Owner o = map_.owner(c); o != Owner::kNone) {
        problem = fmt::format("ERROR data cluster at offset 0x{:x} (L2 table 0x{:x} index {}) is the {}", off,
                              g_.offset_of(r.cluster), i, owner_name(o));
        if (o == Owner::kL2) data_hits_l2_.emplace_back(r.cluster, c);
      } else if (map_.count(c) + r.refs > g_.refcount_max) {
        problem = fmt::format("ERROR: overflow cluster offset=0x{:x}", off);
      }
      if (!problem.empty()) {
        corruption(problem);
        if (in_file) {
          map_.mark_hit_by_invalid(c);
          if ((off % cs) && c + 1 < g_.slots) map_.mark_hit_by_invalid(c + 1);
        }
        if (fixing()) drop();
        goto store;
      }
      map_.add(c, r.refs);
      if (check_copied && (ondisk_.get(c) == 1) != bool(e & kCopied)) {
        ++copied_errors_;
        corruption(fmt::format("ERROR OFLAG_COPIED data cluster: l2_entry={:x} refcount={}", e, ondisk_.get(c)));
      }
    }
  store:
    if (fixing() && (e != old_e || bm != old_bm)) {
      put_be64(p, e);
      if (g_.ext_l2) put_be64(p + 8, bm);
      dirty = true;
    }
  }
  // Most entries invalid: perhaps not an L2 table at all (see scan_l2_tables).
  const uint64_t invalid = (res_.corruptions - corruptions_before) - (copied_errors_ - copied_before);
  if (invalid > 0 && invalid * 2 > nonzero) suspicious_l2_.push_back(r.cluster);
  if (dirty) defer_write(g_.offset_of(r.cluster), std::vector<uint8_t>(table.begin(), table.end()));
  return Status::ok();
}

// Sets (set_phase) or clears the COPIED flags of the active L1 and L2 tables so that COPIED means
// "the expected refcount is 1". Clearing runs before the refcounts change, setting after.
Status Checker::fix_copied(bool set_phase) {
  auto wrong = [&](uint64_t entry, bool want) {
    bool has = entry & kCopied;
    return set_phase ? (want && !has) : (!want && has);
  };
  bool l1_dirty = false;
  for (uint64_t j = 0; j < active_l1_.size(); ++j) {
    uint64_t e = active_l1_[j], l2 = e & kOffsetMask;
    if (!l2 || l2 % g_.cluster_size || g_.cluster_of(l2) >= g_.slots) continue;
    uint64_t refs = map_.count(g_.cluster_of(l2));
    if (!wrong(e, refs == 1)) continue;
    report(fmt::format("Repairing OFLAG_COPIED L2 cluster: l1_index={} l1_entry={:x} refcount={}", j, e, refs));
    active_l1_[j] = set_phase ? e | kCopied : e & ~kCopied;
    l1_dirty = true;
    ++copied_fixed_;
  }
  if (l1_dirty && !relocate_l1_) {  // a table being relocated is written by the rebuild
    std::vector<uint8_t> buf(active_l1_.size() * 8);
    for (uint64_t j = 0; j < active_l1_.size(); ++j) put_be64(&buf[j * 8], active_l1_[j]);
    KEEL_TRY(write(h_.l1_table_offset, buf));
  }
  std::vector<uint8_t> table(g_.cluster_size);
  for (const auto& r : l2s_) {
    if (r.active_refs == 0) continue;
    KEEL_TRY(read(g_.offset_of(r.cluster), table));
    bool dirty = false;
    for (uint64_t i = 0; i < g_.l2_entries; ++i) {
      uint8_t* p = &table[i * g_.l2_entry_bytes];
      uint64_t e = get_be64(p);
      if (e & kCompressed) continue;
      uint64_t off = e & kOffsetMask;
      bool allocated = off != 0 || (g_.data_file && (e & kCopied));
      if (!allocated || (!g_.ext_l2 && (e & kZeroFlag) && g_.version < 3)) continue;
      uint64_t refs;
      if (g_.data_file) {
        refs = 1;
      } else {
        if (off % g_.cluster_size || g_.cluster_of(off) >= g_.slots) continue;
        refs = map_.count(g_.cluster_of(off));
      }
      if (!wrong(e, refs == 1)) continue;
      report(fmt::format("Repairing OFLAG_COPIED data cluster: l2_entry={:x} refcount={}", e, refs));
      put_be64(p, set_phase ? e | kCopied : e & ~kCopied);
      dirty = true;
      ++copied_fixed_;
    }
    if (dirty) KEEL_TRY(write(g_.offset_of(r.cluster), table));
  }
  return Status::ok();
}

}  // namespace keel::check
