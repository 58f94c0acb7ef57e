// Test helpers for keel check: a tool that damages a qcow2 image in one targeted way (the damage
// kinds of issue 4), a small independent reader of an image's guest content, and process helpers
// for running qemu-img / qemu-io / keel as oracles.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "keel/status.h"

namespace keel::testing {

enum class Damage {
  kRefcountZero,       // the refcount of the target's data cluster becomes 0
  kRefcountHigh,       // a refcount one too high (the target's data cluster, or a free cluster)
  kDoubleReference,    // the target's L2 entry points at another guest cluster's data
  kEntryPastEof,       // the target's L2 entry points past the end of the file
  kMisalignedEntry,    // the target's L2 entry offset is moved off the cluster boundary
  kClearedCopied,      // the target's L2 entry loses its COPIED flag
  kL1AtRefcountTable,  // the target's L1 entry points at the refcount table
  kRefblockDropped,    // refcount table entry 0 becomes 0
  kTruncated,          // the file ends where the target's data cluster starts
};

const char* damage_name(Damage d);
const std::vector<Damage>& all_damages();

struct GuestRange {
  uint64_t offset = 0;
  uint64_t length = 0;
};

// Damages the qcow2 image at `path`, aiming at the guest cluster holding `guest_offset` (which
// must be allocated in the active L1/L2 tables). Returns the guest ranges whose content the damage
// destroyed (empty when only bookkeeping was hit: refcounts, flags). kUnsupported when the damage
// cannot be made on this image (a misaligned offset with 512-byte clusters).
Result<std::vector<GuestRange>> damage_image(const std::string& path, Damage kind, uint64_t guest_offset);

// The guest offset of the allocated standard cluster with the highest host offset (the last data
// cluster of the file), in the active tables.
Result<uint64_t> last_data_cluster(std::span<const uint8_t> image);

// Same on bytes in memory.
Result<std::vector<GuestRange>> damage_bytes(std::vector<uint8_t>& image, Damage kind, uint64_t guest_offset);

// The guest content of a qcow2 image without a backing file (standard or extended L2, no
// compressed clusters), read straight from its bytes: unallocated and zero clusters read as zeros,
// and so do clusters whose data lies past the end of the file and misaligned entries (which QEMU
// refuses to read).
Result<std::vector<uint8_t>> read_guest(std::span<const uint8_t> image);

// Whole file <-> bytes.
Result<std::vector<uint8_t>> read_file(const std::string& path);
Status write_file(const std::string& path, std::span<const uint8_t> bytes);

// Runs `command` with /bin/sh; returns its exit status and appends its stdout+stderr to *output.
int run(const std::string& command, std::string* output = nullptr);

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace keel::testing
