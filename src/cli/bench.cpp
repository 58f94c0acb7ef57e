// keel bench: a simple I/O benchmark on an image, with qemu-img 7.2 bench's flags, defaults,
// output lines, error messages and exit codes, so the same command line measures both engines.
//   keel bench [-c count] [-d depth] [-f fmt] [--flush-interval=N] [-i aio] [-n] [--no-drain]
//              [-o offset] [--pattern=N] [-q] [-s buffer_size] [-S step_size] [-t cache] [-w] [-U]
//              filename
// Request i goes to offset (offset + i * step) mod image size (qemu-img's bench_cb steps and wraps
// this way; the first request is at `offset` itself). A request that does not fit in the image
// fails with EIO, as in QEMU's block layer.
//
// qemu-img keeps `depth` asynchronous requests in flight; keel's API is synchronous and
// thread-safe, so `depth` worker threads each take the next request index from a shared counter.
// With -i io_uring or native (and no --flush-interval) the requests run instead on one io_uring
// loop through Image::map_direct, as keel serve --aio=io_uring runs them (bench_uring.h).
// --flush-interval=N: when the number of requests not yet started is a multiple of N (counted
// from the end, as qemu-img does), the requests started so far are drained and the image flushed
// before the next one starts; with --no-drain the flush is issued (to a flusher thread) without
// waiting. The clock stops when the last request completes, before the flush that follows it.
//
// Arguments are parsed with getopt_long and qemu-img's option string, so that misuse gets
// qemu-img's messages. Differences: -q, as in qemu-img 7.2, does
// not silence the two result lines; -d 0 with requests to send is refused ("Invalid queue depth
// specified") where qemu-img would wait forever; an empty image gives "Failed request" where
// qemu-img 7.2 dies of a division by zero.
#include <getopt.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "cli/bench_uring.h"
#include "cli/command.h"
#include "cli/image_name.h"
#include "cli/util.h"

namespace keel::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct BenchArgs {
  uint64_t count = 75000;
  uint64_t depth = 64;
  uint64_t offset = 0;
  uint64_t buffer_size = 4096;
  uint64_t step = 0;  // 0 = buffer_size
  uint64_t flush_interval = 0;
  int pattern = 0;
  bool drain_on_flush = true;
  bool write = false;
  bool native_aio = false;
  bool force_share = false;
  std::string format;
  std::string cache;  // empty = writeback
  std::string aio;
  ImageNameArgs names;  // --image-opts, --object
  std::string filename;
};

enum { kOptFlushInterval = 256, kOptPattern, kOptNoDrain, kOptImageOpts, kOptObject };

// qemu_strtoul(text, NULL, 0, &res) followed by `res > max`: the whole text must be a number.
std::optional<uint64_t> parse_ulong(const char* text, uint64_t max) {
  char* end = nullptr;
  errno = 0;
  unsigned long v = std::strtoul(text, &end, 0);
  if (end == text || *end != '\0' || errno == ERANGE || v > max) return std::nullopt;
  return v;
}

