// Loop devices and mounts (see loop_device.h).
#include "proof/loop_device.h"

#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <linux/fs.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "proof/qemu_oracle.h"

namespace keel::proof {

Result<LoopDevice> LoopDevice::attach(const std::string& file) {
  int file_fd = ::open(file.c_str(), O_RDWR | O_CLOEXEC);
  if (file_fd < 0) return error(io_error(errno, "open " + file));
  int ctl = ::open("/dev/loop-control", O_RDWR | O_CLOEXEC);
  if (ctl < 0) {
    int e = errno;
    ::close(file_fd);
    return error(io_error(e, "open /dev/loop-control"));
  }
  Status last = Status::ok();
  for (int attempt = 0; attempt < 16; ++attempt) {  // another process may take the free device
    int n = ::ioctl(ctl, LOOP_CTL_GET_FREE);
    if (n < 0) {
      last = io_error(errno, "LOOP_CTL_GET_FREE");
      break;
    }
    std::string path = "/dev/loop" + std::to_string(n);
    int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) {
      last = io_error(errno, "open " + path);
      continue;
    }
    loop_config cfg{};
    cfg.fd = static_cast<uint32_t>(file_fd);
    cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
    if (::ioctl(fd, LOOP_CONFIGURE, &cfg) == 0) {
      ::close(file_fd);
      ::close(ctl);
      LoopDevice d;
      d.fd_ = fd;
      d.path_ = path;
      return d;
    }
    last = io_error(errno, "LOOP_CONFIGURE " + path + " on " + file);
    ::close(fd);
    if (last.err() != EBUSY) break;
  }
  ::close(file_fd);
  ::close(ctl);
  return error(last);
}

LoopDevice& LoopDevice::operator=(LoopDevice&& o) noexcept {
  if (this != &o) {
    detach();
    fd_ = o.fd_;
    path_ = std::move(o.path_);
    o.fd_ = -1;
  }
  return *this;
}

void LoopDevice::detach() {
  if (fd_ < 0) return;
  // Autoclear detaches when the last opener closes; an explicit clear covers the case where
  // nothing was ever mounted (it fails with EBUSY while a mount still holds it: fine).
  (void)::ioctl(fd_, LOOP_CLR_FD, 0);
  ::close(fd_);
  fd_ = -1;
}

Status LoopDevice::drop_cache() {
  if (fd_ < 0) return invalid("no loop device");
  if (::ioctl(fd_, BLKFLSBUF, 0) != 0) return io_error(errno, "BLKFLSBUF " + path_);
  // cachestat(2) (Linux 6.5): how many pages of the device's page cache remain.
  struct {
    uint64_t off, len;
  } range{0, 0};  // len 0: to the end
  struct {
    uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
  } cs{};
#ifdef SYS_cachestat
  const long nr = SYS_cachestat;
#else
  const long nr = 451;
#endif
  if (::syscall(nr, fd_, &range, &cs, 0) != 0) return io_error(errno, "cachestat " + path_);
  if (cs.nr_cache != 0)
    return io_error(EBUSY, path_ + ": " + std::to_string(cs.nr_cache) + " pages still cached after BLKFLSBUF");
  return Status::ok();
}

Result<Mount> Mount::attach(const std::string& device, const std::string& dir, const std::string& fs,
                            const std::string& options) {
  if (::mount(device.c_str(), dir.c_str(), fs.c_str(), 0, options.empty() ? nullptr : options.c_str()) != 0)
    return error(io_error(errno, "mount -t " + fs + " " + device + " " + dir + (options.empty() ? "" : " -o " + options)));
  Mount m;
  m.dir_ = dir;
  return m;
}

Mount& Mount::operator=(Mount&& o) noexcept {
  if (this != &o) {
    (void)unmount();
    dir_ = std::move(o.dir_);
    o.dir_.clear();
  }
  return *this;
}

Status Mount::unmount() {
  if (dir_.empty()) return Status::ok();
  // EBUSY right after the last file closed can be a lazily released reference: retry briefly.
  for (int attempt = 0;; ++attempt) {
    if (::umount2(dir_.c_str(), 0) == 0) break;
    if (errno != EBUSY || attempt >= 50) {
      Status s = io_error(errno, "umount " + dir_);
      (void)::umount2(dir_.c_str(), MNT_DETACH);
      dir_.clear();
      return s;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  dir_.clear();
  return Status::ok();
}

std::string real_fs_unavailable(const std::string& fs) {
  if (::geteuid() != 0) return "not root (loop devices and mounts need root)";
  if (::access("/dev/loop-control", R_OK | W_OK) != 0) return "no /dev/loop-control";
  if (::access("/dev/fuse", R_OK | W_OK) != 0) return "no /dev/fuse";
  std::string out;
  if (run_command({"sh", "-c", "command -v mkfs." + fs}, &out) != 0)
    return "mkfs." + fs + " not found (scripts/install-deps.sh installs it)";
  return "";
}

}  // namespace keel::proof
