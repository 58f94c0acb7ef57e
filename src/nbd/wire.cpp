// NBD wire encoding and decoding on byte buffers (see wire.h).
#include "nbd/wire.h"

#include <fmt/format.h>

#include "keel/endian.h"

namespace keel::nbd {

ByteWriter& ByteWriter::u16(uint16_t v) {
  uint8_t b[2];
  put_be16(b, v);
  out_.insert(out_.end(), b, b + 2);
  return *this;
}
ByteWriter& ByteWriter::u32(uint32_t v) {
  uint8_t b[4];
  put_be32(b, v);
  out_.insert(out_.end(), b, b + 4);
  return *this;
}
ByteWriter& ByteWriter::u64(uint64_t v) {
  uint8_t b[8];
  put_be64(b, v);
  out_.insert(out_.end(), b, b + 8);
  return *this;
}
ByteWriter& ByteWriter::bytes(std::span<const uint8_t> b) {
  out_.insert(out_.end(), b.begin(), b.end());
  return *this;
}
ByteWriter& ByteWriter::str(std::string_view s) {
  out_.insert(out_.end(), s.begin(), s.end());
  return *this;
}
ByteWriter& ByteWriter::zeroes(size_t n) {
  out_.insert(out_.end(), n, 0);
  return *this;
}

bool ByteReader::take(size_t n) {
  if (!ok_ || remaining() < n) {
    ok_ = false;
    return false;
  }
  return true;
}
uint16_t ByteReader::u16() {
  if (!take(2)) return 0;
  uint16_t v = get_be16(in_.data() + pos_);
  pos_ += 2;
  return v;
}
uint32_t ByteReader::u32() {
  if (!take(4)) return 0;
  uint32_t v = get_be32(in_.data() + pos_);
  pos_ += 4;
  return v;
}
uint64_t ByteReader::u64() {
  if (!take(8)) return 0;
  uint64_t v = get_be64(in_.data() + pos_);
  pos_ += 8;
  return v;
}
std::string ByteReader::str(uint64_t n) {
  if (n > remaining()) {
    ok_ = false;
    return {};
  }
  if (!take(static_cast<size_t>(n))) return {};
  std::string s(reinterpret_cast<const char*>(in_.data() + pos_), static_cast<size_t>(n));
  pos_ += static_cast<size_t>(n);
  return s;
}

std::vector<uint8_t> encode_greeting(uint16_t handshake_flags) {
  std::vector<uint8_t> out;
  ByteWriter(out).u64(kNbdMagic).u64(kOptMagic).u16(handshake_flags);
  return out;
}

OptionHeader decode_option_header(std::span<const uint8_t, kOptionHeaderBytes> b) {
  return OptionHeader{get_be64(b.data()), get_be32(b.data() + 8), get_be32(b.data() + 12)};
}

std::vector<uint8_t> encode_option_header(const OptionHeader& h) {
  std::vector<uint8_t> out;
  ByteWriter(out).u64(h.magic).u32(h.option).u32(h.length);
  return out;
}

void append_option_reply(std::vector<uint8_t>& out, uint32_t option, uint32_t reply_type,
                         std::span<const uint8_t> data) {
  ByteWriter(out)
      .u64(kOptReplyMagic)
      .u32(option)
      .u32(reply_type)
      .u32(static_cast<uint32_t>(data.size()))
      .bytes(data);
}

void append_option_error(std::vector<uint8_t>& out, uint32_t option, uint32_t reply_type,
                         std::string_view message) {
  if (message.size() > kMaxErrorMessage) message = message.substr(0, kMaxErrorMessage);
  append_option_reply(out, option, reply_type,
                      {reinterpret_cast<const uint8_t*>(message.data()), message.size()});
}

std::vector<uint8_t> encode_export_name_reply(uint64_t size, uint16_t eflags, bool no_zeroes) {
  std::vector<uint8_t> out;
  ByteWriter w(out);
  w.u64(size).u16(eflags);
  if (!no_zeroes) w.zeroes(124);
  return out;
}

namespace {

tl::unexpected<OptionError> option_error(uint32_t type, std::string message) {
  return tl::unexpected<OptionError>(OptionError{type, std::move(message)});
}

}  // namespace

tl::expected<InfoRequest, OptionError> parse_info_request(std::span<const uint8_t> data) {
  ByteReader r(data);
  uint32_t name_len = r.u32();
  if (!r.ok()) return option_error(kRepErrInvalid, "option too short for its export name length");
  if (name_len > limits::kMaxNbdExportName)
    return option_error(kRepErrInvalid, fmt::format("export name of {} bytes is too long", name_len));
  InfoRequest req;
  req.name = r.str(name_len);
  uint16_t count = r.u16();
  if (!r.ok()) return option_error(kRepErrInvalid, "option too short for its export name");
  if (r.remaining() != size_t{count} * 2)
    return option_error(kRepErrInvalid,
                        fmt::format("option length does not match {} information requests", count));
  req.infos.reserve(count);
  for (uint16_t i = 0; i < count; ++i) req.infos.push_back(r.u16());
  return req;
}

std::vector<uint8_t> encode_info_request(const InfoRequest& r) {
  std::vector<uint8_t> out;
  ByteWriter w(out);
  w.u32(static_cast<uint32_t>(r.name.size())).str(r.name).u16(static_cast<uint16_t>(r.infos.size()));
  for (uint16_t i : r.infos) w.u16(i);
  return out;
}

tl::expected<MetaContextRequest, OptionError> parse_meta_context_request(
    std::span<const uint8_t> data) {
  ByteReader r(data);
  uint32_t name_len = r.u32();
  if (!r.ok()) return option_error(kRepErrInvalid, "option too short for its export name length");
  if (name_len > limits::kMaxNbdExportName)
    return option_error(kRepErrInvalid, fmt::format("export name of {} bytes is too long", name_len));
  MetaContextRequest req;
  req.name = r.str(name_len);
  uint32_t count = r.u32();
  if (!r.ok()) return option_error(kRepErrInvalid, "option too short for its query count");
  if (count > limits::kMaxNbdMetaQueries)
    return option_error(kRepErrTooBig, fmt::format("{} queries, at most {} are accepted", count,
                                                   limits::kMaxNbdMetaQueries));
  for (uint32_t i = 0; i < count; ++i) {
    uint32_t len = r.u32();
    if (!r.ok() || len > r.remaining())
      return option_error(kRepErrInvalid, fmt::format("query {} runs past the option", i));
    if (len > limits::kMaxNbdExportName)
      return option_error(kRepErrInvalid, fmt::format("query {} is too long", i));
    req.queries.push_back(r.str(len));
  }
  if (r.remaining() != 0)
    return option_error(kRepErrInvalid,
                        fmt::format("{} stray bytes after the last query", r.remaining()));
  return req;
}

std::vector<uint8_t> encode_meta_context_request(const MetaContextRequest& r) {
  std::vector<uint8_t> out;
  ByteWriter w(out);
  w.u32(static_cast<uint32_t>(r.name.size())).str(r.name).u32(static_cast<uint32_t>(r.queries.size()));
  for (const auto& q : r.queries) w.u32(static_cast<uint32_t>(q.size())).str(q);
  return out;
}

RequestHeader decode_request_header(std::span<const uint8_t, kRequestHeaderBytes> b) {
  const uint8_t* p = b.data();
  return RequestHeader{get_be32(p), get_be16(p + 4), get_be16(p + 6), get_be64(p + 8),
                       get_be64(p + 16), get_be32(p + 24)};
}

std::vector<uint8_t> encode_request_header(const RequestHeader& h) {
  std::vector<uint8_t> out;
  ByteWriter(out).u32(h.magic).u16(h.flags).u16(h.type).u64(h.cookie).u64(h.offset).u32(h.length);
  return out;
}

std::string option_name(uint32_t option) {
  switch (option) {
    case kOptExportName: return "EXPORT_NAME";
    case kOptAbort: return "ABORT";
    case kOptList: return "LIST";
    case kOptStartTls: return "STARTTLS";
    case kOptInfo: return "INFO";
    case kOptGo: return "GO";
    case kOptStructuredReply: return "STRUCTURED_REPLY";
    case kOptListMetaContext: return "LIST_META_CONTEXT";
    case kOptSetMetaContext: return "SET_META_CONTEXT";
    default: return fmt::format("option {}", option);
  }
}

std::string command_name(uint16_t type) {
  switch (type) {
    case kCmdRead: return "READ";
    case kCmdWrite: return "WRITE";
    case kCmdDisc: return "DISC";
    case kCmdFlush: return "FLUSH";
    case kCmdTrim: return "TRIM";
    case kCmdCache: return "CACHE";
    case kCmdWriteZeroes: return "WRITE_ZEROES";
    case kCmdBlockStatus: return "BLOCK_STATUS";
    default: return fmt::format("command {}", type);
  }
}

}  // namespace keel::nbd
