// Proves the bitmap directory and table codec round-trips, and that validation rejects each
// malformed field with a one-line kCorrupt error naming the entry, the field and its value (the
// bytes come from encode_bitmap_directory, then are damaged one field at a time).
#include <gtest/gtest.h>

#include <cstring>

#include "format/bitmap.h"
#include "format/endian.h"

namespace keel::format {
namespace {

constexpr uint64_t kCs = 65536;
const BitmapGeometry kGeo{kCs, 64ull << 20, 1ull << 30};

BitmapDirEntry entry(const std::string& name, uint8_t gbits = 16, uint32_t flags = kBitmapAuto) {
  BitmapDirEntry e;
  e.name = name;
  e.granularity_bits = gbits;
  e.flags = flags;
  e.table_offset = 0x50000;
  e.table_size = static_cast<uint32_t>(bitmap_table_entries(kGeo.virtual_size, gbits, kCs));
  return e;
}

// Decodes `dir` (nb entries) and expects a corruption error mentioning every string in `words`.
void expect_bad(const std::vector<uint8_t>& dir, uint32_t nb, std::vector<std::string> words) {
  auto r = decode_bitmap_directory(dir, nb, kGeo);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Code::kCorrupt);
  EXPECT_EQ(r.error().message().find('\n'), std::string::npos);
  for (const auto& w : words) EXPECT_NE(r.error().message().find(w), std::string::npos) << r.error().message();
}

TEST(BitmapFormat, Sizes) {
  EXPECT_EQ(bitmap_entry_bytes(1), 32u);
  EXPECT_EQ(bitmap_entry_bytes(8), 32u);
  EXPECT_EQ(bitmap_entry_bytes(9), 40u);
  EXPECT_EQ(bitmap_bit_count(64ull << 20, 16), 1024u);
  EXPECT_EQ(bitmap_data_bytes(64ull << 20, 16), 128u);
  EXPECT_EQ(bitmap_data_bytes(65537, 16), 8u);  // 2 bits, one 64-bit word
  EXPECT_EQ(bitmap_table_entries(1ull << 40, 9, kCs), 4096u);  // 256 MiB of data
}

TEST(BitmapFormat, RoundTrip) {
  std::vector<BitmapDirEntry> in = {entry("a"), entry("bb", 12, 0), entry(std::string(1023, 'x'), 31, kBitmapInUse)};
  in[1].table_size = static_cast<uint32_t>(bitmap_table_entries(kGeo.virtual_size, 12, kCs));
  auto bytes = encode_bitmap_directory(in);
  EXPECT_EQ(bytes.size(), 32u + 32u + bitmap_entry_bytes(1023));
  auto out = decode_bitmap_directory(bytes, 3, kGeo);
  ASSERT_TRUE(out.has_value()) << out.error().message();
  ASSERT_EQ(out->size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ((*out)[i].name, in[i].name);
    EXPECT_EQ((*out)[i].flags, in[i].flags);
    EXPECT_EQ((*out)[i].granularity_bits, in[i].granularity_bits);
    EXPECT_EQ((*out)[i].table_offset, in[i].table_offset);
    EXPECT_EQ((*out)[i].table_size, in[i].table_size);
  }
  std::vector<uint64_t> table = {0, 0x70000, kBitmapTableAllOnes};
  BitmapDirEntry e = entry("t");
  e.table_size = 3;
  auto t = decode_bitmap_table(encode_bitmap_table(table), e, kGeo);
  ASSERT_TRUE(t.has_value()) << t.error().message();
  EXPECT_EQ(*t, table);
}

TEST(BitmapFormat, EachBadFieldIsNamed) {
  auto one = [](BitmapDirEntry e) { return encode_bitmap_directory({e}); };
  std::vector<uint8_t> d;
  d = one(entry("a"));
  put_be32(&d[12], kBitmapAuto | 0x100);
  expect_bad(d, 1, {"entry 0", "'a'", "flags", "258"});
  d = one(entry("a"));
  put_be32(&d[12], kBitmapExtraDataCompatible);  // QEMU treats it as reserved
  expect_bad(d, 1, {"flags"});
  d = one(entry("a"));
  d[16] = 2;
  expect_bad(d, 1, {"type = 2"});
  d = one(entry("a"));
  d[17] = 8;
  expect_bad(d, 1, {"granularity_bits = 8"});
  d = one(entry("a"));
  d[17] = 32;
  expect_bad(d, 1, {"granularity_bits = 32"});
  d = one(entry("a"));
  put_be64(&d[0], 0x50200);
  expect_bad(d, 1, {"bitmap_table_offset = 328192"});
  d = one(entry("a"));
  put_be64(&d[0], 0);
  expect_bad(d, 1, {"bitmap_table_offset = 0"});
  d = one(entry("a"));
  put_be64(&d[0], 1ull << 30);
  expect_bad(d, 1, {"bitmap_table_offset", "past the end of the file"});
  d = one(entry("a"));
  put_be32(&d[8], 0);
  expect_bad(d, 1, {"bitmap_table_size = 0"});
  d = one(entry("a"));
  put_be32(&d[8], 2);  // not in use: the table must fit the size exactly
  expect_bad(d, 1, {"bitmap_table_size = 2", "needs 1"});
  d = one(entry("a", 16, kBitmapInUse));
  put_be32(&d[8], 2);  // in use (e.g. a resize interrupted): accepted
  EXPECT_TRUE(decode_bitmap_directory(d, 1, kGeo).has_value());
  d = one(entry("a", 16, kBitmapInUse));
  put_be32(&d[8], 8193);  // more than 512 MiB of data at 64 KiB clusters
  expect_bad(d, 1, {"bitmap_table_size = 8193", "512 MiB"});
  d = one(entry("a"));
  put_be32(&d[20], 8);
  expect_bad(d, 1, {"extra_data_size = 8"});
  d = one(entry("a"));
  put_be16(&d[18], 0);
  expect_bad(d, 1, {"name_size = 0"});
  d = one(entry("a"));
  put_be16(&d[18], 1024);
  expect_bad(d, 1, {"name_size = 1024"});
  d = one(entry("a"));
  put_be16(&d[18], 9);
  expect_bad(d, 1, {"runs past the directory"});
  d = encode_bitmap_directory({entry("a"), entry("a")});
  expect_bad(d, 2, {"'a' is not unique"});
  d = encode_bitmap_directory({entry("a"), entry("b")});
  expect_bad(d, 3, {"entry 2", "runs past"});
  expect_bad(d, 1, {"1 entries take 32 bytes", "64"});
  expect_bad(d, 0, {"nb_bitmaps = 0"});
}

TEST(BitmapFormat, BadTableEntriesAreNamed) {
  BitmapDirEntry e = entry("t");
  e.table_size = 1;
  auto bad = [&](uint64_t v, const std::string& why) {
    auto r = decode_bitmap_table(encode_bitmap_table({v}), e, kGeo);
    ASSERT_FALSE(r.has_value());
    EXPECT_NE(r.error().message().find(why), std::string::npos) << r.error().message();
    EXPECT_NE(r.error().message().find("bitmap 't': bitmap table entry 0"), std::string::npos);
  };
  bad(0x70000 | 2, "reserved bits");
  bad(1ull << 60, "reserved bits");
  bad(0x70000 | kBitmapTableAllOnes, "all-ones");
  bad(0x70200, "not cluster aligned");
  bad(1ull << 30, "past the end of the file");
}

// The lenient parts check reads with: an entry as stored even when the strict decoder refuses it
// (extra data, a name past the directory), and the format-level table entry problems.
TEST(BitmapFormat, LenientEntryReader) {
  auto dir = encode_bitmap_directory({entry("abc")});
  put_be32(&dir[20], 8);  // 8 bytes of extra data: the name now starts 8 bytes later
  dir.resize(dir.size() + 8, 0);
  std::memcpy(&dir[32], "abc", 3);
  auto raw = read_bitmap_dir_entry(dir, 0);
  ASSERT_TRUE(raw.has_value());
  EXPECT_TRUE(raw->fits);
  EXPECT_EQ(raw->extra_size, 8u);
  EXPECT_EQ(raw->name_size, 3u);
  EXPECT_EQ(raw->entry.name, "abc");
  EXPECT_EQ(raw->entry.table_offset, 0x50000u);
  EXPECT_EQ(raw->bytes(), 40u);
  EXPECT_FALSE(decode_bitmap_directory(dir, 1, kGeo).has_value());  // strict: no extra data

  auto cut = std::vector<uint8_t>(dir.begin(), dir.begin() + 30);
  raw = read_bitmap_dir_entry(cut, 0);
  ASSERT_TRUE(raw.has_value());
  EXPECT_FALSE(raw->fits);
  EXPECT_FALSE(read_bitmap_dir_entry(cut, 8).has_value());   // no room for a 24-byte header
  EXPECT_FALSE(read_bitmap_dir_entry(cut, 100).has_value());  // past the end

  EXPECT_EQ(bitmap_table_entry_problem(0, kCs), nullptr);
  EXPECT_EQ(bitmap_table_entry_problem(0x70000, kCs), nullptr);
  EXPECT_EQ(bitmap_table_entry_problem(kBitmapTableAllOnes, kCs), nullptr);
  EXPECT_NE(bitmap_table_entry_problem(0x70000 | 2, kCs), nullptr);
  EXPECT_NE(bitmap_table_entry_problem(0x70000 | kBitmapTableAllOnes, kCs), nullptr);
  EXPECT_NE(bitmap_table_entry_problem(0x70200, kCs), nullptr);
}

}  // namespace
}  // namespace keel::format
