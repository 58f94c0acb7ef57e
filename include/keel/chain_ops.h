// Backing-chain operations that move guest data between images: qemu-img commit's copy into the
// base and qemu-img rebase. `keel commit`, `keel rebase` and the integrity proof's workloads
// (src/proof/workload.cpp) call these same functions, so the code the crash explorer crashes is
// the code users run.
//
// Errors carry qemu-img's messages ("error while writing at byte 65536: ..."), with the code and
// errno of the failure underneath.
#pragma once

#include <functional>
#include <string>

#include "keel/image.h"

namespace keel {

// Called with the share of the work done, 0..100.
using ProgressFn = std::function<void(double percent)>;

struct CommitOptions {
  // The depth, in `chain`'s block_status extents (1 = the top image), of the image committed
  // into. Ranges served from depths [1, base_depth) are copied; deeper ones are already below.
  int base_depth = 2;
  std::string base_name;  // names the base in error messages ("Could not resize 'NAME': ...")
  ProgressFn progress;
};

// qemu-img commit's data movement: flushes `chain` (an error, e.g. from a latched image, stops
// the commit before anything is copied), grows `base` to the size of `chain` if it is smaller, writes
// into it every range a layer of `chain` above the base stores (data as data, zero clusters as
// zeroes), and flushes it.
// Returns OK only once the base holds all of it durably. ENSURES (the ordering commit's crash
// safety rests on): nothing of the top may be given up (Image::make_empty) before this returned
// OK — the base must be durable before the top stops showing the data itself.
// REQUIRES: `chain` is the top image opened with its backing chain; `base` is the image at
// `base_depth` of that chain, opened read-write on its own.
Status commit_into_base(Image& chain, Image& base, const CommitOptions& opts);

struct RebaseOptions {
  std::string backing_file;    // as the header will store it; "" removes the backing file
  std::string backing_format;  // stored with it ("" for none)
  bool unsafe = false;         // only rewrite the header (qemu-img rebase -u)
  ProgressFn progress;
};

// qemu-img rebase. Safe mode: wherever `top` does not store a range itself and the old and the
// new chains read differently (compared in 512-byte sectors, as qemu-img does), the old chain's
// bytes are written into `top`; `top` is flushed; only then does the header switch to the new
// backing file. So top's guest content is the same before, during and after: at every moment
// its header names a backing file under which it reads as before.
// `old_chain` / `new_chain`: the current and the new backing chain (nullptr: none, reads as
// zeros; either may be shorter than `top`: zeros past its end). Unused when unsafe.
// REQUIRES (safe mode): `top` is opened read-write with its old backing chain attached, so a
// write of part of a cluster is completed (copy-on-write) from the old chain.
Status rebase_image(Image& top, Image* old_chain, Image* new_chain, const RebaseOptions& opts);

}  // namespace keel
