// UringLoop: the NBD transmission phase of one connection as an io_uring event loop
// (keel serve --aio=io_uring / native). The handshake has already run (connection.cpp).
//
// One thread (the connection's) owns the ring, the socket, the request slots and the buffer
// pool. Each request is a small state machine in a fixed slot:
//
//   header parsed ─┬─ READ/WRITE that Image::map_direct accepts ─> disk SQEs (readv/writev on
//                  │    the image fd) ─> reply queued                          (no thread hop)
//                  ├─ anything else (allocating write, flush, trim, zeroes, block status, an
//                  │    L2 cache miss, a failed or short direct I/O) ─> WorkerPool job ─>
//                  │    eventfd ─> reply queued; or, when it is the connection's only request
//                  │    and the client sent nothing more (depth 1), the engine call on the
//                  │    loop's own thread ─> reply queued                     (no thread hop)
//                  └─ invalid ─> error reply queued
//   reply queued ─> gathered with other ready replies into one sendmsg ─> slot free
//
// Socket reads are batched (one recv fills a buffer that may hold many requests); a large WRITE
// payload is received straight into its request buffer. Replies go out as requests complete,
// out of order. Bounds as for the threads path: at most limits::kMaxNbdInFlight requests and
// kMaxInFlightBytesPerConnection bytes of buffers per connection; when either is reached the loop
// stops reading the socket until a reply has gone out. Request buffers come from a BufferPool,
// so the steady state allocates nothing per direct request.
//
// The loop blocks only in io_uring_enter and in the engine call of a lone request (when it has
// nothing else to do; it then holds no direct-I/O ticket, so no engine wait can depend on it):
// map_direct only tries locks, and completions of worker jobs arrive through an eventfd read
// that is always armed.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "keel/image.h"
#include "nbd/commands.h"
#include "nbd/log.h"
#include "nbd/worker_pool.h"

namespace keel::nbd {

class UringLoop {
 public:
  using ClientErrorLog = std::function<void(const std::string&)>;

  // `fd` stays owned by the caller, who may shutdown() it from another thread to end the loop
  // (SHUT_RD: finish what was read; SHUT_RDWR: also abandon replies to a client that stalls).
  UringLoop(int fd, Image& image, const CommandContext& ctx, WorkerPool& pool, std::string peer,
            Log log, ClientErrorLog log_client_error);
  ~UringLoop();
  UringLoop(const UringLoop&) = delete;
  UringLoop& operator=(const UringLoop&) = delete;

  // Sets up the ring and the eventfd; false (with the reason in *why) where io_uring cannot be
  // used (old kernel, seccomp, built without liburing): the caller then uses the threads path.
  bool init(std::string* why);
  // Serves requests until DISC, EOF, a protocol error or a failed send; returns once every
  // request read has finished (and its reply was sent, if the client is still there).
  void run();

  // Counters for tests: requests served by direct I/O and by the worker pool.
  uint64_t direct_requests() const;
  uint64_t worker_requests() const;
  // Requests served by direct I/O by every loop of this process so far (for tests).
  static uint64_t total_direct_requests();
  // Lone requests served on the loops' threads so far (for tests).
  static uint64_t total_inline_requests();

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace keel::nbd
