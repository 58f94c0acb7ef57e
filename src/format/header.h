// The qcow2 header (cluster 0): fixed fields, header extensions and the backing file name.
//
// Invariants after decode_header() succeeds (anything else is a kCorrupt/kUnsupported error
// naming the field): version 2 or 3; 9 <= cluster_bits <= 21; every table offset cluster-aligned
// and below 2^56; the L1 table covers `size` and is at most 32 MiB; the refcount table is
// 1..8 MiB; header_length, extensions and backing name fit in cluster 0; no unknown incompatible
// feature bit; crypt_method 0, 1 (legacy AES) or 2 (LUKS, with a crypto header extension of 16
// bytes naming a cluster-aligned, non-empty region of at most kMaxLuksRegionBytes past cluster 0
// and inside the file); other methods are refused (unsupported). encode_header() writes what
// decode accepts.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "keel/status.h"

namespace keel::format {

inline constexpr uint32_t kQcowMagic = 0x514649fb;
inline constexpr uint32_t kV2HeaderLength = 72;
inline constexpr uint32_t kV3HeaderLength = 112;  // what QEMU writes (with compression_type)

enum : uint64_t {
  kIncompatDirty = 1ull << 0,
  kIncompatCorrupt = 1ull << 1,
  kIncompatDataFile = 1ull << 2,
  kIncompatCompression = 1ull << 3,
  kIncompatExtendedL2 = 1ull << 4,
  kIncompatKnown = 0x1f,
  kCompatLazyRefcounts = 1ull << 0,
  kAutoclearBitmaps = 1ull << 0,
  kAutoclearDataFileRaw = 1ull << 1,
  kAutoclearKnown = 0x3,
};

enum : uint32_t {
  kExtEnd = 0,
  kExtBackingFormat = 0xe2792aca,
  kExtFeatureTable = 0x6803f857,
  kExtBitmaps = 0x23852875,
  kExtCrypto = 0x0537be77,
  kExtDataFile = 0x44415441,
};

// Byte offsets of header fields that are rewritten in place.
inline constexpr uint64_t kOffsetL1Size = 36;            // + l1_table_offset: 12 bytes
inline constexpr uint64_t kOffsetReftable = 48;          // offset + clusters: 12 bytes
inline constexpr uint64_t kOffsetSnapshots = 60;         // nb + offset: 12 bytes
inline constexpr uint64_t kOffsetIncompatible = 72;
inline constexpr uint64_t kOffsetAutoclear = 88;

struct FeatureName {
  uint8_t type = 0;  // 0 incompatible, 1 compatible, 2 autoclear
  uint8_t bit = 0;
  std::string name;
};

struct BitmapsExtension {
  uint32_t nb_bitmaps = 0;
  uint64_t directory_size = 0;
  uint64_t directory_offset = 0;
};

inline constexpr uint32_t kCryptNone = 0;
inline constexpr uint32_t kCryptAes = 1;   // legacy AES-CBC (QEMU reads it, never creates it)
inline constexpr uint32_t kCryptLuks = 2;

struct RawExtension {
  uint32_t type = 0;
  std::vector<uint8_t> data;
};

struct Header {
  uint32_t version = 3;
  uint64_t backing_file_offset = 0;
  uint32_t backing_file_size = 0;
  uint32_t cluster_bits = 16;
  uint64_t size = 0;
  uint32_t crypt_method = 0;
  uint32_t l1_size = 0;
  uint64_t l1_table_offset = 0;
  uint64_t refcount_table_offset = 0;
  uint32_t refcount_table_clusters = 0;
  uint32_t nb_snapshots = 0;
  uint64_t snapshots_offset = 0;
  uint64_t incompatible = 0;
  uint64_t compatible = 0;
  uint64_t autoclear = 0;
  uint32_t refcount_order = 4;
  uint32_t header_length = kV3HeaderLength;
  uint8_t compression_type = 0;  // 0 zlib, 1 zstd

  std::string backing_file;
  std::string backing_format;
  std::string data_file;
  std::optional<BitmapsExtension> bitmaps;
  // crypt_method 2: the LUKS header region (the "full disk encryption header pointer").
  uint64_t crypto_offset = 0;
  uint64_t crypto_length = 0;
  std::vector<FeatureName> feature_names;   // as read; encode writes Keel's own table
  std::vector<RawExtension> unknown_extensions;  // preserved on rewrite

  uint64_t cluster_size() const { return 1ull << cluster_bits; }
  bool extended_l2() const { return incompatible & kIncompatExtendedL2; }
  bool has_data_file() const { return incompatible & kIncompatDataFile; }
  bool data_file_raw() const { return autoclear & kAutoclearDataFileRaw; }
  uint32_t refcount_bits() const { return 1u << refcount_order; }
  // Entries per L2 table (cluster_size / 8, or / 16 with extended L2).
  uint64_t l2_entries() const { return cluster_size() / (extended_l2() ? 16 : 8); }
  // L1 entries needed to map `virtual_size` bytes.
  uint64_t l1_entries_for(uint64_t virtual_size) const;
};

// Reads cluster_bits from the first bytes (at least 24) so the caller knows how much to read.
Result<uint32_t> peek_cluster_bits(std::span<const uint8_t> start);
// True if the bytes start with the qcow2 magic.
bool is_qcow2(std::span<const uint8_t> start);

// Decodes and validates cluster 0. `file_size` bounds table offsets; `check_mode` accepts an
// empty refcount table (for check/repair). The corrupt bit decodes: whether such an image may
// open read/write is the open's rule (qcow2_open.cpp).
Result<Header> decode_header(std::span<const uint8_t> cluster0, uint64_t file_size, bool check_mode);

// Encodes the header, its extensions and the backing file name into one cluster.
// Fails if they do not fit.
Result<std::vector<uint8_t>> encode_header(const Header& h);

// QEMU's message for incompatible feature bits it does not know (`unknown`, non-zero): the names
// the image's feature table gives them, then the rest as a hex mask ("Unsupported qcow2
// feature(s): foo, Unknown incompatible feature: 8000000000000000").
std::string unsupported_features_message(const std::vector<FeatureName>& table, uint64_t unknown);

}  // namespace keel::format
