// Proves issue 13's guarantee, damage in one cluster never spreads to metadata: over damaged
// images (each kind of metadata cluster with its refcount at 0; an L2 entry pointed at each kind;
// refcount table entry 0 zeroed; 1-, 16- and 64-bit refcounts; 512 B, 4 KiB and 64 KiB clusters;
// with and without snapshots and bitmaps), allocating and in-place writes, write-zeroes, discards,
// snapshot create and bitmap add never put a guest byte into a metadata cluster; a refused guest
// request marks the image corrupt and leaves every metadata byte as it was (except the corrupt bit
// and the bitmap directory's in-use flags); qemu-img info still opens the images as qcow2 (64 KiB/16-bit
// variants), and keel check -r all makes a refused image writable again.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <fmt/format.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include "engine/engine_util.h"
#include "engine/metadata_map.h"
#include "keel/check.h"

namespace keel::test {
namespace {

constexpr uint64_t kCopied = 1ull << 63;
constexpr uint64_t kOffsetMask = 0x00fffffffffffe00ull;
constexpr uint8_t kMarker = 0xa5;  // every guest write of this test writes this byte

uint64_t be64(const std::vector<uint8_t>& b, uint64_t o) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = v << 8 | b.at(o + i);
  return v;
}
uint32_t be32(const std::vector<uint8_t>& b, uint64_t o) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = v << 8 | b.at(o + i);
  return v;
}
void put64(std::vector<uint8_t>& b, uint64_t o, uint64_t v) {
  for (int i = 7; i >= 0; --i, v >>= 8) b.at(o + i) = static_cast<uint8_t>(v);
}

std::vector<uint8_t> slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}
void spill(const std::string& p, const std::vector<uint8_t>& b) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

struct Meta {
  MetaKind kind;
  uint64_t offset;  // cluster aligned
};

// Every metadata cluster of a qcow2 file, parsed independently of the engine.
struct Layout {
  uint64_t cs = 0, l1_off = 0, rt_off = 0, rc_bits = 16;
  uint32_t l1_size = 0, rt_clusters = 0;
  std::vector<Meta> meta;

  explicit Layout(const std::vector<uint8_t>& f) {
    cs = 1ull << be32(f, 20);
    l1_size = be32(f, 36);
    l1_off = be64(f, 40);
    rt_off = be64(f, 48);
    rt_clusters = be32(f, 56);
    const uint32_t nb_snap = be32(f, 60);
    const uint64_t snap_off = be64(f, 64);
    rc_bits = 1ull << be32(f, 96);
    auto span = [&](MetaKind k, uint64_t off, uint64_t len) {
      for (uint64_t c = off / cs; len && c <= (off + len - 1) / cs; ++c) meta.push_back({k, c * cs});
    };
    span(MetaKind::kMainHeader, 0, cs);
    span(MetaKind::kActiveL1, l1_off, l1_size * 8ull);
    span(MetaKind::kRefcountTable, rt_off, rt_clusters * cs);
    for (uint64_t i = 0; i < rt_clusters * cs / 8; ++i)
      if (uint64_t e = be64(f, rt_off + i * 8) & ~(cs - 1)) span(MetaKind::kRefcountBlock, e, cs);
    for (uint32_t i = 0; i < l1_size; ++i)
      if (uint64_t e = be64(f, l1_off + i * 8) & kOffsetMask) span(MetaKind::kActiveL2, e, cs);
    uint64_t p = snap_off;
    for (uint32_t s = 0; s < nb_snap; ++s) {
      uint64_t sl1 = be64(f, p);
      uint32_t sl1_size = be32(f, p + 8);
      uint32_t id_len = f[p + 12] << 8 | f[p + 13], name_len = f[p + 14] << 8 | f[p + 15];
      span(MetaKind::kInactiveL1, sl1, sl1_size * 8ull);
      for (uint32_t i = 0; i < sl1_size; ++i)
        if (uint64_t e = be64(f, sl1 + i * 8) & kOffsetMask) span(MetaKind::kInactiveL2, e, cs);
      p += (40 + be32(f, p + 36) + id_len + name_len + 7) / 8 * 8;
    }
    span(MetaKind::kSnapshotTable, snap_off, p - snap_off);
    for (uint64_t h = be32(f, 100); h + 8 <= cs;) {  // header extensions
      uint32_t magic = be32(f, h), len = be32(f, h + 4);
      if (magic == 0) break;
      if (magic == 0x23852875) {
        uint32_t nb = be32(f, h + 8);
        uint64_t dsize = be64(f, h + 16), doff = be64(f, h + 24);
        span(MetaKind::kBitmapDirectory, doff, dsize);
        for (uint64_t q = doff, i = 0; i < nb; ++i) {
          span(MetaKind::kBitmapTable, be64(f, q), be32(f, q + 8) * 8ull);
          q += (24 + be32(f, q + 20) + (f[q + 18] << 8 | f[q + 19]) + 7) / 8 * 8;
        }
      }
      h += 8 + (len + 7) / 8 * 8;
    }
  }
  std::optional<uint64_t> first(MetaKind k) const {
    for (const auto& m : meta)
      if (m.kind == k) return m.offset;
    return std::nullopt;
  }
  bool is_bitmap_directory(uint64_t off) const {
    for (const auto& m : meta)
      if (m.offset == off && m.kind == MetaKind::kBitmapDirectory) return true;
    return false;
  }
  void set_refcount(std::vector<uint8_t>& f, uint64_t cluster, uint64_t v) const {
    uint64_t per_block = cs * 8 / rc_bits;
    uint64_t rb = be64(f, rt_off + cluster / per_block * 8) & ~(cs - 1);
    uint64_t bit = cluster % per_block * rc_bits;
    for (uint64_t i = 0; i < rc_bits; ++i) {  // big-endian within the entry, LSB-first sub-byte
      uint64_t b = rc_bits >= 8 ? bit + (rc_bits - 1 - i) / 8 * 8 + i % 8 : bit + i;
      uint8_t& byte = f.at(rb + b / 8);
      byte = static_cast<uint8_t>((byte & ~(1u << (b % 8))) | (((v >> i) & 1) << (b % 8)));
    }
  }
  uint64_t l2_entry_pos(const std::vector<uint8_t>& f, uint64_t guest) const {
    uint64_t gc = guest / cs, l2_entries = cs / 8;
    uint64_t l2 = be64(f, l1_off + gc / l2_entries * 8) & kOffsetMask;
    return l2 ? l2 + gc % l2_entries * 8 : 0;
  }
};

