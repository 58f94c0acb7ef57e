// The workload generator's helpers, shared by the files that define workloads
// (proof/workload.cpp: guest I/O; proof/workload_layers.cpp: operations on other layers).
// Internal to src/proof.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <utility>

#include "proof/workload.h"

namespace keel::proof::gen {

constexpr uint64_t KiB = 1024, MiB = 1024 * 1024;

// Builds op lists with a seeded generator.
class Gen {
 public:
  Gen(WorkloadSpec& spec, uint64_t seed) : spec_(spec), rng_(seed) {}
  uint64_t pick(uint64_t n) { return n ? rng_() % n : 0; }
  bool chance(int percent) { return static_cast<int>(pick(100)) < percent; }
  void phase(std::string p) { phase_ = std::move(p); }

  void write(uint64_t off, uint64_t len, bool fua = false) { add(GuestOpKind::kWrite, off, len, fua); }
  void zeroes(uint64_t off, uint64_t len, bool unmap) {
    add(GuestOpKind::kWriteZeroes, off, len, false);
    spec_.ops.back().may_unmap = unmap;
  }
  void discard(uint64_t off, uint64_t len) { add(GuestOpKind::kDiscard, off, len, false); }
  void compressed(uint64_t off, uint64_t len) { add(GuestOpKind::kWriteCompressed, off, len, false); }
  void flush() { add(GuestOpKind::kFlush, 0, 0, false); }
  void snapshot(GuestOpKind k, std::string name) {
    add(k, 0, 0, false);
    spec_.ops.back().name = std::move(name);
  }
  void resize(uint64_t bytes) {
    add(GuestOpKind::kResize, 0, 0, false);
    spec_.ops.back().new_size = bytes;
  }
  void amend(AmendOptions o) {
    add(GuestOpKind::kAmend, 0, 0, false);
    spec_.ops.back().amend = o;
  }
  void reopen() { add(GuestOpKind::kReopen, 0, 0, false); }
  void vmstate(uint64_t off, uint64_t len) { add(GuestOpKind::kVmstateWrite, off, len, false); }
  // A LUKS key-slot change. `erased` names the passphrase an erase by keyslot removes (the model
  // needs it; the engine does not).
  void key_slot(EncryptAmendOptions o, std::string erased = {}) {
    add(GuestOpKind::kKeySlot, 0, 0, false);
    spec_.ops.back().key_slot = std::move(o);
    spec_.ops.back().name = std::move(erased);
  }
  // kBitmapAdd (with granularity), kBitmapRemove, kBitmapDisable, kBitmapMerge (source -> name).
  void bitmap(GuestOpKind k, std::string name, uint32_t granularity = 0, std::string source = {}) {
    add(k, 0, 0, false);
    spec_.ops.back().name = std::move(name);
    spec_.ops.back().granularity = granularity;
    spec_.ops.back().source = std::move(source);
  }
  void commit(bool keep_top) {
    add(GuestOpKind::kCommit, 0, 0, false);
    spec_.ops.back().keep_top = keep_top;
  }
  void rebase(std::string new_backing) {
    add(GuestOpKind::kRebase, 0, 0, false);
    spec_.ops.back().name = std::move(new_backing);
  }
  // Flushes after every `every`..`every+1` data operations (called after each one).
  void maybe_flush(int every) {
    if (++since_flush_ >= every + static_cast<int>(pick(2))) {
      flush();
      since_flush_ = 0;
    }
  }
  // A random sector-aligned range inside one cluster.
  std::pair<uint64_t, uint64_t> partial(uint64_t cluster_index, uint64_t cluster) {
    uint64_t sectors = cluster / kGuestSector;
    uint64_t first = pick(sectors);
    uint64_t count = 1 + pick(sectors - first);
    return {cluster_index * cluster + first * kGuestSector, count * kGuestSector};
  }

 private:
  void add(GuestOpKind k, uint64_t off, uint64_t len, bool fua) {
    GuestOp op;
    op.kind = k;
    op.offset = off;
    op.length = len;
    op.fua = fua;
    op.phase = phase_;
    spec_.ops.push_back(op);
  }
  WorkloadSpec& spec_;
  std::mt19937_64 rng_;
  std::string phase_ = "main";
  int since_flush_ = 0;
};

inline WorkloadSpec base(const std::string& name, const std::string& what, uint64_t size, uint32_t cluster) {
  WorkloadSpec s;
  s.name = name;
  s.description = what;
  s.create.format = "qcow2";
  s.create.size = size;
  s.create.cluster_size = cluster;
  return s;
}

// The workloads of proof/workload_layers.cpp.
WorkloadSpec refcount_bits(uint64_t seed);
WorkloadSpec bitmaps(uint64_t seed);
WorkloadSpec commit(uint64_t seed);
WorkloadSpec rebase(uint64_t seed);

}  // namespace keel::proof::gen
