// Checker: loading the header, reporting, cluster ownership, and the order of the passes (see
// checker.h for what each pass judges and how a repair is phased).
#include "check/checker.h"

#include "check/check_header.h"

#include <algorithm>

#include <fmt/format.h>

#include "format/endian.h"
#include "format/tables.h"

namespace keel::check {

using namespace format;

namespace {
// QEMU refuses to check files of more clusters than this (EFBIG); so do we, which also bounds
// the memory of the per-cluster arrays (5 bytes per cluster).
constexpr uint64_t kMaxCheckClusters = 1ull << 31;
}  // namespace

const char* owner_name(Owner o) {
  switch (o) {
    case Owner::kNone: return "nothing";
    case Owner::kHeader: return "qcow2 header";
    case Owner::kActiveL1: return "active L1 table";
    case Owner::kReftable: return "refcount table";
    case Owner::kSnapshotTable: return "snapshot table";
    case Owner::kBitmapDirectory: return "bitmap directory";
    case Owner::kSnapshotL1: return "inactive L1 table";
    case Owner::kRefblock: return "refcount block";
    case Owner::kL2: return "L2 table";
    case Owner::kBitmapTable: return "bitmap table";
    case Owner::kBitmapData: return "bitmap data";
  }
  return "?";
}

Checker::Checker(BlockFile& file, Mode mode, const CheckOptions& opts, bool verbose)
    : file_(file), mode_(mode), opts_(opts), verbose_(verbose) {}

namespace {
constexpr size_t kMaxPendingLines = 1u << 20;  // ours: beyond this, lines are printed at once
}  // namespace

void Checker::report(const std::string& line) {
  if (!verbose_ || !opts_.report) return;
  if (buffering_ && pending_lines_.size() < kMaxPendingLines) {
    pending_lines_.push_back(line);
    return;
  }
  flush_report();
  buffering_ = false;
  opts_.report(line);
}

void Checker::flush_report() {
  if (verbose_ && opts_.report)
    for (const auto& l : pending_lines_) opts_.report(l);
  pending_lines_.clear();
}

void Checker::corruption(const std::string& line) {
  ++res_.corruptions;
  report(line);
}

void Checker::progress(double percent) const {
  if (verbose_ && opts_.progress) opts_.progress(percent);
}

Status Checker::read(uint64_t offset, std::span<uint8_t> buf) {
  Status s = file_.read_at(offset, buf);
  if (!s.is_ok()) ++res_.check_errors;
  return s;
}

Status Checker::write(uint64_t offset, std::span<const uint8_t> buf) {
  Status s = file_.write_at(offset, buf);
  if (!s.is_ok()) ++res_.check_errors;
  return s;
}

Status Checker::load_header() {
  KEEL_ASSIGN(uint64_t file_size, file_.size());
  auto ch = read_check_header(file_);
  if (!ch) {
    ++res_.check_errors;
    return ch.error();
  }
  h_ = ch->header;
  if (ch->stray_snapshots_offset && fixing()) {
    report("Repairing: clearing the snapshot table offset of an image without snapshots");
    defer_write(kOffsetSnapshots + 4, std::vector<uint8_t>(8, 0));
  }

  g_.cluster_bits = h_.cluster_bits;
  g_.cluster_size = h_.cluster_size();
  g_.ext_l2 = h_.extended_l2();
  g_.l2_entries = h_.l2_entries();
  g_.l2_entry_bytes = g_.ext_l2 ? 16 : 8;
  g_.refcount_bits = h_.refcount_bits();
  g_.refblock_entries = g_.cluster_size * 8 / g_.refcount_bits;
  g_.refcount_max = refcount_max(g_.refcount_bits);
  g_.version = h_.version;
  g_.data_file = h_.has_data_file();
  g_.virtual_size = h_.size;

  g_.file_size = file_size;
  g_.file_clusters = (file_size + g_.cluster_size - 1) / g_.cluster_size;
  g_.slots = file_size / g_.cluster_size + 2;
  if (g_.slots > kMaxCheckClusters)
    return Status(Code::kUnsupported,
                  fmt::format("image file too large to check ({} clusters)", g_.file_clusters), EFBIG);
  return Status::ok();
}

Owner Checker::owner_of_range(uint64_t offset, uint64_t bytes) const {
  if (bytes == 0) return Owner::kNone;
  uint64_t first = g_.cluster_of(offset), last = g_.cluster_of(offset + bytes - 1);
  for (uint64_t c = first; c <= last && c < g_.slots; ++c)
    if (map_.owner(c) != Owner::kNone) return map_.owner(c);
  return Owner::kNone;
}

Owner Checker::claim(uint64_t offset, uint64_t bytes, Owner owner, bool share) {
  if (bytes == 0) return Owner::kNone;
  uint64_t first = g_.cluster_of(offset), last = g_.cluster_of(offset + bytes - 1);
  for (uint64_t c = first; c <= last && c < g_.slots; ++c) {
    Owner o = map_.owner(c);
    if (o != Owner::kNone && !(share && o == owner)) return o;
  }
  for (uint64_t c = first; c <= last && c < g_.slots; ++c) map_.set_owner(c, owner);
  return Owner::kNone;
}

void Checker::count_owned_metadata() {
  for (uint64_t c = 0; c < g_.slots; ++c) {
    switch (map_.owner(c)) {
      case Owner::kHeader:
      case Owner::kActiveL1:
      case Owner::kReftable:
      case Owner::kSnapshotTable:
      case Owner::kSnapshotL1:
      case Owner::kRefblock:
        map_.add(c, 1);
        break;
      default:
        break;  // L2 tables were counted per L1 entry; bitmaps by check_bitmaps()
    }
  }
}

void Checker::note_dropped(uint64_t guest_offset, uint64_t length) {
  if (guest_offset >= g_.virtual_size) return;
  length = std::min(length, g_.virtual_size - guest_offset);
  report(fmt::format("Repairing: guest range 0x{:x}+0x{:x} lost its data; it now reads {}", guest_offset, length,
                     h_.backing_file.empty() ? "as zeros" : "from the backing file"));
  auto& v = res_.dropped_guest_ranges;
  if (!v.empty() && v.back().first + v.back().second == guest_offset) {
    v.back().second += length;
  } else if (v.size() < (1u << 20)) {
    v.emplace_back(guest_offset, length);
  }
}

Status Checker::analyze() {
  buffering_ = true;
  Status s = analyze_once();
  if (s.is_ok() && restart_) {
    pending_lines_.clear();
    reset_analysis();
    s = analyze_once();
  }
  if (s.is_ok()) s = flush_pending_writes();
  flush_report();
  buffering_ = false;
  return s;
}

void Checker::reset_analysis() {
  res_ = CheckResult{};
  active_l1_.clear();
  relocate_l1_ = false;
  reftable_.clear();
  refblock_ok_.clear();
  reftable_damaged_ = refblocks_damaged_ = need_rebuild_ = qemu_would_rebuild_ = false;
  snapshots_.clear();
  rewrite_snapshots_ = false;
  snapshot_table_bytes_ = 0;
  l2s_.clear();
  active_l2_index_.clear();
  drop_bitmaps_ = false;
  copied_errors_ = 0;
  highest_cluster_ = 0;
  any_cluster_ = false;
  suspicious_l2_.clear();
  data_hits_l2_.clear();
  restart_ = false;
  pending_writes_.clear();
}

Status Checker::flush_pending_writes() {
  if (fixing())
    for (const auto& [offset, bytes] : pending_writes_) KEEL_TRY(write(offset, bytes));
  pending_writes_.clear();
  return Status::ok();
}

Status Checker::analyze_once() {
  progress(0);
  KEEL_TRY(load_header());
  map_.resize(g_.slots);
  ondisk_.resize(g_.slots);
  claim(0, g_.cluster_size, Owner::kHeader);
  // The LUKS header and key material of an encrypted image count as header clusters.
  if (h_.crypto_length) claim(h_.crypto_offset, h_.crypto_length, Owner::kHeader);
  KEEL_TRY(load_active_l1());
  KEEL_TRY(load_reftable());
  KEEL_TRY(load_snapshots());
  KEEL_TRY(claim_refblocks());
  KEEL_TRY(read_refcounts());
  progress(5);
  KEEL_TRY(walk_l1_tables());
  collect_l2_records();
  count_owned_metadata();
  KEEL_TRY(scan_l2_tables());
  if (restart_) return Status::ok();
  KEEL_TRY(check_bitmaps());
  decide_rebuild();
  compare_refcounts();
  res_.total_clusters = (g_.virtual_size + g_.cluster_size - 1) / g_.cluster_size;
  res_.image_end_offset = (highest_cluster_ + 1) * g_.cluster_size;
  progress(100);
  return Status::ok();
}

Status Checker::repair() {
  if (mode_ == Mode::kLeaks) {
    if (qemu_would_rebuild_) {
      report("ERROR need to rebuild refcount structures");
      ++res_.check_errors;
      return Status(Code::kIo, "the refcount structure must be rebuilt; use -r all", EIO);
    }
    KEEL_TRY(fix_refcounts_in_place());
    KEEL_TRY(file_.sync());
    // Like QEMU, -r leaks also fixes COPIED flags when nothing else is wrong.
    if (res_.corruptions == copied_errors_ && copied_errors_ > 0) {
      KEEL_TRY(fix_copied(false));
      KEEL_TRY(fix_copied(true));
      KEEL_TRY(file_.sync());
    }
    return Status::ok();
  }
  // Phase 1 (the edits of analyze() are already written): drop bitmaps, clear COPIED flags.
  if (drop_bitmaps_) KEEL_TRY(drop_bitmaps());
  KEEL_TRY(fix_copied(false));
  KEEL_TRY(file_.sync());
  // Phase 2: refcounts.
  if (need_rebuild_) {
    KEEL_TRY(rebuild_refcounts());
  } else {
    KEEL_TRY(fix_refcounts_in_place());
    KEEL_TRY(file_.sync());
  }
  // Phase 3: COPIED flags that the exact refcounts now allow.
  KEEL_TRY(fix_copied(true));
  KEEL_TRY(file_.sync());
  return Status::ok();
}

}  // namespace keel::check
