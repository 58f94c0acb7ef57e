// Proves request validation (flags, ranges, sizes, read-only: the spec's error for each) and
// command execution on an in-memory Image: structured reads split into data and OFFSET_HOLE
// chunks, DF, block status flags and REQ_ONE, FUA, write-zeroes flags, discard and
// detect-zeroes policies, and error replies.
#include <gtest/gtest.h>

#include <cstdlib>
#include <random>

#include "format/endian.h"
#include "nbd/commands.h"
#include "nbd/mem_image.h"

namespace keel::nbd {
namespace {

using test::MemImage;
using Bytes = std::vector<uint8_t>;

CommandContext ctx(uint64_t size, bool sr = true, bool ro = false) {
  CommandContext c;
  c.session.structured_replies = sr;
  c.session.meta.base_allocation = sr;
  ExportConfig e;
  e.size = size;
  e.read_only = ro;
  c.session.eflags = transmission_flags(e, sr);
  c.export_size = size;
  c.read_only = ro;
  return c;
}

RequestHeader req(uint16_t type, uint64_t off, uint32_t len, uint16_t flags = 0) {
  return RequestHeader{kRequestMagic, flags, type, 42, off, len};
}

struct ParsedChunk {
  uint16_t flags, type;
  Bytes payload;
};

std::vector<ParsedChunk> chunks(const Reply& r) {
  Bytes b = r.flatten();
  std::vector<ParsedChunk> out;
  size_t i = 0;
  while (i < b.size()) {
    EXPECT_EQ(format::get_be32(&b[i]), kStructuredReplyMagic);
    EXPECT_EQ(format::get_be64(&b[i + 8]), 42u);
    uint32_t len = format::get_be32(&b[i + 16]);
    out.push_back({format::get_be16(&b[i + 4]), format::get_be16(&b[i + 6]),
                   Bytes(b.begin() + static_cast<ptrdiff_t>(i + 20),
                         b.begin() + static_cast<ptrdiff_t>(i + 20 + len))});
    i += 20 + len;
  }
  return out;
}

uint32_t simple_error(const Reply& r) {
  Bytes b = r.flatten();
  EXPECT_GE(b.size(), 16u);
  EXPECT_EQ(format::get_be32(b.data()), kSimpleReplyMagic);
  return format::get_be32(b.data() + 4);
}

uint32_t chunk_error(const Reply& r) {
  auto c = chunks(r);
  EXPECT_EQ(c.size(), 1u);
  EXPECT_TRUE(c[0].type & 0x8000);
  EXPECT_TRUE(c[0].flags & kReplyFlagDone);
  return format::get_be32(c[0].payload.data());
}

TEST(nbd_check_request, ValidRequests) {
  auto c = ctx(1 << 20);
  EXPECT_FALSE(check_request(c, req(kCmdRead, 0, 1 << 20)));
  EXPECT_FALSE(check_request(c, req(kCmdRead, (1 << 20) - 1, 1, kCmdFlagDf | kCmdFlagFua)));
  EXPECT_FALSE(check_request(c, req(kCmdWrite, 0, 512, kCmdFlagFua)));
  EXPECT_FALSE(check_request(c, req(kCmdFlush, 0, 0)));
  EXPECT_FALSE(check_request(c, req(kCmdTrim, 4096, 4096, kCmdFlagFua)));
  EXPECT_FALSE(check_request(c, req(kCmdCache, 0, 1 << 20)));
  EXPECT_FALSE(check_request(c, req(kCmdWriteZeroes, 0, 1 << 20, kCmdFlagNoHole | kCmdFlagFastZero)));
  EXPECT_FALSE(check_request(c, req(kCmdBlockStatus, 0, 1 << 20, kCmdFlagReqOne)));
}

TEST(nbd_check_request, SpecErrors) {
  auto c = ctx(1 << 20);
  // Past the end: EINVAL for reads/trim/cache/block status, ENOSPC for writes.
  EXPECT_EQ(check_request(c, req(kCmdRead, 1 << 20, 1)).error, kErrInval);
  EXPECT_EQ(check_request(c, req(kCmdRead, UINT64_MAX, 2)).error, kErrInval);  // no overflow
  EXPECT_EQ(check_request(c, req(kCmdWrite, (1 << 20) - 1, 2)).error, kErrNoSpc);
  EXPECT_EQ(check_request(c, req(kCmdWriteZeroes, 1 << 20, 1)).error, kErrNoSpc);
  EXPECT_EQ(check_request(c, req(kCmdTrim, 1 << 20, 1)).error, kErrInval);
  EXPECT_EQ(check_request(c, req(kCmdCache, 0, (1 << 20) + 1)).error, kErrInval);
  EXPECT_EQ(check_request(c, req(kCmdBlockStatus, 1 << 20, 1)).error, kErrInval);
  // Larger than the maximum block size.
  auto big = ctx(1ull << 40);
  EXPECT_EQ(check_request(big, req(kCmdRead, 0, (32u << 20) + 1)).error, kErrInval);
  EXPECT_EQ(check_request(big, req(kCmdWrite, 0, 0xffffffff)).error, kErrInval);
  EXPECT_FALSE(check_request(big, req(kCmdWriteZeroes, 0, 0xffffffff)));  // no payload: fine
  // Unknown command and flags, flags on the wrong command.
  EXPECT_EQ(check_request(c, req(99, 0, 0)).error, kErrInval);
  EXPECT_EQ(check_request(c, req(kCmdRead, 0, 1, 1 << 9)).error, kErrInval);
  EXPECT_EQ(check_request(c, req(kCmdWrite, 0, 1, kCmdFlagDf)).error, kErrInval);
  EXPECT_EQ(check_request(c, req(kCmdRead, 0, 1, kCmdFlagNoHole)).error, kErrInval);
  EXPECT_EQ(check_request(c, req(kCmdBlockStatus, 0, 1, kCmdFlagFastZero)).error, kErrInval);
  // Block status of zero bytes, or without a negotiated context.
  EXPECT_EQ(check_request(c, req(kCmdBlockStatus, 0, 0)).error, kErrInval);
  auto simple = ctx(1 << 20, false);
  EXPECT_EQ(check_request(simple, req(kCmdBlockStatus, 0, 512)).error, kErrInval);
  // DF needs structured replies.
  EXPECT_EQ(check_request(simple, req(kCmdRead, 0, 512, kCmdFlagDf)).error, kErrInval);
  // Writes to a read-only export: EPERM, even past the end.
  auto ro = ctx(1 << 20, true, true);
  for (uint16_t t : {kCmdWrite, kCmdTrim, kCmdWriteZeroes}) {
    EXPECT_EQ(check_request(ro, req(t, 0, 512)).error, kErrPerm) << t;
    EXPECT_EQ(check_request(ro, req(t, 2 << 20, 512)).error, kErrPerm) << t;
  }
  EXPECT_FALSE(check_request(ro, req(kCmdRead, 0, 512)));
  EXPECT_FALSE(check_request(ro, req(kCmdFlush, 0, 0, kCmdFlagFua)));
}

TEST(nbd_execute, SimpleReadAndWrite) {
  MemImage img(1 << 20);
  auto c = ctx(1 << 20, false);
  Bytes data(4096, 0x5a);
  Reply w = execute(img, c, req(kCmdWrite, 8192, 4096, kCmdFlagFua), data);
  EXPECT_EQ(simple_error(w), 0u);
  EXPECT_EQ(img.fua_writes(), 1u);
  Reply r = execute(img, c, req(kCmdRead, 8000, 500), {});
  Bytes f = r.flatten();
  ASSERT_EQ(f.size(), 16u + 500);
  EXPECT_EQ(format::get_be32(f.data() + 4), 0u);
  EXPECT_EQ(f[16], 0);
  EXPECT_EQ(f[16 + 191], 0);
  EXPECT_EQ(f[16 + 192], 0x5a);
}

TEST(nbd_execute, SimpleReadErrorSendsNoData) {
  MemImage img(1 << 20);
  img.fail_reads_at(100);
  Reply r = execute(img, ctx(1 << 20, false), req(kCmdRead, 0, 4096), {});
  EXPECT_EQ(r.total_bytes(), 16u);
  EXPECT_EQ(simple_error(r), kErrIo);
}

TEST(nbd_execute, StructuredReadSplitsDataAndHoles) {
  MemImage img(1 << 20);
  Bytes data(8192, 7);
  ASSERT_TRUE(img.write(16384, data, false).is_ok());
  // Read [0, 32K): hole [0,16K), data [16K,24K), hole [24K,32K).
  Reply r = execute(img, ctx(1 << 20), req(kCmdRead, 0, 32768), {});
  auto c = chunks(r);
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[0].type, kChunkOffsetHole);
  EXPECT_EQ(format::get_be64(c[0].payload.data()), 0u);
  EXPECT_EQ(format::get_be32(c[0].payload.data() + 8), 16384u);
  EXPECT_EQ(c[1].type, kChunkOffsetData);
  EXPECT_EQ(format::get_be64(c[1].payload.data()), 16384u);
  EXPECT_EQ(c[1].payload.size(), 8u + 8192);
  EXPECT_EQ(c[1].payload[8], 7);
  EXPECT_EQ(c[2].type, kChunkOffsetHole);
  EXPECT_EQ(c[0].flags, 0);
  EXPECT_EQ(c[1].flags, 0);
  EXPECT_EQ(c[2].flags, kReplyFlagDone);
}

TEST(nbd_execute, HoleOnlyReadIsOneHoleChunk) {
  MemImage img(1 << 20);
  auto c = chunks(execute(img, ctx(1 << 20), req(kCmdRead, 100, 5000), {}));
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].type, kChunkOffsetHole);
  EXPECT_EQ(c[0].flags, kReplyFlagDone);
  EXPECT_EQ(format::get_be32(c[0].payload.data() + 8), 5000u);
}

