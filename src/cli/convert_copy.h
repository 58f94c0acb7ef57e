// The copy loop of `keel convert`: maps the (concatenated) sources with block status, then copies
// only what holds data, with up to `requests` requests in flight (qemu-img convert -m, default 8)
// and, unless out_of_order (-W), writes in guest order as qemu-img does.
//
// Zero and unallocated source ranges cost one block-status call per extent: they are skipped when
// the target already reads as zeros, else written with write_zeroes (one call per range). With
// compress, only target clusters that overlap a data extent are read and written compressed; a
// cluster read back as all zeros is written as zeros instead (qemu-img does the same).
#pragma once

#include <cstdint>
#include <vector>

#include "keel/image.h"

namespace keel::cli {

struct CopySource {
  Image* image = nullptr;
  uint64_t size = 0;
};

struct CopyOptions {
  uint64_t min_sparse = 4096;  // -S; 0 = write everything (fully allocate the target)
  bool target_zero = false;    // the target reads as zeros (new image, or --target-is-zero)
  bool target_has_backing = false;  // -B: ranges not allocated in a source's top layer are left
                                    // to the target's backing file (neither read nor written)
  bool compress = false;       // -c
  bool progress = false;       // -p and not -q
  bool out_of_order = false;   // -W
  int requests = 8;            // -m: 1..16
  // --salvage: a source range that cannot be read is retried sector by sector; a 512-byte
  // sector that still fails reads as zeros, with qemu-img's warning (unless quiet), and the
  // convert goes on. A failed block-status query is retried the same way and the sector copied.
  bool salvage = false;
  bool quiet = false;          // -q: no salvage warnings
};

// Copies the sources, back to back, into target from offset 0 and flushes it. Returns the exit
// code (0, or 1 after printing qemu-img's "error while reading/writing at byte N: ..." message).
int copy_images(const std::vector<CopySource>& sources, Image& target, const CopyOptions& opts);

}  // namespace keel::cli
