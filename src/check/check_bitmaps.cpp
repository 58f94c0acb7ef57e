// keel check: persistent dirty bitmaps (the bitmaps header extension, its directory and tables).
//
// Bitmaps count only while autoclear bit 0 is set, as in QEMU (a program unaware of bitmaps
// clears the bit, and then every bitmap is stale and its clusters are leaks). Bitmaps are claimed
// last: a bitmap structure that collides with anything else loses.
// Repair: a bad bitmap table entry becomes "all ones" (every bit dirty: an incremental backup then
// copies more, never less); a bad directory or table drops every bitmap by clearing autoclear bit
// 0 (one 8-byte write in the header's first sector), and their clusters are then freed.
#include <fmt/format.h>

#include "check/checker.h"
#include "format/bitmap.h"
#include "format/endian.h"
#include "keel/limits.h"

namespace keel::check {

using namespace format;

namespace {
// A directory entry as stored (format/'s BitmapDirEntry) and its extra data size.
struct Bitmap : BitmapDirEntry {
  uint32_t extra_size = 0;
};
}  // namespace

Status Checker::check_bitmaps() {
  if (!(h_.autoclear & kAutoclearBitmaps) || !h_.bitmaps) return Status::ok();
  const BitmapsExtension& ext = *h_.bitmaps;
  const uint64_t cs = g_.cluster_size;
  std::string load_error;  // QEMU cannot load the directory: its check fails
  std::string damage;      // a bitmap structure is out of the file or collides with something
  std::vector<Bitmap> bitmaps;

  if (ext.directory_size == 0) {
    load_error = "Requested bitmap directory size is zero";
  } else if (ext.directory_size > limits::kMaxBitmapDirectoryBytes) {
    load_error = "Requested bitmap directory size is too big";
  } else if (!g_.range_in_file(ext.directory_offset, ext.directory_size)) {
    damage = fmt::format(
        "ERROR: counting reference for region exceeding the end of the file by one cluster or more: "
        "offset 0x{:x} size 0x{:x}",
        ext.directory_offset, ext.directory_size);
  } else {
    std::vector<uint8_t> dir(ext.directory_size);
    KEEL_TRY(read(ext.directory_offset, dir));
    uint64_t pos = 0;
    while (pos < dir.size() && load_error.empty()) {
      // format/'s lenient entry reader: check judges each entry with QEMU's messages.
      std::optional<BitmapDirEntryRaw> raw = read_bitmap_dir_entry(dir, pos);
      if (!raw || !raw->fits) {
        load_error = "Broken bitmap directory";
        break;
      }
      Bitmap b;
      static_cast<BitmapDirEntry&>(b) = std::move(raw->entry);
      b.extra_size = raw->extra_size;
      const uint16_t name_size = raw->name_size;
      const uint64_t len = raw->bytes();
      if (bitmaps.size() >= ext.nb_bitmaps) {
        load_error = "More bitmaps found than specified in header extension";
      } else if (b.extra_size != 0) {
        load_error = "Bitmap extra data is not supported";
      } else {
        uint64_t phys = uint64_t(b.table_size) * cs;
        bool bad = b.table_size == 0 || b.table_offset == 0 || b.table_offset % cs ||
                   b.table_size > limits::kMaxBitmapTableEntries ||
                   b.granularity_bits > limits::kMaxBitmapGranularityBits ||
                   b.granularity_bits < limits::kMinBitmapGranularityBits || (b.flags & ~kBitmapKnownFlags) ||
                   name_size > limits::kMaxBitmapNameSize || b.type != 1 || phys > limits::kMaxBitmapPhysBytes ||
                   (!(b.flags & kBitmapInUse) && g_.virtual_size > ((phys * 8) << b.granularity_bits));
        if (bad) load_error = fmt::format("Bitmap '{}' doesn't satisfy the constraints", b.name);
        // QEMU loads a bitmap that is not in use only if its table has exactly the size the
        // bitmap needs (one bit per granule, serialized in 64-bit words).
        if (!bad && !(b.flags & kBitmapInUse)) {
          uint64_t bits = (g_.virtual_size + (1ull << b.granularity_bits) - 1) >> b.granularity_bits;
          uint64_t bytes = (bits + 63) / 64 * 8;
          if (b.table_size != (bytes + cs - 1) / cs)
            load_error = fmt::format("Could not read bitmap '{}' from image: its table has {} entries, not {}", b.name,
                                     b.table_size, (bytes + cs - 1) / cs);
        }
      }
      bitmaps.push_back(std::move(b));
      pos += len;
    }
    if (load_error.empty() && bitmaps.size() != ext.nb_bitmaps)
      load_error = "Less bitmaps found than specified in header extension";
    if (load_error.empty() && pos != dir.size()) load_error = "Broken bitmap directory";
  }

  // Tentative claims: the directory, each table, each data cluster (nothing else may hold them).
  auto collides = [&](uint64_t offset, uint64_t bytes) {
    for (uint64_t c = g_.cluster_of(offset); c <= g_.cluster_of(offset + bytes - 1) && c < g_.slots; ++c)
      if (map_.owner(c) != Owner::kNone || map_.count(c) > 0) return true;
    return false;
  };
  auto tag = [&](uint64_t offset, uint64_t bytes, Owner o) {
    for (uint64_t c = g_.cluster_of(offset); c <= g_.cluster_of(offset + bytes - 1) && c < g_.slots; ++c)
      map_.set_owner(c, o);
  };
  if (load_error.empty() && damage.empty()) {
    if (collides(ext.directory_offset, ext.directory_size))
      damage = fmt::format("ERROR bitmap directory at offset 0x{:x} overlaps the {}", ext.directory_offset,
                           owner_name(owner_of_range(ext.directory_offset, ext.directory_size)));
    else
      tag(ext.directory_offset, ext.directory_size, Owner::kBitmapDirectory);
  }
  for (const Bitmap& b : bitmaps) {
    if (!load_error.empty() || !damage.empty()) break;
    uint64_t bytes = uint64_t(b.table_size) * 8;
    if (!g_.range_in_file(b.table_offset, bytes))
      damage = fmt::format("ERROR bitmap '{}': bitmap table at offset 0x{:x} is outside image", b.name, b.table_offset);
    else if (collides(b.table_offset, bytes))
      damage = fmt::format("ERROR bitmap '{}': bitmap table at offset 0x{:x} overlaps the {}", b.name, b.table_offset,
                           owner_name(owner_of_range(b.table_offset, bytes)));
    else
      tag(b.table_offset, bytes, Owner::kBitmapTable);
  }
  for (const Bitmap& b : bitmaps) {
    if (!load_error.empty() || !damage.empty()) break;
    std::vector<uint8_t> table(uint64_t(b.table_size) * 8);
    KEEL_TRY(read(b.table_offset, table));
    bool dirty = false;
    for (uint64_t k = 0; k < b.table_size; ++k) {
      uint64_t e = get_be64(&table[k * 8]), off = e & kBitmapTableOffsetMask;
      std::string why;
      if (bitmap_table_entry_problem(e, cs)) {
        why = "is invalid";
        // QEMU loads every bitmap not in use when it opens the image, and refuses the image then.
        if (!(b.flags & kBitmapInUse) && !fixing() && load_error.empty())
          load_error = fmt::format("Could not read bitmap '{}' from image: bitmap table entry {} = 0x{:x} is invalid",
                                   b.name, k, e);
      }
      else if (off && !g_.range_in_file(off, cs)) why = "points outside image";
      else if (off && collides(off, cs)) {
        Owner o = owner_of_range(off, cs);
        why = o == Owner::kNone ? "points at a cluster something else uses"
                                : fmt::format("points at the {}", owner_name(o));
      }
      if (why.empty()) {
        if (off) tag(off, cs, Owner::kBitmapData);
        continue;
      }
      corruption(fmt::format("{} bitmap '{}': bitmap table entry {} = 0x{:x} {}", fix_prefix(), b.name, k, e, why));
      if (fixing()) {
        put_be64(&table[k * 8], kBitmapTableAllOnes);  // every bit of that range dirty
        dirty = true;
      }
    }
    if (dirty) KEEL_TRY(write(b.table_offset, table));
  }

  if (!load_error.empty() && !fixing()) {
    corruption("ERROR " + load_error);
    return Status(Code::kCorrupt, load_error, EINVAL);
  }
  if (!load_error.empty() || !damage.empty()) {
    corruption(load_error.empty() ? damage : "ERROR " + load_error);
    if (fixing()) {
      report("Repairing: dropping every persistent bitmap (autoclear bit 0 cleared)");
      drop_bitmaps_ = true;
    }
    for (uint64_t c = 0; c < g_.slots; ++c) {
      Owner o = map_.owner(c);
      if (o == Owner::kBitmapDirectory || o == Owner::kBitmapTable || o == Owner::kBitmapData)
        map_.set_owner(c, Owner::kNone);
    }
    return Status::ok();
  }
  for (uint64_t c = 0; c < g_.slots; ++c) {
    Owner o = map_.owner(c);
    if (o == Owner::kBitmapDirectory || o == Owner::kBitmapTable || o == Owner::kBitmapData) map_.add(c, 1);
  }
  return Status::ok();
}

Status Checker::drop_bitmaps() {
  uint8_t v[8];
  put_be64(v, h_.autoclear & ~kAutoclearBitmaps);
  KEEL_TRY(write(kOffsetAutoclear, v));
  h_.autoclear &= ~kAutoclearBitmaps;
  return Status::ok();
}

}  // namespace keel::check
