// SecretBytes (see secret_bytes.h): anonymous pages, MADV_DONTDUMP, wiped before munmap.
#include "crypto/secret_bytes.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace keel::crypto {

SecretBytes::SecretBytes(size_t size) : size_(size) {
  if (size == 0) return;
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  mapped_ = (size + page - 1) / page * page;
  void* p = ::mmap(nullptr, mapped_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) std::abort();
  (void)::madvise(p, mapped_, MADV_DONTDUMP);
  data_ = static_cast<uint8_t*>(p);
}

SecretBytes& SecretBytes::operator=(SecretBytes&& o) noexcept {
  if (this != &o) {
    reset();
    data_ = o.data_;
    size_ = o.size_;
    mapped_ = o.mapped_;
    o.data_ = nullptr;
    o.size_ = o.mapped_ = 0;
  }
  return *this;
}

void SecretBytes::reset() {
  if (data_) {
    ::explicit_bzero(data_, mapped_);
    ::munmap(data_, mapped_);
  }
  data_ = nullptr;
  size_ = mapped_ = 0;
}

}  // namespace keel::crypto
