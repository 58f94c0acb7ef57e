// Sector patterns: every 512-byte guest sector the proof writes says who wrote it.
//
// Content (version v >= 1, guest sector s): "KSEC", u32 v, u64 s (little endian), then one 64-bit
// word derived from (v, s), repeated over the remaining 496 bytes (compressible on purpose).
// Version 0 is all zeros (unwritten, discarded, write-zeroes); version 1 is the backing file's
// content. So a sector read back after a crash decodes to the exact write and guest offset its
// bytes came from — or to "garbage" (metadata, torn mixes, bytes of no write at all), which the
// checker reports as foreign data.
#pragma once

#include <cstdint>
#include <span>

namespace keel::proof {

inline constexpr uint64_t kGuestSector = 512;
inline constexpr uint32_t kZeroVersion = 0;
inline constexpr uint32_t kBackingVersion = 1;
inline constexpr uint32_t kFirstWriteVersion = 2;
// The content of the `rebase` workload's second backing file where it differs from the first
// (far above any write's version kFirstWriteVersion + op index).
inline constexpr uint32_t kNewBackingVersion = 0xffffff00u;

// Fills `out` (one sector) with the content of `version` for guest sector `sector`.
void fill_sector(uint32_t version, uint64_t sector, std::span<uint8_t> out);
// Fills consecutive sectors starting at `first_sector`. REQUIRES: out.size() % 512 == 0.
void fill_sectors(uint32_t version, uint64_t first_sector, std::span<uint8_t> out);

struct Decoded {
  enum Kind { kZero, kPattern, kGarbage } kind = kGarbage;
  uint32_t version = 0;  // kPattern
  uint64_t sector = 0;   // kPattern: the guest sector the bytes were written for
};
Decoded decode_sector(std::span<const uint8_t> sector);

}  // namespace keel::proof