// Parses argv as qemu-img's img_bench does. Returns the exit code to stop with, or nullopt.
std::optional<int> parse_args(std::vector<std::string> words, BenchArgs* a) {
  std::vector<char*> argv;
  for (auto& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);
  const int argc = static_cast<int>(words.size());
  static const option long_options[] = {
      {"help", no_argument, nullptr, 'h'},
      {"flush-interval", required_argument, nullptr, kOptFlushInterval},
      {"pattern", required_argument, nullptr, kOptPattern},
      {"no-drain", no_argument, nullptr, kOptNoDrain},
      {"force-share", no_argument, nullptr, 'U'},
      {"image-opts", no_argument, nullptr, kOptImageOpts},
      {"object", required_argument, nullptr, kOptObject},
      {nullptr, 0, nullptr, 0},
  };
  optind = 0;  // glibc: reinitialize
  opterr = 0;
  for (;;) {
    int c = getopt_long(argc, argv.data(), ":hc:d:f:ni:o:qs:S:t:wU", long_options, nullptr);
    if (c == -1) break;
    auto fail = [](const std::string& message) {
      print_error(message);
      return std::optional<int>(1);
    };
    switch (c) {
      case ':':
        report_usage_error(fmt::format("missing argument for option '{}'", argv[optind - 1]));
        return 1;
      case '?':
        report_usage_error(fmt::format("unrecognized option '{}'", argv[optind - 1]));
        return 1;
      case 'h':
        std::printf(
            "usage: keel bench [-c count] [-d depth] [-f fmt] [--flush-interval=flush_interval] "
            "[-i aio] [-n] [--no-drain] [-o offset] [--pattern=pattern] [-q] [-s buffer_size] "
            "[-S step_size] [-t cache] [-w] [-U] filename\n");
        return 0;
      case 'c': {
        auto v = parse_ulong(optarg, INT_MAX);
        if (!v) return fail("Invalid request count specified");
        a->count = *v;
        break;
      }
      case 'd': {
        auto v = parse_ulong(optarg, INT_MAX);
        if (!v) return fail("Invalid queue depth specified");
        a->depth = *v;
        break;
      }
      case 'f': a->format = optarg; break;
      case 'n': a->native_aio = true; break;
      case 'i':
        if (std::strcmp(optarg, "native") == 0) a->native_aio = true;
        else if (std::strcmp(optarg, "io_uring") == 0) a->aio = optarg;
        else if (std::strcmp(optarg, "threads") != 0)
          return fail(fmt::format("Invalid aio option: {}", optarg));
        break;
      case 'o': {
        auto v = parse_size_arg("offset", optarg);
        if (!v) return 1;
        a->offset = *v;
        break;
      }
      case 'q': break;  // qemu-img 7.2 prints its result lines even with -q
      case 's': {
        auto v = parse_size_arg("buffer size", optarg, 0, INT_MAX);
        if (!v) return 1;
        a->buffer_size = *v;
        break;
      }
      case 'S': {
        auto v = parse_size_arg("step_size", optarg, 0, INT_MAX);
        if (!v) return 1;
        a->step = *v;
        break;
      }
      case 't':
        if (!parse_cache_mode(optarg)) return fail("Invalid cache mode");
        a->cache = optarg;
        break;
      case 'w': a->write = true; break;
      case 'U': a->force_share = true; break;
      case kOptImageOpts: a->names.image_opts = true; break;
      case kOptObject: a->names.objects.emplace_back(optarg); break;
      case kOptPattern: {
        auto v = parse_ulong(optarg, 0xff);
        if (!v) return fail("Invalid pattern byte specified");
        a->pattern = static_cast<int>(*v);
        break;
      }
      case kOptFlushInterval: {
        auto v = parse_ulong(optarg, INT_MAX);
        if (!v) return fail("Invalid flush interval specified");
        a->flush_interval = *v;
        break;
      }
      case kOptNoDrain: a->drain_on_flush = false; break;
      default: break;
    }
  }
  if (optind != argc - 1) {
    report_usage_error("Expecting one image file name");
    return 1;
  }
  a->filename = argv[argc - 1];
  if (a->step == 0) a->step = a->buffer_size;
  return std::nullopt;
}

std::string status_text(const Status& st) {
  return st.err() != 0 ? std::strerror(st.err()) : st.message();
}

// The run: `depth` workers, the request counter, the flush schedule and the first failure.
class BenchRun {
 public:
  BenchRun(Image& image, const BenchArgs& a) : image_(image), a_(a), size_(image.size()) {
    // qemu-img starts `depth` requests before it first looks at the schedule, so the first
    // batch ends at the first s >= depth with (count - s) a multiple of the interval.
    if (a.flush_interval) {
      const uint64_t after_burst = a.count - std::min(a.depth, a.count);
      batch_end_ = a.count - after_burst / a.flush_interval * a.flush_interval;
    }
  }

  // Runs every request; returns the seconds from the first request to the last completion.
  std::optional<double> run() {
    start_ = Clock::now();
    end_ = start_;
    std::thread flusher;
    if (a_.flush_interval && !a_.drain_on_flush) flusher = std::thread([this] { flusher_loop(); });
    std::vector<std::thread> workers;
    const uint64_t threads = std::min(a_.depth, a_.count);
    for (uint64_t t = 0; t < threads; ++t) workers.emplace_back([this] { worker(); });
    for (auto& w : workers) w.join();
    if (flusher.joinable()) {
      {
        std::lock_guard lock(mu_);
        workers_done_ = true;
      }
      cv_.notify_all();
      flusher.join();
    }
    // The flush qemu-img issues after the last request (not timed there either).
    if (failure_.empty() && a_.flush_interval && a_.drain_on_flush && a_.count > 0) {
      Status st = image_.flush();
      if (!st.is_ok()) fail(fmt::format("Failed request: {}", status_text(st)));
    }
    if (!failure_.empty()) {
      print_error(failure_);
      return std::nullopt;
    }
    return std::chrono::duration<double>(end_ - start_).count();
  }

