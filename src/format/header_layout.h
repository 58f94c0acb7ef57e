// Where things lie in cluster 0, as bytes: the header's length, the header-extension chain (each
// extension's offset, type and data length) and the backing file name. decode_header() turns
// cluster 0 into a Header; this is for code that rewrites cluster 0 in place and must know which
// bytes a change touches (src/engine/qcow2_header_switch.cpp), and for decode_header itself, which
// walks the same chain (one reading of the layout, not two).
//
// Lenient: nothing here fails. It describes what the bytes say, bounded by the buffer, and the
// caller decides what that allows. Invariants of an ExtensionChain: slots are in file order, the
// first starts at the walk's start and each next one where the previous one's padded data ends;
// every slot's 8-byte type/length pair lies inside the area (its data may not: check end());
// at most limits::kMaxHeaderExtensions slots.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace keel::format {

// Byte offsets of fixed header fields read by layout code (header.h has the rewritten ones).
inline constexpr uint64_t kOffsetVersion = 4;
inline constexpr uint64_t kOffsetBackingFile = 8;      // backing_file_offset (8) + _size (4): 12 bytes
inline constexpr uint64_t kBackingFileFieldsBytes = 12;
inline constexpr uint64_t kOffsetHeaderLength = 100;   // v3 only
inline constexpr uint64_t kMinLayoutBytes = 104;       // what decode_header_layout reads

// One header extension: the 8-byte type/length pair at `offset`, then `length` data bytes padded
// to a multiple of 8.
struct ExtensionSlot {
  uint64_t offset = 0;
  uint32_t type = 0;
  uint32_t length = 0;  // of the data, without the padding

  uint64_t data_offset() const { return offset + 8; }
  uint64_t data_end() const { return data_offset() + length; }
  uint64_t end() const { return data_offset() + (uint64_t(length) + 7) / 8 * 8; }  // past the padding
};

struct ExtensionChain {
  std::vector<ExtensionSlot> slots;  // without the end marker
  bool terminated = false;  // an end marker (type 0) follows the last slot, at `stop`
  bool too_many = false;    // the walk gave up after kMaxHeaderExtensions slots, at `stop`
  // The end marker's offset, or else the first offset at which no type/length pair fits in the
  // area (which can lie past the area when the last slot's length runs over it).
  uint64_t stop = 0;

  // Past the end marker, or `stop` for a chain without one.
  uint64_t end() const { return terminated ? stop + 8 : stop; }
};

// Walks the extensions from `start` while a type/length pair fits before `area_end` (clamped to
// the buffer), up to the end marker.
ExtensionChain walk_extensions(std::span<const uint8_t> c0, uint64_t start, uint64_t area_end);

struct HeaderLayout {
  uint32_t version = 0;
  uint64_t header_length = 0;    // 72 for v2; the header_length field for v3
  uint64_t backing_offset = 0;   // 0: no backing file name
  uint32_t backing_size = 0;
  uint64_t autoclear = 0;        // v3 only (0 for v2)
  uint64_t cluster_bytes = 0;    // the buffer's size
  ExtensionChain extensions;     // from header_length to area_end()

  // Where the extension area ends: the backing file name, or the end of the cluster.
  uint64_t area_end() const;
  // The end of the bytes the header references: its extensions (with the end marker) and its
  // backing file name.
  uint64_t used_end() const;
};

// Reads the layout of `c0`, a whole cluster 0 of at least kMinLayoutBytes.
HeaderLayout decode_header_layout(std::span<const uint8_t> c0);

// `c0` without its feature-name table, which is informational only (names for the feature bits):
// the same header in fewer bytes, the backing file name moved up behind the end marker. Empty if
// the chain does not parse (no end marker, an extension running past the area) or the header
// length or backing file name do not fit in the cluster.
std::vector<uint8_t> header_without_feature_table(std::span<const uint8_t> c0);

}  // namespace keel::format
