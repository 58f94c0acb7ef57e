// Sector patterns (see pattern.h).
#include "proof/pattern.h"

#include <cstring>

namespace keel::proof {
namespace {

constexpr uint8_t kMagic[4] = {'K', 'S', 'E', 'C'};

uint64_t splitmix(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void put_le(uint8_t* p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint64_t get_le(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

// One word repeated: unique per (version, sector), and compressible, so write_compressed
// really stores compressed clusters.
uint64_t filler_word(uint32_t version, uint64_t sector) {
  uint64_t state = (static_cast<uint64_t>(version) << 40) ^ sector ^ 0x6b65656c70726f6full;
  return splitmix(state);
}

}  // namespace

void fill_sector(uint32_t version, uint64_t sector, std::span<uint8_t> out) {
  if (version == kZeroVersion) {
    std::memset(out.data(), 0, kGuestSector);
    return;
  }
  uint8_t* p = out.data();
  std::memcpy(p, kMagic, 4);
  put_le(p + 4, version, 4);
  put_le(p + 8, sector, 8);
  uint8_t word[8];
  put_le(word, filler_word(version, sector), 8);
  for (size_t i = 16; i < kGuestSector; i += 8) std::memcpy(p + i, word, 8);
}

void fill_sectors(uint32_t version, uint64_t first_sector, std::span<uint8_t> out) {
  for (size_t i = 0; i + kGuestSector <= out.size(); i += kGuestSector)
    fill_sector(version, first_sector + i / kGuestSector, out.subspan(i, kGuestSector));
}

Decoded decode_sector(std::span<const uint8_t> s) {
  Decoded d;
  static const uint8_t kZeros[kGuestSector] = {};
  if (std::memcmp(s.data(), kZeros, kGuestSector) == 0) {
    d.kind = Decoded::kZero;
    return d;
  }
  if (std::memcmp(s.data(), kMagic, 4) != 0) return d;
  uint32_t version = static_cast<uint32_t>(get_le(s.data() + 4, 4));
  uint64_t sector = get_le(s.data() + 8, 8);
  if (version == kZeroVersion) return d;
  uint8_t word[8];
  put_le(word, filler_word(version, sector), 8);
  for (size_t i = 16; i < kGuestSector; i += 8)
    if (std::memcmp(s.data() + i, word, 8) != 0) return d;
  d.kind = Decoded::kPattern;
  d.version = version;
  d.sector = sector;
  return d;
}

}  // namespace keel::proof
