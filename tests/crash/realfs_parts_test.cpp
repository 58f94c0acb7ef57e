// Proves the real-file-system harness builds crash states faithfully: a torn device write
// persists exactly the 512-byte sectors its mask names, an untorn one all of them, and a state's
// sparse copy keeps the data (and the holes) of the synced device image.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>

#include "io/recording_file.h"
#include "proof/qemu_oracle.h"
#include "proof/realfs_util.h"

namespace keel::proof::realfs {
namespace {

FileOp device_write(uint64_t offset, size_t sectors, uint8_t fill) {
  FileOp op;
  op.kind = FileOpKind::kWrite;
  op.offset = offset;
  op.length = sectors * kSectorBytes;
  op.data.assign(op.length, fill);
  return op;
}

TEST(RealFsParts, TornWritePersistsExactlyItsMaskedSectors) {
  TempDir t;
  ASSERT_TRUE(t.ok());
  const std::string path = t.file("dev.img");
  ASSERT_TRUE(make_sparse(path, 1 << 20).is_ok());
  {
    Fd fd(::open(path.c_str(), O_RDWR));
    ASSERT_GE(fd.get(), 0);
    std::vector<bool> mask = {true, false, false, true};
    ASSERT_TRUE(apply_write(fd.get(), device_write(4096, 4, 0xab), &mask).is_ok());
    ASSERT_TRUE(apply_write(fd.get(), device_write(65536, 2, 0xcd), nullptr).is_ok());
  }
  auto bytes = read_whole(path);
  ASSERT_TRUE(bytes.has_value());
  ASSERT_EQ(bytes->size(), 1u << 20);
  auto sector_is = [&](uint64_t sector, uint8_t v) {
    for (uint64_t i = sector * 512; i < (sector + 1) * 512; ++i)
      if ((*bytes)[i] != v) return false;
    return true;
  };
  EXPECT_TRUE(sector_is(8, 0xab));   // mask[0]
  EXPECT_TRUE(sector_is(9, 0));      // mask[1]: not persisted
  EXPECT_TRUE(sector_is(10, 0));     // mask[2]
  EXPECT_TRUE(sector_is(11, 0xab));  // mask[3]
  EXPECT_TRUE(sector_is(128, 0xcd));
  EXPECT_TRUE(sector_is(129, 0xcd));
  EXPECT_TRUE(sector_is(130, 0));
  std::filesystem::remove(path);
}

TEST(RealFsParts, SparseCopyKeepsDataAndHoles) {
  TempDir t;
  ASSERT_TRUE(t.ok());
  const std::string from = t.file("a.img"), to = t.file("b.img");
  ASSERT_TRUE(make_sparse(from, 8 << 20).is_ok());
  {
    Fd fd(::open(from.c_str(), O_RDWR));
    ASSERT_TRUE(apply_write(fd.get(), device_write(3 << 20, 8, 0x11), nullptr).is_ok());
    ASSERT_TRUE(apply_write(fd.get(), device_write((8 << 20) - 4096, 8, 0x22), nullptr).is_ok());
  }
  ASSERT_TRUE(sparse_copy(from, to).is_ok());
  auto a = read_whole(from), b = read_whole(to);
  ASSERT_TRUE(a.has_value() && b.has_value());
  EXPECT_TRUE(*a == *b);
  struct stat sb {};
  ASSERT_EQ(::stat(to.c_str(), &sb), 0);
  EXPECT_LT(static_cast<uint64_t>(sb.st_blocks) * 512, 1u << 20);  // the 8 MiB copy stays sparse
  std::filesystem::remove(from);
  std::filesystem::remove(to);
}

}  // namespace
}  // namespace keel::proof::realfs
