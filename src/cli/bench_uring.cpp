// keel bench on an io_uring loop (see bench_uring.h).
#include "cli/bench_uring.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "cli/async_image_io.h"

namespace keel::cli {

namespace {

// One slot per request in flight, each with its own buffer; a completed slot starts the next
// request, so the depth stays constant (as qemu-img bench).
class UringBench {
 public:
  UringBench(Image& image, const UringBenchSpec& spec)
      : spec_(spec), size_(image.size()),
        io_(image, AsyncImageIo::Mode::kIoUring, [this](uint64_t slot, const Status& st) { done(slot, st); }) {}
  ~UringBench() {
    io_.drain();  // before the buffers go
    for (uint8_t* b : bufs_) std::free(b);
  }

  UringBenchResult run() {
    UringBenchResult r;
    if (!io_.init(&r.why)) return r;
    r.ran = true;
    const uint64_t depth = std::min(spec_.depth, std::max<uint64_t>(spec_.count, 1));
    const size_t alloc = std::max<uint64_t>((spec_.buffer_size + 4095) / 4096 * 4096, 4096);
    bufs_.resize(depth);
    for (auto& b : bufs_) {
      b = static_cast<uint8_t*>(std::aligned_alloc(4096, alloc));
      std::memset(b, spec_.pattern, alloc);
    }
    const auto start = std::chrono::steady_clock::now();
    for (size_t i = 0; i < bufs_.size(); ++i) issue(i);
    while (completed_ < spec_.count && failure_.empty() && io_.in_flight() > 0) io_.wait_some();
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    io_.drain();  // after a failure: the requests still running finish before the slots go
    r.failure = failure_;
    r.direct = io_.direct_requests();
    return r;
  }

 private:
  uint64_t request_offset(uint64_t index) const {
    if (index == 0) return spec_.offset;
    if (size_ == 0) return 0;
    return (spec_.offset + index * spec_.step) % size_;
  }

  void issue(size_t slot) {
    if (next_ >= spec_.count || !failure_.empty()) return;
    const uint64_t offset = request_offset(next_++);
    const uint64_t len = spec_.buffer_size;
    if (offset > size_ || size_ - offset < len) {
      failure_ = "Failed request: Input/output error";
      return;
    }
    io_.submit(slot, spec_.write, offset, bufs_[slot], len);
  }

  void done(uint64_t slot, const Status& st) {
    if (!st.is_ok()) {
      if (failure_.empty())
        failure_ = fmt::format("Failed request: {}", st.err() != 0 ? std::strerror(st.err()) : st.message());
      return;
    }
    ++completed_;
    issue(static_cast<size_t>(slot));
  }

  const UringBenchSpec& spec_;
  const uint64_t size_;
  AsyncImageIo io_;
  std::vector<uint8_t*> bufs_;
  uint64_t next_ = 0, completed_ = 0;
  std::string failure_;
};

}  // namespace

UringBenchResult run_bench_uring(Image& image, const UringBenchSpec& spec) {
  UringBench b(image, spec);
  return b.run();
}

}  // namespace keel::cli
