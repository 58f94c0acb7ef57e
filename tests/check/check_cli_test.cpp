// Proves that the keel check command behaves like qemu-img check where scripts look: the same
// stdout (human and JSON, byte for byte) and exit codes on clean, leaking and corrupt images and
// after -r leaks; 63 for raw; -r leaks refusing a rebuild (exit 1) as QEMU does; and it covers the
// damage beyond the list: compressed clusters, bitmaps, snapshots, v2 zero flags, dirty and
// corrupt bits, progress output. qemu-img and qemu-io are the oracles.
#include <gtest/gtest.h>

#include <string>

#include <fmt/format.h>

#include "check/corrupt_util.h"
#include "format/endian.h"
#include "format/header.h"
#include "format/tables.h"

namespace keel::testing {
namespace {

const std::string kKeel = KEEL_BINARY;

std::string q(const std::string& s) { return "'" + s + "'"; }

class CheckCli : public ::testing::Test {
 protected:
  // Runs a shell line with $I replaced by the image path; asserts success.
  void sh(const std::string& line) {
    std::string cmd = line, out;
    for (size_t p; (p = cmd.find("$I")) != std::string::npos;) cmd.replace(p, 2, img_);
    ASSERT_EQ(run(cmd, &out), 0) << cmd << "\n" << out;
  }
  // The base image of qemu-qcow2-facts (c): data clusters 5, 6, 7; the L2 entry of guest 1M at
  // 0x40080; refcount block at 0x20000.
  void make_base() {
    sh("qemu-img create -q -f qcow2 $I 64M");
    sh("qemu-io -c 'write -P 0xaa 0 128k' -c 'write -P 0xbb 1M 64k' $I");
  }
  void poke(uint64_t off, std::span<const uint8_t> bytes, const std::string& path = "") {
    auto b = read_file(path.empty() ? img_ : path);
    ASSERT_TRUE(b);
    if (b->size() < off + bytes.size()) b->resize(off + bytes.size());
    std::copy(bytes.begin(), bytes.end(), b->begin() + static_cast<long>(off));
    ASSERT_TRUE(write_file(path.empty() ? img_ : path, *b).is_ok());
  }
  void poke64(uint64_t off, uint64_t v) {
    uint8_t b[8];
    format::put_be64(b, v);
    poke(off, b);
  }
  // stdout of a command (stderr dropped), and its exit code.
  int out_of(const std::string& cmd, std::string* out) { return run("( { " + cmd + " ; } 2>/dev/null )", out); }
  // Same command line for both tools on two copies of the image; compares stdout and exit code.
  void same_as_qemu(const std::string& args) {
    std::string copy = dir_.file("qemu-copy.qcow2");
    ASSERT_EQ(run(fmt::format("cp {} {}", q(img_), q(copy))), 0);
    std::string kout, qout;
    int krc = out_of(fmt::format("cd {} && {} check {} img.qcow2", q(dir_.path()), kKeel, args), &kout);
    int qrc = out_of(fmt::format("cd {} && cp qemu-copy.qcow2 img2.qcow2 && qemu-img check {} img2.qcow2 | sed s/img2.qcow2/img.qcow2/",
                                 q(dir_.path()), args), &qout);
    // The pipe hides qemu-img's status: take it again on a fresh copy.
    std::string ignored;
    qrc = run(fmt::format("cd {} && cp qemu-copy.qcow2 img3.qcow2 && qemu-img check {} img3.qcow2 >/dev/null 2>&1",
                          q(dir_.path()), args), &ignored);
    EXPECT_EQ(krc, qrc) << args;
    EXPECT_EQ(kout, qout) << args;
  }
  int keel_check(const std::string& args, std::string* out = nullptr) {
    std::string o;
    int rc = run(fmt::format("{} check {} {}", kKeel, args, q(img_)), out ? out : &o);
    return rc;
  }
  int qemu_check(const std::string& args = "") { return run(fmt::format("qemu-img check {} {}", args, q(img_))); }

