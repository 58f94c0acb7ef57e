// The hashes LUKS uses, from nettle: a digest, PBKDF2 (HMAC of the hash) and the AF-splitter's
// merge (LUKS1's anti-forensic split, decoded). Outputs that may be key material are SecretBytes.
#pragma once

#include <cstdint>
#include <span>

#include "crypto/secret_bytes.h"
#include "format/luks_header.h"
#include "keel/status.h"

namespace keel::crypto {

// Digest size in bytes of the hash.
size_t digest_size(format::LuksHash h);
Result<SecretBytes> digest(format::LuksHash h, std::span<const uint8_t> data);
// PBKDF2-HMAC-<h> (RFC 8018), `length` bytes.
Result<SecretBytes> pbkdf2_hmac(format::LuksHash h, std::span<const uint8_t> password, std::span<const uint8_t> salt,
                           uint32_t iterations, size_t length);
// LUKS1 AF-merge: `split` holds `stripes` blocks of `block` bytes; returns the merged block.
Result<SecretBytes> af_merge(format::LuksHash h, std::span<const uint8_t> split, size_t block, uint32_t stripes);
// LUKS1 AF-split of `key` with the random stripes in `random` ((stripes - 1) * key.size() bytes);
// the result is stripes * key.size() bytes.
Result<SecretBytes> af_split(format::LuksHash h, std::span<const uint8_t> key, std::span<const uint8_t> random,
                             uint32_t stripes);

}  // namespace keel::crypto
