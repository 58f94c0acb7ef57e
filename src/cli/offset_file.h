// OffsetFile: a window of another BlockFile that starts `offset` bytes in (qemu-nbd --offset on a
// raw image: the export is the file from OFFSET on). Offset 0 of this file is `offset` of the
// inner one; the size is the inner size minus the offset. Locks, holes and the allocated size
// are the inner file's; native_fd stays -1 so every byte goes through the shifted calls.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <utility>

#include "keel/block_file.h"

namespace keel {

class OffsetFile final : public BlockFile {
 public:
  OffsetFile(std::unique_ptr<BlockFile> inner, uint64_t offset) : inner_(std::move(inner)), offset_(offset) {}

  Status read_at(uint64_t off, std::span<uint8_t> buf) override { return inner_->read_at(off + offset_, buf); }
  Status write_at(uint64_t off, std::span<const uint8_t> buf) override { return inner_->write_at(off + offset_, buf); }
  Status sync() override { return inner_->sync(); }
  Status truncate(uint64_t size) override { return inner_->truncate(size + offset_); }
  Status allocate(uint64_t off, uint64_t len) override { return inner_->allocate(off + offset_, len); }
  Status punch(uint64_t off, uint64_t len) override { return inner_->punch(off + offset_, len); }
  Result<uint64_t> size() override {
    KEEL_ASSIGN(uint64_t n, inner_->size());
    return n > offset_ ? n - offset_ : 0;
  }
  Status lock(unsigned perms, unsigned shared) override { return inner_->lock(perms, shared); }
  Result<std::pair<bool, uint64_t>> probe_data(uint64_t off, uint64_t max_length) override {
    return inner_->probe_data(off + offset_, max_length);
  }
  uint64_t allocated_bytes() override { return inner_->allocated_bytes(); }
  uint32_t alignment() const override { return inner_->alignment(); }
  std::string name() const override { return inner_->name(); }

 private:
  std::unique_ptr<BlockFile> inner_;
  uint64_t offset_;
};

}  // namespace keel