TEST(nbd_execute, DontFragmentSendsOneDataChunk) {
  MemImage img(1 << 20);
  Bytes data(4096, 1);
  ASSERT_TRUE(img.write(4096, data, false).is_ok());
  auto c = chunks(execute(img, ctx(1 << 20), req(kCmdRead, 0, 12288, kCmdFlagDf), {}));
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].type, kChunkOffsetData);
  EXPECT_EQ(c[0].flags, kReplyFlagDone);
  ASSERT_EQ(c[0].payload.size(), 8u + 12288);
  EXPECT_EQ(c[0].payload[8 + 4095], 0);
  EXPECT_EQ(c[0].payload[8 + 4096], 1);
  EXPECT_EQ(c[0].payload[8 + 8192], 0);
}

TEST(nbd_execute, StructuredReadErrorIsAnErrorChunkOnly) {
  MemImage img(1 << 20);
  Bytes data(8192, 1);
  ASSERT_TRUE(img.write(0, data, false).is_ok());
  img.fail_reads_at(5000);
  Reply r = execute(img, ctx(1 << 20), req(kCmdRead, 0, 8192), {});
  auto c = chunks(r);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].type, kChunkErrorOffset);
  EXPECT_EQ(format::get_be32(c[0].payload.data()), kErrIo);
}

