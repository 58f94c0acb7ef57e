// How keel check reads cluster 0: the format layer's decoder, made as lenient as QEMU's open in
// check mode where the two differ, so that check judges every image QEMU can open.
#pragma once

#include <cstdint>
#include <span>

#include "format/header.h"
#include "keel/block_file.h"

namespace keel::check {

struct CheckHeader {
  format::Header header;
  // nb_snapshots is 0 but snapshots_offset is not (QEMU ignores such an offset when it is aligned;
  // a repair clears it).
  bool stray_snapshots_offset = false;
};

// Reads and decodes cluster 0 of `file`. Table offsets are not judged against the file size
// (a truncated file is something check reports and repairs).
Result<CheckHeader> read_check_header(BlockFile& file);

}  // namespace keel::check
