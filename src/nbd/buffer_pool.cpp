// Request buffer pool (see buffer_pool.h).
#include "nbd/buffer_pool.h"

#include <bit>
#include <cstdlib>

#include "keel/limits.h"

namespace keel::nbd {

static_assert(std::has_single_bit(limits::kMaxRequestBytes), "size classes reach the request limit");

BufferPool::~BufferPool() {
  for (auto& list : free_)
    for (uint8_t* p : list) std::free(p);
}

size_t BufferPool::size_class(size_t bytes) {
  return std::bit_width(std::bit_ceil(std::max(bytes, kMinBytes)) / kMinBytes) - 1;
}

BufferPool::Buffer BufferPool::get(size_t bytes) {
  size_t cls = size_class(bytes);
  size_t cap = kMinBytes << cls;
  if (cls < free_.size() && !free_[cls].empty()) {
    uint8_t* p = free_[cls].back();
    free_[cls].pop_back();
    cached_ -= cap;
    return {p, cap};
  }
  void* p = nullptr;
  if (posix_memalign(&p, kAlign, cap) != 0) return {};
  ++allocations_;
  return {static_cast<uint8_t*>(p), cap};
}

void BufferPool::put(Buffer b) {
  if (!b.data) return;
  if (cached_ + b.capacity > max_cached_) {
    std::free(b.data);
    return;
  }
  size_t cls = size_class(b.capacity);
  if (free_.size() <= cls) free_.resize(cls + 1);
  free_[cls].push_back(b.data);
  cached_ += b.capacity;
}

}  // namespace keel::nbd