TEST(nbd_execute, ZeroLengthRead) {
  MemImage img(1 << 20);
  auto c = chunks(execute(img, ctx(1 << 20), req(kCmdRead, 0, 0), {}));
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].type, kChunkNone);
}

TEST(nbd_execute, BlockStatusExtentsAndReqOne) {
  MemImage img(1 << 20);
  Bytes data(4096, 1);
  ASSERT_TRUE(img.write(8192, data, false).is_ok());
  ASSERT_TRUE(img.write(12288, data, false).is_ok());
  auto c = chunks(execute(img, ctx(1 << 20), req(kCmdBlockStatus, 0, 32768), {}));
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].type, kChunkBlockStatus);
  EXPECT_EQ(c[0].flags, kReplyFlagDone);
  const auto& p = c[0].payload;
  EXPECT_EQ(format::get_be32(p.data()), kMetaIdBaseAllocation);
  ASSERT_EQ(p.size(), 4u + 3 * 8);
  EXPECT_EQ(format::get_be32(p.data() + 4), 8192u);
  EXPECT_EQ(format::get_be32(p.data() + 8), kStateHole | kStateZero);
  EXPECT_EQ(format::get_be32(p.data() + 12), 8192u);  // two data blocks merged
  EXPECT_EQ(format::get_be32(p.data() + 16), 0u);
  EXPECT_EQ(format::get_be32(p.data() + 20), 16384u);  // clipped to the request
  auto one = chunks(execute(img, ctx(1 << 20), req(kCmdBlockStatus, 0, 32768, kCmdFlagReqOne), {}));
  ASSERT_EQ(one[0].payload.size(), 12u);
  EXPECT_EQ(format::get_be32(one[0].payload.data() + 4), 8192u);
}

