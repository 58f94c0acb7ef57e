// The io_uring transmission loop of one NBD connection (see uring_loop.h).
#include "nbd/uring_loop.h"

#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <new>
#include <vector>

#include <fmt/format.h>

#include "keel/endian.h"
#include "keel/limits.h"
#include "nbd/buffer_pool.h"
#include "nbd/log.h"
#include "nbd/protocol.h"
#include "nbd/uring_ring.h"
#include "nbd/wire.h"

#ifdef KEEL_HAVE_URING
#include <liburing.h>
#endif

namespace keel::nbd {

#ifndef KEEL_HAVE_URING

struct UringLoop::State {};
UringLoop::UringLoop(int, Image&, const CommandContext&, WorkerPool&, std::string, Log, ClientErrorLog) {}
UringLoop::~UringLoop() = default;
bool UringLoop::init(std::string* why) {
  *why = "built without liburing";
  return false;
}
void UringLoop::run() {}
uint64_t UringLoop::direct_requests() const { return 0; }
uint64_t UringLoop::worker_requests() const { return 0; }
uint64_t UringLoop::total_direct_requests() { return 0; }
uint64_t UringLoop::total_inline_requests() { return 0; }

#else

namespace {

std::atomic<uint64_t> g_direct_total{0};
std::atomic<uint64_t> g_inline_total{0};
// Ring setup and teardown are serialized: liburing maps and unmaps the rings with raw system
// calls that ThreadSanitizer does not see, so a ring mapped where an ended connection's ring was
// would look like a race between the two loop threads. Holding this mutex around both makes the
// reuse of the address ordered for TSan too (and costs nothing per request).
std::mutex g_ring_setup_mu;

constexpr size_t kSlots = limits::kMaxNbdInFlight;
// ours, because: one recv of this size holds ~9000 request headers or several 4 KiB writes, so
// a pipelining client costs one system call per batch, not per request.
constexpr size_t kRecvBytes = 256 * 1024;
// ours, because: the ring must hold every disk SQE of a full set of slots plus recv, send and
// eventfd; submission flushes the SQ whenever it fills, so this only sizes the batches.
constexpr unsigned kRingEntries = 256;
// ours, because: one sendmsg gathers the replies of up to this many iovecs (2 per direct reply,
// a few per structured reply); the rest wait for the next send.
constexpr size_t kMaxSendIov = 128;
// ours, because: freed request buffers kept for reuse per connection (as much as may be in flight).
constexpr size_t kMaxCachedBufferBytes = kMaxInFlightBytesPerConnection;

enum Op : uint64_t { kOpRecv = 1, kOpSend = 2, kOpEvent = 3, kOpDisk = 4 };
uint64_t tag(Op op, size_t slot = 0) { return static_cast<uint64_t>(op) | (uint64_t{slot} << 8); }

}  // namespace

struct UringLoop::State {
  struct Slot {
    RequestHeader h;
    BufferPool::Buffer buf;
    uint64_t bytes = 0;  // counted in in_flight_bytes
    DirectIo ticket;
    uint32_t disk_pending = 0;
    uint64_t disk_bytes = 0;
    bool disk_failed = false;
    bool write = false;
    // The reply: either hdr + buf[0, data_len) (direct requests) or `reply` (worker, errors).
    bool direct_reply = false;
    // A direct READ of holes and zero clusters only, answered with one OFFSET_HOLE chunk and
    // no payload (structured replies without DF); set by submit_disk.
    bool hole_reply = false;
    uint8_t hdr[kChunkHeaderBytes + 12];
    size_t hdr_len = 0;
    size_t data_len = 0;
    Reply reply;
  };

  int fd;
  Image& image;
  CommandContext ctx;
  WorkerPool& pool;
  std::string peer;
  Log log;
  ClientErrorLog log_client_error;

  io_uring ring{};
  bool ring_ok = false;
  int event_fd = -1;
  uint64_t event_buf = 0;

