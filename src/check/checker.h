// Checker: one pass of keel check over a qcow2 image, and the repair that follows it.
//
// analyze() reads every structure once and judges it: the header, the active L1 table, the
// refcount table and blocks, the snapshot table and each snapshot's L1 table, every L2 table
// (each distinct table read once, its references weighted by how many L1 entries point at it),
// and the persistent bitmaps. It builds the expected reference count of every host cluster
// (ClusterMap) and compares it with the stored refcounts.
//
// Who owns a cluster is decided in a fixed priority order (cluster_map.h): when two structures
// claim the same cluster, the later claimant is the damaged one (but see analyze() for an L2
// table that is really guest data). An invalid reference (past the
// end of the file, misaligned, overlapping metadata, refcount overflow) is reported and not
// counted; a repair drops it.
//
// Repair (mode kAll) runs in phases separated by syncs, so that an interruption at any point
// leaves an image no worse than before (each phase only removes references or only makes
// refcounts exact):
//   1. edits that remove references: bad L1/L2 entries dropped, reserved bits cleared, COPIED
//      cleared where the final refcount is not 1, bitmaps dropped                     -> sync
//   2. refcounts: fixed in place, or a whole new refcount structure (and snapshot table, and
//      active L1 table) written after the end of the file -> sync -> header switched in one
//      sector write                                                                   -> sync
//   3. COPIED set where the final refcount is 1                                       -> sync
// The caller re-checks and then clears the dirty and corrupt bits (check_api.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "check/cluster_map.h"
#include "format/header.h"
#include "format/snapshot_table.h"
#include "keel/check.h"

namespace keel::check {

enum class Mode { kCheck, kLeaks, kAll };

// Sizes derived from the header.
struct Geometry {
  uint64_t cluster_size = 0;
  uint32_t cluster_bits = 0;
  bool ext_l2 = false;
  uint64_t l2_entries = 0;    // entries per L2 table
  uint64_t l2_entry_bytes = 8;
  uint32_t refcount_bits = 16;
  uint64_t refblock_entries = 0;
  uint64_t refcount_max = 0;
  uint64_t file_size = 0;
  uint64_t file_clusters = 0;  // ceil(file_size / cluster_size)
  uint64_t slots = 0;          // ClusterMap size: file_clusters plus room for QEMU's tolerance
  uint32_t version = 3;
  bool data_file = false;
  uint64_t virtual_size = 0;

  uint64_t cluster_of(uint64_t offset) const { return offset >> cluster_bits; }
  uint64_t offset_of(uint64_t cluster) const { return cluster << cluster_bits; }
  // QEMU's rule: a referenced range may extend past the end of the file by less than a cluster.
  bool range_in_file(uint64_t offset, uint64_t bytes) const {
    return offset <= file_size + cluster_size && offset + bytes < file_size + cluster_size &&
           offset + bytes >= offset;
  }
};

struct SnapshotRecord {
  format::SnapshotEntry entry;
  bool keep = true;  // false: the repair deletes the snapshot
  bool walk = true;  // its L1 table is sound enough to count its references
};

// One distinct L2 table and how it is referenced.
struct L2Record {
  uint64_t cluster = 0;
  uint64_t refs = 0;          // L1 entries (of every L1 table) pointing at it
  uint64_t active_refs = 0;   // of those, entries of the active L1 table
  int64_t active_index = -1;  // one active L1 index pointing at it (for guest offsets)
};

class Checker {
 public:
  Checker(BlockFile& file, Mode mode, const CheckOptions& opts, bool verbose);

  // Reads and judges everything; in kAll mode also applies repair phase 1 (edits that only remove
  // references). An error return means the check could not be completed (exit code 1).
  // When an L1 entry points at what other L2 entries use as guest data (and the "table" there is
  // mostly invalid entries), the cluster is data and the L1 entry the damage: the analysis then
  // runs once more with that cluster excluded from L2 tables. Nothing is written and no line is
  // reported before the attempt that counts.
  Status analyze();
  // Repair phases 1 (rest), 2 and 3. REQUIRES: analyze() succeeded and mode != kCheck.
  Status repair();

  const CheckResult& result() const { return res_; }
  // COPIED flags changed by repair().
  uint64_t copied_fixed() const { return copied_fixed_; }
  const format::Header& header() const { return h_; }

