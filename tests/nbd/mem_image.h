// MemImage: a keel::Image held in memory for the NBD tests, with a per-4K-block allocation map
// (so block_status reports data and holes), optional per-call delays (to force replies out of
// order) and injected failures. Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <vector>

#include "keel/image.h"

namespace keel::nbd::test {

class MemImage : public Image {
 public:
  static constexpr uint32_t kBlock = 4096;

  explicit MemImage(uint64_t size, bool read_only = false);

  std::string format() const override { return "raw"; }
  uint64_t size() const override { return size_; }
  bool read_only() const override { return read_only_; }
  uint32_t cluster_size() const override { return kBlock; }
  Status read(uint64_t offset, std::span<uint8_t> buf) override;
  Status write(uint64_t offset, std::span<const uint8_t> buf, bool fua) override;
  Status write_zeroes(uint64_t offset, uint64_t length, ZeroFlags flags) override;
  Status discard(uint64_t offset, uint64_t length) override;
  Status flush() override;
  Result<Extent> block_status(uint64_t offset, uint64_t max_length) override;
  ImageInfo info() override;
  Image* backing() override { return nullptr; }
  Status close() override;

  // --- test controls ---
  // Reads whose offset equals `delay_offset` sleep this long first (others run at once).
  void set_read_delay(uint64_t offset, std::chrono::milliseconds d);
  // Every write sleeps this long.
  void set_write_delay(std::chrono::milliseconds d) { write_delay_ms_ = d.count(); }
  // Reads touching this offset fail with EIO.
  void fail_reads_at(std::optional<uint64_t> offset);
  // write_zeroes with fast_only fails with kUnsupported.
  void set_fast_zero_supported(bool on) { fast_zero_ = on; }
  // The next n flushes fail with EIO (each is still counted by flushes()).
  void fail_flushes(int n) { fail_flushes_ = n; }

  std::vector<uint8_t> contents(uint64_t offset, size_t length);
  bool allocated(uint64_t offset);
  uint64_t flushes() const { return flushes_; }
  uint64_t fua_writes() const { return fua_writes_; }
  uint64_t zero_calls() const { return zero_calls_; }
  uint64_t discards() const { return discards_; }
  std::optional<ZeroFlags> last_zero_flags();
  bool closed() const { return closed_; }
  // Number of calls (read/write/...) running right now, and the most ever at once.
  int max_concurrency() const { return max_active_; }

 private:
  void enter();
  void leave();

  const uint64_t size_;
  const bool read_only_;
  std::mutex mu_;
  std::vector<uint8_t> bytes_;
  std::vector<bool> allocated_;  // per kBlock
  std::optional<uint64_t> fail_read_at_;
  std::optional<uint64_t> delay_read_at_;
  int64_t delay_read_ms_ = 0;
  std::atomic<int64_t> write_delay_ms_{0};
  std::atomic<bool> fast_zero_{true};
  std::atomic<int> fail_flushes_{0};
  std::atomic<uint64_t> flushes_{0}, fua_writes_{0}, zero_calls_{0}, discards_{0};
  std::optional<ZeroFlags> last_zero_flags_;
  std::atomic<bool> closed_{false};
  std::atomic<int> active_{0}, max_active_{0};
};

}  // namespace keel::nbd::test
