// MemoryFile: a BlockFile backed by a byte vector in memory.
//
// The crash explorer materializes every crash state into one of these and hands it to the engine
// through OpenOptions::file_opener, so opening and reading a state costs no disk I/O. Several
// handles may share one store (MemoryFile::share), the way two file descriptors share one file:
// the test keeps a handle to look at the bytes after the engine has closed its own.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "keel/block_file.h"

namespace keel {

class MemoryFile final : public BlockFile {
 public:
  // A new store holding `bytes`.
  explicit MemoryFile(std::string name, std::vector<uint8_t> bytes = {}, bool read_only = false);

  // Another handle on the same bytes; writes through either are seen by both.
  std::unique_ptr<MemoryFile> share(bool read_only = false) const;

  // A copy of the whole content.
  std::vector<uint8_t> bytes() const;
  // Replaces the whole content.
  void set_bytes(std::vector<uint8_t> bytes);
  // Whether the content equals `other` (without copying it).
  bool content_equals(std::span<const uint8_t> other) const;
  // Number of completed sync() calls on the store (all handles).
  uint64_t sync_count() const;

  Status read_at(uint64_t offset, std::span<uint8_t> buf) override;
  Status write_at(uint64_t offset, std::span<const uint8_t> buf) override;
  Status sync() override;
  Status truncate(uint64_t size) override;
  Status allocate(uint64_t offset, uint64_t length) override;
  Status punch(uint64_t offset, uint64_t length) override;
  Result<uint64_t> size() override;
  uint64_t allocated_bytes() override;
  std::string name() const override { return name_; }

 private:
  struct Store {
    mutable std::mutex mu;
    std::vector<uint8_t> bytes;
    uint64_t syncs = 0;
  };
  MemoryFile(std::string name, std::shared_ptr<Store> store, bool read_only);
  Status check_writable(const char* what) const;

  std::string name_;
  std::shared_ptr<Store> store_;
  bool read_only_;
};

}  // namespace keel
