// The format tests' sample header (see header_util.h).
#include "format/header_util.h"

#include <gtest/gtest.h>

namespace keel::test {

format::Header sample_header(uint32_t version) {
  format::Header h;
  h.version = version;
  h.cluster_bits = 16;
  h.size = 1ull << 30;
  h.refcount_table_offset = 0x10000;
  h.refcount_table_clusters = 1;
  h.l1_table_offset = 0x30000;
  h.l1_size = 2;
  h.header_length = version == 3 ? format::kV3HeaderLength : format::kV2HeaderLength;
  return h;
}

std::vector<uint8_t> encode_checked(const format::Header& h) {
  auto r = format::encode_header(h);
  EXPECT_TRUE(r.has_value()) << r.error().message();
  return r ? *r : std::vector<uint8_t>{};
}

}  // namespace keel::test
