// One NBD client connection (see connection.h).
#include "nbd/connection.h"

#include <sys/socket.h>
#include <unistd.h>

#include <new>

#include <fmt/format.h>

#include "keel/endian.h"
#include "nbd/log.h"
#include "nbd/socket.h"
#include "nbd/uring_loop.h"
#include "nbd/wire.h"

namespace keel::nbd {
namespace {

constexpr uint32_t kMaxLoggedErrorsPerConnection = 20;

const char* describe(ReadResult r) {
  switch (r) {
    case ReadResult::kOk: return "ok";
    case ReadResult::kEof: return "client closed the connection";
    case ReadResult::kClosed: return "connection lost part-way through a message";
    case ReadResult::kTimeout: return "handshake time limit reached";
  }
  return "?";
}

}  // namespace

Connection::Connection(int fd, uint64_t id, Image& image, const ConnectionConfig& cfg,
                       WorkerPool& pool)
    : fd_(fd),
      io_(plain_transport(fd)),
      image_(image),
      cfg_(cfg),
      pool_(pool),
      peer_(fmt::format("client {} ({})", id, peer_name(fd))) {}

Connection::~Connection() {
  if (writer_.joinable()) writer_.join();
  close_fd();
}

void Connection::close_fd() {
  std::lock_guard lock(fd_mu_);
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void Connection::interrupt(bool hard) {
  std::lock_guard lock(fd_mu_);
  if (fd_ >= 0) ::shutdown(fd_, hard ? SHUT_RDWR : SHUT_RD);
}

void Connection::serve() {
  cfg_.log.debug(fmt::format("{}: connected", peer_));
  if (auto session = handshake()) transmission(*session);
  close_fd();
  cfg_.log.debug(fmt::format("{}: disconnected", peer_));
}

std::optional<Session> Connection::handshake() {
  Deadline deadline;
  if (cfg_.handshake_limit.count() > 0)
    deadline = std::chrono::steady_clock::now() + cfg_.handshake_limit;
  Negotiator neg(cfg_.export_cfg);
  auto greeting = encode_greeting(Negotiator::handshake_flags());
  if (!io_->write_all(greeting.data(), greeting.size())) return std::nullopt;

  uint8_t flags[4];
  ReadResult r = io_->read_exact(flags, sizeof flags, deadline);
  if (r != ReadResult::kOk) {
    if (r == ReadResult::kEof) {
      cfg_.log.debug(fmt::format("{}: closed before the handshake", peer_));
    } else {
      cfg_.log.line(fmt::format("{}: handshake: {}", peer_, describe(r)));
    }
    return std::nullopt;
  }
  if (!neg.accept_client_flags(get_be32(flags))) {
    cfg_.log.line(fmt::format("{}: handshake: unknown client flags {:#x}, disconnecting", peer_,
                              get_be32(flags)));
    return std::nullopt;
  }
  std::vector<uint8_t> data;
  for (;;) {
    uint8_t hb[kOptionHeaderBytes];
    r = io_->read_exact(hb, sizeof hb, deadline);
    if (r != ReadResult::kOk) {
      if (r == ReadResult::kEof) {
        cfg_.log.debug(fmt::format("{}: closed during option haggling", peer_));
      } else {
        cfg_.log.line(fmt::format("{}: handshake: {}", peer_, describe(r)));
      }
      return std::nullopt;
    }
    OptionHeader oh = decode_option_header(std::span<const uint8_t, kOptionHeaderBytes>(hb));
    if (oh.magic != kOptMagic) {
      cfg_.log.line(fmt::format("{}: handshake: bad option magic {:#x}, disconnecting", peer_, oh.magic));
      return std::nullopt;
    }
    Negotiator::Outcome out;
    if (oh.length > limits::kMaxNbdOptionBytes) {
      r = io_->skip_bytes(oh.length, deadline);
      if (r != ReadResult::kOk) {
        cfg_.log.line(fmt::format("{}: handshake: {} while skipping an option of {} bytes", peer_,
                                  describe(r), oh.length));
        return std::nullopt;
      }
      out = neg.handle_oversized(oh.option, oh.length);
    } else {
      data.resize(oh.length);
      r = io_->read_exact(data.data(), data.size(), deadline);
      if (r != ReadResult::kOk) {
        cfg_.log.line(fmt::format("{}: handshake: {}", peer_,
                                  r == ReadResult::kEof ? describe(ReadResult::kClosed) : describe(r)));
        return std::nullopt;
      }
      out = neg.handle(oh.option, data);
    }
    if (!out.log.empty()) log_client_error(out.log);
    if (!out.reply.empty() && !io_->write_all(out.reply.data(), out.reply.size()))
      return std::nullopt;
    if (out.next == Negotiator::Next::kClose) return std::nullopt;
    if (out.next == Negotiator::Next::kStartTls) {
      if (!cfg_.tls) return std::nullopt;
      auto tls = tls_handshake(fd_, cfg_.tls, deadline);
      if (!tls) {
        cfg_.log.line(fmt::format("{}: {}", peer_, tls.error().message()));
        return std::nullopt;
      }
      io_ = std::move(*tls);
      neg.tls_started();
      cfg_.log.debug(fmt::format("{}: TLS established", peer_));
    }
    if (out.next == Negotiator::Next::kTransmission) {
      cfg_.log.debug(fmt::format("{}: transmission phase, flags {:#x}{}", peer_, neg.session().eflags,
                                 neg.session().structured_replies ? ", structured replies" : ""));
      return neg.session();
    }
  }
}

bool Connection::acquire(uint64_t bytes) {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] {
    return broken_ || (in_flight_ < limits::kMaxNbdInFlight &&
                       (in_flight_bytes_ == 0 ||
                        in_flight_bytes_ + bytes <= kMaxInFlightBytesPerConnection));
  });
  if (broken_) return false;
  ++in_flight_;
  in_flight_bytes_ += bytes;
  return true;
}

