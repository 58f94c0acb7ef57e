// Proves internal snapshot create/apply/delete, resize (also 512-byte clusters to 2G, shrink with
// snapshots), make_empty and amend (compat both ways with zero-cluster expansion, refcount
// width changes) leave images that qemu-img check calls clean and that read as QEMU expects
// (qemu-img snapshot -l / info / map, qemu-io pattern reads), on images made by keel and qemu-img.
#include <gtest/gtest.h>

#include "engine/engine_util.h"

namespace keel::test {
namespace {

std::string q(const std::string& s) { return "'" + s + "'"; }
void expect_ok(const CommandResult& r) { ASSERT_EQ(r.exit_code, 0) << r.output; }
void expect_reads(const std::string& img, const std::string& cmds) {
  auto r = run("qemu-io -r " + cmds + " " + q(img));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("fail"), std::string::npos) << r.output;
}

void fill(Image& im, uint64_t off, uint64_t len, uint8_t v) {
  std::vector<uint8_t> b(len, v);
  ASSERT_TRUE(im.write(off, b).is_ok());
}

TEST(Snapshots, CreateApplyDeleteRoundTrip) {
  TempDir d;
  std::string img = d.path("s.qcow2");
  CreateOptions co;
  co.size = 16 << 20;
  ASSERT_TRUE(create_image(img, co).is_ok());
  {
    auto im = open_rw(img);
    fill(*im, 0, 1 << 20, 0xa1);
    ASSERT_TRUE(im->snapshot_create("one").is_ok());
    fill(*im, 512 << 10, 4096, 0xa2);  // copy-on-write of a shared cluster
    fill(*im, 8 << 20, 70000, 0xa3);
    ASSERT_TRUE(im->snapshot_create("two").is_ok());
    fill(*im, 0, 4096, 0xa4);
    ASSERT_TRUE(im->close().is_ok());
  }
  expect_ok(qemu_check(img));
  auto l = run("qemu-img snapshot -l " + q(img));
  EXPECT_NE(l.output.find("one"), std::string::npos) << l.output;
  EXPECT_NE(l.output.find("two"), std::string::npos) << l.output;
  expect_reads(img, "-c 'read -P 0xa4 0 4k' -c 'read -P 0xa1 4k 508k' -c 'read -P 0xa2 512k 4k' -c 'read -P 0xa3 8M 70000'");
  expect_ok(run("qemu-img snapshot -a one " + q(d.path("s.qcow2")) + " && cp " + q(img) + " " + q(d.path("ref.qcow2"))));
  // QEMU applied "one" on the copy; keel applies it on the original: both must read the same.
  expect_ok(run("qemu-img snapshot -a two " + q(img)));  // back to "two" with QEMU, then keel:
  {
    auto im = open_rw(img);
    ASSERT_TRUE(im->snapshot_apply("one").is_ok());
    ASSERT_TRUE(im->close().is_ok());
  }
  expect_ok(qemu_check(img));
  expect_ok(run("qemu-img compare " + q(img) + " " + q(d.path("ref.qcow2"))));
  {
    auto im = open_rw(img);
    ASSERT_TRUE(im->snapshot_delete("one").is_ok());
    ASSERT_TRUE(im->snapshot_delete("2").is_ok());  // by id
    EXPECT_EQ(im->snapshot_delete("nope").code(), Code::kNotFound);
    ASSERT_TRUE(im->close().is_ok());
  }
  expect_ok(qemu_check(img));
  l = run("qemu-img snapshot -l " + q(img));
  EXPECT_EQ(l.output.find("one"), std::string::npos) << l.output;
  expect_reads(img, "-c 'read -P 0xa1 0 1M'");
  auto info = run("qemu-img info " + q(img));
  EXPECT_NE(info.output.find("corrupt: false"), std::string::npos) << info.output;
}

TEST(Snapshots, DeleteQemuSnapshot) {
  TempDir d;
  std::string img = d.path("q.qcow2");
  expect_ok(run("qemu-img create -f qcow2 -o cluster_size=4096,refcount_bits=4 " + q(img) + " 8M && qemu-io -c 'write -P 1 0 2M' " + q(img) +
                " && qemu-img snapshot -c s1 " + q(img) + " && qemu-io -c 'write -P 2 1M 1M' " + q(img) +
                " && qemu-img snapshot -c s2 " + q(img)));
  {
    auto im = open_rw(img);
    ASSERT_TRUE(im->snapshot_delete("s1").is_ok());
    fill(*im, 0, 8192, 3);
    ASSERT_TRUE(im->close().is_ok());
  }
  expect_ok(qemu_check(img));
  expect_reads(img, "-c 'read -P 3 0 8k' -c 'read -P 1 8k 1016k' -c 'read -P 2 1M 1M'");
}

TEST(Resize, GrowPastL1AndShrink) {
  TempDir d;
  std::string img = d.path("r.qcow2");
  CreateOptions co;
  co.size = 1 << 20;
  co.cluster_size = 512;  // 64 entries per L2: L1 must grow
  ASSERT_TRUE(create_image(img, co).is_ok());
  {
    auto im = open_rw(img);
    fill(*im, 0, 4096, 7);
    ASSERT_TRUE(im->resize(64 << 20, false).is_ok());
    fill(*im, 60 << 20, 4096, 8);
    EXPECT_EQ(im->resize(1 << 20, false).code(), Code::kInvalidArgument);
    ASSERT_TRUE(im->close().is_ok());
  }
  expect_ok(qemu_check(img));
  expect_reads(img, "-c 'read -P 7 0 4k' -c 'read -P 8 60M 4k'");
  {
    auto im = open_rw(img);
    ASSERT_TRUE(im->resize(2560, true).is_ok());
    ASSERT_TRUE(im->close().is_ok());
  }
  expect_ok(qemu_check(img));
  auto info = run("qemu-img info --output=json " + q(img));
  EXPECT_NE(info.output.find("\"virtual-size\": 2560"), std::string::npos) << info.output;
}

}  // namespace
}  // namespace keel::test

