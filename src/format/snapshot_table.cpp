// Snapshot table decode/encode (see snapshot_table.h).
#include "format/snapshot_table.h"
#include <algorithm>

#include <fmt/format.h>

#include "format/endian.h"
#include "keel/limits.h"

namespace keel::format {

Result<std::vector<SnapshotEntry>> decode_snapshot_table(std::span<const uint8_t> t, uint32_t count,
                                                         uint64_t cluster_size) {
  std::vector<SnapshotEntry> out;
  uint64_t off = 0;
  for (uint32_t i = 0; i < count; ++i) {
    if (off + 40 > t.size())
      return error(corrupt(fmt::format("snapshot table entry {} at offset {} runs past the table", i, off)));
    const uint8_t* p = &t[off];
    SnapshotEntry e;
    e.l1_table_offset = get_be64(p);
    e.l1_size = get_be32(p + 8);
    uint16_t id_len = get_be16(p + 12);
    uint16_t name_len = get_be16(p + 14);
    e.date_sec = get_be32(p + 16);
    e.date_nsec = get_be32(p + 20);
    e.vm_clock_nsec = get_be64(p + 24);
    e.vm_state_size = get_be32(p + 32);
    uint32_t extra = get_be32(p + 36);
    if (extra > limits::kMaxSnapshotExtraData)
      return error(corrupt(fmt::format("snapshot {} extra_data_size = {} exceeds {}", i, extra,
                                       limits::kMaxSnapshotExtraData)));
    if (e.l1_table_offset % cluster_size != 0)
      return error(corrupt(fmt::format("snapshot {} l1_table_offset = {:#x} is not cluster aligned", i,
                                       e.l1_table_offset)));
    if (uint64_t(e.l1_size) * 8 > limits::kMaxL1Bytes)
      return error(corrupt(fmt::format("snapshot {} l1_size = {} exceeds the 32 MiB L1 limit", i, e.l1_size)));
    uint64_t len = 40ull + extra + id_len + name_len;
    if (off + len > t.size())
      return error(corrupt(fmt::format(
          "snapshot table entry {} at offset {} runs past the table (extra_data_size = {}, id_str_size = {}, "
          "name_size = {})", i, off, extra, id_len, name_len)));
    e.extra.assign(p + 40, p + 40 + extra);
    if (extra >= 8) e.vm_state_size = get_be64(p + 40);
    if (extra >= 16) e.disk_size = get_be64(p + 48);
    if (extra >= 24) e.icount = get_be64(p + 56);
    e.id.assign(reinterpret_cast<const char*>(p + 40 + extra), id_len);
    e.name.assign(reinterpret_cast<const char*>(p + 40 + extra + id_len), name_len);
    out.push_back(std::move(e));
    off += (len + 7) / 8 * 8;
  }
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
    size_t len = 40 + extra.size() + e.id.size() + e.name.size();
    size_t base = t.size();
    t.resize(base + (len + 7) / 8 * 8, 0);
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
