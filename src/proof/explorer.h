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
#include <string>
#include <vector>

#include "proof/checker.h"
#include "proof/enumerate.h"

namespace keel::proof {

struct ExploreConfig {
  uint64_t seed = 1;
  EnumerationConfig enumeration;
  uint64_t max_states = 0;      // per workload; 0 = every enumerated state. Beyond: a seeded sample.
  double max_seconds = 0;       // per workload; 0 = no limit (stops early, says so)
  uint32_t qemu_samples = 0;    // about this many states per workload also go through qemu-img
  uint32_t probe_every = 0;     // every Nth checked state also gets a write after the crash
  EngineCheck engine_check;     // the engine's check, when it has one
  std::optional<uint64_t> only_crash_point;  // replay: check this crash point only
  uint32_t max_examples = 8;    // violation descriptions kept per workload
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
  bool stopped_early = false;
  double seconds = 0;
  uint64_t total_violations() const;
};

WorkloadReport explore_workload(const std::string& name, const ExploreConfig& config);

// One line per workload and the per-guarantee totals, for test logs and `keel selftest`.
std::string format_report(const WorkloadReport& r);
std::string format_cost(const WorkloadReport& r);

}  // namespace keel::proof
