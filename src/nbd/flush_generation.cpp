// See flush_generation.h.
#include "nbd/flush_generation.h"

#include <algorithm>

namespace keel::nbd {

Status FlushGeneration::flush(Image& image) {
  const uint64_t g = gen_.load(std::memory_order_acquire);
  // One flush at a time: a flush that waited here behind another finds it covered (flushed_ >= g)
  // if that one arrived after the writes this one must cover.
  std::lock_guard lock(mu_);
  if (!failed_ && flushed_ >= g) {
    skipped_.fetch_add(1, std::memory_order_relaxed);
    return Status::ok();
  }
  Status s = image.flush();
  if (s.is_ok()) {
    flushed_ = std::max(flushed_, g);
  } else {
    failed_ = true;
  }
  return s;
}

}  // namespace keel::nbd
