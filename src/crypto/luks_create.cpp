// LUKS1 volume creation (see luks_create.h).
#include "crypto/luks_create.h"

#include <sys/random.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <ctime>

#include <fmt/format.h>

#include "crypto/hash.h"
#include "crypto/sector_cipher.h"

namespace keel::crypto {

using namespace format;

namespace {

constexpr uint32_t kHeaderSectors = 4096 / kLuksSectorSize;  // QEMU: key slots start at 4 KiB
constexpr uint32_t kSlotAlignSectors = 4096 / kLuksSectorSize;
constexpr uint64_t kMinIterations = 1000;                   // QEMU's minimum for slots and digest

uint32_t key_bytes_of(LuksCipher c, LuksMode m) {
  uint32_t k = 32;
  switch (c) {
    case LuksCipher::kAes128: case LuksCipher::kSerpent128: case LuksCipher::kTwofish128: case LuksCipher::kCast5_128:
      k = 16; break;
    case LuksCipher::kAes192: case LuksCipher::kSerpent192: case LuksCipher::kTwofish192: k = 24; break;
    default: k = 32; break;
  }
  return m == LuksMode::kXts ? 2 * k : k;
}

const char* family(LuksCipher c) {
  switch (c) {
    case LuksCipher::kAes128: case LuksCipher::kAes192: case LuksCipher::kAes256: return "aes";
    case LuksCipher::kSerpent128: case LuksCipher::kSerpent192: case LuksCipher::kSerpent256: return "serpent";
    case LuksCipher::kTwofish128: case LuksCipher::kTwofish192: case LuksCipher::kTwofish256: return "twofish";
    case LuksCipher::kCast5_128: return "cast5";
  }
  return "?";
}

// PBKDF2 iterations that take `ms` milliseconds of CPU on this machine (QEMU times it too).
Result<uint64_t> iterations_for(LuksHash h, uint32_t out_len, uint64_t ms) {
  if (ms == 0) return kMinIterations;  // tests: no timing, the minimum
  uint8_t pw[32] = {}, salt[kLuksSaltBytes] = {};
  uint32_t n = 1u << 14;
  for (;;) {
    timespec a{}, b{};
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
    KEEL_ASSIGN(SecretBytes out, pbkdf2_hmac(h, pw, salt, n, out_len));
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
    const double secs = double(b.tv_sec - a.tv_sec) + double(b.tv_nsec - a.tv_nsec) / 1e9;
    if (secs >= 0.05 || n >= (1u << 30)) {
      const double per_sec = double(n) / std::max(secs, 1e-6);
      return static_cast<uint64_t>(per_sec * double(ms) / 1000.0);
    }
    n *= 2;
  }
}

}  // namespace

Status random_bytes(std::span<uint8_t> out) {
  for (size_t done = 0; done < out.size();) {
    ssize_t n = ::getrandom(out.data() + done, out.size() - done, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return io_error(errno, "getrandom");
    }
    done += static_cast<size_t>(n);
  }
  return Status::ok();
}

uint32_t luks_slot_offset_sectors(uint32_t key_bytes, uint32_t slot) {
  const uint32_t split = (key_bytes * kLuksStripes + kLuksSectorSize - 1) / kLuksSectorSize;
  const uint32_t stride = (split + kSlotAlignSectors - 1) / kSlotAlignSectors * kSlotAlignSectors;
  return kHeaderSectors + slot * stride;
}

uint32_t luks_payload_offset_sectors(uint32_t key_bytes) { return luks_slot_offset_sectors(key_bytes, kLuksSlots); }

Result<LuksCreateSpec> luks_spec_from_names(const std::string& cipher_alg, const std::string& cipher_mode,
                                            const std::string& ivgen_alg, const std::string& ivgen_hash_alg,
                                            const std::string& hash_alg) {
  auto bad = [](const char* key, const std::string& v) {
    return error(invalid(fmt::format("Parameter '{}' does not accept value '{}'", key, v)));
  };
  LuksCreateSpec s;
  const std::pair<const char*, LuksCipher> ciphers[] = {  // not static: no relocated data in libkeel (capi.no_global_state)
      {"aes-128", LuksCipher::kAes128}, {"aes-192", LuksCipher::kAes192}, {"aes-256", LuksCipher::kAes256},
      {"cast5-128", LuksCipher::kCast5_128}, {"serpent-128", LuksCipher::kSerpent128},
      {"serpent-192", LuksCipher::kSerpent192}, {"serpent-256", LuksCipher::kSerpent256},
      {"twofish-128", LuksCipher::kTwofish128}, {"twofish-192", LuksCipher::kTwofish192},
      {"twofish-256", LuksCipher::kTwofish256}};
  bool found = false;
  for (const auto& [n, c] : ciphers)
    if (cipher_alg == n) s.cipher = c, found = true;
  if (!found) return bad("cipher-alg", cipher_alg);
  if (cipher_mode == "ecb") s.mode = LuksMode::kEcb;
  else if (cipher_mode == "cbc") s.mode = LuksMode::kCbc;
  else if (cipher_mode == "xts") s.mode = LuksMode::kXts;
  else if (cipher_mode == "ctr") s.mode = LuksMode::kCtr;
  else return bad("cipher-mode", cipher_mode);
  if (ivgen_alg == "plain") s.ivgen = LuksIvgen::kPlain;
  else if (ivgen_alg == "plain64") s.ivgen = LuksIvgen::kPlain64;
  else if (ivgen_alg == "essiv") s.ivgen = LuksIvgen::kEssiv;
  else return bad("ivgen-alg", ivgen_alg);
  const std::pair<const char*, LuksHash> hashes[] = {
      {"md5", LuksHash::kMd5}, {"sha1", LuksHash::kSha1}, {"sha224", LuksHash::kSha224},
      {"sha256", LuksHash::kSha256}, {"sha384", LuksHash::kSha384}, {"sha512", LuksHash::kSha512},
      {"ripemd160", LuksHash::kRipemd160}};
  found = false;
  for (const auto& [n, h] : hashes)
    if (hash_alg == n) s.hash = h, found = true;
  if (!found) return bad("hash-alg", hash_alg);
  found = ivgen_hash_alg.empty();
  for (const auto& [n, h] : hashes)
    if (ivgen_hash_alg == n) s.ivgen_hash = h, found = true;
  if (!found) return bad("ivgen-hash-alg", ivgen_hash_alg);
  return s;
}

Result<std::vector<uint8_t>> luks_create(const LuksCreateSpec& spec, std::span<const uint8_t> passphrase) {
  LuksHeader h;
  h.cipher = spec.cipher;
  h.mode = spec.mode;
  h.ivgen = spec.ivgen;
  h.ivgen_hash = spec.ivgen_hash;
  h.hash = spec.hash;
  h.cipher_name = family(spec.cipher);
  h.cipher_mode = fmt::format("{}-{}", luks_mode_name(spec.mode), luks_ivgen_name(spec.ivgen));
  if (spec.ivgen == LuksIvgen::kEssiv) h.cipher_mode += fmt::format(":{}", luks_hash_name(spec.ivgen_hash));
  h.hash_spec = luks_hash_name(spec.hash);
  h.key_bytes = key_bytes_of(spec.cipher, spec.mode);
  h.payload_offset_sectors = luks_payload_offset_sectors(h.key_bytes);

  // Master key, its digest, the uuid.
  SecretBytes master(h.key_bytes);
  KEEL_TRY_R(random_bytes(master.span()));
  CipherSpec cs{spec.cipher, spec.mode, spec.ivgen, spec.ivgen_hash};
  KEEL_ASSIGN(auto check_cipher, SectorCipher::create(cs, master.span()));  // the combination works
  (void)check_cipher;
  KEEL_TRY_R(random_bytes(h.mk_digest_salt));
  KEEL_ASSIGN(uint64_t per_time, iterations_for(spec.hash, kLuksDigestBytes, spec.iter_time_ms));
  h.mk_digest_iterations = static_cast<uint32_t>(std::clamp<uint64_t>(per_time / 8, kMinIterations, UINT32_MAX));
  KEEL_ASSIGN(SecretBytes digest, pbkdf2_hmac(spec.hash, master.span(), h.mk_digest_salt, h.mk_digest_iterations,
                                              kLuksDigestBytes));
  std::memcpy(h.mk_digest.data(), digest.data(), kLuksDigestBytes);
  uint8_t u[16];
  KEEL_TRY_R(random_bytes(u));
  u[6] = static_cast<uint8_t>((u[6] & 0x0f) | 0x40);  // RFC 4122 version 4
  u[8] = static_cast<uint8_t>((u[8] & 0x3f) | 0x80);
  h.uuid = fmt::format("{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
                       u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
                       u[15]);

  // Key slot 0 active; 1-7 disabled, at their offsets.
  for (uint32_t i = 0; i < kLuksSlots; ++i) {
    h.slots[i].active = false;
    h.slots[i].stripes = kLuksStripes;
    h.slots[i].key_offset_sectors = luks_slot_offset_sectors(h.key_bytes, i);
  }
  KEEL_ASSIGN(SealedSlot s0, luks_seal_slot(h, 0, master.span(), passphrase, spec.iter_time_ms));
  h.slots[0] = s0.entry;

  std::vector<uint8_t> region(uint64_t(h.payload_offset_sectors) * kLuksSectorSize, 0);
  auto hdr = encode_luks_header(h);
  std::memcpy(region.data(), hdr.data(), hdr.size());
  std::memcpy(region.data() + uint64_t(s0.entry.key_offset_sectors) * kLuksSectorSize, s0.material.data(),
              s0.material.size());
  return region;
}

Result<SealedSlot> luks_seal_slot(const LuksHeader& h, uint32_t slot, std::span<const uint8_t> master_key,
                                  std::span<const uint8_t> passphrase, uint64_t iter_time_ms) {
  if (slot >= kLuksSlots || master_key.size() != h.key_bytes)
    return error(invalid(fmt::format("LUKS key slot {} or key size {} out of range", slot, master_key.size())));
  SealedSlot out;
  out.entry = h.slots[slot];
  out.entry.active = true;
  out.entry.stripes = kLuksStripes;
  KEEL_TRY_R(random_bytes(out.entry.salt));
  KEEL_ASSIGN(uint64_t iters, iterations_for(h.hash, h.key_bytes, iter_time_ms));
  out.entry.iterations = static_cast<uint32_t>(std::clamp<uint64_t>(iters, kMinIterations, UINT32_MAX));
  KEEL_ASSIGN(SecretBytes slot_key, pbkdf2_hmac(h.hash, passphrase, out.entry.salt, out.entry.iterations, h.key_bytes));
  SecretBytes random(size_t(h.key_bytes) * (kLuksStripes - 1));
  KEEL_TRY_R(random_bytes(random.span()));
  KEEL_ASSIGN(SecretBytes split, af_split(h.hash, master_key, random.span(), kLuksStripes));
  KEEL_ASSIGN(auto slot_cipher, SectorCipher::create(CipherSpec{h.cipher, h.mode, h.ivgen, h.ivgen_hash}, slot_key.span()));
  slot_cipher->encrypt(0, split.span());
  out.material = SecretBytes((split.size() + kLuksSectorSize - 1) / kLuksSectorSize * kLuksSectorSize);
  std::memcpy(out.material.data(), split.data(), split.size());
  return out;
}

}  // namespace keel::crypto
