// Proves the CLI helpers parse and print exactly like qemu-img/qemu-io 7.2 (expected values were
// taken from the real tools): sizes, -o lists, human numbers, QEMU's JSON layout and key order.
#include <gtest/gtest.h>

#include "cli/util.h"
#include "report/qemu_json.h"  // the serializer the public keel/report.h renders with

namespace keel::cli {
namespace {

using ::keel::report::qdict_order;
using ::keel::report::qemu_human_dump;
using ::keel::report::qemu_json;

uint64_t size_ok(const char* text) {
  auto v = parse_size(text);
  EXPECT_TRUE(v.has_value()) << text;
  return v ? *v : ~0ull;
}

bool size_bad(const char* text) { return !parse_size(text).has_value(); }

TEST(ParseSize, PlainAndSuffixed) {
  EXPECT_EQ(size_ok("0"), 0u);
  EXPECT_EQ(size_ok("513"), 513u);
  EXPECT_EQ(size_ok("007"), 7u);
  EXPECT_EQ(size_ok(" 5"), 5u);
  EXPECT_EQ(size_ok("+5"), 5u);
  EXPECT_EQ(size_ok("1b"), 1u);
  EXPECT_EQ(size_ok("1B"), 1u);
  EXPECT_EQ(size_ok("1k"), 1024u);
  EXPECT_EQ(size_ok("1K"), 1024u);
  EXPECT_EQ(size_ok("64M"), 64ull << 20);
  EXPECT_EQ(size_ok("64m"), 64ull << 20);
  EXPECT_EQ(size_ok("2G"), 2ull << 30);
  EXPECT_EQ(size_ok("3T"), 3ull << 40);
  EXPECT_EQ(size_ok("1P"), 1ull << 50);
  EXPECT_EQ(size_ok("1E"), 1ull << 60);
  EXPECT_EQ(size_ok("15E"), 15ull << 60);
}

TEST(ParseSize, FractionsNeedASuffix) {
  EXPECT_EQ(size_ok("1.3k"), 1331u);  // qemu-img create ... 1.3k -> size=1331
  EXPECT_EQ(size_ok("2.5G"), 2684354560u);
  EXPECT_EQ(size_ok("1.0"), 1u);      // a zero fraction needs no suffix
  EXPECT_EQ(size_ok("1.k"), 1024u);
  EXPECT_EQ(size_ok("0.5k"), 512u);
  EXPECT_EQ(size_ok("1.5M"), 1572864u);
  EXPECT_TRUE(size_bad("1.5"));
  EXPECT_TRUE(size_bad("1.5b"));
  EXPECT_TRUE(size_bad(".5k"));
  EXPECT_TRUE(size_bad("1.5e3k"));
}

TEST(ParseSize, Hex) {
  EXPECT_EQ(size_ok("0x100000"), 1048576u);
  EXPECT_EQ(size_ok("0X10"), 16u);
  bool warned = false;
  auto v = parse_size("0x10k", &warned);
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(*v, 16384u);
  EXPECT_TRUE(warned);
  EXPECT_TRUE(size_bad("0x1.5k"));
  EXPECT_TRUE(size_bad("0x"));
}

TEST(ParseSize, Rejects) {
  for (const char* bad : {"", "-1", "-0", "1KiB", "1e6", "5 ", "abc", "1kk", "k", "1 k", "1.5.5k"})
    EXPECT_TRUE(size_bad(bad)) << "'" << bad << "'";
}

TEST(ParseSize, Overflow) {
  auto v = parse_size("16E");
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().err(), ERANGE);
  EXPECT_FALSE(parse_size("99999999999999999999").has_value());
  EXPECT_EQ(parse_size("18446744073709551615").value_or(0), ~0ull);
  // Fits in 64 bits, but qemu-img's range check (INT64_MAX) still refuses it.
  EXPECT_EQ(size_ok("8E"), 8ull << 60);
  EXPECT_FALSE(parse_size_arg("image size", "8E").has_value());
  EXPECT_EQ(parse_size_arg("image size", "7E").value_or(0), 7ull << 60);
}

TEST(Options, ParsesPairsAndEscapes) {
  auto l = parse_options("cluster_size=4k,lazy_refcounts=on,backing_file=a,,b.raw");
  ASSERT_TRUE(l.has_value());
  ASSERT_EQ(l->items().size(), 3u);
  EXPECT_EQ(l->get("cluster_size"), "4k");
  EXPECT_EQ(l->get("lazy_refcounts"), "on");
  EXPECT_EQ(l->get("backing_file"), "a,b.raw");
  EXPECT_FALSE(l->has("compat"));
}

TEST(Options, BareKeyMeansOn) {
  auto l = parse_options("lazy_refcounts");
  ASSERT_TRUE(l.has_value());
  EXPECT_EQ(l->get("lazy_refcounts"), "on");
}

TEST(Options, LaterValuesWinAndMerge) {
  std::string merged = merge_option_args({"cluster_size=4k", "cluster_size=8k,refcount_bits=8"});
  EXPECT_EQ(merged, "cluster_size=4k,cluster_size=8k,refcount_bits=8");
  auto l = parse_options(merged);
  ASSERT_TRUE(l.has_value());
  EXPECT_EQ(l->get("cluster_size"), "8k");
  EXPECT_EQ(l->take("cluster_size"), "8k");
  EXPECT_FALSE(l->has("cluster_size"));
  EXPECT_EQ(l->get("refcount_bits"), "8");
}

TEST(Options, ValueMayContainEqualsAndTrailingEscapedComma) {
  auto l = parse_options("data_file=x=y,lazy_refcounts=on,,");
  ASSERT_TRUE(l.has_value());
  EXPECT_EQ(l->get("data_file"), "x=y");
  EXPECT_EQ(l->get("lazy_refcounts"), "on,");  // qemu then rejects "on," as a boolean
}

TEST(Options, EmptyKeyIsAnError) {
  EXPECT_FALSE(parse_options("=5").has_value());
  auto l = parse_options("a=1,,=2");  // ",," keeps the '=' inside a's value
  ASSERT_TRUE(l.has_value());
  EXPECT_EQ(l->get("a"), "1,=2");
}

TEST(Options, Help) {
  EXPECT_TRUE(is_help_option("help"));
  EXPECT_TRUE(is_help_option("?"));
  EXPECT_TRUE(is_help_option("cluster_size=4k,help"));
  EXPECT_FALSE(is_help_option("cluster_size=4k"));
  EXPECT_FALSE(is_help_option("backing_file=help"));
}

TEST(Options, EscapeAndBool) {
  EXPECT_EQ(escape_commas("a,b,,c"), "a,,b,,,,c");
  EXPECT_EQ(parse_bool("on"), true);
  EXPECT_EQ(parse_bool("yes"), true);
  EXPECT_EQ(parse_bool("true"), true);
  EXPECT_EQ(parse_bool("off"), false);
  EXPECT_EQ(parse_bool("no"), false);
  EXPECT_EQ(parse_bool("false"), false);
  EXPECT_FALSE(parse_bool("maybe").has_value());
  EXPECT_FALSE(parse_bool("On").has_value());
}

TEST(Human, SizeToStr) {
  EXPECT_EQ(size_to_str(0), "0 B");
  EXPECT_EQ(size_to_str(1), "1 B");
  EXPECT_EQ(size_to_str(999), "999 B");
  EXPECT_EQ(size_to_str(1000), "0.977 KiB");
  EXPECT_EQ(size_to_str(1024), "1 KiB");
  EXPECT_EQ(size_to_str(4096), "4 KiB");
  EXPECT_EQ(size_to_str(200704), "196 KiB");
  EXPECT_EQ(size_to_str(1024000), "0.977 MiB");
  EXPECT_EQ(size_to_str(64ull << 20), "64 MiB");
  EXPECT_EQ(size_to_str(1572864), "1.5 MiB");
  EXPECT_EQ(size_to_str(1ull << 30), "1 GiB");
  EXPECT_EQ(size_to_str(1ull << 60), "1 EiB");
}

TEST(Human, Cvtstr) {
  EXPECT_EQ(cvtstr(0), "0 bytes");
  EXPECT_EQ(cvtstr(1), "1 bytes");
  EXPECT_EQ(cvtstr(3), "3 bytes");
  EXPECT_EQ(cvtstr(361.77225), "361.772250 bytes");
  EXPECT_EQ(cvtstr(1024), "1 KiB");
  EXPECT_EQ(cvtstr(65536), "64 KiB");
  EXPECT_EQ(cvtstr(64512), "63 KiB");
  EXPECT_EQ(cvtstr(4u << 20), "4 MiB");
  EXPECT_EQ(cvtstr(0x110000), "1.062 MiB");
  EXPECT_EQ(cvtstr(0x3e0000), "3.875 MiB");
  EXPECT_EQ(cvtstr(512.0 * (1 << 20)), "512 MiB");
}

TEST(Human, Timestr) {
  EXPECT_EQ(timestr({0, 0}), "00.00 sec");
  EXPECT_EQ(timestr({0, 123456789}), "00.12 sec");
  EXPECT_EQ(timestr({1, 500000000}), "0:00:01.50");
  EXPECT_EQ(timestr({3723, 0}), "1:02:03.00");
}

TEST(Json, QdictOrderMatchesQemuInfo) {
  // Field order qemu-img info --output=json prints for a qcow2 image with a backing file.
  std::vector<std::string> keys = {"virtual-size", "filename", "cluster-size", "format",
                                   "actual-size", "backing-filename", "full-backing-filename",
                                   "backing-filename-format", "format-specific", "dirty-flag",
                                   "snapshots"};
  std::vector<std::string> expect = {"backing-filename-format", "snapshots", "virtual-size",
                                     "filename", "cluster-size", "format", "actual-size",
                                     "format-specific", "full-backing-filename",
                                     "backing-filename", "dirty-flag"};
  EXPECT_EQ(qdict_order(keys), expect);
  EXPECT_EQ(qdict_order({"id", "name", "vm-state-size", "date-sec", "date-nsec", "vm-clock-sec",
                         "vm-clock-nsec", "icount"}),
            (std::vector<std::string>{"icount", "vm-clock-nsec", "name", "date-sec", "date-nsec",
                                      "vm-clock-sec", "id", "vm-state-size"}));
  EXPECT_EQ(qdict_order({"compat", "data-file", "data-file-raw", "extended-l2", "lazy-refcounts",
                         "refcount-bits", "bitmaps", "corrupt", "compression-type"}),
            (std::vector<std::string>{"compat", "compression-type", "lazy-refcounts", "bitmaps",
                                      "refcount-bits", "data-file", "data-file-raw", "corrupt",
                                      "extended-l2"}));
  EXPECT_EQ(qdict_order({"name", "granularity", "flags"}),
            (std::vector<std::string>{"flags", "name", "granularity"}));
}

TEST(Json, LayoutLikeQemu) {
  nlohmann::ordered_json j;
  j["virtual-size"] = 1048576;
  j["filename"] = "r.raw";
  j["format"] = "raw";
  j["actual-size"] = 4096;
  j["dirty-flag"] = false;
  EXPECT_EQ(qemu_json(j),
            "{\n"
            "    \"virtual-size\": 1048576,\n"
            "    \"filename\": \"r.raw\",\n"
            "    \"format\": \"raw\",\n"
            "    \"actual-size\": 4096,\n"
            "    \"dirty-flag\": false\n"
            "}");
  nlohmann::ordered_json b;
  b["flags"] = nlohmann::ordered_json::array();
  b["name"] = "bm1";
  EXPECT_EQ(qemu_json(nlohmann::ordered_json::array({b})),
            "[\n    {\n        \"flags\": [\n        ],\n        \"name\": \"bm1\"\n    }\n]");
}

TEST(Json, StringEscapes) {
  EXPECT_EQ(qemu_json("a\"b\\c\n\t"), "\"a\\\"b\\\\c\\n\\t\"");
  EXPECT_EQ(qemu_json(std::string("\x01\x7f")), "\"\\u0001\\u007F\"");
  EXPECT_EQ(qemu_json("\xc3\xa9"), "\"\\u00E9\"");
  EXPECT_EQ(qemu_json("\xf0\x9f\x98\x80"), "\"\\uD83D\\uDE00\"");
  EXPECT_EQ(qemu_json("\xff"), "\"\\uFFFD\"");
}

TEST(Human, SpecificDump) {
  nlohmann::ordered_json data;
  data["compat"] = "1.1";
  data["lazy-refcounts"] = false;
  nlohmann::ordered_json bm;
  bm["flags"] = nlohmann::ordered_json::array({"auto"});
  bm["name"] = "bm0";
  bm["granularity"] = 65536;
  data["bitmaps"] = nlohmann::ordered_json::array({bm});
  data["refcount-bits"] = 16;
  EXPECT_EQ(qemu_human_dump(data, 1),
            "    compat: 1.1\n"
            "    lazy refcounts: false\n"
            "    bitmaps:\n"
            "        [0]:\n"
            "            flags:\n"
            "                [0]: auto\n"
            "            name: bm0\n"
            "            granularity: 65536\n"
            "    refcount bits: 16\n");
}

TEST(ProgressLine, LikeQemuImg) {
  testing::internal::CaptureStdout();
  {
    Progress p(true);
    p.update(0.5);   // less than 1% since the last line: not printed
    p.update(25);
    p.update(25.9);
    p.update(100);
    p.finish();
    p.finish();      // only once
  }
  EXPECT_EQ(testing::internal::GetCapturedStdout(),
            "    (0.00/100%)\r    (25.00/100%)\r    (100.00/100%)\r    (100.00/100%)\r\n");
  testing::internal::CaptureStdout();
  {
    Progress off(false);
    off.update(50);
    off.finish();
  }
  EXPECT_EQ(testing::internal::GetCapturedStdout(), "");
}

TEST(Paths, PathCombineLikeQemu) {
  EXPECT_EQ(path_combine("b.qcow2", "a.qcow2"), "a.qcow2");
  EXPECT_EQ(path_combine("dir/b.qcow2", "a.qcow2"), "dir/a.qcow2");
  EXPECT_EQ(path_combine("/x/y/b.qcow2", "../a.qcow2"), "/x/y/../a.qcow2");
  EXPECT_EQ(path_combine("dir/b.qcow2", "/abs/a.qcow2"), "/abs/a.qcow2");
  // The engine's rule, which the command now shares: protocol and json: names stay as they are.
  EXPECT_EQ(path_combine("dir/b.qcow2", "nbd://host/export"), "nbd://host/export");
  EXPECT_EQ(path_combine("dir/b.qcow2", "json:{\"driver\": \"raw\"}"), "json:{\"driver\": \"raw\"}");
}

}  // namespace
}  // namespace keel::cli
