// The recording FUSE block device (see block_recorder.h), on libfuse3's low-level API.
#define FUSE_USE_VERSION 34
#include "fuse/block_recorder.h"

#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <linux/falloc.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <thread>
#include <vector>

#include "io/recording_file.h"

namespace keel::fuse {
namespace {

class FuseBlockRecorder final : public proof::BlockRecorder {
 public:
  ~FuseBlockRecorder() override { stop(); }
  const std::string& device_file() const override { return mountpoint_; }
  std::shared_ptr<Recording> recording() const override { return rec_; }
  void fail_next_flush() override { fail_flush_ = true; }
  uint64_t failed_flushes() const override { return failed_; }
  void stop() override {
    if (!se_) return;
    (void)::umount2(mountpoint_.c_str(), MNT_DETACH);  // the loop's read of /dev/fuse ends
    if (thread_.joinable()) thread_.join();
    fuse_session_unmount(se_);
    fuse_session_destroy(se_);
    se_ = nullptr;
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  static FuseBlockRecorder& of(fuse_req_t req) { return *static_cast<FuseBlockRecorder*>(fuse_req_userdata(req)); }

  static void op_lookup(fuse_req_t req, fuse_ino_t, const char*) { fuse_reply_err(req, ENOENT); }
  static void op_getattr(fuse_req_t req, fuse_ino_t, fuse_file_info*) {
    struct stat a {};
    if (::fstat(of(req).fd_, &a) != 0) return (void)fuse_reply_err(req, errno);
    a.st_ino = FUSE_ROOT_ID;
    a.st_mode = S_IFREG | 0600;
    a.st_nlink = 1;
    fuse_reply_attr(req, &a, 0.0);
  }
  static void op_open(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
    fi->direct_io = 1;  // no page cache in between: every write of the loop device arrives here
    fuse_reply_open(req, fi);
  }
  static void op_read(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info*) {
    std::vector<char> buf(size);
    ssize_t n = ::pread(of(req).fd_, buf.data(), size, off);
    if (n < 0) return (void)fuse_reply_err(req, errno);
    fuse_reply_buf(req, buf.data(), static_cast<size_t>(n));
  }
  static void record_write(fuse_req_t req, const char* data, size_t size, off_t off) {
    FuseBlockRecorder& r = of(req);
    FileOp op;
    op.kind = FileOpKind::kWrite;
    op.offset = static_cast<uint64_t>(off);
    op.length = size;
    op.data.assign(reinterpret_cast<const uint8_t*>(data), reinterpret_cast<const uint8_t*>(data) + size);
    Status s = r.rec_->record(std::move(op), [&]() -> Status {
      size_t done = 0;
      while (done < size) {
        ssize_t n = ::pwrite(r.fd_, data + done, size - done, off + static_cast<off_t>(done));
        if (n < 0) return io_error(errno, "recorder pwrite");
        done += static_cast<size_t>(n);
      }
      return Status::ok();
    });
    if (!s.is_ok()) return (void)fuse_reply_err(req, EIO);
    fuse_reply_write(req, size);
  }
  static void op_write(fuse_req_t req, fuse_ino_t, const char* data, size_t size, off_t off, fuse_file_info*) {
    record_write(req, data, size, off);
  }
  static void op_fallocate(fuse_req_t req, fuse_ino_t, int mode, off_t off, off_t length, fuse_file_info*) {
    if (!(mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))) return (void)fuse_reply_err(req, 0);
    FuseBlockRecorder& r = of(req);
    std::vector<char> zeros(static_cast<size_t>(length), 0);
    FileOp op;
    op.kind = FileOpKind::kWrite;
    op.offset = static_cast<uint64_t>(off);
    op.length = zeros.size();
    op.data.assign(zeros.size(), 0);
    Status s = r.rec_->record(std::move(op), [&]() -> Status {
      if (::pwrite(r.fd_, zeros.data(), zeros.size(), off) != static_cast<ssize_t>(zeros.size()))
        return io_error(errno, "recorder zero");
      return Status::ok();
    });
    fuse_reply_err(req, s.is_ok() ? 0 : EIO);
  }
  static void op_fsync(fuse_req_t req, fuse_ino_t, int, fuse_file_info*) {
    FuseBlockRecorder& r = of(req);
    if (r.fail_flush_.exchange(false)) {
      r.failed_++;
      return (void)fuse_reply_err(req, EIO);
    }
    FileOp op;
    op.kind = FileOpKind::kSync;
    (void)r.rec_->record(std::move(op), [] { return Status::ok(); });
    fuse_reply_err(req, 0);
  }
  // close(2) of the file: not a device flush (only fsync is).
  static void op_flush(fuse_req_t req, fuse_ino_t, fuse_file_info*) { fuse_reply_err(req, 0); }

  Status start(const std::string& backing, const std::string& mountpoint) {
    mountpoint_ = mountpoint;
    fd_ = ::open(backing.c_str(), O_RDWR | O_CLOEXEC);
    if (fd_ < 0) return io_error(errno, "open " + backing);
    rec_->add_file("dev", {});
    static const fuse_lowlevel_ops ops = [] {
      fuse_lowlevel_ops o{};
      o.lookup = op_lookup;
      o.getattr = op_getattr;
      o.open = op_open;
      o.read = op_read;
      o.write = op_write;
      o.fallocate = op_fallocate;
      o.fsync = op_fsync;
      o.flush = op_flush;
      return o;
    }();
    std::string prog = "keel-recorder", dash_o = "-o", opts = "allow_other";
    char* argv[] = {prog.data(), dash_o.data(), opts.data(), nullptr};
    fuse_args args = FUSE_ARGS_INIT(3, argv);
    se_ = fuse_session_new(&args, &ops, sizeof ops, this);
    fuse_opt_free_args(&args);
    if (!se_) return Status(Code::kIo, "fuse_session_new failed", EIO);
    if (fuse_session_mount(se_, mountpoint.c_str()) != 0) {
      fuse_session_destroy(se_);
      se_ = nullptr;
      return Status(Code::kIo, "FUSE mount of the block recorder on " + mountpoint + " failed", EIO);
    }
    thread_ = std::thread([this] { fuse_session_loop(se_); });
    return Status::ok();
  }

 private:
  std::string mountpoint_;
  int fd_ = -1;
  std::shared_ptr<Recording> rec_ = std::make_shared<Recording>();
  fuse_session* se_ = nullptr;
  std::thread thread_;
  std::atomic<bool> fail_flush_{false};
  std::atomic<uint64_t> failed_{0};
};

}  // namespace

Result<std::unique_ptr<proof::BlockRecorder>> start_block_recorder(const std::string& backing,
                                                                    const std::string& mountpoint) {
  auto r = std::make_unique<FuseBlockRecorder>();
  KEEL_TRY_R(r->start(backing, mountpoint));
  return std::unique_ptr<proof::BlockRecorder>(std::move(r));
}

}  // namespace keel::fuse
