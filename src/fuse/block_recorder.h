// The recording block device below a real file system (proof/realfs.h): a one-file FUSE file
// system (libfuse3) whose file is the backing file of a loop device. Every write that reaches
// it (the loop driver's writes of the device) and every fsync (the loop driver's translation of
// a device flush) is appended, in the order served, to a keel::Recording as one file, "dev",
// whose ops the crash explorer's enumeration then turns into power-loss states.
//
// The bytes live in a regular file (on tmpfs) the recorder reads and writes through; a FUSE
// fallocate (discard, write-zeroes) is recorded as a write of zeros. Requests are served on one
// thread, so the log order is the order the kernel sent them.
// fail_next_flush(): the next fsync fails with EIO (and is not recorded as a sync) — the
// fsync-error rule's fault.
#pragma once

#include <memory>
#include <string>

#include "proof/realfs.h"

namespace keel::fuse {

// Mounts the recorder over `mountpoint` (an existing regular file), serving `backing`.
Result<std::unique_ptr<proof::BlockRecorder>> start_block_recorder(const std::string& backing,
                                                                    const std::string& mountpoint);

}  // namespace keel::fuse
