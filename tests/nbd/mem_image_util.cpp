// MemImage: an in-memory keel::Image for the NBD tests (see mem_image.h).
#include "nbd/mem_image.h"

#include <algorithm>
#include <cstring>
#include <thread>

namespace keel::nbd::test {

MemImage::MemImage(uint64_t size, bool read_only)
    : size_(size), read_only_(read_only), bytes_(size), allocated_((size + kBlock - 1) / kBlock) {}

void MemImage::enter() {
  int now = ++active_;
  int prev = max_active_.load();
  while (now > prev && !max_active_.compare_exchange_weak(prev, now)) {
  }
}
void MemImage::leave() { --active_; }

void MemImage::set_read_delay(uint64_t offset, std::chrono::milliseconds d) {
  std::lock_guard lock(mu_);
  delay_read_at_ = offset;
  delay_read_ms_ = d.count();
}

void MemImage::fail_reads_at(std::optional<uint64_t> offset) {
  std::lock_guard lock(mu_);
  fail_read_at_ = offset;
}

Status MemImage::read(uint64_t offset, std::span<uint8_t> buf) {
  enter();
  int64_t delay = 0;
  {
    std::lock_guard lock(mu_);
    if (delay_read_at_ && *delay_read_at_ == offset) delay = delay_read_ms_;
  }
  if (delay) std::this_thread::sleep_for(std::chrono::milliseconds(delay));
  std::lock_guard lock(mu_);
  leave();
  if (offset > size_ || buf.size() > size_ - offset) return invalid("read past end");
  if (fail_read_at_ && *fail_read_at_ >= offset && *fail_read_at_ < offset + buf.size())
    return io_error(EIO, "injected read error");
  std::memcpy(buf.data(), bytes_.data() + offset, buf.size());
  return Status::ok();
}

Status MemImage::write(uint64_t offset, std::span<const uint8_t> buf, bool fua) {
  enter();
  if (write_delay_ms_) std::this_thread::sleep_for(std::chrono::milliseconds(write_delay_ms_.load()));
  std::lock_guard lock(mu_);
  leave();
  if (read_only_) return Status(Code::kReadOnly, "read-only");
  if (offset > size_ || buf.size() > size_ - offset) return io_error(ENOSPC, "write past end");
  std::memcpy(bytes_.data() + offset, buf.data(), buf.size());
  for (uint64_t b = offset / kBlock; b * kBlock < offset + buf.size(); ++b) allocated_[b] = true;
  if (fua) ++fua_writes_;
  return Status::ok();
}

Status MemImage::write_zeroes(uint64_t offset, uint64_t length, ZeroFlags flags) {
  std::lock_guard lock(mu_);
  ++zero_calls_;
  last_zero_flags_ = flags;
  if (read_only_) return Status(Code::kReadOnly, "read-only");
  if (flags.fast_only && !fast_zero_) return unsupported("zeroing is not fast here");
  if (offset > size_ || length > size_ - offset) return io_error(ENOSPC, "write past end");
  std::memset(bytes_.data() + offset, 0, length);
  // Whole blocks become holes when unmapping is allowed; otherwise they are allocated zeros.
  for (uint64_t b = offset / kBlock; b * kBlock < offset + length; ++b) {
    bool whole = b * kBlock >= offset && (b + 1) * kBlock <= offset + length;
    allocated_[b] = flags.may_unmap && whole ? false : true;
  }
  if (flags.fua) ++fua_writes_;
  return Status::ok();
}

Status MemImage::discard(uint64_t offset, uint64_t length) {
  std::lock_guard lock(mu_);
  ++discards_;
  if (offset > size_ || length > size_ - offset) return invalid("discard past end");
  for (uint64_t b = (offset + kBlock - 1) / kBlock; (b + 1) * kBlock <= offset + length; ++b) {
    allocated_[b] = false;
    std::memset(bytes_.data() + b * kBlock, 0, std::min<uint64_t>(kBlock, size_ - b * kBlock));
  }
  return Status::ok();
}

Status MemImage::flush() {
  ++flushes_;
  if (fail_flushes_.load() > 0) {
    --fail_flushes_;
    return io_error(EIO, "injected flush failure");
  }
  return Status::ok();
}

Result<Extent> MemImage::block_status(uint64_t offset, uint64_t max_length) {
  std::lock_guard lock(mu_);
  if (offset >= size_) return error(invalid("block status past end"));
  uint64_t end = std::min(size_, offset + max_length);
  bool alloc = allocated_[offset / kBlock];
  uint64_t pos = (offset / kBlock + 1) * kBlock;
  while (pos < end && allocated_[pos / kBlock] == alloc) pos += kBlock;
  Extent e;
  e.offset = offset;
  e.length = std::min(pos, end) - offset;
  e.data = alloc;
  e.zero = !alloc;
  e.depth = alloc ? 1 : 0;
  return e;
}

ImageInfo MemImage::info() {
  ImageInfo i;
  i.format = "raw";
  i.virtual_size = size_;
  return i;
}

Status MemImage::close() {
  closed_ = true;
  return Status::ok();
}

std::vector<uint8_t> MemImage::contents(uint64_t offset, size_t length) {
  std::lock_guard lock(mu_);
  return {bytes_.begin() + static_cast<ptrdiff_t>(offset),
          bytes_.begin() + static_cast<ptrdiff_t>(offset + length)};
}

bool MemImage::allocated(uint64_t offset) {
  std::lock_guard lock(mu_);
  return allocated_[offset / kBlock];
}

std::optional<ZeroFlags> MemImage::last_zero_flags() {
  std::lock_guard lock(mu_);
  return last_zero_flags_;
}

}  // namespace keel::nbd::test
