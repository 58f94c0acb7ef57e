// Preallocation of a new qcow2 image (metadata, falloc, full), as qemu-img create -o
// preallocation=... does. Runs on a fresh image only: the host clusters it links read as zeros
// because they lie past the old end of the file.
#include <fmt/format.h>

#include "engine/qcow2_image.h"
#include "keel/limits.h"

namespace keel {

using namespace format;

Status preallocate_qcow2(Image& image, Preallocation mode) {
  auto* q = dynamic_cast<Qcow2Image*>(&image);
  if (!q) return invalid("preallocation needs a qcow2 image");
  KEEL_TRY(q->preallocate(mode));
  return q->close();
}

Status Qcow2Image::preallocate(Preallocation mode) {
  std::lock_guard<std::mutex> fl(flush_mu_);
  ExclusiveGate g(gate_);
  ExclusiveGate dg(data_gate_);
  MutexLock lk(mu_);
  const uint64_t clusters = (size_ + cs_ - 1) / cs_;
  uint64_t run_start = 0, run_len = 0, end = 0;
  auto fill = [&](uint64_t start, uint64_t len) -> Status {
    if (len == 0 || mode == Preallocation::kMetadata) return Status::ok();
    if (mode == Preallocation::kFalloc) return data_->allocate(start, len);
    std::vector<uint8_t> zeros(std::min<uint64_t>(len, 1 << 20), 0);
    for (uint64_t done = 0; done < len; done += zeros.size())
      KEEL_TRY(data_->write_at(start + done, std::span<const uint8_t>(zeros).first(std::min<uint64_t>(zeros.size(), len - done))));
    return Status::ok();
  };
  for (uint64_t gc = 0; gc < clusters; ++gc) {
    KEEL_ASSIGN(Mapping m, lookup(gc));
    if (m.type != ClusterType::kUnallocated) continue;
    // The L2 table first, then its data clusters, as QEMU's preallocate_co allocates them: the
    // same image as qemu-img create -o preallocation=metadata, cluster for cluster.
    KEEL_ASSIGN(L2Ref t, writable_l2(gc));
    uint64_t host = has_external_data() ? gc * cs_ : 0;
    if (!has_external_data()) {
      KEEL_ASSIGN(host, alloc_clusters(1));
    }
    set_l2(t.get(), gc, host | kCopied, 0);
    if (host == run_start + run_len * cs_ && run_len) {
      ++run_len;
    } else {
      KEEL_TRY(fill(run_start, run_len * cs_));
      run_start = host;
      run_len = 1;
    }
    end = std::max(end, host + cs_);
    if (dirty_bytes() > limits::kMaxDirtyMetadataBytes) KEEL_TRY(flush_metadata());
  }
  KEEL_TRY(fill(run_start, run_len * cs_));
  KEEL_ASSIGN(uint64_t fsize, data_->size());
  if (end > fsize) KEEL_TRY(data_->truncate(end));
  return flush_metadata();
}

}  // namespace keel