// Several contexts: one BLOCK_STATUS chunk each in id order, DONE on the last only (qemu-nbd);
// a context whose data cannot be read ends the reply with an ERROR chunk.
TEST(nbd_execute, BlockStatusSeveralContexts) {
  MemImage img(1 << 20);
  Bytes data(4096, 1);
  ASSERT_TRUE(img.write(8192, data, false).is_ok());
  auto c = ctx(1 << 20);
  c.session.meta.allocation_depth = true;
  auto ch = chunks(execute(img, c, req(kCmdBlockStatus, 0, 32768), {}));
  ASSERT_EQ(ch.size(), 2u);
  EXPECT_EQ(ch[0].flags, 0u);
  EXPECT_EQ(ch[1].flags, kReplyFlagDone);
  EXPECT_EQ(format::get_be32(ch[0].payload.data()), kMetaIdBaseAllocation);
  EXPECT_EQ(format::get_be32(ch[1].payload.data()), kMetaIdAllocationDepth);
  ASSERT_EQ(ch[1].payload.size(), 4u + 3 * 8);
  EXPECT_EQ(format::get_be32(ch[1].payload.data() + 8), 0u);   // no layer
  EXPECT_EQ(format::get_be32(ch[1].payload.data() + 16), 1u);  // this image
  c.session.meta.base_allocation = false;
  c.session.meta.bitmaps = {0};  // selected, but the export serves no bitmap
  ch = chunks(execute(img, c, req(kCmdBlockStatus, 0, 32768), {}));
  ASSERT_EQ(ch.size(), 2u);
  EXPECT_EQ(format::get_be32(ch[0].payload.data()), kMetaIdAllocationDepth);
  EXPECT_EQ(ch[1].type, kChunkError);
  // Nothing selected: BLOCK_STATUS is invalid.
  c.session.meta = {};
  EXPECT_EQ(check_request(c, req(kCmdBlockStatus, 0, 4096)).error, kErrInval);
}

TEST(nbd_execute, FlushTrimAndCache) {
  MemImage img(1 << 20);
  auto c = ctx(1 << 20);
  EXPECT_EQ(simple_error(execute(img, c, req(kCmdFlush, 0, 0), {})), 0u);
  EXPECT_EQ(img.flushes(), 1u);
  Bytes data(8192, 1);
  ASSERT_TRUE(img.write(0, data, false).is_ok());
  // --discard=ignore (the default): TRIM succeeds and changes nothing.
  EXPECT_EQ(simple_error(execute(img, c, req(kCmdTrim, 0, 8192), {})), 0u);
  EXPECT_EQ(img.discards(), 0u);
  EXPECT_TRUE(img.allocated(0));
  c.policy.discard = DiscardMode::kUnmap;
  EXPECT_EQ(simple_error(execute(img, c, req(kCmdTrim, 0, 8192, kCmdFlagFua), {})), 0u);
  EXPECT_EQ(img.discards(), 1u);
  EXPECT_FALSE(img.allocated(0));
  EXPECT_EQ(img.flushes(), 2u);  // FUA on TRIM
  EXPECT_EQ(simple_error(execute(img, c, req(kCmdCache, 0, 4096), {})), 0u);
}

