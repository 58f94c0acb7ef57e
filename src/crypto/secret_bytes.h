// SecretBytes: a buffer for key material (master keys, slot keys, passphrases, cipher
// contexts). Its pages are marked MADV_DONTDUMP so no core dump holds them, and are wiped
// (explicit_bzero) before they are given back. Move-only; never printed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace keel::crypto {

class SecretBytes {
 public:
  SecretBytes() = default;
  explicit SecretBytes(size_t size);  // zero-filled; aborts only if mmap fails (out of memory)
  SecretBytes(SecretBytes&& o) noexcept { *this = static_cast<SecretBytes&&>(o); }
  SecretBytes& operator=(SecretBytes&& o) noexcept;
  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;
  ~SecretBytes() { reset(); }

  // Wipes and releases the buffer.
  void reset();
  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<uint8_t> span() { return {data_, size_}; }
  std::span<const uint8_t> span() const { return {data_, size_}; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  size_t mapped_ = 0;
};

}  // namespace keel::crypto
