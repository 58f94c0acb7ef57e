// GnutlsSectors: AES in XTS or CBC mode over 512-byte sectors through GnuTLS's cipher API
// (gnutls_cipher_*), which runs the CPU's AES instructions with a pipelined XTS: about 6x the
// throughput of nettle's xts_encrypt_message (nettle 3.8 encrypts one 16-byte block per call;
// QEMU 7.2 on Debian uses that nettle code). SectorCipher (sector_cipher.h) uses it for the AES
// combinations GnuTLS offers and keeps nettle for the others and as the fallback.
//
// A GnuTLS handle carries its IV, so a handle serves one thread at a time: a small pool, each
// call leases one (created on demand; as many as threads that ran at once).
// Key material: the raw key stays in SecretBytes (MADV_DONTDUMP, wiped) to key new handles;
// the handles' key schedules live in memory GnuTLS allocates, which gnutls_cipher_deinit wipes
// but which is NOT marked MADV_DONTDUMP (GnuTLS offers no allocator per handle).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "crypto/secret_bytes.h"
#include "format/luks_header.h"

namespace keel::crypto {

class GnutlsSectors {
 public:
  // Null when GnuTLS does not offer the cipher and mode (e.g. AES-192-XTS, Serpent, ECB, CTR)
  // or refuses the key (FIPS mode's equal XTS halves); the caller then uses nettle.
  static std::unique_ptr<GnutlsSectors> create(format::LuksCipher cipher, format::LuksMode mode,
                                               std::span<const uint8_t> key);
  ~GnutlsSectors();
  GnutlsSectors(const GnutlsSectors&) = delete;
  GnutlsSectors& operator=(const GnutlsSectors&) = delete;

  // One lease: a handle for the calling thread until the lease ends.
  class Lease {
   public:
    ~Lease();
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    explicit operator bool() const { return handle_ != nullptr; }
    // One sector (or a shorter, block-multiple run) with its own 16-byte IV; `in` and `out`
    // may be the same memory. False if GnuTLS fails (it does not for these sizes).
    bool encrypt(const uint8_t* iv, const uint8_t* in, uint8_t* out, size_t len);
    bool decrypt(const uint8_t* iv, const uint8_t* in, uint8_t* out, size_t len);

   private:
    friend class GnutlsSectors;
    Lease(GnutlsSectors& owner, void* handle) : owner_(owner), handle_(handle) {}
    GnutlsSectors& owner_;
    void* handle_;
  };
  Lease lease();  // a null lease (false) only if a new handle cannot be made

 private:
  GnutlsSectors() = default;
  void* new_handle();

  int algorithm_ = 0;  // gnutls_cipher_algorithm_t
  SecretBytes key_;
  std::mutex mu_;
  std::vector<void*> idle_;  // guarded by mu_
};

}  // namespace keel::crypto
