// Creating a qcow2 image: validate the options, lay out header, refcount table, refcount
// blocks and L1 table, then (optionally) preallocate through the engine.
#include <fmt/format.h>

#include <algorithm>
#include <ctime>

#include "crypto/luks_create.h"
#include "engine/qcow2_image.h"
#include "format/endian.h"
#include "keel/limits.h"

namespace keel {

using namespace format;

namespace {

bool pow2(uint64_t v) { return v && !(v & (v - 1)); }

Status validate(const CreateOptions& o) {
  if (!pow2(o.cluster_size) || o.cluster_size < 512 || o.cluster_size > (2u << 20))
    return invalid("Cluster size must be a power of two between 512 and 2048k");
  if (o.version != 2 && o.version != 3) return invalid(fmt::format("Invalid compatibility level: {}", o.version));
  if (!pow2(o.refcount_bits) || o.refcount_bits > 64)
    return invalid("Refcount width must be a power of two and may not exceed 64 bits");
  if (o.version == 2) {
    if (o.refcount_bits != 16)
      return invalid("Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)");
    if (o.lazy_refcounts)
      return invalid("Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)");
    if (o.extended_l2)
      return invalid("Extended L2 entries are only supported with compatibility level 1.1 and above (use compat=1.1 or greater)");
    if (o.compression_type != CompressionType::kZlib)
      return invalid("Non-zlib compression type is only supported with compatibility level 1.1 and above (use compat=1.1 or greater)");
    if (!o.data_file.empty())
      return invalid("External data files are only supported with compatibility level 1.1 and above");
  }
  if (o.extended_l2 && o.cluster_size < (1u << limits::kMinExtL2ClusterBits))
    return invalid("Extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
  if (o.data_file_raw && o.data_file.empty()) return invalid("data-file-raw requires data-file");
  if (o.data_file_raw && !o.backing_file.empty()) return invalid("Backing file and data-file-raw cannot be used at the same time");
  if (o.size > limits::kMaxVirtualSize) return invalid(fmt::format("Image size {} is too large", o.size));
  if (o.backing_file.size() > limits::kMaxBackingNameLength) return invalid("Backing file name too long");
  return Status::ok();
}

// Where each structure of a new image lies, in clusters.
struct CreateLayout {
  uint64_t rt_clusters = 1;
  std::vector<uint64_t> blocks;  // blocks[i]: the cluster of refcount block i
  uint64_t l1_cluster = 0, luks_cluster = 0;
};

// QEMU's qcow2_co_create writes the header, a one-cluster refcount table and refcount block 0
// into clusters 0-2, then allocates the L1 table and the LUKS region one after the other with
// qcow2_alloc_clusters: each run goes to the next free cluster, and each refcount block its
// clusters need is then allocated at the next free cluster in turn (a block that does not
// cover itself gets its refcount from the block that does, allocated right after it). Keel
// lays a new image out the same way, so both tools make the same file. Only when those blocks
// overflow the one-cluster refcount table (QEMU then moves the table to the end of the file:
// 512-byte clusters and a multi-GiB image) does keel use its own compact layout instead: every
// block and a large enough table first, then the L1 table and the LUKS region.
Result<CreateLayout> create_layout(uint64_t cs, uint32_t refcount_bits, uint64_t l1_clusters, uint64_t luks_clusters) {
  const uint64_t rb_entries = cs * 8 / refcount_bits;
  CreateLayout qemu;
  qemu.blocks = {2};
  uint64_t next_free = 3;
  bool fits = true;
  // Refcount block i for a cluster being counted; its own cluster needs a block too.
  auto need_block = [&](uint64_t i) {
    while (fits && (i >= qemu.blocks.size() || qemu.blocks[i] == 0)) {
      if (i >= cs / 8) {
        fits = false;
        break;
      }
      if (i >= qemu.blocks.size()) qemu.blocks.resize(i + 1, 0);
      const uint64_t at = next_free++;
      qemu.blocks[i] = at;
      i = at / rb_entries;
    }
  };
  auto alloc_run = [&](uint64_t n) {
    const uint64_t first = next_free;
    next_free += n;
    for (uint64_t c = first; c < first + n && fits; ++c) need_block(c / rb_entries);
    return first;
  };
  qemu.l1_cluster = alloc_run(l1_clusters);
  qemu.luks_cluster = alloc_run(luks_clusters);
  if (fits && std::find(qemu.blocks.begin(), qemu.blocks.end(), 0) == qemu.blocks.end()) return qemu;

  CreateLayout own;
  uint64_t rt_clusters = 1, blocks = 1;
  for (int i = 0; i < 64; ++i) {
    uint64_t total = 1 + rt_clusters + blocks + l1_clusters + luks_clusters;
    uint64_t nb = (total + rb_entries - 1) / rb_entries;
    uint64_t nrt = (nb * 8 + cs - 1) / cs;
    if (nb == blocks && nrt == rt_clusters) break;
    blocks = nb;
    rt_clusters = nrt;
  }
  if (rt_clusters * cs > limits::kMaxReftableBytes) return error(invalid("Image too large for its refcount table"));
  own.rt_clusters = rt_clusters;
  for (uint64_t b = 0; b < blocks; ++b) own.blocks.push_back(1 + rt_clusters + b);
  own.l1_cluster = 1 + rt_clusters + blocks;
  own.luks_cluster = own.l1_cluster + l1_clusters;
  return own;
}

}  // namespace

Status create_qcow2_image(const std::string& path, const CreateOptions& in) {
  CreateOptions o = in;
  KEEL_TRY(validate(o));
  // As QEMU: a data-file-raw image gets at least its metadata preallocated, so every guest
  // cluster maps to the same offset of the data file and reads what that file holds.
  if (o.data_file_raw && o.preallocation == Preallocation::kOff) o.preallocation = Preallocation::kMetadata;
  if (o.size == 0 && !o.backing_file.empty()) {
    OpenOptions bo;
    bo.read_only = true;
    bo.force_share = true;
    bo.format = o.backing_format;
    bo.file_opener = o.file_opener;
    KEEL_ASSIGN(auto b, Image::open(resolve_relative(path, o.backing_file), bo));
    o.size = b->size();
  }
  Header h;
  h.version = static_cast<uint32_t>(o.version);
  h.cluster_bits = static_cast<uint32_t>(__builtin_ctz(o.cluster_size));
  h.size = o.size;
  h.refcount_order = static_cast<uint32_t>(__builtin_ctz(o.refcount_bits));
  h.header_length = o.version == 3 ? kV3HeaderLength : kV2HeaderLength;
  if (o.extended_l2) h.incompatible |= kIncompatExtendedL2;
  if (o.compression_type == CompressionType::kZstd) {
    h.incompatible |= kIncompatCompression;
    h.compression_type = 1;
  }
  if (!o.data_file.empty()) {
    h.incompatible |= kIncompatDataFile;
    h.data_file = o.data_file;
    if (o.data_file_raw) h.autoclear |= kAutoclearDataFileRaw;
  }
  if (o.lazy_refcounts) h.compatible |= kCompatLazyRefcounts;
  // LUKS: the region (header and key material) goes into clusters right after the L1 table.
  std::vector<uint8_t> luks_region;
  if (o.encrypt) {
    const auto& e = *o.encrypt;
    KEEL_ASSIGN(auto spec, crypto::luks_spec_from_names(e.cipher_alg, e.cipher_mode, e.ivgen_alg,
                                                        e.ivgen_hash_alg.empty() ? "sha256" : e.ivgen_hash_alg,
                                                        e.hash_alg));
    spec.iter_time_ms = e.iter_time_ms;
    KEEL_ASSIGN(luks_region, crypto::luks_create(spec, e.passphrase.bytes()));
    h.crypt_method = kCryptLuks;
    h.crypto_length = luks_region.size();
  }
  h.backing_file = o.backing_file;
  h.backing_format = o.backing_format;

  const uint64_t cs = o.cluster_size;
  const uint64_t l1_entries = h.l1_entries_for(o.size);
  if (l1_entries * 8 > limits::kMaxL1Bytes)
    return invalid(fmt::format("Image size {} needs an L1 table larger than 32 MiB at cluster size {}", o.size, cs));
  const uint64_t l1_clusters = (l1_entries * 8 + cs - 1) / cs;
  const uint64_t luks_clusters = (luks_region.size() + cs - 1) / cs;
  KEEL_ASSIGN(const CreateLayout lay, create_layout(cs, o.refcount_bits, l1_clusters, luks_clusters));
  h.refcount_table_offset = cs;
  h.refcount_table_clusters = static_cast<uint32_t>(lay.rt_clusters);
  h.l1_table_offset = l1_entries ? lay.l1_cluster * cs : 0;  // QEMU: no table, no offset
  h.l1_size = static_cast<uint32_t>(l1_entries);
  if (luks_clusters) h.crypto_offset = lay.luks_cluster * cs;

  KEEL_ASSIGN(auto c0, encode_header(h));
  const uint64_t rb_entries = cs * 8 / o.refcount_bits;
  std::vector<uint8_t> rt(lay.rt_clusters * cs, 0), rbs(lay.blocks.size() * cs, 0);
  for (size_t b = 0; b < lay.blocks.size(); ++b) put_be64(&rt[b * 8], lay.blocks[b] * cs);
  auto count = [&](uint64_t first, uint64_t n) {
    for (uint64_t c = first; c < first + n; ++c)
      set_refcount(std::span<uint8_t>(rbs).subspan((c / rb_entries) * cs, cs), c % rb_entries, o.refcount_bits, 1);
  };
  count(0, 1 + lay.rt_clusters);
  for (uint64_t b : lay.blocks) count(b, 1);
  count(lay.l1_cluster, l1_clusters);
  count(lay.luks_cluster, luks_clusters);

  FileOptions fo;
  fo.create = true;
  if (!o.data_file.empty()) {
    auto df = o.file_opener ? o.file_opener(resolve_relative(path, o.data_file), fo)
                            : open_posix_file(resolve_relative(path, o.data_file), fo);
    if (!df) return df.error();
    if (o.data_file_raw) KEEL_TRY((*df)->truncate(o.size));
    if (o.durable) KEEL_TRY((*df)->sync());
  }
  auto file = o.file_opener ? o.file_opener(path, fo) : open_posix_file(path, fo);
  if (!file) return file.error();
  BlockFile& f = **file;
  KEEL_TRY(f.write_at(0, c0));
  KEEL_TRY(f.write_at(cs, rt));
  for (size_t b = 0; b < lay.blocks.size(); ++b)
    KEEL_TRY(f.write_at(lay.blocks[b] * cs, std::span<const uint8_t>(rbs).subspan(b * cs, cs)));
  // The L1 table is written as its entries only, as QEMU writes it: a file that ends with it
  // ends there (196,616 bytes for a one-entry table), not at the end of its cluster.
  if (l1_entries) KEEL_TRY(f.write_at(h.l1_table_offset, std::vector<uint8_t>(l1_entries * 8, 0)));
  if (luks_clusters) {
    luks_region.resize(luks_clusters * cs, 0);
    KEEL_TRY(f.write_at(h.crypto_offset, luks_region));
  }
  if (o.durable) KEEL_TRY(f.sync());
  file->reset();
  if (o.preallocation == Preallocation::kOff || o.size == 0) return Status::ok();

  // Preallocation: link every guest cluster to a host cluster through the engine.
  OpenOptions oo;
  oo.format = "qcow2";
  oo.force_share = true;
  oo.file_opener = o.file_opener;
  oo.no_backing = true;
  // Encrypted: preallocation writes no guest data, only file zeros (or fallocate) under the new
  // clusters, as QEMU's does (a guest then reads those zeros decrypted, not zeros): no key needed.
  oo.no_io = o.encrypt.has_value();
  KEEL_ASSIGN(auto img, Image::open(path, oo));
  return preallocate_qcow2(*img, o.preallocation);
}

}  // namespace keel
