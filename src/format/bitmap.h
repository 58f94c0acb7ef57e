// Persistent dirty bitmaps on disk: the bitmap directory and the bitmap tables (qcow2.txt,
// "Bitmaps"). Pure functions on bytes, no I/O.
//
// Directory: `nb_bitmaps` variable-length entries, back to back, each padded to 8 bytes:
//   0 u64 table_offset · 8 u32 table_size · 12 u32 flags (0 in_use, 1 auto, 2 extra_data_compatible)
//   · 16 u8 type (1 = dirty tracking) · 17 u8 granularity_bits · 18 u16 name_size
//   · 20 u32 extra_data_size · 24 extra data · name (no NUL) · zero padding.
// Table: `table_size` u64 entries, contiguous in the file; bits 9-55 the offset of one cluster of
// bitmap data; offset 0 means the cluster reads as zeros (bit 0 clear) or ones (bit 0 set).
// Data: bit i of the bitmap (guest bytes [i << granularity_bits, (i + 1) << granularity_bits))
// is bit i % 8 of byte i / 8; the data is ceil(bits / 64) * 8 bytes, as QEMU serializes it.
//
// Invariants after decode_bitmap_directory() succeeds (anything else is a kCorrupt error naming
// the entry, field and value): exactly nb_bitmaps entries that fill the directory exactly; every
// entry has type 1, granularity_bits 9..31, a name of 1..1023 bytes unique in the directory, no
// flag but in_use and auto, no extra data (QEMU refuses both), a cluster-aligned non-zero table
// offset with the whole table inside the file, 1..2^27 table entries covering at most 512 MiB;
// and a bitmap not in use has exactly the table entries the virtual size needs.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "keel/status.h"

namespace keel::format {

inline constexpr uint32_t kBitmapInUse = 1u << 0;
inline constexpr uint32_t kBitmapAuto = 1u << 1;
inline constexpr uint32_t kBitmapExtraDataCompatible = 1u << 2;
inline constexpr uint32_t kBitmapKnownFlags = kBitmapInUse | kBitmapAuto;  // QEMU: the rest reserved
inline constexpr uint8_t kBitmapTypeDirtyTracking = 1;
inline constexpr uint64_t kBitmapTableOffsetMask = 0x00fffffffffffe00ull;  // bits 9-55
inline constexpr uint64_t kBitmapTableReserved = 0xff000000000001feull;    // bits 1-8, 56-63
inline constexpr uint64_t kBitmapTableAllOnes = 1;                          // bit 0, offset 0 only
inline constexpr uint64_t kBitmapEntryHeaderBytes = 24;

struct BitmapDirEntry {
  uint64_t table_offset = 0;
  uint32_t table_size = 0;  // entries
  uint32_t flags = 0;
  uint8_t type = kBitmapTypeDirtyTracking;
  uint8_t granularity_bits = 16;
  std::string name;

  bool in_use() const { return flags & kBitmapInUse; }
  bool is_auto() const { return flags & kBitmapAuto; }
  uint64_t granularity() const { return 1ull << granularity_bits; }
};

// What a directory is validated against.
struct BitmapGeometry {
  uint64_t cluster_size = 0;
  uint64_t virtual_size = 0;
  uint64_t file_size = 0;
};

// Bytes of one directory entry, padding included.
uint64_t bitmap_entry_bytes(uint64_t name_size, uint64_t extra_size = 0);
// Bits a bitmap of this granularity needs for `virtual_size` bytes.
uint64_t bitmap_bit_count(uint64_t virtual_size, uint32_t granularity_bits);
// Bytes of bitmap data: the bits rounded up to whole 64-bit words (QEMU's serialization size).
uint64_t bitmap_data_bytes(uint64_t virtual_size, uint32_t granularity_bits);
// Table entries (data clusters) that data needs.
uint64_t bitmap_table_entries(uint64_t virtual_size, uint32_t granularity_bits, uint64_t cluster_size);

// One directory entry as stored, nothing validated: the lenient reading `keel check` judges
// entry by entry (decode_bitmap_directory is the strict one, built on it).
struct BitmapDirEntryRaw {
  BitmapDirEntry entry;     // name filled only when it fits in the directory
  uint16_t name_size = 0;
  uint32_t extra_size = 0;
  bool fits = false;        // header, extra data and name all inside the directory
  uint64_t bytes() const { return bitmap_entry_bytes(name_size, extra_size); }
};
// Reads the entry at `offset` of `dir`; nullopt when its 24-byte header runs past the directory.
std::optional<BitmapDirEntryRaw> read_bitmap_dir_entry(std::span<const uint8_t> dir, uint64_t offset);

// Why one bitmap table entry is malformed (reserved bits, the all-ones bit with an offset, a
// misaligned offset), or nullptr. Says nothing about where the offset points.
const char* bitmap_table_entry_problem(uint64_t entry, uint64_t cluster_size);

// Checks one entry as QEMU's check_dir_entry does, plus the table being inside the file.
// `index` only names the entry in the message.
Status validate_bitmap_entry(const BitmapDirEntry& e, const BitmapGeometry& g, uint32_t index);

// Decodes and validates a whole directory (see the invariants above).
Result<std::vector<BitmapDirEntry>> decode_bitmap_directory(std::span<const uint8_t> dir, uint32_t nb_bitmaps,
                                                            const BitmapGeometry& g);
// Encodes entries back to back (no extra data), each padded to 8 bytes.
std::vector<uint8_t> encode_bitmap_directory(const std::vector<BitmapDirEntry>& entries);

// Decodes a bitmap table of `e.table_size` entries and validates each: no reserved bit, a
// cluster-aligned offset inside the file, the all-ones bit only without an offset.
Result<std::vector<uint64_t>> decode_bitmap_table(std::span<const uint8_t> bytes, const BitmapDirEntry& e,
                                                  const BitmapGeometry& g);
std::vector<uint8_t> encode_bitmap_table(const std::vector<uint64_t>& table);

}  // namespace keel::format
