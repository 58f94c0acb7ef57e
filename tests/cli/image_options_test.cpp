// Proves keel's creation options are checked in qemu-img 7.2's order with its messages and turn
// into the right CreateOptions (the interop test cli_create.sh compares with qemu-img itself).
#include <gtest/gtest.h>

#include "cli/image_options.h"

namespace keel::cli {
namespace {

Result<CheckedOptions> check(const char* format, const char* text) {
  auto list = parse_options(text);
  EXPECT_TRUE(list.has_value()) << text;
  return check_option_types(format, *list);
}

std::string create_error(const char* text, uint64_t size = 1 << 20) {
  auto c = check("qcow2", text);
  if (!c) return "type: " + c.error().message();
  c->set("size", std::to_string(size));
  auto o = to_create_options(*c);
  return o ? "" : o.error().message();
}

TEST(ImageOptions, TypeErrors) {
  EXPECT_EQ(check("qcow2", "foo=bar").error().message(), "Invalid parameter 'foo'");
  EXPECT_EQ(check("raw", "cluster_size=4k").error().message(), "Invalid parameter 'cluster_size'");
  EXPECT_EQ(check("qcow2", "lazy_refcounts=maybe").error().message(),
            "Parameter 'lazy_refcounts' expects 'on' or 'off'");
  EXPECT_EQ(check("qcow2", "refcount_bits=x").error().message(),
            "Parameter 'refcount_bits' expects a number");
  EXPECT_EQ(check("qcow2", "cluster_size=abc").error().message().substr(0, 61),
            "Parameter 'cluster_size' expects a non-negative number below ");
}

TEST(ImageOptions, FormattingLineOrderAndDefaults) {
  auto c = check("qcow2", "");
  ASSERT_TRUE(c.has_value());
  c->set("size", "67108864");
  EXPECT_EQ(formatting_options(*c),
            "cluster_size=65536 extended_l2=off compression_type=zlib size=67108864 "
            "lazy_refcounts=off refcount_bits=16");
  auto all = check("qcow2",
                   "compat=1.1,cluster_size=4k,refcount_bits=0x8,lazy_refcounts=yes,"
                   "extended_l2=on,preallocation=falloc,compression_type=zstd,data_file=h.data,"
                   "data_file_raw=on,backing_file=a,,b.qcow2,backing_fmt=qcow2");
  ASSERT_TRUE(all.has_value());
  all->set("size", "67108864");
  EXPECT_EQ(formatting_options(*all),
            "cluster_size=4096 extended_l2=on preallocation=falloc compression_type=zstd "
            "size=67108864 compat=1.1 backing_file=a,,b.qcow2 backing_fmt=qcow2 data_file=h.data "
            "data_file_raw=on lazy_refcounts=yes refcount_bits=8");
  auto raw = check("raw", "preallocation=full");
  ASSERT_TRUE(raw.has_value());
  raw->set("size", "1048576");
  EXPECT_EQ(formatting_options(*raw), "size=1048576 preallocation=full");
}

TEST(ImageOptions, CombinationErrorsInQemuOrder) {
  EXPECT_EQ(create_error("compat=2"), "Parameter 'version' does not accept value '2'");
  EXPECT_EQ(create_error("preallocation=x"), "Parameter 'preallocation' does not accept value 'x'");
  EXPECT_EQ(create_error("compression_type=lz4"),
            "Parameter 'compression-type' does not accept value 'lz4'");
  EXPECT_EQ(create_error("cluster_size=1000,extended_l2=on"),
            "Cluster size must be a power of two between 512 and 2048k");
  EXPECT_EQ(create_error("cluster_size=4M"), "Cluster size must be a power of two between 512 and 2048k");
  EXPECT_EQ(create_error("compat=0.10,extended_l2=on,cluster_size=1k"),
            "Extended L2 entries are only supported with compatibility level 1.1 and above (use "
            "version=v3 or greater)");
  EXPECT_EQ(create_error("cluster_size=4k,extended_l2=on,refcount_bits=3"),
            "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
  EXPECT_EQ(create_error("compat=0.10,refcount_bits=3"),
            "Refcount width must be a power of two and may not exceed 64 bits");
  EXPECT_EQ(create_error("compat=0.10,refcount_bits=8"),
            "Different refcount widths than 16 bits require compatibility level 1.1 or above (use "
            "version=v3 or greater)");
  EXPECT_EQ(create_error("compat=0.10,lazy_refcounts=on,data_file=x.d"),
            "Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 "
            "or greater)");
  EXPECT_EQ(create_error("data_file_raw=on"), "data-file-raw requires data-file");
  EXPECT_EQ(create_error("backing_fmt=qcow2"), "Backing format cannot be used without backing file");
  EXPECT_EQ(create_error("size=1", 1ull << 60),
            "The image size is too large for file format 'qcow2' (try using a larger cluster size)");
}

TEST(ImageOptions, ToCreateOptions) {
  auto c = check("qcow2",
                 "compat=v2,cluster_size=512,preallocation=metadata,backing_file=b.qcow2,"
                 "backing_fmt=qcow2,extended_l2=off");
  ASSERT_TRUE(c.has_value());
  c->set("size", "513");
  auto o = to_create_options(*c);
  ASSERT_FALSE(o.has_value());  // backing + preallocation needs extended L2
  auto d = check("qcow2", "refcount_bits=64,lazy_refcounts=on,compression_type=zstd,data_file=x.data,data_file_raw=on");
  ASSERT_TRUE(d.has_value());
  d->set("size", "513");
  auto e = to_create_options(*d);
  ASSERT_TRUE(e.has_value()) << e.error().message();
  EXPECT_EQ(e->size, 1024u);  // rounded up to 512 like QEMU
  EXPECT_EQ(e->version, 3);
  EXPECT_EQ(e->refcount_bits, 64u);
  EXPECT_TRUE(e->lazy_refcounts);
  EXPECT_EQ(e->compression_type, CompressionType::kZstd);
  EXPECT_EQ(e->data_file, "x.data");
  EXPECT_TRUE(e->data_file_raw);
}

}  // namespace
}  // namespace keel::cli
