// A FUSE export: the guest view of an image as one regular file, mounted over an existing
// regular file with libfuse3, as qemu-storage-daemon's `--export type=fuse` does.
//
// The mount is a single-file file system whose root is the file: reads and writes are guest
// bytes; fsync (and close) flush the image; fallocate(PUNCH_HOLE|KEEP_SIZE) deallocates whole
// clusters and zeroes the rest, so the range reads back as zeros; fallocate(ZERO_RANGE) writes
// zeros; lseek(SEEK_DATA/SEEK_HOLE) follows block status; truncate resizes the image (writable
// exports only); with `growable`, a write past the end grows the image first.
//
// Threads: run() serves requests on the calling thread until stop() (any thread) or an unmount
// by someone else (`fusermount3 -u FILE`). Every request goes through the public Image API,
// which is thread-safe, so an NBD export of the same image may run at the same time.
#pragma once

#include <memory>
#include <string>

#include "keel/image.h"
#include "keel/status.h"

namespace keel::fuse {

enum class AllowOther { kOff, kOn, kAuto };

struct FuseExportConfig {
  std::string mountpoint;  // an existing regular file
  bool writable = false;
  bool growable = false;
  AllowOther allow_other = AllowOther::kAuto;  // auto: try allow_other, else mount without it
};

class FuseExport {
 public:
  // Checks the mountpoint and the image as qemu-storage-daemon does (its messages: "Failed to
  // stat 'F': ...", "'F' is not a regular file", "Cannot export read-only node as writable"),
  // then mounts. `image` must outlive the export.
  static Result<std::unique_ptr<FuseExport>> mount(Image& image, const FuseExportConfig& cfg);
  ~FuseExport();  // unmounts if still mounted

  // Serves until stop() or an external unmount.
  void run();
  // Thread-safe: ends run() and unmounts.
  void stop();

  struct State;

 private:
  explicit FuseExport(std::unique_ptr<State> s);
  std::unique_ptr<State> s_;
};

// Parses qemu-storage-daemon's `type=fuse,id=ID,mountpoint=FILE[,writable=on|off]
// [,growable=on|off][,allow-other=on|off|auto][,node-name=N]` (node-name is accepted and
// ignored: keel serve exports its one image).
Result<FuseExportConfig> parse_fuse_export_option(const std::string& spec);

}  // namespace keel::fuse
