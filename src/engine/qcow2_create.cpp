// Creating a qcow2 image: validate the options, lay out header, refcount table, refcount
// blocks and L1 table, then (optionally) preallocate through the engine.
#include <fmt/format.h>

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

}  // namespace

Status create_qcow2_image(const std::string& path, const CreateOptions& in) {
  CreateOptions o = in;
  KEEL_TRY(validate(o));
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
  const uint64_t rb_entries = cs * 8 / o.refcount_bits;
  const uint64_t l1_entries = h.l1_entries_for(o.size);
  if (l1_entries * 8 > limits::kMaxL1Bytes)
    return invalid(fmt::format("Image size {} needs an L1 table larger than 32 MiB at cluster size {}", o.size, cs));
  const uint64_t l1_clusters = (l1_entries * 8 + cs - 1) / cs;
  const uint64_t luks_clusters = (luks_region.size() + cs - 1) / cs;
  uint64_t rt_clusters = 1, blocks = 1;
  for (int i = 0; i < 64; ++i) {
    uint64_t total = 1 + rt_clusters + blocks + l1_clusters + luks_clusters;
    uint64_t nb = (total + rb_entries - 1) / rb_entries;
    uint64_t nrt = (nb * 8 + cs - 1) / cs;
    if (nb == blocks && nrt == rt_clusters) break;
    blocks = nb;
    rt_clusters = nrt;
  }
  if (rt_clusters * cs > limits::kMaxReftableBytes) return invalid("Image too large for its refcount table");
  h.refcount_table_offset = cs;
  h.refcount_table_clusters = static_cast<uint32_t>(rt_clusters);
  const uint64_t rb_off = cs * (1 + rt_clusters);
  h.l1_table_offset = rb_off + blocks * cs;
  h.l1_size = static_cast<uint32_t>(l1_entries);
  const uint64_t total = 1 + rt_clusters + blocks + l1_clusters + luks_clusters;
  if (luks_clusters) h.crypto_offset = h.l1_table_offset + l1_clusters * cs;

  KEEL_ASSIGN(auto c0, encode_header(h));
  std::vector<uint8_t> rt(rt_clusters * cs, 0), rbs(blocks * cs, 0);
  for (uint64_t b = 0; b < blocks; ++b) put_be64(&rt[b * 8], rb_off + b * cs);
  for (uint64_t c = 0; c < total; ++c)
    set_refcount(std::span<uint8_t>(rbs).subspan((c / rb_entries) * cs, cs), c % rb_entries, o.refcount_bits, 1);

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
  KEEL_TRY(f.write_at(rb_off, rbs));
  if (l1_clusters) {
    std::vector<uint8_t> l1(l1_clusters * cs, 0);
    KEEL_TRY(f.write_at(h.l1_table_offset, l1));
  }
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