 private:
  // ---- checker.cpp: header, reporting, helpers
  Status analyze_once();
  void reset_analysis();
  void flush_report();
  Status flush_pending_writes();
  void defer_write(uint64_t offset, std::vector<uint8_t> bytes) {
    pending_writes_.emplace_back(offset, std::move(bytes));
  }
  Status load_header();
  void report(const std::string& line);
  void corruption(const std::string& line);
  bool fixing() const { return mode_ == Mode::kAll; }
  const char* fix_prefix() const { return fixing() ? "Repairing" : "ERROR"; }
  // Claims [offset, offset+bytes) for `owner`. Returns the owner already holding a cluster of the
  // range (nothing is claimed then), or kNone on success. `share`: the same owner may hold it.
  Owner claim(uint64_t offset, uint64_t bytes, Owner owner, bool share = false);
  Owner owner_of_range(uint64_t offset, uint64_t bytes) const;
  void count_owned_metadata();
  void note_dropped(uint64_t guest_offset, uint64_t length);
  void progress(double percent) const;
  Status read(uint64_t offset, std::span<uint8_t> buf);
  Status write(uint64_t offset, std::span<const uint8_t> buf);

  // ---- check_tables.cpp: L1 and L2 tables
  Status load_active_l1();
  Status walk_l1_table(std::vector<uint64_t>& l1, bool active, const std::string& where, uint64_t l1_offset);
  Status walk_l1_tables();
  void collect_l2_records();
  Status scan_l2_tables();
  Status scan_l2_table(const L2Record& r, std::span<uint8_t> table);
  Status fix_copied(bool set_phase);

  // ---- check_refcounts.cpp: refcount table, blocks, comparison, in-place fixes
  Status load_reftable();
  Status claim_refblocks();
  Status read_refcounts();
  void decide_rebuild();
  void compare_refcounts();
  Status fix_refcounts_in_place();

  // ---- check_rebuild.cpp: a new refcount structure after the end of the file
  Status rebuild_refcounts();

  // ---- check_snapshots.cpp
  Status load_snapshots();
  std::vector<uint8_t> encode_kept_snapshots() const;

  // ---- check_bitmaps.cpp
  Status check_bitmaps();
  Status drop_bitmaps();

  BlockFile& file_;
  Mode mode_;
  const CheckOptions& opts_;
  bool verbose_;
  CheckResult res_;
  format::Header h_;
  Geometry g_;
  ClusterMap map_;        // expected reference counts and owners
  CountArray ondisk_;     // stored refcounts (clusters < g_.slots)

  std::vector<uint64_t> active_l1_;
  bool relocate_l1_ = false;  // the active L1 table lies past the end of the file: write it anew
  std::vector<uint64_t> reftable_;
  std::vector<bool> refblock_ok_;    // reftable entry i points at a readable refcount block
  bool reftable_damaged_ = false;    // the reftable itself must be replaced
  bool refblocks_damaged_ = false;   // some refcount block must be replaced (QEMU: rebuild)
  bool need_rebuild_ = false;        // repair rebuilds the refcount structure
  bool qemu_would_rebuild_ = false;  // QEMU's condition (-r leaks refuses then)
  std::vector<SnapshotRecord> snapshots_;
  bool rewrite_snapshots_ = false;
  uint64_t snapshot_table_bytes_ = 0;
  std::vector<L2Record> l2s_;
  std::vector<std::pair<uint64_t, int64_t>> active_l2_index_;  // (L2 cluster, active L1 index)
  bool drop_bitmaps_ = false;
  uint64_t copied_errors_ = 0;  // COPIED mismatches among res_.corruptions
  uint64_t copied_fixed_ = 0;
  uint64_t highest_cluster_ = 0;
  bool any_cluster_ = false;

  // L2 tables that are guest data (see analyze()).
  std::vector<uint64_t> not_l2_;         // sorted; kept across attempts
  std::vector<uint64_t> suspicious_l2_;  // tables most of whose non-zero entries are invalid
  std::vector<std::pair<uint64_t, uint64_t>> data_hits_l2_;  // (table of the entry, L2 table it hits)
  bool restart_ = false;
  // Phase-1 edits, written when the analysis is final (kAll).
  std::vector<std::pair<uint64_t, std::vector<uint8_t>>> pending_writes_;
  // Report lines held back until the analysis is final (bounded; see report()).
  std::vector<std::string> pending_lines_;
  bool buffering_ = false;
};

}  // namespace keel::check
