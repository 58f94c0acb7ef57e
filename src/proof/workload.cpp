// The integrity proof's guest I/O workloads and the registry of every workload (see workload.h;
// the operations on other layers are in proof/workload_layers.cpp, the runner in
// proof/workload_runner.cpp).
#include "proof/workload.h"

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include "proof/pattern.h"
#include "proof/workload_gen.h"

namespace keel::proof {
namespace {

using namespace gen;

// Allocating writes: whole clusters, partial clusters (COW against zeros), cluster-spanning.
WorkloadSpec alloc(uint64_t seed) {
  WorkloadSpec s = base("alloc", "allocating writes: whole, partial and spanning clusters", 2 * MiB, 64 * KiB);
  s.cache = CacheMode::kNone;  // new clusters are extended with allocate() before the write
  Gen g(s, seed);
  uint64_t c = s.create.cluster_size, n = s.create.size / c;
  for (int i = 0; i < 14; ++i) {
    switch (g.pick(3)) {
      case 0: g.write(g.pick(n) * c, c); break;
      case 1: {
        auto [off, len] = g.partial(g.pick(n), c);
        g.write(off, len);
        break;
      }
      default: {
        uint64_t off = g.pick(s.create.size / kGuestSector - 3 * c / kGuestSector) * kGuestSector;
        g.write(off, (1 + g.pick(3 * c / kGuestSector)) * kGuestSector);
      }
    }
    g.maybe_flush(2);
  }
  g.flush();
  return s;
}

// Overwrites of allocated clusters: after the fill, no metadata write is needed at all.
WorkloadSpec overwrite(uint64_t seed) {
  WorkloadSpec s = base("overwrite", "overwrites of allocated clusters (in place, FUA)", 1 * MiB, 64 * KiB);
  Gen g(s, seed);
  uint64_t c = s.create.cluster_size;
  g.phase("fill");
  for (uint64_t i = 0; i < 6; ++i) g.write(i * c, c);
  g.flush();
  g.phase("overwrite");
  for (int i = 0; i < 18; ++i) {
    auto [off, len] = g.partial(g.pick(6), c);
    g.write(off, len, /*fua=*/g.chance(15));
    g.maybe_flush(3);
  }
  g.flush();
  return s;
}

// Copy-on-write from a raw backing file (shorter than the image), write-zeroes and discard over it.
WorkloadSpec backing_cow(uint64_t seed) {
  WorkloadSpec s = base("backing-cow", "copy-on-write from a backing file; zeroes and discards over it",
                        2 * MiB, 64 * KiB);
  s.backing_bytes = 1536 * KiB;
  Gen g(s, seed);
  uint64_t c = s.create.cluster_size, n = s.create.size / c;
  for (int i = 0; i < 16; ++i) {
    uint64_t k = g.pick(n);
    switch (g.pick(6)) {
      case 0: g.write(k * c, c, g.chance(20)); break;
      case 1: g.zeroes(k * c, c, g.chance(50)); break;
      case 2: g.discard(k * c, c); break;
      case 3: {
        auto [off, len] = g.partial(k, c);
        g.zeroes(off, len, false);
        break;
      }
      default: {
        auto [off, len] = g.partial(k, c);
        g.write(off, len);
      }
    }
    g.maybe_flush(2);
  }
  g.flush();
  return s;
}

// Discard and write-zeroes that free clusters, then allocations that may reuse them — the hazard
// QEMU has: a freed host cluster must not be reused before the unlink is durable.
WorkloadSpec discard_reuse(uint64_t seed) {
  WorkloadSpec s = base("discard-reuse", "discard / write-zeroes freeing clusters, then reuse", 2 * MiB, 64 * KiB);
  Gen g(s, seed);
  uint64_t c = s.create.cluster_size, n = s.create.size / c;
  std::set<uint64_t> used;
  g.phase("fill");
  for (uint64_t i = 0; i < 6; ++i) {
    g.write(i * c, c);
    used.insert(i);
  }
  g.flush();
  g.phase("free-reuse");
  for (int round = 0; round < 5; ++round) {
    auto any_used = [&] {
      auto it = used.begin();
      std::advance(it, g.pick(used.size()));
      return *it;
    };
    uint64_t victim = any_used();
    switch (g.pick(3)) {
      case 0: g.discard(victim * c, c); break;
      case 1: g.zeroes(victim * c, c, true); break;
      default: g.zeroes(victim * c, c, false); break;
    }
    used.erase(victim);
    if (g.chance(30)) g.flush();
    // New allocations, some at the freed guest cluster, some elsewhere.
    for (int k = 0; k < 2; ++k) {
      uint64_t target = g.chance(30) ? victim : g.pick(n);
      if (g.chance(70)) {
        g.write(target * c, c);
      } else {
        auto [off, len] = g.partial(target, c);
        g.write(off, len);
      }
      used.insert(target);
    }
    if (used.size() > 1 && g.chance(40)) {  // a partial zeroing inside an allocated cluster
      auto [off, len] = g.partial(any_used(), c);
      g.zeroes(off, len, g.chance(50));
    }
    if (g.chance(60)) g.flush();
  }
  g.flush();
  return s;
}

// Issue 13: the refcounts of every metadata cluster at 0 (a bad disk, a buggy tool), then guest
// writes, write-zeroes and discards. The first allocation would land on metadata: the engine must
// refuse it (mark the image corrupt) and no crash state may hold guest data in metadata.
WorkloadSpec damaged_refcount(uint64_t seed) {
  WorkloadSpec s = base("damaged-refcount", "metadata refcounts at 0, then allocating writes", 1 * MiB, 4 * KiB);
  s.damage = "refcount0";
  Gen g(s, seed);
  uint64_t c = s.create.cluster_size, n = s.create.size / c;
  for (int i = 0; i < 8; ++i) {
    switch (g.pick(4)) {
      case 0: g.zeroes(g.pick(n) * c, c, g.chance(50)); break;
      case 1: g.discard(g.pick(n) * c, c); break;
      default: g.write(g.pick(n) * c, c, g.chance(20)); break;
    }
    g.maybe_flush(3);
  }
  g.flush();
  return s;
}

// Writes far apart: every one needs a new L2 table (1 KiB clusters: one L2 maps 128 KiB).
WorkloadSpec l2_tables(uint64_t seed) {
  WorkloadSpec s = base("l2-tables", "writes far apart: a new L2 table each", 2 * MiB, 1 * KiB);
  Gen g(s, seed);
  uint64_t region = 128 * KiB, regions = s.create.size / region;
  std::vector<uint64_t> order(regions);
  for (uint64_t i = 0; i < regions; ++i) order[i] = i;
  for (uint64_t i = regions - 1; i > 0; --i) std::swap(order[i], order[g.pick(i + 1)]);
  for (uint64_t i = 0; i < 12; ++i) {
    uint64_t len = (1 + g.pick(16)) * kGuestSector;
    uint64_t off = order[i] * region + g.pick((region - len) / kGuestSector) * kGuestSector;
    g.write(off, len);
    g.maybe_flush(2);
  }
  g.flush();
  return s;
}

// 512-byte clusters make the refcount structures grow soon. refcount_bits=1: one refcount block
// covers 4096 clusters (2 MiB of file), so after a setup fill to ~1.8 MiB the explored writes
// need a new refcount block. refcount_bits=64: one block covers 64 clusters (new blocks all the
// time) and the one-cluster refcount table covers 64 blocks (2 MiB of file), so the explored
// writes grow the refcount table.
WorkloadSpec refcount_growth(const std::string& name, uint32_t bits, uint64_t seed) {
  WorkloadSpec s = base(name, bits == 1 ? "new refcount block (512 B clusters, refcount_bits=1)"
                                        : "refcount table growth (512 B clusters, refcount_bits=64)",
                        3 * MiB, 512);
  s.create.refcount_bits = bits;
  Gen g(s, seed);
  g.phase("setup");
  uint64_t fill = bits == 1 ? 1800 * KiB : 1750 * KiB;
  for (uint64_t off = 0; off < fill; off += 64 * KiB) g.write(off, std::min<uint64_t>(64 * KiB, fill - off));
  g.flush();
  s.explore_from = s.ops.size();
  g.phase("grow");
  uint64_t chunk = 32 * KiB;
  for (uint64_t i = 0; i < 10; ++i) {
    uint64_t len = chunk - (g.chance(30) ? g.pick(8) * kGuestSector : 0);
    g.write(fill + i * chunk, len);
    g.maybe_flush(3);
  }
  g.flush();
  return s;
}

// Lazy refcounts: refcounts of data clusters may lag; the dirty bit makes open repair them.
WorkloadSpec lazy_refcounts(uint64_t seed) {
  WorkloadSpec s = base("lazy-refcounts", "lazy refcounts: dirty bit, repair on open", 2 * MiB, 64 * KiB);
  s.create.lazy_refcounts = true;
  Gen g(s, seed);
  uint64_t c = s.create.cluster_size, n = s.create.size / c;
  for (int i = 0; i < 14; ++i) {
    if (i == 7) g.reopen();
    uint64_t k = g.pick(n);
    switch (g.pick(5)) {
      case 0: g.discard(k * c, c); break;
      case 1: {
        auto [off, len] = g.partial(k, c);
        g.write(off, len);
        break;
      }
      default: g.write(k * c, c);
    }
    g.maybe_flush(2);
  }
  g.flush();
  return s;
}

// Compressed clusters: written, partly overwritten (COW out of the compressed cluster), discarded.
WorkloadSpec compressed(uint64_t seed) {
  WorkloadSpec s = base("compressed", "compressed writes, overwritten and discarded", 2 * MiB, 64 * KiB);
  Gen g(s, seed);
  uint64_t c = s.create.cluster_size, n = s.create.size / c;
  std::vector<uint64_t> fresh(n);
  for (uint64_t i = 0; i < n; ++i) fresh[i] = i;
  for (uint64_t i = n - 1; i > 0; --i) std::swap(fresh[i], fresh[g.pick(i + 1)]);
  size_t next = 0;
  std::vector<uint64_t> done;
  for (int i = 0; i < 12; ++i) {
    if (done.empty() || g.chance(50)) {
      uint64_t k = fresh[next++];
      g.compressed(k * c, c);
      done.push_back(k);
    } else {
      uint64_t k = done[g.pick(done.size())];
      if (g.chance(25)) {
        g.discard(k * c, c);
      } else {
        auto [off, len] = g.partial(k, c);
        g.write(off, len);
      }
    }
    g.maybe_flush(2);
  }
  g.flush();
  return s;
}

// Everything at once over a backing file.
WorkloadSpec mixed(uint64_t seed) {
  WorkloadSpec s = base("mixed", "random mix of every operation over a backing file", 2 * MiB, 64 * KiB);
  s.cache = CacheMode::kNone;
  s.backing_bytes = 1 * MiB;
  Gen g(s, seed);
  uint64_t c = s.create.cluster_size, n = s.create.size / c;
  for (int i = 0; i < 24; ++i) {
    uint64_t k = g.pick(n);
    auto [off, len] = g.partial(k, c);
    switch (g.pick(8)) {
      case 0: g.discard(k * c, c); break;
      case 1: g.zeroes(k * c, c, g.chance(50)); break;
      case 2: g.zeroes(off, len, g.chance(50)); break;
      case 3: g.write(k * c, c, g.chance(20)); break;
      case 4: g.write(off, std::min<uint64_t>(len + c, s.create.size - off)); break;
      default: g.write(off, len);
    }
    g.maybe_flush(3);
  }
  g.flush();
  return s;
}

// Internal snapshots: create, delete and apply between writes that COW out of shared clusters.
WorkloadSpec snapshots(uint64_t seed) {
  WorkloadSpec s = base("snapshots", "snapshot create, delete and apply between writes", 1 * MiB, 64 * KiB);
  Gen g(s, seed);
  uint64_t c = s.create.cluster_size, n = s.create.size / c;
  auto some_writes = [&](int count) {
    for (int i = 0; i < count; ++i) {
      uint64_t k = g.pick(n);
      if (g.chance(15)) {
        g.discard(k * c, c);
      } else {
        auto [off, len] = g.partial(k, c);
        g.write(off, len);
      }
    }
  };
  g.phase("fill");
  some_writes(5);
  g.phase("snapshot");
  g.snapshot(GuestOpKind::kSnapshotCreate, "s1");
  g.phase("cow");
  some_writes(4);
  g.phase("snapshot");
  g.snapshot(GuestOpKind::kSnapshotCreate, "s2");
  g.phase("cow");
  some_writes(3);
  g.flush();
  g.phase("snapshot");
  if (g.chance(50)) {
    g.snapshot(GuestOpKind::kSnapshotApply, "s1");
    g.snapshot(GuestOpKind::kSnapshotDelete, "s2");
  } else {
    g.snapshot(GuestOpKind::kSnapshotDelete, "s1");
    g.snapshot(GuestOpKind::kSnapshotApply, "s2");
  }
  g.phase("cow");
  some_writes(3);
  g.flush();
  return s;
}

// Resize: growth that needs a new L1 table (512-byte clusters: one L1 cluster maps 2 MiB),
// writes past the old end, a shrink, and growth again over the dropped range.
WorkloadSpec resizes(uint64_t seed) {
  WorkloadSpec s = base("resize", "resize up (new L1 table) and down between writes", 1 * MiB, 512);
  Gen g(s, seed);
  uint64_t size = s.create.size;
  auto some_writes = [&](int count) {
    for (int i = 0; i < count; ++i) {
      uint64_t len = 512 * (1 + g.pick(8));
      uint64_t off = 512 * g.pick((size - len) / 512 + 1);
      g.write(off, len);
      g.maybe_flush(3);
    }
  };
  g.phase("fill");
  some_writes(4);
  g.phase("resize");
  size = 3 * MiB + 512 * g.pick(64);
  g.resize(size);
  g.phase("write");
  some_writes(4);
  g.phase("resize");
  size = 1 * MiB + 512 * g.pick(2048);
  g.resize(size);
  g.phase("write");
  some_writes(3);
  g.phase("resize");
  size = 4 * MiB;
  g.resize(size);
  g.phase("write");
  some_writes(3);
  g.flush();
  return s;
}

// Extended L2 entries (64 KiB clusters of 32 subclusters) over a backing file: partial writes
// allocate subclusters, and partial write-zeroes take QEMU's subcluster path (zero bits for
// whole subclusters, a head or tail zeroing its subcluster when the rest reads as zeros, zeros
// written otherwise), between copy-on-write from the backing file, discards and flushes.
WorkloadSpec extended_l2(uint64_t seed) {
  WorkloadSpec s = base("extended-l2", "extended L2: subcluster writes, zeroes and discards over a backing file",
                        1 * MiB, 64 * KiB);
  s.create.extended_l2 = true;
  s.backing_bytes = 512 * KiB;
  Gen g(s, seed);
  const uint64_t c = s.create.cluster_size, n = s.create.size / c;
  for (int i = 0; i < 40; ++i) {
    const uint64_t k = g.pick(n);
    auto [off, len] = g.partial(k, c);
    switch (g.pick(6)) {
      case 0: g.zeroes(k * c + 2 * KiB * g.pick(16), 2 * KiB * (1 + g.pick(8)), g.chance(30)); break;
      case 1: g.zeroes(off, len, false); break;
      case 2: g.discard(k * c, c); break;
      default: g.write(off, len, g.chance(10));
    }
    g.maybe_flush(3);
  }
  g.flush();
  return s;
}

// VM state (qemu-io write -b) between guest writes: with 512-byte clusters one L1 entry maps
// 32 KiB, so the area's writes grow the L1 table again and again (new table, header switch),
// allocate L2 tables and data clusters interleaved with the disk's, and after a snapshot copy
// the area's shared clusters on write.
WorkloadSpec vmstates(uint64_t seed) {
  WorkloadSpec s = base("vmstate", "VM state writes past the disk (L1 growth) between guest writes", 256 * KiB, 512);
  Gen g(s, seed);
  const uint64_t size = s.create.size;
  uint64_t vm_end = 0;
  auto some_writes = [&](int count) {
    for (int i = 0; i < count; ++i) {
      uint64_t len = 512 * (1 + g.pick(8));
      g.write(512 * g.pick((size - len) / 512 + 1), len);
      g.maybe_flush(3);
    }
  };
  auto vm_writes = [&](int count) {
    for (int i = 0; i < count; ++i) {
      uint64_t len = 512 * (1 + g.pick(16));
      uint64_t off = g.chance(50) ? vm_end : 512 * g.pick(vm_end / 512 + 1);
      g.vmstate(off, len);
      vm_end = std::max(vm_end, off + len) + 32 * KiB * g.pick(3);
      g.maybe_flush(3);
    }
  };
  g.phase("fill");
  some_writes(3);
  g.phase("vmstate");
  vm_writes(6);
  g.phase("write");
  some_writes(3);
  g.flush();
  g.phase("snapshot");
  g.snapshot(GuestOpKind::kSnapshotCreate, "s1");
  g.phase("vmstate");
  vm_writes(4);
  some_writes(2);
  g.flush();
  return s;
}

// Amend: compat 1.1 -> 0.10 (zero clusters expanded) -> 1.1 with lazy refcounts -> off.
WorkloadSpec amends(uint64_t seed) {
  WorkloadSpec s = base("amend", "amend compat and lazy_refcounts both ways between writes", 1 * MiB, 64 * KiB);
  Gen g(s, seed);
  uint64_t c = s.create.cluster_size, n = s.create.size / c;
  auto some_writes = [&](int count, bool zeroes) {
    for (int i = 0; i < count; ++i) {
      uint64_t k = g.pick(n);
      auto [off, len] = g.partial(k, c);
      if (zeroes && g.chance(30)) g.zeroes(k * c, c, g.chance(50));
      else if (zeroes && g.chance(20)) g.discard(k * c, c);
      else g.write(off, len);
    }
  };
  auto amend = [&](std::optional<int> version, std::optional<bool> lazy) {
    AmendOptions o;
    o.version = version;
    o.lazy_refcounts = lazy;
    g.phase("amend");
    g.amend(o);
    g.phase("write");
  };
  g.phase("write");
  some_writes(6, true);
  amend(2, std::nullopt);
  some_writes(3, false);
  g.flush();
  amend(3, true);
  some_writes(3, true);
  amend(std::nullopt, false);
  some_writes(2, true);
  g.flush();
  return s;
}

}  // namespace

// A LUKS-encrypted image (aes-256-xts): allocating writes (whole and partial clusters, so the
// copy-on-write re-encrypts the old data at the new host offset), copy-on-write from a backing
// file, overwrites in place, write-zeroes and discards. Checked through the engine's decryption
// and, on a sample, through qemu-img with the passphrase. Between the writes, key-slot changes
// (qemu-img amend -o encrypt.*): a second passphrase added (slot 1), a third in slot 6 (whose
// entry spans the header's two sectors) and erased by slot, slot 1 overwritten (--force) with
// the third, which is then erased by old-secret; the checker opens every state with each
// passphrase the model says must open or must not (G3) and requires every active slot to open
// with one of them (G2).
WorkloadSpec encrypted(uint64_t seed) {
  WorkloadSpec s = base("encrypted", "LUKS-encrypted image: allocating, CoW and in-place writes", 1 * MiB, 64 * KiB);
  EncryptCreateOptions e;
  e.passphrase = kProofSecret;
  e.iter_time_ms = 0;  // QEMU's minimum of 1000 iterations, untimed
  s.create.encrypt = e;
  s.backing_bytes = 768 * KiB;
  Gen g(s, seed);
  uint64_t c = s.create.cluster_size, n = s.create.size / c;
  auto keys = [&](int i) {
    EncryptAmendOptions o;
    o.iter_time_ms = 0;  // QEMU's minimum of 1000 iterations, untimed
    if (i == 4) {
      o.new_passphrase = kProofSecret2;
      g.key_slot(o);
    } else if (i == 8) {
      o.new_passphrase = kProofSecret3;
      o.keyslot = 6;
      g.key_slot(o);
    } else if (i == 10) {
      o.activate = false, o.iter_time_ms.reset(), o.keyslot = 6;
      g.key_slot(o, kProofSecret3);
    } else if (i == 12) {
      o.new_passphrase = kProofSecret3, o.keyslot = 1, o.force = true;
      o.old_passphrase = kProofSecret2;  // for the model only: the passphrase slot 1 held
      g.key_slot(o);
    } else if (i == 14) {
      o.activate = false, o.iter_time_ms.reset(), o.old_passphrase = kProofSecret3;
      g.key_slot(o);
    }
  };
  for (int i = 0; i < 16; ++i) {
    keys(i);
    uint64_t k = g.pick(n);
    switch (g.pick(5)) {
      case 0: g.write(k * c, c, g.chance(20)); break;
      case 1: g.zeroes(k * c, c, g.chance(50)); break;
      case 2: g.discard(k * c, c); break;
      default: {
        auto [off, len] = g.partial(k, c);
        g.write(off, len);
      }
    }
    g.maybe_flush(2);
  }
  g.flush();
  return s;
}

const std::vector<std::string>& workload_names() {
  static const std::vector<std::string> names = {
      "alloc",         "overwrite",      "backing-cow",    "discard-reuse", "l2-tables",
      "refblock-1bit", "reftable-grow", "lazy-refcounts", "compressed",    "mixed",
      "snapshots",     "resize",         "amend",          "refcount-bits", "bitmaps",
      "commit",        "rebase",        "damaged-refcount", "encrypted",     "vmstate",
      "extended-l2"};
  return names;
}

Result<WorkloadSpec> make_workload(const std::string& name, uint64_t seed) {
  if (name == "alloc") return alloc(seed);
  if (name == "overwrite") return overwrite(seed);
  if (name == "backing-cow") return backing_cow(seed);
  if (name == "discard-reuse") return discard_reuse(seed);
  if (name == "l2-tables") return l2_tables(seed);
  if (name == "refblock-1bit") return refcount_growth(name, 1, seed);
  if (name == "reftable-grow") return refcount_growth(name, 64, seed);
  if (name == "lazy-refcounts") return lazy_refcounts(seed);
  if (name == "compressed") return compressed(seed);
  if (name == "mixed") return mixed(seed);
  if (name == "snapshots") return snapshots(seed);
  if (name == "resize") return resizes(seed);
  if (name == "amend") return amends(seed);
  if (name == "refcount-bits") return gen::refcount_bits(seed);
  if (name == "bitmaps") return gen::bitmaps(seed);
  if (name == "commit") return gen::commit(seed);
  if (name == "rebase") return gen::rebase(seed);
  if (name == "damaged-refcount") return damaged_refcount(seed);
  if (name == "encrypted") return encrypted(seed);
  if (name == "vmstate") return vmstates(seed);
  if (name == "extended-l2") return extended_l2(seed);
  return error(invalid("unknown workload '" + name + "'"));
}

std::vector<uint8_t> backing_content(const WorkloadSpec& spec) {
  std::vector<uint8_t> b(spec.backing_bytes);
  fill_sectors(kBackingVersion, 0, b);
  return b;
}

std::vector<uint8_t> new_backing_content(const WorkloadSpec& spec) {
  constexpr uint64_t kRun = 24;  // sectors: 12 KiB, so runs start inside 64 KiB clusters
  std::vector<uint8_t> b(spec.new_backing_bytes);
  const uint64_t old_sectors = spec.backing_bytes / kGuestSector;
  for (uint64_t s = 0; s < b.size() / kGuestSector; ++s) {
    std::span<uint8_t> sector(b.data() + s * kGuestSector, kGuestSector);
    const uint64_t run = s / kRun;
    if (s < old_sectors) fill_sector(run % 3 == 0 ? kNewBackingVersion : kBackingVersion, s, sector);
    else if (run % 2 == 0) fill_sector(kNewBackingVersion, s, sector);
  }
  return b;
}

GuestModel initial_model(const WorkloadSpec& spec) {
  return GuestModel(max_size(spec), spec.backing_bytes / kGuestSector, spec.create.size);
}

}  // namespace keel::proof
