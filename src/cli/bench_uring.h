// keel bench -i io_uring / native: the benchmark's requests on one io_uring loop through
// Image::map_direct, as keel serve's event loop does them (src/nbd/uring_loop.h): a request the
// image maps directly is one or more read/write SQEs on the image fd; any other request (an
// allocating write, an L2 cache miss, a short or failed transfer) runs on a helper thread pool
// and completes through an eventfd. So the benchmark measures the server's data path.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "keel/image.h"

namespace keel::cli {

struct UringBenchSpec {
  uint64_t count = 0;
  uint64_t depth = 1;
  uint64_t offset = 0;
  uint64_t buffer_size = 4096;
  uint64_t step = 4096;
  int pattern = 0;
  bool write = false;
};

struct UringBenchResult {
  bool ran = false;        // false: io_uring unavailable here (why says so); use threads
  std::string why;
  std::string failure;     // non-empty: a request failed ("Failed request: ...")
  double seconds = 0;
  uint64_t direct = 0;     // requests done by direct I/O
};

UringBenchResult run_bench_uring(Image& image, const UringBenchSpec& spec);

}  // namespace keel::cli
