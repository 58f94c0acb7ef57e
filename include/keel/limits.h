// Every bound on a size read from disk or from the network, in one place. Each says where it
// comes from: "spec" (qcow2.txt / NBD proto.md), "qemu" (QEMU's implementation limit, which we
// match so that images QEMU refuses are refused here too), or "ours" with the reason.
#pragma once

#include <cstdint>

namespace keel::limits {

inline constexpr uint32_t kMinClusterBits = 9;    // spec: 512-byte clusters
inline constexpr uint32_t kMaxClusterBits = 21;   // qemu: 2 MiB
inline constexpr uint32_t kMinExtL2ClusterBits = 14;  // spec: subclusters >= 512 B
inline constexpr uint32_t kMaxRefcountOrder = 6;  // spec: 64-bit refcounts
inline constexpr uint32_t kMaxBackingNameLength = 1023;  // spec
inline constexpr uint64_t kMaxL1Bytes = 32ull << 20;        // qemu QCOW_MAX_L1_SIZE
inline constexpr uint64_t kMaxReftableBytes = 8ull << 20;   // qemu QCOW_MAX_REFTABLE_SIZE
inline constexpr uint64_t kMaxHostOffset = (1ull << 56) - 1;  // spec: 56-bit host offsets
inline constexpr uint32_t kMaxSnapshots = 65536;             // qemu QCOW_MAX_SNAPSHOTS
inline constexpr uint64_t kMaxSnapshotTableBytes = 64ull << 20;  // qemu QCOW_MAX_SNAPSHOTS_SIZE
inline constexpr uint32_t kMaxSnapshotExtraData = 1024;      // qemu
inline constexpr uint32_t kMaxSnapshotIdName = 65535;        // spec: u16 lengths
inline constexpr uint32_t kMaxBitmaps = 65535;               // qemu QCOW2_MAX_BITMAPS
inline constexpr uint64_t kMaxBitmapDirectoryBytes = 1024ull * 65535;  // qemu
inline constexpr uint32_t kMaxBitmapNameSize = 1023;         // qemu
inline constexpr uint64_t kMaxBitmapTableEntries = 0x8000000;  // qemu BME_MAX_TABLE_SIZE
inline constexpr uint32_t kMinBitmapGranularityBits = 9;      // qemu
inline constexpr uint32_t kMaxBitmapGranularityBits = 31;     // qemu
inline constexpr uint64_t kMaxBitmapPhysBytes = 512ull << 20; // qemu BME_MAX_PHYS_SIZE: data per bitmap
inline constexpr uint32_t kMinDefaultBitmapGranularity = 4096;   // qemu: the default granularity is
inline constexpr uint32_t kMaxDefaultBitmapGranularity = 65536;  // the cluster size clamped to these
inline constexpr uint64_t kMaxVirtualSize = 1ull << 62;      // ours: keeps offset+len in int64
inline constexpr uint32_t kMaxFeatureTableEntries = 192;     // ours: 3 bitmaps x 64 bits
inline constexpr uint32_t kMaxHeaderExtensions = 4096;       // ours: QEMU writes at most ~6; bounds
                                                             // the walk of cluster 0's chain
inline constexpr int kMaxBackingDepth = 256;                 // ours: clouds keep chains of hundreds;
                                                             // bounds recursion and loops
inline constexpr uint64_t kMaxRequestBytes = 32ull << 20;    // ours = NBD max block size we advertise
inline constexpr uint32_t kMaxNbdOptionBytes = 64 * 1024;    // ours: names <= 4096 plus queries
inline constexpr uint32_t kMaxNbdExportName = 4096;          // spec
inline constexpr uint32_t kMaxNbdMetaQueries = 64;           // ours
inline constexpr uint32_t kMaxNbdInFlight = 64;              // ours: per connection
inline constexpr uint64_t kDefaultL2CacheBytes = 32ull << 20;     // qemu default on Linux
inline constexpr uint64_t kDefaultRefcountCacheBytes = 4ull << 20;  // ours
inline constexpr uint64_t kDefaultCacheCleanSeconds = 600;          // qemu default on Linux (cache-clean-interval)
inline constexpr uint64_t kMaxDirtyMetadataBytes = 16ull << 20;     // ours: bounds RSS; a write
                                                                     // past it triggers a flush

static_assert(kMinClusterBits <= kMinExtL2ClusterBits && kMinExtL2ClusterBits <= kMaxClusterBits);
static_assert(kMaxL1Bytes % 8 == 0 && kMaxReftableBytes % 8 == 0);
static_assert(kMaxRequestBytes <= (1ull << 31), "NBD lengths are u32");
static_assert(kMaxSnapshotExtraData < kMaxSnapshotTableBytes);
static_assert(kMaxBitmapDirectoryBytes >= uint64_t(kMaxBitmaps) * 32, "room for every bitmap with a short name");
static_assert(kMaxBitmapPhysBytes / (1ull << kMinClusterBits) <= kMaxBitmapTableEntries,
              "the 512 MiB data bound also bounds every bitmap table, whatever the cluster size");
static_assert((1ull << kMinBitmapGranularityBits) <= kMinDefaultBitmapGranularity &&
              kMaxDefaultBitmapGranularity <= (1ull << kMaxBitmapGranularityBits));

}  // namespace keel::limits
