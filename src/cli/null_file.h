// NullFile: QEMU's null-co protocol as a BlockFile. A fixed size (null-co's "size", 1 GiB by
// default), every read returns zeros, writes, syncs and discards succeed and change nothing, and
// the size cannot change. Scripts use null-co:// as a source or target that costs no disk.
#pragma once

#include <cstdint>
#include <string>

#include "keel/block_file.h"

namespace keel {

class NullFile final : public BlockFile {
 public:
  NullFile(std::string name, uint64_t size_bytes) : name_(std::move(name)), size_bytes_(size_bytes) {}

  Status read_at(uint64_t offset, std::span<uint8_t> buf) override;
  Status write_at(uint64_t, std::span<const uint8_t>) override { return Status::ok(); }
  Status sync() override { return Status::ok(); }
  Status truncate(uint64_t size) override;
  Status allocate(uint64_t, uint64_t) override { return Status::ok(); }
  Status punch(uint64_t, uint64_t) override { return Status::ok(); }
  Result<uint64_t> size() override { return size_bytes_; }
  std::string name() const override { return name_; }

 private:
  std::string name_;
  uint64_t size_bytes_;
};

}  // namespace keel