 private:
  uint64_t request_offset(uint64_t index) const {
    if (index == 0) return a_.offset;
    if (size_ == 0) return 0;
    return (a_.offset + index * a_.step) % size_;
  }

  void fail(const std::string& message) {
    std::lock_guard lock(mu_);
    if (failure_.empty()) failure_ = message;
    failed_ = true;
    cv_.notify_all();
  }

  Status request(uint64_t index, std::span<uint8_t> buf) {
    const uint64_t offset = request_offset(index);
    if (offset > size_ || size_ - offset < buf.size()) return io_error(EIO, "request past the end");
    if (buf.empty()) return Status::ok();
    return a_.write ? image_.write(offset, buf) : image_.read(offset, buf);
  }

  void completed_one() {
    if (completed_.fetch_add(1) + 1 == a_.count) {
      std::lock_guard lock(mu_);
      end_ = Clock::now();
    }
  }

  // Claims the next request index; nullopt when there is none (or a request failed).
  std::optional<uint64_t> claim(bool after_completion) {
    if (!a_.flush_interval) {
      uint64_t i = next_.fetch_add(1);
      if (i >= a_.count || failed_) return std::nullopt;
      return i;
    }
    if (!a_.drain_on_flush) {
      uint64_t i = next_.fetch_add(1);
      // qemu-img checks after each completion how many requests are still to be sent.
      uint64_t remaining = i >= a_.count ? 0 : a_.count - i;
      if (after_completion && remaining % a_.flush_interval == 0) {
        std::lock_guard lock(mu_);
        ++pending_flushes_;
        cv_.notify_all();
      }
      if (i >= a_.count || failed_) return std::nullopt;
      return i;
    }
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return failed_ || next_ < batch_end_ || next_ >= a_.count; });
    if (failed_ || next_ >= a_.count) return std::nullopt;
    return next_++;
  }

  // Drain mode: the worker that completes a batch flushes and opens the next one.
  void end_of_request_drained() {
    std::unique_lock lock(mu_);
    ++batch_completed_;
    if (batch_completed_ != batch_end_ || batch_end_ >= a_.count) return;
    lock.unlock();
    Status st = image_.flush();
    if (!st.is_ok()) return fail(fmt::format("Failed request: {}", status_text(st)));
    lock.lock();
    batch_end_ = std::min(batch_end_ + a_.flush_interval, a_.count);
    cv_.notify_all();
  }

  void worker() {
    const size_t alloc = std::max<uint64_t>((a_.buffer_size + 4095) / 4096 * 4096, 4096);
    std::unique_ptr<uint8_t, decltype(&std::free)> mem(
        static_cast<uint8_t*>(std::aligned_alloc(4096, alloc)), &std::free);
    std::memset(mem.get(), a_.pattern, alloc);
    std::span<uint8_t> buf(mem.get(), a_.buffer_size);
    for (bool after = false;; after = true) {
      auto index = claim(after);
      if (!index) return;
      Status st = request(*index, buf);
      if (!st.is_ok()) return fail(fmt::format("Failed request: {}", status_text(st)));
      completed_one();
      if (a_.flush_interval && a_.drain_on_flush) end_of_request_drained();
    }
  }

  void flusher_loop() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return pending_flushes_ > 0 || workers_done_ || failed_; });
      if (failed_ || (pending_flushes_ == 0 && workers_done_)) return;
      --pending_flushes_;
      lock.unlock();
      Status st = image_.flush();
      lock.lock();
      if (!st.is_ok()) {
        if (failure_.empty()) failure_ = fmt::format("Failed flush request: {}", status_text(st));
        failed_ = true;
        cv_.notify_all();
        return;
      }
    }
  }

  Image& image_;
  const BenchArgs& a_;
  const uint64_t size_;
  std::atomic<uint64_t> next_{0};
  std::atomic<uint64_t> completed_{0};
  std::atomic<bool> failed_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t batch_end_ = 0;        // drain mode: requests [0, batch_end_) may start
  uint64_t batch_completed_ = 0;  // drain mode: completed requests
  uint64_t pending_flushes_ = 0;  // no-drain mode: flushes asked for, not started
  bool workers_done_ = false;
  std::string failure_;
  Clock::time_point start_, end_;
};