  TempDir dir_;
  std::string img_ = dir_.file("img.qcow2");
};

TEST_F(CheckCli, CleanImageSameOutputAsQemu) {
  make_base();
  same_as_qemu("");
  same_as_qemu("--output=json");
}

TEST_F(CheckCli, CompressedImageSameOutputAsQemu) {
  make_base();
  sh("qemu-img convert -c -O qcow2 $I $I.c && mv $I.c $I");
  same_as_qemu("");
  same_as_qemu("--output=json");
}

TEST_F(CheckCli, LeakSameOutputAndRepairAsQemu) {
  make_base();
  poke64(0x40080, 0);  // guest 1M unmapped: cluster 7 leaks
  same_as_qemu("");
  same_as_qemu("--output=json");
  same_as_qemu("-r leaks");
  EXPECT_EQ(qemu_check(), 0);
  make_base();
  poke64(0x40080, 0);
  same_as_qemu("-r leaks --output=json");
}

TEST_F(CheckCli, CorruptionExitCodeAndLeaksRepairRefusesRebuild) {
  make_base();
  uint8_t zero[2] = {0, 0};
  poke(0x2000a, zero);  // refcount of cluster 5 -> 0
  same_as_qemu("");
  std::string out;
  EXPECT_EQ(keel_check("-r leaks", &out), 1) << out;  // as qemu-img: a rebuild is needed
  EXPECT_EQ(qemu_check("-r leaks"), 1);
  EXPECT_EQ(keel_check("-r all", &out), 0) << out;
  EXPECT_NE(out.find("Double checking the fixed image now..."), std::string::npos) << out;
  EXPECT_EQ(qemu_check(), 0);
}

TEST_F(CheckCli, RawHasNoCheck) {
  sh("qemu-img create -q -f raw $I 1M");
  std::string out;
  EXPECT_EQ(keel_check("", &out), 63) << out;
  EXPECT_NE(out.find("This image format does not support checks"), std::string::npos) << out;
  EXPECT_EQ(qemu_check(), 63);
  EXPECT_EQ(keel_check("-f raw", &out), 63) << out;
}

TEST_F(CheckCli, BadArguments) {
  make_base();
  std::string out;
  EXPECT_EQ(keel_check("-r bogus", &out), 1) << out;
  EXPECT_EQ(keel_check("--output=xml", &out), 1) << out;
  EXPECT_EQ(run(kKeel + " check " + q(dir_.file("missing.qcow2")), &out), 1) << out;
}

TEST_F(CheckCli, ProgressAndQuiet) {
  make_base();
  std::string out;
  EXPECT_EQ(out_of(fmt::format("{} check -p {}", kKeel, q(img_)), &out), 0);
  EXPECT_NE(out.find("(100.00/100%)"), std::string::npos) << out;
  std::string quiet;
  EXPECT_EQ(out_of(fmt::format("{} check -q {}", kKeel, q(img_)), &quiet), 0);
  EXPECT_EQ(quiet, "");
}

TEST_F(CheckCli, LazyRefcountsDirtyImage) {
  sh("qemu-img create -q -f qcow2 -o lazy_refcounts=on $I 64M");
  std::string out;
  run(fmt::format("qemu-io -c 'write -P 0x5a 0 512' -c 'write -P 0x5b 2M 128k' -c 'sigraise 9' {}", q(img_)), &out);
  std::string kerr;
  EXPECT_EQ(keel_check("", &kerr), 2) << kerr;
  EXPECT_EQ(qemu_check(), 2);
  EXPECT_NE(kerr.find("6 errors were found on the image."), std::string::npos) << kerr;
  EXPECT_EQ(keel_check("-r all", &out), 0) << out;
  EXPECT_EQ(qemu_check(), 0);
  sh("qemu-img info --output=json $I | grep -q '\"dirty-flag\": false'");
  sh("qemu-io -c 'read -P 0x5a 0 512' -c 'read -P 0x5b 2M 128k' $I | (! grep -q 'Pattern verification failed')");
}

TEST_F(CheckCli, CorruptBitClearedByRepair) {
  make_base();
  poke64(format::kOffsetIncompatible, format::kIncompatCorrupt);
  EXPECT_EQ(keel_check(""), 0);  // the bit alone is no inconsistency (as qemu-img)
  EXPECT_EQ(qemu_check(), 0);
  EXPECT_EQ(keel_check("-r all"), 0);
  auto b = read_file(img_);
  ASSERT_TRUE(b);
  EXPECT_EQ(format::get_be64(&(*b)[format::kOffsetIncompatible]) & format::kIncompatCorrupt, 0u);
  sh("qemu-io -c 'write -P 0x11 4M 4k' $I");  // QEMU opens it read-write again
}

TEST_F(CheckCli, CompressedClusterPastEndRepaired) {
  make_base();
  sh("qemu-img convert -c -O qcow2 $I $I.c && mv $I.c $I");
  auto b = read_file(img_);
  ASSERT_TRUE(b);
  auto h = format::decode_header(std::span<const uint8_t>(b->data(), 65536), UINT64_MAX, true);
  ASSERT_TRUE(h);
  uint64_t l2 = format::get_be64(&(*b)[h->l1_table_offset]) & format::kOffsetMask;
  uint64_t e = format::get_be64(&(*b)[l2 + 16 * 8]);  // guest 1M
  ASSERT_TRUE(e & format::kCompressed);
  // Same descriptor, host offset moved 16 MiB past the end of the file.
  uint32_t x = format::compressed_offset_bits(h->cluster_bits);
  uint64_t off_mask = (1ull << x) - 1;
  poke64(l2 + 16 * 8, (e & ~off_mask) | (b->size() + (16 << 20)));
  EXPECT_EQ(keel_check(""), 2);
  EXPECT_EQ(qemu_check(), 2);
  std::string out;
  EXPECT_EQ(keel_check("-r all", &out), 0) << out;
  EXPECT_EQ(qemu_check(), 0);
  sh("qemu-io -c 'read -P 0xaa 0 128k' $I | (! grep -q 'Pattern verification failed')");
  sh("qemu-io -c 'read -P 0 1M 64k' $I | (! grep -q 'Pattern verification failed')");
}

TEST_F(CheckCli, BitmapTableEntryRepairedToAllOnes) {
  make_base();
  sh("qemu-img bitmap --add $I b0");
  auto b = read_file(img_);
  ASSERT_TRUE(b);
  auto h = format::decode_header(std::span<const uint8_t>(b->data(), 65536), UINT64_MAX, true);
  ASSERT_TRUE(h && h->bitmaps);
  uint64_t table = format::get_be64(&(*b)[h->bitmaps->directory_offset]);
  poke64(table, 0x0000000000010201ull);  // misaligned offset with the all-ones bit: invalid
  // QEMU cannot even open the image (it loads the bitmap): check not completed, exit 1.
  EXPECT_EQ(keel_check(""), 1);
  EXPECT_EQ(qemu_check(), 1);
  EXPECT_EQ(qemu_check("-r all"), 1);
  std::string out;
  EXPECT_EQ(keel_check("-r all", &out), 0) << out;
  EXPECT_EQ(qemu_check(), 0);
  sh("qemu-img info $I | grep -q 'name: b0'");
}

TEST_F(CheckCli, BitmapDirectoryPastEndDropsBitmaps) {
  make_base();
  sh("qemu-img bitmap --add $I b0");
  auto b = read_file(img_);
  ASSERT_TRUE(b);
  auto h = format::decode_header(std::span<const uint8_t>(b->data(), 65536), UINT64_MAX, true);
  ASSERT_TRUE(h && h->bitmaps);
  // Find the bitmaps extension and move the directory far past the end of the file.
  for (uint64_t off = 112; off + 8 < 4096; off += 8) {
    if (format::get_be32(&(*b)[off]) == format::kExtBitmaps) {
      poke64(off + 8 + 16, (b->size() + (64 << 20)) / 65536 * 65536);
      break;
    }
  }
  std::string out;
  int k = keel_check("", &out);
  EXPECT_EQ(k, 2) << out;
  EXPECT_EQ(keel_check("-r all", &out), 0) << out;
  EXPECT_EQ(qemu_check(), 0);
  sh("qemu-io -c 'read -P 0xbb 1M 64k' $I | (! grep -q 'Pattern verification failed')");
}

TEST_F(CheckCli, SnapshotWithMisalignedL1Deleted) {
  make_base();
  sh("qemu-img snapshot -c s1 $I");
  sh("qemu-io -c 'write -P 0xcc 2M 64k' $I");
  sh("qemu-img snapshot -c s2 $I");
  auto b = read_file(img_);
  ASSERT_TRUE(b);
  auto h = format::decode_header(std::span<const uint8_t>(b->data(), 65536), UINT64_MAX, true);
  ASSERT_TRUE(h);
  uint64_t first_l1 = format::get_be64(&(*b)[h->snapshots_offset]);
  poke64(h->snapshots_offset, first_l1 + 512);  // snapshot s1's L1 table misaligned
  std::string out;
  EXPECT_EQ(keel_check("", &out), 2) << out;
  EXPECT_EQ(keel_check("-r all", &out), 0) << out;
  EXPECT_EQ(qemu_check(), 0);
  sh("qemu-img snapshot -l $I | grep -q s2");
  sh("(! qemu-img snapshot -l $I | grep -q ' s1 ')");
  sh("qemu-io -c 'read -P 0xcc 2M 64k' -c 'read -P 0xbb 1M 64k' $I | (! grep -q 'Pattern verification failed')");
}

TEST_F(CheckCli, ZeroFlagInVersion2Image) {
  sh("qemu-img create -q -f qcow2 -o compat=0.10 $I 64M");
  sh("qemu-io -c 'write -P 0xaa 0 128k' -c 'write -P 0xbb 1M 64k' $I");
  // The L2 entry of guest 1M gets the v3-only zero flag: QEMU's reads fail (and mark the image
  // corrupt), its check says nothing. Keel calls it a corruption and repairs it.
  auto b = read_file(img_);
  ASSERT_TRUE(b);
  auto h = format::decode_header(std::span<const uint8_t>(b->data(), 65536), UINT64_MAX, true);
  ASSERT_TRUE(h);
  uint64_t l2 = format::get_be64(&(*b)[h->l1_table_offset]) & format::kOffsetMask;
  uint64_t e = format::get_be64(&(*b)[l2 + 16 * 8]);
  poke64(l2 + 16 * 8, e | format::kZeroFlag);
  std::string out;
  EXPECT_EQ(keel_check("", &out), 2) << out;
  EXPECT_EQ(keel_check("-r all", &out), 0) << out;
  EXPECT_EQ(qemu_check(), 0);
  sh("qemu-io -c 'read -P 0 1M 64k' -c 'read -P 0xaa 0 128k' $I | (! grep -q 'Pattern verification failed')");
}

}  // namespace
}  // namespace keel::testing

