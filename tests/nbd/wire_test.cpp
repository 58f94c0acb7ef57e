// Proves the NBD wire codec on plain byte buffers: greeting, option headers and replies,
// INFO/GO and META_CONTEXT payload parsing (including truncated, oversized and inconsistent
// input), request headers, and the transmission reply encodings.
#include <gtest/gtest.h>

#include "nbd/reply.h"
#include "nbd/wire.h"

namespace keel::nbd {
namespace {

using Bytes = std::vector<uint8_t>;

Bytes be(std::initializer_list<int> v) {
  Bytes b;
  for (int x : v) b.push_back(static_cast<uint8_t>(x));
  return b;
}

TEST(nbd_wire, GreetingIsMagicsAndFlags) {
  Bytes g = encode_greeting(3);
  ASSERT_EQ(g.size(), kGreetingBytes);
  EXPECT_EQ(Bytes(g.begin(), g.begin() + 8), Bytes({'N', 'B', 'D', 'M', 'A', 'G', 'I', 'C'}));
  EXPECT_EQ(Bytes(g.begin() + 8, g.begin() + 16), Bytes({'I', 'H', 'A', 'V', 'E', 'O', 'P', 'T'}));
  EXPECT_EQ(g[16], 0);
  EXPECT_EQ(g[17], 3);
}

TEST(nbd_wire, OptionHeaderRoundTrip) {
  Bytes b = encode_option_header({kOptMagic, kOptGo, 0x01020304});
  ASSERT_EQ(b.size(), kOptionHeaderBytes);
  auto h = decode_option_header(std::span<const uint8_t, kOptionHeaderBytes>(b.data(), 16));
  EXPECT_EQ(h.magic, kOptMagic);
  EXPECT_EQ(h.option, kOptGo);
  EXPECT_EQ(h.length, 0x01020304u);
}

TEST(nbd_wire, OptionReplyLayout) {
  Bytes out;
  append_option_reply(out, kOptList, kRepAck);
  Bytes want = be({0, 0x03, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 0});
  EXPECT_EQ(out, want);
  out.clear();
  append_option_error(out, 99, kRepErrUnsup, "no");
  ASSERT_EQ(out.size(), 22u);
  EXPECT_EQ(Bytes(out.begin() + 12, out.end()), be({0x80, 0, 0, 1, 0, 0, 0, 2, 'n', 'o'}));
}

TEST(nbd_wire, OptionErrorMessageIsClipped) {
  Bytes out;
  append_option_error(out, 1, kRepErrInvalid, std::string(100000, 'x'));
  EXPECT_EQ(out.size(), 20u + kMaxErrorMessage);
}

TEST(nbd_wire, ExportNameReplyWithAndWithoutZeroes) {
  Bytes a = encode_export_name_reply(0x1000, 0xced, false);
  ASSERT_EQ(a.size(), 8u + 2 + 124);
  EXPECT_EQ(Bytes(a.begin(), a.begin() + 10), be({0, 0, 0, 0, 0, 0, 0x10, 0, 0x0c, 0xed}));
  Bytes b = encode_export_name_reply(0x1000, 0xced, true);
  EXPECT_EQ(b.size(), 10u);
}

TEST(nbd_wire, InfoRequestParses) {
  Bytes d = encode_info_request({"disk", {kInfoName, kInfoBlockSize}});
  EXPECT_EQ(d, be({0, 0, 0, 4, 'd', 'i', 's', 'k', 0, 2, 0, 1, 0, 3}));
  auto r = parse_info_request(d);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->name, "disk");
  EXPECT_EQ(r->infos, (std::vector<uint16_t>{kInfoName, kInfoBlockSize}));
}

TEST(nbd_wire, InfoRequestRejectsBadLengths) {
  // Too short for the name length field.
  EXPECT_FALSE(parse_info_request(be({0, 0})));
  // Name length past the end (no huge allocation happens).
  auto r = parse_info_request(be({0x7f, 0xff, 0xff, 0xff, 'a'}));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().reply_type, kRepErrInvalid);
  // Name longer than the spec's 4096 bytes.
  Bytes longname = encode_info_request({std::string(4097, 'n'), {}});
  EXPECT_FALSE(parse_info_request(longname));
  // Count disagrees with the remaining bytes (one too many, one too few).
  EXPECT_FALSE(parse_info_request(be({0, 0, 0, 0, 0, 2, 0, 1})));
  EXPECT_FALSE(parse_info_request(be({0, 0, 0, 0, 0, 1, 0, 1, 0})));
  // Missing count.
  EXPECT_FALSE(parse_info_request(be({0, 0, 0, 1, 'x'})));
  // Empty name, no requests: valid.
  EXPECT_TRUE(parse_info_request(be({0, 0, 0, 0, 0, 0})));
}

TEST(nbd_wire, MetaContextRequestParses) {
  Bytes d = encode_meta_context_request({"", {"base:allocation", "qemu:x"}});
  auto r = parse_meta_context_request(d);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->name, "");
  EXPECT_EQ(r->queries, (std::vector<std::string>{"base:allocation", "qemu:x"}));
}