  std::array<Slot, kSlots> slots;
  std::vector<uint32_t> free_slots;
  uint32_t in_flight = 0;
  uint64_t in_flight_bytes = 0;
  BufferPool pool_buffers{kMaxCachedBufferBytes};

  // Socket input.
  std::unique_ptr<uint8_t[]> rbuf{new uint8_t[kRecvBytes]};
  size_t rstart = 0, rend = 0;
  bool reading = true;       // false after DISC, EOF, a protocol error or a failed send
  bool recv_pending = false;
  uint64_t skip_left = 0;    // payload bytes of a refused WRITE still to throw away
  std::optional<RequestHeader> skip_header;  // its header, answered once skipped
  int payload_slot = -1;     // a WRITE whose payload is being received into its buffer
  size_t payload_have = 0;

  // Replies ready to send (a ring of slot indices) and the send in progress.
  std::array<uint32_t, kSlots> ready{};
  size_t ready_head = 0, ready_count = 0;
  bool send_pending = false;
  std::array<iovec, kMaxSendIov> iov{};
  std::array<int, kMaxSendIov> iov_slot{};  // slot whose reply ends with this iovec, else -1
  size_t iov_first = 0, iov_count = 0;
  msghdr msg{};
  bool broken = false;

  // Worker completions (slot indices), guarded by done_mu; the eventfd is written under it too
  // so the loop cannot close it while a worker is still about to write.
  std::mutex done_mu;
  std::vector<uint32_t> done;
  std::vector<uint32_t> done_local;

  uint64_t direct_count = 0, worker_count = 0, inline_count = 0;
  // Requests in a row that found nothing else of this connection in flight: a client at depth
  // 1. Any request that arrives while another is in flight starts the count again.
  uint32_t depth1_run = 0;
  static constexpr uint32_t kLoneAfter = 16;

  State(int f, Image& img, const CommandContext& c, WorkerPool& p, std::string pr, Log lg, ClientErrorLog l)
      : fd(f), image(img), ctx(c), pool(p), peer(std::move(pr)), log(std::move(lg)), log_client_error(std::move(l)) {
    free_slots.reserve(kSlots);
    for (size_t i = kSlots; i-- > 0;) free_slots.push_back(static_cast<uint32_t>(i));
    done.reserve(kSlots);
    done_local.reserve(kSlots);
  }

  ~State() {
    if (ring_ok) {
      std::lock_guard setup(g_ring_setup_mu);
      io_uring_queue_exit(&ring);
    }
    std::lock_guard lock(done_mu);
    if (event_fd >= 0) ::close(event_fd);
  }

  io_uring_sqe* sqe() { return next_sqe(&ring); }

  void arm_event() {
    io_uring_sqe* e = sqe();
    io_uring_prep_read(e, event_fd, &event_buf, sizeof event_buf, 0);
    io_uring_sqe_set_data64(e, tag(kOpEvent));
  }

  // --- slots ---
  bool can_take(uint64_t bytes) const {
    return !broken && in_flight < kSlots &&
           (in_flight_bytes == 0 || in_flight_bytes + bytes <= kMaxInFlightBytesPerConnection);
  }
  uint32_t take(const RequestHeader& h, uint64_t bytes) {
    uint32_t i = free_slots.back();
    free_slots.pop_back();
    Slot& s = slots[i];
    s.h = h;
    s.bytes = bytes;
    ++in_flight;
    in_flight_bytes += bytes;
    depth1_run = in_flight == 1 ? depth1_run + 1 : 0;
    return i;
  }
  void release(uint32_t i) {
    Slot& s = slots[i];
    s.ticket.release();
    pool_buffers.put(s.buf);
    s.buf = {};
    s.reply = Reply{};
    s.direct_reply = false;
    s.hole_reply = false;
    s.disk_pending = 0;
    s.disk_bytes = 0;
    s.disk_failed = false;
    --in_flight;
    in_flight_bytes -= s.bytes;
    s.bytes = 0;
    free_slots.push_back(i);
  }