struct Variant {
  uint32_t cluster_size;
  uint32_t refcount_bits;
  bool extras;  // snapshots (not with 1-bit refcounts) and bitmaps
};

enum class Op { kAlloc, kInPlace, kZeroes, kDiscard, kSnapshot, kBitmap };
const char* op_name(Op o) {
  const char* n[] = {"allocating write", "in-place write", "write-zeroes", "discard", "snapshot create", "bitmap add"};
  return n[static_cast<int>(o)];
}

// Runs one operation, then one more allocating write, then closes; returns whether the
// operation itself failed.
bool run_op(Image& im, Op op, uint32_t cs) {
  std::vector<uint8_t> d(std::max<uint32_t>(cs, 4096), kMarker);
  Status st;
  switch (op) {
    case Op::kAlloc: st = im.write(2 << 20, d); break;
    case Op::kInPlace: st = im.write(0, std::span<const uint8_t>(d).first(std::min<uint32_t>(cs, 4096))); break;
    case Op::kZeroes: st = im.write_zeroes(0, 3 * cs / 2, ZeroFlags{}); break;
    case Op::kDiscard: st = im.discard(0, 1 << 20); break;
    case Op::kSnapshot: st = im.snapshot_create("s2"); break;
    case Op::kBitmap: st = im.bitmap_add("bm1"); break;
  }
  if (st.is_ok()) (void)im.write(3 << 20, std::span<const uint8_t>(d).first(cs));  // one more allocation
  (void)im.close();
  return !st.is_ok();
}

bool has_marker_run(const std::vector<uint8_t>& f, uint64_t off, uint64_t cs) {
  int run = 0;
  for (uint64_t i = off; i < std::min<uint64_t>(off + cs, f.size()); ++i) {
    run = f[i] == kMarker ? run + 1 : 0;
    if (run >= 16) return true;
  }
  return false;
}

struct Counts {
  int cases = 0, refused = 0, qemu_info = 0;
};

