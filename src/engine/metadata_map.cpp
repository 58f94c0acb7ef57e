// MetadataMap and the overlap-check options (see metadata_map.h).
#include "engine/metadata_map.h"

#include <fmt/format.h>

namespace keel {

namespace {

struct KindNames {
  const char* option;
  const char* message;
};

// QEMU 7.2 block/qcow2.c (overlap-check.* option names) and qcow2-refcount.c
// (metadata_ol_names, the names in "overlaps with ...").
constexpr KindNames kNames[kMetaKinds] = {
    {"main-header", "qcow2_header"},
    {"active-l1", "active L1 table"},
    {"active-l2", "active L2 table"},
    {"refcount-table", "refcount table"},
    {"refcount-block", "refcount block"},
    {"snapshot-table", "snapshot table"},
    {"inactive-l1", "inactive L1 table"},
    {"inactive-l2", "inactive L2 table"},
    {"bitmap-directory", "bitmap directory"},
    {"bitmap-table", "bitmap table"},
};

constexpr uint32_t kAllKinds = (1u << kMetaKinds) - 1;
constexpr uint32_t kConstant = kind_bit(MetaKind::kMainHeader) | kind_bit(MetaKind::kActiveL1) |
                               kind_bit(MetaKind::kRefcountTable) | kind_bit(MetaKind::kSnapshotTable);

}  // namespace

const char* meta_kind_option(MetaKind k) { return kNames[static_cast<int>(k)].option; }
const char* meta_kind_message(MetaKind k) { return kNames[static_cast<int>(k)].message; }

uint32_t OverlapCheck::template_mask(std::string_view mode) {
  if (mode == "none") return 0;
  if (mode == "constant") return kConstant;
  if (mode == "cached" || mode == "all") return kAllKinds;
  return UINT32_MAX;
}

OverlapCheck OverlapCheck::defaults() { return OverlapCheck{kAllKinds}; }

Status OverlapCheck::apply(std::string_view key, std::string_view value) {
  if (key == "overlap-check" || key == "overlap-check.template") {
    uint32_t m = template_mask(value);
    if (m == UINT32_MAX)
      return invalid(fmt::format("Unsupported value '{}' for qcow2 option 'overlap-check'. Allowed are any of the "
                                 "following: none, constant, cached, all",
                                 value));
    mask = m;
    return Status::ok();
  }
  constexpr std::string_view prefix = "overlap-check.";
  if (key.substr(0, prefix.size()) != prefix) return invalid(fmt::format("'{}' is not an overlap-check option", key));
  std::string_view kind = key.substr(prefix.size());
  for (int i = 0; i < kMetaKinds; ++i) {
    if (kind != kNames[i].option) continue;
    bool on;
    if (value == "on" || value == "true") on = true;
    else if (value == "off" || value == "false") on = false;
    else return invalid(fmt::format("Parameter '{}' expects 'on' or 'off'", key));
    mask = on ? (mask | (1u << i)) : (mask & ~(1u << i));
    return Status::ok();
  }
  return invalid(fmt::format("Invalid parameter '{}'", key));
}

void MetadataMap::reset(uint32_t cluster_bits) {
  cluster_bits_ = cluster_bits;
  map_.clear();
}

void MetadataMap::add(MetaKind k, uint64_t offset, uint64_t length) {
  if (length == 0) return;
  for (uint64_t c = offset >> cluster_bits_; c <= (offset + length - 1) >> cluster_bits_; ++c)
    ++map_[c][static_cast<int>(k)];
}

void MetadataMap::remove(MetaKind k, uint64_t offset, uint64_t length) {
  if (length == 0) return;
  for (uint64_t c = offset >> cluster_bits_; c <= (offset + length - 1) >> cluster_bits_; ++c) {
    auto it = map_.find(c);
    if (it == map_.end()) continue;
    uint32_t& n = it->second[static_cast<int>(k)];
    if (n) --n;
    bool empty = true;
    for (uint32_t v : it->second) empty &= v == 0;
    if (empty) map_.erase(it);
  }
}

std::optional<MetaKind> MetadataMap::overlap(uint64_t offset, uint64_t length, uint32_t mask) const {
  if (length == 0 || mask == 0 || map_.empty()) return std::nullopt;
  const uint64_t first = offset >> cluster_bits_, last = (offset + length - 1) >> cluster_bits_;
  if (last - first >= map_.size()) {  // a long range (a refcount block's): walk the map instead
    for (const auto& [c, counts] : map_) {
      if (c < first || c > last) continue;
      for (int i = 0; i < kMetaKinds; ++i)
        if ((mask & (1u << i)) && counts[i]) return static_cast<MetaKind>(i);
    }
    return std::nullopt;
  }
  for (uint64_t c = first; c <= last; ++c) {
    auto it = map_.find(c);
    if (it == map_.end()) continue;
    for (int i = 0; i < kMetaKinds; ++i)
      if ((mask & (1u << i)) && it->second[i]) return static_cast<MetaKind>(i);
  }
  return std::nullopt;
}

bool MetadataMap::contains(MetaKind k, uint64_t cluster_index) const {
  auto it = map_.find(cluster_index);
  return it != map_.end() && it->second[static_cast<int>(k)] != 0;
}

}  // namespace keel
