// BlockFile: the one seam through which every byte of libkeel's storage I/O passes.
//
// The engine never calls pread/pwrite/fdatasync directly; it calls these. Tests stack decorators
// on a real file (fault-injecting, crash-recording, counting) by implementing this interface.
// All methods are safe to call from several threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>

#include "keel/status.h"

namespace keel {

// How a file is opened; mirrors QEMU's cache modes at the file level.
struct FileOptions {
  bool read_only = false;
  bool direct = false;     // O_DIRECT (cache=none, directsync)
  bool no_flush = false;   // sync() is a no-op (cache=unsafe)
  bool create = false;     // create if missing (O_CREAT), truncate to 0 (O_TRUNC)
};

// QEMU-compatible image lock permissions (OFD locks at byte 100+i "holds", 200+i "denies").
enum LockPerm : unsigned {
  kPermConsistentRead = 1u << 0,
  kPermWrite = 1u << 1,
  kPermWriteUnchanged = 1u << 2,
  kPermResize = 1u << 3,
};

class BlockFile {
 public:
  virtual ~BlockFile() = default;

  // Reads buf.size() bytes at offset. Bytes past the end of the file read as zeros.
  virtual Status read_at(uint64_t offset, std::span<uint8_t> buf) = 0;
  // Writes all of buf at offset (extending the file if needed). A short write is an error.
  virtual Status write_at(uint64_t offset, std::span<const uint8_t> buf) = 0;
  // Makes every completed write durable (fdatasync).
  virtual Status sync() = 0;
  virtual Status truncate(uint64_t size) = 0;
  // Reserves space (fallocate); the range reads as zeros if it was a hole.
  virtual Status allocate(uint64_t offset, uint64_t length) = 0;
  // Deallocates the range; it then reads as zeros. May be a no-op where unsupported... but then
  // the range must still read as zeros, so implementations fall back to writing zeros.
  virtual Status punch(uint64_t offset, uint64_t length) = 0;
  virtual Result<uint64_t> size() = 0;

  // Takes QEMU-compatible locks: `perms` we hold, `shared` we allow others. Default: no locks.
  virtual Status lock(unsigned /*perms*/, unsigned /*shared*/) { return Status::ok(); }
  // Whether [offset, offset + result.second) holds data (true) or is a hole that reads as
  // zeros (false); the length is at most max_length. Default: all data.
  virtual Result<std::pair<bool, uint64_t>> probe_data(uint64_t /*offset*/, uint64_t max_length) {
    return std::pair<bool, uint64_t>{true, max_length};
  }
  // Bytes the file occupies on disk (st_blocks * 512), for `info`'s actual-size.
  virtual uint64_t allocated_bytes() { return 0; }
  // Required alignment of offsets/lengths for I/O (1 unless O_DIRECT).
  virtual uint32_t alignment() const { return 1; }
  // The file descriptor for I/O that bypasses this interface (io_uring, Image::map_direct), or
  // -1 when the file is not a plain local file (decorators keep -1, so every byte they must see
  // still goes through read_at/write_at). Users must honour alignment().
  virtual int native_fd() const { return -1; }
  virtual std::string name() const = 0;
};

// Opens a file on the local file system.
Result<std::unique_ptr<BlockFile>> open_posix_file(const std::string& path, const FileOptions& opts);

}  // namespace keel