void run_case(const TempDir& dir, const Variant& v, const std::vector<uint8_t>& base, const std::string& damage,
              const std::function<bool(std::vector<uint8_t>&, const Layout&)>& damage_fn, Counts& counts) {
  for (Op op : {Op::kAlloc, Op::kInPlace, Op::kZeroes, Op::kDiscard, Op::kSnapshot, Op::kBitmap}) {
    if (op == Op::kSnapshot && v.refcount_bits == 1) continue;  // QEMU cannot snapshot there either
    std::vector<uint8_t> f = base;
    Layout before(f);
    if (!damage_fn(f, before)) return;  // the image has no such structure
    const std::string path = dir.path("case.qcow2");
    spill(path, f);
    const std::string what = fmt::format("{} B clusters, {}-bit refcounts{}: {}, then {}", v.cluster_size,
                                         v.refcount_bits, v.extras ? ", snapshots+bitmaps" : "", damage, op_name(op));
    bool op_failed = false;
    {
      OpenOptions o;
      o.format = "qcow2";
      auto im = Image::open(path, o);
      ASSERT_TRUE(im.has_value()) << what << ": " << im.error().message();
      op_failed = run_op(**im, op, v.cluster_size);
    }
    ++counts.cases;
    std::vector<uint8_t> after = slurp(path);
    ASSERT_GE(after.size(), 8u) << what;
    ASSERT_EQ(0, std::memcmp(after.data(), "QFI\xfb", 4)) << what << ": the header magic is gone";
    const bool corrupt = be64(after, 72) & 2;
    Layout now(after);
    // Snapshot and bitmap changes move metadata and free the old clusters (then reused for data,
    // legitimately): after them only the metadata the image has now is judged.
    const bool guest_io = op != Op::kSnapshot && op != Op::kBitmap;
    for (const Layout* l : {&before, &now}) {
      if (l == &before && !guest_io) continue;
      for (const auto& m : l->meta)
        ASSERT_FALSE(has_marker_run(after, m.offset, before.cs))
            << what << ": guest data in the " << meta_kind_message(m.kind) << " at " << m.offset;
    }
    if (corrupt) ++counts.refused;
    if (corrupt && op_failed && guest_io) {
      // A refused guest request changed no metadata byte. (A successful operation before a
      // refused write may have, legitimately; so may the steps of a snapshot or bitmap change
      // that succeeded before the one refused, as in QEMU.)
      for (const auto& m : before.meta) {
        if (before.is_bitmap_directory(m.offset)) continue;  // in-use flags may be set first
        for (uint64_t i = m.offset; i < m.offset + before.cs && i < f.size(); ++i) {
          if (m.offset == 0 && i >= 72 && i < 80) continue;  // incompatible features: the corrupt bit
          ASSERT_EQ(f[i], i < after.size() ? after[i] : 0)
              << what << ": byte " << i << " of the " << meta_kind_message(m.kind) << " changed";
        }
      }
    }
    if (v.cluster_size == 65536 && v.refcount_bits == 16) {
      CommandResult r = run("qemu-img info --output=json " + path);
      EXPECT_NE(r.output.find("\"format\": \"qcow2\""), std::string::npos) << what << ": " << r.output;
      ++counts.qemu_info;
    }
    if (corrupt && op == Op::kAlloc) {
      // keel check -r all repairs the refcount that caused it; the image is writable again.
      CommandResult r = run(fmt::format("{} check -q -r all {} 2>&1", KEEL_BINARY, path));
      OpenOptions o;
      o.format = "qcow2";
      auto im = Image::open(path, o);
      if (damage.rfind("refcount", 0) == 0) {
        ASSERT_TRUE(im.has_value()) << what << ": after keel check -r all: " << r.output
                                    << (im ? "" : im.error().message());
        std::vector<uint8_t> d(v.cluster_size, kMarker);
        EXPECT_TRUE((*im)->write(2 << 20, d).is_ok()) << what << ": write after repair";
        EXPECT_TRUE((*im)->close().is_ok()) << what;
        std::vector<uint8_t> repaired = slurp(path);
        Layout rl(repaired);
        for (const auto& m : rl.meta)
          ASSERT_FALSE(has_marker_run(repaired, m.offset, rl.cs)) << what << ": after repair, guest data in metadata";
      }
    }
  }
}

std::vector<uint8_t> make_base(const TempDir& dir, const Variant& v) {
  const std::string path = dir.path("base.qcow2");
  CreateOptions co;
  co.size = 4 << 20;
  co.cluster_size = v.cluster_size;
  co.refcount_bits = v.refcount_bits;
  EXPECT_TRUE(create_image(path, co).is_ok());
  {
    auto im = open_rw(path);
    std::vector<uint8_t> d(1 << 20, 0x11);
    EXPECT_TRUE(im->write(0, d).is_ok());
    if (v.extras) {
      if (v.refcount_bits > 1) {
        EXPECT_TRUE(im->snapshot_create("s1").is_ok());
        EXPECT_TRUE(im->write(0, std::span<const uint8_t>(d).first(v.cluster_size)).is_ok());
      }
      EXPECT_TRUE(im->bitmap_add("bm0").is_ok());
    }
    EXPECT_TRUE(im->close().is_ok());
  }
  return slurp(path);
}

