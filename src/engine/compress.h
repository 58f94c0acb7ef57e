// Cluster compression as qcow2 stores it: raw deflate (RFC 1951, window 2^12, no zlib header)
// for type 0 and a single zstd frame for type 1.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "keel/image.h"
#include "keel/status.h"

namespace keel {

// Decompresses into `out` (exactly one cluster). Fails with kCorrupt if the data does not
// produce a full cluster.
Status decompress_cluster(CompressionType type, std::span<const uint8_t> in, std::span<uint8_t> out);

// Compresses one cluster; nullopt when the result would not be smaller than cluster - 1 bytes
// (QEMU then stores the cluster uncompressed).
Result<std::optional<std::vector<uint8_t>>> compress_cluster(CompressionType type,
                                                             std::span<const uint8_t> in);

}  // namespace keel
