// Helpers for engine tests: temp dirs, running QEMU's tools as the oracle, patterns.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "keel/image.h"

namespace keel::test {

// A fresh directory under /tmp, removed when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  std::string path(const std::string& name) const { return dir_ + "/" + name; }

 private:
  std::string dir_;
};

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout + stderr
};

// Runs a shell command, capturing output.
CommandResult run(const std::string& cmd);

std::vector<uint8_t> pattern(size_t n, uint8_t seed);
std::unique_ptr<Image> open_rw(const std::string& path, const std::string& format = "qcow2");
std::unique_ptr<Image> open_ro(const std::string& path);

// qemu-img check exit code (0 clean, 2 corrupt, 3 leaks) with its output for messages.
CommandResult qemu_check(const std::string& path);

}  // namespace keel::test