TEST(Qcow2Overlap, DamagedImagesNeverLoseMetadata) {
  TempDir dir;
  Counts counts;
  // KEEL_OVERLAP_EVERY=N runs every Nth of the 18 variants (the sanitizer runs use 5: each
  // cluster size, each refcount width, with and without snapshots and bitmaps still appear).
  const char* every_env = std::getenv("KEEL_OVERLAP_EVERY");
  const int every = every_env ? std::max(1, std::atoi(every_env)) : 1;
  int variant = 0;
  for (uint32_t cs : {512u, 4096u, 65536u})
    for (uint32_t bits : {1u, 16u, 64u})
      for (bool extras : {false, true}) {
        if (variant++ % every != 0) continue;
        Variant v{cs, bits, extras};
        std::vector<uint8_t> base = make_base(dir, v);
        if (HasFatalFailure()) return;
        for (int k = 0; k < kMetaKinds; ++k) {
          const MetaKind kind = static_cast<MetaKind>(k);
          run_case(dir, v, base, fmt::format("refcount of the {} at 0", meta_kind_message(kind)),
                   [kind](std::vector<uint8_t>& f, const Layout& l) {
                     auto off = l.first(kind);
                     if (!off) return false;
                     l.set_refcount(f, *off / l.cs, 0);
                     return true;
                   },
                   counts);
          if (HasFatalFailure()) return;
          if (kind == MetaKind::kMainHeader) continue;  // an L2 entry at 0 is refused on lookup
          run_case(dir, v, base, fmt::format("L2 entry of guest 0 pointed at the {}", meta_kind_message(kind)),
                   [kind](std::vector<uint8_t>& f, const Layout& l) {
                     auto off = l.first(kind);
                     uint64_t pos = l.l2_entry_pos(f, 0);
                     if (!off || !pos) return false;
                     put64(f, pos, *off | kCopied);
                     return true;
                   },
                   counts);
          if (HasFatalFailure()) return;
        }
        run_case(dir, v, base, "refcount table entry 0 pointed at the header",
                 [](std::vector<uint8_t>& f, const Layout& l) {
                   put64(f, l.rt_off, 0);
                   return true;
                 },
                 counts);
        if (HasFatalFailure()) return;
      }
  std::printf("%d damaged-image cases, %d refused (marked corrupt), %d opened by qemu-img info\n",
              counts.cases, counts.refused, counts.qemu_info);
  EXPECT_GT(counts.refused, counts.cases / 2);
}

// The overlap-check options parse as QEMU's do; "none" turns every check off.
TEST(Qcow2Overlap, Options) {
  OverlapCheck oc = OverlapCheck::defaults();
  EXPECT_TRUE(oc.apply("overlap-check", "constant").is_ok());
  EXPECT_EQ(oc.mask, kind_bit(MetaKind::kMainHeader) | kind_bit(MetaKind::kActiveL1) |
                         kind_bit(MetaKind::kRefcountTable) | kind_bit(MetaKind::kSnapshotTable));
  EXPECT_TRUE(oc.apply("overlap-check.refcount-block", "on").is_ok());
  EXPECT_TRUE(oc.mask & kind_bit(MetaKind::kRefcountBlock));
  EXPECT_TRUE(oc.apply("overlap-check.main-header", "off").is_ok());
  EXPECT_FALSE(oc.mask & kind_bit(MetaKind::kMainHeader));
  EXPECT_FALSE(oc.apply("overlap-check", "some").is_ok());
  EXPECT_FALSE(oc.apply("overlap-check.l3", "on").is_ok());
  EXPECT_FALSE(oc.apply("overlap-check.active-l2", "maybe").is_ok());

  TempDir dir;
  const std::string path = dir.path("t.qcow2");
  CreateOptions co;
  co.size = 1 << 20;
  ASSERT_TRUE(create_image(path, co).is_ok());
  std::vector<uint8_t> f = slurp(path);
  Layout l(f);
  l.set_refcount(f, 0, 0);
  spill(path, f);
  OpenOptions o;
  o.qcow2_options = {{"overlap-check", "bogus"}};
  EXPECT_FALSE(Image::open(path, o).has_value());
  o.qcow2_options = {{"overlap-check", "cached"}};
  std::string reported;
  o.on_corruption = [&](const std::string& why) { reported = why; };
  auto im = Image::open(path, o);
  ASSERT_TRUE(im.has_value());
  std::vector<uint8_t> d(65536, kMarker);
  Status st = (*im)->write(65536, d);
  EXPECT_EQ(st.err(), EIO);
  EXPECT_EQ(reported, "Preventing invalid allocation of L2 table at offset 0");
  (void)(*im)->close();
  EXPECT_FALSE(has_marker_run(slurp(path), 0, 65536));
}

