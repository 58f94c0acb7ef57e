// SectorCipher (see sector_cipher.h): nettle's ciphers and modes per 512-byte sector.
#include "crypto/sector_cipher.h"

#include <nettle/cbc.h>
#include <nettle/ctr.h>
#include <nettle/nettle-meta.h>
#include <nettle/xts.h>

#include <cstdlib>
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
  // The IVs stay ours (make_iv); GnuTLS only runs the cipher and mode, where it offers them.
  c->fast_ = GnutlsSectors::create(spec.cipher, spec.mode, key);
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
  crypt(true, first_sector, buf.data(), buf.data(), buf.size());
}

void SectorCipher::decrypt(uint64_t first_sector, std::span<uint8_t> buf) const {
  crypt(false, first_sector, buf.data(), buf.data(), buf.size());
}

void SectorCipher::encrypt_to(uint64_t first_sector, std::span<const uint8_t> in, std::span<uint8_t> out) const {
  crypt(true, first_sector, in.data(), out.data(), std::min(in.size(), out.size()));
}

bool SectorCipher::crypt_gnutls(bool enc, uint64_t first_sector, const uint8_t* in, uint8_t* out, size_t len) const {
  if (len % 16) return false;  // GnuTLS takes whole blocks only (so do callers: sizes are 16-multiples)
  GnutlsSectors::Lease l = fast_->lease();
  if (!l) return false;
  uint8_t iv[16];
  bool ok = true;
  for (size_t pos = 0; ok && pos < len; pos += kSectorSize) {
    const size_t n = std::min<size_t>(kSectorSize, len - pos);
    make_iv(first_sector + pos / kSectorSize, iv);
    ok = enc ? l.encrypt(iv, in + pos, out + pos, n) : l.decrypt(iv, in + pos, out + pos, n);
  }
  ::explicit_bzero(iv, sizeof iv);
  // GnuTLS fails a block cipher call only for a size that is no block multiple, excluded above.
  // Sectors already done in place cannot be redone: never hand on a half-transformed buffer.
  if (!ok) std::abort();
  return true;
}

void SectorCipher::crypt(bool enc, uint64_t first_sector, const uint8_t* in, uint8_t* out, size_t len) const {
  if (fast_ && crypt_gnutls(enc, first_sector, in, out, len)) return;
  const size_t bs = alg_->block_size;
  uint8_t iv[16];
  for (size_t pos = 0; pos < len; pos += kSectorSize) {
    const size_t n = std::min<size_t>(kSectorSize, len - pos);
    const uint8_t* s = in + pos;
    uint8_t* d = out + pos;
    const uint64_t sector = first_sector + pos / kSectorSize;
    if (spec_.mode != LuksMode::kEcb) make_iv(sector, iv);
    switch (spec_.mode) {
      case LuksMode::kEcb: (enc ? alg_->encrypt : alg_->decrypt)(enc ? enc_.data() : dec_.data(), n, d, s); break;
      case LuksMode::kCbc:
        if (enc) cbc_encrypt(enc_.data(), alg_->encrypt, bs, iv, n, d, s);
        else cbc_decrypt(dec_.data(), alg_->decrypt, bs, iv, n, d, s);
        break;
      case LuksMode::kCtr: ctr_crypt(enc_.data(), alg_->encrypt, bs, iv, n, d, s); break;
      case LuksMode::kXts:
        if (enc) xts_encrypt_message(enc_.data(), tweak_.data(), alg_->encrypt, iv, n, d, s);
        else xts_decrypt_message(dec_.data(), tweak_.data(), alg_->decrypt, alg_->encrypt, iv, n, d, s);
        break;
    }
  }
  ::explicit_bzero(iv, sizeof iv);
}

}  // namespace keel::crypto
