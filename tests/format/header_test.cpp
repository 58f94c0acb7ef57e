// Proves the qcow2 header codec round-trips every field and extension, and that validation
// rejects each malformed field with an error naming it (the bytes come from encode_header,
// then are damaged one field at a time).
#include <gtest/gtest.h>

#include "format/endian.h"
#include "format/header.h"
#include "format/header_util.h"

namespace keel::format {
namespace {

using test::encode_checked;
using test::sample_header;
constexpr uint64_t kFile = test::kSampleFileBytes;

std::string decode_error(const std::vector<uint8_t>& c0, uint64_t file = kFile) {
  auto r = decode_header(c0, file, false);
  return r ? "" : r.error().message();
}

TEST(Header, RoundTripV3WithExtensions) {
  Header h = sample_header(3);
  h.incompatible = kIncompatExtendedL2 | kIncompatCompression;
  h.compression_type = 1;
  h.compatible = kCompatLazyRefcounts;
  h.refcount_order = 3;
  h.l1_size = 8;  // extended L2 maps 256 MiB per L1 entry
  h.backing_file = "../base image.qcow2";
  h.backing_format = "qcow2";
  h.unknown_extensions.push_back({0x12345678, {1, 2, 3}});
  auto c0 = encode_checked(h);
  auto d = decode_header(c0, kFile, false);
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(d->version, 3u);
  EXPECT_EQ(d->size, h.size);
  EXPECT_EQ(d->incompatible, h.incompatible);
  EXPECT_EQ(d->compatible, h.compatible);
  EXPECT_EQ(d->refcount_bits(), 8u);
  EXPECT_EQ(d->compression_type, 1);
  EXPECT_EQ(d->backing_file, h.backing_file);
  EXPECT_EQ(d->backing_format, "qcow2");
  ASSERT_EQ(d->unknown_extensions.size(), 1u);
  EXPECT_EQ(d->unknown_extensions[0].data, (std::vector<uint8_t>{1, 2, 3}));
  EXPECT_EQ(d->l2_entries(), 4096u);  // extended L2: 16-byte entries
  EXPECT_GE(d->feature_names.size(), 8u);
}

TEST(Header, RoundTripV2) {
  Header h = sample_header(2);
  h.backing_file = "base.raw";
  auto d = decode_header(encode_checked(h), kFile, false);
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(d->version, 2u);
  EXPECT_EQ(d->refcount_bits(), 16u);
  EXPECT_EQ(d->backing_file, "base.raw");
}

struct Damage {
  const char* name;
  uint64_t offset;
  int width;  // 4 or 8 bytes, big endian
  uint64_t value;
  const char* expect;  // substring of the error
};

class HeaderDamage : public ::testing::TestWithParam<Damage> {};

TEST_P(HeaderDamage, RejectedWithFieldName) {
  const Damage& dm = GetParam();
  auto c0 = encode_checked(sample_header(3));
  if (dm.width == 8) put_be64(&c0[dm.offset], dm.value);
  else put_be32(&c0[dm.offset], static_cast<uint32_t>(dm.value));
  std::string err = decode_error(c0);
  EXPECT_NE(err.find(dm.expect), std::string::npos) << "got: '" << err << "'";
}

INSTANTIATE_TEST_SUITE_P(
    Fields, HeaderDamage,
    ::testing::Values(Damage{"magic", 0, 4, 0x12345678, "Image is not in qcow2 format"},
                      Damage{"version", 4, 4, 4, "version 4"},
                      Damage{"cluster_bits_small", 20, 4, 8, "Unsupported cluster size: 2^8"},
                      Damage{"cluster_bits_big", 20, 4, 22, "Unsupported cluster size: 2^22"},
                      Damage{"crypt", 32, 4, 2, "crypt_method = 2"},
                      Damage{"l1_small", 36, 4, 1, "l1_size = 1"},
                      Damage{"l1_huge", 36, 4, 0x7fffffff, "larger than 32 MiB"},
                      Damage{"l1_misaligned", 40, 8, 0x30200, "l1_table_offset = 197120"},
                      Damage{"l1_past_eof", 40, 8, 0x7fff0000, "past the end of the file"},
                      Damage{"reftable_misaligned", 48, 8, 0x10008, "refcount_table_offset = 65544"},
                      Damage{"reftable_empty", 56, 4, 0, "refcount_table_clusters = 0"},
                      Damage{"reftable_huge", 56, 4, 1000, "larger than 8 MiB"},
                      Damage{"snapshots_many", 60, 4, 70000, "nb_snapshots = 70000"},
                      Damage{"unknown_incompat", 72, 8, 1ull << 20, "Unsupported qcow2 feature(s): Unknown incompatible feature: 100000"},
                      Damage{"header_length", 100, 4, 100, "header_length = 100"},
                      Damage{"header_length_unaligned", 100, 4, 108, "not a multiple of 8"},
                      Damage{"refcount_order", 96, 4, 7, "refcount_order = 7"},
                      Damage{"backing_offset", 8, 8, 1 << 20, "backing_file_offset"},
                      Damage{"size_huge", 24, 8, ~0ull, "size"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(Header, TruncatedAndCorruptBit) {
  auto c0 = encode_checked(sample_header(3));
  EXPECT_NE(decode_error(std::vector<uint8_t>(c0.begin(), c0.begin() + 50)).find("truncated"), std::string::npos);
  put_be64(&c0[72], kIncompatCorrupt);
  auto d = decode_header(c0, kFile, false);  // it decodes; a read/write open refuses it
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->incompatible, kIncompatCorrupt);
}

TEST(Header, ExtensionTooLarge) {
  auto c0 = encode_checked(sample_header(3));
  put_be32(&c0[112], 0x12345678);
  put_be32(&c0[116], 0x7fffffff);
  EXPECT_NE(decode_error(c0).find("too large"), std::string::npos);
}

TEST(Header, CompressionTypeNeedsBit) {
  auto c0 = encode_checked(sample_header(3));
  c0[104] = 1;  // zstd without incompatible bit 3
  EXPECT_EQ(decode_error(c0), "qcow2: Compression type incompatible feature bit must be set");
}

TEST(Header, UnknownBitNamedFromFeatureTable) {
  Header h = sample_header(3);
  auto c0 = encode_checked(h);
  // Put a feature-table entry naming incompatible bit 9 "future thing" and set that bit.
  Header named = h;
  std::vector<uint8_t> entry(48, 0);
  entry[0] = 0;
  entry[1] = 9;
  std::memcpy(&entry[2], "future thing", 12);
  named.unknown_extensions.push_back({kExtFeatureTable, entry});
  c0 = encode_checked(named);
  put_be64(&c0[72], 1ull << 9);
  EXPECT_NE(decode_error(c0).find("future thing"), std::string::npos) << decode_error(c0);
}

TEST(Header, UnsupportedFeaturesAsQemuWordsThem) {
  // QEMU's report_unsupported_feature: named bits in table order, then the rest as one mask;
  // the table ends at the first entry without a name.
  std::vector<FeatureName> table = {{0, 7, "seven"}, {1, 5, "compat five"}, {0, 5, "five"}, {0, 9, ""}, {0, 6, "six"}};
  EXPECT_EQ(unsupported_features_message(table, (1ull << 5) | (1ull << 7)),
            "Unsupported qcow2 feature(s): seven, five");
  EXPECT_EQ(unsupported_features_message(table, (1ull << 5) | (1ull << 6) | (1ull << 63)),
            "Unsupported qcow2 feature(s): five, Unknown incompatible feature: 8000000000000040");
  EXPECT_EQ(unsupported_features_message({}, 0x20), "Unsupported qcow2 feature(s): Unknown incompatible feature: 20");
}

}  // namespace
}  // namespace keel::format
