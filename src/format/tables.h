// L1, L2 and refcount entries: bit layouts and classification. Pure functions on integers.
//
// L1 entry: bits 9-55 L2 table offset, bit 63 COPIED. L2 entry: bit 63 COPIED, bit 62
// compressed, bits 0-61 descriptor (standard: bit 0 ZERO, bits 9-55 host offset; compressed:
// host byte offset in the low x bits, extra 512-byte sector count above, x = 62-(cluster_bits-8)).
// Extended L2 adds a 64-bit bitmap: bits 0-31 allocated subclusters, 32-63 zero subclusters.
#pragma once

#include <cstdint>
#include <span>

namespace keel::format {

inline constexpr uint64_t kCopied = 1ull << 63;
inline constexpr uint64_t kCompressed = 1ull << 62;
inline constexpr uint64_t kZeroFlag = 1ull;
inline constexpr uint64_t kOffsetMask = 0x00fffffffffffe00ull;  // bits 9-55
inline constexpr uint64_t kL1Reserved = 0x7f000000000001ffull;
inline constexpr uint64_t kL2Reserved = 0x3f000000000001feull;
inline constexpr uint64_t kReftableReserved = 0x1ffull;
inline constexpr uint32_t kSubclusters = 32;
inline constexpr uint64_t kAllAllocated = 0xffffffffull;
inline constexpr uint64_t kAllZero = 0xffffffff00000000ull;

enum class ClusterType { kUnallocated, kZeroPlain, kZeroAlloc, kNormal, kCompressed };

// Classifies a (standard or extended) L2 entry. `ext_l2`: bit 0 is reserved, not ZERO.
inline ClusterType classify_l2(uint64_t entry, bool ext_l2) {
  if (entry & kCompressed) return ClusterType::kCompressed;
  uint64_t off = entry & kOffsetMask;
  if (!ext_l2 && (entry & kZeroFlag)) return off ? ClusterType::kZeroAlloc : ClusterType::kZeroPlain;
  if (off == 0 && !(entry & kCopied)) return ClusterType::kUnallocated;
  return ClusterType::kNormal;
}

struct CompressedDescriptor {
  uint64_t host_offset = 0;  // byte offset, unaligned
  uint64_t size = 0;         // bytes that may hold compressed data (sector-rounded upper bound)
};

inline uint32_t compressed_offset_bits(uint32_t cluster_bits) { return 62 - (cluster_bits - 8); }

inline CompressedDescriptor decode_compressed(uint64_t entry, uint32_t cluster_bits) {
  uint32_t x = compressed_offset_bits(cluster_bits);
  uint64_t desc = entry & ((1ull << 62) - 1);
  CompressedDescriptor d;
  d.host_offset = desc & ((1ull << x) - 1);
  uint64_t extra_sectors = desc >> x;
  d.size = (extra_sectors + 1) * 512 - (d.host_offset & 511);
  return d;
}

// REQUIRES: size >= 1 and the range fits the descriptor's fields.
inline uint64_t encode_compressed(uint64_t host_offset, uint64_t size, uint32_t cluster_bits) {
  uint32_t x = compressed_offset_bits(cluster_bits);
  uint64_t last_sector = (host_offset + size - 1) / 512;
  uint64_t extra = last_sector - host_offset / 512;
  return kCompressed | (extra << x) | host_offset;
}

// Refcount block entries of `bits` width (1..64), packed LSB-first for sub-byte widths.
inline uint64_t get_refcount(std::span<const uint8_t> block, uint64_t index, uint32_t bits) {
  switch (bits) {
    case 1: case 2: case 4: {
      uint64_t bit = index * bits;
      return (block[bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
    }
    case 8: return block[index];
    default: {
      uint64_t v = 0;
      const uint8_t* p = &block[index * (bits / 8)];
      for (uint32_t i = 0; i < bits / 8; ++i) v = v << 8 | p[i];
      return v;
    }
  }
}

inline void set_refcount(std::span<uint8_t> block, uint64_t index, uint32_t bits, uint64_t value) {
  switch (bits) {
    case 1: case 2: case 4: {
      uint64_t bit = index * bits;
      uint8_t mask = static_cast<uint8_t>(((1u << bits) - 1) << (bit % 8));
      block[bit / 8] = static_cast<uint8_t>((block[bit / 8] & ~mask) | ((value << (bit % 8)) & mask));
      return;
    }
    case 8: block[index] = static_cast<uint8_t>(value); return;
    default: {
      uint8_t* p = &block[index * (bits / 8)];
      for (int i = static_cast<int>(bits / 8) - 1; i >= 0; --i, value >>= 8) p[i] = static_cast<uint8_t>(value);
    }
  }
}

inline uint64_t refcount_max(uint32_t bits) { return bits == 64 ? ~0ull : (1ull << bits) - 1; }

}  // namespace keel::format
