// The header the format tests start from (tests/format/header_test.cpp, header_layout_test.cpp):
// a valid v2 or v3 qcow2 header (64 KiB clusters, 1 GiB, refcount table at 0x10000, L1 at
// 0x30000) and its encoding, checked.
#pragma once

#include <cstdint>
#include <vector>

#include "format/header.h"

namespace keel::test {

// The file size the sample's offsets fit in.
inline constexpr uint64_t kSampleFileBytes = 1 << 20;

format::Header sample_header(uint32_t version);
// encode_header(h), failing the current test (and returning no bytes) if it refuses.
std::vector<uint8_t> encode_checked(const format::Header& h);

}  // namespace keel::test