  // --- replies ---
  void queue_reply(uint32_t i) {
    if (broken) {
      release(i);
      return;
    }
    ready[(ready_head + ready_count) % kSlots] = i;
    ++ready_count;
  }
  void reply_error(uint32_t i, uint32_t error, const std::string& message) {
    slots[i].reply = error_reply(ctx, slots[i].h, error, message);
    queue_reply(i);
  }

  // Gathers ready replies into one sendmsg.
  void maybe_send() {
    if (send_pending || broken || ready_count == 0) return;
    iov_first = 0;
    iov_count = 0;
    while (ready_count > 0) {
      uint32_t i = ready[ready_head];
      Slot& s = slots[i];
      size_t need = s.direct_reply ? 2 : s.reply.pieces.size();
      if (iov_count > 0 && iov_count + need > kMaxSendIov) break;
      ready_head = (ready_head + 1) % kSlots;
      --ready_count;
      if (need == 0) {  // nothing to send (cannot happen for a valid reply); just finish it
        release(i);
        continue;
      }
      if (s.direct_reply) {
        add_iov(s.hdr, s.hdr_len, -1);
        add_iov(s.buf.data, s.data_len, static_cast<int>(i));
      } else {
        for (size_t k = 0; k < s.reply.pieces.size(); ++k) {
          const auto& piece = s.reply.pieces[k];
          auto& src = piece.in_data ? s.reply.data : s.reply.meta;
          add_iov(src.data() + piece.offset, piece.length,
                  k + 1 == s.reply.pieces.size() ? static_cast<int>(i) : -1);
        }
      }
      if (need > kMaxSendIov) break;  // a reply longer than one sendmsg: alone (add_iov clamps)
    }
    if (iov_count == 0) return;
    submit_send();
  }
  void add_iov(void* p, size_t n, int slot) {
    if (iov_count == kMaxSendIov) {  // only for a reply of more pieces than kMaxSendIov
      overflow_.push_back({iovec{p, n}, slot});
      return;
    }
    iov[iov_count] = iovec{p, n};
    iov_slot[iov_count] = slot;
    ++iov_count;
  }
  struct Overflow {
    iovec v;
    int slot;
  };
  std::vector<Overflow> overflow_;

