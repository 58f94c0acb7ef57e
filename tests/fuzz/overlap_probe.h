// The no-metadata-overwrite property of the fuzz targets that write (issue 13): the clusters of
// a qcow2 file that hold metadata the write path never moves or frees (the header, the active
// L1 table, the refcount blocks, the snapshot table and the snapshots' L1 tables), parsed from
// the bytes independently of the engine, every read bounds-checked (the bytes are fuzzed).
// A harness takes them before it runs and, after, traps if one of them gained guest data: a copy
// of the harness's guest marker (write) or any change outside the corrupt bit (nbd, whose damaged
// export refuses every allocation).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

namespace keel::fuzz {

// Written into every guest write of the write harness: a byte run no valid metadata holds.
inline constexpr uint8_t kGuestMarker[16] = {0xa5, 'K', 'E', 'E', 'L', '-', 'G', 'U', 'E', 'S', 'T', 0xa5, 0, 0, 0, 0};
inline constexpr size_t kGuestMarkerBytes = 12;

struct ProbeCluster {
  uint64_t offset;
  uint64_t size;
};

// Stable metadata clusters of `f` (empty if the header does not parse). Bounded: at most
// kMaxProbe clusters.
std::vector<ProbeCluster> stable_metadata(std::span<const uint8_t> f);

// How many copies of the guest marker [offset, offset + size) of `f` holds.
inline size_t count_markers(std::span<const uint8_t> f, uint64_t offset, uint64_t size) {
  size_t n = 0;
  if (offset >= f.size()) return 0;
  const uint64_t end = std::min<uint64_t>(f.size(), offset + size);
  for (uint64_t i = offset; i + kGuestMarkerBytes <= end; ++i)
    if (f[i] == kGuestMarker[0] && std::memcmp(&f[i], kGuestMarker, kGuestMarkerBytes) == 0) ++n;
  return n;
}

}  // namespace keel::fuzz
