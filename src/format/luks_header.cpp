// LUKS1 header decode/validate/encode (see luks_header.h for the invariants).
#include "format/luks_header.h"

#include <cstring>

#include <fmt/format.h>

#include "format/endian.h"

namespace keel::format {
namespace {

constexpr uint8_t kMagic[6] = {'L', 'U', 'K', 'S', 0xba, 0xbe};

Status bad(const char* field, const std::string& value, const char* why) {
  return Status(Code::kCorrupt, fmt::format("LUKS header: {} = {} {}", field, value, why), EINVAL);
}
Status bad(const char* field, uint64_t value, const char* why) { return bad(field, std::to_string(value), why); }

// A fixed-size, NUL-padded name field; it must hold a NUL.
Result<std::string> name_field(std::span<const uint8_t> f, const char* field) {
  const void* nul = std::memchr(f.data(), 0, f.size());
  if (!nul) return error(bad(field, "(unterminated)", "is not NUL-terminated"));
  return std::string(reinterpret_cast<const char*>(f.data()), static_cast<const uint8_t*>(nul) - f.data());
}

Result<LuksHash> parse_hash(const std::string& s, const char* field) {
  if (s == "md5") return LuksHash::kMd5;
  if (s == "sha1") return LuksHash::kSha1;
  if (s == "sha224") return LuksHash::kSha224;
  if (s == "sha256") return LuksHash::kSha256;
  if (s == "sha384") return LuksHash::kSha384;
  if (s == "sha512") return LuksHash::kSha512;
  if (s == "ripemd160") return LuksHash::kRipemd160;
  return error(Status(Code::kUnsupported, fmt::format("Algorithm '{}' not supported ({})", s, field), ENOTSUP));
}

// cipher_name and the key size (per cipher key: half of key_bytes for XTS).
Result<LuksCipher> parse_cipher(const std::string& s, uint32_t key) {
  auto unsupported_key = [&] {
    return error(Status(Code::kUnsupported, fmt::format("Unsupported cipher '{}' with key size {}", s, key), ENOTSUP));
  };
  if (s == "aes") {
    if (key == 16) return LuksCipher::kAes128;
    if (key == 24) return LuksCipher::kAes192;
    if (key == 32) return LuksCipher::kAes256;
    return unsupported_key();
  }
  if (s == "cast5") {
    if (key == 16) return LuksCipher::kCast5_128;
    return unsupported_key();
  }
  if (s == "serpent") {
    if (key == 16) return LuksCipher::kSerpent128;
    if (key == 24) return LuksCipher::kSerpent192;
    if (key == 32) return LuksCipher::kSerpent256;
    return unsupported_key();
  }
  if (s == "twofish") {
    if (key == 16) return LuksCipher::kTwofish128;
    if (key == 24) return LuksCipher::kTwofish192;
    if (key == 32) return LuksCipher::kTwofish256;
    return unsupported_key();
  }
  return error(Status(Code::kUnsupported, fmt::format("Unsupported cipher '{}'", s), ENOTSUP));
}

Status parse_mode(LuksHeader& h) {
  // "<mode>[-<ivgen>[:<hash>]]", e.g. "xts-plain64", "cbc-essiv:sha256", "ecb".
  const std::string& s = h.cipher_mode;
  std::string mode = s, ivgen;
  if (auto dash = s.find('-'); dash != std::string::npos) {
    mode = s.substr(0, dash);
    ivgen = s.substr(dash + 1);
  }
  if (mode == "ecb") h.mode = LuksMode::kEcb;
  else if (mode == "cbc") h.mode = LuksMode::kCbc;
  else if (mode == "xts") h.mode = LuksMode::kXts;
  else if (mode == "ctr") h.mode = LuksMode::kCtr;
  else return Status(Code::kUnsupported, fmt::format("Unsupported cipher mode '{}'", s), ENOTSUP);
  std::string hash;
  if (auto colon = ivgen.find(':'); colon != std::string::npos) {
    hash = ivgen.substr(colon + 1);
    ivgen = ivgen.substr(0, colon);
  }
  if (ivgen.empty() || ivgen == "plain") h.ivgen = LuksIvgen::kPlain;  // ecb has none: unused
  else if (ivgen == "plain64") h.ivgen = LuksIvgen::kPlain64;
  else if (ivgen == "essiv") h.ivgen = LuksIvgen::kEssiv;
  else return Status(Code::kUnsupported, fmt::format("Unsupported IV generator '{}'", ivgen), ENOTSUP);
  if (h.ivgen == LuksIvgen::kEssiv) {
    if (hash.empty()) return bad("cipher_mode", s, "names essiv without a hash");
    KEEL_ASSIGN(h.ivgen_hash, parse_hash(hash, "ivgen hash"));
  } else if (!hash.empty()) {
    return bad("cipher_mode", s, "has a hash for an IV generator that takes none");
  }
  return Status::ok();
}

}  // namespace

const char* luks_cipher_name(LuksCipher c) {
  switch (c) {
    case LuksCipher::kAes128: return "aes-128";
    case LuksCipher::kAes192: return "aes-192";
    case LuksCipher::kAes256: return "aes-256";
    case LuksCipher::kCast5_128: return "cast5-128";
    case LuksCipher::kSerpent128: return "serpent-128";
    case LuksCipher::kSerpent192: return "serpent-192";
    case LuksCipher::kSerpent256: return "serpent-256";
    case LuksCipher::kTwofish128: return "twofish-128";
    case LuksCipher::kTwofish192: return "twofish-192";
    case LuksCipher::kTwofish256: return "twofish-256";
  }
  return "?";
}
const char* luks_mode_name(LuksMode m) {
  switch (m) {
    case LuksMode::kEcb: return "ecb";
    case LuksMode::kCbc: return "cbc";
    case LuksMode::kXts: return "xts";
    case LuksMode::kCtr: return "ctr";
  }
  return "?";
}
const char* luks_ivgen_name(LuksIvgen g) {
  switch (g) {
    case LuksIvgen::kPlain: return "plain";
    case LuksIvgen::kPlain64: return "plain64";
    case LuksIvgen::kEssiv: return "essiv";
  }
  return "?";
}
const char* luks_hash_name(LuksHash h) {
  switch (h) {
    case LuksHash::kMd5: return "md5";
    case LuksHash::kSha1: return "sha1";
    case LuksHash::kSha224: return "sha224";
    case LuksHash::kSha256: return "sha256";
    case LuksHash::kSha384: return "sha384";
    case LuksHash::kSha512: return "sha512";
    case LuksHash::kRipemd160: return "ripemd160";
  }
  return "?";
}

Result<LuksHeader> decode_luks_header(std::span<const uint8_t> region) {
  if (region.size() < kLuksHeaderBytes) return error(bad("header length", region.size(), "is shorter than 592 bytes"));
  if (region.size() > kMaxLuksRegionBytes) return error(bad("header length", region.size(), "is too large"));
  const uint8_t* p = region.data();
  if (std::memcmp(p, kMagic, sizeof kMagic) != 0)
    return error(Status(Code::kCorrupt, "Volume is not in LUKS format", EINVAL));
  uint16_t version = static_cast<uint16_t>(p[6] << 8 | p[7]);
  if (version != 1)
    return error(Status(Code::kUnsupported, fmt::format("Unsupported LUKS version {}", version), ENOTSUP));
  LuksHeader h;
  KEEL_ASSIGN(h.cipher_name, name_field({p + 8, 32}, "cipher_name"));
  KEEL_ASSIGN(h.cipher_mode, name_field({p + 40, 32}, "cipher_mode"));
  KEEL_ASSIGN(h.hash_spec, name_field({p + 72, 32}, "hash_spec"));
  h.payload_offset_sectors = get_be32(p + 104);
  h.key_bytes = get_be32(p + 108);
  std::memcpy(h.mk_digest.data(), p + 112, kLuksDigestBytes);
  std::memcpy(h.mk_digest_salt.data(), p + 132, kLuksSaltBytes);
  h.mk_digest_iterations = get_be32(p + 164);
  KEEL_ASSIGN(h.uuid, name_field({p + 168, 40}, "uuid"));

  if (h.key_bytes == 0 || h.key_bytes > kMaxLuksKeyBytes)
    return error(bad("key_bytes", h.key_bytes, "must be 1..64"));
  KEEL_TRY_R(parse_mode(h));
  if (h.mode == LuksMode::kXts && h.key_bytes % 2 != 0)
    return error(bad("key_bytes", h.key_bytes, "is odd for XTS (two keys)"));
  KEEL_ASSIGN(h.cipher, parse_cipher(h.cipher_name, h.mode == LuksMode::kXts ? h.key_bytes / 2 : h.key_bytes));
  KEEL_ASSIGN(h.hash, parse_hash(h.hash_spec, "hash_spec"));
  if (h.mode == LuksMode::kXts && h.cipher == LuksCipher::kCast5_128)
    return error(Status(Code::kUnsupported, "Unsupported cipher 'cast5' in mode xts (64-bit blocks)", ENOTSUP));
  if (h.mk_digest_iterations == 0) return error(bad("mk_digest_iterations", 0, "must be >= 1"));

  const uint64_t region_sectors = region.size() / kLuksSectorSize;
  const uint64_t header_sectors = (kLuksHeaderBytes + kLuksSectorSize - 1) / kLuksSectorSize;
  const uint64_t split_sectors = (h.split_key_bytes() + kLuksSectorSize - 1) / kLuksSectorSize;
  for (uint32_t i = 0; i < kLuksSlots; ++i) {
    const uint8_t* s = p + 208 + i * 48;
    LuksSlot& slot = h.slots[i];
    uint32_t state = get_be32(s);
    if (state != kLuksSlotActive && state != kLuksSlotDisabled)
      return error(bad(fmt::format("key slot {} active", i).c_str(), fmt::format("{:#x}", state),
                       "is neither active nor disabled"));
    slot.active = state == kLuksSlotActive;
    slot.iterations = get_be32(s + 4);
    std::memcpy(slot.salt.data(), s + 8, kLuksSaltBytes);
    slot.key_offset_sectors = get_be32(s + 40);
    slot.stripes = get_be32(s + 44);
    if (slot.stripes != kLuksStripes)
      return error(bad(fmt::format("key slot {} stripes", i).c_str(), slot.stripes, "must be 4000"));
    if (slot.active && slot.iterations == 0)
      return error(bad(fmt::format("key slot {} iterations", i).c_str(), 0, "must be >= 1"));
    const uint64_t start = slot.key_offset_sectors, end = start + split_sectors;
    if (start < header_sectors)
      return error(bad(fmt::format("key slot {} key_offset", i).c_str(), start, "overlaps the LUKS header"));
    if (end > region_sectors)
      return error(bad(fmt::format("key slot {} key_offset", i).c_str(), start, "puts key material past the region"));
    if (h.payload_offset_sectors != 0 && end > h.payload_offset_sectors)
      return error(bad(fmt::format("key slot {} key_offset", i).c_str(), start, "puts key material past the payload"));
    for (uint32_t j = 0; j < i; ++j) {
      const uint64_t o = h.slots[j].key_offset_sectors;
      if (start < o + split_sectors && o < end)
        return error(bad(fmt::format("key slot {} key_offset", i).c_str(), start,
                         fmt::format("overlaps key slot {}", j).c_str()));
    }
  }
  return h;
}

std::vector<uint8_t> encode_luks_header(const LuksHeader& h) {
  std::vector<uint8_t> out(kLuksHeaderBytes, 0);
  uint8_t* p = out.data();
  std::memcpy(p, kMagic, sizeof kMagic);
  p[7] = 1;
  auto put_name = [](uint8_t* dst, size_t cap, const std::string& s) {
    std::memcpy(dst, s.data(), std::min(cap - 1, s.size()));
  };
  put_name(p + 8, 32, h.cipher_name);
  put_name(p + 40, 32, h.cipher_mode);
  put_name(p + 72, 32, h.hash_spec);
  put_be32(p + 104, h.payload_offset_sectors);
  put_be32(p + 108, h.key_bytes);
  std::memcpy(p + 112, h.mk_digest.data(), kLuksDigestBytes);
  std::memcpy(p + 132, h.mk_digest_salt.data(), kLuksSaltBytes);
  put_be32(p + 164, h.mk_digest_iterations);
  put_name(p + 168, 40, h.uuid);
  for (uint32_t i = 0; i < kLuksSlots; ++i) {
    uint8_t* s = p + 208 + i * 48;
    const LuksSlot& slot = h.slots[i];
    put_be32(s, slot.active ? kLuksSlotActive : kLuksSlotDisabled);
    put_be32(s + 4, slot.iterations);
    std::memcpy(s + 8, slot.salt.data(), kLuksSaltBytes);
    put_be32(s + 40, slot.key_offset_sectors);
    put_be32(s + 44, slot.stripes);
  }
  return out;
}

}  // namespace keel::format
