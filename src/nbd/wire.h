// NBD wire encoding and decoding on plain byte buffers: the handshake greeting, option headers
// and replies, option payloads (INFO/GO, META_CONTEXT), request headers. No I/O happens here, so
// every parser can be unit-tested and fuzzed on bytes. Parsers bound every length they read.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <tl/expected.hpp>

#include "nbd/protocol.h"

namespace keel::nbd {

// Appends big-endian fields to a growing buffer.
class ByteWriter {
 public:
  explicit ByteWriter(std::vector<uint8_t>& out) : out_(out) {}
  ByteWriter& u16(uint16_t v);
  ByteWriter& u32(uint32_t v);
  ByteWriter& u64(uint64_t v);
  ByteWriter& bytes(std::span<const uint8_t> b);
  ByteWriter& str(std::string_view s);
  ByteWriter& zeroes(size_t n);

 private:
  std::vector<uint8_t>& out_;
};

// Reads big-endian fields from a buffer; every read is bounds-checked and a failed read latches
// ok() to false (values read after that are zero).
class ByteReader {
 public:
  explicit ByteReader(std::span<const uint8_t> in) : in_(in) {}
  uint16_t u16();
  uint32_t u32();
  uint64_t u64();
  // Reads n bytes as a string; fails without allocating if fewer than n remain.
  std::string str(uint64_t n);
  bool ok() const { return ok_; }
  size_t remaining() const { return in_.size() - pos_; }

 private:
  bool take(size_t n);
  std::span<const uint8_t> in_;
  size_t pos_ = 0;
  bool ok_ = true;
};

// --- Handshake ---------------------------------------------------------------------------------

inline constexpr size_t kGreetingBytes = 18;
inline constexpr size_t kOptionHeaderBytes = 16;

// S: NBDMAGIC, IHAVEOPT, u16 handshake flags.
std::vector<uint8_t> encode_greeting(uint16_t handshake_flags);

struct OptionHeader {
  uint64_t magic = 0;
  uint32_t option = 0;
  uint32_t length = 0;
};
OptionHeader decode_option_header(std::span<const uint8_t, kOptionHeaderBytes> b);
std::vector<uint8_t> encode_option_header(const OptionHeader& h);  // for tests and clients

// One option reply: magic, option, reply type, u32 length, data.
void append_option_reply(std::vector<uint8_t>& out, uint32_t option, uint32_t reply_type,
                         std::span<const uint8_t> data = {});
void append_option_error(std::vector<uint8_t>& out, uint32_t option, uint32_t reply_type,
                         std::string_view message);

// The reply to NBD_OPT_EXPORT_NAME: u64 size, u16 flags, 124 zero bytes unless no_zeroes.
std::vector<uint8_t> encode_export_name_reply(uint64_t size, uint16_t eflags, bool no_zeroes);

// A parse failure of an option payload: which option error to send and why.
struct OptionError {
  uint32_t reply_type = kRepErrInvalid;
  std::string message;
};

// NBD_OPT_INFO / NBD_OPT_GO: u32 namelen, name, u16 count, count x u16 info type.
struct InfoRequest {
  std::string name;
  std::vector<uint16_t> infos;
};
tl::expected<InfoRequest, OptionError> parse_info_request(std::span<const uint8_t> data);
std::vector<uint8_t> encode_info_request(const InfoRequest& r);  // for tests and clients

// NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT: u32 namelen, name, u32 count, count x
// (u32 len, query).
struct MetaContextRequest {
  std::string name;
  std::vector<std::string> queries;
};
tl::expected<MetaContextRequest, OptionError> parse_meta_context_request(
    std::span<const uint8_t> data);
std::vector<uint8_t> encode_meta_context_request(const MetaContextRequest& r);

// --- Transmission ------------------------------------------------------------------------------

struct RequestHeader {
  uint32_t magic = kRequestMagic;
  uint16_t flags = 0;
  uint16_t type = 0;
  uint64_t cookie = 0;
  uint64_t offset = 0;
  uint32_t length = 0;
};
RequestHeader decode_request_header(std::span<const uint8_t, kRequestHeaderBytes> b);
std::vector<uint8_t> encode_request_header(const RequestHeader& h);

// Names for logs.
std::string option_name(uint32_t option);
std::string command_name(uint16_t type);

}  // namespace keel::nbd
