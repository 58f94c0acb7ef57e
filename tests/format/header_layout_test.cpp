// Proves the byte layout of cluster 0 (format/header_layout.h) finds every extension where
// encode_header put it, that the compact header (no feature-name table) decodes to the same header
// in one sector, and that chains without an end marker, with an extension running past the area
// or with too many extensions are described, not trusted (and refused by decode_header).
#include <gtest/gtest.h>

#include <algorithm>

#include "format/endian.h"
#include "format/header.h"
#include "format/header_util.h"
#include "format/header_layout.h"
#include "keel/limits.h"

namespace keel::format {
namespace {

using test::encode_checked;
using test::sample_header;
constexpr uint64_t kFile = test::kSampleFileBytes;

TEST(HeaderLayout, FindsEveryExtensionEncodeWrote) {
  Header h = sample_header(3);
  h.backing_file = "base.qcow2";
  h.backing_format = "qcow2";
  h.unknown_extensions.push_back({0x12345678, {1, 2, 3}});
  const auto c0 = encode_checked(h);
  const HeaderLayout l = decode_header_layout(c0);
  EXPECT_EQ(l.version, 3u);
  EXPECT_EQ(l.header_length, kV3HeaderLength);
  ASSERT_EQ(l.extensions.slots.size(), 3u);
  EXPECT_EQ(l.extensions.slots[0].type, kExtBackingFormat);
  EXPECT_EQ(l.extensions.slots[0].offset, kV3HeaderLength);
  EXPECT_EQ(l.extensions.slots[0].length, 5u);
  EXPECT_EQ(l.extensions.slots[0].end(), kV3HeaderLength + 16);
  EXPECT_EQ(l.extensions.slots[1].type, kExtFeatureTable);
  EXPECT_EQ(l.extensions.slots[1].offset, l.extensions.slots[0].end());
  EXPECT_EQ(l.extensions.slots[2].type, 0x12345678u);
  EXPECT_EQ(l.extensions.slots[2].length, 3u);
  EXPECT_TRUE(l.extensions.terminated);
  EXPECT_FALSE(l.extensions.too_many);
  EXPECT_EQ(l.extensions.stop, l.extensions.slots[2].end());
  EXPECT_EQ(l.backing_offset, l.extensions.end());
  EXPECT_EQ(l.backing_size, h.backing_file.size());
  EXPECT_EQ(l.area_end(), l.backing_offset);
  EXPECT_EQ(l.used_end(), l.backing_offset + l.backing_size);
  EXPECT_GT(l.used_end(), 512u) << "the feature-name table pushes the name into sector 1";
}

TEST(HeaderLayout, V2HasTheFixedLengthAndNoAutoclear) {
  Header h = sample_header(2);
  h.backing_file = "base.raw";
  h.backing_format = "raw";
  const auto c0 = encode_checked(h);
  const HeaderLayout l = decode_header_layout(c0);
  EXPECT_EQ(l.version, 2u);
  EXPECT_EQ(l.header_length, kV2HeaderLength);
  EXPECT_EQ(l.autoclear, 0u);
  ASSERT_EQ(l.extensions.slots.size(), 1u);
  EXPECT_EQ(l.extensions.slots[0].type, kExtBackingFormat);
  EXPECT_EQ(l.used_end(), l.backing_offset + 8);
}

TEST(HeaderLayout, CompactHeaderIsTheSameHeaderInOneSector) {
  Header h = sample_header(3);
  h.backing_file = "base.qcow2";
  h.backing_format = "qcow2";
  h.autoclear = kAutoclearBitmaps;
  h.bitmaps = BitmapsExtension{1, 64, 0x40000};
  h.unknown_extensions.push_back({0x12345678, {9, 8, 7, 6, 5, 4, 3, 2, 1}});
  const auto c0 = encode_checked(h);
  const auto compact = header_without_feature_table(c0);
  ASSERT_EQ(compact.size(), c0.size());
  const HeaderLayout l = decode_header_layout(compact);
  EXPECT_LE(l.used_end(), 512u);
  for (const auto& s : l.extensions.slots) EXPECT_NE(s.type, kExtFeatureTable);
  auto a = decode_header(c0, kFile, false), b = decode_header(compact, kFile, false);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(b->backing_file, a->backing_file);
  EXPECT_EQ(b->backing_format, a->backing_format);
  ASSERT_TRUE(b->bitmaps);
  EXPECT_EQ(b->bitmaps->directory_offset, 0x40000u);
  ASSERT_EQ(b->unknown_extensions.size(), 1u);
  EXPECT_EQ(b->unknown_extensions[0].data, a->unknown_extensions[0].data);
  EXPECT_TRUE(b->feature_names.empty());
  EXPECT_FALSE(a->feature_names.empty());
}

TEST(HeaderLayout, UnterminatedOrOverrunningChainsAreNotCompacted) {
  Header h = sample_header(3);
  auto c0 = encode_checked(h);
  // No end marker: fill the whole area with one extension that ends exactly at the cluster end.
  auto open_chain = c0;
  put_be32(&open_chain[kV3HeaderLength], 0x11111111);
  put_be32(&open_chain[kV3HeaderLength + 4], static_cast<uint32_t>(c0.size() - kV3HeaderLength - 8));
  HeaderLayout l = decode_header_layout(open_chain);
  EXPECT_FALSE(l.extensions.terminated);
  EXPECT_EQ(l.extensions.stop, c0.size());
  EXPECT_TRUE(header_without_feature_table(open_chain).empty());
  EXPECT_TRUE(decode_header(open_chain, kFile, false)) << "QEMU accepts an area used up exactly";

  // An extension whose length runs past the cluster.
  auto overrun = c0;
  put_be32(&overrun[kV3HeaderLength], 0x11111111);
  put_be32(&overrun[kV3HeaderLength + 4], static_cast<uint32_t>(c0.size()));
  l = decode_header_layout(overrun);
  ASSERT_EQ(l.extensions.slots.size(), 1u);
  EXPECT_GT(l.extensions.slots[0].end(), l.area_end());
  EXPECT_EQ(l.used_end(), c0.size()) << "bounded by the cluster";
  EXPECT_TRUE(header_without_feature_table(overrun).empty());
  auto r = decode_header(overrun, kFile, false);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("header_extension_length"), std::string::npos) << r.error().message();
}

TEST(HeaderLayout, TooManyExtensionsStopTheWalk) {
  Header h = sample_header(3);
  auto c0 = encode_checked(h);
  // kMaxHeaderExtensions + 1 empty extensions of an unknown type, then the end marker.
  const uint64_t n = limits::kMaxHeaderExtensions + 1;
  ASSERT_LT(kV3HeaderLength + n * 8 + 8, c0.size());
  std::fill(c0.begin() + kV3HeaderLength, c0.end(), 0);
  for (uint64_t i = 0; i < n; ++i) put_be32(&c0[kV3HeaderLength + i * 8], 0x22222222);  // length 0
  const HeaderLayout l = decode_header_layout(c0);
  EXPECT_TRUE(l.extensions.too_many);
  EXPECT_FALSE(l.extensions.terminated);
  EXPECT_EQ(l.extensions.slots.size(), limits::kMaxHeaderExtensions);
  EXPECT_TRUE(header_without_feature_table(c0).empty());
  auto r = decode_header(c0, kFile, false);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("too many extensions"), std::string::npos) << r.error().message();
}

TEST(HeaderLayout, ShortBufferIsEmptyNotARead) {
  const std::vector<uint8_t> tiny(64, 0);
  const HeaderLayout l = decode_header_layout(tiny);
  EXPECT_EQ(l.version, 0u);
  EXPECT_TRUE(l.extensions.slots.empty());
  EXPECT_TRUE(header_without_feature_table(tiny).empty());
}

}  // namespace
}  // namespace keel::format