  void submit_send() {
    msg = msghdr{};
    msg.msg_iov = &iov[iov_first];
    msg.msg_iovlen = iov_count - iov_first;
    io_uring_sqe* e = sqe();
    io_uring_prep_sendmsg(e, fd, &msg, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(e, tag(kOpSend));
    send_pending = true;
  }

  void on_send(int res) {
    send_pending = false;
    if (res <= 0) {
      if (res == -EINTR || res == -EAGAIN) {
        submit_send();
        return;
      }
      fail_send();
      return;
    }
    size_t left = static_cast<size_t>(res);
    while (iov_first < iov_count && left >= iov[iov_first].iov_len) {
      left -= iov[iov_first].iov_len;
      if (iov_slot[iov_first] >= 0) release(static_cast<uint32_t>(iov_slot[iov_first]));
      ++iov_first;
    }
    if (iov_first < iov_count) {
      iov[iov_first].iov_base = static_cast<uint8_t*>(iov[iov_first].iov_base) + left;
      iov[iov_first].iov_len -= left;
      submit_send();
      return;
    }
    if (!overflow_.empty()) {  // the rest of a reply with very many pieces
      iov_first = iov_count = 0;
      size_t n = std::min(overflow_.size(), kMaxSendIov);
      for (size_t k = 0; k < n; ++k) {
        iov[k] = overflow_[k].v;
        iov_slot[k] = overflow_[k].slot;
      }
      overflow_.erase(overflow_.begin(), overflow_.begin() + static_cast<ptrdiff_t>(n));
      iov_count = n;
      submit_send();
    }
  }

  void fail_send() {
    log.line(fmt::format("{}: cannot send replies, client gone; dropping the connection", peer));
    broken = true;
    reading = false;
    ::shutdown(fd, SHUT_RDWR);
    // Drop the replies of the failed send and every queued one.
    for (size_t k = iov_first; k < iov_count; ++k)
      if (iov_slot[k] >= 0) release(static_cast<uint32_t>(iov_slot[k]));
    for (const auto& o : overflow_)
      if (o.slot >= 0) release(static_cast<uint32_t>(o.slot));
    overflow_.clear();
    iov_first = iov_count = 0;
    while (ready_count > 0) {
      release(ready[ready_head]);
      ready_head = (ready_head + 1) % kSlots;
      --ready_count;
    }
  }

  // --- requests ---
  void run_engine(Slot& sl, std::vector<uint8_t> payload) {
    try {
      sl.reply = execute(image, ctx, sl.h, std::move(payload));
    } catch (const std::bad_alloc&) {
      sl.reply = error_reply(ctx, sl.h, kErrNoMem, "out of memory");
    } catch (...) {
      sl.reply = error_reply(ctx, sl.h, kErrIo, "internal error");
    }
  }

  void to_worker(uint32_t i) {
    Slot& s = slots[i];
    std::vector<uint8_t> payload;
    if (s.h.type == kCmdWrite && s.h.length > 0) payload.assign(s.buf.data, s.buf.data + s.h.length);
    // A lone request of a client at depth 1 (the only one of this connection in flight, nothing
    // more from the client in the buffer, and the last kLoneAfter requests alone too) runs here,
    // on the loop's thread: the hand-off to a worker and back (its wake-up, the eventfd, that
    // completion) is a large part of its latency, and there is nothing else for the loop to do
    // meanwhile. A client that keeps several requests in flight keeps the workers: "nothing in
    // the buffer" alone is not enough, since a large WRITE's payload fills the socket and the
    // client's next request arrives only once it is read (fio 1 MiB writes at depth 8 ran at
    // half speed when those ran here). Safe to block: with nothing else in flight this
    // connection holds no direct-I/O ticket (direct_complete releases it before it falls back
    // to here), so an engine flush that waits for the data gate cannot wait on this thread.
    if (in_flight == 1 && buffered() == 0 && depth1_run >= kLoneAfter) {
      ++inline_count;
      g_inline_total.fetch_add(1, std::memory_order_relaxed);
      run_engine(s, std::move(payload));
      queue_reply(i);
      return;
    }
    ++worker_count;
    pool.submit([this, i, payload = std::move(payload)]() mutable {
      run_engine(slots[i], std::move(payload));
      std::lock_guard lock(done_mu);
      done.push_back(i);
      uint64_t one = 1;
      [[maybe_unused]] ssize_t rc = ::write(event_fd, &one, sizeof one);
    });
  }

  void on_event() {
    {
      std::lock_guard lock(done_mu);
      done_local.swap(done);
    }
    for (uint32_t i : done_local) queue_reply(i);
    done_local.clear();
    arm_event();
  }

  // READ and WRITE of ranges the image maps directly go to io_uring; the rest to a worker.
  void start(uint32_t i) {
    Slot& s = slots[i];
    const bool write = s.h.type == kCmdWrite;
    const bool candidate =
        s.buf.data && s.h.length > 0 &&
        (s.h.type == kCmdRead ||
         (write && !(s.h.flags & kCmdFlagFua) && ctx.policy.detect_zeroes == DetectZeroes::kOff));
    if (candidate) {
      if (auto t = image.map_direct(s.h.offset, s.h.length, write);
          t && BufferPool::kAlign % t->alignment() == 0) {
        s.ticket = std::move(*t);
        s.write = write;
        submit_disk(i);
        return;
      }
    }
    to_worker(i);
  }

  void submit_disk(uint32_t i) {
    Slot& s = slots[i];
    ++direct_count;
    uint64_t pos = 0;
    s.disk_pending = 0;
    s.disk_bytes = 0;
    s.disk_failed = false;
    bool zeros_only = !s.write;
    for (const DirectSegment& seg : s.ticket.segments())
      if (!seg.zeros()) zeros_only = false;
    s.hole_reply = zeros_only && ctx.session.structured_replies && !(s.h.flags & kCmdFlagDf);
    for (const DirectSegment& seg : s.ticket.segments()) {
      if (seg.zeros()) {  // a hole or zero cluster of a read: no I/O
        if (!s.hole_reply) std::memset(s.buf.data + pos, 0, seg.length);
        s.disk_bytes += seg.length;
        pos += seg.length;
        continue;
      }
      io_uring_sqe* e = sqe();
      if (s.write) {
        io_uring_prep_write(e, seg.fd, s.buf.data + pos, static_cast<unsigned>(seg.length), seg.host_offset);
      } else {
        io_uring_prep_read(e, seg.fd, s.buf.data + pos, static_cast<unsigned>(seg.length), seg.host_offset);
      }
      io_uring_sqe_set_data64(e, tag(kOpDisk, i));
      pos += seg.length;
      ++s.disk_pending;
    }
    if (s.disk_pending == 0) direct_complete(i);
  }

  // Disk completions of one request's segments arrive in any order: count them, then finish.
  void disk_done(uint32_t i, int res) {
    Slot& s = slots[i];
    if (res < 0) {
      s.disk_failed = true;
    } else {
      s.disk_bytes += static_cast<uint64_t>(res);
    }
    if (--s.disk_pending > 0) return;
    direct_complete(i);
  }

  // Every segment of a direct request is done: reply, or redo it on a worker.
  void direct_complete(uint32_t i) {
    Slot& s = slots[i];
    s.ticket.release();
    if (s.disk_failed || s.disk_bytes != s.h.length) {
      // An error or a short transfer (a read at the end of the file): the engine path redoes
      // the whole request and reports what really happened (an overwrite is idempotent).
      --direct_count;
      to_worker(i);
      return;
    }
    g_direct_total.fetch_add(1, std::memory_order_relaxed);
    const uint64_t cookie = s.h.cookie;
    if (s.write) {
      if (ctx.policy.flushes) ctx.policy.flushes->write_completed();  // before the reply
      put_be32(s.hdr, kSimpleReplyMagic);
      put_be32(s.hdr + 4, 0);
      put_be64(s.hdr + 8, cookie);
      s.hdr_len = kSimpleReplyHeaderBytes;
      s.data_len = 0;
      s.direct_reply = true;
      queue_reply(i);
      return;
    }
    if (s.hole_reply) {
      // As the engine path replies for a hole: one OFFSET_HOLE chunk, no payload.
      put_be32(s.hdr, kStructuredReplyMagic);
      put_be16(s.hdr + 4, kReplyFlagDone);
      put_be16(s.hdr + 6, kChunkOffsetHole);
      put_be64(s.hdr + 8, cookie);
      put_be32(s.hdr + 16, 12);
      put_be64(s.hdr + 20, s.h.offset);
      put_be32(s.hdr + 28, static_cast<uint32_t>(s.h.length));
      s.hdr_len = kChunkHeaderBytes + 12;
      s.data_len = 0;
      s.direct_reply = true;
      queue_reply(i);
      return;
    }
    if (ctx.session.structured_replies) {
      put_be32(s.hdr, kStructuredReplyMagic);
      put_be16(s.hdr + 4, kReplyFlagDone);
      put_be16(s.hdr + 6, kChunkOffsetData);
      put_be64(s.hdr + 8, cookie);
      put_be32(s.hdr + 16, 8 + s.h.length);
      put_be64(s.hdr + 20, s.h.offset);
      s.hdr_len = kChunkHeaderBytes + 8;
    } else {
      put_be32(s.hdr, kSimpleReplyMagic);
      put_be32(s.hdr + 4, 0);
      put_be64(s.hdr + 8, cookie);
      s.hdr_len = kSimpleReplyHeaderBytes;
    }
    s.data_len = s.h.length;
    s.direct_reply = true;
    queue_reply(i);
  }

  // --- socket input ---
  size_t buffered() const { return rend - rstart; }

  void stop_reading(const std::string& why, bool always) {
    if (!why.empty()) {
      if (always) {
        log.line(fmt::format("{}: {}", peer, why));
      } else {
        log.debug(fmt::format("{}: {}", peer, why));
      }
    }
    reading = false;
  }

  // Parses every complete request in the buffer, as far as the in-flight limits allow.
  void parse() {
    while (reading && payload_slot < 0) {
      if (skip_left > 0) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(skip_left, buffered()));
        rstart += n;
        skip_left -= n;
        if (skip_left > 0) return;
      }
      if (skip_header) {  // a refused WRITE, its payload skipped: answer it
        if (!can_take(0)) return;
        RequestHeader h = *skip_header;
        skip_header.reset();
        refuse(h);
        continue;
      }
      if (buffered() < kRequestHeaderBytes) return;
      RequestHeader h = decode_request_header(
          std::span<const uint8_t, kRequestHeaderBytes>(rbuf.get() + rstart, kRequestHeaderBytes));
      if (h.magic != kRequestMagic) {
        stop_reading(fmt::format("bad request magic {:#x}, disconnecting", h.magic), true);
        return;
      }
      if (h.type == kCmdDisc) {
        rstart += kRequestHeaderBytes;
        stop_reading("DISC", false);
        return;
      }
      RequestError err = check_request(ctx, h);
      uint64_t bytes = err ? 0 : request_buffer_bytes(h);
      if (!can_take(bytes)) return;  // wait for a reply to go out
      rstart += kRequestHeaderBytes;
      if (err) {
        if (h.type == kCmdWrite && h.length > 0) {
          skip_left = h.length;
          skip_header = h;
          continue;
        }
        refuse(h);
        continue;
      }
      uint32_t i = take(h, bytes);
      Slot& s = slots[i];
      if (bytes > 0) s.buf = pool_buffers.get(bytes);
      if (h.type == kCmdWrite && h.length > 0) {
        if (!s.buf.data) {  // out of memory: throw the payload away and say so
          release(i);
          skip_left = h.length;
          skip_header = h;
          continue;
        }
        size_t n = std::min<size_t>(h.length, buffered());
        std::memcpy(s.buf.data, rbuf.get() + rstart, n);
        rstart += n;
        if (n < h.length) {
          payload_slot = static_cast<int>(i);
          payload_have = n;
          return;
        }
      }
      start(i);
    }
  }

