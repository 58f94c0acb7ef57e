// Proves the engine reads what QEMU writes (backing chains, snapshots, compressed clusters,
// zstd, external data files) and that QEMU accepts what the engine writes, with qemu-img and
// qemu-io as the oracle.
#include <gtest/gtest.h>

#include <thread>

#include "engine/engine_util.h"

namespace keel::test {
namespace {

std::string q(const std::string& s) { return "'" + s + "'"; }

void expect_ok(const CommandResult& r) { ASSERT_EQ(r.exit_code, 0) << r.output; }

// Reads `len` bytes at `off` through keel and through qemu-io's pattern check.
void expect_pattern(Image& im, uint64_t off, uint64_t len, uint8_t byte) {
  std::vector<uint8_t> got(len);
  ASSERT_TRUE(im.read(off, got).is_ok());
  for (uint64_t i = 0; i < len; ++i)
    ASSERT_EQ(got[i], byte) << "at guest offset " << off + i;
}

TEST(Qcow2Features, BackingChainThreeDeepRelativeNames) {
  TempDir d;
  expect_ok(run("qemu-img create -f raw " + q(d.path("base.raw")) + " 4M"));
  expect_ok(run("qemu-io -f raw -c 'write -P 0x11 0 4M' " + q(d.path("base.raw"))));
  expect_ok(run("cd " + q(d.path("")) + " && qemu-img create -f qcow2 -b base.raw -F raw mid.qcow2 && "
                "qemu-io -c 'write -P 0x22 1M 1M' mid.qcow2 && "
                "qemu-img create -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2"));
  auto im = open_rw(d.path("top.qcow2"));
  ASSERT_TRUE(im);
  EXPECT_EQ(im->size(), 4u << 20);
  expect_pattern(*im, 0, 1 << 20, 0x11);
  expect_pattern(*im, 1 << 20, 1 << 20, 0x22);
  // A partial write COWs the rest of its cluster from the backing chain.
  std::vector<uint8_t> w(1000, 0x33);
  ASSERT_TRUE(im->write((1 << 20) + 500, w).is_ok());
  ASSERT_TRUE(im->discard(3 << 20, 1 << 20).is_ok());
  ASSERT_TRUE(im->close().is_ok());
  im.reset();
  expect_ok(qemu_check(d.path("top.qcow2")));
  expect_ok(run("qemu-io -r -c 'read -P 0x22 1M 500' -c 'read -P 0x33 1049076 1000' -c 'read -P 0x22 1050076 64536' "
                "-c 'read -P 0x11 0 1M' -c 'read -P 0 3M 1M' " + q(d.path("top.qcow2"))));
  auto ex = run("qemu-io -r -c 'read -P 0x22 1M 500' -c 'read -P 0x33 1049076 1000' " + q(d.path("top.qcow2")));
  EXPECT_EQ(ex.output.find("fail"), std::string::npos) << ex.output;
}

TEST(Qcow2Features, ReadsInternalSnapshot) {
  TempDir d;
  std::string img = d.path("s.qcow2");
  expect_ok(run("qemu-img create -f qcow2 " + q(img) + " 8M && qemu-io -c 'write -P 0x44 0 2M' " + q(img) +
                " && qemu-img snapshot -c snap1 " + q(img) + " && qemu-io -c 'write -P 0x55 0 1M' " + q(img)));
  OpenOptions o;
  o.snapshot = "snap1";
  auto s = Image::open(img, o);
  ASSERT_TRUE(s) << s.error().message();
  expect_pattern(**s, 0, 2 << 20, 0x44);
  s->reset();
  // Writing the active layer must copy-on-write shared clusters and keep the snapshot intact.
  auto im = open_rw(img);
  std::vector<uint8_t> w(4096, 0x66);
  ASSERT_TRUE(im->write(1536 << 10, w).is_ok());
  ASSERT_TRUE(im->close().is_ok());
  im.reset();
  expect_ok(qemu_check(img));
  auto ex = run("qemu-io -r -c 'read -P 0x55 0 1M' -c 'read -P 0x66 1536k 4k' -c 'read -P 0x44 1540k 508k' " + q(img));
  EXPECT_EQ(ex.output.find("fail"), std::string::npos) << ex.output;
  auto s2 = Image::open(img, o);
  ASSERT_TRUE(s2);
  expect_pattern(**s2, 0, 2 << 20, 0x44);
}

class Compressed : public ::testing::TestWithParam<std::string> {};

TEST_P(Compressed, ReadsQemuCompressedAndWritesOwn) {
  TempDir d;
  std::string src = d.path("src.qcow2"), img = d.path("c.qcow2");
  expect_ok(run("qemu-img create -f qcow2 " + q(src) + " 4M && qemu-io -c 'write -P 0x77 0 1M' -c 'write -P 0x78 2M 100k' " + q(src)));
  expect_ok(run("qemu-img convert -c -O qcow2 -o compression_type=" + GetParam() + " " + q(src) + " " + q(img)));
  auto im = open_rw(img);
  ASSERT_TRUE(im);
  expect_pattern(*im, 0, 1 << 20, 0x77);
  expect_pattern(*im, 2 << 20, 100 << 10, 0x78);
  // Overwrite part of a compressed cluster, and write a new compressed cluster.
  std::vector<uint8_t> w(512, 0x79), c(65536, 0x7a);
  ASSERT_TRUE(im->write(4096, w).is_ok());
  ASSERT_TRUE(im->write_compressed(3 << 20, c).is_ok());
  ASSERT_TRUE(im->close().is_ok());
  im.reset();
  expect_ok(qemu_check(img));
  auto ex = run("qemu-io -r -c 'read -P 0x77 0 4k' -c 'read -P 0x79 4k 512' -c 'read -P 0x77 4608 1043968' "
                "-c 'read -P 0x7a 3M 64k' " + q(img));
  EXPECT_EQ(ex.output.find("fail"), std::string::npos) << ex.output;
}
INSTANTIATE_TEST_SUITE_P(Types, Compressed, ::testing::Values("zlib", "zstd"));

TEST(Qcow2Features, ExternalDataFile) {
  TempDir d;
  std::string img = d.path("x.qcow2");
  expect_ok(run("cd " + q(d.path("")) + " && qemu-img create -f qcow2 -o data_file=x.data,data_file_raw=on x.qcow2 4M"));
  auto im = open_rw(img);
  ASSERT_TRUE(im);
  std::vector<uint8_t> w(70000, 0x5c);
  ASSERT_TRUE(im->write(100000, w).is_ok());
  ASSERT_TRUE(im->close().is_ok());
  im.reset();
  expect_ok(run("cd " + q(d.path("")) + " && qemu-img check x.qcow2"));
  auto ex = run("cd " + q(d.path("")) + " && qemu-io -r -c 'read -P 0x5c 100000 70000' -c 'read -P 0 0 100000' x.qcow2");
  EXPECT_EQ(ex.output.find("fail"), std::string::npos) << ex.output;
  // data_file_raw: the data file itself is the raw disk.
  auto raw = Image::open(d.path("x.data"), OpenOptions{.format = "raw", .read_only = true});
  ASSERT_TRUE(raw);
  expect_pattern(**raw, 100000, 70000, 0x5c);
}

TEST(Qcow2Features, LocksExcludeQemu) {
  TempDir d;
  std::string img = d.path("l.qcow2");
  expect_ok(run("qemu-img create -f qcow2 " + q(img) + " 4M"));
  auto im = open_rw(img);
  ASSERT_TRUE(im);
  auto r = run("qemu-io -c 'write 0 4k' " + q(img));
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("lock"), std::string::npos) << r.output;
  // And QEMU's lock keeps us out.
  im.reset();
  std::string sock = d.path("s.sock");
  expect_ok(run("(qemu-nbd -f qcow2 -k " + q(sock) + " " + q(img) + " >/dev/null 2>&1 &) ; sleep 0.5; true"));
  OpenOptions o;
  auto busy = Image::open(img, o);
  run("pkill -f " + q(sock));
  ASSERT_FALSE(busy.has_value());
  EXPECT_EQ(busy.error().code(), Code::kBusy) << busy.error().message();
}

TEST(Qcow2Features, ConcurrentWritersAndReaders) {
  TempDir d;
  std::string img = d.path("t.qcow2");
  CreateOptions co;
  co.size = 64ull << 20;
  co.cluster_size = 4096;
  ASSERT_TRUE(create_image(img, co).is_ok());
  auto im = open_rw(img);
  ASSERT_TRUE(im);
  // 8 threads write interleaved 3 KiB blocks (sharing clusters), with flushes mixed in.
  constexpr int kThreads = 8, kBlocks = 400;
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < kBlocks; ++i) {
        std::vector<uint8_t> b(3072, static_cast<uint8_t>(t * 31 + i));
        uint64_t off = (uint64_t(i) * kThreads + t) * 3072;
        EXPECT_TRUE(im->write(off, b).is_ok());
        if (i % 50 == 0) {
          EXPECT_TRUE(im->flush().is_ok());
        }
      }
    });
  for (auto& t : ts) t.join();
  for (int t = 0; t < kThreads; ++t)
    for (int i = 0; i < kBlocks; ++i)
      expect_pattern(*im, (uint64_t(i) * kThreads + t) * 3072, 3072, static_cast<uint8_t>(t * 31 + i));
  ASSERT_TRUE(im->close().is_ok());
  im.reset();
  expect_ok(qemu_check(img));
}

