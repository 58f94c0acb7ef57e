// libFuzzer entry point of one fuzz target: KEEL_FUZZ_TARGET names the harness (harness.h).
// With KEEL_FUZZ_VERBOSE=1 in the environment each run prints the harness's status (for triage:
// `KEEL_FUZZ_VERBOSE=1 fuzz_write finding` says how the engine judged the input).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "harness.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool verbose = std::getenv("KEEL_FUZZ_VERBOSE") != nullptr;
  keel::Status s = keel::fuzz::KEEL_FUZZ_TARGET(std::span<const uint8_t>(data, size));
  if (verbose) std::fprintf(stderr, "keel-fuzz: %s\n", s.is_ok() ? "ok" : s.message().c_str());
  return 0;
}
