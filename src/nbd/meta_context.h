// NBD metadata contexts as qemu-nbd 7.2 serves them: which contexts an export offers, which a
// LIST_META_CONTEXT / SET_META_CONTEXT query list matches, and the extents each context reports.
//
// Contexts and their ids (qemu's NBD_META_ID_*; LIST replies carry id 0):
//   0      base:allocation        flags: NBD_STATE_HOLE (1), NBD_STATE_ZERO (2)
//   1      qemu:allocation-depth  (-A) value: the layer of the backing chain that holds the
//                                 extent, 1 = the image itself, 0 = no layer
//   2 + i  qemu:dirty-bitmap:NAME (-B NAME; i counts the -B options from the LAST one, as
//                                 qemu-nbd lists them) flags: NBD_STATE_DIRTY (1)
// Query rules (qemu nbd/server.c): "base:allocation", "qemu:allocation-depth" and
// "qemu:dirty-bitmap:NAME" match themselves; LIST also takes the empty query list (everything),
// "base:", "qemu:" (every qemu: context) and "qemu:dirty-bitmap:" (every bitmap). Unknown
// queries match nothing. Replies go out in id order whatever the query order.
//
// The matching and bitmap_extents() are pure; block_status_extents() reads the image.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "keel/image.h"
#include "keel/status.h"
#include "nbd/protocol.h"
#include "nbd/reply.h"

namespace keel::nbd {

// What an export offers besides base:allocation.
struct MetaContextConfig {
  bool allocation_depth = false;     // -A
  std::vector<std::string> bitmaps;  // in id order (index i has id kMetaIdDirtyBitmap + i)
};

// The contexts a SET_META_CONTEXT selected (or a LIST matched).
struct MetaSelection {
  bool base_allocation = false;
  bool allocation_depth = false;
  std::vector<uint32_t> bitmaps;  // indexes into MetaContextConfig::bitmaps, ascending

  size_t count() const { return size_t{base_allocation} + size_t{allocation_depth} + bitmaps.size(); }
  bool empty() const { return count() == 0; }
};

// The contexts `queries` match (list: the LIST rules, else the SET rules).
MetaSelection match_meta_queries(const MetaContextConfig& cfg, const std::vector<std::string>& queries,
                                 bool list);

struct MetaContextName {
  uint32_t id = 0;
  std::string name;
};
// The selected contexts with their ids and names, in id order.
std::vector<MetaContextName> meta_context_names(const MetaContextConfig& cfg, const MetaSelection& sel);

// The extents of a dirty bitmap over [offset, offset + length), at most max_extents, merged as
// qemu does: dirty runs are whole granules clipped to the range. REQUIRES: the range inside the
// bitmap's virtual size, length > 0, max_extents > 0.
std::vector<BlockExtent> bitmap_extents(const BitmapData& bitmap, uint64_t offset, uint32_t length,
                                        size_t max_extents);

enum class ExtentKind { kAllocation, kDepth };
// base:allocation (hole/zero flags) or qemu:allocation-depth extents of the image over
// [offset, offset + length), at most max_extents, neighbours with equal values merged. An error
// before the first extent is returned; a later one ends the list early.
Result<std::vector<BlockExtent>> block_status_extents(Image& image, ExtentKind kind, uint64_t offset,
                                                      uint32_t length, size_t max_extents);

}  // namespace keel::nbd
