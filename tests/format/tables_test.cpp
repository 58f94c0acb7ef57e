// Proves L2/refcount entry codecs and the snapshot table codec: refcounts of every width read
// back what was set without touching neighbours, compressed descriptors round-trip, snapshot
// tables round-trip and truncated tables are rejected.
#include <gtest/gtest.h>

#include <random>

#include "format/snapshot_table.h"
#include "format/tables.h"

namespace keel::format {
namespace {

TEST(Refcounts, EveryWidthIsolatesEntries) {
  for (uint32_t bits = 1; bits <= 64; bits *= 2) {
    std::vector<uint8_t> block(512, 0);
    uint64_t n = block.size() * 8 / bits;
    std::mt19937_64 rng(bits);
    std::vector<uint64_t> want(n);
    for (uint64_t i = 0; i < n; ++i) {
      want[i] = rng() & refcount_max(bits);
      set_refcount(block, i, bits, want[i]);
    }
    for (uint64_t i = 0; i < n; ++i) ASSERT_EQ(get_refcount(block, i, bits), want[i]) << bits << " bits, entry " << i;
  }
}

TEST(Refcounts, SubByteIsLsbFirst) {
  std::vector<uint8_t> block(1, 0);
  set_refcount(block, 0, 1, 1);
  EXPECT_EQ(block[0], 0x01);
  set_refcount(block, 1, 2, 3);
  EXPECT_EQ(block[0], 0x0d);
  std::vector<uint8_t> wide(2, 0);
  set_refcount(wide, 0, 16, 0x1234);
  EXPECT_EQ(wide[0], 0x12);  // big endian
}

TEST(L2, Classify) {
  EXPECT_EQ(classify_l2(0, false), ClusterType::kUnallocated);
  EXPECT_EQ(classify_l2(1, false), ClusterType::kZeroPlain);
  EXPECT_EQ(classify_l2(0x50000 | 1 | kCopied, false), ClusterType::kZeroAlloc);
  EXPECT_EQ(classify_l2(0x50000 | kCopied, false), ClusterType::kNormal);
  EXPECT_EQ(classify_l2(kCompressed | 123, false), ClusterType::kCompressed);
  EXPECT_EQ(classify_l2(1, true), ClusterType::kUnallocated);  // bit 0 reserved with ext L2
  EXPECT_EQ(classify_l2(kCopied, true), ClusterType::kNormal);  // host offset 0 (data file)
}

TEST(L2, CompressedDescriptorRoundTrip) {
  for (uint32_t cb = 9; cb <= 21; ++cb) {
    uint64_t host = 0x123456789ull & ((1ull << compressed_offset_bits(cb)) - 1);
    for (uint64_t size : {1ull, 511ull, 512ull, 1000ull, (1ull << cb) - 1}) {
      if (size >= (1ull << cb)) continue;  // compressed data is smaller than a cluster
      uint64_t e = encode_compressed(host, size, cb);
      auto d = decode_compressed(e, cb);
      EXPECT_EQ(d.host_offset, host);
      EXPECT_GE(d.size, size);
      EXPECT_LT(d.size, size + 512);
    }
  }
  // QEMU's example: 64 KiB clusters give an offset field of 54 bits.
  EXPECT_EQ(compressed_offset_bits(16), 54u);
}

TEST(SnapshotTable, RoundTripAndTruncation) {
  std::vector<SnapshotEntry> in(2);
  in[0].id = "1";
  in[0].name = "first";
  in[0].l1_table_offset = 0x50000;
  in[0].l1_size = 16;
  in[0].disk_size = 1 << 30;
  in[0].vm_state_size = 5;
  in[1].id = "2";
  in[1].name = "a much longer snapshot name";
  in[1].l1_table_offset = 0x70000;
  in[1].date_sec = 1234;
  auto t = encode_snapshot_table(in, 3);
  EXPECT_EQ(t.size() % 8, 0u);
  auto out = decode_snapshot_table(t, 2, 65536);
  ASSERT_TRUE(out) << out.error().message();
  EXPECT_EQ((*out)[0].name, "first");
  EXPECT_EQ((*out)[0].disk_size, 1u << 30);
  EXPECT_EQ((*out)[0].vm_state_size, 5u);
  EXPECT_EQ((*out)[1].name, in[1].name);
  EXPECT_EQ((*out)[1].date_sec, 1234u);
  auto bad = decode_snapshot_table(std::span<const uint8_t>(t).first(t.size() - 8), 2, 65536);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("runs past the table"), std::string::npos);
  auto misaligned = in;
  misaligned[0].l1_table_offset = 0x50200;
  auto m = decode_snapshot_table(encode_snapshot_table(misaligned, 3), 2, 65536);
  ASSERT_FALSE(m);
  EXPECT_NE(m.error().message().find("not cluster aligned"), std::string::npos);
}

// The lenient parts check reads with: the entry header as stored (even when the strict decoder
// refuses it), the entry length, and the on-disk table length the strict decoder reports.
TEST(SnapshotTable, LenientEntryHeaderAndLengths) {
  std::vector<SnapshotEntry> in(2);
  in[0].id = "1";
  in[0].name = "first";
  in[0].l1_table_offset = 0x50200;  // misaligned: decode_snapshot_table refuses it
  in[0].l1_size = 16;
  in[0].vm_clock_nsec = 77;
  in[0].vm_state_size = 5ull << 32;  // only the 64-bit extra field can hold it
  in[1].id = "22";
  in[1].name = "second";
  in[1].l1_table_offset = 0x70000;
  auto t = encode_snapshot_table(in, 3);
  ASSERT_FALSE(decode_snapshot_table(t, 2, 65536));
  SnapshotEntryHeader h = decode_snapshot_entry_header(std::span<const uint8_t>(t).first<kSnapshotEntryHeaderBytes>());
  EXPECT_EQ(h.l1_table_offset, 0x50200u);
  EXPECT_EQ(h.l1_size, 16u);
  EXPECT_EQ(h.vm_clock_nsec, 77u);
  EXPECT_EQ(h.extra_size, 24u);  // v3 entries get 24 bytes of extra data
  EXPECT_EQ(h.id_size, 1u);
  EXPECT_EQ(h.name_size, 5u);
  EXPECT_EQ(h.unpadded_bytes(), 40u + 24 + 1 + 5);
  EXPECT_EQ(snapshot_entry_bytes(h.extra_size, h.id_size, h.name_size), 72u);
  SnapshotEntry e = make_snapshot_entry(h, std::vector<uint8_t>(t.begin() + 40, t.begin() + 64), "1", "first");
  EXPECT_EQ(e.vm_state_size, 5ull << 32);
  EXPECT_EQ(e.icount, UINT64_MAX);
  EXPECT_EQ(e.name, "first");

  in[0].l1_table_offset = 0x50000;
  t = encode_snapshot_table(in, 3);
  uint64_t table_bytes = 0;
  ASSERT_TRUE(decode_snapshot_table(t, 2, 65536, &table_bytes));
  EXPECT_EQ(table_bytes, t.size());
}

}  // namespace
}  // namespace keel::format
