// GnutlsSectors (see gnutls_sectors.h): a pool of GnuTLS cipher handles for AES-XTS/CBC sectors.
#include "crypto/gnutls_sectors.h"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include <cstring>

namespace keel::crypto {

using format::LuksCipher;
using format::LuksMode;

namespace {

gnutls_cipher_algorithm_t gnutls_for(LuksCipher c, LuksMode m) {
  if (m == LuksMode::kXts) {
    if (c == LuksCipher::kAes128) return GNUTLS_CIPHER_AES_128_XTS;
    if (c == LuksCipher::kAes256) return GNUTLS_CIPHER_AES_256_XTS;
  } else if (m == LuksMode::kCbc) {
    if (c == LuksCipher::kAes128) return GNUTLS_CIPHER_AES_128_CBC;
    if (c == LuksCipher::kAes192) return GNUTLS_CIPHER_AES_192_CBC;
    if (c == LuksCipher::kAes256) return GNUTLS_CIPHER_AES_256_CBC;
  }
  return GNUTLS_CIPHER_UNKNOWN;
}

gnutls_cipher_hd_t hd(void* h) { return static_cast<gnutls_cipher_hd_t>(h); }

}  // namespace

std::unique_ptr<GnutlsSectors> GnutlsSectors::create(LuksCipher cipher, LuksMode mode, std::span<const uint8_t> key) {
  const gnutls_cipher_algorithm_t alg = gnutls_for(cipher, mode);
  if (alg == GNUTLS_CIPHER_UNKNOWN) return nullptr;
  if (static_cast<size_t>(gnutls_cipher_get_key_size(alg)) != key.size()) return nullptr;
  std::unique_ptr<GnutlsSectors> g(new GnutlsSectors());
  g->algorithm_ = alg;
  g->key_ = SecretBytes(key.size());
  std::memcpy(g->key_.data(), key.data(), key.size());
  void* first = g->new_handle();  // proves GnuTLS takes the key; the pool's first handle
  if (!first) return nullptr;
  g->idle_.push_back(first);
  return g;
}

GnutlsSectors::~GnutlsSectors() {
  for (void* h : idle_) gnutls_cipher_deinit(hd(h));  // wipes the key schedule
}

void* GnutlsSectors::new_handle() {
  gnutls_datum_t k{key_.data(), static_cast<unsigned>(key_.size())};
  uint8_t zero_iv[16] = {};
  gnutls_datum_t iv{zero_iv, 16};
  gnutls_cipher_hd_t h = nullptr;
  if (gnutls_cipher_init(&h, static_cast<gnutls_cipher_algorithm_t>(algorithm_), &k, &iv) < 0) return nullptr;
  return h;
}

GnutlsSectors::Lease GnutlsSectors::lease() {
  {
    std::lock_guard<std::mutex> g(mu_);
    if (!idle_.empty()) {
      void* h = idle_.back();
      idle_.pop_back();
      return Lease(*this, h);
    }
  }
  return Lease(*this, new_handle());
}

GnutlsSectors::Lease::~Lease() {
  if (!handle_) return;
  std::lock_guard<std::mutex> g(owner_.mu_);
  owner_.idle_.push_back(handle_);
}

bool GnutlsSectors::Lease::encrypt(const uint8_t* iv, const uint8_t* in, uint8_t* out, size_t len) {
  gnutls_cipher_set_iv(hd(handle_), const_cast<uint8_t*>(iv), 16);
  return gnutls_cipher_encrypt2(hd(handle_), in, len, out, len) >= 0;
}

bool GnutlsSectors::Lease::decrypt(const uint8_t* iv, const uint8_t* in, uint8_t* out, size_t len) {
  gnutls_cipher_set_iv(hd(handle_), const_cast<uint8_t*>(iv), 16);
  return gnutls_cipher_decrypt2(hd(handle_), in, len, out, len) >= 0;
}

}  // namespace keel::crypto
