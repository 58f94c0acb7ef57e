// DirectIo: the ticket Image::map_direct() returns (see include/keel/image.h): a few host ranges
// plus the allocation gate held shared until release().
#include "engine/alloc_gate.h"
#include "keel/image.h"

namespace keel {

DirectIo& DirectIo::operator=(DirectIo&& o) noexcept {
  if (this == &o) return *this;
  release();
  for (size_t i = 0; i < o.count_; ++i) segs_[i] = o.segs_[i];
  count_ = o.count_;
  alignment_ = o.alignment_;
  gate_ = o.gate_;
  o.gate_ = nullptr;
  o.count_ = 0;
  return *this;
}

void DirectIo::release() {
  if (gate_) gate_->exit_shared();
  gate_ = nullptr;
  count_ = 0;
}

bool DirectIo::add(int fd, uint64_t host_offset, uint64_t length) {
  if (count_ > 0) {
    DirectSegment& last = segs_[count_ - 1];
    if (last.fd == fd && (fd < 0 || last.host_offset + last.length == host_offset)) {
      last.length += length;
      return true;
    }
  }
  if (count_ == kMaxSegments) return false;
  segs_[count_++] = DirectSegment{fd, host_offset, length};
  return true;
}

}  // namespace keel
