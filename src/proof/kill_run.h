// The SIGKILL test's two halves, run as `keel selftest kill-driver` and `keel selftest kill-verify`.
//
// The driver opens a real qcow2 file and runs seeded guest operations (writes, FUA writes,
// write-zeroes, discards, flushes) forever or for a bounded count. Around each operation it
// appends a line to a journal with one write(2): "S <i> <kind> <offset> <length> <fua> <unmap>"
// before, "E <i> ok|fail" after. A SIGKILL keeps every completed system call (the page cache
// survives), so after the kill the journal says exactly which operations were issued and which
// flushes had completed. The verifier rebuilds the guest model from the journal (proof/workload.h
// marks), checks the image with Keel's check (when it is not dirty), opens it read-write (which
// repairs a lazy-refcounts image), reads every sector, and checks again after closing. With
// `qemu`, QEMU reads the killed image too (qemu-img convert to raw, before Keel opens it), judged
// against the same model: for a LUKS image that is QEMU decrypting what Keel encrypted.
// Both halves open the image with the proof's passphrase (kProofSecret; a plain image ignores it).
#pragma once

#include <cstdint>
#include <string>

namespace keel::proof {

struct KillDriverOptions {
  std::string image;
  std::string journal;
  uint64_t seed = 1;
  uint64_t max_ops = UINT64_MAX;
};

// Returns the process exit code (0 when max_ops were done; normally the process is killed).
int run_kill_driver(const KillDriverOptions& opts);

// Verifies `image` against `journal`; prints findings to stdout. Returns 0 when every guarantee
// held, 1 on a violation, 2 when the inputs could not be read.
int run_kill_verify(const std::string& image, const std::string& journal, bool verbose, bool qemu = false);

}  // namespace keel::proof
