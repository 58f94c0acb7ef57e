// A saved device log of the real-file-system harness (proof/realfs.h): `--save-log FILE` writes
// what one recorded run left, `--replay-log FILE` judges its crash states again without running
// the workload. The device log depends on kernel timing (journal commit threads, writeback), so
// running a seed again does not give the same log; the saved one rebuilds every state exactly.
//
// The file holds: the run's identity (file system, workload, seed, cache mode, engine), the fresh
// file system's device image (its data extents), the device log (every write with its bytes,
// every flush), the engine's own file-level log (for the leak bound), and the guest-op marks,
// followed by a SHA-256 of all of it (a damaged log is refused).
// The workload itself is regenerated from (workload, seed): make_real_fs_workload is
// deterministic.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "io/recording_file.h"
#include "keel/status.h"
#include "proof/realfs_writers.h"

namespace keel::proof::realfs {

struct LogIdentity {
  std::string fs, workload, cache, engine;  // engine: keel, qemu-io or keel-nbd
  uint64_t seed = 0;
};

// Writes `run` (its marks, file positions and engine-level log), the device log `dev` and the
// device image `base_image` (a sparse file: only its data extents are stored) to `path`.
Status save_device_log(const std::string& path, const LogIdentity& id, const Run& run, const Recording& dev,
                       const std::string& base_image);

struct LoadedLog {
  LogIdentity id;
  Run run;  // spec left empty: the caller regenerates it from id.workload and id.seed
  std::shared_ptr<Recording> dev;
};
// Reads a file save_device_log wrote; writes its device image to `base_image`.
Result<LoadedLog> load_device_log(const std::string& path, const std::string& base_image);
// Only the identity (for the command line: which file system and workload to replay).
Result<LogIdentity> read_log_identity(const std::string& path);

}  // namespace keel::proof::realfs
