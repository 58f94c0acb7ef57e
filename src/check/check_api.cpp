// keel::check_qcow2: check, or repair and re-check, one qcow2 image (include/keel/check.h).
//
// A repair runs Checker::analyze (which already applies the reference-removing edits), then
// Checker::repair, then a silent re-check. Because a repair can reveal damage hidden behind
// other damage (a dropped snapshot frees clusters; a rebuilt structure makes COPIED flags
// decidable), -r all repeats the round while it still finds something to fix, at most
// kMaxRepairRounds times. Only a re-check that ends with 0 corruptions and 0 check errors clears
// the dirty and corrupt bits (one 8-byte write in the header's first sector, then sync).
#include <fmt/format.h>

#include "check/checker.h"
#include "format/endian.h"
#include "format/header.h"

namespace keel {

namespace {

constexpr int kMaxRepairRounds = 3;  // ours: a round after the first is rare; this bounds it

Result<CheckResult> recheck(BlockFile& file) {
  CheckOptions quiet;
  quiet.repair = RepairMode::kNone;
  check::Checker c(file, check::Mode::kCheck, quiet, false);
  KEEL_TRY_R(c.analyze());
  return c.result();
}

Status clear_dirty_and_corrupt(BlockFile& file, const format::Header& h) {
  if (h.version < 3) return Status::ok();
  const uint64_t bits = format::kIncompatDirty | format::kIncompatCorrupt;
  uint8_t cur[8];
  KEEL_TRY(file.read_at(format::kOffsetIncompatible, cur));
  uint64_t incompatible = format::get_be64(cur);
  if (!(incompatible & bits)) return Status::ok();
  format::put_be64(cur, incompatible & ~bits);
  KEEL_TRY(file.write_at(format::kOffsetIncompatible, cur));
  return file.sync();
}

}  // namespace

Result<CheckResult> check_qcow2(BlockFile& file, const CheckOptions& opts) {
  if (opts.repair == RepairMode::kNone) {
    check::Checker c(file, check::Mode::kCheck, opts, true);
    KEEL_TRY_R(c.analyze());
    return c.result();
  }
  const check::Mode mode = opts.repair == RepairMode::kLeaks ? check::Mode::kLeaks : check::Mode::kAll;
  uint64_t corruptions_fixed = 0, leaks_fixed = 0;
  std::vector<std::pair<uint64_t, uint64_t>> dropped;
  format::Header header;
  CheckResult after;
  for (int round = 0; round < kMaxRepairRounds; ++round) {
    check::Checker c(file, mode, opts, true);
    KEEL_TRY_R(c.analyze());
    const CheckResult found = c.result();
    header = c.header();
    // -r all always runs the repair: COPIED flags are judged against the final refcounts there.
    if (mode == check::Mode::kAll || found.corruptions || found.leaks) KEEL_TRY_R(c.repair());
    dropped.insert(dropped.end(), found.dropped_guest_ranges.begin(), found.dropped_guest_ranges.end());
    KEEL_ASSIGN(after, recheck(file));
    // kAll counts COPIED mismatches only when it fixes them; the other modes when it finds them.
    const uint64_t corr_before = found.corruptions + (mode == check::Mode::kAll ? c.copied_fixed() : 0);
    if (corr_before > after.corruptions) corruptions_fixed += corr_before - after.corruptions;
    if (found.leaks > after.leaks) leaks_fixed += found.leaks - after.leaks;
    bool progressed = corr_before > after.corruptions || found.leaks > after.leaks;
    if (mode != check::Mode::kAll || (after.corruptions == 0 && after.leaks == 0) || !progressed) break;
  }
  after.corruptions_fixed = corruptions_fixed;
  after.leaks_fixed = leaks_fixed;
  after.dropped_guest_ranges = std::move(dropped);
  if (after.corruptions == 0 && after.check_errors == 0) KEEL_TRY_R(clear_dirty_and_corrupt(file, header));
  return after;
}

}  // namespace keel
