// Proves the event loop's BufferPool reuses buffers (no allocation in the steady state), rounds
// sizes up to 4 KiB-aligned power-of-two classes, and caches no more than its limit.
#include <gtest/gtest.h>

#include <cstdint>

#include "keel/limits.h"
#include "nbd/buffer_pool.h"

namespace keel::nbd {
namespace {

TEST(BufferPool, ReusesBuffersOfTheSameClass) {
  BufferPool pool(1 << 20);
  auto a = pool.get(4096);
  ASSERT_NE(a.data, nullptr);
  EXPECT_EQ(a.capacity, 4096u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data) % BufferPool::kAlign, 0u);
  pool.put(a);
  for (int i = 0; i < 100; ++i) {
    auto b = pool.get(1 + i * 40);  // all within the 4 KiB class
    EXPECT_EQ(b.data, a.data);
    pool.put(b);
  }
  EXPECT_EQ(pool.allocations(), 1u);
  auto c = pool.get(4097);
  EXPECT_EQ(c.capacity, 8192u);
  auto d = pool.get(limits::kMaxRequestBytes);
  EXPECT_EQ(d.capacity, limits::kMaxRequestBytes);
  pool.put(c);
  pool.put(d);  // over the 1 MiB cache limit: freed
  EXPECT_LE(pool.cached_bytes(), 1u << 20);
}

}  // namespace
}  // namespace keel::nbd
