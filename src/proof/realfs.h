// The crash proof one layer lower: power loss below a real file system (ext4, xfs, btrfs).
//
// A file system is made on a loop device whose backing file sits on a recording block device
// (BlockRecorder: the FUSE recorder of fuse/block_recorder.h), which logs every write and every
// flush of the device in order. The engine runs a workload (proof/workload.h) on an image on
// that mounted file system. The crash states are the device's writes up to its last flush plus
// any subset of the writes after it, torn at 512-byte sectors (the enumeration of
// proof/enumerate.h, exhaustive while small and sampled beyond); each state is written to a new
// file, attached to a new loop device and mounted (the kernel replays the journal), and the
// image and backing file read from it are judged by the explorer's checker (G1-G5, qemu-img
// check on a sample), then it is unmounted.
//
// What the recorder can and cannot reorder (docs/integrity.md): it sees the device's requests in
// the order the loop driver sends them, one at a time; writes the file system had in flight
// together arrive in some order, and the model lets any subset of the writes after the last flush
// persist, which covers every reordering between flushes. A FUA write reaches it as a write and a
// flush (the loop device has no FUA). It cannot show what a disk's own cache would do beyond
// that model (e.g. a flush that lies), nor failures of the file system's metadata checksums.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "keel/image.h"
#include "proof/explorer.h"

namespace keel {
class Recording;
}

namespace keel::proof {

class BlockRecorder {
 public:
  virtual ~BlockRecorder() = default;
  // The file to attach as the loop device (the recorder's mount).
  virtual const std::string& device_file() const = 0;
  // The log: one file ("dev"), its writes and syncs in the order they were served.
  virtual std::shared_ptr<Recording> recording() const = 0;
  // The next device flush fails with EIO (the fsync-error rule's fault).
  virtual void fail_next_flush() = 0;
  virtual uint64_t failed_flushes() const = 0;
  virtual void stop() = 0;
};
// Starts a recorder serving the bytes of `backing` as a file mounted over `mountpoint`.
using RecorderFactory =
    std::function<Result<std::unique_ptr<BlockRecorder>>(const std::string& backing, const std::string& mountpoint)>;

struct RealFsConfig {
  std::string fs = "ext4";  // ext4, xfs or btrfs
  uint64_t seed = 1;
  CacheMode cache = CacheMode::kWriteback;
  EnumerationConfig enumeration;
  uint64_t max_states = 0;    // per workload; beyond: a seeded sample (0 = every enumerated state)
  double max_seconds = 0;     // per workload; 0 = no limit
  uint32_t qemu_samples = 0;  // about this many states also go through qemu-img check
  uint32_t max_examples = 8;
  Sabotage sabotage = Sabotage::kNone;
  std::string work_dir = "/dev/shm";  // the device images live here (tmpfs: fast copies)
  RecorderFactory recorder;
  bool qemu_io = false;  // the QEMU column: qemu-io writes the workload instead of the engine
  // Multi-connection NBD: `keel serve -e nbd_connections` (this binary, /proc/self/exe) serves the
  // image; writes go round-robin over the connections, flushes to the first one. Runs with
  // cache=none serve with --aio=io_uring (the event loop and its direct I/O path), the others
  // with --aio=threads, so both transmission paths meet the power-loss oracles.
  bool nbd = false;
  uint32_t nbd_connections = 4;
  // The cost of a state (docs/integrity.md): one loop device reused for every state (its page
  // cache dropped and shown empty before each mount), and states whose device bytes and model
  // equal an earlier state's skipped (same verdict). Both off = a fresh loop device per state and
  // every sampled state mounted.
  bool reuse_loop = true;
  bool dedup = true;
  // --save-log: write the recorded device log here (proof/realfs_log.h); --replay-log: judge the
  // states of this saved log instead of recording (fs, workload, seed, cache and engine must be
  // the log's); crash_point: only the states of this device crash point.
  std::string save_log;
  std::string replay_log;
  std::optional<uint64_t> crash_point;
  std::function<void(const std::string&)> log;
};

struct RealFsReport {
  WorkloadReport run;            // states, violations per guarantee, examples
  std::string engine;            // "keel" or "qemu-io"
  std::string fs;
  std::string cache;
  uint64_t device_ops = 0;       // writes and flushes the recorder logged
  uint64_t device_flushes = 0;
  uint64_t unmountable = 0;      // states the file system itself could not mount (not Keel's)
  std::string first_unmountable;
  uint64_t duplicates = 0;       // sampled states skipped: same device bytes and model as an earlier one
  uint64_t loop_reattached = 0;  // times the reused loop device still had cached pages (then replaced)
  struct {                       // seconds, summed over the states checked
    double build = 0;            // the state's device file (sparse copy + its writes), loop device
    double mount = 0;            // mount: journal replay / log recovery
    double read = 0;             // reading the image (and backing file) from the mount
    double unmount = 0;
    double check = 0;            // G1-G5 (and qemu-img on the sample)
  } time;
};

// The workload names the harness runs by default (those whose files fit the harness: no
// damaged images).
const std::vector<std::string>& real_fs_workloads();
// make_workload(), plus the harness's own variants (alloc-falloc: alloc on a falloc-preallocated image).
Result<WorkloadSpec> make_real_fs_workload(const std::string& name, uint64_t seed);

// Whether the qemu-io driver can express every op of `spec` (writes, write-zeroes, discards,
// flushes, resizes with qemu-io's truncate, snapshot create/delete/apply with qemu-img snapshot).
bool qemu_io_can_run(const WorkloadSpec& spec);
// Whether the NBD driver can (writes, write-zeroes, discards, flushes).
bool nbd_can_run(const WorkloadSpec& spec);

RealFsReport explore_on_real_fs(const std::string& workload, const RealFsConfig& config);
std::string format_real_fs_report(const RealFsReport& r);

}  // namespace keel::proof

namespace keel::proof {

// The fsync-error rule on a real file system: the recorder fails one device flush (EIO) while
// the engine writes and flushes an image on the mounted file system. The engine's flush under
// which the device flush failed must report the failure, and from the first failed flush on,
// no flush may report success and the image refuses writes (it latched read-only, as for
// BlockFile faults): Linux marks the pages clean after a failed writeback, so a retried fsync
// that succeeds would claim data durable that is not (fsyncgate).
struct FsyncErrorReport {
  std::string fs, cache;
  Status run_status;            // the harness itself failed
  bool injected = false;        // the recorder failed a device flush
  int injected_during = -1;     // the engine flush during which it failed (-1: a background one)
  int first_failed = -1;        // the first engine flush that reported a failure
  std::vector<std::string> flushes;     // per engine flush: "ok" or its error
  std::vector<std::string> violations;
  std::string describe() const;
};
FsyncErrorReport check_fsync_error_rule(const RealFsConfig& config);

}  // namespace keel::proof