namespace keel::test {
namespace {

// QEMU's own crash with lazy refcounts leaves a dirty image with 6 corruptions; a read-write
// open repairs it before writing, and the data QEMU wrote is still there.
TEST(DirtyImage, ReadWriteOpenRepairsLazyRefcountCrash) {
  TempDir d;
  std::string img = d.path("lazy.qcow2");
  expect_ok(run("qemu-img create -f qcow2 -o lazy_refcounts=on " + q(img) + " 64M"));
  run("qemu-io -c 'write -P 0x5a 0 512' -c 'write -P 0x5b 2M 128k' -c 'sigraise 9' " + q(img));
  auto before = qemu_check(img);
  ASSERT_EQ(before.exit_code, 2) << before.output;
  {
    auto im = open_rw(img);
    ASSERT_TRUE(im);
    fill(*im, 4 << 20, 65536, 0x5c);
    ASSERT_TRUE(im->close().is_ok());
  }
  expect_ok(qemu_check(img));
  expect_reads(img, "-c 'read -P 0x5a 0 512' -c 'read -P 0x5b 2M 128k' -c 'read -P 0x5c 4M 64k'");
  auto info = run("qemu-img info " + q(img));
  EXPECT_NE(info.output.find("corrupt: false"), std::string::npos) << info.output;
}

}  // namespace
}  // namespace keel::test

