// BufferPool: the request buffers of one event-loop connection (WRITE payloads, READ data),
// reused so the steady state allocates nothing per request.
//
// Buffers come in power-of-two size classes from 4 KiB up to limits::kMaxRequestBytes, aligned
// to 4 KiB so they suit O_DIRECT files. A returned buffer is kept for reuse while the pool
// caches at most `max_cached_bytes`; beyond that it is freed. Together with the connection's
// in-flight byte limit this bounds the memory one client can make the server hold. Not
// thread-safe: the loop thread owns it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace keel::nbd {

class BufferPool {
 public:
  static constexpr size_t kMinBytes = 4096;
  static constexpr size_t kAlign = 4096;

  explicit BufferPool(size_t max_cached_bytes) : max_cached_(max_cached_bytes) {}
  ~BufferPool();
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  struct Buffer {
    uint8_t* data = nullptr;
    size_t capacity = 0;  // >= the size asked for; a power of two
  };
  // A buffer of at least `bytes` (REQUIRES: bytes <= limits::kMaxRequestBytes); data is
  // nullptr if memory ran out.
  Buffer get(size_t bytes);
  void put(Buffer b);

  size_t cached_bytes() const { return cached_; }
  uint64_t allocations() const { return allocations_; }  // for tests: how often it really allocated

 private:
  static size_t size_class(size_t bytes);
  std::vector<std::vector<uint8_t*>> free_;  // per class index
  size_t max_cached_;
  size_t cached_ = 0;
  uint64_t allocations_ = 0;
};

}  // namespace keel::nbd
