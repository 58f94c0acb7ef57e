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

// Decodes `count` entries from `table`; cluster_size bounds alignment checks.
Result<std::vector<SnapshotEntry>> decode_snapshot_table(std::span<const uint8_t> table, uint32_t count,
                                                         uint64_t cluster_size);
// Encodes entries (each padded to 8 bytes). v3 images get at least 24 bytes of extra data.
std::vector<uint8_t> encode_snapshot_table(const std::vector<SnapshotEntry>& entries, uint32_t version);

}  // namespace keel::format
