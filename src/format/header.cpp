// Decoding, validation and encoding of the qcow2 header (see header.h for the invariants).
#include "format/header.h"

#include <fmt/format.h>

#include "format/endian.h"
#include "format/header_layout.h"
#include "format/luks_header.h"
#include "keel/limits.h"

namespace keel::format {
namespace {

constexpr uint32_t kFeatureEntrySize = 48;

struct KnownFeature {
  uint8_t type;
  uint8_t bit;
  const char* name;
};
constexpr KnownFeature kKnownFeatures[] = {
    {0, 0, "dirty bit"},          {0, 1, "corrupt bit"},       {0, 2, "external data file"},
    {0, 3, "compression type"},   {0, 4, "extended L2 entries"}, {1, 0, "lazy refcounts"},
    {2, 0, "bitmaps"},            {2, 1, "raw external data"},
};

Status bad(const char* field, uint64_t value, const std::string& why) {
  return corrupt(fmt::format("invalid qcow2 header field {} = {} ({})", field, value, why));
}

bool aligned(uint64_t off, uint64_t cs) { return off % cs == 0; }

// Validates a table [offset, offset + bytes) inside the file.
Status check_table(const char* field, uint64_t offset, uint64_t bytes, uint64_t cs,
                   uint64_t file_size) {
  if (!aligned(offset, cs)) return bad(field, offset, "not cluster aligned");
  if (offset > limits::kMaxHostOffset) return bad(field, offset, "beyond the 2^56 limit");
  if (bytes > 0 && offset == 0) return bad(field, offset, "table overlaps the header");
  if (bytes > 0 && offset + bytes > file_size)
    return bad(field, offset, fmt::format("table of {} bytes ends past the end of the file ({} bytes)",
                                          bytes, file_size));
  return Status::ok();
}

// Decodes the extensions the chain walk (header_layout.cpp) finds between header_length and `end`.
Status parse_extensions(Header& h, std::span<const uint8_t> c0, uint64_t end) {
  const ExtensionChain chain = walk_extensions(c0, h.header_length, end);
  for (const ExtensionSlot& slot : chain.slots) {
    const uint32_t type = slot.type, len = slot.length;
    if (slot.data_end() > end)
      return bad("header_extension_length", len, fmt::format("extension 0x{:08x} too large", type));
    const uint8_t* d = &c0[slot.data_offset()];
    switch (type) {
      case kExtBackingFormat:
        if (len >= 16) return bad("backing_format_length", len, "must be < 16");
        h.backing_format.assign(reinterpret_cast<const char*>(d), len);
        break;
      case kExtDataFile:
        if (len > limits::kMaxBackingNameLength) return bad("data_file_name_length", len, "too long");
        h.data_file.assign(reinterpret_cast<const char*>(d), len);
        break;
      case kExtFeatureTable:
        for (uint32_t i = 0; i + kFeatureEntrySize <= len && i / kFeatureEntrySize < limits::kMaxFeatureTableEntries;
             i += kFeatureEntrySize) {
          FeatureName f;
          f.type = d[i];
          f.bit = d[i + 1];
          const char* name = reinterpret_cast<const char*>(d + i + 2);
          f.name.assign(name, strnlen(name, 46));
          h.feature_names.push_back(std::move(f));
        }
        break;
      case kExtBitmaps: {
        if (len != 24) return bad("bitmaps_extension_length", len, "must be 24");
        BitmapsExtension b;
        b.nb_bitmaps = get_be32(d);
        uint32_t reserved = get_be32(d + 4);
        b.directory_size = get_be64(d + 8);
        b.directory_offset = get_be64(d + 16);
        if (!(h.autoclear & kAutoclearBitmaps)) {
          // Stale (written over by a program without bitmap support): QEMU checks only the
          // length and ignores the rest; so does Keel (see load_bitmap_directory).
          h.bitmaps = b;
          break;
        }
        if (reserved != 0) return bad("bitmaps_extension.reserved", reserved, "must be zero");
        if (b.nb_bitmaps == 0 || b.nb_bitmaps > limits::kMaxBitmaps)
          return bad("nb_bitmaps", b.nb_bitmaps, "must be 1..65535");
        if (b.directory_size > limits::kMaxBitmapDirectoryBytes)
          return bad("bitmap_directory_size", b.directory_size, "too large");
        if (!aligned(b.directory_offset, h.cluster_size()))
          return bad("bitmap_directory_offset", b.directory_offset, "not cluster aligned");
        h.bitmaps = b;
        break;
      }
      case kExtCrypto:
        if (len != 16) return bad("crypto_header_extension_length", len, "must be 16");
        h.crypto_offset = get_be64(d);
        h.crypto_length = get_be64(d + 8);
        break;
      default:
        h.unknown_extensions.push_back({type, std::vector<uint8_t>(d, d + len)});
        break;
    }
  }
  if (chain.too_many) return bad("header_extension", chain.stop, "too many extensions");
  // QEMU tolerates a missing end marker when the area is exhausted exactly.
  if (chain.terminated || chain.stop == end) return Status::ok();
  return bad("header_extension", chain.stop, "extension header crosses the end of the extension area");
}

}  // namespace

uint64_t Header::l1_entries_for(uint64_t virtual_size) const {
  uint64_t bytes_per_l1 = cluster_size() * l2_entries();
  return (virtual_size + bytes_per_l1 - 1) / bytes_per_l1;
}

bool is_qcow2(std::span<const uint8_t> start) {
  return start.size() >= 4 && get_be32(start.data()) == kQcowMagic;
}

Result<uint32_t> peek_cluster_bits(std::span<const uint8_t> start) {
  if (start.size() < 24) return error(corrupt("qcow2 header truncated"));
  if (!is_qcow2(start)) return error(corrupt("Image is not in qcow2 format"));
  uint32_t bits = get_be32(&start[20]);
  if (bits < limits::kMinClusterBits || bits > limits::kMaxClusterBits)
    return error(corrupt(fmt::format("Unsupported cluster size: 2^{}", bits)));  // QEMU's words
  return bits;
}

std::string unsupported_features_message(const std::vector<FeatureName>& table, uint64_t unknown) {
  // QEMU's report_unsupported_feature: the image's own names in table order (the table ends at
  // the first entry without a name), then the bits it does not name as one hex mask.
  std::string names;
  for (const auto& f : table) {
    if (f.name.empty()) break;
    if (f.type != 0 || f.bit >= 64 || !(unknown & (1ull << f.bit))) continue;
    names += (names.empty() ? "" : ", ") + f.name;
    unknown &= ~(1ull << f.bit);
  }
  if (unknown) names += fmt::format("{}Unknown incompatible feature: {:x}", names.empty() ? "" : ", ", unknown);
  return "Unsupported qcow2 feature(s): " + names;
}

Result<Header> decode_header(std::span<const uint8_t> c0, uint64_t file_size, bool check_mode) {
  if (c0.size() < kV2HeaderLength) return error(corrupt("qcow2 header truncated"));
  if (get_be32(&c0[0]) != kQcowMagic) return error(corrupt("Image is not in qcow2 format"));
  Header h;
  h.version = get_be32(&c0[4]);
  if (h.version != 2 && h.version != 3)
    return error(Status(Code::kUnsupported, fmt::format("Unsupported qcow2 version {}", h.version)));
  h.backing_file_offset = get_be64(&c0[8]);
  h.backing_file_size = get_be32(&c0[16]);
  KEEL_ASSIGN(h.cluster_bits, peek_cluster_bits(c0));
  const uint64_t cs = h.cluster_size();
  if (c0.size() < cs) return error(corrupt("qcow2 header cluster truncated"));
  h.size = get_be64(&c0[24]);
  h.crypt_method = get_be32(&c0[32]);
  h.l1_size = get_be32(&c0[36]);
  h.l1_table_offset = get_be64(&c0[40]);
  h.refcount_table_offset = get_be64(&c0[48]);
  h.refcount_table_clusters = get_be32(&c0[56]);
  h.nb_snapshots = get_be32(&c0[60]);
  h.snapshots_offset = get_be64(&c0[64]);
  if (h.version == 2) {
    h.header_length = kV2HeaderLength;
    h.refcount_order = 4;
  } else {
    if (c0.size() < 104) return error(corrupt("qcow2 v3 header truncated"));
    h.incompatible = get_be64(&c0[72]);
    h.compatible = get_be64(&c0[80]);
    h.autoclear = get_be64(&c0[88]);
    h.refcount_order = get_be32(&c0[96]);
    h.header_length = get_be32(&c0[100]);
    if (h.header_length < 104) return error(bad("header_length", h.header_length, "must be >= 104"));
    if (h.header_length % 8 != 0) return error(bad("header_length", h.header_length, "not a multiple of 8"));
    if (h.header_length > cs) return error(bad("header_length", h.header_length, "larger than a cluster"));
    if (h.header_length > 104) h.compression_type = c0[104];
  }
  if (h.crypt_method > kCryptLuks)
    return error(unsupported(fmt::format("Unsupported encryption method {}", h.crypt_method)));
  if (uint64_t unknown = h.incompatible & ~kIncompatKnown) {
    // Parse extensions first so an image's own feature table can name the bit.
    Header names = h;
    (void)parse_extensions(names, c0, std::min<uint64_t>(cs, h.backing_file_offset ? h.backing_file_offset : cs));
    return error(unsupported(unsupported_features_message(names.feature_names, unknown)));
  }
  if (h.refcount_order > limits::kMaxRefcountOrder)
    return error(bad("refcount_order", h.refcount_order, "must be <= 6"));
  if (h.extended_l2() && h.cluster_bits < limits::kMinExtL2ClusterBits)
    return error(bad("cluster_bits", h.cluster_bits, "extended L2 entries need clusters of 16 KiB or more"));
  // QEMU's words for the compression type and its incompatible bit 3.
  if (h.compression_type > 1)
    return error(unsupported(fmt::format("qcow2: unknown compression type: {}", h.compression_type)));
  if (h.compression_type != 0 && !(h.incompatible & kIncompatCompression))
    return error(corrupt("qcow2: Compression type incompatible feature bit must be set"));
  if (h.compression_type == 0 && (h.incompatible & kIncompatCompression))
    return error(corrupt("qcow2: Compression type incompatible feature bit must not be set"));
  if (h.data_file_raw() && !h.has_data_file())
    return error(bad("autoclear_features", h.autoclear, "raw external data without an external data file"));
  if (h.size > limits::kMaxVirtualSize) return error(bad("size", h.size, "too large"));

  // Header extensions live between header_length and the backing file name (or cluster end).
  uint64_t ext_end = cs;
  if (h.backing_file_offset != 0) {
    if (h.backing_file_offset > cs) return error(bad("backing_file_offset", h.backing_file_offset, "past cluster 0"));
    if (h.backing_file_size > limits::kMaxBackingNameLength || h.backing_file_size > cs - h.backing_file_offset)
      return error(bad("backing_file_size", h.backing_file_size, "too long"));
    if (h.backing_file_offset < h.header_length)
      return error(bad("backing_file_offset", h.backing_file_offset, "inside the header"));
    ext_end = h.backing_file_offset;
    h.backing_file.assign(reinterpret_cast<const char*>(&c0[h.backing_file_offset]), h.backing_file_size);
  }
  KEEL_TRY_R(parse_extensions(h, c0, ext_end));  // v2 images may carry extensions too
  if (h.crypt_method == kCryptLuks) {
    if (h.crypto_length == 0 && h.crypto_offset == 0)
      return error(bad("crypt_method", h.crypt_method, "LUKS without a full disk encryption header pointer extension"));
    if (h.crypto_length == 0 || h.crypto_length > kMaxLuksRegionBytes)
      return error(bad("crypto_header_length", h.crypto_length, "must be 1..64 MiB"));
    KEEL_TRY_R(check_table("crypto_header_offset", h.crypto_offset, h.crypto_length, cs, file_size));
  } else if (h.crypto_offset || h.crypto_length) {
    return error(bad("crypt_method", h.crypt_method, "crypto header extension without LUKS encryption"));
  }
  if (h.has_data_file() && h.backing_file_offset != 0 && h.data_file_raw())
    return error(bad("backing_file_offset", h.backing_file_offset, "backing file with raw external data"));

  // Tables.
  uint64_t l1_needed = h.l1_entries_for(h.size);
  if (uint64_t(h.l1_size) * 8 > limits::kMaxL1Bytes) return error(bad("l1_size", h.l1_size, "L1 table larger than 32 MiB"));
  if (h.l1_size < l1_needed)
    return error(bad("l1_size", h.l1_size, fmt::format("L1 table too small for size {} (needs {})", h.size, l1_needed)));
  KEEL_TRY_R(check_table("l1_table_offset", h.l1_table_offset, uint64_t(h.l1_size) * 8, cs, file_size));
  uint64_t rt_bytes = uint64_t(h.refcount_table_clusters) * cs;
  if (h.refcount_table_clusters == 0 && !check_mode)
    return error(bad("refcount_table_clusters", 0, "image has no refcount table"));
  if (rt_bytes > limits::kMaxReftableBytes)
    return error(bad("refcount_table_clusters", h.refcount_table_clusters, "refcount table larger than 8 MiB"));
  KEEL_TRY_R(check_table("refcount_table_offset", h.refcount_table_offset, rt_bytes, cs, file_size));
  if (h.nb_snapshots > limits::kMaxSnapshots)
    return error(bad("nb_snapshots", h.nb_snapshots, "more than 65536 snapshots"));
  if (h.nb_snapshots > 0 || h.snapshots_offset != 0)
    KEEL_TRY_R(check_table("snapshots_offset", h.snapshots_offset, h.nb_snapshots ? 40 : 0, cs, file_size));
  return h;
}

Result<std::vector<uint8_t>> encode_header(const Header& h) {
  const uint64_t cs = h.cluster_size();
  std::vector<uint8_t> c0(cs, 0);
  put_be32(&c0[0], kQcowMagic);
  put_be32(&c0[4], h.version);
  put_be32(&c0[20], h.cluster_bits);
  put_be64(&c0[24], h.size);
  put_be32(&c0[32], h.crypt_method);
  put_be32(&c0[36], h.l1_size);
  put_be64(&c0[40], h.l1_table_offset);
  put_be64(&c0[48], h.refcount_table_offset);
  put_be32(&c0[56], h.refcount_table_clusters);
  put_be32(&c0[60], h.nb_snapshots);
  put_be64(&c0[64], h.snapshots_offset);
  uint64_t off = kV2HeaderLength;
  if (h.version >= 3) {
    put_be64(&c0[72], h.incompatible);
    put_be64(&c0[80], h.compatible);
    put_be64(&c0[88], h.autoclear);
    put_be32(&c0[96], h.refcount_order);
    uint32_t hlen = std::max<uint32_t>(h.header_length, kV3HeaderLength);
    put_be32(&c0[100], hlen);
    c0[104] = h.compression_type;
    off = hlen;
  }
  auto add_ext = [&](uint32_t type, const uint8_t* data, size_t len) -> bool {
    uint64_t need = 8 + (len + 7) / 8 * 8;
    if (off + need + 8 > cs) return false;
    put_be32(&c0[off], type);
    put_be32(&c0[off + 4], static_cast<uint32_t>(len));
    if (len) std::memcpy(&c0[off + 8], data, len);
    off += need;
    return true;
  };
  auto too_big = [] { return error(invalid("header extensions do not fit in cluster 0")); };
  if (h.version >= 3) {
    if (!h.backing_format.empty() &&
        !add_ext(kExtBackingFormat, reinterpret_cast<const uint8_t*>(h.backing_format.data()), h.backing_format.size()))
      return too_big();
    if (!h.data_file.empty() &&
        !add_ext(kExtDataFile, reinterpret_cast<const uint8_t*>(h.data_file.data()), h.data_file.size()))
      return too_big();
    if (h.crypt_method == kCryptLuks) {
      uint8_t b[16];
      put_be64(b, h.crypto_offset);
      put_be64(b + 8, h.crypto_length);
      if (!add_ext(kExtCrypto, b, sizeof b)) return too_big();
    }
    if (cs > 4096) {  // QEMU leaves the table out of small clusters
      std::vector<uint8_t> table(std::size(kKnownFeatures) * kFeatureEntrySize, 0);
      for (size_t i = 0; i < std::size(kKnownFeatures); ++i) {
        table[i * kFeatureEntrySize] = kKnownFeatures[i].type;
        table[i * kFeatureEntrySize + 1] = kKnownFeatures[i].bit;
        std::memcpy(&table[i * kFeatureEntrySize + 2], kKnownFeatures[i].name, strlen(kKnownFeatures[i].name));
      }
      if (!add_ext(kExtFeatureTable, table.data(), table.size())) return too_big();
    }
    if (h.bitmaps) {
      uint8_t b[24] = {};
      put_be32(b, h.bitmaps->nb_bitmaps);
      put_be64(b + 8, h.bitmaps->directory_size);
      put_be64(b + 16, h.bitmaps->directory_offset);
      if (!add_ext(kExtBitmaps, b, sizeof b)) return too_big();
    }
    for (const auto& e : h.unknown_extensions)
      if (!add_ext(e.type, e.data.data(), e.data.size())) return too_big();
    off += 8;  // end marker (zeros)
  } else if (!h.backing_format.empty() || !h.unknown_extensions.empty() || h.crypt_method == kCryptLuks) {
    // v2 images may carry extensions too: QEMU writes the backing format there (and the LUKS
    // header pointer) and keeps the extensions it does not know, in this order.
    off = kV2HeaderLength;
    if (!h.backing_format.empty() &&
        !add_ext(kExtBackingFormat, reinterpret_cast<const uint8_t*>(h.backing_format.data()), h.backing_format.size()))
      return too_big();
    if (h.crypt_method == kCryptLuks) {
      uint8_t b[16];
      put_be64(b, h.crypto_offset);
      put_be64(b + 8, h.crypto_length);
      if (!add_ext(kExtCrypto, b, sizeof b)) return too_big();
    }
    for (const auto& e : h.unknown_extensions)
      if (!add_ext(e.type, e.data.data(), e.data.size())) return too_big();
    off += 8;
  }
  if (!h.backing_file.empty()) {
    if (h.backing_file.size() > limits::kMaxBackingNameLength || off + h.backing_file.size() > cs)
      return error(invalid("backing file name too long"));
    put_be64(&c0[8], off);
    put_be32(&c0[16], static_cast<uint32_t>(h.backing_file.size()));
    std::memcpy(&c0[off], h.backing_file.data(), h.backing_file.size());
  }
  return c0;
}

}  // namespace keel::format
