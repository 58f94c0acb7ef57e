// The G6 fault sweep: for every I/O operation index of a workload, fail that operation once, and
// fail it and every later one ("forever"), with EIO, ENOSPC, EDQUOT or a short write (the kind
// rotates with the index), and check the error paths:
//  - the guest operation that met the error returns an error;
//  - reads on the live image right after it return the right data or an error, never wrong data;
//  - the file as it is then (a kill) and as its last completed sync left it (a power cut) both
//    satisfy G1–G5 with the same checker as the crash states.
// Workloads with a setup phase are set up once (and closed cleanly); the sweep covers the rest.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "proof/checker.h"

namespace keel::proof {

struct FaultSweepConfig {
  uint64_t seed = 1;
  bool once = true;
  bool forever = true;
  uint64_t max_indices = 0;       // 0 = every index; else about this many, evenly spread
  std::optional<uint64_t> only_index;  // replay one index
  uint32_t qemu_samples = 0;      // qemu-img on about this many final states
  uint32_t max_examples = 8;
  std::function<void(const std::string&)> log;
};

struct FaultSweepReport {
  std::string workload;
  uint64_t seed = 0;
  Status run_status;  // the clean run failed
  uint64_t io_ops = 0;           // I/O operations of the clean run (after setup)
  uint64_t runs = 0;             // runs with a fault rule
  uint64_t faults_injected = 0;  // operations that were failed
  uint64_t states_checked = 0;   // final states checked (kill + power cut per run)
  uint64_t qemu_checked = 0;
  std::array<uint64_t, kGuarantees> violations{};  // runs that broke each guarantee
  std::vector<std::string> examples;
  double seconds = 0;
  uint64_t total_violations() const;
};

FaultSweepReport sweep_faults(const std::string& workload, const FaultSweepConfig& config);
std::string format_fault_report(const FaultSweepReport& r);

}  // namespace keel::proof
