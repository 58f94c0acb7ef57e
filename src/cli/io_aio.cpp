// keel io's asynchronous commands, aio_read, aio_write and aio_flush, as qemu-io 7.2 runs them:
// the command starts the request and returns 0 (qemu-io counts an aio command as successful once
// submitted, whatever the request's outcome); the report ("read N/N bytes at offset O" and the
// timing line, measured from submission to completion; or "readv failed: ..." /
// "aio_write failed: ..."; a pattern mismatch of aio_read -P) is printed when the request
// completes. Requests run on AsyncImageIo (src/cli/async_image_io.h), the data path of keel
// serve's io_uring loop: with -i io_uring or native, reads and overwrites the image maps go to
// io_uring directly; everything else, and every request with -i threads, on helper threads.
// Completions are collected by aio_flush, before any other command runs, and at exit.
// aio_write -z (write zeroes) and -f (FUA) run synchronously; their report comes at once.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "cli/async_image_io.h"
#include "cli/command.h"
#include "cli/io_data_options.h"
#include "cli/io_output.h"
#include "cli/io_session.h"

namespace keel::cli {

struct IoSession::AioOp {
  bool write = false;
  int64_t offset = 0;
  int64_t total = 0;
  std::unique_ptr<uint8_t, decltype(&std::free)> buf{nullptr, &std::free};
  timespec t0{};
  DataOptions opt;  // -C, -q, -v, -P, ...
};

namespace {

// A buffer the image's O_DIRECT file can take as it is (4096-byte aligned, whole pages).
std::unique_ptr<uint8_t, decltype(&std::free)> aio_buffer(int64_t bytes, int fill) {
  size_t n = (static_cast<size_t>(bytes) + 4095) / 4096 * 4096;
  std::unique_ptr<uint8_t, decltype(&std::free)> b(
      static_cast<uint8_t*>(std::aligned_alloc(4096, n == 0 ? 4096 : n)), &std::free);
  if (b) std::memset(b.get(), fill, n == 0 ? 4096 : n);
  return b;
}

}  // namespace

// Here, where AioOp and AsyncImageIo are complete types.
IoSession::IoSession() = default;
IoSession::~IoSession() { aio_close(); }  // waits for the requests before their AioOps go

void IoSession::aio_close() {
  if (!aio_) return;
  aio_->drain();
  // With KEEL_DEBUG set: how the requests ran (tests/interop/io_aio.sh checks the io_uring path).
  if (std::getenv("KEEL_DEBUG"))
    std::fprintf(stderr, "keel: debug: aio: %llu requests, %llu by direct I/O\n",
                 static_cast<unsigned long long>(aio_next_id_),
                 static_cast<unsigned long long>(aio_->direct_requests()));
  aio_.reset();
  aio_next_id_ = 0;
}

int IoSession::aio_start(std::unique_ptr<AioOp> op) {
  if (!aio_) {
    auto done = [this](uint64_t id, const Status& st) { aio_complete(id, st); };
    std::vector<AsyncImageIo::Mode> modes = {AsyncImageIo::Mode::kThreads};
    if (opened_.options.aio == AioMode::kIoUring) modes.insert(modes.begin(), AsyncImageIo::Mode::kIoUring);
    std::string why;
    for (auto mode : modes) {  // without io_uring here, helper threads do it
      auto a = std::make_unique<AsyncImageIo>(*image_, mode, done);
      if (a->init(&why)) {
        aio_ = std::move(a);
        break;
      }
    }
    if (!aio_) {
      print_error(fmt::format("cannot start asynchronous requests: {}", why));
      return -EIO;
    }
  }
  const uint64_t id = aio_next_id_++;
  AioOp& o = *op;
  aio_ops_[id] = std::move(op);
  o.t0 = io_now();
  if (int rc = check_range(static_cast<uint64_t>(o.offset), static_cast<uint64_t>(o.total))) {
    aio_complete(id, Status(Code::kIo, "request out of range", -rc));
    return 0;
  }
  aio_->submit(id, o.write, static_cast<uint64_t>(o.offset), o.buf.get(), static_cast<uint64_t>(o.total));
  return 0;
}

void IoSession::aio_complete(uint64_t id, const Status& st) {
  auto it = aio_ops_.find(id);
  if (it == aio_ops_.end()) return;
  std::unique_ptr<AioOp> op = std::move(it->second);
  aio_ops_.erase(it);
  timespec t = io_elapsed_since(op->t0);
  if (!st.is_ok()) {
    std::printf("%s failed: %s\n", op->write ? "aio_write" : "readv", std::strerror(io_errno_of(st)));
    std::fflush(stdout);
    return;
  }
  if (!op->write && op->opt.pflag) {
    const uint8_t* p = op->buf.get();
    for (int64_t i = 0; i < op->total; ++i) {
      if (p[i] != static_cast<uint8_t>(op->opt.pattern)) {
        std::printf("Pattern verification failed at offset %lld, %lld bytes\n",
                    static_cast<long long>(op->offset), static_cast<long long>(op->total));
        break;
      }
    }
  }
  if (!op->opt.quiet) {
    if (op->opt.verbose && !op->write) io_dump_buffer(op->buf.get(), op->offset, op->total);
    io_print_report(op->write ? "wrote" : "read", t, op->offset, op->total, op->total, 1, op->opt.terse);
  }
  std::fflush(stdout);
}

void IoSession::aio_drain() {
  if (aio_) aio_->drain();
}

int IoSession::cmd_aio_flush(const Args&) {
  aio_drain();
  return 0;
}

int IoSession::cmd_aio_read(const Args& argv) {
  auto op = std::make_unique<AioOp>();
  std::vector<std::string> ops;
  if (int rc = io_parse_data_options(DataCommand::kAioRead, argv, &op->opt, &ops)) return rc;
  if (ops.size() < 2) return io_usage(argv);
  op->offset = io_cvtnum(ops[0]);
  if (op->offset < 0) return static_cast<int>(op->offset);
  std::vector<int64_t> lens;
  if (!io_parse_lengths(ops, 1, &lens, &op->total)) return -EINVAL;
  op->buf = aio_buffer(op->total, 0xab);
  if (!op->buf) return -ENOMEM;
  return aio_start(std::move(op));
}

int IoSession::cmd_aio_write(const Args& argv) {
  auto op = std::make_unique<AioOp>();
  op->write = true;
  std::vector<std::string> ops;
  if (int rc = io_parse_data_options(DataCommand::kAioWrite, argv, &op->opt, &ops)) return rc;
  const bool fua = op->opt.fua, unmap = op->opt.unmap, zflag = op->opt.zero;
  if (ops.size() < 2) return io_usage(argv);
  // qemu-io 7.2 has a "-z and -P cannot be specified at the same time" check here, but its -P
  // never sets the flag that check reads: aio_write -z -P writes zeros, and so does keel io.
  if (unmap && !zflag) {
    std::printf("-u requires -z to be specified\n");
    return -EINVAL;
  }
  if (zflag && ops.size() != 2) {
    std::printf("-z supports only a single length parameter\n");
    return -EINVAL;
  }
  op->offset = io_cvtnum(ops[0]);
  if (op->offset < 0) return static_cast<int>(op->offset);
  std::vector<int64_t> lens;
  if (!io_parse_lengths(ops, 1, &lens, &op->total)) return -EINVAL;
  if (!zflag && !fua) {
    op->buf = aio_buffer(op->total, op->opt.pattern);
    if (!op->buf) return -ENOMEM;
    return aio_start(std::move(op));
  }
  // Write zeroes and FUA writes: synchronously, reported at once.
  const uint64_t offset = static_cast<uint64_t>(op->offset), total = static_cast<uint64_t>(op->total);
  timespec t0 = io_now();
  int rc = check_range(offset, total);
  if (rc == 0 && total > 0) {
    Status st;
    if (zflag) {
      ZeroFlags z;
      z.may_unmap = unmap;
      z.fua = fua;
      st = image_->write_zeroes(offset, total, z);
    } else {
      std::vector<uint8_t> buf(static_cast<size_t>(total), static_cast<uint8_t>(op->opt.pattern));
      st = image_->write(offset, buf, fua);
    }
    if (!st.is_ok()) rc = -io_errno_of(st);
  }
  timespec t = io_elapsed_since(t0);
  if (rc < 0) {
    std::printf("aio_write failed: %s\n", std::strerror(-rc));
    return 0;
  }
  if (!op->opt.quiet) io_print_report("wrote", t, op->offset, op->total, op->total, 1, op->opt.terse);
  return 0;
}

}  // namespace keel::cli
