// Formatting a new LUKS1 volume as QEMU's qcrypto_block_luks_create lays it out: a random master
// key, its PBKDF2 digest, key slot 0 holding the AF-split master key encrypted with the
// passphrase's PBKDF2 key; slots 1-7 disabled. Layout (sectors of 512 bytes): the header in the
// first 4096 bytes, slot i's key material at 8 + i * stride, stride = the split key's sectors
// rounded up to 8; the payload (in qcow2: the region's length) after the eighth slot.
// Iteration counts: PBKDF2 is timed on this machine and scaled to iter_time_ms (the master key
// digest gets an eighth of it), each at least 1000, as QEMU does. iter_time_ms 0 (tests only;
// the CLI passes the user's value) skips the timing and uses 1000.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "crypto/secret_bytes.h"
#include "format/luks_header.h"
#include "keel/status.h"

namespace keel::crypto {

struct LuksCreateSpec {
  format::LuksCipher cipher = format::LuksCipher::kAes256;
  format::LuksMode mode = format::LuksMode::kXts;
  format::LuksIvgen ivgen = format::LuksIvgen::kPlain64;
  format::LuksHash ivgen_hash = format::LuksHash::kSha256;  // essiv only
  format::LuksHash hash = format::LuksHash::kSha256;
  uint64_t iter_time_ms = 2000;
};

// The region bytes (header and key material), `payload_offset_sectors * 512` long.
Result<std::vector<uint8_t>> luks_create(const LuksCreateSpec& spec, std::span<const uint8_t> passphrase);

// Seals `master_key` into key slot `slot` of `h` for `passphrase` (QEMU's
// qcrypto_block_luks_store_key): a fresh salt, iterations timed to iter_time_ms (at least 1000),
// the master key AF-split and encrypted with the passphrase's PBKDF2 key. Returns the slot entry
// (active) and its key material, `split_key_bytes()` rounded up to whole sectors (zero padding:
// the slot's area is a multiple of 4 KiB). `h` is not changed.
struct SealedSlot {
  format::LuksSlot entry;
  SecretBytes material;
};
Result<SealedSlot> luks_seal_slot(const format::LuksHeader& h, uint32_t slot, std::span<const uint8_t> master_key,
                                  std::span<const uint8_t> passphrase, uint64_t iter_time_ms);

// Fills `out` from the kernel's random source (getrandom).
Status random_bytes(std::span<uint8_t> out);

// Key slot i's key material offset in sectors for a key of `key_bytes`, and the payload offset.
uint32_t luks_slot_offset_sectors(uint32_t key_bytes, uint32_t slot);
uint32_t luks_payload_offset_sectors(uint32_t key_bytes);

// Parses QEMU's option names ("aes-256", "xts", "plain64", "sha256") into a spec;
// kInvalidArgument with QEMU's "Parameter 'cipher-alg' does not accept value 'x'".
Result<LuksCreateSpec> luks_spec_from_names(const std::string& cipher_alg, const std::string& cipher_mode,
                                            const std::string& ivgen_alg, const std::string& ivgen_hash_alg,
                                            const std::string& hash_alg);

}  // namespace keel::crypto
