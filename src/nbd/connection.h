// One NBD client connection: the handshake, then the transmission phase with pipelined
// requests.
//
// Threads (with io_uring, see uring_loop.h instead): the caller's thread reads (handshake, then request headers and WRITE payloads),
// validates each request and hands it to the shared WorkerPool; a writer thread of this
// connection sends the replies in the order they complete, so replies go out of order and one
// client that stops reading stalls only its own writer. Bounds: at most kMaxNbdInFlight
// requests and kMaxInFlightBytesPerConnection bytes of buffers per connection; the reader waits
// for room before it reads more.
//
// Lifecycle: serve() returns once the client sent DISC, vanished, broke the protocol, or
// interrupt() was called; in every case it first waits for the requests already read to finish
// (their replies are sent if the client is still there), then closes the socket.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "keel/image.h"
#include "nbd/commands.h"
#include "nbd/log.h"
#include "nbd/negotiation.h"
#include "nbd/reply.h"
#include "nbd/transport.h"
#include "nbd/worker_pool.h"

namespace keel::nbd {

struct ConnectionConfig {
  ExportConfig export_cfg;
  ExportPolicy policy;
  // The whole handshake must finish within this time (0: no limit), as qemu-nbd's
  // --handshake-limit; a client that connects and stalls cannot hold a slot forever.
  std::chrono::milliseconds handshake_limit{10000};
  // --tls-creds: STARTTLS is required (export_cfg.tls_required must be set too).
  std::shared_ptr<const TlsCredentials> tls;
  // Transmission on an io_uring event loop (uring_loop.h) instead of the reader/writer threads;
  // falls back to threads, with one log line, where io_uring cannot be set up.
  bool io_uring = false;
  // Where the server's log lines go (default: stderr, not verbose).
  Log log;
};

class Connection {
 public:
  // Takes ownership of fd; `id` numbers the connection in log lines.
  Connection(int fd, uint64_t id, Image& image, const ConnectionConfig& cfg, WorkerPool& pool);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Serves the client until the connection ends; closes the socket before returning.
  void serve();
  // Thread-safe. Soft: stop reading requests, finish those in flight, then close. Hard: also
  // abort sends to a client that does not read its replies.
  void interrupt(bool hard);
  const std::string& peer() const { return peer_; }

 private:
  struct Pending {
    Reply reply;
    uint64_t bytes = 0;
  };

  std::optional<Session> handshake();
  void transmission(const Session& session);
  bool acquire(uint64_t bytes);
  void enqueue(Reply reply, uint64_t bytes);
  void dispatch(const CommandContext& ctx, const RequestHeader& h, std::vector<uint8_t> payload,
                uint64_t bytes);
  void writer_loop();
  // Logs an error the client caused; after 20 of them, stays quiet for this connection.
  void log_client_error(const std::string& message);
  void close_fd();

  int fd_;
  std::unique_ptr<Transport> io_;  // plain, or TLS after STARTTLS
  std::mutex fd_mu_;  // guards closing fd_ against interrupt()
  Image& image_;
  const ConnectionConfig& cfg_;
  WorkerPool& pool_;
  std::string peer_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending> queue_;
  uint32_t in_flight_ = 0;        // requests read and not yet replied to (or dropped)
  uint64_t in_flight_bytes_ = 0;  // buffer bytes those requests hold
  bool writer_stop_ = false;
  std::atomic<bool> broken_{false};  // a send failed: the client is gone
  uint32_t errors_logged_ = 0;
  std::thread writer_;
};

}  // namespace keel::nbd
