// Transmission-phase reply encoding (see reply.h).
#include "nbd/reply.h"

#include "nbd/protocol.h"
#include "nbd/wire.h"

namespace keel::nbd {

void Reply::add_meta(std::span<const uint8_t> bytes) {
  if (bytes.empty()) return;
  // Extend the previous piece when it is the tail of `meta` (the usual case: header + payload).
  if (!pieces.empty() && !pieces.back().in_data &&
      pieces.back().offset + pieces.back().length == meta.size()) {
    pieces.back().length += bytes.size();
  } else {
    pieces.push_back(Piece{false, meta.size(), bytes.size()});
  }
  meta.insert(meta.end(), bytes.begin(), bytes.end());
}

void Reply::add_data(size_t offset, size_t length) {
  if (length == 0) return;
  pieces.push_back(Piece{true, offset, length});
}

size_t Reply::total_bytes() const {
  size_t n = 0;
  for (const auto& p : pieces) n += p.length;
  return n;
}

std::vector<uint8_t> Reply::flatten() const {
  std::vector<uint8_t> out;
  out.reserve(total_bytes());
  for (const auto& p : pieces) {
    const auto& src = p.in_data ? data : meta;
    out.insert(out.end(), src.begin() + static_cast<ptrdiff_t>(p.offset),
               src.begin() + static_cast<ptrdiff_t>(p.offset + p.length));
  }
  return out;
}

void add_simple_reply(Reply& r, uint64_t cookie, uint32_t error, size_t data_length) {
  std::vector<uint8_t> h;
  ByteWriter(h).u32(kSimpleReplyMagic).u32(error).u64(cookie);
  r.add_meta(h);
  if (error == 0) r.add_data(0, data_length);
}

void add_chunk_header(Reply& r, uint16_t flags, uint16_t type, uint64_t cookie, uint32_t length) {
  std::vector<uint8_t> h;
  ByteWriter(h).u32(kStructuredReplyMagic).u16(flags).u16(type).u64(cookie).u32(length);
  r.add_meta(h);
}

void add_none_chunk(Reply& r, uint64_t cookie) {
  add_chunk_header(r, kReplyFlagDone, kChunkNone, cookie, 0);
}

void add_data_chunk(Reply& r, uint16_t flags, uint64_t cookie, uint64_t offset,
                    size_t data_offset, uint32_t length) {
  add_chunk_header(r, flags, kChunkOffsetData, cookie, 8 + length);
  std::vector<uint8_t> p;
  ByteWriter(p).u64(offset);
  r.add_meta(p);
  r.add_data(data_offset, length);
}

void add_hole_chunk(Reply& r, uint16_t flags, uint64_t cookie, uint64_t offset, uint32_t length) {
  add_chunk_header(r, flags, kChunkOffsetHole, cookie, 12);
  std::vector<uint8_t> p;
  ByteWriter(p).u64(offset).u32(length);
  r.add_meta(p);
}

void add_block_status_chunk(Reply& r, uint16_t flags, uint64_t cookie, uint32_t context_id,
                            std::span<const BlockExtent> extents) {
  add_chunk_header(r, flags, kChunkBlockStatus, cookie,
                   static_cast<uint32_t>(4 + 8 * extents.size()));
  std::vector<uint8_t> p;
  p.reserve(4 + 8 * extents.size());
  ByteWriter w(p);
  w.u32(context_id);
  for (const auto& e : extents) w.u32(e.length).u32(e.flags);
  r.add_meta(p);
}

namespace {

std::string_view clip(std::string_view message) {
  return message.size() > kMaxErrorMessage ? message.substr(0, kMaxErrorMessage) : message;
}

}  // namespace

void add_error_chunk(Reply& r, uint64_t cookie, uint32_t error, std::string_view message) {
  message = clip(message);
  add_chunk_header(r, kReplyFlagDone, kChunkError, cookie,
                   static_cast<uint32_t>(6 + message.size()));
  std::vector<uint8_t> p;
  ByteWriter(p).u32(error).u16(static_cast<uint16_t>(message.size())).str(message);
  r.add_meta(p);
}

void add_error_offset_chunk(Reply& r, uint64_t cookie, uint32_t error, std::string_view message,
                            uint64_t offset) {
  message = clip(message);
  add_chunk_header(r, kReplyFlagDone, kChunkErrorOffset, cookie,
                   static_cast<uint32_t>(14 + message.size()));
  std::vector<uint8_t> p;
  ByteWriter(p).u32(error).u16(static_cast<uint16_t>(message.size())).str(message).u64(offset);
  r.add_meta(p);
}

}  // namespace keel::nbd
