// Encrypted qcow2 (crypt_method 2, LUKS): the LUKS region is read and unlocked at open; guest
// data is decrypted after it is read from, and encrypted (a copy) before it is written to, the
// data file, below the cluster mapping. As in QEMU (qcow2_co_encdec with crypt_physical_offset
// set for LUKS), a sector's IV is its HOST offset / 512, so copy-on-write re-encrypts the data
// for the new cluster. Metadata (L1, L2, refcounts) stays in the clear.
#include <fmt/format.h>

#include <cstdlib>
#include <cstring>
#include <memory>

#include "crypto/luks_unlock.h"
#include "engine/qcow2_image.h"

namespace keel {

using namespace format;

namespace {
constexpr uint64_t kSector = crypto::SectorCipher::kSectorSize;
// Ours: the most ciphertext one data write stages (QEMU's bounce is 32 clusters, 2 MiB at 64 KiB).
constexpr size_t kCryptChunk = size_t{2} << 20;
constexpr size_t kCryptAlign = 4096;  // O_DIRECT's alignment (PosixFile's kDirectAlign)
static_assert(kCryptChunk % kCryptAlign == 0 && kCryptAlign % kSector == 0);
}  // namespace

Status Qcow2Image::open_encryption(const OpenOptions& opts) {
  if (header_.crypt_method == kCryptAes) {
    // Legacy AES-CBC (QEMU's qcrypto_block_qcow): the key is the passphrase's first 16 bytes,
    // zero-padded; AES-128-CBC with plain64 IVs of the guest sector. There is no key check:
    // a wrong passphrase reads garbage, as in QEMU.
    if (!opts.encrypt_secret) {
      if (opts.no_io) return Status::ok();
      return invalid("Parameter 'encrypt.key-secret' is required for cipher");
    }
    crypto::SecretBytes key(16);
    std::memcpy(key.data(), opts.encrypt_secret->data(), std::min<size_t>(16, opts.encrypt_secret->size()));
    crypto::CipherSpec spec{LuksCipher::kAes128, LuksMode::kCbc, LuksIvgen::kPlain64, LuksHash::kSha256};
    KEEL_ASSIGN(crypt_, crypto::SectorCipher::create(spec, key.span()));
    return Status::ok();
  }
  if (header_.crypt_method != kCryptLuks) return Status::ok();
  std::vector<uint8_t> region(header_.crypto_length);
  KEEL_TRY(file_->read_at(header_.crypto_offset, region));
  KEEL_ASSIGN(luks_, decode_luks_header(region));
  if (!opts.encrypt_secret) {
    if (opts.no_io) return Status::ok();
    return invalid("Parameter 'encrypt.key-secret' is required for cipher");
  }
  KEEL_ASSIGN(crypt_, crypto::luks_unlock(*luks_, region, opts.encrypt_secret->bytes()));
  return Status::ok();
}

Status Qcow2Image::read_data(uint64_t host, uint64_t guest, std::span<uint8_t> buf) {
  if (!encrypted()) return data_->read_at(host, buf);
  if (!crypt_) return invalid("the image was opened without its encryption key");
  const uint64_t start = host / kSector * kSector, end = (host + buf.size() + kSector - 1) / kSector * kSector;
  // Host and guest offsets agree modulo the cluster size, so modulo the sector too.
  const uint64_t iv_base = guest_iv_ ? guest - (host - start) : start;
  if (start == host && end == host + buf.size()) {
    KEEL_TRY(data_->read_at(host, buf));
    crypt_->decrypt(iv_base / kSector, buf);
    return Status::ok();
  }
  std::vector<uint8_t> tmp(end - start);
  KEEL_TRY(data_->read_at(start, tmp));
  crypt_->decrypt(iv_base / kSector, tmp);
  std::memcpy(buf.data(), tmp.data() + (host - start), buf.size());
  return Status::ok();
}

Status Qcow2Image::write_data(uint64_t host, uint64_t guest, std::span<const uint8_t> buf) {
  if (!encrypted()) return data_->write_at(host, buf);
  if (!crypt_) return invalid("the image was opened without its encryption key");
  if (host % kSector || buf.size() % kSector)  // write() widens requests; never expected
    return invalid(fmt::format("unaligned encrypted data write at host offset {:#x}+{}", host, buf.size()));
  // Encrypt straight into an aligned buffer (also what O_DIRECT needs, so the file layer does not
  // copy again), at most kCryptChunk at a time: one pass over the data, bounded memory.
  const uint64_t iv_base = (guest_iv_ ? guest : host) / kSector;
  const size_t chunk = std::min<size_t>(buf.size(), kCryptChunk);
  std::unique_ptr<uint8_t, decltype(&std::free)> out(
      static_cast<uint8_t*>(std::aligned_alloc(kCryptAlign, (chunk + kCryptAlign - 1) / kCryptAlign * kCryptAlign)),
      &std::free);
  if (!out) return io_error(ENOMEM, "encryption buffer");
  for (size_t pos = 0; pos < buf.size(); pos += chunk) {
    const size_t n = std::min(chunk, buf.size() - pos);
    crypt_->encrypt_to(iv_base + pos / kSector, buf.subspan(pos, n), {out.get(), n});
    KEEL_TRY(data_->write_at(host + pos, {out.get(), n}));
  }
  return Status::ok();
}

Status Qcow2Image::write_unaligned_encrypted(uint64_t offset, std::span<const uint8_t> buf, bool fua) {
  // The block layer of QEMU does the same for an encrypted image (request_alignment 512).
  const uint64_t start = offset / kSector * kSector;
  const uint64_t end = (offset + buf.size() + kSector - 1) / kSector * kSector;  // sizes are 512-multiples
  std::vector<uint8_t> tmp(end - start);
  KEEL_TRY(read(start, tmp));
  std::memcpy(tmp.data() + (offset - start), buf.data(), buf.size());
  return write(start, tmp, fua);
}

}  // namespace keel
