// Proves G6 for every workload: each I/O operation index is failed once and forever (EIO, ENOSPC,
// EDQUOT, short write in rotation); the failing guest operation must return an error, live reads
// must never return wrong data, and the kill and power-cut states after it must pass G1–G5.
#include <gtest/gtest.h>

#include <cstdio>

#include "crash_env.h"
#include "proof/fault_sweep.h"

namespace keel::proof {
namespace {

class Faults : public ::testing::TestWithParam<std::string> {};

TEST_P(Faults, ErrorPathsBackOut) {
  const std::string w = GetParam();
  if (!testenv::selected(w)) GTEST_SKIP() << "KEEL_WORKLOAD selects another workload";
  FaultSweepConfig c;
  c.seed = testenv::seed();
  // The refcount-growth workloads have ~700 I/O ops after their setup; the full sweep of every
  // index is `keel selftest faults` (docs/integrity.md). Here: every index of the others.
  c.max_indices = testenv::env_u64("KEEL_FAULT_INDICES").value_or(w == "refblock-1bit" || w == "reftable-grow" ? 120 : 0);
  c.qemu_samples = static_cast<uint32_t>(testenv::env_u64("KEEL_CRASH_QEMU").value_or(4));
  c.only_index = testenv::env_u64("KEEL_FAULT_INDEX");
  int shown = 0;
  c.log = [&](const std::string& s) {
    if (shown++ < 5) std::printf("VIOLATION %s\n", s.c_str());
  };
  std::printf("fault sweep of %s, seed %llu (replay: KEEL_SEED=%llu KEEL_WORKLOAD=%s [KEEL_FAULT_INDEX=i])\n",
              w.c_str(), static_cast<unsigned long long>(c.seed), static_cast<unsigned long long>(c.seed), w.c_str());
  FaultSweepReport r = sweep_faults(w, c);
  std::printf("%s\n", format_fault_report(r).c_str());
  std::printf("PROOF faults %s seed %llu runs %llu violations", w.c_str(), static_cast<unsigned long long>(c.seed),
              static_cast<unsigned long long>(r.runs));
  for (size_t g = 0; g < kGuarantees; ++g)
    std::printf(" %s=%llu", guarantee_name(static_cast<Guarantee>(g)), static_cast<unsigned long long>(r.violations[g]));
  std::printf("\n");
  ASSERT_TRUE(r.run_status.is_ok()) << r.run_status.message();
  EXPECT_GT(r.runs, 0u);
  EXPECT_GT(r.faults_injected, 0u);
  std::string examples;
  for (const auto& e : r.examples) examples += e + "\n";
  EXPECT_EQ(r.total_violations(), 0u) << "seed " << c.seed << "\n" << examples;
}

// Fault-sweep findings, replayed at their failing I/O index: each failed before its fix.
TEST(FaultRegression, KnownSeeds) {
  struct Case {
    const char* workload;
    uint64_t seed, index;
    const char* what;
  };
  const Case cases[] = {
      // A flush failed (the image latched), then a commit copied the top's unflushed write into
      // the base while the top's own stale cluster kept shadowing it: commit_into_base now
      // flushes the top first.
      {"commit", 584981, 53, "commit of a latched top"},
  };
  for (const Case& k : cases) {
    FaultSweepConfig c;
    c.seed = k.seed;
    c.only_index = k.index;
    c.qemu_samples = 0;
    FaultSweepReport r = sweep_faults(k.workload, c);
    ASSERT_TRUE(r.run_status.is_ok()) << r.run_status.message();
    EXPECT_GT(r.runs, 0u) << k.what;
    std::string examples;
    for (const auto& e : r.examples) examples += e + "\n";
    EXPECT_EQ(r.total_violations(), 0u) << k.what << ": " << examples;
  }
}

INSTANTIATE_TEST_SUITE_P(Workloads, Faults, ::testing::ValuesIn(workload_names()),
                         [](const ::testing::TestParamInfo<std::string>& i) { return testenv::test_name(i.param); });

}  // namespace
}  // namespace keel::proof
