// QEMU's qcow2_detect_metadata_preallocation (qcow2-refcount.c), which decides whether
// qemu-img map looks at the file system under data clusters: the image counts as sparsely
// allocated when at least max(real * 10 / 9, real + 2) clusters below the end of the file have
// a nonzero refcount, where `real` is the number of whole clusters the file has allocated on
// disk (st_blocks). The walk stops at that threshold, so it reads at most a few refcount blocks
// more than the file has clusters on disk.
#include "engine/qcow2_image.h"

namespace keel {

Result<bool> Qcow2Image::sparse_allocation() {
  KEEL_ASSIGN(const uint64_t file_length, file_->size());
  const uint64_t real_clusters = file_->allocated_bytes() / cs_;
  const uint64_t threshold = std::max(real_clusters * 10 / 9, real_clusters + 2);
  const uint64_t end_cluster = (file_length + cs_ - 1) / cs_;
  uint64_t in_use = 0;
  MutexLock lk(mu_);
  for (uint64_t i = 0; i < end_cluster && in_use < threshold; ++i) {
    KEEL_ASSIGN(const uint64_t refcount, get_refcount(i));
    in_use += refcount != 0;
  }
  return in_use >= threshold;
}

}  // namespace keel
