// The luks_header fuzz harness (harness.h): the LUKS1 header parser on untrusted bytes, then,
// when the header is accepted and its PBKDF2 work is small, a key-slot unlock with a fixed
// passphrase (AF-merge, slot decryption, digest check) over the same bytes.
#include "crypto/luks_unlock.h"
#include "format/luks_header.h"
#include "harness.h"

namespace keel::fuzz {

namespace {
// ours, because: PBKDF2 cost is the header's to choose (QEMU lets it be 2^32 iterations); the
// harness only unlocks headers whose work stays small, so a run never looks like a hang.
constexpr uint32_t kMaxFuzzIterations = 64;
}  // namespace

Status luks_header(std::span<const uint8_t> region) {
  auto h = format::decode_luks_header(region);
  if (!h) return h.error();
  if (h->mk_digest_iterations > kMaxFuzzIterations) return Status::ok();
  for (const auto& s : h->slots)
    if (s.active && s.iterations > kMaxFuzzIterations) return Status::ok();
  static const uint8_t kPass[] = {'f', 'u', 'z', 'z'};
  auto key = crypto::luks_master_key(*h, region, kPass);
  if (!key) return key.error();
  return Status::ok();
}

}  // namespace keel::fuzz
