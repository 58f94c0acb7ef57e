// The LUKS1 header that an encrypted qcow2 image (crypt_method 2) keeps in the clusters its
// "full disk encryption header pointer" extension names: 592 bytes at the start of that region,
// then the eight key slots' key material, each `key_bytes * stripes` bytes at a sector offset.
//
// Invariants after decode_luks_header() succeeds (anything else is an error naming the field
// and its value): magic "LUKS\xba\xbe", version 1; cipher, mode and hash names NUL-terminated
// and known to keel (cipher_name_spec); key_bytes matches the cipher; 1 <= mk_digest_iterations;
// every slot is active (0x00AC71F3) or disabled (0x0000DEAD); an active slot has stripes 4000
// and iterations >= 1; every slot's key material lies past the 592-byte header and inside the
// region (and, as QEMU requires, before payload_offset); no two slots' key material overlaps.
// Pure: decodes and encodes bytes, no I/O, no cryptography.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "keel/status.h"

namespace keel::format {

inline constexpr uint32_t kLuksHeaderBytes = 592;    // spec: LUKS1 on-disk header
inline constexpr uint32_t kLuksSectorSize = 512;     // spec: LUKS1 sectors
inline constexpr uint32_t kLuksSlots = 8;            // spec
inline constexpr uint32_t kLuksStripes = 4000;       // spec (QEMU accepts nothing else)
inline constexpr uint32_t kLuksDigestBytes = 20;     // spec: mk_digest
inline constexpr uint32_t kLuksSaltBytes = 32;       // spec
inline constexpr uint32_t kLuksSlotActive = 0x00AC71F3;
inline constexpr uint32_t kLuksSlotDisabled = 0x0000DEAD;
inline constexpr uint32_t kMaxLuksKeyBytes = 64;     // ours: AES-256-XTS, the largest QEMU key
inline constexpr uint64_t kMaxLuksRegionBytes = 64ull << 20;  // ours: 8 slots of 64-byte keys
                                                              // need ~2 MiB; QEMU's layout fits

// The cipher parts QEMU offers (encrypt.cipher-alg/cipher-mode/ivgen-alg/ivgen-hash-alg/hash-alg).
enum class LuksCipher { kAes128, kAes192, kAes256, kCast5_128, kSerpent128, kSerpent192, kSerpent256,
                        kTwofish128, kTwofish192, kTwofish256 };
enum class LuksMode { kEcb, kCbc, kXts, kCtr };
enum class LuksIvgen { kPlain, kPlain64, kEssiv };
enum class LuksHash { kMd5, kSha1, kSha224, kSha256, kSha384, kSha512, kRipemd160 };

struct LuksSlot {
  bool active = false;
  uint32_t iterations = 0;
  std::array<uint8_t, kLuksSaltBytes> salt{};
  uint32_t key_offset_sectors = 0;
  uint32_t stripes = kLuksStripes;
};

struct LuksHeader {
  std::string cipher_name;   // "aes"
  std::string cipher_mode;   // "xts-plain64"
  std::string hash_spec;     // "sha256"
  uint32_t payload_offset_sectors = 0;
  uint32_t key_bytes = 0;
  std::array<uint8_t, kLuksDigestBytes> mk_digest{};
  std::array<uint8_t, kLuksSaltBytes> mk_digest_salt{};
  uint32_t mk_digest_iterations = 0;
  std::string uuid;
  std::array<LuksSlot, kLuksSlots> slots{};

  // Decoded from the names above.
  LuksCipher cipher = LuksCipher::kAes256;
  LuksMode mode = LuksMode::kXts;
  LuksIvgen ivgen = LuksIvgen::kPlain64;
  LuksHash ivgen_hash = LuksHash::kSha256;  // essiv only
  LuksHash hash = LuksHash::kSha256;

  uint64_t split_key_bytes() const { return uint64_t(key_bytes) * kLuksStripes; }
};

// QEMU's names, as qemu-img info prints them ("aes-256", "xts", "plain64", "sha256").
const char* luks_cipher_name(LuksCipher c);
const char* luks_mode_name(LuksMode m);
const char* luks_ivgen_name(LuksIvgen g);
const char* luks_hash_name(LuksHash h);

// Decodes and validates the header at the start of `region` (the whole region the qcow2
// extension names, whose size bounds the key material).
Result<LuksHeader> decode_luks_header(std::span<const uint8_t> region);

// Encodes the 592-byte header (the inverse of decode for a valid header).
std::vector<uint8_t> encode_luks_header(const LuksHeader& h);

}  // namespace keel::format
