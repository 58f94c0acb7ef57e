// keel check -r all: replacing the whole refcount structure (and, when snapshots were deleted,
// the snapshot table) without ever overwriting the old one.
//
// The new refcount blocks, refcount table, snapshot table and active L1 table (when those must be
// rewritten) go into fresh clusters after the
// last cluster in use (past the end of the file, and past anything a reference still points at:
// entries pointing past the end were dropped in phase 1, so nothing is allocated on top of them).
// They describe every expected reference plus themselves. Then: sync; one write of at most 36
// bytes in the header's first sector switches to them; sync. A crash
// before the switch leaves the old structure in charge and only unreferenced clusters at the end.
#include <fmt/format.h>

#include "check/checker.h"
#include "format/endian.h"
#include "format/tables.h"
#include "keel/limits.h"

namespace keel::check {

using namespace format;

namespace {
constexpr uint64_t kMaxWriteChunk = 4ull << 20;  // ours: bytes of refcount blocks per write
}  // namespace

Status Checker::rebuild_refcounts() {
  const uint64_t cs = g_.cluster_size, rbe = g_.refblock_entries;
  // The old structures are not referenced by the new header.
  for (uint64_t c = 0; c < g_.slots; ++c) {
    Owner o = map_.owner(c);
    if (o == Owner::kReftable || o == Owner::kRefblock || (rewrite_snapshots_ && o == Owner::kSnapshotTable))
      map_.sub(c, 1);
  }
  std::vector<uint8_t> snap;
  uint32_t nb_snapshots = h_.nb_snapshots;
  if (rewrite_snapshots_) {
    snap = encode_kept_snapshots();
    nb_snapshots = 0;
    for (const auto& s : snapshots_) nb_snapshots += s.keep;
  }

  // First free cluster after everything in use.
  uint64_t n0 = g_.file_clusters;
  for (uint64_t c = g_.slots; c-- > 0;) {
    if (map_.count(c) > 0) {
      n0 = std::max(n0, c + 1);
      break;
    }
  }
  const uint64_t snap_clusters = (snap.size() + cs - 1) / cs;
  const uint64_t l1_bytes = relocate_l1_ ? active_l1_.size() * 8 : 0;
  const uint64_t l1_clusters = (l1_bytes + cs - 1) / cs;
  std::vector<uint64_t> low;  // refcount blocks needed for clusters below n0
  for (uint64_t i = 0; i * rbe < n0; ++i) {
    for (uint64_t c = i * rbe; c < std::min((i + 1) * rbe, n0); ++c) {
      if (c < g_.slots && map_.count(c) > 0) {
        low.push_back(i);
        break;
      }
    }
  }
  // Layout [n0, total): snapshot table, refcount blocks, refcount table. The blocks must cover
  // themselves and the table, so iterate to the fixed point (sizes only grow).
  std::vector<uint64_t> blocks;
  uint64_t reftable_clusters = 0, total = 0;
  for (int round = 0;; ++round) {
    total = n0 + snap_clusters + l1_clusters + blocks.size() + reftable_clusters;
    std::vector<uint64_t> need = low;
    for (uint64_t i = n0 / rbe; i <= (total - 1) / rbe; ++i)
      if (need.empty() || need.back() < i) need.push_back(i);
    uint64_t rt_clusters = (need.back() + 1) * 8 / cs + (((need.back() + 1) * 8) % cs ? 1 : 0);
    if (need.size() == blocks.size() && rt_clusters == reftable_clusters) break;
    blocks = std::move(need);
    reftable_clusters = rt_clusters;
    if (round > 64) return Status(Code::kIo, "refcount structure layout does not converge", EIO);
  }
  if (reftable_clusters * cs > limits::kMaxReftableBytes) {
    ++res_.check_errors;
    return Status(Code::kUnsupported, "the rebuilt refcount table would exceed 8 MiB", EFBIG);
  }
  const uint64_t snap_first = n0;
  const uint64_t l1_first = n0 + snap_clusters;
  const uint64_t block_first = l1_first + l1_clusters;
  const uint64_t table_first = block_first + blocks.size();
  report(fmt::format("Writing a new refcount structure at offset 0x{:x} ({} refcount blocks)", g_.offset_of(block_first),
                     blocks.size()));

  // Refcount blocks, in consecutive clusters.
  std::vector<uint8_t> chunk;
  uint64_t chunk_first = block_first;
  for (size_t k = 0; k < blocks.size(); ++k) {
    size_t base = chunk.size();
    chunk.resize(base + cs, 0);
    std::span<uint8_t> block(&chunk[base], cs);
    for (uint64_t j = 0; j < rbe; ++j) {
      uint64_t c = blocks[k] * rbe + j;
      uint64_t v = c < n0 ? (c < g_.slots ? map_.count(c) : 0) : (c < total ? 1 : 0);
      if (v) set_refcount(block, j, g_.refcount_bits, v);
    }
    if (chunk.size() >= kMaxWriteChunk || k + 1 == blocks.size()) {
      KEEL_TRY(write(g_.offset_of(chunk_first), chunk));
      chunk_first += chunk.size() / cs;
      chunk.clear();
    }
  }
  // Refcount table.
  std::vector<uint8_t> table(reftable_clusters * cs, 0);
  for (size_t k = 0; k < blocks.size(); ++k) put_be64(&table[blocks[k] * 8], g_.offset_of(block_first + k));
  KEEL_TRY(write(g_.offset_of(table_first), table));
  if (!snap.empty()) {
    snap.resize(snap_clusters * cs, 0);
    KEEL_TRY(write(g_.offset_of(snap_first), snap));
  }
  if (l1_clusters) {
    std::vector<uint8_t> l1(l1_clusters * cs, 0);
    for (size_t j = 0; j < active_l1_.size(); ++j) put_be64(&l1[j * 8], active_l1_[j]);
    KEEL_TRY(write(g_.offset_of(l1_first), l1));
  }
  KEEL_TRY(file_.sync());

  // The switch: bytes 48..59 (refcount table), with a new snapshot table 60..71 too, with a new
  // active L1 table 36..47 too. All lie in the first 512-byte sector, so the one write persists
  // entirely or not at all.
  if (rewrite_snapshots_) {
    h_.nb_snapshots = nb_snapshots;
    h_.snapshots_offset = nb_snapshots ? g_.offset_of(snap_first) : 0;
  }
  if (relocate_l1_) h_.l1_table_offset = g_.offset_of(l1_first);
  h_.refcount_table_offset = g_.offset_of(table_first);
  h_.refcount_table_clusters = static_cast<uint32_t>(reftable_clusters);
  uint8_t hdr[36] = {};
  put_be32(hdr, h_.l1_size);
  put_be64(hdr + 4, h_.l1_table_offset);
  put_be64(hdr + 12, h_.refcount_table_offset);
  put_be32(hdr + 20, h_.refcount_table_clusters);
  put_be32(hdr + 24, h_.nb_snapshots);
  put_be64(hdr + 28, h_.snapshots_offset);
  const size_t skip = relocate_l1_ ? 0 : 12;  // start at byte 36 or 48
  const size_t len = rewrite_snapshots_ ? 36 - skip : 24 - skip;
  KEEL_TRY(write(kOffsetL1Size + skip, std::span<const uint8_t>(hdr + skip, len)));
  KEEL_TRY(file_.sync());
  relocate_l1_ = false;
  return Status::ok();
}

}  // namespace keel::check