TEST(nbd_wire, MetaContextRequestRejectsBadInput) {
  // Query length past the end.
  EXPECT_FALSE(parse_meta_context_request(be({0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 9, 'a'})));
  // Stray bytes after the last query.
  EXPECT_FALSE(parse_meta_context_request(be({0, 0, 0, 0, 0, 0, 0, 0, 1})));
  // Too many queries: TOO_BIG.
  MetaContextRequest many{"", std::vector<std::string>(limits::kMaxNbdMetaQueries + 1, "a:b")};
  auto r = parse_meta_context_request(encode_meta_context_request(many));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().reply_type, kRepErrTooBig);
  // A count that promises more queries than there are bytes.
  EXPECT_FALSE(parse_meta_context_request(be({0, 0, 0, 0, 0, 0, 0, 5})));
}

TEST(nbd_wire, RequestHeaderRoundTrip) {
  RequestHeader h{kRequestMagic, kCmdFlagFua, kCmdWrite, 0x1122334455667788, 1ull << 40, 4096};
  Bytes b = encode_request_header(h);
  ASSERT_EQ(b.size(), kRequestHeaderBytes);
  EXPECT_EQ(Bytes(b.begin(), b.begin() + 8), be({0x25, 0x60, 0x95, 0x13, 0, 1, 0, 1}));
  auto d = decode_request_header(std::span<const uint8_t, kRequestHeaderBytes>(b.data(), 28));
  EXPECT_EQ(d.magic, h.magic);
  EXPECT_EQ(d.flags, h.flags);
  EXPECT_EQ(d.type, h.type);
  EXPECT_EQ(d.cookie, h.cookie);
  EXPECT_EQ(d.offset, h.offset);
  EXPECT_EQ(d.length, h.length);
}

TEST(nbd_wire, ByteReaderLatchesFailure) {
  Bytes b = be({1, 2, 3});
  ByteReader r(b);
  EXPECT_EQ(r.u16(), 0x0102);
  EXPECT_EQ(r.u32(), 0u);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.u16(), 0u);  // stays failed even though one byte is left
  ByteReader s(b);
  EXPECT_EQ(s.str(UINT64_MAX), "");
  EXPECT_FALSE(s.ok());
}

TEST(nbd_reply, SimpleReplyWithData) {
  Reply r;
  r.data = be({9, 8, 7});
  add_simple_reply(r, 0xabcdef, 0, 3);
  EXPECT_EQ(r.flatten(), be({0x67, 0x44, 0x66, 0x98, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xab, 0xcd, 0xef,
                             9, 8, 7}));
  Reply e;
  add_simple_reply(e, 1, kErrInval, 3);  // an error never carries data
  EXPECT_EQ(e.total_bytes(), kSimpleReplyHeaderBytes);
}

TEST(nbd_reply, StructuredChunks) {
  Reply r;
  r.data = be({1, 2, 3, 4});
  add_data_chunk(r, 0, 7, 100, 1, 2);
  add_hole_chunk(r, 0, 7, 102, 512);
  add_none_chunk(r, 7);
  Bytes f = r.flatten();
  ASSERT_EQ(f.size(), (20u + 8 + 2) + (20 + 12) + 20);
  // Data chunk: magic, flags 0, type 1, cookie, length 10, offset 100, bytes 2 3.
  EXPECT_EQ(Bytes(f.begin(), f.begin() + 8), be({0x66, 0x8e, 0x33, 0xef, 0, 0, 0, 1}));
  EXPECT_EQ(Bytes(f.begin() + 16, f.begin() + 30),
            be({0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 100, 2, 3}));
  // Hole chunk: type 2, length 12, offset 102, size 512.
  EXPECT_EQ(Bytes(f.begin() + 30 + 6, f.begin() + 30 + 8), be({0, 2}));
  EXPECT_EQ(Bytes(f.begin() + 30 + 16, f.begin() + 62),
            be({0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 102, 0, 0, 2, 0}));
  // NONE chunk with DONE.
  EXPECT_EQ(Bytes(f.begin() + 62 + 4, f.begin() + 62 + 8), be({0, 1, 0, 0}));
}

TEST(nbd_reply, BlockStatusAndErrors) {
  Reply r;
  std::vector<BlockExtent> ext = {{4096, 0}, {8192, 3}};
  add_block_status_chunk(r, kReplyFlagDone, 5, 1, ext);
  Bytes f = r.flatten();
  ASSERT_EQ(f.size(), 20u + 4 + 16);
  EXPECT_EQ(Bytes(f.begin() + 16, f.end()),
            be({0, 0, 0, 20, 0, 0, 0, 1, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 3}));
  Reply e;
  add_error_chunk(e, 5, kErrInval, "bad");
  Bytes g = e.flatten();
  EXPECT_EQ(Bytes(g.begin() + 4, g.begin() + 8), be({0, 1, 0x80, 1}));
  EXPECT_EQ(Bytes(g.begin() + 16, g.end()), be({0, 0, 0, 9, 0, 0, 0, 22, 0, 3, 'b', 'a', 'd'}));
  Reply o;
  add_error_offset_chunk(o, 5, kErrIo, "", 4096);
  Bytes h = o.flatten();
  EXPECT_EQ(Bytes(h.begin() + 16, h.end()),
            be({0, 0, 0, 14, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0}));
}

}  // namespace
}  // namespace keel::nbd
