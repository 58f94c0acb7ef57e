// keel check: the refcount table and blocks as stored, their comparison with the expected counts,
// and the in-place repair of refcounts (when every block that needs a change is sound).
//
// Stored refcounts of clusters past the end of the file are not judged, as in QEMU: a crash may
// lose the growth of the file after the refcount block that describes it reached the disk.
#include <fmt/format.h>

#include "check/checker.h"
#include "format/endian.h"
#include "format/tables.h"

namespace keel::check {

using namespace format;

namespace {
constexpr uint64_t kReftableOffsetMask = ~kReftableReserved;  // bits 9-63
}  // namespace

Status Checker::load_reftable() {
  const uint64_t entries = uint64_t(h_.refcount_table_clusters) * g_.cluster_size / 8;
  const uint64_t bytes = entries * 8;
  if (entries == 0) {
    report("ERROR the image has no refcount table");
    reftable_damaged_ = true;
    return Status::ok();
  }
  if (!g_.range_in_file(h_.refcount_table_offset, bytes)) {
    corruption(fmt::format(
        "ERROR: counting reference for region exceeding the end of the file by one cluster or more: "
        "offset 0x{:x} size 0x{:x}",
        h_.refcount_table_offset, bytes));
    reftable_damaged_ = true;
  } else if (Owner o = claim(h_.refcount_table_offset, bytes, Owner::kReftable); o != Owner::kNone) {
    corruption(fmt::format("ERROR refcount table at offset 0x{:x} overlaps the {}", h_.refcount_table_offset,
                           owner_name(o)));
    reftable_damaged_ = true;
  }
  std::vector<uint8_t> buf(bytes);
  KEEL_TRY(read(h_.refcount_table_offset, buf));
  reftable_.resize(entries);
  for (uint64_t i = 0; i < entries; ++i) reftable_[i] = get_be64(&buf[i * 8]);
  return Status::ok();
}

Status Checker::claim_refblocks() {
  refblock_ok_.assign(reftable_.size(), false);
  for (uint64_t i = 0; i < reftable_.size(); ++i) {
    uint64_t e = reftable_[i];
    if (e == 0) continue;
    uint64_t off = e & kReftableOffsetMask;
    if (e & kReftableReserved) {
      corruption(fmt::format("ERROR refcount table entry {} has reserved bits set", i));
      refblocks_damaged_ = true;
      continue;
    }
    if (off % g_.cluster_size) {
      corruption(fmt::format("ERROR refcount block {} is not cluster aligned; refcount table entry corrupted", i));
      refblocks_damaged_ = true;
      continue;
    }
    uint64_t c = g_.cluster_of(off);
    if (c >= g_.file_clusters) {
      corruption(fmt::format("{} refcount block {} is outside image", fix_prefix(), i));
      refblocks_damaged_ = true;
      continue;
    }
    Owner o = map_.owner(c);
    if (o == Owner::kRefblock) {
      // Two entries share one block: it is readable, but the structure must be rebuilt.
      corruption(fmt::format("ERROR refcount block {} refcount=2", i));
      refblocks_damaged_ = true;
      refblock_ok_[i] = true;
      continue;
    }
    if (o != Owner::kNone) {
      corruption(fmt::format("ERROR refcount block {} at offset 0x{:x} overlaps the {}", i, off, owner_name(o)));
      refblocks_damaged_ = true;
      continue;
    }
    map_.set_owner(c, Owner::kRefblock);
    refblock_ok_[i] = true;
  }
  return Status::ok();
}

Status Checker::read_refcounts() {
  std::vector<uint8_t> block(g_.cluster_size);
  for (uint64_t i = 0; i < reftable_.size(); ++i) {
    if (!refblock_ok_[i]) continue;
    uint64_t first = i * g_.refblock_entries;
    if (first >= g_.slots) continue;
    KEEL_TRY(read(reftable_[i] & kReftableOffsetMask, block));
    uint64_t n = std::min(g_.refblock_entries, g_.slots - first);
    for (uint64_t j = 0; j < n; ++j) ondisk_.set(first + j, get_refcount(block, j, g_.refcount_bits));
  }
  return Status::ok();
}

// Whether a repair can fix refcounts in place or must write a new refcount structure; and
// whether QEMU would want a rebuild (for -r leaks, which refuses then, as QEMU does).
void Checker::decide_rebuild() {
  need_rebuild_ = reftable_damaged_ || refblocks_damaged_ || rewrite_snapshots_ || relocate_l1_;
  qemu_would_rebuild_ = reftable_damaged_ || refblocks_damaged_;
  for (uint64_t c = 0; c < g_.slots; ++c) {
    uint64_t want = map_.count(c), have = ondisk_.get(c);
    if (c >= g_.file_clusters && want == 0) continue;
    if (want > 0 && have == 0) qemu_would_rebuild_ = true;
    if (want != have) {
      uint64_t rt = c / g_.refblock_entries;
      if (rt >= reftable_.size() || !refblock_ok_[rt]) need_rebuild_ = true;
    }
  }
}

void Checker::compare_refcounts() {
  for (uint64_t c = 0; c < g_.slots; ++c) {
    uint64_t want = map_.count(c), have = ondisk_.get(c);
    if (c >= g_.file_clusters && want == 0) continue;
    if (want > 0 || have > 0) {
      highest_cluster_ = c;
      any_cluster_ = true;
    }
    if (want == have) continue;
    if (have < want) {
      const char* prefix = fixing() && !need_rebuild_ ? "Repairing" : "ERROR";
      corruption(fmt::format("{} cluster {} refcount={} reference={}", prefix, c, have, want));
    } else {
      bool fixed = fixing() || (mode_ == Mode::kLeaks && !qemu_would_rebuild_ && !map_.hit_by_invalid(c));
      ++res_.leaks;
      report(fmt::format("{} cluster {} refcount={} reference={}", fixed ? "Repairing" : "Leaked", c, have, want));
    }
  }
  if (fixing() && need_rebuild_) report("Rebuilding refcount structure");
}

// Writes the expected counts into the existing refcount blocks. kLeaks: only lowers counts, and
// leaves clusters that an invalid reference points at (that reference is not repaired).
Status Checker::fix_refcounts_in_place() {
  std::vector<uint8_t> block(g_.cluster_size);
  for (uint64_t i = 0; i < reftable_.size(); ++i) {
    if (!refblock_ok_[i]) continue;
    uint64_t first = i * g_.refblock_entries;
    if (first >= g_.slots) continue;
    uint64_t n = std::min(g_.refblock_entries, g_.slots - first);
    auto wanted = [&](uint64_t c, uint64_t* value) {
      uint64_t want = map_.count(c), have = ondisk_.get(c);
      if (want == have || (c >= g_.file_clusters && want == 0)) return false;
      if (mode_ == Mode::kLeaks && (want > have || map_.hit_by_invalid(c))) return false;
      *value = want;
      return true;
    };
    bool any = false;
    uint64_t v;
    for (uint64_t j = 0; j < n && !any; ++j) any = wanted(first + j, &v);
    if (!any) continue;
    const uint64_t off = reftable_[i] & kReftableOffsetMask;
    KEEL_TRY(read(off, block));
    for (uint64_t j = 0; j < n; ++j) {
      if (!wanted(first + j, &v)) continue;
      set_refcount(block, j, g_.refcount_bits, v);
      ondisk_.set(first + j, v);
    }
    KEEL_TRY(write(off, block));
  }
  return Status::ok();
}

}  // namespace keel::check
