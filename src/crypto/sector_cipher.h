// SectorCipher: the payload cipher of a LUKS volume, applied to 512-byte sectors with the IV
// of each sector's number (QEMU's qcrypto_block_encrypt/decrypt). Built from nettle's block
// ciphers and modes (AES, Serpent, Twofish, CAST5; ECB, CBC, XTS, CTR) and its hashes for
// ESSIV; no cipher code of our own. The key schedules live in SecretBytes (not dumped, wiped).
// Thread-safe: encrypt/decrypt only read the key schedules.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "crypto/gnutls_sectors.h"
#include "crypto/secret_bytes.h"
#include "format/luks_header.h"
#include "keel/status.h"

struct nettle_cipher;

namespace keel::crypto {

struct CipherSpec {
  format::LuksCipher cipher = format::LuksCipher::kAes256;
  format::LuksMode mode = format::LuksMode::kXts;
  format::LuksIvgen ivgen = format::LuksIvgen::kPlain64;
  format::LuksHash ivgen_hash = format::LuksHash::kSha256;
};

class SectorCipher {
 public:
  static constexpr uint32_t kSectorSize = format::kLuksSectorSize;

  // `key` is the whole key (both halves for XTS). kUnsupported for a combination nettle or QEMU
  // does not offer (e.g. ESSIV with a hash whose size is no key size of the cipher).
  static Result<std::unique_ptr<SectorCipher>> create(const CipherSpec& spec, std::span<const uint8_t> key);

  // In place. `buf` covers consecutive sectors starting at `first_sector`; its size is a multiple
  // of the cipher's block size (the last sector may be short, as for LUKS key material).
  void encrypt(uint64_t first_sector, std::span<uint8_t> buf) const;
  void decrypt(uint64_t first_sector, std::span<uint8_t> buf) const;
  // Out of place: `out` (the size of `in`) receives the ciphertext; `in` is not changed.
  void encrypt_to(uint64_t first_sector, std::span<const uint8_t> in, std::span<uint8_t> out) const;

  // True when the GnuTLS path serves this cipher (for tests and the profile notes).
  bool uses_gnutls() const { return fast_ != nullptr; }
  // Tests: drop the GnuTLS path so both implementations can be compared.
  void disable_gnutls_for_test() { fast_.reset(); }

 private:
  SectorCipher() = default;
  void make_iv(uint64_t sector, uint8_t* iv) const;
  void crypt(bool enc, uint64_t first_sector, const uint8_t* in, uint8_t* out, size_t len) const;
  bool crypt_gnutls(bool enc, uint64_t first_sector, const uint8_t* in, uint8_t* out, size_t len) const;

  CipherSpec spec_;
  const nettle_cipher* alg_ = nullptr;
  const nettle_cipher* essiv_alg_ = nullptr;
  SecretBytes enc_, dec_, tweak_, essiv_;
  std::unique_ptr<GnutlsSectors> fast_;  // null: nettle only
};

}  // namespace keel::crypto
