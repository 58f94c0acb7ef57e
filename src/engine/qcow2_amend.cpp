// qemu-img amend and rebase -u for qcow2: compat level, lazy refcounts, backing file name and
// format. These rewrite cluster 0: the new header is encoded whole and written, then synced.
// (Like QEMU's qcow2_update_header, a torn write of a header longer than one sector is the
// remaining risk; the fields that switch tables never change here.)
#include <fmt/format.h>

#include "engine/qcow2_image.h"
#include "format/endian.h"

namespace keel {

using namespace format;

Status Qcow2Image::rewrite_header(const Header& h) {
  KEEL_ASSIGN(auto c0, encode_header(h));
  KEEL_TRY(write_header_field(0, c0));
  KEEL_TRY(latch(file_->sync()));
  header_ = h;
  return Status::ok();
}

// Downgrading to v2: zero clusters cannot be expressed. Without a backing file an unallocated
// cluster reads as zeros, so ZERO entries become unallocated (their clusters freed).
Status Qcow2Image::drop_zero_flags() {
  if (backing_) {
    for (uint64_t i = 0; i < l1_.size(); ++i) {
      uint64_t off = l1_[i] & kOffsetMask;
      if (!off) continue;
      KEEL_ASSIGN(L2Table * t, load_l2(off));
      for (uint64_t j = 0; j < l2_entries_; ++j)
        if (!ext_l2_ && (t->words[j] & kZeroFlag))
          return unsupported("Cannot downgrade an image with zero clusters and a backing file");
    }
    return Status::ok();
  }
  for (uint64_t i = 0; i < l1_.size(); ++i) {
    uint64_t off = l1_[i] & kOffsetMask;
    if (!off) continue;
    std::vector<uint64_t> words;
    {
      KEEL_ASSIGN(L2Table * t, load_l2(off));
      words = t->words;
    }
    for (uint64_t j = 0; j < l2_entries_; ++j) {
      uint64_t gc = i * l2_entries_ + j;
      if (!(words[j] & kZeroFlag) || (words[j] & kCompressed)) continue;
      KEEL_ASSIGN(L2Table * t, writable_l2(gc));
      set_l2(t, gc, 0, 0);
      if (words[j] & kOffsetMask) defer_free(words[j]);
    }
  }
  return flush_metadata();
}

Status Qcow2Image::amend(const AmendOptions& o) {
  if (read_only_) return Status(Code::kReadOnly, "image is opened read-only", EPERM);
  KEEL_TRY(flush());
  std::lock_guard<std::mutex> fl(flush_mu_);
  ExclusiveGate g(gate_);
  std::lock_guard<std::mutex> lk(mu_);
  Header h = header_;
  if (o.version && *o.version != 2 && *o.version != 3) return invalid(fmt::format("Invalid compat level {}", *o.version));
  int version = o.version.value_or(static_cast<int>(h.version));
  bool lazy = o.lazy_refcounts.value_or(h.compatible & kCompatLazyRefcounts);
  if (version == 2) {
    if (lazy) return invalid("Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)");
    if (h.refcount_order != 4) return invalid("Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)");
    if (h.incompatible & (kIncompatDataFile | kIncompatCompression | kIncompatExtendedL2))
      return unsupported("Cannot downgrade an image with an external data file, zstd compression or extended L2 entries");
    if (h.version == 3) KEEL_TRY(drop_zero_flags());
    h.version = 2;
    h.header_length = kV2HeaderLength;
    h.incompatible = h.compatible = h.autoclear = 0;
    h.unknown_extensions.clear();
    h.bitmaps.reset();
  } else {
    if (h.version == 2) {
      h.version = 3;
      h.header_length = kV3HeaderLength;
    }
    if (lazy) h.compatible |= kCompatLazyRefcounts;
    else h.compatible &= ~kCompatLazyRefcounts;
  }
  if (o.backing_file) {
    if (header_.data_file_raw() && !o.backing_file->empty())
      return invalid("Backing file and data-file-raw cannot be used at the same time");
    h.backing_file = *o.backing_file;
    if (h.backing_file.empty()) h.backing_format.clear();
  }
  if (o.backing_format) h.backing_format = *o.backing_format;
  h.backing_file_offset = 0;
  h.backing_file_size = 0;
  return rewrite_header(h);
}

}  // namespace keel
