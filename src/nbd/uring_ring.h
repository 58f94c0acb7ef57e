// The two io_uring idioms every Keel event loop shares (keel serve's connections,
// src/nbd/uring_loop.cpp; keel bench and keel io's aio requests, src/cli/async_image_io.cpp).
// Header-only, and only where liburing is (KEEL_HAVE_URING).
#pragma once

#ifdef KEEL_HAVE_URING
#include <liburing.h>

#include <cerrno>

namespace keel::nbd {

// A ring that only the calling thread submits to and reaps: completions are then processed
// when the loop waits, in one batch (kernel 6.1+), else as soon as the task returns to user
// space without an interrupt (5.19+), else as before. Returns io_uring_queue_init's result.
inline int init_loop_ring(unsigned entries, io_uring* ring) {
  int rc = -EINVAL;
#ifdef IORING_SETUP_DEFER_TASKRUN
  rc = io_uring_queue_init(entries, ring, IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN);
#endif
#ifdef IORING_SETUP_COOP_TASKRUN
  if (rc == -EINVAL) rc = io_uring_queue_init(entries, ring, IORING_SETUP_COOP_TASKRUN);
#endif
  if (rc == -EINVAL) rc = io_uring_queue_init(entries, ring, 0);
  return rc;
}

// The next free SQE, submitting what is queued when the submission queue is full.
inline io_uring_sqe* next_sqe(io_uring* ring) {
  io_uring_sqe* e = io_uring_get_sqe(ring);
  while (!e) {
    io_uring_submit(ring);
    e = io_uring_get_sqe(ring);
  }
  return e;
}

}  // namespace keel::nbd

#endif  // KEEL_HAVE_URING
