// NBD_CMD_FLUSH as the protocol defines it: it must make durable every write the server had
// completed (replied to) when the flush arrived, on any connection of the export. A flush that
// a finished flush already covered has nothing to do, and is answered without touching the
// image, as QEMU's block layer does (bdrv_co_flush: write_gen / flushed_gen).
//
// The count of completed writes is a generation: each write, write-zeroes and trim adds one
// after it completes and before its reply goes out, so a client that saw a reply is counted by
// any flush it sends later. A flush reads the generation g when it arrives; a flush that
// arrived later than g's writes and succeeded (flushed_ >= g) covered them, because the
// generation grows one completion at a time: the writes counted by g are a prefix of those
// counted by any larger value. A failed flush disables the skipping (the next flush reaches the
// image and reports its latched error), so no flush after a failure is answered by an earlier
// success it could not cover.
//
// Why it matters: fio --fsync=N at depth 32 sends flushes back to back; each did a full image
// flush (one or two fdatasyncs) where QEMU answered all but the first at once.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>

#include "keel/image.h"
#include "keel/status.h"

namespace keel::nbd {

class FlushGeneration {
 public:
  // After a write, write-zeroes or trim completed (successfully or not), before its reply.
  void write_completed() { gen_.fetch_add(1, std::memory_order_acq_rel); }

  // Flushes `image` unless a flush that arrived after every write counted now succeeded.
  Status flush(Image& image);

  // Flushes answered without touching the image (for tests).
  uint64_t skipped() const { return skipped_.load(std::memory_order_relaxed); }

 private:
  // Starts at 1 with flushed_ 0: the first flush always reaches the image.
  std::atomic<uint64_t> gen_{1};
  std::mutex mu_;
  uint64_t flushed_ = 0;  // the largest generation a successful flush read on arrival (mu_)
  bool failed_ = false;   // a flush failed: every later one reaches the image (mu_)
  std::atomic<uint64_t> skipped_{0};
};

}  // namespace keel::nbd
