// Helpers of the C API tests: running the QEMU tools that serve as the oracle.
#pragma once

#include <string>

namespace keel_capi_test {

// Runs `cmd` with sh, stderr merged into stdout; returns the exit code (-1 if it did not exit)
// and the output in `out`.
int sh(const std::string& cmd, std::string* out = nullptr);

}  // namespace keel_capi_test
