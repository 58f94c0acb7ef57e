// Unlocking a LUKS1 volume: the passphrase against each active key slot (PBKDF2 of the slot's
// salt, key material decrypted with the slot key, AF-merged), the candidate master key checked
// against the header's PBKDF2 digest. The master key never leaves SecretBytes and no error
// message carries key bytes or the passphrase.
#pragma once

#include <memory>
#include <span>

#include "crypto/sector_cipher.h"
#include "format/luks_header.h"
#include "keel/status.h"

namespace keel::crypto {

CipherSpec cipher_spec_of(const format::LuksHeader& h);

// The master key, or kInvalidArgument (EPERM) "Invalid password, cannot unlock any keyslot"
// (QEMU's message). `region` is the whole LUKS region (header and key material).
Result<SecretBytes> luks_master_key(const format::LuksHeader& h, std::span<const uint8_t> region,
                                    std::span<const uint8_t> passphrase);

// The master key from key slot `slot` alone (QEMU's qcrypto_block_luks_load_key): empty when
// the slot is inactive or the passphrase does not open it.
Result<SecretBytes> luks_slot_master_key(const format::LuksHeader& h, uint32_t slot, std::span<const uint8_t> region,
                                         std::span<const uint8_t> passphrase);

// The payload cipher for `h` with the passphrase.
Result<std::unique_ptr<SectorCipher>> luks_unlock(const format::LuksHeader& h, std::span<const uint8_t> region,
                                                  std::span<const uint8_t> passphrase);

}  // namespace keel::crypto