void Connection::enqueue(Reply reply, uint64_t bytes) {
  // Notify under the lock: once the writer has sent the last reply, serve() may return and the
  // Connection be destroyed, so a worker must not touch cv_ after releasing mu_.
  std::lock_guard lock(mu_);
  queue_.push_back(Pending{std::move(reply), bytes});
  cv_.notify_all();
}

void Connection::dispatch(const CommandContext& ctx, const RequestHeader& h,
                          std::vector<uint8_t> payload, uint64_t bytes) {
  pool_.submit([this, ctx, h, payload = std::move(payload), bytes]() mutable {
    Reply reply;
    try {
      reply = execute(image_, ctx, h, std::move(payload));
    } catch (const std::bad_alloc&) {
      reply = error_reply(ctx, h, kErrNoMem, "out of memory");
    } catch (...) {
      reply = error_reply(ctx, h, kErrIo, "internal error");
    }
    enqueue(std::move(reply), bytes);
  });
}

void Connection::log_client_error(const std::string& message) {
  if (errors_logged_ > kMaxLoggedErrorsPerConnection) return;
  if (++errors_logged_ > kMaxLoggedErrorsPerConnection) {
    cfg_.log.line(fmt::format("{}: more errors; no longer logging them for this client", peer_));
    return;
  }
  cfg_.log.line(fmt::format("{}: {}", peer_, message));
}

void Connection::transmission(const Session& session) {
  CommandContext ctx;
  ctx.session = session;
  ctx.export_size = cfg_.export_cfg.size;
  ctx.read_only = cfg_.export_cfg.read_only;
  ctx.policy = cfg_.policy;
  // TLS sessions stay on the threads path: the loop reads and writes the raw socket.
  if (cfg_.io_uring && !cfg_.tls) {
    UringLoop loop(fd_, image_, ctx, pool_, peer_, cfg_.log,
                   [this](const std::string& m) { log_client_error(m); });
    std::string why;
    if (loop.init(&why)) {
      loop.run();
      return;
    }
    static std::atomic<bool> logged{false};
    if (!logged.exchange(true)) cfg_.log.line(fmt::format("io_uring unavailable ({}); using threads", why));
  }
  writer_ = std::thread([this] { writer_loop(); });

  for (;;) {
    uint8_t hb[kRequestHeaderBytes];
    ReadResult r = io_->read_exact(hb, sizeof hb);
    if (r == ReadResult::kEof) {
      cfg_.log.debug(fmt::format("{}: client closed the connection", peer_));
      break;
    }
    if (r != ReadResult::kOk) {
      if (!broken_) cfg_.log.line(fmt::format("{}: connection lost inside a request header", peer_));
      break;
    }
    RequestHeader h = decode_request_header(std::span<const uint8_t, kRequestHeaderBytes>(hb));
    if (h.magic != kRequestMagic) {
      cfg_.log.line(fmt::format("{}: bad request magic {:#x}, disconnecting", peer_, h.magic));
      break;
    }
    if (h.type == kCmdDisc) {
      cfg_.log.debug(fmt::format("{}: DISC", peer_));
      break;
    }
    RequestError err = check_request(ctx, h);
    if (h.type == kCmdWrite) {
      if (err) {
        // Keep the stream in step: read past the payload we refuse, in bounded pieces.
        if (io_->skip_bytes(h.length) != ReadResult::kOk) {
          cfg_.log.line(fmt::format("{}: connection lost inside a WRITE payload", peer_));
          break;
        }
      } else {
        if (!acquire(h.length)) break;
        std::vector<uint8_t> payload(h.length);
        if (io_->read_exact(payload.data(), payload.size()) != ReadResult::kOk) {
          cfg_.log.line(fmt::format("{}: connection lost inside a WRITE payload", peer_));
          enqueue(Reply{}, h.length);  // releases what acquire() took
          break;
        }
        dispatch(ctx, h, std::move(payload), h.length);
        continue;
      }
    }
    if (err) {
      log_client_error(fmt::format("{} offset {} length {} flags {:#x}: {}", command_name(h.type),
                                   h.offset, h.length, h.flags, err.message));
      if (!acquire(0)) break;
      enqueue(error_reply(ctx, h, err.error, err.message), 0);
      continue;
    }
    uint64_t bytes = request_buffer_bytes(h);
    if (!acquire(bytes)) break;
    dispatch(ctx, h, {}, bytes);
  }

  {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return in_flight_ == 0; });
    writer_stop_ = true;
  }
  cv_.notify_all();
  writer_.join();
}

void Connection::writer_loop() {
  for (;;) {
    Pending p;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return writer_stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      p = std::move(queue_.front());
      queue_.pop_front();
    }
    if (!broken_ && !p.reply.pieces.empty()) {
      std::vector<iovec> iov;
      iov.reserve(p.reply.pieces.size());
      for (const auto& piece : p.reply.pieces) {
        auto& src = piece.in_data ? p.reply.data : p.reply.meta;
        iov.push_back(iovec{src.data() + piece.offset, piece.length});
      }
      if (!io_->writev_all(std::move(iov))) {
        cfg_.log.line(fmt::format("{}: cannot send replies, client gone; dropping the connection",
                                  peer_));
        broken_ = true;
        interrupt(true);
      }
    }
    {
      std::lock_guard lock(mu_);
      --in_flight_;
      in_flight_bytes_ -= p.bytes;
    }
    cv_.notify_all();
  }
}

}  // namespace keel::nbd
