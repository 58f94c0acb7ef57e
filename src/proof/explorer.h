// The crash-state explorer: runs a workload through the engine on recording files, then walks
// every crash point, enumerates the states the power-loss model allows there (proof/enumerate.h),
// materializes each into memory and checks G1–G5 against the guest model at that point.
//
// Replay: everything is a function of (workload, seed, configuration). A violation prints the
// seed, crash point and state; `keel selftest crash --workload W --seed S --crash-point C`
// (or KEEL_SEED / KEEL_CRASH_POINT with the crash test binary) checks just that point again.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "io/recording_file.h"
#include "proof/checker.h"
#include "proof/enumerate.h"

namespace keel::proof {

// Deliberately broken storage between the engine and the recording, to show the explorer finds
// what it claims to find (a proof that finds nothing in a broken system proves nothing).
enum class Sabotage {
  kNone,
  kDropSyncs,  // sync() reports success without syncing: flushed data can be lost
  kIgnoreSyncErrors,  // sync() syncs but reports success even when it failed (the fsyncgate bug)
};

// Wraps `file` in the sabotage `s` asks for (kNone: `file` itself).
std::unique_ptr<BlockFile> sabotaged(std::unique_ptr<BlockFile> file, Sabotage s);

struct ExploreConfig {
  uint64_t seed = 1;
  EnumerationConfig enumeration;
  uint64_t max_states = 0;      // per workload; 0 = every enumerated state. Beyond: a seeded sample.
  double max_seconds = 0;       // per workload; 0 = no limit (stops early, says so)
  uint32_t qemu_samples = 0;    // about this many states per workload also go through qemu-img
  uint32_t probe_every = 0;     // every Nth checked state also gets a write after the crash
  bool keel_check = true;       // Keel's check_qcow2 on every state (G2)
  std::optional<uint64_t> only_crash_point;  // replay: check this crash point only
  uint32_t max_examples = 8;    // violation descriptions kept per workload
  Sabotage sabotage = Sabotage::kNone;
  std::string real_dir;         // record the run on real files in this directory (else memory)
  std::function<void(const std::string&)> log;  // violations as they are found
};

// The cost of integrity, per workload phase.
struct PhaseCost {
  uint64_t guest_writes = 0;     // writes, write-zeroes, discards
  uint64_t guest_flushes = 0;
  uint64_t flush_syncs = 0;      // syncs issued by guest flushes
  uint64_t other_syncs = 0;      // syncs issued by anything else
  uint64_t data_writes = 0;      // file writes announced as data/COW/compressed
  uint64_t metadata_writes = 0;  // every other file write
};

struct WorkloadReport {
  std::string workload;
  uint64_t seed = 0;
  Status run_status;  // the workload itself failed (no faults injected): a bug, reported
  uint64_t guest_ops = 0;
  uint64_t file_ops = 0;
  uint64_t crash_points = 0;
  uint64_t states_enumerated = 0;
  uint64_t states_checked = 0;
  uint64_t qemu_checked = 0;
  uint64_t probes = 0;
  std::array<uint64_t, kGuarantees> violations{};  // states that broke each guarantee
  std::vector<std::string> examples;
  std::map<std::string, PhaseCost> cost;
  std::map<std::string, uint64_t> events;  // engine events announced in the explored part
  bool stopped_early = false;
  double seconds = 0;
  uint64_t total_violations() const;
};

WorkloadReport explore_workload(const std::string& name, const ExploreConfig& config);

// Leaked clusters a crash at `crash_point` may leave: host clusters the file ops since the
// second-to-last completed flush (or reopen, or close) touched, plus the guest clusters the guest
// ops since then touched (a freed cluster's decrement waits for the next flush; a commit that
// empties the top touches all of them and its L2 tables), plus 2. `marks` are those reached by
// the crash point, in order.
uint64_t leak_bound(const WorkloadSpec& spec, std::span<const GuestMark> marks, const Recording& rec,
                    uint32_t image_id, uint64_t crash_point);

// One line per workload and the per-guarantee totals, for test logs and `keel selftest`.
std::string format_report(const WorkloadReport& r);
std::string format_cost(const WorkloadReport& r);

}  // namespace keel::proof
