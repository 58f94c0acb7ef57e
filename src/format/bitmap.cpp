// Bitmap directory and bitmap table codec and validation (see bitmap.h for the invariants).
#include "format/bitmap.h"

#include <fmt/format.h>

#include <cstring>
#include <unordered_set>

#include "format/endian.h"
#include "keel/limits.h"

namespace keel::format {
namespace {

Status bad_entry(uint32_t index, const std::string& name, const char* field, uint64_t value, const std::string& why) {
  return corrupt(fmt::format("bitmap directory entry {} ('{}'): {} = {} ({})", index, name, field, value, why));
}

uint64_t div_up(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

}  // namespace

uint64_t bitmap_entry_bytes(uint64_t name_size, uint64_t extra_size) {
  return div_up(kBitmapEntryHeaderBytes + extra_size + name_size, 8) * 8;
}

uint64_t bitmap_bit_count(uint64_t virtual_size, uint32_t granularity_bits) {
  return div_up(virtual_size, 1ull << granularity_bits);
}

uint64_t bitmap_data_bytes(uint64_t virtual_size, uint32_t granularity_bits) {
  return div_up(bitmap_bit_count(virtual_size, granularity_bits), 64) * 8;
}

uint64_t bitmap_table_entries(uint64_t virtual_size, uint32_t granularity_bits, uint64_t cluster_size) {
  return div_up(bitmap_data_bytes(virtual_size, granularity_bits), cluster_size);
}

Status validate_bitmap_entry(const BitmapDirEntry& e, const BitmapGeometry& g, uint32_t i) {
  const std::string& n = e.name;
  if (e.name.empty() || e.name.size() > limits::kMaxBitmapNameSize)
    return bad_entry(i, n, "name_size", e.name.size(), "must be 1..1023");
  if (e.type != kBitmapTypeDirtyTracking) return bad_entry(i, n, "type", e.type, "only 1 (dirty tracking) is defined");
  if (e.granularity_bits < limits::kMinBitmapGranularityBits || e.granularity_bits > limits::kMaxBitmapGranularityBits)
    return bad_entry(i, n, "granularity_bits", e.granularity_bits, "must be 9..31");
  if (e.flags & ~kBitmapKnownFlags) return bad_entry(i, n, "flags", e.flags, "reserved bits set");
  if (e.table_size == 0 || e.table_size > limits::kMaxBitmapTableEntries)
    return bad_entry(i, n, "bitmap_table_size", e.table_size, "must be 1..134217728");
  if (uint64_t(e.table_size) * g.cluster_size > limits::kMaxBitmapPhysBytes)
    return bad_entry(i, n, "bitmap_table_size", e.table_size, "bitmap data larger than 512 MiB");
  if (e.table_offset == 0 || e.table_offset % g.cluster_size != 0 || e.table_offset > limits::kMaxHostOffset)
    return bad_entry(i, n, "bitmap_table_offset", e.table_offset, "not a cluster-aligned, non-zero offset");
  const uint64_t table_bytes = uint64_t(e.table_size) * 8;
  if (e.table_offset + table_bytes > g.file_size)
    return bad_entry(i, n, "bitmap_table_offset", e.table_offset,
                     fmt::format("table of {} bytes ends past the end of the file ({} bytes)", table_bytes, g.file_size));
  if (!e.in_use()) {
    // A bitmap that was stored correctly has exactly the table its size needs (QEMU refuses
    // anything else); one in use may have been left behind by a resize.
    uint64_t want = bitmap_table_entries(g.virtual_size, e.granularity_bits, g.cluster_size);
    if (e.table_size != want)
      return bad_entry(i, n, "bitmap_table_size", e.table_size,
                       fmt::format("a bitmap of a {}-byte disk at granularity {} needs {} entries", g.virtual_size,
                                   e.granularity(), want));
  }
  return Status::ok();
}

std::optional<BitmapDirEntryRaw> read_bitmap_dir_entry(std::span<const uint8_t> dir, uint64_t off) {
  if (off > dir.size() || dir.size() - off < kBitmapEntryHeaderBytes) return std::nullopt;
  const uint8_t* p = &dir[off];
  BitmapDirEntryRaw r;
  r.entry.table_offset = get_be64(p);
  r.entry.table_size = get_be32(p + 8);
  r.entry.flags = get_be32(p + 12);
  r.entry.type = p[16];
  r.entry.granularity_bits = p[17];
  r.name_size = get_be16(p + 18);
  r.extra_size = get_be32(p + 20);
  r.fits = off + kBitmapEntryHeaderBytes + r.extra_size + r.name_size <= dir.size();
  if (r.fits)
    r.entry.name.assign(reinterpret_cast<const char*>(p + kBitmapEntryHeaderBytes + r.extra_size), r.name_size);
  return r;
}

const char* bitmap_table_entry_problem(uint64_t v, uint64_t cluster_size) {
  const uint64_t off = v & kBitmapTableOffsetMask;
  if (v & kBitmapTableReserved) return "reserved bits set";
  if (off && (v & kBitmapTableAllOnes)) return "all-ones bit set together with an offset";
  if (off % cluster_size) return "offset not cluster aligned";
  return nullptr;
}

Result<std::vector<BitmapDirEntry>> decode_bitmap_directory(std::span<const uint8_t> dir, uint32_t nb,
                                                            const BitmapGeometry& g) {
  if (nb == 0 || nb > limits::kMaxBitmaps)
    return error(corrupt(fmt::format("bitmaps extension: nb_bitmaps = {} (must be 1..{})", nb, limits::kMaxBitmaps)));
  if (dir.size() > limits::kMaxBitmapDirectoryBytes)
    return error(corrupt(fmt::format("bitmaps extension: bitmap_directory_size = {} (more than {})", dir.size(),
                                     limits::kMaxBitmapDirectoryBytes)));
  std::vector<BitmapDirEntry> out;
  std::unordered_set<std::string> names;
  uint64_t off = 0;
  for (uint32_t i = 0; i < nb; ++i) {
    std::optional<BitmapDirEntryRaw> raw = read_bitmap_dir_entry(dir, off);
    if (!raw)
      return error(corrupt(fmt::format("bitmap directory entry {} at offset {} runs past the directory ({} bytes)", i,
                                       off, dir.size())));
    BitmapDirEntry& e = raw->entry;
    const uint16_t name_size = raw->name_size;
    const uint32_t extra_size = raw->extra_size;
    if (extra_size != 0)
      return error(corrupt(fmt::format("bitmap directory entry {}: extra_data_size = {} (extra data is not supported)",
                                       i, extra_size)));
    if (name_size == 0 || name_size > limits::kMaxBitmapNameSize)
      return error(corrupt(fmt::format("bitmap directory entry {}: name_size = {} (must be 1..{})", i, name_size,
                                       limits::kMaxBitmapNameSize)));
    const uint64_t len = raw->bytes();
    if (!raw->fits)
      return error(corrupt(fmt::format("bitmap directory entry {} at offset {} runs past the directory ({} bytes)", i,
                                       off, dir.size())));
    KEEL_TRY_R(validate_bitmap_entry(e, g, i));
    if (!names.insert(e.name).second)
      return error(corrupt(fmt::format("bitmap directory entry {}: name '{}' is not unique", i, e.name)));
    out.push_back(std::move(e));
    off += len;
  }
  if (off != dir.size())
    return error(corrupt(fmt::format("bitmap directory: {} entries take {} bytes but bitmap_directory_size = {}", nb,
                                     off, dir.size())));
  return out;
}

std::vector<uint8_t> encode_bitmap_directory(const std::vector<BitmapDirEntry>& entries) {
  std::vector<uint8_t> out;
  for (const auto& e : entries) {
    size_t base = out.size();
    out.resize(base + bitmap_entry_bytes(e.name.size()), 0);
    uint8_t* p = &out[base];
    put_be64(p, e.table_offset);
    put_be32(p + 8, e.table_size);
    put_be32(p + 12, e.flags);
    p[16] = e.type;
    p[17] = e.granularity_bits;
    put_be16(p + 18, static_cast<uint16_t>(e.name.size()));
    put_be32(p + 20, 0);
    std::memcpy(p + kBitmapEntryHeaderBytes, e.name.data(), e.name.size());
  }
  return out;
}

Result<std::vector<uint64_t>> decode_bitmap_table(std::span<const uint8_t> bytes, const BitmapDirEntry& e,
                                                  const BitmapGeometry& g) {
  if (bytes.size() < uint64_t(e.table_size) * 8)
    return error(invalid(fmt::format("bitmap '{}': table buffer of {} bytes is too short", e.name, bytes.size())));
  std::vector<uint64_t> t(e.table_size);
  for (uint32_t k = 0; k < e.table_size; ++k) {
    uint64_t v = get_be64(&bytes[uint64_t(k) * 8]);
    uint64_t off = v & kBitmapTableOffsetMask;
    const char* why = bitmap_table_entry_problem(v, g.cluster_size);
    if (!why && off && off + g.cluster_size > g.file_size) why = "offset past the end of the file";
    if (why)
      return error(corrupt(fmt::format("bitmap '{}': bitmap table entry {} = {:#x} ({})", e.name, k, v, why)));
    t[k] = v;
  }
  return t;
}

std::vector<uint8_t> encode_bitmap_table(const std::vector<uint64_t>& table) {
  std::vector<uint8_t> out(table.size() * 8);
  for (size_t k = 0; k < table.size(); ++k) put_be64(&out[k * 8], table[k]);
  return out;
}

}  // namespace keel::format
