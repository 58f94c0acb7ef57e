// Proves MemoryFile behaves like a file: reads past EOF are zeros, writes extend, truncate/punch/
// allocate follow POSIX, shared handles see each other's writes, read-only handles refuse writes.
#include <gtest/gtest.h>

#include "io/memory_file.h"

namespace keel {
namespace {

std::vector<uint8_t> read(BlockFile& f, uint64_t off, size_t n) {
  std::vector<uint8_t> b(n, 0xee);
  EXPECT_TRUE(f.read_at(off, b).is_ok());
  return b;
}

TEST(MemoryFile, WriteExtendsAndReadPastEndIsZero) {
  MemoryFile f("m");
  std::vector<uint8_t> data = {1, 2, 3, 4};
  ASSERT_TRUE(f.write_at(10, data).is_ok());
  EXPECT_EQ(*f.size(), 14u);
  auto b = read(f, 8, 8);
  EXPECT_EQ(b, (std::vector<uint8_t>{0, 0, 1, 2, 3, 4, 0, 0}));
}

TEST(MemoryFile, TruncateAllocatePunch) {
  MemoryFile f("m", std::vector<uint8_t>(100, 7));
  ASSERT_TRUE(f.punch(10, 20).is_ok());
  EXPECT_EQ(*f.size(), 100u);
  EXPECT_EQ(read(f, 9, 3), (std::vector<uint8_t>{7, 0, 0}));
  EXPECT_EQ(read(f, 29, 2), (std::vector<uint8_t>{0, 7}));
  ASSERT_TRUE(f.punch(90, 100).is_ok());  // past EOF: size unchanged
  EXPECT_EQ(*f.size(), 100u);
  ASSERT_TRUE(f.truncate(50).is_ok());
  ASSERT_TRUE(f.truncate(60).is_ok());
  EXPECT_EQ(read(f, 48, 4), (std::vector<uint8_t>{7, 7, 0, 0}));
  ASSERT_TRUE(f.allocate(100, 28).is_ok());
  EXPECT_EQ(*f.size(), 128u);
  ASSERT_TRUE(f.allocate(0, 10).is_ok());  // inside: no change
  EXPECT_EQ(*f.size(), 128u);
}

TEST(MemoryFile, SharedHandlesAndReadOnly) {
  MemoryFile f("m");
  auto ro = f.share(/*read_only=*/true);
  auto rw = f.share();
  std::vector<uint8_t> data(512, 0x5a);
  ASSERT_TRUE(rw->write_at(0, data).is_ok());
  EXPECT_EQ(read(*ro, 0, 512), data);
  EXPECT_EQ(f.bytes(), data);
  Status s = ro->write_at(0, data);
  EXPECT_FALSE(s.is_ok());
  EXPECT_EQ(s.err(), EBADF);
  EXPECT_FALSE(ro->truncate(0).is_ok());
  ASSERT_TRUE(ro->sync().is_ok());
  EXPECT_EQ(f.sync_count(), 1u);
}

}  // namespace
}  // namespace keel
