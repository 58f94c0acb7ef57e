// QEMU's null-co protocol (see null_file.h).
#include "cli/null_file.h"

#include <algorithm>
#include <cerrno>

namespace keel {

Status NullFile::read_at(uint64_t, std::span<uint8_t> buf) {
  std::fill(buf.begin(), buf.end(), uint8_t{0});
  return Status::ok();
}

Status NullFile::truncate(uint64_t size) {
  if (size == size_bytes_) return Status::ok();
  return unsupported("the null-co driver cannot change its size");
}

}  // namespace keel