  // Answers a request that check_request refused (its payload already skipped).
  void refuse(const RequestHeader& h) {
    RequestError err = check_request(ctx, h);
    if (!err) err = {kErrNoMem, "out of memory for the request buffer"};
    log_client_error(fmt::format("{} offset {} length {} flags {:#x}: {}", command_name(h.type),
                                 h.offset, h.length, h.flags, err.message));
    uint32_t i = take(h, 0);
    reply_error(i, err.error, err.message);
  }

  void maybe_recv() {
    if (!reading || recv_pending || broken) return;
    // parse() waits for room in flight: read nothing more yet.
    if (payload_slot < 0 && skip_left == 0 && (skip_header || buffered() >= kRequestHeaderBytes))
      return;
    io_uring_sqe* e = sqe();
    if (payload_slot >= 0) {
      Slot& s = slots[static_cast<size_t>(payload_slot)];
      io_uring_prep_recv(e, fd, s.buf.data + payload_have, s.h.length - payload_have, 0);
    } else {
      if (rstart > 0) {
        std::memmove(rbuf.get(), rbuf.get() + rstart, buffered());
        rend -= rstart;
        rstart = 0;
      }
      io_uring_prep_recv(e, fd, rbuf.get() + rend, kRecvBytes - rend, 0);
    }
    io_uring_sqe_set_data64(e, tag(kOpRecv));
    recv_pending = true;
  }

