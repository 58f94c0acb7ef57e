// qemu-img amend and rebase -u for qcow2: compat level (with the zero-cluster expansion a
// downgrade needs), lazy refcounts, refcount width (qcow2_refcount_order.cpp), backing file
// name and format. Header changes rewrite cluster 0: the new header is encoded whole and
// written through write_cluster0 (qcow2_header_switch.cpp), which never leaves a torn mix of the
// two headers (QEMU's qcow2_update_header writes the cluster at once: a power cut can leave
// sector 0 of the new header with the backing file name of the old one).
#include <fmt/format.h>

#include <set>

#include "engine/qcow2_image.h"
#include "format/endian.h"
#include "keel/limits.h"

namespace keel {

using namespace format;

Status Qcow2Image::rewrite_header(const Header& h) {
  KEEL_ASSIGN(auto c0, encode_header(h));
  std::vector<uint8_t> old_c0(cs_);
  KEEL_TRY(file_->read_at(0, old_c0));
  KEEL_TRY(write_cluster0(old_c0, c0));  // synced; torn-write safe (qcow2_header_switch.cpp)
  header_ = h;
  return Status::ok();
}

Result<std::vector<uint64_t>> Qcow2Image::distinct_l2_tables(bool snapshots_too) {
  std::set<uint64_t> seen;
  auto add = [&](const std::vector<uint64_t>& l1) -> Status {
    mu_.assert_held();
    for (uint64_t e : l1) {
      const uint64_t off = e & kOffsetMask;
      if (!off) continue;
      if (off % cs_) return mark_corrupt(fmt::format("L2 table offset {:#x} is not cluster aligned", off));
      seen.insert(off);
    }
    return Status::ok();
  };
  KEEL_TRY_R(add(l1_));
  if (snapshots_too) {
    for (const auto& s : snapshots_) {
      KEEL_ASSIGN(auto l1, read_l1_table(*file_, s.l1_table_offset, s.l1_size));
      KEEL_TRY_R(add(l1));
    }
  }
  return std::vector<uint64_t>(seen.begin(), seen.end());
}

Result<bool> Qcow2Image::has_compressed_clusters(bool snapshots_too) {
  KEEL_ASSIGN(auto tables, distinct_l2_tables(snapshots_too));
  for (uint64_t off : tables) {
    KEEL_ASSIGN(L2Ref t, load_l2(off));
    for (uint64_t j = 0; j < l2_entries_; ++j)
      if (classify_l2(t->words[j * l2_words_], ext_l2_) == ClusterType::kCompressed) return true;
  }
  return false;
}

// Downgrading to v2, which has no zero clusters: QEMU's qcow2_expand_zero_clusters, in every L2
// table of the active and the snapshot trees. A table is changed in place, for every tree that
// uses it (its refcount says how many):
//  - a zero cluster without a host cluster: unallocated when there is no backing file (it reads
//    as zeros either way), else a new cluster of zeros counted once per user of the table;
//  - a zero cluster whose host cluster only this table references: zeros written into it, the
//    zero flag cleared;
//  - a zero cluster whose host cluster is also referenced elsewhere: as without a host cluster,
//    and the table's references on it dropped (QEMU writes zeros into the shared cluster, which
//    changes what the other references read).
// Ordering: zeros are written (and new clusters counted) before the table changes in memory;
// the flush path then makes data and refcounts durable before the tables, and drops references
// only after the tables are durable. Every entry reads as zeros at every step.
Status Qcow2Image::expand_zero_clusters() {
  KEEL_ASSIGN(auto tables, distinct_l2_tables(true));
  const std::vector<uint8_t> zeros(cs_, 0);
  for (uint64_t off : tables) {
    KEEL_ASSIGN(uint64_t users, get_refcount(off / cs_));
    if (users == 0) return mark_corrupt(fmt::format("L2 table at {:#x} has refcount 0", off));
    std::vector<uint64_t> words;
    {
      KEEL_ASSIGN(L2Ref t, load_l2(off));
      words = t->words;
    }
    bool changed = false;
    for (uint64_t j = 0; j < l2_entries_; ++j) {
      const uint64_t e = words[j];  // extended L2 images are refused before
      const ClusterType type = classify_l2(e, false);
      if (type != ClusterType::kZeroPlain && type != ClusterType::kZeroAlloc) continue;
      const uint64_t host = e & kOffsetMask;
      if (host % cs_) return mark_corrupt(fmt::format("zero cluster entry {:#x} in the L2 table at {:#x} is misaligned", e, off));
      bool keep = false;
      if (type == ClusterType::kZeroAlloc && host) {
        KEEL_ASSIGN(uint64_t rc, get_refcount(host / cs_));
        keep = rc == users;
      }
      uint64_t ne = 0;
      if (keep) {
        notify(Event::kDataWrite);
        KEEL_TRY(write_data(host, 0, zeros));  // LUKS: encrypted zeros (IV from the host offset)
        ne = host | (users == 1 ? kCopied : 0);
      } else if (backing_) {
        KEEL_ASSIGN(uint64_t nh, alloc_clusters(1));
        if (users > 1) KEEL_TRY(change_refcount(nh / cs_, static_cast<int64_t>(users - 1)));
        notify(Event::kDataWrite);
        KEEL_TRY(write_data(nh, 0, zeros));
        ne = nh | (users == 1 ? kCopied : 0);
      }
      if (!keep && type == ClusterType::kZeroAlloc && host)
        for (uint64_t k = 0; k < users; ++k) defer_free(e);
      words[j] = ne;
      changed = true;
    }
    if (changed) {
      KEEL_ASSIGN(L2Ref t, load_l2(off));
      t->words = std::move(words);
      l2_cache_.mark_all_dirty(*t);
    }
    if (dirty_bytes() > limits::kMaxDirtyMetadataBytes) KEEL_TRY(flush_metadata());
  }
  return flush_metadata();
}

Status Qcow2Image::amend(const AmendOptions& o) {
  if (read_only_) return Status(Code::kReadOnly, "image is opened read-only", EPERM);
  KEEL_TRY(flush());
  std::lock_guard<std::mutex> fl(flush_mu_);
  ExclusiveGate g(gate_);
  ExclusiveGate dg(data_gate_);
  MutexLock lk(mu_);
  Header h = header_;
  if (o.version && *o.version != 2 && *o.version != 3) return invalid(fmt::format("Invalid compat level {}", *o.version));
  const int version = o.version.value_or(static_cast<int>(h.version));
  if (version == 2 && h.version >= 3 && h.crypt_method == kCryptAes)  // zeros would need guest-offset IVs
    return unsupported("downgrading a legacy AES-encrypted image to compat=0.10 is not supported by keel");
  const bool lazy = o.lazy_refcounts.value_or(h.compatible & kCompatLazyRefcounts);
  if (version == 2 && lazy)
    return invalid("Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)");
  if (o.backing_file && header_.data_file_raw() && !o.backing_file->empty())
    return invalid("Backing file and data-file-raw cannot be used at the same time");
  const bool new_width = o.refcount_bits && *o.refcount_bits != rc_bits_;
  if (new_width && version < 3 && *o.refcount_bits != 16)
    return invalid("Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)");

  // In qcow2_amend_options' order: upgrade, refcount width, the other header fields, and the
  // downgrade last.
  if (version == 3 && h.version == 2) {
    // v3 requires each snapshot's extra data to hold the 64-bit VM state size and the disk
    // size; v2 does not. Like qcow2_upgrade, rewrite the whole table first (every entry with
    // 24 bytes: a missing disk size is the current size, a missing icount "not recorded"), as
    // a new table that the header switches to: valid for v2 too.
    bool short_extra = false;
    for (const auto& s : snapshots_) short_extra |= s.extra.size() < 16;
    if (short_extra) {
      std::vector<SnapshotEntry> entries = snapshots_;
      for (auto& e : entries) {
        if (e.extra.size() < 16) e.disk_size = size_;
        if (e.extra.size() < 24) e.extra.resize(24, 0);
      }
      KEEL_TRY(write_snapshot_table(entries));
      KEEL_TRY(write_dirty_refblocks());
      KEEL_TRY(latch(file_->sync()));
      h = header_;  // the new table's offset
    }
    h.version = 3;
    h.header_length = kV3HeaderLength;
    KEEL_TRY(rewrite_header(h));
  }
  if (new_width) {
    KEEL_TRY(change_refcount_order(*o.refcount_bits));
    h = header_;
  }
  if (version == 2 && h.version == 3) {
    // qcow2_downgrade's checks, in its order.
    if (h.refcount_order != 4) return unsupported("compat=0.10 requires refcount_bits=16");
    if (h.has_data_file()) return unsupported("Cannot downgrade an image with a data file");
    for (const auto& s : snapshots_)
      if (s.vm_state_size > UINT32_MAX || (s.disk_size != 0 && s.disk_size != size_))
        return unsupported("Internal snapshots prevent downgrade of image");
    const uint64_t features = h.incompatible & ~(kIncompatCompression | kIncompatDirty);
    if (features) return unsupported(fmt::format("Cannot downgrade an image with incompatible features {:#x} set", features));
    if (h.incompatible & kIncompatCompression) {
      // QEMU looks at the active layer only; a snapshot's zstd clusters would become unreadable.
      KEEL_ASSIGN(bool compressed, has_compressed_clusters(true));
      if (compressed)
        return unsupported("Cannot downgrade an image with zstd compression type and existing compressed clusters");
    }
    KEEL_TRY(expand_zero_clusters());
    h.version = 2;
    h.header_length = kV2HeaderLength;
    h.incompatible = h.compatible = h.autoclear = 0;
    h.compression_type = 0;
    h.unknown_extensions.clear();
    h.bitmaps.reset();
  } else if (version == 3) {
    if (lazy) h.compatible |= kCompatLazyRefcounts;
    else h.compatible &= ~kCompatLazyRefcounts;
  }
  if (o.backing_file) {
    h.backing_file = *o.backing_file;
    if (h.backing_file.empty()) h.backing_format.clear();
  }
  if (o.backing_format) h.backing_format = *o.backing_format;
  h.backing_file_offset = 0;
  h.backing_file_size = 0;
  KEEL_TRY(rewrite_header(h));
  compression_ = h.compression_type == 1 ? CompressionType::kZstd : CompressionType::kZlib;
  return Status::ok();
}

}  // namespace keel
