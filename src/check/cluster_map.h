// Per-host-cluster bookkeeping for keel check: a reference counter and an owner tag for every
// cluster of the image file.
//
// Memory is proportional to the file, never to the virtual size: 2 bytes of counter + 1 byte of
// tag per host cluster, and 2 more for the stored refcount (CountArray): a 1 TiB file of 64 KiB
// clusters costs 80 MiB. Counters saturate into a small overflow map, so refcounts up to 2^64-1
// (refcount_bits=64, many snapshots) stay exact.
//
// The tag records which piece of metadata owns a cluster. Owners are claimed in priority order
// (header first, bitmaps last); a claim on a cluster another owner already holds is refused, and
// the caller treats the later claimant as the damaged one.
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

namespace keel::check {

// Owners of a host cluster, in the order Checker claims them (earlier wins; guest data is counted
// between kL2 and the bitmap structures and has no owner tag).
enum class Owner : uint8_t {
  kNone = 0,
  kHeader,
  kActiveL1,
  kReftable,
  kSnapshotTable,
  kSnapshotL1,
  kRefblock,
  kL2,
  kBitmapDirectory,
  kBitmapTable,
  kBitmapData,
};

// QEMU's names for metadata kinds (qcow2 overlap-check vocabulary).
const char* owner_name(Owner o);

class ClusterMap {
 public:
  // Tag bit: the cluster is the target of an invalid (dropped) reference.
  static constexpr uint8_t kHitByInvalid = 0x80;
  static constexpr uint8_t kOwnerMask = 0x0f;

  void resize(uint64_t clusters) {
    counts_.assign(clusters, 0);
    tags_.assign(clusters, 0);
    overflow_.clear();
  }
  uint64_t size() const { return counts_.size(); }

  uint64_t count(uint64_t c) const {
    uint16_t v = counts_[c];
    if (v != kSaturated) return v;
    auto it = overflow_.find(c);
    return it == overflow_.end() ? v : it->second;
  }
  void set_count(uint64_t c, uint64_t v) {
    if (v < kSaturated) {
      if (counts_[c] == kSaturated) overflow_.erase(c);
      counts_[c] = static_cast<uint16_t>(v);
    } else {
      counts_[c] = kSaturated;
      overflow_[c] = v;
    }
  }
  // Adds `n`, saturating at UINT64_MAX.
  void add(uint64_t c, uint64_t n) {
    uint64_t v = count(c);
    set_count(c, v > UINT64_MAX - n ? UINT64_MAX : v + n);
  }
  void sub(uint64_t c, uint64_t n) {
    uint64_t v = count(c);
    set_count(c, v > n ? v - n : 0);
  }

  Owner owner(uint64_t c) const { return static_cast<Owner>(tags_[c] & kOwnerMask); }
  void set_owner(uint64_t c, Owner o) {
    tags_[c] = static_cast<uint8_t>((tags_[c] & ~kOwnerMask) | static_cast<uint8_t>(o));
  }
  bool hit_by_invalid(uint64_t c) const { return tags_[c] & kHitByInvalid; }
  void mark_hit_by_invalid(uint64_t c) { tags_[c] |= kHitByInvalid; }

 private:
  static constexpr uint16_t kSaturated = 0xffff;
  std::vector<uint16_t> counts_;
  std::vector<uint8_t> tags_;
  std::unordered_map<uint64_t, uint64_t> overflow_;
};

// A plain counter array with the same saturation scheme (the refcounts read from the image).
class CountArray {
 public:
  void resize(uint64_t n) {
    v_.assign(n, 0);
    overflow_.clear();
  }
  uint64_t size() const { return v_.size(); }
  uint64_t get(uint64_t i) const {
    if (v_[i] != 0xffff) return v_[i];
    auto it = overflow_.find(i);
    return it == overflow_.end() ? 0xffff : it->second;
  }
  void set(uint64_t i, uint64_t value) {
    if (value < 0xffff) {
      if (v_[i] == 0xffff) overflow_.erase(i);
      v_[i] = static_cast<uint16_t>(value);
    } else {
      v_[i] = 0xffff;
      overflow_[i] = value;
    }
  }

 private:
  std::vector<uint16_t> v_;
  std::unordered_map<uint64_t, uint64_t> overflow_;
};

}  // namespace keel::check
