// Changing the refcount width of a qcow2 v3 image (qemu-img amend -o refcount_bits=N).
//
// The new refcount table and blocks are built whole, in clusters the old structures count as
// free (the lowest free run long enough, else past the used end), so nothing the image uses is
// touched:
//   1. every old refcount is read (and must fit the new width);
//   2. the new blocks are written: every cluster keeps its refcount, except the old refcount
//      table and blocks (0: the switch frees them) and the new area itself (1); then the new
//      table; then fdatasync;
//   3. one header write switches refcount_table_offset, refcount_table_clusters and
//      refcount_order (bytes 48..100, all inside the first 512-byte sector); fdatasync.
// A crash before step 3 is durable leaves the old structures in force and the new area in
// clusters they count as free (nothing references them: not even a leak); after it, the new
// structures are complete and the old ones are free. No dirty bit is needed: every state is
// consistent.
#include <fmt/format.h>

#include <algorithm>
#include <unordered_set>

#include "engine/qcow2_image.h"
#include "format/endian.h"
#include "keel/limits.h"

namespace keel {

using namespace format;

namespace {
uint64_t ceil_div(uint64_t a, uint64_t b) { return (a + b - 1) / b; }
uint32_t order_of(uint32_t bits) {
  uint32_t order = 0;
  while ((1u << order) < bits) ++order;
  return order;
}
}  // namespace

Status Qcow2Image::change_refcount_order(uint32_t new_bits) {
  // REQUIRES: mu_, gate_ exclusive, flush_mu_; metadata flushed (nothing dirty, no pending frees).
  if (new_bits == 0 || new_bits > 64 || (new_bits & (new_bits - 1)) != 0)
    return invalid("Refcount width must be a power of two and may not exceed 64 bits");
  if (header_.version < 3)
    return invalid("Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)");
  if (new_bits == rc_bits_) return Status::ok();
  const uint64_t new_max = refcount_max(new_bits);
  const uint64_t new_entries = cs_ * 8 / new_bits;

  // The clusters the switch frees: the old refcount table and blocks.
  std::unordered_set<uint64_t> old_meta;
  for (uint64_t c = 0; c < header_.refcount_table_clusters; ++c) old_meta.insert(header_.refcount_table_offset / cs_ + c);
  for (uint64_t off : reftable_)
    if (off & ~kReftableReserved) old_meta.insert((off & ~kReftableReserved) / cs_);

  // 1. The used end, and every refcount must fit (QEMU reports the lowest offending cluster).
  uint64_t used_end = 0;
  for (uint64_t rt = 0; rt < reftable_.size(); ++rt) {
    if ((reftable_[rt] & ~kReftableReserved) == 0) continue;
    KEEL_ASSIGN(RefBlockRef b, load_refblock(rt, false));
    for (uint64_t i = 0; i < rb_entries_; ++i) {
      uint64_t v = format::get_refcount(b->bytes, i, rc_bits_);
      if (v == 0) continue;
      const uint64_t c = rt * rb_entries_ + i;
      if (v > new_max && !old_meta.count(c))
        return invalid(fmt::format("Cannot decrease refcount entry width to {} bits: Cluster at offset {:#x} has a "
                                   "refcount of {}",
                                   new_bits, c * cs_, v));
      used_end = c + 1;
    }
  }

  // The new area: the table, then one block per range up to the end of what is counted (the
  // area counts itself). It goes into the lowest run of clusters free now (not the old
  // structures, which stay in force until the switch), or past the used end.
  uint64_t blocks = 1, table_clusters = 1;
  auto size_for = [&](uint64_t counted_end) {
    for (;;) {
      uint64_t b2 = ceil_div(counted_end + table_clusters + blocks, new_entries);
      uint64_t t2 = ceil_div(b2 * 8, cs_);
      if (b2 <= blocks && t2 <= table_clusters) return;
      blocks = std::max(blocks, b2);
      table_clusters = std::max(table_clusters, t2);
    }
  };
  size_for(used_end);  // enough for an area anywhere below used_end + the area itself
  const uint64_t area_len = table_clusters + blocks;
  uint64_t area = used_end;
  for (uint64_t c = 1, run = 0; c < used_end; ++c) {
    KEEL_ASSIGN(uint64_t v, get_refcount(c));
    run = (v == 0 && !old_meta.count(c)) ? run + 1 : 0;
    if (run == area_len) {
      area = c + 1 - area_len;
      break;
    }
  }
  if (table_clusters * cs_ > limits::kMaxReftableBytes)
    return io_error(ENOSPC, fmt::format("refcount table would exceed {} bytes", limits::kMaxReftableBytes));
  const uint64_t area_end = area + area_len;
  const uint64_t counted_end = std::max(used_end, area_end);
  if (counted_end > limits::kMaxHostOffset / cs_) return io_error(ENOSPC, "qcow2 host offsets exhausted");

  // 2. Blocks, then the table, then one sync.
  notify(Event::kRefblockAlloc);
  std::vector<uint64_t> table(table_clusters * cs_ / 8, 0);
  std::vector<uint8_t> nb(cs_);
  for (uint64_t j = 0; j < blocks; ++j) {
    std::fill(nb.begin(), nb.end(), 0);
    const uint64_t first = j * new_entries, last = std::min(first + new_entries, counted_end);
    for (uint64_t c = first; c < last; ++c) {
      uint64_t v = 1;  // the new area
      if (c < area || c >= area_end) {
        if (old_meta.count(c)) continue;
        KEEL_ASSIGN(v, get_refcount(c));
      }
      if (v) format::set_refcount(nb, c - first, new_bits, v);
    }
    const uint64_t off = (area + table_clusters + j) * cs_;
    KEEL_TRY(metadata_write(off, nb, "refblock"));
    table[j] = off;
  }
  notify(Event::kReftableUpdate);
  std::vector<uint8_t> tb(table.size() * 8);
  for (size_t i = 0; i < table.size(); ++i) put_be64(&tb[i * 8], table[i]);
  KEEL_TRY(metadata_write(area * cs_, tb, "reftable"));
  KEEL_TRY(latch(file_->sync()));

  // 3. The switch: one write inside the first sector, synced.
  Header h = header_;
  h.refcount_table_offset = area * cs_;
  h.refcount_table_clusters = static_cast<uint32_t>(table_clusters);
  h.refcount_order = order_of(new_bits);
  KEEL_ASSIGN(auto c0, encode_header(h));
  static_assert(kOffsetReftable == 48);
  constexpr uint64_t kSwitchEnd = 100;  // refcount_order is the 4 bytes at 96
  KEEL_TRY(write_header_field(kOffsetReftable, std::span<const uint8_t>(c0).subspan(kOffsetReftable,
                                                                                    kSwitchEnd - kOffsetReftable)));
  KEEL_TRY(latch(file_->sync()));

  header_.refcount_table_offset = h.refcount_table_offset;
  header_.refcount_table_clusters = h.refcount_table_clusters;
  header_.refcount_order = h.refcount_order;
  rc_bits_ = new_bits;
  rb_entries_ = new_entries;
  reftable_ = std::move(table);
  rb_cache_.clear();
  free_hint_ = 0;
  compressed_cursor_ = 0;
  freed_unsynced_ = false;
  return rebuild_metadata_map();  // new refcount table and blocks
}

}  // namespace keel
