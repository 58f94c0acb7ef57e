// The checker of the integrity contract's guarantees on one image state.
//
// G1 the image opens read-write (repairing a lazy-refcounts image) and closes cleanly;
// G2 it is consistent: Keel's check (check_qcow2) on the state as the crash left it (unless the
//    dirty bit asks for repair on open) and after Keel's open and close, and on a sample the same
//    two checks by `qemu-img check`; leaks are tolerated up to a bound the caller computes from
//    the last epochs;
// G3 every sector that must be durable reads back as written (a lost or stale write, or a read
//    error, is a G3 violation);
// G4 no sector reads another guest offset's data, metadata or bytes no write produced;
// G5 the backing file is untouched.
// G6 (error paths) uses the same checks; the fault sweep reports them under G6.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "keel/image.h"
#include "proof/guest_model.h"
#include "proof/workload.h"

namespace keel::proof {

enum class Guarantee { kG1 = 0, kG2, kG3, kG4, kG5, kG6, kCount };
inline constexpr size_t kGuarantees = static_cast<size_t>(Guarantee::kCount);
const char* guarantee_name(Guarantee g);   // "G3"
const char* guarantee_title(Guarantee g);  // "durable"

struct StateCheckOptions {
  bool qemu = false;         // run qemu-img check (+ convert) on this state
  bool qemu_convert = true;  // with qemu: also compare qemu's view of the guest disk
  bool probe_write = false;  // after the checks, write, flush and re-read everything
  uint64_t probe_seed = 0;
  uint64_t leak_bound = UINT64_MAX;  // leaked clusters tolerated
  bool keel_check = true;            // run Keel's check_qcow2 on every state
  uint32_t max_details = 3;          // violation details kept per guarantee
  const std::vector<uint8_t>* original_backing = nullptr;  // backing_content(spec) if null
};

struct StateVerdict {
  std::array<bool, kGuarantees> violated{};
  std::vector<std::pair<Guarantee, std::string>> details;
  bool qemu_ran = false;
  bool any() const;
  void add(Guarantee g, std::string detail, uint32_t max_details);
};

// Checks one state: the image bytes (and backing bytes as the crash left them) against `model`.
StateVerdict check_state(const WorkloadSpec& spec, std::vector<uint8_t> image,
                         const std::vector<uint8_t>& backing, const GuestModel& model,
                         const StateCheckOptions& opts);

// Reads every sector through `img` and compares with `model`. Sectors not allowed become G3
// (zeros, an older content of the same sector, a read error) or G4 (anything else) violations —
// or all `as` when set (G6's reads on a live image, where read errors are allowed).
// `observed`, when given, receives per sector the version read (kUnknownVersion where the read
// failed or was not allowed).
inline constexpr uint32_t kUnknownVersion = UINT32_MAX;
void check_guest_reads(Image& img, const GuestModel& model, StateVerdict& v, uint32_t max_details,
                       const char* who, std::optional<Guarantee> as = std::nullopt,
                       std::vector<uint32_t>* observed = nullptr);
// The same comparison on a raw guest disk image (qemu-img convert's output).
void check_raw_guest(const std::vector<uint8_t>& raw, const GuestModel& model, StateVerdict& v,
                     uint32_t max_details, const char* who);

// The incompatible-features dirty bit of a qcow2 header in `image` (false if not v3).
bool qcow2_dirty(const std::vector<uint8_t>& image);

}  // namespace keel::proof
