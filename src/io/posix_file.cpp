// PosixFile: BlockFile on a local file with pread/pwrite/fdatasync, optional O_DIRECT (with
// bounce buffers for unaligned requests) and QEMU-compatible OFD image locks.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include "keel/block_file.h"

namespace keel {
namespace {

constexpr uint32_t kDirectAlign = 4096;
constexpr std::array<const char*, 4> kPermNames = {"consistent read", "write", "write unchanged",
                                                   "resize"};

// 4 KiB-aligned buffers for O_DIRECT transfers from or to unaligned memory (a guest buffer, or a
// cached table in a std::vector), kept by the file for its next transfers: a posix_memalign and
// free per request cost time, and their alignment slack, freed between the heap's 64 KiB table
// buffers, fragmented it (keel serve over a fresh 1 TiB image: 50 MiB of heap for 34 MiB in
// use). At most kKeptBuffers of at most kKeptBufferBytes each; larger ones are freed after use.
// (Per file, not per thread: libkeel keeps no thread_local or global state.)
class BouncePool {
 public:
  static constexpr size_t kKeptBuffers = 16;
  static constexpr size_t kKeptBufferBytes = 128 * 1024;
  struct Buf {
    void* ptr = nullptr;
    size_t size = 0;
  };
  BouncePool() = default;
  BouncePool(const BouncePool&) = delete;
  BouncePool& operator=(const BouncePool&) = delete;
  ~BouncePool() {
    for (Buf& b : free_) std::free(b.ptr);
  }
  // A buffer of at least n bytes (ptr null if memory ran out).
  Buf get(size_t n) {
    {
      std::lock_guard<std::mutex> g(mu_);
      for (size_t i = free_.size(); i-- > 0;) {
        if (free_[i].size >= n) {
          Buf b = free_[i];
          free_.erase(free_.begin() + static_cast<std::ptrdiff_t>(i));
          return b;
        }
      }
    }
    Buf b;
    b.size = n <= kKeptBufferBytes ? std::max<size_t>(n, 64 * 1024) : n;
    if (posix_memalign(&b.ptr, kDirectAlign, b.size) != 0) b = Buf{};
    return b;
  }
  void put(Buf b) {
    if (!b.ptr) return;
    if (b.size <= kKeptBufferBytes) {
      std::lock_guard<std::mutex> g(mu_);
      if (free_.size() < kKeptBuffers) {
        free_.push_back(b);
        return;
      }
    }
    std::free(b.ptr);
  }

 private:
  std::mutex mu_;
  std::vector<Buf> free_;
};

// One transfer's buffer from the pool, given back at the end of the scope.
class AlignedBuffer {
 public:
  AlignedBuffer(BouncePool& pool, size_t n) : pool_(pool), buf_(pool.get(n)) {}
  ~AlignedBuffer() { pool_.put(buf_); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  uint8_t* data() { return static_cast<uint8_t*>(buf_.ptr); }  // null if memory ran out

 private:
  BouncePool& pool_;
  BouncePool::Buf buf_;
};

class PosixFile final : public BlockFile {
 public:
  PosixFile(int fd, std::string path, bool direct, bool no_flush)
      : fd_(fd), path_(std::move(path)), direct_(direct), no_flush_(no_flush) {}
  ~PosixFile() override { ::close(fd_); }

  Status read_at(uint64_t offset, std::span<uint8_t> buf) override {
    if (direct_ && !aligned(offset, buf.data(), buf.size())) return bounce_read(offset, buf);
    return raw_read(offset, buf.data(), buf.size());
  }

  Status write_at(uint64_t offset, std::span<const uint8_t> buf) override {
    if (direct_ && !aligned(offset, buf.data(), buf.size())) {
      // Aligned range in unaligned memory (the common case: a guest buffer from a vector) is
      // only copied; it needs neither the read-modify-write lock nor the size check.
      if (offset % kDirectAlign == 0 && buf.size() % kDirectAlign == 0) return copy_write(offset, buf);
      return bounce_write(offset, buf);
    }
    return raw_write(offset, buf.data(), buf.size());
  }

  Status sync() override {
    if (no_flush_) return Status::ok();
    if (::fdatasync(fd_) != 0) return io_error(errno, "fdatasync " + path_);
    return Status::ok();
  }