  void on_recv(int res) {
    recv_pending = false;
    if (res == -EINTR || res == -EAGAIN) return;
    if (res <= 0) {
      if (broken) {
        reading = false;
      } else if (payload_slot >= 0) {
        stop_reading("connection lost inside a WRITE payload", true);
        release(static_cast<uint32_t>(payload_slot));
        payload_slot = -1;
      } else if (skip_left > 0) {
        stop_reading("connection lost inside a WRITE payload", true);
      } else if (buffered() > 0) {
        stop_reading("connection lost inside a request header", true);
      } else {
        stop_reading("client closed the connection", false);
      }
      return;
    }
    if (payload_slot >= 0) {
      payload_have += static_cast<size_t>(res);
      Slot& s = slots[static_cast<size_t>(payload_slot)];
      if (payload_have == s.h.length) {
        uint32_t i = static_cast<uint32_t>(payload_slot);
        payload_slot = -1;
        start(i);
      }
      return;
    }
    rend += static_cast<size_t>(res);
  }

  void dispatch_cqe(io_uring_cqe* cqe) {
    uint64_t data = io_uring_cqe_get_data64(cqe);
    switch (static_cast<Op>(data & 0xff)) {
      case kOpRecv: on_recv(cqe->res); break;
      case kOpSend: on_send(cqe->res); break;
      case kOpEvent: on_event(); break;
      case kOpDisk: disk_done(static_cast<uint32_t>(data >> 8), cqe->res); break;
    }
  }

