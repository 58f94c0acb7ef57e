// Proves the meta-context rules of qemu-nbd 7.2 on plain values and bytes: which contexts LIST
// and SET queries match (wildcards for LIST only, unknown names ignored, id order), the ids on
// the wire, that a SET clears the old selection even when it fails, and the dirty-bitmap extents
// (granule runs clipped to the request, REQ_ONE, extent limits) — the same answers the interop
// test nbd_meta.sh gets from qemu-nbd itself.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include "format/endian.h"
#include "nbd/meta_context.h"
#include "nbd/negotiation.h"
#include "nbd/wire.h"

namespace keel::nbd {
namespace {

using Bytes = std::vector<uint8_t>;

MetaContextConfig two_bitmaps() {
  MetaContextConfig c;
  c.allocation_depth = true;
  c.bitmaps = {"b1", "b0"};  // keel serve -B b0 -B b1 (qemu-nbd lists the last -B first)
  return c;
}

std::vector<std::string> names(const MetaContextConfig& c, const std::vector<std::string>& q, bool list) {
  std::vector<std::string> out;
  for (const auto& n : meta_context_names(c, match_meta_queries(c, q, list))) {
    out.push_back(fmt::format("{}={}", n.id, n.name));
  }
  return out;
}

using V = std::vector<std::string>;

TEST(nbd_meta, ListWildcards) {
  const auto c = two_bitmaps();
  const V all = {"0=base:allocation", "1=qemu:allocation-depth", "2=qemu:dirty-bitmap:b1",
                 "3=qemu:dirty-bitmap:b0"};
  EXPECT_EQ(names(c, {}, true), all);
  EXPECT_EQ(names(c, {"base:"}, true), V{"0=base:allocation"});
  EXPECT_EQ(names(c, {"qemu:"}, true), V(all.begin() + 1, all.end()));
  EXPECT_EQ(names(c, {"qemu:dirty-bitmap:"}, true), V(all.begin() + 2, all.end()));
  EXPECT_EQ(names(c, {"qemu:dirty-bitmap:b0"}, true), V{"3=qemu:dirty-bitmap:b0"});
  EXPECT_EQ(names(c, {"qemu:foo", "other:x", "base:allocationx", ""}, true), V{});
}

TEST(nbd_meta, SetTakesNoWildcardsAndRepliesInIdOrder) {
  const auto c = two_bitmaps();
  EXPECT_EQ(names(c, {}, false), V{});
  EXPECT_EQ(names(c, {"base:", "qemu:", "qemu:dirty-bitmap:"}, false), V{});
  EXPECT_EQ(names(c, {"qemu:dirty-bitmap:b0", "base:allocation", "qemu:allocation-depth", "x:y",
                      "qemu:dirty-bitmap:b1", "base:allocation"},
                  false),
            (V{"0=base:allocation", "1=qemu:allocation-depth", "2=qemu:dirty-bitmap:b1",
               "3=qemu:dirty-bitmap:b0"}));
}

TEST(nbd_meta, ContextsNotOfferedMatchNothing) {
  MetaContextConfig c;  // no -A, no -B
  EXPECT_EQ(names(c, {}, true), V{"0=base:allocation"});
  EXPECT_EQ(names(c, {"qemu:"}, true), V{});
  EXPECT_EQ(names(c, {"qemu:allocation-depth", "qemu:dirty-bitmap:b0"}, false), V{});
}

TEST(nbd_meta, DuplicateBitmapServedTwice) {
  MetaContextConfig c;
  c.bitmaps = {"b0", "b0"};  // qemu-nbd -B b0 -B b0 offers it twice
  EXPECT_EQ(names(c, {"qemu:dirty-bitmap:b0"}, false),
            (V{"2=qemu:dirty-bitmap:b0", "3=qemu:dirty-bitmap:b0"}));
}

struct Rep {
  uint32_t type;
  uint32_t id;
  std::string name;
};

std::vector<Rep> replies(const Bytes& b) {
  std::vector<Rep> out;
  for (size_t i = 0; i + 20 <= b.size();) {
    uint32_t type = format::get_be32(&b[i + 12]);
    uint32_t len = format::get_be32(&b[i + 16]);
    Rep r{type, 0, ""};
    if (type == kRepMetaContext) {
      r.id = format::get_be32(&b[i + 20]);
      r.name.assign(b.begin() + static_cast<ptrdiff_t>(i + 24), b.begin() + static_cast<ptrdiff_t>(i + 20 + len));
    }
    out.push_back(r);
    i += 20 + len;
  }
  return out;
}

TEST(nbd_meta, NegotiatorIdsOnTheWire) {
  ExportConfig e;
  e.size = 1 << 20;
  e.meta = two_bitmaps();
  Negotiator n(e);
  // LIST needs no structured replies (as qemu); its ids are 0.
  auto list = replies(n.handle(kOptListMetaContext, encode_meta_context_request({"", {}})).reply);
  ASSERT_EQ(list.size(), 5u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(list[i].id, 0u);
  EXPECT_EQ(list[3].name, "qemu:dirty-bitmap:b0");
  EXPECT_EQ(list[4].type, kRepAck);
  // SET does need them.
  EXPECT_EQ(replies(n.handle(kOptSetMetaContext, encode_meta_context_request({"", {"base:allocation"}})).reply)
                .at(0).type,
            kRepErrInvalid);
  (void)n.handle(kOptStructuredReply, {});
  auto set = replies(n.handle(kOptSetMetaContext,
                              encode_meta_context_request({"", {"qemu:dirty-bitmap:b0", "qemu:allocation-depth"}}))
                         .reply);
  ASSERT_EQ(set.size(), 3u);
  EXPECT_EQ(set[0].id, kMetaIdAllocationDepth);
  EXPECT_EQ(set[1].id, kMetaIdDirtyBitmap + 1);
  EXPECT_EQ(n.session().meta.count(), 2u);
  EXPECT_EQ(n.session().meta.bitmaps, std::vector<uint32_t>{1});
  // A SET naming another export fails and leaves nothing selected.
  auto bad = replies(n.handle(kOptSetMetaContext, encode_meta_context_request({"x", {"base:allocation"}})).reply);
  EXPECT_EQ(bad.at(0).type, kRepErrUnknown);
  EXPECT_TRUE(n.session().meta.empty());
}

BitmapData bitmap(uint64_t size, uint32_t granularity, std::vector<uint64_t> dirty_bits) {
  BitmapData d;
  d.granularity = granularity;
  d.virtual_size = size;
  d.bits.assign((d.bit_count() + 63) / 64 * 8, 0);
  for (uint64_t b : dirty_bits) d.bits[b / 8] |= static_cast<uint8_t>(1u << (b % 8));
  return d;
}

std::vector<std::pair<uint32_t, uint32_t>> flat(const std::vector<BlockExtent>& e) {
  std::vector<std::pair<uint32_t, uint32_t>> out;
  for (const auto& x : e) out.emplace_back(x.length, x.flags);
  return out;
}

using P = std::vector<std::pair<uint32_t, uint32_t>>;

TEST(nbd_meta, BitmapExtentsAsQemu) {
  // 64 MiB at 64 KiB granularity, dirty at 1M (one granule) and 3M..3M+192K (three), as the
  // qemu-nbd run in nbd_meta.sh: its answer for [0, 8M) was 1048576:0 65536:1 2031616:0
  // 196608:1 5046272:0.
  auto d = bitmap(64 << 20, 65536, {16, 48, 49, 50});
  EXPECT_EQ(flat(bitmap_extents(d, 0, 8 << 20, 1000)),
            (P{{1048576, 0}, {65536, 1}, {2031616, 0}, {196608, 1}, {5046272, 0}}));
  // Clipped to an unaligned request; REQ_ONE gives the first run only.
  EXPECT_EQ(flat(bitmap_extents(d, 1048576 + 100, 100000, 1000)), (P{{65436, 1}, {34564, 0}}));
  EXPECT_EQ(flat(bitmap_extents(d, 1048576, 100000, 1)), (P{{65536, 1}}));
  EXPECT_EQ(flat(bitmap_extents(d, 0, 100000, 1)), (P{{100000, 0}}));
  EXPECT_EQ(flat(bitmap_extents(d, 0, 8 << 20, 2)), (P{{1048576, 0}, {65536, 1}}));
  // REQ_ONE on a clean run stops at the next dirty granule (qemu-img map x-dirty-bitmap).
  EXPECT_EQ(flat(bitmap_extents(d, 65536, (64 << 20) - 65536, 1)), (P{{983040, 0}}));
}

TEST(nbd_meta, BitmapExtentsLongRunsAndTail) {
  // Whole bytes of set and clear bits, and an image size that is not a multiple of the granule.
  const uint64_t size = (1000ull << 16) + 512;
  std::vector<uint64_t> dirty;
  for (uint64_t b = 100; b < 900; ++b) dirty.push_back(b);
  dirty.push_back(1000);  // the partial last granule
  auto d = bitmap(size, 65536, dirty);
  EXPECT_EQ(flat(bitmap_extents(d, 0, static_cast<uint32_t>(size), 1000)),
            (P{{100u << 16, 0}, {800u << 16, 1}, {100u << 16, 0}, {512, 1}}));
}

}  // namespace
}  // namespace keel::nbd
