// The internal snapshot table: a contiguous run of variable-length, 8-byte-aligned entries.
//
// Invariants after decode_snapshot_table() succeeds: at most nb_snapshots entries each fully
// inside the buffer; every L1 offset cluster-aligned with l1_size*8 <= 32 MiB; extra data at most
// 1 KiB (QEMU's limit); ids unique is NOT enforced (QEMU's check reports it, we only read).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "keel/status.h"

namespace keel::format {

struct SnapshotEntry {
  uint64_t l1_table_offset = 0;
  uint32_t l1_size = 0;
  uint32_t date_sec = 0;
  uint32_t date_nsec = 0;
  uint64_t vm_clock_nsec = 0;
  uint64_t vm_state_size = 0;  // from the 64-bit extra field when present
  uint64_t disk_size = 0;      // 0 when absent from extra data
  uint64_t icount = UINT64_MAX;
  std::string id;
  std::string name;
  std::vector<uint8_t> extra;  // raw extra data, preserved on rewrite
};

// The fixed part of an entry: 0 u64 l1_table_offset · 8 u32 l1_size · 12 u16 id_str_size
// · 14 u16 name_size · 16 u32 date_sec · 20 u32 date_nsec · 24 u64 vm_clock_nsec
// · 32 u32 vm_state_size · 36 u32 extra_data_size; then extra data, id, name, padding to 8.
inline constexpr uint64_t kSnapshotEntryHeaderBytes = 40;

// An entry's fixed part as stored, nothing validated: the lenient reading `keel check` judges
// entry by entry (decode_snapshot_table is the strict one, built on it).
struct SnapshotEntryHeader {
  uint64_t l1_table_offset = 0;
  uint32_t l1_size = 0;
  uint16_t id_size = 0;
  uint16_t name_size = 0;
  uint32_t date_sec = 0;
  uint32_t date_nsec = 0;
  uint64_t vm_clock_nsec = 0;
  uint32_t vm_state_size = 0;
  uint32_t extra_size = 0;

  // Bytes from the entry's start to the end of its name (no padding).
  uint64_t unpadded_bytes() const { return kSnapshotEntryHeaderBytes + extra_size + id_size + name_size; }
};
SnapshotEntryHeader decode_snapshot_entry_header(std::span<const uint8_t, kSnapshotEntryHeaderBytes> bytes);

// Bytes one entry takes in the table, padding included.
uint64_t snapshot_entry_bytes(uint64_t extra_size, uint64_t id_size, uint64_t name_size);

// An entry from its header, extra data, id and name: vm_state_size, disk_size and icount come
// from the extra data where it is long enough (disk_size 0 and icount UINT64_MAX where not).
SnapshotEntry make_snapshot_entry(const SnapshotEntryHeader& h, std::vector<uint8_t> extra, std::string id,
                                  std::string name);

// Decodes `count` entries from `table`; cluster_size bounds alignment checks. `table_bytes`, if
// given, receives the bytes the entries take (the on-disk length of the table).
Result<std::vector<SnapshotEntry>> decode_snapshot_table(std::span<const uint8_t> table, uint32_t count,
                                                         uint64_t cluster_size, uint64_t* table_bytes = nullptr);
// Encodes entries (each padded to 8 bytes). v3 images get at least 24 bytes of extra data.
std::vector<uint8_t> encode_snapshot_table(const std::vector<SnapshotEntry>& entries, uint32_t version);

}  // namespace keel::format