  void run() {
    arm_event();
    for (;;) {
      parse();
      maybe_recv();
      maybe_send();
      if (!reading && in_flight == 0 && !recv_pending && !send_pending) break;
      int rc = io_uring_submit_and_wait(&ring, 1);
      if (rc < 0 && rc != -EINTR && rc != -EBUSY) {
        log.line(fmt::format("{}: io_uring failed: {}", peer, std::strerror(-rc)));
        // Nothing else can make progress; let the outstanding work drain by waiting on it.
        ::shutdown(fd, SHUT_RDWR);
      }
      io_uring_cqe* cqe;
      unsigned head, n = 0;
      io_uring_for_each_cqe(&ring, head, cqe) {
        dispatch_cqe(cqe);
        ++n;
      }
      io_uring_cq_advance(&ring, n);
    }
    log.debug(fmt::format("{}: {} requests by direct I/O, {} on workers, {} alone on the loop", peer,
                          direct_count, worker_count, inline_count));
  }
};

UringLoop::UringLoop(int fd, Image& image, const CommandContext& ctx, WorkerPool& pool,
                     std::string peer, Log log, ClientErrorLog log_client_error)
    : s_(std::make_unique<State>(fd, image, ctx, pool, std::move(peer), std::move(log),
                                 std::move(log_client_error))) {}

UringLoop::~UringLoop() = default;

bool UringLoop::init(std::string* why) {
  int rc;
  {
    std::lock_guard setup(g_ring_setup_mu);
    // Only this connection's thread submits and reaps (the ring is made on it).
    rc = init_loop_ring(kRingEntries, &s_->ring);
  }
  if (rc < 0) {
    *why = fmt::format("io_uring_queue_init: {}", std::strerror(-rc));
    return false;
  }
  s_->ring_ok = true;
  s_->event_fd = ::eventfd(0, EFD_CLOEXEC);
  if (s_->event_fd < 0) {
    *why = fmt::format("eventfd: {}", std::strerror(errno));
    return false;
  }
  return true;
}

void UringLoop::run() { s_->run(); }
uint64_t UringLoop::direct_requests() const { return s_->direct_count; }
uint64_t UringLoop::worker_requests() const { return s_->worker_count; }
uint64_t UringLoop::total_direct_requests() { return g_direct_total.load(); }
uint64_t UringLoop::total_inline_requests() { return g_inline_total.load(); }

#endif  // KEEL_HAVE_URING

}  // namespace keel::nbd
