// NBD metadata contexts: query matching and extents (see meta_context.h).
#include "nbd/meta_context.h"

#include <algorithm>
#include <string_view>

#include "keel/limits.h"
#include "nbd/protocol.h"

namespace keel::nbd {
namespace {

// Strips `prefix` from `s`; false (s unchanged) if s does not start with it.
bool shift(std::string_view& s, std::string_view prefix) {
  if (s.substr(0, prefix.size()) != prefix) return false;
  s.remove_prefix(prefix.size());
  return true;
}

void all_bitmaps(std::vector<bool>& bitmaps) { std::fill(bitmaps.begin(), bitmaps.end(), true); }

// One query, as qemu's nbd_negotiate_meta_query: sets what it matches.
void match_one(const MetaContextConfig& cfg, std::string_view q, bool list, MetaSelection& sel,
               std::vector<bool>& bitmaps) {
  if (shift(q, "base:")) {
    if (q == "allocation" || (list && q.empty())) sel.base_allocation = true;
    return;
  }
  if (!shift(q, "qemu:")) return;
  if (q.empty()) {
    if (list) {
      sel.allocation_depth = cfg.allocation_depth;
      all_bitmaps(bitmaps);
    }
    return;
  }
  if (q == "allocation-depth") {
    sel.allocation_depth = cfg.allocation_depth;
    return;
  }
  if (!shift(q, "dirty-bitmap:")) return;
  if (q.empty()) {
    if (list) all_bitmaps(bitmaps);
    return;
  }
  for (size_t i = 0; i < cfg.bitmaps.size(); ++i)
    if (cfg.bitmaps[i] == q) bitmaps[i] = true;
}

void add_extent(std::vector<BlockExtent>& out, uint64_t length, uint32_t flags) {
  if (length == 0) return;
  if (!out.empty() && out.back().flags == flags) {
    out.back().length += static_cast<uint32_t>(length);
  } else {
    out.push_back({static_cast<uint32_t>(length), flags});
  }
}

}  // namespace

MetaSelection match_meta_queries(const MetaContextConfig& cfg, const std::vector<std::string>& queries,
                                 bool list) {
  MetaSelection sel;
  std::vector<bool> bitmaps(cfg.bitmaps.size(), false);
  if (list && queries.empty()) {
    sel.base_allocation = true;
    sel.allocation_depth = cfg.allocation_depth;
    all_bitmaps(bitmaps);
  }
  for (const auto& q : queries) match_one(cfg, q, list, sel, bitmaps);
  for (size_t i = 0; i < bitmaps.size(); ++i)
    if (bitmaps[i]) sel.bitmaps.push_back(static_cast<uint32_t>(i));
  return sel;
}

std::vector<MetaContextName> meta_context_names(const MetaContextConfig& cfg, const MetaSelection& sel) {
  std::vector<MetaContextName> out;
  if (sel.base_allocation) out.push_back({kMetaIdBaseAllocation, kMetaBaseAllocation});
  if (sel.allocation_depth) out.push_back({kMetaIdAllocationDepth, kMetaAllocationDepth});
  for (uint32_t i : sel.bitmaps)
    out.push_back({kMetaIdDirtyBitmap + i, std::string(kMetaDirtyBitmapPrefix) + cfg.bitmaps.at(i)});
  return out;
}

std::vector<BlockExtent> bitmap_extents(const BitmapData& bitmap, uint64_t offset, uint32_t length,
                                        size_t max_extents) {
  std::vector<BlockExtent> out;
  const uint64_t end = std::min(offset + length, bitmap.virtual_size);
  const uint64_t g = bitmap.granularity;
  uint64_t pos = offset;
  if (g == 0 || bitmap.bits.size() * 8 < bitmap.bit_count()) return {{length, 0}};  // not a bitmap
  while (pos < end) {
    uint64_t bit = pos / g;
    const bool dirty = bitmap.test(bit);
    // Extend over every following granule of the same state, skipping whole bytes at a time.
    uint64_t next = bit + 1;
    const uint64_t last_bit = (end - 1) / g;
    while (next <= last_bit) {
      if (next % 8 == 0 && next + 8 <= last_bit + 1 &&
          bitmap.bits[next / 8] == (dirty ? 0xff : 0x00)) {
        next += 8;
        continue;
      }
      if (bitmap.test(next) != dirty) break;
      ++next;
    }
    const uint64_t run_end = std::min(next * g, end);
    const uint32_t flags = dirty ? kStateDirty : 0;
    if (out.size() == max_extents && out.back().flags != flags) return out;  // full
    add_extent(out, run_end - pos, flags);
    pos = run_end;
  }
  // A request reaching past the bitmap's end (cannot happen for a valid request): clean.
  if (pos < offset + length && (out.size() < max_extents || out.back().flags == 0))
    add_extent(out, offset + length - pos, 0);
  return out;
}

namespace {

// The sizes of the backing layers: sizes[k] is layer k + 2's (the image itself is layer 1).
std::vector<uint64_t> backing_sizes(Image& image) {
  std::vector<uint64_t> sizes;
  Image* layer = image.backing();
  for (int i = 0; layer && i < limits::kMaxBackingDepth; ++i, layer = layer->backing())
    sizes.push_back(layer->size());
  return sizes;
}

// qemu's depth for bytes no layer holds (bdrv_co_common_block_status_above): past the end of
// a backing layer, zeros "behave as if they were allocated at this layer", so the depth is
// that of the first layer, from the top, that ends at or before `pos`; else 0. `len` is cut
// where another layer's end would change that answer.
uint32_t unallocated_depth(const std::vector<uint64_t>& sizes, uint64_t pos, uint64_t& len) {
  uint32_t depth = 0;
  for (size_t k = 0; k < sizes.size(); ++k) {
    if (sizes[k] > pos) {
      len = std::min(len, sizes[k] - pos);
    } else if (depth == 0) {
      depth = static_cast<uint32_t>(k + 2);
    }
  }
  return depth;
}

}  // namespace

Result<std::vector<BlockExtent>> block_status_extents(Image& image, ExtentKind kind, uint64_t offset,
                                                      uint32_t length, size_t max_extents) {
  std::vector<BlockExtent> out;
  const std::vector<uint64_t> sizes = kind == ExtentKind::kDepth ? backing_sizes(image) : std::vector<uint64_t>{};
  const uint64_t end = offset + length;
  uint64_t pos = offset;
  while (pos < end) {
    auto bs = image.block_status(pos, end - pos);
    if (!bs) {
      if (out.empty()) return error(bs.error());
      break;
    }
    if (bs->length == 0 || bs->offset != pos) break;
    uint64_t len = std::min(bs->length, end - pos);
    uint32_t value = (bs->data ? 0 : kStateHole) | (bs->zero ? kStateZero : 0);
    if (kind == ExtentKind::kDepth) {
      value = bs->depth > 0 ? static_cast<uint32_t>(bs->depth) : unallocated_depth(sizes, pos, len);
    }
    if (out.size() == max_extents && out.back().flags != value) break;
    add_extent(out, len, value);
    pos += len;
  }
  if (out.empty()) return error(io_error(EIO, "block status returned no extent"));
  return out;
}

}  // namespace keel::nbd
