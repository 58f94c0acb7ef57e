// MemoryFile: BlockFile on a shared byte vector (see memory_file.h).
#include "io/memory_file.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace keel {
namespace {
// A length that would overflow a 64-bit end offset, or a size no vector can hold, is refused.
constexpr uint64_t kMaxMemoryFileBytes = 1ull << 40;

bool range_ok(uint64_t offset, uint64_t length) {
  return offset <= kMaxMemoryFileBytes && length <= kMaxMemoryFileBytes - offset;
}
}  // namespace

MemoryFile::MemoryFile(std::string name, std::vector<uint8_t> bytes, bool read_only)
    : name_(std::move(name)), store_(std::make_shared<Store>()), read_only_(read_only) {
  store_->bytes = std::move(bytes);
}

MemoryFile::MemoryFile(std::string name, std::shared_ptr<Store> store, bool read_only)
    : name_(std::move(name)), store_(std::move(store)), read_only_(read_only) {}

std::unique_ptr<MemoryFile> MemoryFile::share(bool read_only) const {
  return std::unique_ptr<MemoryFile>(new MemoryFile(name_, store_, read_only));
}

std::vector<uint8_t> MemoryFile::bytes() const {
  std::lock_guard<std::mutex> g(store_->mu);
  return store_->bytes;
}

void MemoryFile::set_bytes(std::vector<uint8_t> bytes) {
  std::lock_guard<std::mutex> g(store_->mu);
  store_->bytes = std::move(bytes);
}

bool MemoryFile::content_equals(std::span<const uint8_t> other) const {
  std::lock_guard<std::mutex> g(store_->mu);
  const auto& b = store_->bytes;
  return b.size() == other.size() && (b.empty() || std::memcmp(b.data(), other.data(), b.size()) == 0);
}

uint64_t MemoryFile::sync_count() const {
  std::lock_guard<std::mutex> g(store_->mu);
  return store_->syncs;
}

Status MemoryFile::check_writable(const char* what) const {
  if (read_only_) return io_error(EBADF, std::string(what) + " " + name_ + " (opened read-only)");
  return Status::ok();
}

Status MemoryFile::read_at(uint64_t offset, std::span<uint8_t> buf) {
  if (!range_ok(offset, buf.size())) return io_error(EINVAL, "read " + name_);
  std::lock_guard<std::mutex> g(store_->mu);
  const auto& b = store_->bytes;
  uint64_t have = offset < b.size() ? std::min<uint64_t>(buf.size(), b.size() - offset) : 0;
  if (have > 0) std::memcpy(buf.data(), b.data() + offset, have);
  if (have < buf.size()) std::memset(buf.data() + have, 0, buf.size() - have);
  return Status::ok();
}

Status MemoryFile::write_at(uint64_t offset, std::span<const uint8_t> buf) {
  KEEL_TRY(check_writable("write"));
  if (!range_ok(offset, buf.size())) return io_error(EFBIG, "write " + name_);
  std::lock_guard<std::mutex> g(store_->mu);
  auto& b = store_->bytes;
  if (b.size() < offset + buf.size()) b.resize(offset + buf.size(), 0);
  if (!buf.empty()) std::memcpy(b.data() + offset, buf.data(), buf.size());
  return Status::ok();
}

Status MemoryFile::sync() {
  std::lock_guard<std::mutex> g(store_->mu);
  ++store_->syncs;
  return Status::ok();
}

Status MemoryFile::truncate(uint64_t size) {
  KEEL_TRY(check_writable("truncate"));
  if (size > kMaxMemoryFileBytes) return io_error(EFBIG, "truncate " + name_);
  std::lock_guard<std::mutex> g(store_->mu);
  store_->bytes.resize(size, 0);
  return Status::ok();
}

Status MemoryFile::allocate(uint64_t offset, uint64_t length) {
  KEEL_TRY(check_writable("fallocate"));
  if (!range_ok(offset, length)) return io_error(EFBIG, "fallocate " + name_);
  std::lock_guard<std::mutex> g(store_->mu);
  if (store_->bytes.size() < offset + length) store_->bytes.resize(offset + length, 0);
  return Status::ok();
}

Status MemoryFile::punch(uint64_t offset, uint64_t length) {
  KEEL_TRY(check_writable("punch"));
  if (!range_ok(offset, length)) return io_error(EINVAL, "punch " + name_);
  std::lock_guard<std::mutex> g(store_->mu);
  auto& b = store_->bytes;
  if (offset >= b.size()) return Status::ok();
  uint64_t n = std::min<uint64_t>(length, b.size() - offset);
  std::memset(b.data() + offset, 0, n);
  return Status::ok();
}

Result<uint64_t> MemoryFile::size() {
  std::lock_guard<std::mutex> g(store_->mu);
  return static_cast<uint64_t>(store_->bytes.size());
}

uint64_t MemoryFile::allocated_bytes() {
  std::lock_guard<std::mutex> g(store_->mu);
  return store_->bytes.size();
}

}  // namespace keel
