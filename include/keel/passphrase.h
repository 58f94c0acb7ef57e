// keel::Passphrase: the passphrase of an encrypted image (LUKS key slot, legacy AES key), held as
// key material. Its bytes live in anonymous pages marked MADV_DONTDUMP, so no core dump holds
// them, and are wiped (explicit_bzero) when the last copy is released; copies share the one
// buffer, so copying an OpenOptions never duplicates the secret. Built from a string it copies
// the text (and, from an rvalue std::string, wipes the source). Never printed; no operator<<.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace keel {

class Passphrase {
 public:
  Passphrase() = default;  // empty
  Passphrase(std::string_view text);  // NOLINT(google-explicit-constructor): as a string
  Passphrase(const char* text) : Passphrase(std::string_view(text)) {}  // NOLINT
  Passphrase(const std::string& text) : Passphrase(std::string_view(text)) {}  // NOLINT
  Passphrase(std::string&& text);  // NOLINT: copies, then wipes `text`

  std::span<const uint8_t> bytes() const;
  const char* data() const { return reinterpret_cast<const char*>(bytes().data()); }
  size_t size() const { return bytes().size(); }

 private:
  struct Buffer;
  std::shared_ptr<const Buffer> buf_;
};

}  // namespace keel
