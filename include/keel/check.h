// Consistency check and repair of a qcow2 image (keel check), independent of the I/O engine:
// it reads the metadata itself through a BlockFile, so it can judge images the engine wrote.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "keel/block_file.h"
#include "keel/status.h"

namespace keel {

enum class RepairMode { kNone, kLeaks, kAll };

struct CheckOptions {
  RepairMode repair = RepairMode::kNone;
  // Called with progress in [0, 100] (for -p). May be empty.
  std::function<void(double)> progress;
  // Where to print qemu-img style detail lines ("Leaked cluster 7 refcount=1 reference=0",
  // "ERROR ..."); empty = discard.
  std::function<void(const std::string&)> report;
};

// Mirrors QAPI ImageCheck (qemu-img check --output=json).
struct CheckResult {
  uint64_t corruptions = 0;
  uint64_t leaks = 0;
  uint64_t check_errors = 0;
  uint64_t corruptions_fixed = 0;
  uint64_t leaks_fixed = 0;
  uint64_t image_end_offset = 0;
  uint64_t total_clusters = 0;
  uint64_t allocated_clusters = 0;
  uint64_t fragmented_clusters = 0;
  uint64_t compressed_clusters = 0;
  // Guest ranges whose data a repair had to drop (entries past EOF or misaligned).
  std::vector<std::pair<uint64_t, uint64_t>> dropped_guest_ranges;
};

// Checks (and with opts.repair, repairs) the qcow2 image in `file`. A repair is crash-safe: it
// never leaves the image worse than before if interrupted.
Result<CheckResult> check_qcow2(BlockFile& file, const CheckOptions& opts);

// An image opened for check_qcow2 by open_for_check.
struct CheckTarget {
  std::unique_ptr<BlockFile> file;
  std::string format;  // "qcow2" or "raw": the caller's, else probed from the magic
};

// Opens `path` the way `keel check` and keel_check (keel.h) do, so every caller follows one rule:
// read-only for a check, read-write for a repair; QEMU's lock permissions for that unless
// `force_share` (a check holds consistent-read and shares the image with readers and with
// writers that change nothing; a repair holds consistent-read, write and resize and shares only
// reads); the format probed unless `format` is given; and for qcow2, cluster 0 read with the
// checker's lenient decoder. A raw image is returned as such (it has no check: the caller says
// so). Errors read "Could not open '<path>': <reason>" and keep the reason's code and errno.
Result<CheckTarget> open_for_check(const std::string& path, RepairMode repair, bool force_share = false,
                                   const std::string& format = "");

}  // namespace keel
