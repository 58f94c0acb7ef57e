// Option haggling state machine (see negotiation.h).
#include "nbd/negotiation.h"

#include <fmt/format.h>

#include "nbd/wire.h"

namespace keel::nbd {

uint16_t transmission_flags(const ExportConfig& cfg, bool structured_replies) {
  uint16_t f = kEflagHasFlags | kEflagSendFlush | kEflagSendFua | kEflagSendCache;
  if (structured_replies) f |= kEflagSendDf;
  if (cfg.read_only) {
    f |= kEflagReadOnly;
  } else {
    f |= kEflagSendTrim | kEflagSendWriteZeroes | kEflagSendFastZero;
  }
  if (cfg.multi_conn) f |= kEflagCanMultiConn;
  return f;
}

bool Negotiator::accept_client_flags(uint32_t flags) {
  if (flags & ~kKnownClientFlags) return false;
  no_zeroes_ = (flags & kClientFlagNoZeroes) != 0;
  return true;
}

Negotiator::Outcome Negotiator::error(uint32_t option, uint32_t type, std::string message) {
  Outcome out;
  append_option_error(out.reply, option, type, message);
  out.log = fmt::format("{}: {}", option_name(option), message);
  return out;
}

Negotiator::Outcome Negotiator::handle(uint32_t option, std::span<const uint8_t> data) {
  if (shutting_down_ && option != kOptAbort) {
    if (option == kOptExportName) return Outcome{{}, Next::kClose, "EXPORT_NAME while shutting down"};
    return error(option, kRepErrShutdown, "server is shutting down");
  }
  if (cfg_.tls_required && !tls_active_) return before_tls(option, data);
  switch (option) {
    case kOptExportName:
      return export_name(data);
    case kOptAbort: {
      Outcome out;
      append_option_reply(out.reply, option, kRepAck);
      out.next = Next::kClose;
      return out;
    }
    case kOptList: {
      if (!data.empty()) return error(option, kRepErrInvalid, "LIST takes no data");
      Outcome out;
      std::vector<uint8_t> entry;
      ByteWriter(entry).u32(static_cast<uint32_t>(cfg_.name.size())).str(cfg_.name).str(
          cfg_.description);
      append_option_reply(out.reply, option, kRepServer, entry);
      append_option_reply(out.reply, option, kRepAck);
      return out;
    }
    case kOptStartTls:
      if (cfg_.tls_required) return error(option, kRepErrInvalid, "TLS already enabled");
      return error(option, kRepErrPolicy, "TLS is not configured on this server");
    case kOptInfo:
    case kOptGo:
      return info_or_go(option, data);
    case kOptStructuredReply: {
      if (!data.empty()) return error(option, kRepErrInvalid, "STRUCTURED_REPLY takes no data");
      if (session_.structured_replies)
        return error(option, kRepErrInvalid, "structured replies already negotiated");
      session_.structured_replies = true;
      Outcome out;
      append_option_reply(out.reply, option, kRepAck);
      return out;
    }
    case kOptListMetaContext:
    case kOptSetMetaContext:
      return meta_context(option, data);
    default:
      return error(option, kRepErrUnsup, fmt::format("Unsupported option {}", option));
  }
}

Negotiator::Outcome Negotiator::before_tls(uint32_t option, std::span<const uint8_t> data) {
  if (option == kOptStartTls) return start_tls(data);
  if (option == kOptExportName)
    return Outcome{{}, Next::kClose, "EXPORT_NAME not permitted before TLS"};
  Outcome out = error(option, kRepErrTlsReqd,
                      fmt::format("Option {:#x} not permitted before TLS", option));
  if (option == kOptAbort) out.next = Next::kClose;
  return out;
}

Negotiator::Outcome Negotiator::start_tls(std::span<const uint8_t> data) {
  if (!data.empty()) {
    Outcome out = error(kOptStartTls, kRepErrInvalid, "STARTTLS takes no data");
    out.next = Next::kClose;
    return out;
  }
  Outcome out;
  append_option_reply(out.reply, kOptStartTls, kRepAck);
  out.next = Next::kStartTls;
  return out;
}

Negotiator::Outcome Negotiator::handle_oversized(uint32_t option, uint32_t length) {
  if (cfg_.tls_required && !tls_active_) {
    if (option == kOptStartTls)
      return Outcome{{}, Next::kClose, fmt::format("STARTTLS with {} bytes of data", length)};
    return before_tls(option, {});
  }
  if (option == kOptExportName)
    return Outcome{{}, Next::kClose, fmt::format("EXPORT_NAME of {} bytes", length)};
  return error(option, kRepErrTooBig,
               fmt::format("option data of {} bytes exceeds the limit of {}", length,
                           limits::kMaxNbdOptionBytes));
}

Negotiator::Outcome Negotiator::export_name(std::span<const uint8_t> data) {
  std::string name(data.begin(), data.end());
  if (name.size() > limits::kMaxNbdExportName || name != cfg_.name) {
    return Outcome{{}, Next::kClose,
                   fmt::format("EXPORT_NAME: export '{}' not present", name.substr(0, 256))};
  }
  session_.eflags = transmission_flags(cfg_, session_.structured_replies);
  Outcome out;
  out.reply = encode_export_name_reply(cfg_.size, session_.eflags, no_zeroes_);
  out.next = Next::kTransmission;
  return out;
}

Negotiator::Outcome Negotiator::info_or_go(uint32_t option, std::span<const uint8_t> data) {
  auto req = parse_info_request(data);
  if (!req) return error(option, req.error().reply_type, req.error().message);
  if (req->name != cfg_.name) {
    return error(option, kRepErrUnknown,
                 fmt::format("export '{}' not present", req->name.substr(0, 256)));
  }
  bool want_name = false;
  bool want_description = false;
  for (uint16_t i : req->infos) {
    want_name |= i == kInfoName;
    want_description |= i == kInfoDescription;
  }
  Outcome out;
  std::vector<uint8_t> item;
  if (want_name) {
    ByteWriter(item).u16(kInfoName).str(cfg_.name);
    append_option_reply(out.reply, option, kRepInfo, item);
  }
  if (want_description && !cfg_.description.empty()) {
    item.clear();
    ByteWriter(item).u16(kInfoDescription).str(cfg_.description);
    append_option_reply(out.reply, option, kRepInfo, item);
  }
  item.clear();
  ByteWriter(item).u16(kInfoBlockSize).u32(kMinBlockSize).u32(kPreferredBlockSize).u32(
      kMaxBlockSize);
  append_option_reply(out.reply, option, kRepInfo, item);
  uint16_t eflags = transmission_flags(cfg_, session_.structured_replies);
  item.clear();
  ByteWriter(item).u16(kInfoExport).u64(cfg_.size).u16(eflags);
  append_option_reply(out.reply, option, kRepInfo, item);
  append_option_reply(out.reply, option, kRepAck);
  if (option == kOptGo) {
    session_.eflags = eflags;
    out.next = Next::kTransmission;
  }
  return out;
}

// As qemu 7.2: LIST works without structured replies, SET does not; a SET clears the previous
// selection before anything else, so a SET that fails leaves none; replies go out in id order.
Negotiator::Outcome Negotiator::meta_context(uint32_t option, std::span<const uint8_t> data) {
  const bool list = option == kOptListMetaContext;
  if (!list && !session_.structured_replies)
    return error(option, kRepErrInvalid, "negotiate structured replies first");
  if (!list) session_.meta = {};
  auto req = parse_meta_context_request(data);
  if (!req) return error(option, req.error().reply_type, req.error().message);
  if (req->name != cfg_.name) {
    return error(option, kRepErrUnknown,
                 fmt::format("export '{}' not present", req->name.substr(0, 256)));
  }
  MetaSelection sel = match_meta_queries(cfg_.meta, req->queries, list);
  Outcome out;
  for (const auto& c : meta_context_names(cfg_.meta, sel)) {
    std::vector<uint8_t> item;
    ByteWriter(item).u32(list ? 0 : c.id).str(c.name);
    append_option_reply(out.reply, option, kRepMetaContext, item);
  }
  append_option_reply(out.reply, option, kRepAck);
  if (!list) session_.meta = std::move(sel);
  return out;
}

}  // namespace keel::nbd
