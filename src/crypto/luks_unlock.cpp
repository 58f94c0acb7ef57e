// LUKS1 key-slot unlock (see luks_unlock.h).
#include "crypto/luks_unlock.h"

#include <nettle/memops.h>

#include <cstring>

#include "crypto/hash.h"

namespace keel::crypto {

using namespace format;

CipherSpec cipher_spec_of(const LuksHeader& h) {
  CipherSpec s;
  s.cipher = h.cipher;
  s.mode = h.mode;
  s.ivgen = h.ivgen;
  s.ivgen_hash = h.ivgen_hash;
  return s;
}

namespace {

// The master key candidate from one slot, or an empty SecretBytes if the digest does not match.
Result<SecretBytes> try_slot(const LuksHeader& h, const LuksSlot& slot, std::span<const uint8_t> region,
                             std::span<const uint8_t> passphrase) {
  KEEL_ASSIGN(SecretBytes slot_key, pbkdf2_hmac(h.hash, passphrase, slot.salt, slot.iterations, h.key_bytes));
  const uint64_t off = uint64_t(slot.key_offset_sectors) * kLuksSectorSize, len = h.split_key_bytes();
  if (off > region.size() || len > region.size() - off)  // decode_luks_header guarantees it; never trust
    return error(corrupt("LUKS key slot material lies outside the header region"));
  SecretBytes split(len);
  std::memcpy(split.data(), region.data() + off, len);
  KEEL_ASSIGN(auto slot_cipher, SectorCipher::create(cipher_spec_of(h), slot_key.span()));
  slot_cipher->decrypt(0, split.span());
  KEEL_ASSIGN(SecretBytes key, af_merge(h.hash, split.span(), h.key_bytes, slot.stripes));
  KEEL_ASSIGN(SecretBytes check, pbkdf2_hmac(h.hash, key.span(), h.mk_digest_salt, h.mk_digest_iterations, kLuksDigestBytes));
  if (!memeql_sec(check.data(), h.mk_digest.data(), kLuksDigestBytes)) return SecretBytes();
  return key;
}

}  // namespace

Result<SecretBytes> luks_slot_master_key(const LuksHeader& h, uint32_t slot, std::span<const uint8_t> region,
                                         std::span<const uint8_t> passphrase) {
  if (slot >= kLuksSlots || !h.slots[slot].active) return SecretBytes();
  return try_slot(h, h.slots[slot], region, passphrase);
}

Result<SecretBytes> luks_master_key(const LuksHeader& h, std::span<const uint8_t> region,
                                    std::span<const uint8_t> passphrase) {
  for (uint32_t i = 0; i < kLuksSlots; ++i) {
    KEEL_ASSIGN(SecretBytes key, luks_slot_master_key(h, i, region, passphrase));
    if (key.size()) return key;
  }
  return error(Status(Code::kInvalidArgument, "Invalid password, cannot unlock any keyslot", EPERM));
}

Result<std::unique_ptr<SectorCipher>> luks_unlock(const LuksHeader& h, std::span<const uint8_t> region,
                                                  std::span<const uint8_t> passphrase) {
  KEEL_ASSIGN(SecretBytes key, luks_master_key(h, region, passphrase));
  return SectorCipher::create(cipher_spec_of(h), key.span());
}

}  // namespace keel::crypto
