// read_check_header (see check_header.h).
#include "check/check_header.h"

#include <vector>

#include "format/endian.h"

namespace keel::check {

Result<CheckHeader> read_check_header(BlockFile& file) {
  uint8_t start[512] = {};
  KEEL_TRY_R(file.read_at(0, start));
  KEEL_ASSIGN(uint32_t bits, format::peek_cluster_bits(start));
  std::vector<uint8_t> c0(1ull << bits);
  KEEL_TRY_R(file.read_at(0, c0));
  CheckHeader out;
  const uint64_t cluster_size = 1ull << bits;
  if (format::get_be32(&c0[format::kOffsetSnapshots]) == 0) {
    uint64_t off = format::get_be64(&c0[format::kOffsetSnapshots + 4]);
    if (off != 0 && off % cluster_size == 0 && off <= INT64_MAX) {
      format::put_be64(&c0[format::kOffsetSnapshots + 4], 0);
      out.stray_snapshots_offset = true;
    }
  }
  KEEL_ASSIGN(out.header, format::decode_header(c0, UINT64_MAX, /*check_mode=*/true));
  return out;
}

}  // namespace keel::check
