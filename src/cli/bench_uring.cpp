// keel bench on an io_uring loop (see bench_uring.h).
#include "cli/bench_uring.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include <fmt/format.h>

#include "nbd/worker_pool.h"

#ifdef KEEL_HAVE_URING
#include <liburing.h>
#endif

namespace keel::cli {

#ifndef KEEL_HAVE_URING

UringBenchResult run_bench_uring(Image&, const UringBenchSpec&) {
  UringBenchResult r;
  r.why = "built without liburing";
  return r;
}

#else

namespace {

// ours, because: helper threads for the requests map_direct refuses (allocating writes), as
// keel serve's worker pool runs them.
constexpr size_t kHelperThreads = 4;
constexpr uint64_t kEventTag = ~0ull;

class UringBench {
 public:
  UringBench(Image& image, const UringBenchSpec& spec) : image_(image), spec_(spec), size_(image.size()) {}
  ~UringBench() {
    helpers_.reset();  // joins: no job can touch the eventfd afterwards
    if (ring_ok_) io_uring_queue_exit(&ring_);
    if (event_fd_ >= 0) ::close(event_fd_);
    for (auto& s : slots_) std::free(s.buf);
  }

  UringBenchResult run() {
    UringBenchResult r;
    const uint64_t depth = std::min(spec_.depth, std::max<uint64_t>(spec_.count, 1));
    // As keel serve's loop (src/nbd/uring_loop.cpp): one thread submits and reaps.
    const unsigned entries = static_cast<unsigned>(std::min<uint64_t>(depth * 2 + 8, 4096));
    int rc = -EINVAL;
#ifdef IORING_SETUP_DEFER_TASKRUN
    rc = io_uring_queue_init(entries, &ring_, IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN);
#endif
#ifdef IORING_SETUP_COOP_TASKRUN
    if (rc == -EINVAL) rc = io_uring_queue_init(entries, &ring_, IORING_SETUP_COOP_TASKRUN);
#endif
    if (rc == -EINVAL) rc = io_uring_queue_init(entries, &ring_, 0);
    if (rc < 0) {
      r.why = fmt::format("io_uring_queue_init: {}", std::strerror(-rc));
      return r;
    }
    ring_ok_ = true;
    event_fd_ = ::eventfd(0, EFD_CLOEXEC);
    if (event_fd_ < 0) {
      r.why = fmt::format("eventfd: {}", std::strerror(errno));
      return r;
    }
    r.ran = true;
    helpers_ = std::make_unique<nbd::WorkerPool>(kHelperThreads);
    const size_t alloc = std::max<uint64_t>((spec_.buffer_size + 4095) / 4096 * 4096, 4096);
    slots_.resize(depth);
    for (auto& s : slots_) {
      s.buf = static_cast<uint8_t*>(std::aligned_alloc(4096, alloc));
      std::memset(s.buf, spec_.pattern, alloc);
    }
    arm_event();
    const auto start = std::chrono::steady_clock::now();
    for (size_t i = 0; i < slots_.size(); ++i) issue(i);
    while (completed_ < spec_.count && failure_.empty()) {
      io_uring_submit_and_wait(&ring_, 1);
      io_uring_cqe* cqe;
      unsigned head, n = 0;
      io_uring_for_each_cqe(&ring_, head, cqe) {
        on_cqe(io_uring_cqe_get_data64(cqe), cqe->res);
        ++n;
      }
      io_uring_cq_advance(&ring_, n);
    }
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    // After a failure: let the I/O and helper jobs still running finish before the slots go.
    while (helpers_busy_ > 0 || direct_in_flight_ > 0) {
      io_uring_submit_and_wait(&ring_, 1);
      io_uring_cqe* cqe;
      unsigned head, n = 0;
      io_uring_for_each_cqe(&ring_, head, cqe) {
        on_cqe(io_uring_cqe_get_data64(cqe), cqe->res);
        ++n;
      }
      io_uring_cq_advance(&ring_, n);
    }
    r.failure = failure_;
    r.direct = direct_;
    return r;
  }

 private:
  struct Slot {
    uint8_t* buf = nullptr;
    uint64_t offset = 0;
    DirectIo ticket;
    uint32_t pending = 0;
    uint64_t bytes = 0;
    bool failed = false;
    Status helper_status;
  };

  uint64_t request_offset(uint64_t index) const {
    if (index == 0) return spec_.offset;
    if (size_ == 0) return 0;
    return (spec_.offset + index * spec_.step) % size_;
  }

  io_uring_sqe* sqe() {
    io_uring_sqe* e = io_uring_get_sqe(&ring_);
    while (!e) {
      io_uring_submit(&ring_);
      e = io_uring_get_sqe(&ring_);
    }
    return e;
  }

