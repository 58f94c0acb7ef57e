// Loop devices and mounts for the real-file-system crash harness (proof/realfs.h): attach a file
// as a block device, mount a file system on it, unmount, detach. Linux only, needs root.
//
// Ownership: a LoopDevice detaches on destruction (LO_FLAGS_AUTOCLEAR: the kernel detaches once
// the last user, a mount or our descriptor, is gone); a Mount unmounts on destruction.
#pragma once

#include <string>

#include "keel/status.h"

namespace keel::proof {

class LoopDevice {
 public:
  // Attaches `file` (buffered I/O on the backing file: the loop driver turns a device flush into
  // an fsync of the file, which is what the recorder below it sees).
  static Result<LoopDevice> attach(const std::string& file);
  LoopDevice() = default;
  LoopDevice(LoopDevice&& o) noexcept : fd_(o.fd_), path_(std::move(o.path_)) { o.fd_ = -1; }
  LoopDevice& operator=(LoopDevice&& o) noexcept;
  ~LoopDevice() { detach(); }
  const std::string& path() const { return path_; }
  void detach();
  // For reusing one device for many file-system images written to its backing file between
  // mounts (the crash states): drops the device's page cache (BLKFLSBUF) so the next mount reads
  // the backing file's current bytes, then proves it with cachestat(2): the error when a page of
  // the device is still cached (the caller then attaches a fresh device).
  Status drop_cache();

 private:
  int fd_ = -1;
  std::string path_;
};

class Mount {
 public:
  // mount(2) of `fs` ("ext4", "xfs", "btrfs") from `device` on `dir` with `options`.
  static Result<Mount> attach(const std::string& device, const std::string& dir, const std::string& fs,
                              const std::string& options);
  Mount() = default;
  Mount(Mount&& o) noexcept : dir_(std::move(o.dir_)) { o.dir_.clear(); }
  Mount& operator=(Mount&& o) noexcept;
  ~Mount() { (void)unmount(); }
  const std::string& dir() const { return dir_; }
  Status unmount();

 private:
  std::string dir_;
};

// Why the harness cannot run here ("" when it can): root, /dev/loop-control, /dev/fuse, mkfs.<fs>.
std::string real_fs_unavailable(const std::string& fs);

}  // namespace keel::proof