// A flush that a finished flush already covered is answered without an image flush, as QEMU's
// block layer does; any write, trim or write-zeroes completed since, on any connection, makes
// the next flush reach the image, and after a failed flush every flush does.
TEST(nbd_execute, FlushCoveredByAFinishedFlushSkipsTheImage) {
  MemImage img(1 << 20);
  auto c = ctx(1 << 20, false);  // simple replies carry the error
  c.policy.discard = DiscardMode::kUnmap;
  c.policy.flushes = std::make_shared<FlushGeneration>();
  auto other = c;  // a second connection of the same export
  auto flush = [&](const CommandContext& on) { return simple_error(execute(img, on, req(kCmdFlush, 0, 0), {})); };
  EXPECT_EQ(flush(c), 0u);
  EXPECT_EQ(img.flushes(), 1u);  // the first flush always reaches the image
  EXPECT_EQ(flush(c), 0u);
  EXPECT_EQ(flush(other), 0u);
  EXPECT_EQ(img.flushes(), 1u);
  EXPECT_EQ(c.policy.flushes->skipped(), 2u);
  Bytes data(4096, 7);
  EXPECT_EQ(simple_error(execute(img, c, req(kCmdWrite, 0, 4096), data)), 0u);
  EXPECT_EQ(flush(other), 0u);  // a write on one connection, the flush on another
  EXPECT_EQ(img.flushes(), 2u);
  EXPECT_EQ(simple_error(execute(img, other, req(kCmdTrim, 0, 4096), {})), 0u);
  EXPECT_EQ(flush(c), 0u);
  EXPECT_EQ(img.flushes(), 3u);
  EXPECT_EQ(simple_error(execute(img, c, req(kCmdWriteZeroes, 8192, 4096), {})), 0u);
  EXPECT_EQ(flush(c), 0u);
  EXPECT_EQ(img.flushes(), 4u);
  EXPECT_EQ(flush(c), 0u);
  EXPECT_EQ(img.flushes(), 4u);
  // A failed flush: the ones after it reach the image, even with no write in between.
  EXPECT_EQ(simple_error(execute(img, c, req(kCmdWrite, 0, 4096), data)), 0u);
  img.fail_flushes(1);
  EXPECT_EQ(flush(c), kErrIo);
  EXPECT_EQ(flush(c), 0u);
  EXPECT_EQ(flush(c), 0u);
  EXPECT_EQ(img.flushes(), 7u);
  // Without a FlushGeneration every flush reaches the image.
  auto plain = ctx(1 << 20, false);
  EXPECT_EQ(flush(plain), 0u);
  EXPECT_EQ(flush(plain), 0u);
  EXPECT_EQ(img.flushes(), 9u);
}

TEST(nbd_execute, WriteZeroesFlags) {
  MemImage img(1 << 20);
  auto c = ctx(1 << 20);
  (void)execute(img, c, req(kCmdWriteZeroes, 0, 8192), {});
  ASSERT_TRUE(img.last_zero_flags());
  EXPECT_FALSE(img.last_zero_flags()->may_unmap);  // --discard=ignore never unmaps
  c.policy.discard = DiscardMode::kUnmap;
  (void)execute(img, c, req(kCmdWriteZeroes, 0, 8192, kCmdFlagFua), {});
  EXPECT_TRUE(img.last_zero_flags()->may_unmap);
  EXPECT_TRUE(img.last_zero_flags()->fua);
  (void)execute(img, c, req(kCmdWriteZeroes, 0, 8192, kCmdFlagNoHole), {});
  EXPECT_FALSE(img.last_zero_flags()->may_unmap);
  img.set_fast_zero_supported(false);
  Reply r = execute(img, c, req(kCmdWriteZeroes, 0, 8192, kCmdFlagFastZero), {});
  EXPECT_EQ(chunk_error(r), kErrNotSup);
  EXPECT_TRUE(img.last_zero_flags()->fast_only);
}