// A refcount table entry that is not cluster aligned (a damaged image): the image opens and reads
// work, as in QEMU; an overwrite of an allocated cluster needs no refcount and works; the first
// write that needs that refcount block fails with EIO and QEMU's corruption text, the corrupt bit
// is set, and every metadata byte stays as it was; a read/write open is then refused with QEMU's
// words, a read-only one reads the overwrite; keel check -r all makes the image writable again.
TEST(Qcow2Overlap, UnalignedRefcountBlockOpensAndRefusesTheAllocation) {
  TempDir dir;
  const std::string path = dir.path("t.qcow2");
  CreateOptions co;
  co.size = 1 << 20;
  ASSERT_TRUE(create_image(path, co).is_ok());
  std::vector<uint8_t> pattern(65536, 0x11), over(4096, 0x22), more(4096, 0x33);
  {
    auto im = Image::open(path, OpenOptions{});
    ASSERT_TRUE(im.has_value());
    ASSERT_TRUE((*im)->write(0, pattern).is_ok());
    ASSERT_TRUE((*im)->close().is_ok());
  }
  std::vector<uint8_t> f = slurp(path);
  Layout l(f);
  const uint64_t rb = be64(f, l.rt_off);
  ASSERT_NE(rb, 0u);
  put64(f, l.rt_off, rb + 512);
  spill(path, f);

  OpenOptions o;
  std::string reported;
  o.on_corruption = [&](const std::string& why) { reported = why; };
  auto im = Image::open(path, o);
  ASSERT_TRUE(im.has_value()) << im.error().message();
  std::vector<uint8_t> got(65536);
  ASSERT_TRUE((*im)->read(0, got).is_ok());
  EXPECT_EQ(got, pattern);
  ASSERT_TRUE((*im)->write(0, over).is_ok());  // cluster 0 is allocated: no refcount needed
  const std::vector<uint8_t> before = slurp(path);
  Status st = (*im)->write(131072, more);  // allocates: needs refcount block 0
  EXPECT_EQ(st.err(), EIO);
  EXPECT_EQ(reported, fmt::format("Refblock offset {:#x} unaligned (reftable index: 0)", rb + 512));
  EXPECT_EQ((*im)->write(0, over).err(), EIO) << "the image latches after the corruption event";
  (void)(*im)->close();
  im->reset();
  std::vector<uint8_t> after = slurp(path);
  ASSERT_EQ(after.size(), before.size());
  for (size_t i = 0; i < after.size(); ++i) {
    if (i >= 72 && i < 80) continue;  // incompatible features: the corrupt bit
    ASSERT_EQ(after[i], before[i]) << "byte " << i << " changed";
  }
  EXPECT_EQ(be64(after, 72) & 2, 2u) << "the corrupt bit";

  auto rw = Image::open(path, OpenOptions{});
  ASSERT_FALSE(rw.has_value());
  EXPECT_EQ(rw.error().message(), "Could not open '" + path + "': qcow2: Image is corrupt; cannot be opened read/write");
  EXPECT_EQ(rw.error().err(), EACCES);
  OpenOptions ro;
  ro.read_only = true;
  auto r = Image::open(path, ro);
  ASSERT_TRUE(r.has_value()) << r.error().message();
  std::vector<uint8_t> head(4096);
  ASSERT_TRUE((*r)->read(0, head).is_ok());
  EXPECT_EQ(head, over);
  (void)(*r)->close();
  r->reset();

  auto target = open_for_check(path, RepairMode::kAll);
  ASSERT_TRUE(target.has_value());
  CheckOptions fix;
  fix.repair = RepairMode::kAll;
  ASSERT_TRUE(check_qcow2(*target->file, fix).has_value());
  target->file.reset();
  auto again = Image::open(path, OpenOptions{});
  ASSERT_TRUE(again.has_value()) << again.error().message();
  EXPECT_TRUE((*again)->write(131072, more).is_ok());
  EXPECT_TRUE((*again)->close().is_ok());
  again->reset();
  CheckOptions look;
  auto t2 = open_for_check(path, RepairMode::kNone);
  ASSERT_TRUE(t2.has_value());
  auto res = check_qcow2(*t2->file, look);
  ASSERT_TRUE(res.has_value());
  EXPECT_EQ(res->corruptions, 0u);
}

}  // namespace
}  // namespace keel::test