namespace keel::testing {
namespace {

// An L1 entry pointing at a guest data cluster: the "L2 table" there is data (mostly invalid
// entries, and other L2 entries use it as data), so the L1 entry is what the repair drops.
TEST_F(CheckCli, L1EntryPointingAtGuestDataIsTheDamage) {
  sh("qemu-img create -q -f qcow2 -o cluster_size=4096 $I 8M");
  sh("qemu-io -c 'write -P 0xaa 0 128k' -c 'write -P 0xbb 1M 64k' -c 'write -P 0xcc 5M 64k' $I");
  auto b = read_file(img_);
  ASSERT_TRUE(b);
  auto h = format::decode_header(std::span<const uint8_t>(b->data(), 4096), UINT64_MAX, true);
  ASSERT_TRUE(h);
  uint64_t l2 = format::get_be64(&(*b)[h->l1_table_offset]) & format::kOffsetMask;
  uint64_t data = format::get_be64(&(*b)[l2 + 256 * 8]) & format::kOffsetMask;  // guest 1M
  poke64(h->l1_table_offset + 2 * 8, format::kCopied | data);                    // L1[2]: guest 4M..6M
  std::string out;
  EXPECT_EQ(keel_check("", &out), 2) << out;
  EXPECT_EQ(qemu_check(), 2);
  EXPECT_EQ(keel_check("-r all", &out), 0) << out;
  EXPECT_EQ(qemu_check(), 0);
  sh("qemu-io -c 'read -P 0xbb 1M 64k' -c 'read -P 0xaa 0 128k' $I | (! grep -q 'Pattern verification failed')");
}

}  // namespace
}  // namespace keel::testing
