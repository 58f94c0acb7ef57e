// SectorCipher (see sector_cipher.h): nettle's ciphers and modes per 512-byte sector.
#include "crypto/sector_cipher.h"

#include <nettle/cbc.h>
#include <nettle/ctr.h>
#include <nettle/nettle-meta.h>
#include <nettle/xts.h>

#include <cstring>

#include <fmt/format.h>

#include "crypto/hash.h"

namespace keel::crypto {

using format::LuksCipher;
using format::LuksIvgen;
using format::LuksMode;

namespace {

const nettle_cipher* nettle_for(LuksCipher c) {
  switch (c) {
    case LuksCipher::kAes128: return &nettle_aes128;
    case LuksCipher::kAes192: return &nettle_aes192;
    case LuksCipher::kAes256: return &nettle_aes256;
    case LuksCipher::kCast5_128: return &nettle_cast128;
    case LuksCipher::kSerpent128: return &nettle_serpent128;
    case LuksCipher::kSerpent192: return &nettle_serpent192;
    case LuksCipher::kSerpent256: return &nettle_serpent256;
    case LuksCipher::kTwofish128: return &nettle_twofish128;
    case LuksCipher::kTwofish192: return &nettle_twofish192;
    case LuksCipher::kTwofish256: return &nettle_twofish256;
  }
  return nullptr;
}

// QEMU's ESSIV cipher: the same cipher family, keyed with the hash of the key, so its key
// size is the digest size.
Result<const nettle_cipher*> essiv_cipher_for(LuksCipher c, size_t digest) {
  auto pick = [&](const nettle_cipher* k16, const nettle_cipher* k24, const nettle_cipher* k32) -> Result<const nettle_cipher*> {
    if (digest == 16 && k16) return k16;
    if (digest == 24 && k24) return k24;
    if (digest == 32 && k32) return k32;
    return error(Status(Code::kUnsupported, fmt::format("Cipher {} does not take an ESSIV key of {} bytes",
                                                        format::luks_cipher_name(c), digest), ENOTSUP));
  };
  switch (c) {
    case LuksCipher::kAes128: case LuksCipher::kAes192: case LuksCipher::kAes256:
      return pick(&nettle_aes128, &nettle_aes192, &nettle_aes256);
    case LuksCipher::kSerpent128: case LuksCipher::kSerpent192: case LuksCipher::kSerpent256:
      return pick(&nettle_serpent128, &nettle_serpent192, &nettle_serpent256);
    case LuksCipher::kTwofish128: case LuksCipher::kTwofish192: case LuksCipher::kTwofish256:
      return pick(&nettle_twofish128, &nettle_twofish192, &nettle_twofish256);
    case LuksCipher::kCast5_128:
      return pick(&nettle_cast128, nullptr, nullptr);
  }
  return error(unsupported("unknown cipher"));
}

}  // namespace

Result<std::unique_ptr<SectorCipher>> SectorCipher::create(const CipherSpec& spec, std::span<const uint8_t> key) {
  std::unique_ptr<SectorCipher> c(new SectorCipher());
  c->spec_ = spec;
  c->alg_ = nettle_for(spec.cipher);
  if (!c->alg_) return error(unsupported("unknown cipher"));
  const size_t per_key = spec.mode == LuksMode::kXts ? key.size() / 2 : key.size();
  if (per_key != c->alg_->key_size || (spec.mode == LuksMode::kXts && key.size() % 2))
    return error(invalid(fmt::format("key of {} bytes does not fit cipher {} in mode {}", key.size(),
                                     format::luks_cipher_name(spec.cipher), format::luks_mode_name(spec.mode))));
  if (spec.mode == LuksMode::kXts && c->alg_->block_size != 16)
    return error(Status(Code::kUnsupported, "XTS needs a cipher with 128-bit blocks", ENOTSUP));
  c->enc_ = SecretBytes(c->alg_->context_size);
  c->dec_ = SecretBytes(c->alg_->context_size);
  c->alg_->set_encrypt_key(c->enc_.data(), key.data());
  c->alg_->set_decrypt_key(c->dec_.data(), key.data());
  if (spec.mode == LuksMode::kXts) {
    c->tweak_ = SecretBytes(c->alg_->context_size);
    c->alg_->set_encrypt_key(c->tweak_.data(), key.data() + per_key);
  }
  if (spec.ivgen == LuksIvgen::kEssiv && spec.mode != LuksMode::kEcb) {
    KEEL_ASSIGN(SecretBytes salt, digest(spec.ivgen_hash, key));
    KEEL_ASSIGN(c->essiv_alg_, essiv_cipher_for(spec.cipher, salt.size()));
    c->essiv_ = SecretBytes(c->essiv_alg_->context_size);
    c->essiv_alg_->set_encrypt_key(c->essiv_.data(), salt.data());
  }
  return c;
}

void SectorCipher::make_iv(uint64_t sector, uint8_t* iv) const {
  const size_t bs = alg_->block_size;
  std::memset(iv, 0, bs);
  const uint64_t n = spec_.ivgen == LuksIvgen::kPlain ? (sector & 0xffffffffu) : sector;
  const size_t width = spec_.ivgen == LuksIvgen::kPlain ? 4 : 8;
  for (size_t i = 0; i < width && i < bs; ++i) iv[i] = static_cast<uint8_t>(n >> (8 * i));  // little-endian
  if (spec_.ivgen == LuksIvgen::kEssiv) essiv_alg_->encrypt(essiv_.data(), bs, iv, iv);
}

void SectorCipher::encrypt(uint64_t first_sector, std::span<uint8_t> buf) const {
  const size_t bs = alg_->block_size;
  uint8_t iv[16];
  for (size_t pos = 0; pos < buf.size(); pos += kSectorSize) {
    const size_t n = std::min<size_t>(kSectorSize, buf.size() - pos);
    uint8_t* p = buf.data() + pos;
    const uint64_t sector = first_sector + pos / kSectorSize;
    switch (spec_.mode) {
      case LuksMode::kEcb: alg_->encrypt(enc_.data(), n, p, p); break;
      case LuksMode::kCbc: make_iv(sector, iv); cbc_encrypt(enc_.data(), alg_->encrypt, bs, iv, n, p, p); break;
      case LuksMode::kCtr: make_iv(sector, iv); ctr_crypt(enc_.data(), alg_->encrypt, bs, iv, n, p, p); break;
      case LuksMode::kXts: make_iv(sector, iv); xts_encrypt_message(enc_.data(), tweak_.data(), alg_->encrypt, iv, n, p, p); break;
    }
  }
  ::explicit_bzero(iv, sizeof iv);
}

void SectorCipher::decrypt(uint64_t first_sector, std::span<uint8_t> buf) const {
  const size_t bs = alg_->block_size;
  uint8_t iv[16];
  for (size_t pos = 0; pos < buf.size(); pos += kSectorSize) {
    const size_t n = std::min<size_t>(kSectorSize, buf.size() - pos);
    uint8_t* p = buf.data() + pos;
    const uint64_t sector = first_sector + pos / kSectorSize;
    switch (spec_.mode) {
      case LuksMode::kEcb: alg_->decrypt(dec_.data(), n, p, p); break;
      case LuksMode::kCbc: make_iv(sector, iv); cbc_decrypt(dec_.data(), alg_->decrypt, bs, iv, n, p, p); break;
      case LuksMode::kCtr: make_iv(sector, iv); ctr_crypt(enc_.data(), alg_->encrypt, bs, iv, n, p, p); break;
      case LuksMode::kXts:
        make_iv(sector, iv);
        xts_decrypt_message(dec_.data(), tweak_.data(), alg_->decrypt, alg_->encrypt, iv, n, p, p);
        break;
    }
  }
  ::explicit_bzero(iv, sizeof iv);
}

}  // namespace keel::crypto