TEST(nbd_execute, DetectZeroes) {
  MemImage img(1 << 20);
  auto c = ctx(1 << 20);
  Bytes zeros(8192, 0);
  (void)execute(img, c, req(kCmdWrite, 0, 8192), zeros);
  EXPECT_EQ(img.zero_calls(), 0u);  // off by default
  EXPECT_TRUE(img.allocated(0));
  c.policy.detect_zeroes = DetectZeroes::kOn;
  (void)execute(img, c, req(kCmdWrite, 16384, 8192), zeros);
  EXPECT_EQ(img.zero_calls(), 1u);
  EXPECT_FALSE(img.last_zero_flags()->may_unmap);
  c.policy.detect_zeroes = DetectZeroes::kUnmap;
  c.policy.discard = DiscardMode::kUnmap;
  (void)execute(img, c, req(kCmdWrite, 0, 8192), zeros);
  EXPECT_TRUE(img.last_zero_flags()->may_unmap);
  EXPECT_FALSE(img.allocated(0));
  Bytes some(8192, 0);
  some[8191] = 1;
  (void)execute(img, c, req(kCmdWrite, 0, 8192), some);
  EXPECT_EQ(img.zero_calls(), 2u);
  EXPECT_TRUE(img.allocated(4096));
}

TEST(nbd_execute, ErrorRepliesFollowTheSession) {
  auto sr = ctx(1 << 20);
  EXPECT_EQ(chunk_error(error_reply(sr, req(kCmdWrite, 0, 1), kErrPerm, "ro")), kErrPerm);
  auto simple = ctx(1 << 20, false);
  EXPECT_EQ(simple_error(error_reply(simple, req(kCmdRead, 0, 1), kErrInval, "x")), kErrInval);
}

TEST(nbd_execute, StatusMapping) {
  EXPECT_EQ(nbd_error(io_error(ENOSPC, "x")), kErrNoSpc);
  EXPECT_EQ(nbd_error(io_error(EDQUOT, "x")), kErrNoSpc);
  EXPECT_EQ(nbd_error(io_error(EFBIG, "x")), kErrNoSpc);
  EXPECT_EQ(nbd_error(io_error(EBADF, "x")), kErrIo);
  EXPECT_EQ(nbd_error(corrupt("x")), kErrIo);
  EXPECT_EQ(nbd_error(invalid("x")), kErrInval);
  EXPECT_EQ(nbd_error(Status(Code::kReadOnly, "x")), kErrPerm);
  EXPECT_EQ(nbd_error(unsupported("x")), kErrNotSup);
}

// Random request headers: validation never crashes, everything it accepts lies inside the
// export, and executing what it accepts on a small image gives exactly one final reply.
// Seed from KEEL_SEED, printed.
TEST(nbd_execute, RandomRequestsAreCheckedBeforeTheyRun) {
  const char* env = std::getenv("KEEL_SEED");
  uint64_t seed = env ? std::strtoull(env, nullptr, 10) : std::random_device{}();
  std::printf("seed %llu (replay with KEEL_SEED)\n", static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  constexpr uint64_t kSize = 1 << 20;
  MemImage img(kSize);
  for (int i = 0; i < 20000; ++i) {
    auto c = ctx(kSize, rng() % 2, rng() % 4 == 0);
    RequestHeader h;
    h.type = static_cast<uint16_t>(rng() % 10);
    h.flags = static_cast<uint16_t>(rng() % 3 ? rng() % 32 : rng());
    h.offset = rng() % 3 ? rng() % (kSize + 8192) : rng();
    h.length = static_cast<uint32_t>(rng() % 3 ? rng() % 70000 : rng());
    h.cookie = 42;
    RequestError err = check_request(c, h);
    if (err) continue;
    if (h.type != kCmdFlush) {  // FLUSH's offset and length are reserved and ignored
      ASSERT_LE(h.offset + h.length, kSize) << "seed " << seed;
    }
    if (h.type == kCmdRead || h.type == kCmdWrite) {
      ASSERT_LE(h.length, 32u << 20);
    }
    Bytes payload(h.type == kCmdWrite ? h.length : 0, 0x5c);
    Reply r = execute(img, c, h, payload);
    Bytes f = r.flatten();
    ASSERT_GE(f.size(), 16u) << "seed " << seed;
    if (format::get_be32(f.data()) == kSimpleReplyMagic) continue;
    auto cs = chunks(r);
    ASSERT_FALSE(cs.empty());
    for (size_t k = 0; k + 1 < cs.size(); ++k) EXPECT_FALSE(cs[k].flags & kReplyFlagDone);
    EXPECT_TRUE(cs.back().flags & kReplyFlagDone) << "seed " << seed;
  }
}

}  // namespace
}  // namespace keel::nbd