namespace keel::test {
namespace {

TEST(Amend, CompatLazyRefcountsAndBacking) {
  TempDir d;
  std::string img = d.path("a.qcow2");
  expect_ok(run("cd " + q(d.path("")) + " && qemu-img create -f qcow2 b1.qcow2 4M && qemu-io -c 'write -P 9 0 4M' b1.qcow2 && cp b1.qcow2 b2.qcow2"
                " && qemu-img create -f qcow2 -b b1.qcow2 -F qcow2 a.qcow2"));
  {
    auto im = open_rw(img);
    fill(*im, 0, 65536, 1);
    ASSERT_TRUE(im->write_zeroes(1 << 20, 65536, ZeroFlags{}).is_ok());
    AmendOptions o;
    o.lazy_refcounts = true;
    o.backing_file = "b2.qcow2";
    ASSERT_TRUE(im->amend(o).is_ok());
    AmendOptions down;
    down.version = 2;
    EXPECT_FALSE(im->amend(down).is_ok());  // lazy refcounts need v3
    ASSERT_TRUE(im->close().is_ok());
  }
  expect_ok(qemu_check(img));
  auto info = run("qemu-img info " + q(img));
  EXPECT_NE(info.output.find("backing file: b2.qcow2"), std::string::npos) << info.output;
  EXPECT_NE(info.output.find("lazy refcounts: true"), std::string::npos) << info.output;
  expect_reads(img, "-c 'read -P 1 0 64k' -c 'read -P 0 1M 64k' -c 'read -P 9 2M 64k'");
  {
    auto im = open_rw(img);
    AmendOptions o;
    o.lazy_refcounts = false;
    o.version = 2;
    // v2 has no zero clusters: over a backing file they become clusters of zeros (QEMU's
    // qcow2_expand_zero_clusters).
    ASSERT_TRUE(im->amend(o).is_ok());
    ASSERT_TRUE(im->close().is_ok());
  }
  expect_ok(qemu_check(img));
  info = run("qemu-img info " + q(img));
  EXPECT_NE(info.output.find("compat: 0.10"), std::string::npos) << info.output;
  expect_reads(img, "-c 'read -P 1 0 64k' -c 'read -P 0 1M 64k' -c 'read -P 9 2M 64k'");
  std::string solo = d.path("solo.qcow2");
  expect_ok(run("qemu-img create -f qcow2 " + q(solo) + " 4M && qemu-io -c 'write -P 5 0 128k' -c 'write -z 64k 64k' " + q(solo)));
  {
    auto im = open_rw(solo);
    AmendOptions o;
    o.version = 2;
    ASSERT_TRUE(im->amend(o).is_ok());
    ASSERT_TRUE(im->close().is_ok());
  }
  expect_ok(qemu_check(solo));
  info = run("qemu-img info " + q(solo));
  EXPECT_NE(info.output.find("compat: 0.10"), std::string::npos) << info.output;
  expect_reads(solo, "-c 'read -P 5 0 64k' -c 'read -P 0 64k 64k'");
}

}  // namespace
}  // namespace keel::test

