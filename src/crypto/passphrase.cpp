// keel::Passphrase (include/keel/passphrase.h) on crypto::SecretBytes: MADV_DONTDUMP pages,
// wiped when the last handle lets go.
#include "keel/passphrase.h"

#include <cstring>

#include "crypto/secret_bytes.h"

namespace keel {

struct Passphrase::Buffer {
  crypto::SecretBytes bytes;
};

Passphrase::Passphrase(std::string_view text) {
  auto b = std::make_shared<Buffer>();
  b->bytes = crypto::SecretBytes(text.size());
  if (!text.empty()) std::memcpy(b->bytes.data(), text.data(), text.size());
  buf_ = std::move(b);
}

Passphrase::Passphrase(std::string&& text) : Passphrase(std::string_view(text)) {
  ::explicit_bzero(text.data(), text.size());
  text.clear();
}

std::span<const uint8_t> Passphrase::bytes() const {
  if (!buf_) return {};
  return buf_->bytes.span();
}

}  // namespace keel
