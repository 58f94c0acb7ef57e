// Damaged-image workloads: see damage.h.
#include "proof/damage.h"

#include <string>

#include "proof/pattern.h"

namespace keel::proof {
namespace {

uint64_t be(const std::vector<uint8_t>& b, uint64_t o, int n) {
  if (o > b.size() || uint64_t(n) > b.size() - o) return 0;
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = v << 8 | b[o + i];
  return v;
}

struct MetaCluster {
  const char* what;
  uint64_t offset;
};

// The metadata clusters of a freshly created image: header, refcount table, first refcount block,
// L1 table (empty images have no other metadata).
std::vector<MetaCluster> metadata(const std::vector<uint8_t>& image) {
  const uint64_t cs = 1ull << be(image, 20, 4);
  const uint64_t l1 = be(image, 40, 8), rt = be(image, 48, 8);
  return {{"header", 0}, {"refcount table", rt / cs * cs}, {"refcount block", be(image, rt, 8) / cs * cs},
          {"L1 table", l1 / cs * cs}};
}

}  // namespace

void apply_damage(const WorkloadSpec& spec, std::vector<uint8_t>& image) {
  if (spec.damage != "refcount0") return;
  const uint64_t cs = 1ull << be(image, 20, 4);
  const uint64_t rb = be(image, be(image, 48, 8), 8);
  for (const MetaCluster& m : metadata(image)) {
    const uint64_t at = rb + m.offset / cs * 2;  // 16-bit refcounts
    if (at + 2 <= image.size()) image[at] = image[at + 1] = 0;
  }
}

void check_damaged_state(const std::vector<uint8_t>& image, StateVerdict& v, uint32_t md) {
  if (be(image, 0, 4) != 0x514649fb) {
    v.add(Guarantee::kG1, "the header's magic is gone", md);
    return;
  }
  const uint64_t cs = 1ull << be(image, 20, 4);
  for (const MetaCluster& m : metadata(image)) {
    for (uint64_t s = m.offset; s + kGuestSector <= m.offset + cs && s + kGuestSector <= image.size();
         s += kGuestSector) {
      Decoded d = decode_sector(std::span<const uint8_t>(image).subspan(s, kGuestSector));
      if (d.kind == Decoded::kPattern && d.version >= kFirstWriteVersion)
        v.add(Guarantee::kG4,
              std::string("guest data (v") + std::to_string(d.version) + " of guest sector " +
                  std::to_string(d.sector) + ") in the " + m.what + " at host offset " + std::to_string(s),
              md);
    }
  }
}

}  // namespace keel::proof
