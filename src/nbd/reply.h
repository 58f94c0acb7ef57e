// Transmission-phase replies as byte buffers: simple replies and structured reply chunks
// (OFFSET_DATA, OFFSET_HOLE, BLOCK_STATUS, ERROR, ERROR_OFFSET, NONE).
//
// A Reply is everything sent for one request, in order. Headers and small payloads live in
// `meta`; read data lives in `data` and is referenced, not copied, so a 32 MiB read is sent
// straight from the buffer it was read into (writev).
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace keel::nbd {

struct Reply {
  struct Piece {
    bool in_data = false;  // false: a range of `meta`; true: a range of `data`
    size_t offset = 0;
    size_t length = 0;
  };
  std::vector<uint8_t> meta;
  std::vector<uint8_t> data;
  std::vector<Piece> pieces;

  // Appends bytes to `meta` and to the send order.
  void add_meta(std::span<const uint8_t> bytes);
  // Sends data[offset, offset+length) next.
  void add_data(size_t offset, size_t length);
  size_t total_bytes() const;
  // The bytes on the wire, concatenated (for tests).
  std::vector<uint8_t> flatten() const;
};

struct BlockExtent {
  uint32_t length = 0;
  uint32_t flags = 0;
};

// Simple reply: magic, error, cookie; then data[0, data_length) if error == 0 and data_length.
void add_simple_reply(Reply& r, uint64_t cookie, uint32_t error, size_t data_length = 0);

void add_chunk_header(Reply& r, uint16_t flags, uint16_t type, uint64_t cookie, uint32_t length);
void add_none_chunk(Reply& r, uint64_t cookie);
// OFFSET_DATA with the bytes data[data_offset, data_offset+length), describing export `offset`.
void add_data_chunk(Reply& r, uint16_t flags, uint64_t cookie, uint64_t offset,
                    size_t data_offset, uint32_t length);
void add_hole_chunk(Reply& r, uint16_t flags, uint64_t cookie, uint64_t offset, uint32_t length);
// BLOCK_STATUS for one context; REQUIRES: extents not empty.
void add_block_status_chunk(Reply& r, uint16_t flags, uint64_t cookie, uint32_t context_id,
                            std::span<const BlockExtent> extents);
// ERROR (always final).
void add_error_chunk(Reply& r, uint64_t cookie, uint32_t error, std::string_view message);
// ERROR_OFFSET (always final here).
void add_error_offset_chunk(Reply& r, uint64_t cookie, uint32_t error, std::string_view message,
                            uint64_t offset);

}  // namespace keel::nbd
