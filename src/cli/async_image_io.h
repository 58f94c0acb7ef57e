// Asynchronous reads and writes of an Image, as keel serve's io_uring loop does them
// (src/nbd/uring_loop.cpp): a request Image::map_direct maps is one or more read/write SQEs on
// the image's own file, answered without a thread hop; any other request (an allocating write, an
// L2 cache miss, a short or failed transfer, or every request without io_uring) runs on a small
// pool of helper threads and completes through an eventfd. `keel bench -i io_uring` and keel
// io's aio_read/aio_write run on it, so they measure and exercise the server's data path.
//
// One thread owns an AsyncImageIo: it submits, and completions are reported to it, one call of
// `on_done` per request, only from inside wait_some() (never from submit: a request that needs no
// I/O, such as a read of holes, is reported by the next wait_some, so callers may submit from
// on_done without recursion; on_done must not call wait_some or drain).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "keel/image.h"
#include "keel/status.h"

namespace keel::cli {

class AsyncImageIo {
 public:
  enum class Mode { kIoUring, kThreads };
  // Called once per request with its id and outcome (OK only when every byte was transferred).
  using Done = std::function<void(uint64_t id, const Status& st)>;

  AsyncImageIo(Image& image, Mode mode, Done on_done);
  // Waits for every request still in flight.
  ~AsyncImageIo();
  AsyncImageIo(const AsyncImageIo&) = delete;
  AsyncImageIo& operator=(const AsyncImageIo&) = delete;

  // Sets up the ring (kIoUring) and the eventfd. False with a reason when that is impossible;
  // the caller may then use Mode::kThreads.
  bool init(std::string* why);

  // Starts reading (or writing) buf[0, len) at offset. buf must stay valid, and not be touched,
  // until on_done(id) has run. Buffers aligned to 4096 bytes can go straight to an O_DIRECT file.
  void submit(uint64_t id, bool write, uint64_t offset, uint8_t* buf, uint64_t len);

  // Reports at least one completion if any request is in flight (blocking until one is done),
  // every completion that is ready otherwise; returns at once when nothing is in flight.
  void wait_some();
  // Waits until nothing is in flight.
  void drain();

  uint64_t in_flight() const;
  uint64_t direct_requests() const;  // completed by direct I/O

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace keel::cli
