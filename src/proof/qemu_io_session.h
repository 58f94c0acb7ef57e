// A running `qemu-io` driven one command at a time (the QEMU column of the real-file-system
// harness, proof/realfs.h): the command is written to its stdin and complete when qemu-io prints
// its next "qemu-io> " prompt, so the caller can mark where each guest operation started and
// ended, as the engine's workload runner does.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "keel/status.h"

namespace keel::proof {

class QemuIoSession {
 public:
  // Starts `qemu-io -f qcow2 -t CACHE PATH` and waits for its first prompt.
  static Result<std::unique_ptr<QemuIoSession>> start(const std::string& path, const std::string& cache);
  ~QemuIoSession();
  // Runs one command; an error when qemu-io's output for it names a failure.
  Status run(const std::string& command);
  // `quit`, then waits for the process; an error if it did not exit 0.
  Status quit();

 private:
  QemuIoSession() = default;
  Result<std::string> until_prompt();
  pid_t pid_ = -1;
  int in_ = -1;   // qemu-io's stdin
  int out_ = -1;  // qemu-io's stdout and stderr
};

}  // namespace keel::proof
