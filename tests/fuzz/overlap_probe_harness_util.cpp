// stable_metadata(): see overlap_probe.h.
#include <algorithm>

#include "overlap_probe.h"

namespace keel::fuzz {
namespace {

constexpr size_t kMaxProbe = 4096;
constexpr uint64_t kOffsetMask = 0x00fffffffffffe00ull;

struct Reader {
  std::span<const uint8_t> f;
  bool ok = true;
  uint64_t be(uint64_t o, int n) {
    if (o > f.size() || uint64_t(n) > f.size() - o) {
      ok = false;
      return 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) v = v << 8 | f[o + i];
    return v;
  }
};

}  // namespace

std::vector<ProbeCluster> stable_metadata(std::span<const uint8_t> f) {
  std::vector<ProbeCluster> out;
  Reader r{f};
  if (r.be(0, 4) != 0x514649fb) return out;
  const uint64_t bits = r.be(20, 4);
  if (!r.ok || bits < 9 || bits > 21) return out;
  const uint64_t cs = 1ull << bits;
  auto span = [&](uint64_t off, uint64_t len) {
    if (len == 0 || off >= f.size()) return;
    len = std::min<uint64_t>(len, f.size() - off);
    for (uint64_t c = off / cs; c <= (off + len - 1) / cs && out.size() < kMaxProbe; ++c) out.push_back({c * cs, cs});
  };
  span(0, cs);
  const uint64_t l1_size = r.be(36, 4), l1_off = r.be(40, 8);
  const uint64_t rt_off = r.be(48, 8), rt_clusters = r.be(56, 4);
  const uint64_t nb_snap = r.be(60, 4), snap_off = r.be(64, 8);
  if (!r.ok) return out;
  if (l1_size < (1u << 24)) span(l1_off, l1_size * 8);
  for (uint64_t i = 0; i < std::min<uint64_t>(rt_clusters, 64) * cs / 8 && out.size() < kMaxProbe; ++i) {
    uint64_t e = r.be(rt_off + i * 8, 8);
    if (!r.ok) break;
    if (e & ~(cs - 1)) span(e & ~(cs - 1), cs);
  }
  r.ok = true;
  uint64_t p = snap_off;
  for (uint64_t s = 0; s < std::min<uint64_t>(nb_snap, 64); ++s) {
    uint64_t sl1 = r.be(p, 8), sl1_size = r.be(p + 8, 4);
    uint64_t id_len = r.be(p + 12, 2), name_len = r.be(p + 14, 2), extra = r.be(p + 36, 4);
    if (!r.ok || extra > (1u << 20)) break;
    if (sl1_size < (1u << 24)) span(sl1 & kOffsetMask, sl1_size * 8);
    p += (40 + extra + id_len + name_len + 7) / 8 * 8;
  }
  if (p > snap_off) span(snap_off, p - snap_off);
  return out;
}

}  // namespace keel::fuzz
