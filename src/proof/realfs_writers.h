// The writers of the real-file-system harness (proof/realfs.h): what runs the workload on the
// mounted file system while the recorder logs the device — the engine (through the workload
// runner), qemu-io (the QEMU column), keel serve -e N (multi-connection NBD) — and the
// interrupted repair of check-repair. Each marks where every guest operation started and ended
// in device-log positions.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "io/recording_file.h"
#include "proof/realfs.h"
#include "proof/workload.h"

namespace keel::proof::realfs {

// What the engine did on the mounted file system: its marks in device positions, and the same
// marks in positions of its own file operations (for the leak bound).
struct Run {
  WorkloadSpec spec;
  Status status;
  std::vector<GuestMark> marks;       // positions: device ops logged
  std::vector<uint64_t> file_positions;  // per mark: file ops the engine had issued
  std::shared_ptr<Recording> files = std::make_shared<Recording>();
  uint64_t setup_end = 0;             // device ops logged once the image and backing were synced
  std::optional<uint64_t> repair_start;  // check-repair: device ops logged when the repair began
};

// check-repair: clusters appended to the closed image with refcount 1 and no reference.
inline constexpr uint64_t kInjectedLeaks = 3;

// The engine: image and backing created, synced, then the workload (and check-repair's repair).
Status run_on_mount(Run& r, const std::string& mnt, const RealFsConfig& config, Recording& device);
// qemu-io: writes, write-zeroes, discards and flushes, one command per guest op.
Status run_on_mount_qemu(Run& r, const std::string& mnt, const std::string& scratch, Recording& device);
// keel serve -e N: writes round-robin over N connections, flushes on the first.
Status run_on_mount_nbd(Run& r, const std::string& mnt, const std::string& scratch, const RealFsConfig& config,
                        Recording& device);

}  // namespace keel::proof::realfs
