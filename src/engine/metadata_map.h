// MetadataMap: every host cluster an open qcow2 image knows as metadata, by kind, so the engine
// can refuse to hand such a cluster out or to write guest data over it (QEMU's overlap check,
// qcow2_check_metadata_overlap, with its cached per-kind state).
//
// Invariants:
//  - a cluster is in the map under kind K iff some structure of kind K the engine knows (header,
//    L1/L2 tables, refcount table and blocks, snapshot table, snapshot L1/L2 tables, bitmap
//    directory and bitmap tables) occupies part of it; counts make shared clusters (an L2 table
//    referenced by several snapshots) leave the map only when the last reference goes.
//  - the engine removes a structure from the map before it frees the structure's clusters (or
//    rebuilds the map right after, with no allocation in between), never because a refcount
//    reached 0: a refcount is exactly what damage makes wrong.
//  - lookups cost one hash probe per cluster of the range (the map holds only metadata clusters,
//    a few per GiB of guest data), so the check can run on every allocation and guest write.
// Not thread-safe: the engine holds its metadata mutex (mu_) around every call.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "keel/status.h"

namespace keel {

// QEMU's metadata kinds (QCOW2_OL_*), in QEMU's bit order, plus bitmap tables, which keel also
// protects (QEMU checks only the bitmap directory).
enum class MetaKind : uint8_t {
  kMainHeader,
  kActiveL1,
  kActiveL2,
  kRefcountTable,
  kRefcountBlock,
  kSnapshotTable,
  kInactiveL1,
  kInactiveL2,
  kBitmapDirectory,
  kBitmapTable,
};
inline constexpr int kMetaKinds = 10;
inline constexpr uint32_t kind_bit(MetaKind k) { return 1u << static_cast<int>(k); }

// The overlap-check.<kind> option name ("main-header", ...); bitmap tables have none in QEMU, keel
// accepts "bitmap-table".
const char* meta_kind_option(MetaKind k);
// The name QEMU's corruption message uses ("qcow2_header", "active L1 table", ...).
const char* meta_kind_message(MetaKind k);

// Which kinds are checked: QEMU's templates and per-kind switches.
//   none: nothing. constant: header, active L1, refcount table, snapshot table.
//   cached (default): every kind. QEMU leaves inactive L2 tables to "all" because it would have
//   to read them; keel keeps them in the map, so its cached mode covers them at no extra cost.
//   all: every kind.
struct OverlapCheck {
  uint32_t mask = 0;
  static uint32_t template_mask(std::string_view mode);  // UINT32_MAX: unknown mode
  static OverlapCheck defaults();
  // Applies one option: key "overlap-check" (a template) or "overlap-check.<kind>" (on/off),
  // as QEMU's -o / --image-opts spell them. An unknown kind or value is kInvalidArgument.
  Status apply(std::string_view key, std::string_view value);
};

class MetadataMap {
 public:
  void reset(uint32_t cluster_bits);
  // Adds or drops one reference of kind k to every cluster [offset, offset + length) touches.
  void add(MetaKind k, uint64_t offset, uint64_t length);
  void remove(MetaKind k, uint64_t offset, uint64_t length);
  // The first kind in `mask` (QEMU's order) that overlaps [offset, offset + length).
  std::optional<MetaKind> overlap(uint64_t offset, uint64_t length, uint32_t mask) const;
  bool contains(MetaKind k, uint64_t cluster_index) const;
  size_t clusters() const { return map_.size(); }

 private:
  using Counts = std::array<uint32_t, kMetaKinds>;
  uint32_t cluster_bits_ = 16;
  std::unordered_map<uint64_t, Counts> map_;  // cluster index -> references per kind
};

}  // namespace keel