int run_bench(const std::vector<std::string>& words) {
  BenchArgs a;
  if (auto rc = parse_args(words, &a)) return *rc;
  if (!a.write && a.flush_interval) {
    print_error("--flush-interval is only available in write tests");
    return 1;
  }
  if (a.flush_interval && a.flush_interval < a.depth) {
    print_error("Flush interval can't be smaller than depth");
    return 1;
  }
  if (a.depth == 0 && a.count > 0) {
    print_error("Invalid queue depth specified");
    return 1;
  }
  if (!a.format.empty() && !is_known_format(a.format)) {
    print_error(fmt::format("Could not open '{}': Unknown driver '{}'", a.filename, a.format));
    return 1;
  }
  if (a.write && a.force_share) {
    print_error(fmt::format(
        "Could not open '{}': force-share=on can only be used with read-only images", a.filename));
    return 1;
  }
  if (a.native_aio && a.cache != "none" && a.cache != "off" && a.cache != "directsync") {
    print_error(fmt::format("Could not open '{}': aio=native was specified, but it requires "
                            "cache.direct=on, which was not specified.",
                            a.filename));
    return 1;
  }
  OpenFlags flags;
  a.names.apply(&flags);
  flags.format = a.format;
  flags.force_share = a.force_share;
  flags.cache = a.cache;
  flags.aio = a.aio;
  flags.read_only = !a.write;
  auto image = open_image_or_report(a.filename, flags, CacheMode::kWriteback);
  if (!image) return 1;

  const uint64_t step = a.step;
  std::printf("Sending %d %s requests, %d bytes each, %d in parallel (starting at offset %llu, "
              "step size %d)\n",
              static_cast<int>(a.count), a.write ? "write" : "read", static_cast<int>(a.buffer_size),
              static_cast<int>(a.depth), static_cast<unsigned long long>(a.offset),
              static_cast<int>(step));
  if (a.flush_interval)
    std::printf("Sending flush every %d requests\n", static_cast<int>(a.flush_interval));
  std::fflush(stdout);

  std::optional<double> seconds;
  if ((a.aio == "io_uring" || a.native_aio) && !a.flush_interval) {
    // The server's data path: one io_uring loop through Image::map_direct (bench_uring.h).
    UringBenchSpec spec{a.count, a.depth, a.offset, a.buffer_size, a.step, a.pattern, a.write};
    UringBenchResult u = run_bench_uring(*image, spec);
    if (!u.failure.empty()) {
      print_error(u.failure);
      return 1;
    }
    if (u.ran) {
      seconds = u.seconds;
    } else {
      print_error(fmt::format("io_uring unavailable ({}); using threads", u.why));
    }
  }
  if (!seconds) {
    BenchRun run(*image, a);
    seconds = run.run();
  }
  if (!seconds) return 1;  // qemu-img exits at once, without closing the image
  std::printf("Run completed in %3.3f seconds.\n", *seconds);
  std::fflush(stdout);
  Status st = image->close();
  if (!st.is_ok()) {
    print_error(fmt::format("Could not close '{}': {}", a.filename, st.message()));
    return 1;
  }
  return 0;
}

std::function<int()> setup_bench(CLI::App* sub) {
  // Every argument goes to run_bench untouched: getopt_long parses them as qemu-img does.
  sub->prefix_command();
  sub->allow_extras();
  sub->footer(
      "Options (qemu-img bench's, parsed as qemu-img parses them):\n"
      "  -c count            number of requests (default 75000)\n"
      "  -d depth            requests in parallel (default 64)\n"
      "  -f fmt              image format (default: probe)\n"
      "  --flush-interval=N  flush after every N requests (write tests; N >= depth)\n"
      "  --no-drain          do not wait for in-flight requests before a flush\n"
      "  -i aio              threads (default), native (needs -t none) or io_uring\n"
      "  -n                  same as -i native\n"
      "  -o offset           offset of the first request (default 0)\n"
      "  --pattern=N         byte written by write tests (default 0)\n"
      "  -q                  accepted (the result lines are printed anyway, as by qemu-img)\n"
      "  -s buffer_size      bytes per request (default 4096)\n"
      "  -S step_size        offset increment between requests (default: buffer_size)\n"
      "  -t cache            none, writeback (default), writethrough, directsync, unsafe\n"
      "  -w                  write test (default: read)\n"
      "  -U                  open without taking image locks (read tests only)\n"
      "  --image-opts        FILE is an option string (driver=qcow2,file.filename=F,...)\n"
      "  --object secret,... a secret for encrypt.key-secret=ID\n"
      "Request offsets wrap around at the end of the image. Exit status: 0 on success, 1 on any "
      "error.");
  return [sub] {
    std::vector<std::string> words{"bench"};
    for (const auto& w : sub->remaining()) words.push_back(w);
    return run_bench(words);
  };
}

}  // namespace

KEEL_COMMAND(bench, "bench", "Run a simple I/O benchmark on an image (qemu-img bench)", setup_bench);

}  // namespace keel::cli
