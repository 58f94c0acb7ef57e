// Environment knobs of the crash tests (seed, budgets, replay), shared by the test files.
#include "crash_env.h"

#include <cstdio>
#include <cstdlib>
#include <random>

namespace keel::proof::testenv {

std::optional<uint64_t> env_u64(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  return std::strtoull(v, nullptr, 0);
}

std::string env_str(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

uint64_t seed() {
  static const uint64_t s = env_u64("KEEL_SEED").value_or(std::random_device{}() % 1000000);
  return s;
}

bool selected(const std::string& workload) {
  std::string only = env_str("KEEL_WORKLOAD");
  return only.empty() || only == workload;
}

std::string test_name(const std::string& workload) {
  std::string n = workload;
  for (char& c : n)
    if (c == '-') c = '_';
  return n;
}

}  // namespace keel::proof::testenv
