// Shared parts of the real-file-system harness (proof/realfs.h, proof/realfs_fsync.cpp): the
// scratch directory with the device images, mkfs, sparse copies, and applying device writes.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

#include "io/recording_file.h"
#include "keel/image.h"
#include "keel/status.h"

namespace keel::proof::realfs {

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// A scratch directory (on tmpfs): base.img (the fresh file system), live.img (what the recorder
// serves), dev (the recorder's mount point), mnt/ and smnt/ (mount points), synced.img and
// state.img (crash states). Removed with its files on destruction; unmount first.
struct WorkDir {
  std::string dir;
  std::string file(const char* name) const { return dir + "/" + name; }
  WorkDir() = default;
  WorkDir(const WorkDir&) = delete;
  WorkDir& operator=(const WorkDir&) = delete;
  ~WorkDir();
};

uint64_t device_bytes(const std::string& fs);
std::vector<std::string> mkfs_command(const std::string& fs, const std::string& path);
std::string mount_options(const std::string& fs);
const char* cache_name(CacheMode c);
Status make_sparse(const std::string& path, uint64_t size);
Status sparse_copy(const std::string& from, const std::string& to);
Status apply_write(int fd, const FileOp& op, const std::vector<bool>* mask);
Result<std::vector<uint8_t>> read_whole(const std::string& path);
Status write_whole(const std::string& path, const std::vector<uint8_t>& bytes);
// Turns every 4 KiB block of zeros of `path` into a hole: the bytes read are the same, but the
// copies of the device (one per crash state) no longer copy the zeros mkfs wrote (mkfs.xfs zeroes
// its 64 MiB log).
Status dig_holes(const std::string& path);
// A digest of the device bytes of crash state `cs`: the synced prefix (`synced_id` names it) plus
// the sectors its persisted, possibly torn, writes leave different from the synced file
// `synced_fd`, with their bytes. Two states with the same digest and synced_id have identical
// devices. Empty when a write is not sector-aligned (then no two states are taken as equal).
std::string state_digest(int synced_fd, uint64_t synced_id, const std::vector<FileOp>& ops, const CrashState& cs);
// Makes the scratch directory under `work_dir` and a fresh `fs` in base.img and live.img.
Status prepare_device(WorkDir& wd, const std::string& work_dir, const std::string& fs);

}  // namespace keel::proof::realfs