TEST(Qcow2Features, RefcountTableGrowsWithTinyClusters) {
  TempDir d;
  std::string img = d.path("g.qcow2");
  CreateOptions co;
  co.size = 256ull << 20;
  co.cluster_size = 512;
  co.refcount_bits = 64;  // 64 entries per refcount block: the table grows quickly
  ASSERT_TRUE(create_image(img, co).is_ok());
  auto im = open_rw(img);
  std::vector<uint8_t> b(512);
  for (int i = 0; i < 6000; ++i) {
    std::fill(b.begin(), b.end(), static_cast<uint8_t>(i));
    ASSERT_TRUE(im->write(uint64_t(i) * 40960, b).is_ok());
  }
  ASSERT_TRUE(im->close().is_ok());
  im.reset();
  expect_ok(qemu_check(img));
  auto ro = open_ro(img);
  for (int i = 0; i < 6000; i += 97) expect_pattern(*ro, uint64_t(i) * 40960, 512, static_cast<uint8_t>(i));
}

}  // namespace
}  // namespace keel::test

namespace keel::test {
namespace {

TEST(Qcow2BadInput, BackingLoopIsNamed) {
  TempDir d;
  expect_ok(run("cd " + q(d.path("")) + " && qemu-img create -f qcow2 a.qcow2 1M && qemu-img create -f qcow2 -u -b a.qcow2 -F qcow2 b.qcow2 1M"
                " && qemu-img rebase -u -b b.qcow2 -F qcow2 a.qcow2"));
  OpenOptions o;
  auto r = Image::open(d.path("a.qcow2"), o);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message().find("loop"), std::string::npos) << r.error().message();
}

TEST(Qcow2BadInput, UnknownAutoclearBitClearedOnFirstWrite) {
  TempDir d;
  std::string img = d.path("a.qcow2");
  expect_ok(run("qemu-img create -f qcow2 " + q(img) + " 1M"));
  // autoclear_features at byte 88: set bit 7 (unknown).
  expect_ok(run("printf '\\200' | dd of=" + q(img) + " bs=1 seek=95 conv=notrunc status=none"));
  auto im = open_rw(img);
  ASSERT_TRUE(im);
  std::vector<uint8_t> b(512, 1);
  ASSERT_TRUE(im->write(0, b).is_ok());
  ASSERT_TRUE(im->close().is_ok());
  im.reset();
  auto x = run("od -An -tx1 -j88 -N8 " + q(img));
  EXPECT_EQ(x.output.find("80"), std::string::npos) << x.output;
  expect_ok(qemu_check(img));
}

}  // namespace
}  // namespace keel::test