namespace keel::test {
namespace {

// Growing a 512-byte-cluster image to 2G writes a 512 KiB L1 table: a run of 1024 clusters that
// spans several refcount blocks' ranges (once "cluster allocation did not converge").
TEST(Resize, Grow512ByteClustersTo2G) {
  for (uint32_t bits : {1u, 16u, 64u}) {
    TempDir d;
    std::string img = d.path("c512.qcow2");
    CreateOptions co;
    co.size = 1 << 20;
    co.cluster_size = 512;
    co.refcount_bits = bits;
    ASSERT_TRUE(create_image(img, co).is_ok());
    {
      auto im = open_rw(img);
      fill(*im, 0, 256 << 10, 0x31);
      ASSERT_TRUE(im->resize(2048ull << 20, false).is_ok()) << bits;
      fill(*im, (2048ull << 20) - 65536, 65536, 0x32);
      ASSERT_TRUE(im->resize(4096ull << 20, false).is_ok()) << bits;
      fill(*im, 3ull << 30, 4096, 0x33);
      ASSERT_TRUE(im->close().is_ok());
    }
    expect_ok(qemu_check(img));
    expect_reads(img, "-c 'read -P 0x31 0 256k' -c 'read -P 0x32 2097088k 64k' -c 'read -P 0x33 3G 4k' -c 'read -P 0 1M 1M'");
  }
}

// As in qemu-img 7.2, a v3 image with snapshots can shrink; the snapshot keeps its data and
// size, and the clusters past the new end are deallocated.
TEST(Resize, ShrinkWithSnapshots) {
  TempDir d;
  std::string img = d.path("s.qcow2");
  CreateOptions co;
  co.size = 4 << 20;
  ASSERT_TRUE(create_image(img, co).is_ok());
  {
    auto im = open_rw(img);
    fill(*im, 0, 4 << 20, 0x41);
    ASSERT_TRUE(im->snapshot_create("s1").is_ok());
    fill(*im, 3 << 20, 65536, 0x42);
    ASSERT_TRUE(im->resize(1 << 20, true).is_ok());
    ASSERT_TRUE(im->resize(3 << 20, false).is_ok());
    ASSERT_TRUE(im->close().is_ok());
  }
  expect_ok(qemu_check(img));
  expect_reads(img, "-c 'read -P 0x41 0 1M' -c 'read -P 0 1M 2M'");
  auto map = run("qemu-img map --output=json " + q(img));
  EXPECT_NE(map.output.find("\"start\": 1048576, \"length\": 2097152, \"depth\": 0, \"present\": false"), std::string::npos)
      << map.output;
  expect_ok(run("qemu-img snapshot -a s1 " + q(img)));
  expect_ok(qemu_check(img));
  expect_reads(img, "-c 'read -P 0x41 0 4M'");
}

// make_empty deallocates every cluster of an overlay: it reads its backing file again, and
// the file keeps only header, refcount table and block, and L1 table.
TEST(MakeEmpty, OverlayReadsItsBackingFile) {
  TempDir d;
  std::string base = d.path("base.qcow2"), top = d.path("top.qcow2");
  expect_ok(run("qemu-img create -q -f qcow2 " + q(base) + " 4M && qemu-io -c 'write -P 0x51 0 4M' " + q(base)));
  CreateOptions co;
  co.size = 4 << 20;
  co.backing_file = base;
  co.backing_format = "qcow2";
  ASSERT_TRUE(create_image(top, co).is_ok());
  {
    auto im = open_rw(top);
    fill(*im, 0, 1 << 20, 0x52);
    ASSERT_TRUE(im->write_zeroes(2 << 20, 65536, ZeroFlags{}).is_ok());
    ASSERT_TRUE(im->make_empty().is_ok());
    ASSERT_TRUE(im->close().is_ok());
  }
  expect_ok(qemu_check(top));
  expect_reads(top, "-c 'read -P 0x51 0 4M'");
  auto map = run("qemu-img map --output=json " + q(top));
  EXPECT_EQ(map.output.find("\"depth\": 0"), std::string::npos) << map.output;
  auto size = run("stat -c %s " + q(top));
  EXPECT_EQ(std::stoull(size.output), 4u * 65536) << size.output;
}

// refcount_bits is rebuilt at every width; a width too narrow for a refcount is refused before
// anything changes; QEMU then reads, checks and writes the image.
TEST(Amend, RefcountBitsEveryWidth) {
  TempDir d;
  std::string img = d.path("rc.qcow2");
  CreateOptions co;
  co.size = 8 << 20;
  co.cluster_size = 4096;
  ASSERT_TRUE(create_image(img, co).is_ok());
  {
    auto im = open_rw(img);
    fill(*im, 0, 2 << 20, 0x61);
    ASSERT_TRUE(im->snapshot_create("s").is_ok());
    fill(*im, 1 << 20, 65536, 0x62);
    for (uint32_t bits : {64u, 2u, 8u, 32u, 4u}) {
      AmendOptions o;
      o.refcount_bits = bits;
      ASSERT_TRUE(im->amend(o).is_ok()) << bits;
      EXPECT_EQ(im->info().refcount_bits, bits);
      fill(*im, (4 << 20) + bits * 8192, 8192, static_cast<uint8_t>(bits));
      ASSERT_TRUE(im->flush().is_ok());
    }
    AmendOptions one;
    one.refcount_bits = 1;  // the snapshot's clusters have refcount 2
    Status st = im->amend(one);
    EXPECT_EQ(st.code(), Code::kInvalidArgument);
    EXPECT_NE(st.message().find("Cannot decrease refcount entry width to 1 bits"), std::string::npos) << st.message();
    EXPECT_EQ(im->info().refcount_bits, 4u);
    ASSERT_TRUE(im->close().is_ok());
  }
  expect_ok(qemu_check(img));
  auto info = run("qemu-img info " + q(img));
  EXPECT_NE(info.output.find("refcount bits: 4"), std::string::npos) << info.output;
  expect_reads(img, "-c 'read -P 0x61 0 1M' -c 'read -P 0x62 1M 64k' -c 'read -P 64 4608k 8k' -c 'read -P 2 4112k 8k'");
  expect_ok(run("qemu-io -c 'write -P 0x63 6M 1M' " + q(img)));
  expect_ok(qemu_check(img));
  expect_ok(run("qemu-img snapshot -a s " + q(img)));
  expect_ok(qemu_check(img));
  expect_reads(img, "-c 'read -P 0x61 0 2M'");
}

}  // namespace
}  // namespace keel::test
