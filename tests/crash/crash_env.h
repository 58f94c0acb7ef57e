// Environment knobs of the crash tests: KEEL_SEED (replay), KEEL_WORKLOAD (one workload),
// KEEL_CRASH_POINT (one crash point), KEEL_CRASH_STATES (states per workload), KEEL_CRASH_QEMU
// (qemu-img samples per workload), KEEL_FAULT_INDICES (I/O op indices per workload, 0 = all).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace keel::proof::testenv {

std::optional<uint64_t> env_u64(const char* name);
std::string env_str(const char* name);
// KEEL_SEED, or a random seed fixed for the whole test binary.
uint64_t seed();
// Whether KEEL_WORKLOAD is unset or names this workload.
bool selected(const std::string& workload);
// A gtest-safe name for a workload ("l2-tables" -> "l2_tables").
std::string test_name(const std::string& workload);

}  // namespace keel::proof::testenv