  void arm_event() {
    io_uring_sqe* e = sqe();
    io_uring_prep_read(e, event_fd_, &event_buf_, sizeof event_buf_, 0);
    io_uring_sqe_set_data64(e, kEventTag);
  }

  // Starts the next request in slot i, if any is left. Requests that need no I/O (length 0, or a
  // read of holes only) complete here, in a loop rather than by recursion.
  void issue(size_t i) {
    while (issue_one(i)) {
    }
  }

  // Starts one request in slot i; true when it already completed (the slot is free again).
  bool issue_one(size_t i) {
    if (next_ >= spec_.count || !failure_.empty()) return false;
    Slot& s = slots_[i];
    s.offset = request_offset(next_++);
    const uint64_t len = spec_.buffer_size;
    if (s.offset > size_ || size_ - s.offset < len) {
      failure_ = "Failed request: Input/output error";
      return false;
    }
    if (len == 0) {
      ++completed_;
      return true;
    }
    if (auto t = image_.map_direct(s.offset, len, spec_.write); t && 4096 % t->alignment() == 0) {
      s.ticket = std::move(*t);
      s.pending = 0;
      s.bytes = 0;
      s.failed = false;
      ++direct_in_flight_;
      uint64_t pos = 0;
      for (const DirectSegment& seg : s.ticket.segments()) {
        if (seg.zeros()) {  // a hole or zero cluster of a read: no I/O
          std::memset(s.buf + pos, 0, seg.length);
          s.bytes += seg.length;
          pos += seg.length;
          continue;
        }
        io_uring_sqe* e = sqe();
        if (spec_.write) {
          io_uring_prep_write(e, seg.fd, s.buf + pos, static_cast<unsigned>(seg.length), seg.host_offset);
        } else {
          io_uring_prep_read(e, seg.fd, s.buf + pos, static_cast<unsigned>(seg.length), seg.host_offset);
        }
        io_uring_sqe_set_data64(e, i);
        pos += seg.length;
        ++s.pending;
      }
      if (s.pending > 0) return false;
      --direct_in_flight_;
      s.ticket.release();
      ++direct_;
      ++completed_;
      return true;
    }
    to_helper(i);
    return false;
  }

  void to_helper(size_t i) {
    ++helpers_busy_;
    helpers_->submit([this, i] {
      Slot& s = slots_[i];
      std::span<uint8_t> buf(s.buf, spec_.buffer_size);
      s.helper_status = spec_.write ? image_.write(s.offset, buf) : image_.read(s.offset, buf);
      std::lock_guard lock(done_mu_);
      done_.push_back(i);
      uint64_t one = 1;
      [[maybe_unused]] ssize_t rc = ::write(event_fd_, &one, sizeof one);
    });
  }

  void drain_done() {
    std::vector<size_t> local;
    {
      std::lock_guard lock(done_mu_);
      local.swap(done_);
    }
    for (size_t i : local) {
      --helpers_busy_;
      Slot& s = slots_[i];
      if (!s.helper_status.is_ok()) {
        if (failure_.empty())
          failure_ = fmt::format("Failed request: {}", s.helper_status.err() != 0
                                                           ? std::strerror(s.helper_status.err())
                                                           : s.helper_status.message());
        continue;
      }
      ++completed_;
      issue(i);
    }
    arm_event();
  }

  void on_cqe(uint64_t tag, int res) {
    if (tag == kEventTag) return drain_done();
    Slot& s = slots_[tag];
    if (res < 0) {
      s.failed = true;
    } else {
      s.bytes += static_cast<uint64_t>(res);
    }
    if (--s.pending > 0) return;
    --direct_in_flight_;
    s.ticket.release();
    if (s.failed || s.bytes != spec_.buffer_size) return to_helper(tag);  // the engine redoes it
    ++direct_;
    ++completed_;
    issue(tag);
  }

  Image& image_;
  const UringBenchSpec& spec_;
  const uint64_t size_;
  io_uring ring_{};
  bool ring_ok_ = false;
  int event_fd_ = -1;
  uint64_t event_buf_ = 0;
  std::unique_ptr<nbd::WorkerPool> helpers_;
  std::vector<Slot> slots_;
  uint64_t next_ = 0, completed_ = 0, direct_ = 0;
  uint64_t helpers_busy_ = 0;
  uint64_t direct_in_flight_ = 0;
  std::mutex done_mu_;
  std::vector<size_t> done_;
  std::string failure_;
};

}  // namespace

UringBenchResult run_bench_uring(Image& image, const UringBenchSpec& spec) {
  UringBench b(image, spec);
  return b.run();
}

#endif  // KEEL_HAVE_URING

}  // namespace keel::cli
