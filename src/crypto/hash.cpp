// Hashes, PBKDF2 and the AF-splitter for LUKS (see hash.h), on nettle's hash and HMAC code.
#include "crypto/hash.h"

#include <nettle/hmac.h>
#include <nettle/nettle-meta.h>
#include <nettle/pbkdf2.h>

#include <cstring>

namespace keel::crypto {

using format::LuksHash;

namespace {

const nettle_hash* nettle_for(LuksHash h) {
  switch (h) {
    case LuksHash::kMd5: return &nettle_md5;
    case LuksHash::kSha1: return &nettle_sha1;
    case LuksHash::kSha224: return &nettle_sha224;
    case LuksHash::kSha256: return &nettle_sha256;
    case LuksHash::kSha384: return &nettle_sha384;
    case LuksHash::kSha512: return &nettle_sha512;
    case LuksHash::kRipemd160: return &nettle_ripemd160;
  }
  return nullptr;
}

// nettle's generic HMAC, packaged so nettle's generic pbkdf2() can drive it.
struct Hmac {
  const nettle_hash* hash;
  uint8_t* outer;
  uint8_t* inner;
  uint8_t* state;
};
void hmac_update_thunk(void* ctx, size_t length, const uint8_t* data) {
  auto* m = static_cast<Hmac*>(ctx);
  hmac_update(m->state, m->hash, length, data);
}
void hmac_digest_thunk(void* ctx, size_t length, uint8_t* out) {
  auto* m = static_cast<Hmac*>(ctx);
  hmac_digest(m->outer, m->inner, m->state, m->hash, length, out);
}

// LUKS1 "diffuse": the block is rehashed in digest-sized pieces, piece i as H(be32(i) || piece).
void diffuse(const nettle_hash* h, uint8_t* block, size_t size, uint8_t* ctx, uint8_t* out) {
  const size_t ds = h->digest_size;
  for (size_t i = 0, off = 0; off < size; ++i, off += ds) {
    const size_t n = std::min(ds, size - off);
    const uint8_t iv[4] = {uint8_t(i >> 24), uint8_t(i >> 16), uint8_t(i >> 8), uint8_t(i)};
    h->init(ctx);
    h->update(ctx, 4, iv);
    h->update(ctx, n, block + off);
    h->digest(ctx, ds, out);
    std::memcpy(block + off, out, n);
  }
}

}  // namespace

size_t digest_size(LuksHash h) {
  const nettle_hash* m = nettle_for(h);
  return m ? m->digest_size : 0;
}

Result<SecretBytes> digest(LuksHash h, std::span<const uint8_t> data) {
  const nettle_hash* m = nettle_for(h);
  if (!m) return error(unsupported("unknown hash"));
  SecretBytes ctx(m->context_size), out(m->digest_size);
  m->init(ctx.data());
  m->update(ctx.data(), data.size(), data.data());
  m->digest(ctx.data(), m->digest_size, out.data());
  return out;
}

Result<SecretBytes> pbkdf2_hmac(LuksHash h, std::span<const uint8_t> password, std::span<const uint8_t> salt,
                           uint32_t iterations, size_t length) {
  const nettle_hash* m = nettle_for(h);
  if (!m) return error(unsupported("unknown hash"));
  if (iterations == 0) return error(invalid("PBKDF2 needs at least one iteration"));
  SecretBytes ctx(3 * size_t(m->context_size)), out(length);
  Hmac mac{m, ctx.data(), ctx.data() + m->context_size, ctx.data() + 2 * m->context_size};
  hmac_set_key(mac.outer, mac.inner, mac.state, m, password.size(), password.data());
  nettle_pbkdf2(&mac, hmac_update_thunk, hmac_digest_thunk, m->digest_size, iterations, salt.size(), salt.data(), length,
           out.data());
  return out;
}

Result<SecretBytes> af_merge(LuksHash h, std::span<const uint8_t> split, size_t block, uint32_t stripes) {
  const nettle_hash* m = nettle_for(h);
  if (!m) return error(unsupported("unknown hash"));
  if (stripes == 0 || split.size() != block * stripes) return error(invalid("AF split size does not match"));
  SecretBytes d(block), ctx(m->context_size), tmp(m->digest_size);
  for (uint32_t i = 0; i + 1 < stripes; ++i) {
    const uint8_t* s = split.data() + i * block;
    for (size_t j = 0; j < block; ++j) d.data()[j] ^= s[j];
    diffuse(m, d.data(), block, ctx.data(), tmp.data());
  }
  const uint8_t* last = split.data() + (stripes - 1) * block;
  for (size_t j = 0; j < block; ++j) d.data()[j] ^= last[j];
  return d;
}

Result<SecretBytes> af_split(LuksHash h, std::span<const uint8_t> key, std::span<const uint8_t> random,
                             uint32_t stripes) {
  const nettle_hash* m = nettle_for(h);
  if (!m) return error(unsupported("unknown hash"));
  const size_t block = key.size();
  if (stripes == 0 || random.size() != block * (stripes - 1)) return error(invalid("AF split random size does not match"));
  SecretBytes out(block * stripes), d(block), ctx(m->context_size), tmp(m->digest_size);
  std::memcpy(out.data(), random.data(), random.size());
  for (uint32_t i = 0; i + 1 < stripes; ++i) {
    const uint8_t* s = out.data() + i * block;
    for (size_t j = 0; j < block; ++j) d.data()[j] ^= s[j];
    diffuse(m, d.data(), block, ctx.data(), tmp.data());
  }
  uint8_t* last = out.data() + (stripes - 1) * block;
  for (size_t j = 0; j < block; ++j) last[j] = d.data()[j] ^ key[j];
  return out;
}

}  // namespace keel::crypto
