// RawImage: reads and writes go straight to the file; holes are found with SEEK_DATA-free
// block status (the file is reported as all data).
#include "engine/raw_image.h"

#include <fmt/format.h>

namespace keel {
namespace {

class RawImage final : public Image {
 public:
  RawImage(std::unique_ptr<BlockFile> f, std::string path, uint64_t size, const OpenOptions& o)
      : file_(std::move(f)), path_(std::move(path)), size_(size), read_only_(o.read_only),
        writethrough_(o.cache == CacheMode::kWritethrough || o.cache == CacheMode::kDirectsync) {}

  std::string format() const override { return "raw"; }
  uint64_t size() const override { return size_; }
  bool read_only() const override { return read_only_; }
  uint32_t cluster_size() const override { return 512; }

  Status read(uint64_t offset, std::span<uint8_t> buf) override {
    KEEL_TRY(check_range(offset, buf.size()));
    return file_->read_at(offset, buf);
  }

  Status write(uint64_t offset, std::span<const uint8_t> buf, bool fua) override {
    KEEL_TRY(check_write(offset, buf.size()));
    KEEL_TRY(file_->write_at(offset, buf));
    return (fua || writethrough_) ? file_->sync() : Status::ok();
  }

  Status write_zeroes(uint64_t offset, uint64_t length, ZeroFlags flags) override {
    KEEL_TRY(check_write(offset, length));
    if (flags.may_unmap) {
      // BlockFile::punch already writes zeros where the file system cannot punch, so a failure
      // here is an I/O error: reported, never papered over with a second try (G6).
      KEEL_TRY(file_->punch(offset, length));
      return (flags.fua || writethrough_) ? file_->sync() : Status::ok();
    }
    if (flags.fast_only) return Status(Code::kUnsupported, "zeroing is not fast here", ENOTSUP);
    std::vector<uint8_t> zeros(std::min<uint64_t>(length, 1 << 20), 0);
    for (uint64_t done = 0; done < length;) {
      uint64_t n = std::min<uint64_t>(length - done, zeros.size());
      KEEL_TRY(file_->write_at(offset + done, {zeros.data(), n}));
      done += n;
    }
    return (flags.fua || writethrough_) ? file_->sync() : Status::ok();
  }

  Status discard(uint64_t offset, uint64_t length) override {
    KEEL_TRY(check_write(offset, length));
    return Status::ok();  // advisory; raw keeps the data (QEMU's default discard=ignore)
  }

  Status flush() override { return read_only_ ? Status::ok() : file_->sync(); }

  // Guest offset == file offset; nothing can re-map it, so the ticket needs no gate.
  std::optional<DirectIo> map_direct(uint64_t offset, uint64_t length, bool write) override {
    const int fd = file_->native_fd();
    const uint32_t align = file_->alignment();
    if (fd < 0 || length == 0 || offset > size_ || length > size_ - offset) return std::nullopt;
    if (offset % align != 0 || length % align != 0) return std::nullopt;
    if (write && (read_only_ || writethrough_)) return std::nullopt;
    DirectIo io;
    io.set_alignment(align);
    io.add(fd, offset, length);
    return io;
  }

  Result<Extent> block_status(uint64_t offset, uint64_t max_length) override {
    KEEL_TRY_R(check_range(offset, 0));
    Extent e;
    e.offset = offset;
    e.length = std::min(max_length, size_ - offset);
    e.depth = 1;
    e.host_offset = offset;
    if (e.length == 0) return e;
    KEEL_ASSIGN(auto probe, file_->probe_data(offset, e.length));
    e.length = std::max<uint64_t>(probe.second, 1);
    e.data = probe.first;
    e.zero = !probe.first;
    return e;
  }

  ImageInfo info() override {
    ImageInfo i;
    i.filename = path_;
    i.format = "raw";
    i.virtual_size = size_;
    i.actual_size = file_->allocated_bytes();
    return i;
  }

  Image* backing() override { return nullptr; }
  Status close() override { return flush(); }

 private:
  Status check_range(uint64_t offset, uint64_t len) const {
    if (offset > size_ || len > size_ - offset)
      return invalid(fmt::format("request [{}, +{}) is past the end of the image ({} bytes)", offset, len, size_));
    return Status::ok();
  }
  Status check_write(uint64_t offset, uint64_t len) const {
    if (read_only_) return Status(Code::kReadOnly, "image is read-only", EPERM);
    return check_range(offset, len);
  }

  std::unique_ptr<BlockFile> file_;
  std::string path_;
  uint64_t size_;
  bool read_only_;
  bool writethrough_;
};

}  // namespace

Result<std::unique_ptr<Image>> open_raw_image(std::unique_ptr<BlockFile> file, const std::string& path,
                                              const OpenOptions& opts) {
  KEEL_ASSIGN(uint64_t size, file->size());
  return std::unique_ptr<Image>(new RawImage(std::move(file), path, size, opts));
}

}  // namespace keel
