// Snapshot table decode/encode (see snapshot_table.h).
#include "format/snapshot_table.h"
#include <algorithm>

#include <fmt/format.h>

#include "format/endian.h"
#include "keel/limits.h"

namespace keel::format {

SnapshotEntryHeader decode_snapshot_entry_header(std::span<const uint8_t, kSnapshotEntryHeaderBytes> b) {
  const uint8_t* p = b.data();
  SnapshotEntryHeader h;
  h.l1_table_offset = get_be64(p);
  h.l1_size = get_be32(p + 8);
  h.id_size = get_be16(p + 12);
  h.name_size = get_be16(p + 14);
  h.date_sec = get_be32(p + 16);
  h.date_nsec = get_be32(p + 20);
  h.vm_clock_nsec = get_be64(p + 24);
  h.vm_state_size = get_be32(p + 32);
  h.extra_size = get_be32(p + 36);
  return h;
}

uint64_t snapshot_entry_bytes(uint64_t extra_size, uint64_t id_size, uint64_t name_size) {
  return (kSnapshotEntryHeaderBytes + extra_size + id_size + name_size + 7) / 8 * 8;
}

SnapshotEntry make_snapshot_entry(const SnapshotEntryHeader& h, std::vector<uint8_t> extra, std::string id,
                                  std::string name) {
  SnapshotEntry e;
  e.l1_table_offset = h.l1_table_offset;
  e.l1_size = h.l1_size;
  e.date_sec = h.date_sec;
  e.date_nsec = h.date_nsec;
  e.vm_clock_nsec = h.vm_clock_nsec;
  e.vm_state_size = h.vm_state_size;
  if (extra.size() >= 8) e.vm_state_size = get_be64(&extra[0]);
  if (extra.size() >= 16) e.disk_size = get_be64(&extra[8]);
  if (extra.size() >= 24) e.icount = get_be64(&extra[16]);
  e.extra = std::move(extra);
  e.id = std::move(id);
  e.name = std::move(name);
  return e;
}

Result<std::vector<SnapshotEntry>> decode_snapshot_table(std::span<const uint8_t> t, uint32_t count,
                                                         uint64_t cluster_size, uint64_t* table_bytes) {
  std::vector<SnapshotEntry> out;
  uint64_t off = 0;
  for (uint32_t i = 0; i < count; ++i) {
    if (off + kSnapshotEntryHeaderBytes > t.size())
      return error(corrupt(fmt::format("snapshot table entry {} at offset {} runs past the table", i, off)));
    const uint8_t* p = &t[off];
    const SnapshotEntryHeader h = decode_snapshot_entry_header(t.subspan(off).first<kSnapshotEntryHeaderBytes>());
    if (h.extra_size > limits::kMaxSnapshotExtraData)
      return error(corrupt(fmt::format("snapshot {} extra_data_size = {} exceeds {}", i, h.extra_size,
                                       limits::kMaxSnapshotExtraData)));
    if (h.l1_table_offset % cluster_size != 0)
      return error(corrupt(fmt::format("snapshot {} l1_table_offset = {:#x} is not cluster aligned", i,
                                       h.l1_table_offset)));
    if (uint64_t(h.l1_size) * 8 > limits::kMaxL1Bytes)
      return error(corrupt(fmt::format("snapshot {} l1_size = {} exceeds the 32 MiB L1 limit", i, h.l1_size)));
    if (off + h.unpadded_bytes() > t.size())
      return error(corrupt(fmt::format(
          "snapshot table entry {} at offset {} runs past the table (extra_data_size = {}, id_str_size = {}, "
          "name_size = {})", i, off, h.extra_size, h.id_size, h.name_size)));
    const uint8_t* extra = p + kSnapshotEntryHeaderBytes;
    const char* id = reinterpret_cast<const char*>(extra + h.extra_size);
    out.push_back(make_snapshot_entry(h, std::vector<uint8_t>(extra, extra + h.extra_size),
                                      std::string(id, h.id_size), std::string(id + h.id_size, h.name_size)));
    off += snapshot_entry_bytes(h.extra_size, h.id_size, h.name_size);
  }
  if (table_bytes) *table_bytes = off;
  return out;
}

std::vector<uint8_t> encode_snapshot_table(const std::vector<SnapshotEntry>& entries, uint32_t version) {
  std::vector<uint8_t> t;
  for (const auto& e : entries) {
    std::vector<uint8_t> extra = e.extra;
    size_t min_extra = version >= 3 ? 24 : 0;
    if (extra.size() < min_extra) extra.resize(min_extra, 0);
    if (extra.size() >= 8) put_be64(&extra[0], e.vm_state_size);
    if (extra.size() >= 16) put_be64(&extra[8], e.disk_size);
    if (extra.size() >= 24) put_be64(&extra[16], e.icount);
    size_t base = t.size();
    t.resize(base + snapshot_entry_bytes(extra.size(), e.id.size(), e.name.size()), 0);
    uint8_t* p = &t[base];
    put_be64(p, e.l1_table_offset);
    put_be32(p + 8, e.l1_size);
    put_be16(p + 12, static_cast<uint16_t>(e.id.size()));
    put_be16(p + 14, static_cast<uint16_t>(e.name.size()));
    put_be32(p + 16, e.date_sec);
    put_be32(p + 20, e.date_nsec);
    put_be64(p + 24, e.vm_clock_nsec);
    put_be32(p + 32, e.vm_state_size > UINT32_MAX ? 0 : static_cast<uint32_t>(e.vm_state_size));
    put_be32(p + 36, static_cast<uint32_t>(extra.size()));
    // std::copy: an empty field has no data() to memcpy from (UBSan found it).
    std::copy(extra.begin(), extra.end(), p + 40);
    std::copy(e.id.begin(), e.id.end(), p + 40 + extra.size());
    std::copy(e.name.begin(), e.name.end(), p + 40 + extra.size() + e.id.size());
  }
  return t;
}

}  // namespace keel::format
