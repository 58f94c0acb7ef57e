// QEMU as the independent oracle: `qemu-img check` and `qemu-img convert -O raw` run on crash
// states written out to a temporary directory. Used on a sample of states (each run costs a
// process), so a bug shared by Keel's reader and Keel's checker cannot hide.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "keel/status.h"

namespace keel::proof {

// A private directory under $TMPDIR (or /tmp), removed with its files on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  bool ok() const { return !path_.empty(); }
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  Status write(const std::string& name, const std::vector<uint8_t>& bytes);

 private:
  std::string path_;
  std::vector<std::string> files_;
};

struct QemuCheck {
  int exit_code = -1;  // qemu-img: 0 clean, 1 check failed, 2 corruptions, 3 leaks only
  uint64_t corruptions = 0;
  uint64_t leaks = 0;
  uint64_t check_errors = 0;
  std::string output;  // stdout + stderr
};

// Whether `qemu-img` can be run.
bool qemu_img_available();
// Runs `argv` (no shell), returns its exit code and combined output.
int run_command(const std::vector<std::string>& argv, std::string* output);
// `qemu-img check -f qcow2 --output=json <path>`.
Result<QemuCheck> qemu_img_check(const std::string& path);
// `qemu-img convert -f qcow2 -O raw <path> <raw_path>`, then reads the raw file.
Result<std::vector<uint8_t>> qemu_img_convert(const std::string& path, const std::string& raw_path);

}  // namespace keel::proof
