// Transmission-phase commands on a keel::Image (see commands.h).
#include "nbd/commands.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "keel/zero_scan.h"
#include "nbd/meta_context.h"

namespace keel::nbd {
namespace {

constexpr uint16_t kKnownCmdFlags =
    kCmdFlagFua | kCmdFlagNoHole | kCmdFlagDf | kCmdFlagReqOne | kCmdFlagFastZero;

RequestError fail(uint32_t error, std::string message) { return {error, std::move(message)}; }

bool past_end(const CommandContext& ctx, const RequestHeader& h) {
  return h.offset > ctx.export_size || h.length > ctx.export_size - h.offset;
}

// Reply for a command other than READ that succeeded: a simple reply, allowed with structured
// replies too (and what qemu-nbd sends).
Reply ok_reply(uint64_t cookie) {
  Reply r;
  add_simple_reply(r, cookie, 0);
  return r;
}

Reply status_reply(const CommandContext& ctx, const RequestHeader& h, const Status& s) {
  if (s.is_ok()) return ok_reply(h.cookie);
  return error_reply(ctx, h, nbd_error(s), s.message());
}

// A run of the read range that is either known zeros (a hole) or data to read.
struct Segment {
  uint64_t offset;
  uint64_t length;
  bool hole;
};

// Splits [offset, offset+length) into holes and data with block_status, merging neighbours of
// the same kind; the tail becomes one data segment if block_status fails or chunks run out.
std::vector<Segment> plan_read(Image& image, uint64_t offset, uint64_t length) {
  std::vector<Segment> segs;
  const uint64_t end = offset + length;
  uint64_t pos = offset;
  while (pos < end) {
    if (segs.size() + 1 >= kMaxReadChunks) {
      segs.push_back({pos, end - pos, false});
      break;
    }
    auto bs = image.block_status(pos, end - pos);
    if (!bs || bs->length == 0 || bs->offset != pos) {
      if (!segs.empty() && !segs.back().hole) {
        segs.back().length += end - pos;
      } else {
        segs.push_back({pos, end - pos, false});
      }
      break;
    }
    uint64_t len = std::min(bs->length, end - pos);
    bool hole = bs->zero;
    if (!segs.empty() && segs.back().hole == hole) {
      segs.back().length += len;
    } else {
      segs.push_back({pos, len, hole});
    }
    pos += len;
  }
  return segs;
}

Reply do_read(Image& image, const CommandContext& ctx, const RequestHeader& h) {
  Reply r;
  const uint32_t len = h.length;
  if (!ctx.session.structured_replies) {
    r.data.resize(len);
    Status s = image.read(h.offset, r.data);
    if (!s.is_ok()) {
      Reply e;
      add_simple_reply(e, h.cookie, nbd_error(s));
      return e;
    }
    add_simple_reply(r, h.cookie, 0, len);
    return r;
  }
  if (len == 0) {
    add_none_chunk(r, h.cookie);
    return r;
  }
  std::vector<Segment> segs = plan_read(image, h.offset, len);
  if ((h.flags & kCmdFlagDf) && segs.size() > 1) segs = {{h.offset, len, false}};
  bool any_data = std::any_of(segs.begin(), segs.end(), [](const Segment& s) { return !s.hole; });
  if (any_data) r.data.resize(len);
  for (const auto& seg : segs) {
    if (seg.hole) continue;
    size_t at = static_cast<size_t>(seg.offset - h.offset);
    Status s = image.read(seg.offset, std::span<uint8_t>(r.data.data() + at, seg.length));
    if (!s.is_ok()) {
      Reply e;
      add_error_offset_chunk(e, h.cookie, nbd_error(s), s.message(), seg.offset);
      return e;
    }
  }
  for (size_t i = 0; i < segs.size(); ++i) {
    const auto& seg = segs[i];
    uint16_t flags = i + 1 == segs.size() ? kReplyFlagDone : 0;
    uint32_t seg_len = static_cast<uint32_t>(seg.length);
    if (seg.hole) {
      add_hole_chunk(r, flags, h.cookie, seg.offset, seg_len);
    } else {
      add_data_chunk(r, flags, h.cookie, seg.offset, static_cast<size_t>(seg.offset - h.offset),
                     seg_len);
    }
  }
  return r;
}

Reply do_write(Image& image, const CommandContext& ctx, const RequestHeader& h,
               std::vector<uint8_t> payload) {
  const bool fua = (h.flags & kCmdFlagFua) != 0;
  if (ctx.policy.detect_zeroes != DetectZeroes::kOff && is_zero(payload.data(), payload.size())) {
    ZeroFlags zf;
    zf.may_unmap = ctx.policy.detect_zeroes == DetectZeroes::kUnmap &&
                   ctx.policy.discard == DiscardMode::kUnmap;
    zf.fua = fua;
    return status_reply(ctx, h, image.write_zeroes(h.offset, h.length, zf));
  }
  return status_reply(ctx, h, image.write(h.offset, payload, fua));
}

Reply do_trim(Image& image, const CommandContext& ctx, const RequestHeader& h) {
  if (ctx.policy.discard == DiscardMode::kIgnore || h.length == 0) return ok_reply(h.cookie);
  Status s = image.discard(h.offset, h.length);
  if (s.is_ok() && (h.flags & kCmdFlagFua)) s = image.flush();
  return status_reply(ctx, h, s);
}

Reply do_write_zeroes(Image& image, const CommandContext& ctx, const RequestHeader& h) {
  if (h.length == 0) return ok_reply(h.cookie);
  ZeroFlags zf;
  zf.may_unmap = !(h.flags & kCmdFlagNoHole) && ctx.policy.discard == DiscardMode::kUnmap;
  zf.fua = (h.flags & kCmdFlagFua) != 0;
  zf.fast_only = (h.flags & kCmdFlagFastZero) != 0;
  Status s = image.write_zeroes(h.offset, h.length, zf);
  if (!s.is_ok() && zf.fast_only && s.code() == Code::kUnsupported)
    return error_reply(ctx, h, kErrNotSup, "fast zeroing is not possible here");
  return status_reply(ctx, h, s);
}

// One BLOCK_STATUS chunk per selected context, in id order, DONE on the last (as qemu-nbd);
// an error ends the reply with an ERROR chunk.
Reply do_block_status(Image& image, const CommandContext& ctx, const RequestHeader& h) {
  const size_t max_extents = (h.flags & kCmdFlagReqOne) ? 1 : kMaxBlockStatusExtents;
  const MetaSelection& sel = ctx.session.meta;
  size_t remaining = sel.count();
  Reply r;
  auto add = [&](uint32_t id, const Result<std::vector<BlockExtent>>& extents) {
    if (!extents) {
      add_error_chunk(r, h.cookie, nbd_error(extents.error()), extents.error().message());
      return false;
    }
    add_block_status_chunk(r, --remaining == 0 ? kReplyFlagDone : 0, h.cookie, id, *extents);
    return true;
  };
  if (sel.base_allocation &&
      !add(kMetaIdBaseAllocation,
           block_status_extents(image, ExtentKind::kAllocation, h.offset, h.length, max_extents)))
    return r;
  if (sel.allocation_depth &&
      !add(kMetaIdAllocationDepth,
           block_status_extents(image, ExtentKind::kDepth, h.offset, h.length, max_extents)))
    return r;
  for (uint32_t i : sel.bitmaps) {
    Result<std::vector<BlockExtent>> extents =
        error(invalid(fmt::format("bitmap {} is not served", i)));
    if (ctx.policy.bitmaps) {
      auto bits = ctx.policy.bitmaps->read(i);
      if (bits) {
        extents = bitmap_extents(**bits, h.offset, h.length, max_extents);
      } else {
        extents = error(bits.error());
      }
    }
    if (!add(kMetaIdDirtyBitmap + i, extents)) return r;
  }
  return r;
}

}  // namespace

uint32_t nbd_error(const Status& s) {
  switch (s.code()) {
    case Code::kOk: return 0;
    case Code::kInvalidArgument: return kErrInval;
    case Code::kReadOnly: return kErrPerm;
    case Code::kUnsupported: return kErrNotSup;
    default: break;
  }
  switch (s.err()) {
    case ENOSPC:
    case EDQUOT:
    case EFBIG: return kErrNoSpc;
    case EPERM:
    case EROFS:
    case EACCES: return kErrPerm;
    case ENOMEM: return kErrNoMem;
    case EINVAL: return kErrInval;
    case EOVERFLOW: return kErrOverflow;
    case ESHUTDOWN: return kErrShutdown;
    default: return kErrIo;
  }
}

uint64_t request_buffer_bytes(const RequestHeader& h) {
  if (h.type == kCmdRead || h.type == kCmdWrite)
    return std::min<uint64_t>(h.length, limits::kMaxRequestBytes);
  return 0;
}

RequestError check_request(const CommandContext& ctx, const RequestHeader& h) {
  if (h.flags & ~kKnownCmdFlags) return fail(kErrInval, fmt::format("unknown flags {:#x}", h.flags));
  uint16_t allowed = kCmdFlagFua;
  bool writes = false;
  bool payload_limit = false;
  uint32_t range_error = kErrInval;
  switch (h.type) {
    case kCmdRead:
      if (ctx.session.eflags & kEflagSendDf) allowed |= kCmdFlagDf;
      payload_limit = true;
      break;
    case kCmdWrite:
      writes = true;
      payload_limit = true;
      range_error = kErrNoSpc;
      break;
    case kCmdFlush:
      break;
    case kCmdTrim:
      writes = true;
      break;
    case kCmdCache:
      break;
    case kCmdWriteZeroes:
      allowed |= kCmdFlagNoHole | kCmdFlagFastZero;
      writes = true;
      range_error = kErrNoSpc;
      break;
    case kCmdBlockStatus:
      allowed |= kCmdFlagReqOne;
      if (ctx.session.meta.empty())
        return fail(kErrInval, "no metadata context was negotiated");
      if (h.length == 0) return fail(kErrInval, "block status of zero bytes");
      break;
    default:
      return fail(kErrInval, fmt::format("unknown command {}", h.type));
  }
  if (h.flags & ~allowed)
    return fail(kErrInval, fmt::format("flags {:#x} not valid for {}", h.flags, command_name(h.type)));
  if (writes && ctx.read_only) return fail(kErrPerm, "export is read-only");
  if (payload_limit && h.length > limits::kMaxRequestBytes)
    return fail(kErrInval, fmt::format("request of {} bytes exceeds the maximum of {}", h.length,
                                       limits::kMaxRequestBytes));
  if (h.type != kCmdFlush && past_end(ctx, h))
    return fail(range_error, "operation past EOF");
  return {};
}

Reply error_reply(const CommandContext& ctx, const RequestHeader& h, uint32_t error,
                  std::string_view message) {
  Reply r;
  if (ctx.session.structured_replies) {
    add_error_chunk(r, h.cookie, error, message);
  } else {
    add_simple_reply(r, h.cookie, error);
  }
  return r;
}

namespace {

// A write, trim or write-zeroes: counted for the flushes once it is done, before its reply.
Reply counted(const CommandContext& ctx, Reply r) {
  if (ctx.policy.flushes) ctx.policy.flushes->write_completed();
  return r;
}

Status flush(Image& image, const CommandContext& ctx) {
  return ctx.policy.flushes ? ctx.policy.flushes->flush(image) : image.flush();
}

}  // namespace

Reply execute(Image& image, const CommandContext& ctx, const RequestHeader& h,
              std::vector<uint8_t> payload) {
  switch (h.type) {
    case kCmdRead: return do_read(image, ctx, h);
    case kCmdWrite: return counted(ctx, do_write(image, ctx, h, std::move(payload)));
    case kCmdFlush: return status_reply(ctx, h, flush(image, ctx));
    case kCmdTrim: return counted(ctx, do_trim(image, ctx, h));
    case kCmdCache: return ok_reply(h.cookie);
    case kCmdWriteZeroes: return counted(ctx, do_write_zeroes(image, ctx, h));
    case kCmdBlockStatus: return do_block_status(image, ctx, h);
    default: return error_reply(ctx, h, kErrInval, "unknown command");
  }
}

}  // namespace keel::nbd