  Status truncate(uint64_t size) override {
    if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) return io_error(errno, "ftruncate " + path_);
    return Status::ok();
  }

  Status allocate(uint64_t offset, uint64_t length) override {
    int r = ::posix_fallocate(fd_, static_cast<off_t>(offset), static_cast<off_t>(length));
    if (r != 0) return io_error(r, "fallocate " + path_);
    return Status::ok();
  }

  Status punch(uint64_t offset, uint64_t length) override {
    if (::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                    static_cast<off_t>(length)) == 0)
      return Status::ok();
    // No hole punching here: the range must still read as zeros.
    std::vector<uint8_t> zeros(std::min<uint64_t>(length, 1 << 20), 0);
    while (length > 0) {
      uint64_t n = std::min<uint64_t>(length, zeros.size());
      KEEL_TRY(write_at(offset, {zeros.data(), n}));
      offset += n;
      length -= n;
    }
    return Status::ok();
  }

  Result<uint64_t> size() override {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) return error(io_error(errno, "fstat " + path_));
    return static_cast<uint64_t>(st.st_size);
  }

  uint64_t allocated_bytes() override {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) return 0;
    return static_cast<uint64_t>(st.st_blocks) * 512;
  }

  Result<std::pair<bool, uint64_t>> probe_data(uint64_t offset, uint64_t max_length) override {
    off_t d = ::lseek(fd_, static_cast<off_t>(offset), SEEK_DATA);
    if (d < 0) {
      if (errno == ENXIO) return std::pair<bool, uint64_t>{false, max_length};  // hole to EOF
      return std::pair<bool, uint64_t>{true, max_length};  // no SEEK_DATA here: all data
    }
    if (static_cast<uint64_t>(d) > offset)
      return std::pair<bool, uint64_t>{false, std::min<uint64_t>(max_length, d - offset)};
    off_t h = ::lseek(fd_, static_cast<off_t>(offset), SEEK_HOLE);
    if (h < 0 || static_cast<uint64_t>(h) <= offset) return std::pair<bool, uint64_t>{true, max_length};
    return std::pair<bool, uint64_t>{true, std::min<uint64_t>(max_length, h - offset)};
  }

  uint32_t alignment() const override { return direct_ ? kDirectAlign : 1; }
  int native_fd() const override { return fd_; }
  std::string name() const override { return path_; }

  Status lock(unsigned perms, unsigned shared) override {
    // Take our bytes first, then look for conflicting holders, as QEMU does.
    for (unsigned i = 0; i < kPermNames.size(); ++i) {
      if (perms & (1u << i)) KEEL_TRY(set_lock(100 + i));
      if (!(shared & (1u << i))) KEEL_TRY(set_lock(200 + i));
    }
    for (unsigned i = 0; i < kPermNames.size(); ++i) {
      if ((perms & (1u << i)) && locked_by_other(200 + i))
        return Status(Code::kBusy, std::string("Failed to get \"") + kPermNames[i] +
                                       "\" lock\nIs another process using the image [" + path_ + "]?",
                      EAGAIN);
      if (!(shared & (1u << i)) && locked_by_other(100 + i))
        return Status(Code::kBusy, std::string("Failed to get shared \"") + kPermNames[i] +
                                       "\" lock\nIs another process using the image [" + path_ + "]?",
                      EAGAIN);
    }
    return Status::ok();
  }

 private:
  static bool aligned(uint64_t off, const void* p, size_t n) {
    return off % kDirectAlign == 0 && n % kDirectAlign == 0 &&
           reinterpret_cast<uintptr_t>(p) % kDirectAlign == 0;
  }

  Status raw_read(uint64_t offset, uint8_t* p, size_t n) {
    while (n > 0) {
      ssize_t r = ::pread(fd_, p, n, static_cast<off_t>(offset));
      if (r < 0) {
        if (errno == EINTR) continue;
        return io_error(errno, "read " + path_);
      }
      if (r == 0) {  // past end of file: zeros
        std::memset(p, 0, n);
        return Status::ok();
      }
      p += r;
      n -= static_cast<size_t>(r);
      offset += static_cast<uint64_t>(r);
    }
    return Status::ok();
  }

  Status raw_write(uint64_t offset, const uint8_t* p, size_t n) {
    while (n > 0) {
      ssize_t r = ::pwrite(fd_, p, n, static_cast<off_t>(offset));
      if (r < 0) {
        if (errno == EINTR) continue;
        return io_error(errno, "write " + path_);
      }
      if (r == 0) return io_error(ENOSPC, "write " + path_);
      p += r;
      n -= static_cast<size_t>(r);
      offset += static_cast<uint64_t>(r);
    }
    return Status::ok();
  }

  Status bounce_read(uint64_t offset, std::span<uint8_t> buf) {
    uint64_t start = offset / kDirectAlign * kDirectAlign;
    uint64_t end = (offset + buf.size() + kDirectAlign - 1) / kDirectAlign * kDirectAlign;
    AlignedBuffer b(bounce_, end - start);
    if (!b.data()) return io_error(ENOMEM, "bounce buffer");
    // A read of the file's unaligned tail fails under O_DIRECT on some file systems; pread
    // returns short instead, which raw_read turns into zeros.
    KEEL_TRY(raw_read(start, b.data(), end - start));
    std::memcpy(buf.data(), b.data() + (offset - start), buf.size());
    return Status::ok();
  }

  Status copy_write(uint64_t offset, std::span<const uint8_t> buf) {
    AlignedBuffer b(bounce_, buf.size());
    if (!b.data()) return io_error(ENOMEM, "bounce buffer");
    std::memcpy(b.data(), buf.data(), buf.size());
    return raw_write(offset, b.data(), buf.size());
  }

  Status bounce_write(uint64_t offset, std::span<const uint8_t> buf) {
    uint64_t start = offset / kDirectAlign * kDirectAlign;
    uint64_t end = (offset + buf.size() + kDirectAlign - 1) / kDirectAlign * kDirectAlign;
    AlignedBuffer b(bounce_, end - start);
    if (!b.data()) return io_error(ENOMEM, "bounce buffer");
    std::lock_guard<std::mutex> g(rmw_mu_);  // read-modify-write of shared edge blocks
    if (start != offset || end != offset + buf.size()) KEEL_TRY(raw_read(start, b.data(), end - start));
    std::memcpy(b.data() + (offset - start), buf.data(), buf.size());
    KEEL_ASSIGN(uint64_t file_size, size());
    KEEL_TRY(raw_write(start, b.data(), end - start));
    // Do not let the alignment padding grow the file.
    if (end > file_size && offset + buf.size() < end) {
      uint64_t want = std::max<uint64_t>(file_size, offset + buf.size());
      KEEL_TRY(truncate(want));
    }
    return Status::ok();
  }

  Status set_lock(off_t byte) {
    struct flock fl {};
    fl.l_type = F_RDLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = byte;
    fl.l_len = 1;
    if (::fcntl(fd_, F_OFD_SETLK, &fl) != 0)
      return Status(Code::kBusy, "Failed to lock byte " + std::to_string(byte) + " of " + path_, EAGAIN);
    return Status::ok();
  }

  bool locked_by_other(off_t byte) {
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = byte;
    fl.l_len = 1;
    if (::fcntl(fd_, F_OFD_GETLK, &fl) != 0) return false;
    return fl.l_type != F_UNLCK;
  }

  int fd_;
  std::string path_;
  bool direct_;
  bool no_flush_;
  std::mutex rmw_mu_;
  BouncePool bounce_;
};

}  // namespace

Result<std::unique_ptr<BlockFile>> open_posix_file(const std::string& path, const FileOptions& opts) {
  int flags = O_CLOEXEC | (opts.read_only ? O_RDONLY : O_RDWR);
  if (opts.create) flags |= O_CREAT | O_TRUNC;
  if (opts.direct) flags |= O_DIRECT;
  int fd = ::open(path.c_str(), flags, 0644);
  if (fd < 0 && opts.direct && errno == EINVAL) {
    return error(io_error(EINVAL, "Could not open '" + path + "' with O_DIRECT"));
  }
  if (fd < 0) {
    int e = errno;
    return error(Status(e == ENOENT ? Code::kNotFound : Code::kIo,
                        "Could not open '" + path + "': " + std::strerror(e), e));
  }
  return std::unique_ptr<BlockFile>(new PosixFile(fd, path, opts.direct, opts.no_flush));
}

}  // namespace keel
