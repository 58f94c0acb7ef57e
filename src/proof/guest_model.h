// GuestModel: the reference model of the guest disk the checker compares every crash state with.
//
// Per 512-byte sector it keeps the contents the sector may hold after a crash: the durable set
// (its content at the last completed flush: one version, or {zeros, backing} after a discard)
// and the pending versions written since. A completed flush makes the last operation's outcome
// durable; a completed FUA write does so for its own sectors. An operation that failed (fault
// injection) leaves its outcome possible but not certain: it joins both the pending versions and
// the outcome a later flush makes durable. Versions are those of proof/pattern.h.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "proof/bitmap_model.h"

namespace keel::proof {

class GuestModel {
 public:
  // `backing_sectors` sectors at the start read from the backing file (version 1) at first.
  // `capacity_bytes` is the largest size the disk takes in the workload; it starts at
  // `size_bytes` (0 = the capacity).
  GuestModel(uint64_t capacity_bytes, uint64_t backing_sectors, uint64_t size_bytes = 0);

  // Sectors the model tracks (the capacity); the disk's size now is one of allowed sizes.
  uint64_t sector_count() const { return sectors_.size(); }
  bool has_backing() const { return backing_sectors_ > 0; }

  // A write (or write-zeroes with version 0) issued to [first, first+count). `certain` = false for
  // an operation that failed: its outcome may or may not have happened.
  void write(uint64_t first, uint64_t count, uint32_t version, bool certain = true);
  // A discard: the sectors read as zeros or from the backing file afterwards.
  void discard(uint64_t first, uint64_t count, bool certain = true);
  // A flush completed: every sector's latest outcome is durable.
  void flush();
  // A FUA write completed on these sectors.
  void make_durable(uint64_t first, uint64_t count);

  // The sector was read back as `version` (an allowed one) after a crash: from now on that is its
  // only content, durable.
  void settle(uint64_t sector, uint32_t version);

  // Whether `sector` may read as `version` now.
  bool allows(uint64_t sector, uint32_t version) const;
  // Whether the sector has no write pending (it must read as its durable content).
  bool settled(uint64_t sector) const { return sectors_[sector].pending.empty(); }
  // "durable {7} pending {9,12}", for reports.
  std::string describe(uint64_t sector) const;
  // Sectors whose durable content is not what they held at the start.
  uint64_t touched_sectors() const;

  // A resize to `bytes` issued (shrinking drops the tail: if it grows back it reads zeros).
  void resize(uint64_t bytes, bool certain);
  // Whether the virtual disk may be `bytes` long now.
  bool size_allowed(uint64_t bytes) const;
  std::string describe_sizes() const;

  // Internal snapshots: what each one must read as, and whether a crash may have lost it (its
  // creation or deletion was in progress).
  struct Snapshot {
    std::shared_ptr<const GuestModel> content;  // settled: durable only
    uint64_t size_bytes = 0;
    bool must_exist = false;
  };
  void snapshot_create(const std::string& name, bool certain);
  void snapshot_delete(const std::string& name, bool certain);
  // Reverting to snapshot `name`: every sector may now read as the snapshot's content.
  void snapshot_apply(const std::string& name, bool certain);
  const std::map<std::string, Snapshot>& snapshots() const { return snapshots_; }

  // qemu-img commit into the raw backing file started (certain = false) or completed: the backing
  // file takes every sector's content (the disk itself reads the same before, during and after).
  void commit(bool certain);
  // What the backing file alone must read as, once a commit started (nullptr before): the
  // content of the last completed commit, or (while one runs) of the one before or this one.
  const GuestModel* committed_base() const { return base_.get(); }

  // LUKS key slots (qemu-img amend -o encrypt.state=...): for each passphrase a key-slot change
  // named, whether it must open the image now (a completed add), must not (a completed erase),
  // or either (a change in progress). The image's own passphrase is not listed: G1 opens with it.
  enum class KeyState { kEither, kOpens, kRefused };
  void key_change(const std::string& passphrase, bool opens, bool certain) {
    keys_[passphrase] = certain ? (opens ? KeyState::kOpens : KeyState::kRefused) : KeyState::kEither;
  }
  const std::map<std::string, KeyState>& keys() const { return keys_; }

  // The persistent dirty bitmaps (kept up to date by apply_mark, proof/workload.h).
  BitmapModel& bitmaps() { return bitmaps_; }
  const BitmapModel& bitmaps() const { return bitmaps_; }

 private:
  struct Sector {
    std::vector<uint32_t> durable;  // what a crash must preserve (any one of)
    std::vector<uint32_t> pending;  // written since the last flush
    std::vector<uint32_t> outcome;  // what a flush now would make durable
  };
  void issue(uint64_t first, uint64_t count, const std::vector<uint32_t>& outcome, bool certain);

  std::vector<Sector> sectors_;
  uint64_t backing_sectors_;
  uint64_t durable_size_ = 0;
  uint64_t outcome_size_ = 0;
  std::vector<uint64_t> pending_sizes_;
  std::map<std::string, Snapshot> snapshots_;
  std::shared_ptr<const GuestModel> base_;  // copied on change (snapshot copies share it)
  BitmapModel bitmaps_;
  std::map<std::string, KeyState> keys_;
};

}  // namespace keel::proof
