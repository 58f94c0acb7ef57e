// Proves SectorCipher's GnuTLS path (AES-XTS/CBC, gnutls_sectors.h) gives byte for byte nettle's
// result for every ivgen, in place and out of place, from several threads at once (the handle
// pool), and that the combinations GnuTLS lacks stay on nettle. (QEMU's own reading of the
// result is checked by the interop tests: crypt_luks*.sh compare with qemu-img/qemu-io.)
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <random>
#include <thread>
#include <vector>

#include "crypto/sector_cipher.h"

namespace keel::crypto {
namespace {

using format::LuksCipher;
using format::LuksHash;
using format::LuksIvgen;
using format::LuksMode;

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

size_t key_size(const CipherSpec& s) {
  size_t k = s.cipher == LuksCipher::kAes128 ? 16 : s.cipher == LuksCipher::kAes192 ? 24 : 32;
  return s.mode == LuksMode::kXts ? 2 * k : k;
}

std::unique_ptr<SectorCipher> make(const CipherSpec& spec, bool gnutls) {
  auto key = random_bytes(key_size(spec), 7);
  auto c = SectorCipher::create(spec, key);
  EXPECT_TRUE(c.has_value()) << c.error().message();
  if (!c) return nullptr;
  if (!gnutls) (*c)->disable_gnutls_for_test();
  return std::move(*c);
}

TEST(SectorCipher, GnutlsMatchesNettleForEveryAesCombination) {
  const CipherSpec specs[] = {
      {LuksCipher::kAes256, LuksMode::kXts, LuksIvgen::kPlain64, LuksHash::kSha256},
      {LuksCipher::kAes128, LuksMode::kXts, LuksIvgen::kPlain, LuksHash::kSha256},
      {LuksCipher::kAes256, LuksMode::kXts, LuksIvgen::kEssiv, LuksHash::kSha256},
      {LuksCipher::kAes256, LuksMode::kCbc, LuksIvgen::kEssiv, LuksHash::kSha256},
      {LuksCipher::kAes128, LuksMode::kCbc, LuksIvgen::kPlain64, LuksHash::kSha256},
      {LuksCipher::kAes192, LuksMode::kCbc, LuksIvgen::kPlain, LuksHash::kSha256},
  };
  // Sector numbers past 2^32 tell plain from plain64; a short last sector as in LUKS key material.
  const uint64_t first = (uint64_t{1} << 32) - 3;
  const auto plain = random_bytes(8 * 512 + 48, 1);
  for (const auto& spec : specs) {
    SCOPED_TRACE(fmt::format("{}-{}-{}", format::luks_cipher_name(spec.cipher), format::luks_mode_name(spec.mode),
                             static_cast<int>(spec.ivgen)));
    auto fast = make(spec, true), slow = make(spec, false);
    ASSERT_TRUE(fast && slow);
    EXPECT_TRUE(fast->uses_gnutls());
    EXPECT_FALSE(slow->uses_gnutls());
    auto a = plain, b = plain;
    fast->encrypt(first, a);
    slow->encrypt(first, b);
    EXPECT_EQ(a, b) << "GnuTLS ciphertext differs from nettle's";
    EXPECT_NE(a, plain);
    std::vector<uint8_t> c(plain.size());
    fast->encrypt_to(first, plain, c);
    EXPECT_EQ(c, b) << "out-of-place encryption differs";
    fast->decrypt(first, a);
    EXPECT_EQ(a, plain) << "GnuTLS does not decrypt its own ciphertext";
    slow->decrypt(first, c);
    EXPECT_EQ(c, plain);
  }
}

TEST(SectorCipher, CombinationsGnutlsLacksStayOnNettle) {
  const CipherSpec specs[] = {
      {LuksCipher::kAes192, LuksMode::kXts, LuksIvgen::kPlain64, LuksHash::kSha256},
      {LuksCipher::kSerpent256, LuksMode::kXts, LuksIvgen::kPlain64, LuksHash::kSha256},
      {LuksCipher::kAes256, LuksMode::kEcb, LuksIvgen::kPlain64, LuksHash::kSha256},
      {LuksCipher::kAes256, LuksMode::kCtr, LuksIvgen::kPlain64, LuksHash::kSha256},
  };
  for (const auto& spec : specs) {
    auto key = random_bytes(key_size(spec), 3);  // (serpent-256: 32 bytes a half, as AES-256)
    auto c = SectorCipher::create(spec, key);
    ASSERT_TRUE(c.has_value()) << c.error().message();
    EXPECT_FALSE((*c)->uses_gnutls());
    auto buf = random_bytes(1024, 5), orig = buf;
    (*c)->encrypt(9, buf);
    (*c)->decrypt(9, buf);
    EXPECT_EQ(buf, orig);
  }
}

TEST(SectorCipher, ThreadsShareOneCipher) {
  const CipherSpec spec{LuksCipher::kAes256, LuksMode::kXts, LuksIvgen::kPlain64, LuksHash::kSha256};
  auto fast = make(spec, true), slow = make(spec, false);
  ASSERT_TRUE(fast && slow);
  const auto plain = random_bytes(64 * 1024, 2);
  auto want = plain;
  slow->encrypt(100, want);
  std::vector<int> bad(4, 0);
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        auto b = plain;
        fast->encrypt(100, b);
        if (b != want) ++bad[t];
        fast->decrypt(100, b);
        if (b != plain) ++bad[t];
      }
    });
  for (auto& t : ts) t.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(bad[t], 0) << "thread " << t;
}

}  // namespace
}  // namespace keel::crypto
