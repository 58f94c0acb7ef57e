// Proves the LUKS1 header codec round-trips a header laid out as QEMU does, that key-slot unlock
// finds the master key with the right passphrase and refuses a wrong one with QEMU's message, and
// that validation rejects each hostile field with an error naming it (bytes from luks_create /
// encode_luks_header, damaged one field at a time).
#include <gtest/gtest.h>

#include <cstring>

#include "crypto/luks_create.h"
#include "crypto/luks_unlock.h"
#include "format/endian.h"
#include "format/luks_header.h"

namespace keel::format {
namespace {

std::vector<uint8_t> region(crypto::LuksCreateSpec spec = {}) {
  spec.iter_time_ms = 1;  // the minimum of 1000 iterations each
  const uint8_t pw[] = {'p', 'w'};
  auto r = crypto::luks_create(spec, pw);
  EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message());
  return r ? *r : std::vector<uint8_t>();
}

TEST(LuksHeader, QemuLayoutRoundTripsAndUnlocks) {
  auto reg = region();
  ASSERT_EQ(reg.size(), 2068480u);  // QEMU's payload offset for aes-256-xts
  auto h = decode_luks_header(reg);
  ASSERT_TRUE(h.has_value()) << h.error().message();
  EXPECT_EQ(h->cipher_name, "aes");
  EXPECT_EQ(h->cipher_mode, "xts-plain64");
  EXPECT_EQ(h->hash_spec, "sha256");
  EXPECT_EQ(h->key_bytes, 64u);
  EXPECT_TRUE(h->slots[0].active);
  EXPECT_EQ(h->slots[0].key_offset_sectors, 8u);
  EXPECT_EQ(h->slots[1].key_offset_sectors, 512u);
  EXPECT_FALSE(h->slots[7].active);
  auto again = encode_luks_header(*h);
  EXPECT_EQ(0, std::memcmp(again.data(), reg.data(), kLuksHeaderBytes));

  const uint8_t pw[] = {'p', 'w'}, bad[] = {'p', 'x'};
  auto key = crypto::luks_master_key(*h, reg, pw);
  ASSERT_TRUE(key.has_value()) << key.error().message();
  EXPECT_EQ(key->size(), 64u);
  auto wrong = crypto::luks_master_key(*h, reg, bad);
  ASSERT_FALSE(wrong.has_value());
  EXPECT_EQ(wrong.error().message(), "Invalid password, cannot unlock any keyslot");
}

TEST(LuksHeader, EveryCipherFamilyUnlocks) {
  crypto::LuksCreateSpec s;
  for (auto c : {LuksCipher::kSerpent256, LuksCipher::kTwofish128}) {
    s.cipher = c;
    s.mode = LuksMode::kCbc;
    s.ivgen = LuksIvgen::kEssiv;
    auto reg = region(s);
    auto h = decode_luks_header(reg);
    ASSERT_TRUE(h.has_value()) << h.error().message();
    const uint8_t pw[] = {'p', 'w'};
    EXPECT_TRUE(crypto::luks_master_key(*h, reg, pw).has_value()) << luks_cipher_name(c);
  }
}

// Damages one field of a valid region; decode must fail naming `what`.
void expect_refused(size_t off, uint32_t value, const char* what) {
  static const std::vector<uint8_t> valid = region();  // made once: creation times PBKDF2
  auto reg = valid;
  put_be32(&reg[off], value);
  auto h = decode_luks_header(reg);
  ASSERT_FALSE(h.has_value()) << what;
  EXPECT_NE(h.error().message().find(what), std::string::npos) << h.error().message();
  EXPECT_EQ(h.error().message().find('\n'), std::string::npos);
}

TEST(LuksHeader, HostileFieldsAreNamed) {
  expect_refused(0, 0x4c554b54, "LUKS format");                  // "LUKT": not LUKS
  expect_refused(4, 0xbabe0002, "LUKS version 2");
  expect_refused(108, 0xFFFFFFFF, "key_bytes");
  expect_refused(108, 40, "key size");                           // XTS halves of 20 bytes: no AES
  expect_refused(164, 0, "mk_digest_iterations");
  expect_refused(208 + 0, 0x12345678, "key slot 0 active");
  expect_refused(208 + 4, 0, "key slot 0 iterations");
  expect_refused(208 + 44, 0, "key slot 0 stripes");
  expect_refused(208 + 40, 0, "key slot 0 key_offset");          // over the header
  expect_refused(208 + 40, 0xFFFFFFFF, "key slot 0 key_offset"); // past the region (no wrap)
  expect_refused(208 + 48 + 40, 8, "overlaps key slot 0");
  expect_refused(104, 100, "past the payload");
}

TEST(LuksHeader, ShortOrUnterminatedInputIsRefused) {
  auto reg = region();
  EXPECT_FALSE(decode_luks_header(std::span<const uint8_t>(reg).first(591)).has_value());
  std::memset(&reg[8], 'a', 32);  // cipher_name without NUL
  auto h = decode_luks_header(reg);
  ASSERT_FALSE(h.has_value());
  EXPECT_NE(h.error().message().find("cipher_name"), std::string::npos);
}

}  // namespace
}  // namespace keel::format
